"""Stage 8 — outputs: the session folder, written atomically.

Everything is written into a temporary sibling folder and renamed into place
only when complete, so an interrupted run never leaves a half-written session
and an earlier session in the folder is replaced only by a complete one.

Files (see README "Output files"): report.html, asymmetry.csv, metrics.csv,
midline.csv, rest.csv, session.json, landmarks.npz.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from movement.analysis.pipeline import Session, session_record
from movement.report.htmlkit import staged_folder


class OutputError(Exception):
    """The output folder cannot be written, or holds another session."""


def check_out_dir(out: Path, sha256s: list[str], force: bool) -> None:
    """Refuse to replace a folder holding a different session (unless forced)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        meta = out / "session.json"
        if not meta.exists():
            raise OutputError(f"{out}: folder is not empty and holds no session (use --force)")
        try:
            old = json.loads(meta.read_text(encoding="utf-8"))
            old_sha = [c.get("sha256") for c in old.get("clips", [])]
        except (OSError, ValueError):
            old_sha = []
        if old_sha != sha256s:
            raise OutputError(f"{out}: holds the session of a different video (use --force)")
    parent = out.parent if out.parent != Path("") else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: output folder is not writable")


def write_session(
    session: Session,
    out: str | Path,
    render_report: Callable[[Session, Path], None] | None = None,
    force: bool = False,
) -> Path:
    """Write the session folder; return its path."""
    out = Path(out)
    check_out_dir(out, [c.sha256 for c in session.clips], force)
    with staged_folder(out.absolute(), OutputError) as tmp:
        session.asymmetry.to_csv(tmp / "asymmetry.csv", index=False, float_format="%.3f")
        session.metrics.to_csv(tmp / "metrics.csv", index=False, float_format="%.3f")
        session.midline.to_csv(tmp / "midline.csv", index=False, float_format="%.3f")
        session.rest.to_csv(tmp / "rest.csv", index=False, float_format="%.3f")
        (tmp / "session.json").write_text(
            json.dumps(_clean(session_record(session)), indent=2, default=_json_default),
            encoding="utf-8",
        )
        # Compressing the landmarks (zlib, without the interpreter's lock) runs beside
        # drawing the report, on the other core.
        with ThreadPoolExecutor(max_workers=1) as pool:
            landmarks = pool.submit(_write_landmarks, tmp / "landmarks.npz", session)
            if render_report is not None:
                render_report(session, tmp / "report.html")
            landmarks.result()
    return out


def _write_landmarks(path: Path, session: Session) -> None:
    """``landmarks.npz`` (readable with ``np.load``), one array converted at a time.

    ``np.savez_compressed`` would need every float32 copy at once: on a long
    video that is hundreds of MB on top of the arrays themselves.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, c in enumerate(session.clips):
            pre = "" if len(session.clips) == 1 else f"clip{i}_"
            keys = sorted(c.keyframe_xy)
            for name, get in (
                ("t", lambda c=c: c.track.t),
                ("mm", lambda c=c: c.traj.mm.astype(np.float32)),
                ("px", lambda c=c: c.track.xy.astype(np.float32)),
                ("keyframes", lambda keys=keys: np.array(keys, dtype=np.int64)),
                ("keyframe_px", lambda c=c, keys=keys: np.array(
                    [c.keyframe_xy[k] for k in keys], dtype=np.float32).reshape(-1, 478, 2)),
            ):
                with zf.open(f"{pre}{name}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, get(), allow_pickle=False)


def _json_default(o: object) -> object:
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _clean(o: object) -> object:
    """NaN is not JSON: write null."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if isinstance(o, float | np.floating) and not np.isfinite(o):
        return None
    return o
