"""One consult from video(s) to a finished session folder.

This is what `movement analyze` runs: the pure analysis
(:func:`movement.analysis.pipeline.analyze`), then the atomic session folder with its
report (:mod:`movement.report.folder`, :mod:`movement.report.session_page`). Batches of consults
(a process pool here, or Dask workers) are :mod:`movement.batch`; their workers
run :func:`write_consult`, which never touches the clinic store.

`movement reanalyze` (:func:`plan_reanalysis`, :func:`reanalyze`) runs a stored
session again from its video, with the options it was analysed with, so that an
older measurement version's numbers can be compared with the current ones.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movement import MEASUREMENT_VERSION
from movement.analysis import pose
from movement.analysis.landmarks import NoFaceError
from movement.analysis.pipeline import Options, Session, analyze, file_sha256
from movement.analysis.steps import CuesError
from movement.analysis.video import VideoError, probe
from movement.clinic import store
from movement.clinic.compare import pick_session, update_comparison
from movement.protocol import ProtocolError, load_protocol
from movement.report.folder import OutputError, check_out_dir, write_session
from movement.report.session_page import render_report

EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (VideoError, 3),
    (NoFaceError, 4),
    (ProtocolError, 5),
    (CuesError, 5),
    (OutputError, 6),
)
"""Documented exit codes of `movement analyze` per kind of user error."""


def exit_code(exc: BaseException) -> int | None:
    """The exit code of a known user error; None for anything unexpected."""
    if isinstance(exc, store.StoreError):
        return exc.exit_code
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return None


def write_consult(
    videos: list[Path],
    steps: Sequence[str | Sequence[str]] | None,
    out: Path,
    opts: Options,
    images: bool = True,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    comparison_href: Callable[[list[str]], str | None] | None = None,
    attach: Callable[[Path], None] | None = None,
) -> Session:
    """Analyse one consult and write its session folder (atomically); no store.

    ``comparison_href`` maps the clips' sha256s to the report's link to the
    patient's comparison page (or None). This is what a batch worker runs: it
    never touches the clinic store, the batch's client records the folder.

    ``attach`` is called with the staged folder once its files are written and before
    it is renamed into place, to add what belongs to the session beside the analysis
    (`movement record` puts the recording and its step times there), so the folder
    appears complete or not at all.
    """
    # Empty slices (a point lost for a whole window) are expected and handled.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    for v in videos:
        probe(v, opts.mirrored)
    hashes = [file_sha256(v) for v in videos]
    check_out_dir(out, hashes, force)
    session, caches = analyze(list(videos), opts, steps, progress=progress, keep_caches=images,
                              hashes=hashes)
    href = comparison_href(hashes) if comparison_href else None
    try:
        write_session(
            session,
            out,
            lambda s, p: _render(s, p, caches, images, href, attach),
            force=True,
        )
    finally:
        for c in caches:
            c.close()
    return session


def analyze_to_folder(
    videos: list[Path],
    steps: Sequence[str | Sequence[str]] | None,
    out: Path,
    opts: Options,
    images: bool = True,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    store_dir: Path | None = None,
    attach: Callable[[Path], None] | None = None,
    replace_stored: bool = False,
) -> Session:
    """Analyse one consult and write its session folder (atomically); ``attach`` as
    in :func:`write_consult`.

    With a patient ID in ``opts``, the session is then recorded in the clinic
    store (``store_dir``, default ``$MOVEMENT_STORE`` or ``./reports``) and the
    patient's comparison across sessions is refreshed. The store row is
    committed last, after the folder is complete, so a crash never leaves a
    recorded session without its files. ``replace_stored``: the session replaces
    the one stored from ``out`` (the same visit with a step recorded again)
    instead of adding a visit.
    """
    if opts.patient:
        # Fail in seconds, not after the analysis, on a bad ID or store.
        store.check_patient(opts.patient)
        store.open_store(store_dir)

    def href(hashes: list[str]) -> str | None:
        link = (store.session_link(store_dir, opts.patient, hashes,
                                   out if replace_stored else None) if opts.patient else None)
        return os.path.relpath(link, out.absolute()) if link else None

    session = write_consult(videos, steps, out, opts, images, force, progress, href, attach)
    if opts.patient:
        store.record_session(store_dir, out, opts.patient, opts.label, opts.date,
                             replace_folder=replace_stored)
        update_comparison(store_dir, opts.patient)
    return session


def _render(
    session: Session, path: Path, caches: list, images: bool, href: str | None,
    attach: Callable[[Path], None] | None,
) -> None:
    render_report(session, path, caches=caches, images=images, comparison_href=href)
    if attach is not None:
        attach(path.parent)


# --------------------------------------------------------------------------- re-analysis


@dataclass(frozen=True)
class Reanalysis:
    """One stored session to analyse again: its videos, found and checked by their
    sha256, and the options it was analysed with."""

    session_id: int
    patient: str
    date: str
    label: str
    version: int  # the measurement version it was stored with
    videos: list[Path]
    sha256s: list[str]
    steps: list[list[str]] | None  # per clip, as `analyze` takes them; None: one video
    opts: Options
    pose_correction: bool
    out: Path  # the fresh session folder
    old_dir: Path | None  # the earlier folder, left in place


def plan_reanalysis(
    store_dir: Path | None,
    patient: str,
    sessions: Sequence[str] = (),
    all_old: bool = False,
    videos: Sequence[Path] = (),
) -> list[Reanalysis]:
    """The sessions to re-analyse, each with its videos located; nothing is written.

    ``sessions`` are ids, labels or dates; ``all_old`` adds every session measured by
    an older measurement version. A session's videos are the files given in
    ``videos`` or the paths the store kept (relative ones inside the session folder,
    where `movement record` keeps the recording), each accepted only when its sha256
    is the stored one. Every problem is found here, before any analysis:
    :class:`~movement.clinic.store.InputError` (exit code 2) for a video that is
    missing, changed or matches no chosen session.
    """
    patient = store.check_patient(patient)
    known = store.list_sessions(store_dir, patient)
    chosen = {s.id: s for s in (pick_session(t, known, patient) for t in sessions if t.strip())}
    if all_old:
        chosen.update({s.id: s for s in known if s.measurement_version < MEASUREMENT_VERSION})
    given: dict[str, Path] = {}
    for v in videos:
        try:
            given.setdefault(file_sha256(v), Path(v))
        except OSError as exc:
            raise store.InputError(f"{v}: cannot read ({exc.strerror or exc})") from None
    plans = [_plan(store_dir, patient, s, given) for s in chosen.values()]
    used = {sha for p in plans for sha in p.sha256s}
    for sha, path in given.items():
        if sha not in used:
            raise store.InputError(
                f"{path}: not the video of any session to re-analyse (its sha256 "
                f"{sha[:12]}… matches none of them)"
            )
    return plans


def _plan(
    store_dir: Path | None, patient: str, s: store.SessionSummary, given: dict[str, Path]
) -> Reanalysis:
    t = store.session_tables(store_dir, s.id)
    what = f"session {s.id} ({s.date}" + (f", {s.label})" if s.label else ")")
    try:
        meta: dict[str, Any] = json.loads(t["session"]["session_json"] or "")
    except ValueError:
        meta = {}
    if not isinstance(meta, dict) or not meta.get("clips"):
        raise store.InputError(
            f"{what} was imported without its analysis settings; analyse its video with "
            "`movement analyze VIDEO --patient ...` instead"
        )
    old_dir = Path(t["session"]["session_dir"]) if t["session"]["session_dir"] else None
    found = [_locate(what, c["sha256"], c["path"], old_dir, given) for c in t["clips"]]
    p = meta.get("protocol") or {}
    path = p.get("path")
    proto = load_protocol(path if path and Path(path).is_file() else str(p.get("name") or ""))
    per_clip = [[str(st.get("name")) for st in c.get("steps") or []] for c in meta["clips"]]
    asked = [str(n) for n in p.get("steps") or [n for c in per_clip for n in c]]
    if asked != [st.name for st in proto.steps]:
        proto = proto.subset(asked)
    steps: list[list[str]] | None = per_clip
    if len(found) == 1 and per_clip[0] == [st.name for st in proto.steps]:
        steps = None
    o = meta.get("options") or {}
    cues = o.get("cues")
    opts = Options(
        proto, bool(o.get("mirrored")),
        {k: (float(a), float(b)) for k, (a, b) in cues.items()} if cues else None,
        str(o.get("face") or "largest"), patient, s.label, s.date,
    )  # fmt: skip
    return Reanalysis(
        s.id, patient, s.date, s.label, s.measurement_version, found,
        [c["sha256"] for c in t["clips"]], steps, opts,
        bool(o.get("pose_correction", True)), _fresh_folder(store_dir, patient, s.id, old_dir),
        old_dir,
    )  # fmt: skip


def _locate(
    what: str, sha: str, stored: str | None, folder: Path | None, given: dict[str, Path]
) -> Path:
    """A session's video: a file given for it, else where the store says it is; the
    file must still be the one analysed (same sha256)."""
    if sha in given:
        return given[sha]
    where = Path(stored) if stored else None
    if where is not None and not where.is_absolute() and folder is not None:
        where = folder / where  # a recording kept inside its session folder
    if where is None or not where.is_file():
        at = f"is not at {where}" if where else "has no stored path"
        raise store.InputError(
            f"{what}: its video (sha256 {sha[:12]}…) {at}; give the file with --video"
        )
    if file_sha256(where) != sha:
        raise store.InputError(
            f"{what}: {where} has changed since it was analysed (another sha256); give the "
            "original with --video"
        )
    return where.absolute()


def _fresh_folder(store_dir: Path | None, patient: str, sid: int, old: Path | None) -> Path:
    """A new folder beside the earlier one (``<name>-m<version>``), never the earlier
    one itself: it may hold the recording, and it stays until the store has moved."""
    if old is None:
        old = store.patient_dir(store_dir, patient) / f"session-{sid}"
    stem = re.sub(r"-m\d+(-\d+)?$", "", old.name)
    base = old.parent / f"{stem}-m{MEASUREMENT_VERSION}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def reanalyze(
    plan: Reanalysis,
    store_dir: Path | None,
    images: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Session:
    """Analyse a stored session again and put the result in its place in the store.

    The fresh folder is written completely first (atomically), then the stored
    session is replaced in one transaction keeping its id
    (:func:`movement.clinic.store.replace_session`); if anything fails, the store
    still holds the earlier numbers and the earlier folder is untouched.
    """
    before = pose.ENABLED
    pose.ENABLED = plan.pose_correction
    try:
        def href(hashes: list[str]) -> str | None:
            link = store.session_link(store_dir, plan.patient, hashes)
            return os.path.relpath(link, plan.out.absolute()) if link else None

        session = write_consult(plan.videos, plan.steps, plan.out, plan.opts, images,
                                progress=progress, comparison_href=href)
    finally:
        pose.ENABLED = before
    store.replace_session(store_dir, plan.session_id, plan.out)
    update_comparison(store_dir, plan.patient)
    return session
