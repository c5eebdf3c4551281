"""One consult from video(s) to a finished session folder.

This is what `movement analyze` runs: the pure analysis
(:func:`movement.analysis.pipeline.analyze`), then the atomic session folder with its
report (:mod:`movement.report.folder`, :mod:`movement.report.session_page`). Batches of consults
(a process pool here, or Dask workers) are :mod:`movement.batch`; their workers
run :func:`write_consult`, which never touches the clinic store.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from movement.analysis.landmarks import NoFaceError
from movement.analysis.pipeline import Options, Session, analyze, file_sha256
from movement.analysis.steps import CuesError
from movement.analysis.video import VideoError, probe
from movement.clinic import store
from movement.clinic.compare import update_comparison
from movement.protocol import ProtocolError
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
    session, caches = analyze(list(videos), opts, steps, progress=progress, keep_caches=images)
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
