"""Stage 1 — video reading: facts about the file and a stream of timestamped frames.

Frames are streamed (never all held in memory) and decoded in a background
thread, so decoding overlaps with face tracking on the other core. OpenCV
releases the GIL while decoding, which makes a thread enough.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class VideoError(Exception):
    """The input is not a readable video."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    rotation: int  # degrees of rotation metadata, already applied to frames
    codec: str
    mirrored: bool

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps if self.fps else 0.0


@dataclass(frozen=True)
class Frame:
    index: int
    t: float  # seconds, from the container's timestamps (variable frame rate safe)
    image: np.ndarray  # BGR, upright, flipped when the video is mirrored
    rgb: np.ndarray | None = None  # RGB, at most ``rgb_max_side`` px, when asked for


def _open(path: Path, threads: int = 0) -> cv2.VideoCapture:
    """``threads``: the decoder's own threads (0: the backend's default, one per core)."""
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty")
    if threads:
        cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, threads])
        if not cap.isOpened():  # a backend that takes no thread count: its default
            cap = cv2.VideoCapture(str(path))
    else:
        cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"{path}: not a video OpenCV can open (unknown format or codec)")
    # Phones store portrait video as landscape frames plus a rotation tag.
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return cap


def probe(path: str | Path, mirrored: bool = False) -> VideoInfo:
    """Read a video's facts and check that at least one frame decodes."""
    p = Path(path)
    cap = _open(p)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(
                f"{p}: no frame could be decoded (empty, truncated or unsupported codec)"
            )
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            fps = 30.0
        return VideoInfo(
            path=str(p),
            width=int(frame.shape[1]),
            height=int(frame.shape[0]),
            fps=fps,
            frame_count=max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 1),
            rotation=int(cap.get(cv2.CAP_PROP_ORIENTATION_META)) % 360,
            codec=codec,
            mirrored=mirrored,
        )
    finally:
        cap.release()


_END = object()


RGB_MAX_SIDE = 1920
"""Longer side of the frames the face mesh sees (see :func:`frames`)."""


def rgb_for_mesh(img: np.ndarray, max_side: int = RGB_MAX_SIDE) -> np.ndarray:
    """A BGR frame as the face mesh takes it: RGB, longer side at most ``max_side``."""
    k = max_side / max(img.shape[:2])
    if k < 1:
        img = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _as_seen(info: VideoInfo, img: np.ndarray) -> np.ndarray:
    """A decoded frame as the analysis sees it: flipped back when the video is a
    mirrored selfie, so the patient's right is on the image left."""
    return cv2.flip(img, 1) if info.mirrored else img


def frames(
    info: VideoInfo, prefetch: int = 8, rgb: bool = False, rgb_max_side: int = RGB_MAX_SIDE
) -> Iterator[Frame]:
    """Stream the frames of a probed video, decoded in a background thread.

    Timestamps come from the container (``CAP_PROP_POS_MSEC``) so variable
    frame-rate phone videos keep their true timing; where the container gives
    none, the nominal frame rate is used. With ``rgb`` the decoder thread also
    converts each frame to RGB (what the face mesh wants), off the main thread,
    reduced so its longer side is at most ``rgb_max_side`` (4K phone video).
    Not lower: feeding the mesh a 1080p frame at 720p saved about a third of
    its time but moved its landmarks enough to change one frown reading by
    0.4 mm (the image tracker's seeds), so accuracy wins here.
    """
    # One decoding thread: the face mesh holds the other core, and FFmpeg's threads
    # waiting on each other cost a third more CPU for the same frames.
    cap = _open(Path(info.path), threads=1)
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def decode() -> None:
        i = 0
        last_t = -1.0
        try:
            while not stop.is_set():
                ok, img = cap.read()
                if not ok or img is None:
                    break
                t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if not np.isfinite(t) or t <= last_t or (i > 0 and t == 0):
                    t = i / info.fps if last_t < 0 else last_t + 1.0 / info.fps
                last_t = t
                img = _as_seen(info, img)
                q.put(Frame(i, t, img, rgb_for_mesh(img, rgb_max_side) if rgb else None))
                i += 1
        finally:
            cap.release()
            q.put(_END)

    th = threading.Thread(target=decode, daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                break
            yield item
    finally:
        stop.set()
        # Drain so the decoder is never blocked on a full queue.
        while th.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        th.join()


def read_frames(
    info: VideoInfo, indices: Iterable[int], seek: bool = True
) -> Iterator[tuple[int, np.ndarray]]:
    """Frames ``indices`` (BGR, upright, flipped when mirrored) read again, in order,
    one at a time (a 4K frame is 25 MB).

    With ``seek`` each is reached by seeking, which costs a few frames' decoding but
    is not frame-exact in every container: the caller checks what it got
    (``landmarks.keyframe_landmarks`` compares with the frame cache). Without, the
    video is decoded in order up to the last index, as :func:`frames` counts them.
    A frame that cannot be read is left out.
    """
    want = sorted(set(int(i) for i in indices if i >= 0))
    if not want:
        return
    cap = _open(Path(info.path))
    try:
        if seek:
            for i in want:
                cap.set(cv2.CAP_PROP_POS_FRAMES, i)
                ok, img = cap.read()
                if ok and img is not None:
                    yield i, _as_seen(info, img)
        else:
            left = set(want)
            i = 0
            while left:
                ok, img = cap.read()
                if not ok or img is None:
                    break
                if i in left:
                    left.discard(i)
                    yield i, _as_seen(info, img)
                i += 1
    finally:
        cap.release()
