"""One consult from video(s) to a finished session folder, and batches of them.

This is what `movement analyze` runs: the pure analysis
(:func:`movement.analysis.pipeline.analyze`), then the atomic session folder with its
report (:mod:`movement.report.folder`, :mod:`movement.report.session_page`). Every function here
takes plain, picklable arguments, so a batch can run in a process pool here or
on a cluster (Dask, Ray) with the same function.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
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
) -> Session:
    """Analyse one consult and write its session folder (atomically).

    ``attach`` is called with the staged folder once its files are written and before
    it is renamed into place, to add what belongs to the session beside the analysis
    (`movement record` puts the recording and its step times there), so the folder
    appears complete or not at all.

    With a patient ID in ``opts``, the session is then recorded in the clinic
    store (``store_dir``, default ``$MOVEMENT_STORE`` or ``./reports``) and the
    patient's comparison across sessions is refreshed. The store row is
    committed last, after the folder is complete, so a crash never leaves a
    recorded session without its files.
    """
    # Empty slices (a point lost for a whole window) are expected and handled.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    if opts.patient:
        # Fail in seconds, not after the analysis, on a bad ID or store.
        store.check_patient(opts.patient)
        store.open_store(store_dir)
    for v in videos:
        probe(v, opts.mirrored)
    hashes = [file_sha256(v) for v in videos]
    check_out_dir(out, hashes, force)
    session, caches = analyze(list(videos), opts, steps, progress=progress, keep_caches=images)
    href = None
    if opts.patient:
        link = store.session_link(store_dir, opts.patient, hashes)
        href = os.path.relpath(link, out.absolute()) if link else None
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
    if opts.patient:
        store.record_session(store_dir, out, opts.patient, opts.label, opts.date)
        update_comparison(store_dir, opts.patient)
    return session


def _render(
    session: Session, path: Path, caches: list, images: bool, href: str | None,
    attach: Callable[[Path], None] | None,
) -> None:
    render_report(session, path, caches=caches, images=images, comparison_href=href)
    if attach is not None:
        attach(path.parent)


@dataclass(frozen=True)
class BatchResult:
    video: Path
    out: Path
    ok: bool
    message: str  # summary line, or the error line
    code: int = 0


def _one(
    video: Path, out: Path, opts: Options, images: bool, force: bool, store_dir: Path | None
) -> BatchResult:
    try:
        s = analyze_to_folder([video], None, out, opts, images, force, store_dir=store_dir)
    except Exception as exc:  # one video's failure must not stop the batch
        code = exit_code(exc)
        msg = str(exc) if code else f"internal error ({type(exc).__name__}: {exc})"
        return BatchResult(video, out, False, msg, code or 1)
    a = s.asymmetry
    found = int((a["primary"] & (a["quality"] != "missing")).sum())
    return BatchResult(video, out, True, f"{found}/{int(a['primary'].sum())} steps measured")


def analyze_batch(
    videos: list[Path], out_root: Path, opts: Options, images: bool = True, force: bool = False,
    jobs: int = 2, store_dir: Path | None = None,
) -> list[BatchResult]:
    """Analyse each video as its own consult into ``out_root/<video name>``.

    Notes
    -----
    Each job is one process (the face mesh holds the GIL for its inference);
    the default of two matches a two-core laptop. Results come back as they
    finish; the order of the returned list follows ``videos``.
    """
    outs = [out_root / v.stem for v in videos]
    if jobs <= 1 or len(videos) == 1:
        return [
            _one(v, o, opts, images, force, store_dir) for v, o in zip(videos, outs, strict=True)
        ]
    results: dict[Path, BatchResult] = {}
    # "spawn": forking a process that already runs OpenCV/MediaPipe threads
    # can deadlock or crash the child.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = [
            pool.submit(_one, v, o, opts, images, force, store_dir)
            for v, o in zip(videos, outs, strict=True)
        ]
        for f in as_completed(futures):
            r = f.result()
            results[r.video] = r
    return [results[v] for v in videos]
