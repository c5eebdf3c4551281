"""Stage 2 — landmark tracking: MediaPipe FaceMesh on every frame.

One pass over the video produces

* :class:`LandmarkTrack`: per-frame 478 landmarks in image pixels (NaN where no
  face was found), timestamps and the number of faces seen, and every half second
  a fresh detection of the face (for the millimetre scale);
* a :class:`FrameCache`: a grey-level crop around the face of every frame, on
  disk, so the image tracker can revisit the steps' frames without decoding the
  video again and memory stays flat in the video's length (beyond its disk
  budget, the steps' frames are decoded once more).
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from movement.analysis.face import DETECTION_JITTER, detection_offset
from movement.analysis.video import VideoInfo, frames, read_frames, rgb_for_mesh

CACHE_FACE_PX = 320
"""Face height (forehead to chin, landmarks 10-152) in the cached crops. At this
size the iris is about 30 px wide (about 2.5 px per mm): Lucas-Kanade's
sub-pixel precision is then a few hundredths of a millimetre, while a 1080p
face is not stored at full size."""


CACHE_PREFIX = "movement-frames-"
OWNER_FILE = "owner"
"""In each frame cache's folder: the process that made it (pid and start time), so a
later run can tell a killed run's leftovers from a cache still in use."""
ORPHAN_AGE_S = 24 * 3600
"""A cache folder without a readable owner is left alone until it is this old."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it are plain.
    return stat.rsplit(")", 1)[1].split()[19]


def _owner() -> str:
    return f"{os.getpid()} {_start_time(os.getpid()) or ''}".strip()


def _alive(owner: str) -> bool:
    """Whether the process that wrote ``owner`` still runs (pid reuse is told apart by
    the start time where the system gives one)."""
    parts = owner.split()
    if not parts or not parts[0].isdigit():
        return False
    pid = int(parts[0])
    if os.name != "posix":
        return True  # os.kill(pid, 0) would end the process on Windows; age decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return len(parts) < 2 or _start_time(pid) in (None, parts[1])


def remove_leftovers(cache_dir: str | Path | None = None) -> list[Path]:
    """Delete frame caches that a killed run (``kill -9``, a power cut) left behind in
    ``cache_dir`` (the system's temporary folder by default): ~0.3 MB a frame, gigabytes
    for a long consult. A cache whose process still runs is never touched."""
    root = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir())
    gone = []
    for d in root.glob(CACHE_PREFIX + "*"):
        try:
            owner = (d / OWNER_FILE).read_text()
        except OSError:
            owner = None
        try:
            old = time.time() - d.stat().st_mtime > ORPHAN_AGE_S
        except OSError:
            continue
        if (owner is not None and not _alive(owner)) or (owner is None and old) or (
                os.name != "posix" and old):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


class NoFaceError(Exception):
    """No face was found anywhere in the video."""


CACHE_BUDGET_BYTES = 1 << 30
"""Disk the frame cache may take (about 3,600 crops, two minutes at 30 fps). A longer
video's crops beyond it are let go once written; after the steps are found the ones
the measurement reads are decoded again (:meth:`FrameCache.ensure`). A 10-minute
consult kept every crop before: 5 GB of temporary files."""
RECENT_FRAMES = 128
"""Crops of the latest frames always kept: the step-finding tracker reads each frame a
little after it is written (its queue holds 64)."""


class FrameCache:
    """Grey-level face crops of the video's frames, kept in a file on disk.

    A crop of frame ``t`` covers original pixels ``p`` with
    ``crop = p * scale - offset[t]``.

    Notes
    -----
    Crops are written and read with positioned I/O (``pwrite``/``pread``) on one
    file rather than memory-mapped: the pages of a written memory map count
    as the process's resident memory, which grew to 6 GB on a 10-minute
    video. Read back, a frame is an ordinary 300 KB array; the operating
    system's file cache keeps recent frames fast without charging the process.
    Positioned I/O is safe from several threads at once.

    The file holds at most ``budget_bytes`` (CACHE_BUDGET_BYTES) while the video is
    read: the first crops that fit, then a ring of the RECENT_FRAMES latest. The
    stages after finding the steps read only the steps' frames, so :meth:`ensure`
    decodes again those the budget let go (from ``source``) into the slots of frames
    no longer needed; a frame read that is not cached is decoded on demand. The crops
    are cut at the offsets of the first pass, so they are the same bytes.
    """

    def __init__(self, folder: Path, scale: float, size: int,
                 source: VideoInfo | None = None, budget_bytes: int | None = None) -> None:
        self.folder, self.scale, self.size = folder, scale, size
        self.offsets: list[tuple[int, int]] = []
        self.source = source
        self.decoded_again = 0  # crops decoded again from the video (ensure)
        self._nbytes = size * size
        budget = CACHE_BUDGET_BYTES if budget_bytes is None else budget_bytes
        self._first = max(budget // self._nbytes - RECENT_FRAMES, 0)
        self._slots: dict[int, int] = {}  # frame -> slot in the file
        self._in_slot: dict[int, int] = {}  # slot -> the frame the first pass wrote there
        self._written = 0
        self._blank: set[int] = set()  # frames before the first face: blank crops
        self._n_slots = 0
        self._lock = threading.Lock()  # the slot map
        self._filling = threading.Lock()  # one decoding pass at a time
        self._fd = os.open(folder / "crops.u8", os.O_RDWR | os.O_CREAT, 0o600)

    def _write(self, slot: int, gray: np.ndarray) -> None:
        os.pwrite(self._fd, np.ascontiguousarray(gray, dtype=np.uint8).tobytes(),
                  slot * self._nbytes)
        self._n_slots = max(self._n_slots, slot + 1)

    def append(self, gray: np.ndarray, offset: tuple[int, int]) -> None:
        i, k = len(self.offsets), self._written
        slot = k if k < self._first else self._first + (k - self._first) % RECENT_FRAMES
        with self._lock:
            gone = self._in_slot.get(slot)
            if gone is not None and self._slots.get(gone) == slot:
                del self._slots[gone]
            self._slots[i], self._in_slot[slot] = slot, i
        self._write(slot, gray)
        self._written += 1
        self.offsets.append(offset)

    def append_blank(self) -> None:
        """A frame before the first face: a blank crop, nothing written."""
        self._blank.add(len(self.offsets))
        self.offsets.append((0, 0))

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def disk_bytes(self) -> int:
        """Bytes the crops' file takes."""
        return self._n_slots * self._nbytes

    def image(self, t: int) -> np.ndarray:
        if t in self._blank:
            return np.zeros((self.size, self.size), np.uint8)
        with self._lock:
            slot = self._slots.get(t)
        if slot is None:
            # Not one of the frames the stages said they read: decoded on demand.
            slot = self._fill([t], keep_all=True)[t]
        buf = os.pread(self._fd, self._nbytes, slot * self._nbytes)
        return np.frombuffer(buf, dtype=np.uint8).reshape(self.size, self.size)

    def ensure(self, frames: Iterable[int]) -> int:
        """Make the crops of ``frames`` (video frame indices) readable, decoding again
        those the budget let go; the slots of the other frames are reused. Returns how
        many were decoded."""
        want = {int(t) for t in frames if 0 <= int(t) < len(self.offsets)}
        before = self.decoded_again
        self._fill(sorted(want), keep_all=False)
        return self.decoded_again - before

    def _fill(self, want: list[int], keep_all: bool) -> dict[int, int]:
        with self._filling:
            with self._lock:
                missing = [t for t in want if t not in self._slots and t not in self._blank]
                if missing and not keep_all:
                    # Room for them: the frames no stage reads any more give their slots
                    # (a video within the budget keeps every crop).
                    keep = set(want)
                    for t in [t for t in self._slots if t not in keep]:
                        del self._slots[t]
                used = set(self._slots.values())
            free = iter(sorted(set(range(self._n_slots)) - used))
            # New slots past any the first pass can still write (its ring).
            new = max(self._n_slots, self._first + RECENT_FRAMES)
            if missing:
                if self.source is None:
                    raise LookupError(f"frame {missing[0]} is not in the frame cache")
                for t, image in read_frames(self.source, missing, seek=False):
                    slot = next(free, None)
                    if slot is None:
                        slot, new = new, new + 1
                    self._write(slot, _crop_at(image, self.offsets[t], self))
                    with self._lock:
                        self._slots[t] = slot
                    self.decoded_again += 1
            with self._lock:
                if lost := [t for t in missing if t not in self._slots]:
                    raise LookupError(f"frame {lost[0]} could not be decoded again")
                return {t: self._slots[t] for t in want if t in self._slots}

    def to_crop(self, pts: np.ndarray, t: int) -> np.ndarray:
        ox, oy = self.offsets[t]
        return (pts * self.scale - np.array([ox, oy], dtype=np.float64)).astype(np.float32)

    def to_image(self, pts: np.ndarray, t: int) -> np.ndarray:
        ox, oy = self.offsets[t]
        return (pts.astype(np.float64) + np.array([ox, oy])) / self.scale

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class LandmarkTrack:
    """Per-frame landmarks of the tracked face.

    Attributes
    ----------
    t : (T,) seconds
    xy : (T, 478, 2) float32 image pixels, NaN where no face (float32 is the face
        mesh's own precision, and halves the largest array of a long video)
    n_faces : (T,) faces seen in the frame
    fresh_frames : (K,) frame of each fresh detection (static mode, the frame cut by
        an offset); a frame appears once per cut (FRESH_CUTS)
    fresh_xy : (K, 478, 2) float32 their landmarks, pixels of the uncut frame
    z : (T, 478) float32 FaceMesh's depth of each landmark in image pixels (its
        normalised z times the frame width), positive toward the camera; NaN where no
        face. The head's 3D pose and the skin's orientation are read from it
        (:mod:`movement.analysis.pose`). None when not recorded.
    """

    t: np.ndarray
    xy: np.ndarray
    n_faces: np.ndarray
    fresh_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    fresh_xy: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 478, 2), np.float32)
    )
    z: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.xy[:, 0, 0])

    def __len__(self) -> int:
        return len(self.t)


FRESH_EVERY_S = 0.5
"""Fresh (static-mode) detections of the face this often, for the iris scale. Tracking
mode's iris depends on the face: on two generated faces it read the iris 1.7 % and
8.7 % larger than the generator's still-image detection of the photo. Corrected by
fresh detections (FRESH_CUTS cuts of each such frame), the benchmark's scale reads
0.992 of the generator's, range 0.979-1.017 (docs/METHOD.md §3)."""
MANY_FACES_HOLD_S = 2.0
"""After the face counter (twice a second) sees a second face, the mesh follows two
faces for at least this long, so that a counter missing the second face now and then
does not switch the mesh back and forth."""
FRESH_MAX = 120
"""At most this many frames with fresh detections per video (a detection costs about as
much as a tracked frame, 7-9 ms at 720p-1080p): a long video spaces them out."""
FRESH_CUTS = 4
"""Fresh detections per such frame, each of the frame cut by another offset
(``face.detection_offset``). One detection's iris moves with the pixel grid by up to
2 %; on the real clip the correction from one cut per frame (40 frames) varied by 0.5 %
(SD) between cut sequences and re-encodings; with four, their median per frame, the
clip and two re-encoded copies read their scales within 0.15 % (docs/METHOD.md §3)."""


FRESH_AHEAD = 4
"""Frames whose fresh detections may wait for the detecting thread (each holds its
frame: 6 MB at 1080p)."""


def fresh_done(jobs: list[tuple[int, Future]]) -> int:
    """How many of ``jobs`` (in submission order) have finished, counted from the start."""
    n = 0
    while n < len(jobs) and jobs[n][1].done():
        n += 1
    return n


_WIRE = np.dtype([("key", "u1", 3), ("x", "<f4"), ("ky", "u1"), ("y", "<f4"),
                  ("kz", "u1"), ("z", "<f4")])
"""One landmark of a serialized ``NormalizedLandmarkList`` as FaceMesh writes it: the
list's field tag and length (10, 15), then x, y and z, each a tag (13, 21, 29) and a
little-endian float."""


def mesh_points(landmarks: object) -> np.ndarray:
    """A face's landmarks (a MediaPipe ``NormalizedLandmarkList``) as an (N, 3) float64
    array of (x, y, z) in the mesh's normalised units.

    Read from the list's wire bytes: asking each of 478 points for its x, y and z is
    about 0.3 ms a frame holding the interpreter's lock, which the threads that cut
    the crops and follow the points wait for. The same float32 values either way;
    a list written otherwise (another field set) is read point by point."""
    raw = landmarks.SerializeToString()  # type: ignore[attr-defined]
    if len(raw) % _WIRE.itemsize == 0:
        rec = np.frombuffer(raw, dtype=_WIRE)
        if ((rec["key"] == (10, 15, 13)).all() and (rec["ky"] == 21).all()
                and (rec["kz"] == 29).all()):
            return np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float64)
    return np.array([(p.x, p.y, p.z) for p in landmarks.landmark],  # type: ignore[attr-defined]
                    dtype=np.float64).reshape(-1, 3)


def _face_height(pts: np.ndarray) -> float:
    # Forehead (10) to chin (152).
    return float(np.linalg.norm(pts[10] - pts[152]))


def crop_geometry(pts: np.ndarray) -> tuple[float, int]:
    """Scale and side (px) of the face crops for a face with landmarks ``pts`` (frame px).

    Small faces are upsampled (at most 2x) so that the image tracker's few-millimetre
    window spans enough pixels."""
    return min(2.0, CACHE_FACE_PX / max(_face_height(pts), 1.0)), int(round(CACHE_FACE_PX * 1.7))


def face_crop(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The grey face crop the frame cache would keep of ``image`` (BGR) for a face with
    landmarks ``pts``: what the quality rules read brightness and sharpness on."""

    class _Geometry:
        scale, size = crop_geometry(pts)

    return _crop(image, np.nanmean(pts[:468], axis=0), _Geometry)[0]  # type: ignore[arg-type]


def track_landmarks(
    info: VideoInfo,
    face: str = "largest",
    cache_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    on_frame: Callable[[int, np.ndarray, FrameCache], None] | None = None,
) -> tuple[LandmarkTrack, FrameCache]:
    """Run FaceMesh (tracking mode, refined iris) over every frame.

    Parameters
    ----------
    face : "largest" | "left" | "right"
        Which face to follow when several are in view. "left"/"right" mean the
        image side, for a clinician pointing at the screen.
    on_frame : called with (frame index, landmarks, cache) once a frame is
        cached, so later stages can start on it while this pass goes on.

    Notes
    -----
    Tracking mode (``static_image_mode=False``) re-detects only when tracking
    is lost; it is several times faster than per-frame detection and smoother.
    A full-range face detector counts the faces twice a second (about 5 ms each):
    the mesh's own detector is short-range and misses a smaller second person in a
    wide frame. The mesh follows two faces only while the counter sees more than one
    (or ``face`` picks one by side; see MANY_FACES_HOLD_S). As often,
    the face is also detected afresh (static mode) for the scale (FRESH_EVERY_S).
    """
    import mediapipe as mp

    counter = mp.solutions.face_detection.FaceDetection(
        model_selection=1, min_detection_confidence=0.6
    )
    count_every = max(int(round(info.fps / 2)), 1)
    counted = 0

    def tracking_mesh(faces: int) -> object:
        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=faces,
            refine_landmarks=True,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )

    # A mesh that may follow two faces runs its face detector on every frame in which
    # it follows fewer (MediaPipe re-detects until it has max_num_faces), which doubled
    # the mesh's time per frame on a lone patient. So one face is followed unless the
    # counter saw a second within MANY_FACES_HOLD_S, or the user picks a face by side.
    meshes: dict[int, object] = {}
    many_until = -1
    fresh_mesh = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=2, refine_landmarks=True,
        min_detection_confidence=0.5,
    )
    fresh_every = max(int(round(info.fps * FRESH_EVERY_S)), 1,
                      -(-max(info.frame_count, 0) // FRESH_MAX))
    fresh_frames: list[int] = []
    fresh_tried = 0
    fresh_xy: list[np.ndarray] = []
    remove_leftovers(cache_dir)
    tmp = Path(tempfile.mkdtemp(prefix=CACHE_PREFIX, dir=cache_dir))
    (tmp / OWNER_FILE).write_text(_owner())
    cache: FrameCache | None = None
    done = False
    try:
        # Cropping and caching run in a writer thread (OpenCV releases the GIL), so
        # the face mesh, which holds one core, is not kept waiting for them.
        writer_q: queue.Queue = queue.Queue(maxsize=16)
        writer_error: list[BaseException] = []

        def write() -> None:
            while (item := writer_q.get()) is not None:
                if writer_error:
                    continue
                index, image, center, pts = item
                try:
                    cache.append(*_crop(image, center, cache))
                    if on_frame is not None:
                        on_frame(index, pts, cache)
                except BaseException as exc:  # re-raised in the caller's thread below
                    writer_error.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        fresh_pool = ThreadPoolExecutor(max_workers=1)
        fresh_jobs: list[tuple[int, Future]] = []
        ts: list[float] = []
        # Filled in place (a list of per-frame arrays plus the stacked copy would
        # double the largest array of a long video); float32 as the mesh gives it.
        xy = np.full((info.frame_count + 16, 478, 2), np.nan, dtype=np.float32)
        zs = np.full((info.frame_count + 16, 478), np.nan, dtype=np.float32)
        nf: list[int] = []
        nan = np.full((478, 2), np.nan)
        last_center: np.ndarray | None = None
        wh = np.array([info.width, info.height], dtype=np.float64)
        try:
            for fr in frames(info, rgb=True):
                rgb = fr.rgb
                if fr.index % count_every == 0:
                    counted = len(counter.process(rgb).detections or [])
                    if counted > 1:
                        many_until = fr.index + int(round(MANY_FACES_HOLD_S * info.fps))
                want = 2 if face != "largest" or fr.index <= many_until else 1
                if want not in meshes:
                    # The other mesh's tracking state is stale: it would start from
                    # where the face was when it was last used.
                    for m in meshes.values():
                        m.close()  # type: ignore[attr-defined]
                    meshes.clear()
                    meshes[want] = tracking_mesh(want)
                res = meshes[want].process(rgb)  # type: ignore[attr-defined]
                faces = res.multi_face_landmarks or []
                pts = nan
                depth = nan[:, 0]
                if faces:
                    mesh3 = [mesh_points(f) for f in faces]
                    cands = [m[:, :2] * wh for m in mesh3]
                    if face == "left":
                        pick = min(range(len(cands)), key=lambda k: cands[k][:, 0].mean())
                    elif face == "right":
                        pick = max(range(len(cands)), key=lambda k: cands[k][:, 0].mean())
                    else:
                        pick = max(range(len(cands)), key=lambda k: _face_height(cands[k]))
                    # Rounded to the float32 the track keeps (FaceMesh's own precision):
                    # what runs on each frame now (the step-finding tracker, the crops)
                    # sees exactly what a later pass over the stored track sees.
                    pts = cands[pick].astype(np.float32).astype(np.float64)
                    # FaceMesh's z is scaled like x (by the width) and negative toward
                    # the camera.
                    depth = -mesh3[pick][:, 2] * wh[0]
                if faces and fr.index % fresh_every == 0:
                    cuts = range(fresh_tried, fresh_tried + FRESH_CUTS)
                    fresh_tried += FRESH_CUTS
                    # The still-image mesh runs beside the tracking one (MediaPipe
                    # releases the GIL while its graph runs): a core of its own on a
                    # two-core laptop. At most FRESH_AHEAD frames wait for it.
                    while len(fresh_jobs) - fresh_done(fresh_jobs) >= FRESH_AHEAD:
                        fresh_jobs[fresh_done(fresh_jobs)][1].result()
                    fresh_jobs.append((len(ts), fresh_pool.submit(
                        _detect_on_cuts, fresh_mesh, rgb, fr.image.shape[1], pts, cuts)))
                if cache is None and faces:
                    cache = FrameCache(tmp, *crop_geometry(pts), source=info)
                    # Frames before the first face get blank crops.
                    for _ in range(len(ts)):
                        cache.append_blank()
                if cache is not None:
                    if np.isfinite(pts[0, 0]):
                        last_center = np.nanmean(pts[:468], axis=0)
                    writer_q.put((fr.index, fr.image, last_center, pts))
                ts.append(fr.t)
                if len(ts) > len(xy):
                    xy = np.concatenate([xy, np.full_like(xy, np.nan)])
                    zs = np.concatenate([zs, np.full_like(zs, np.nan)])
                xy[len(ts) - 1] = pts
                zs[len(ts) - 1] = depth
                nf.append(max(len(faces), counted))
                if progress is not None:
                    progress(1)
            for index, job in fresh_jobs:
                for again in job.result():
                    fresh_frames.append(index)
                    fresh_xy.append(again)
        finally:
            fresh_pool.shutdown(wait=True, cancel_futures=True)
            writer_q.put(None)
            writer.join()
            for m in meshes.values():
                m.close()  # type: ignore[attr-defined]
            fresh_mesh.close()
            counter.close()
        if writer_error:
            raise writer_error[0]
        if cache is None:
            raise NoFaceError(f"{info.path}: no face found in any of {len(ts)} frames")
        done = True
    finally:
        # Failed or interrupted (Ctrl-C, kill; also while waiting above for the
        # writer to drain its queue): no frame cache may outlive us.
        if not done:
            # Only the folder: the step-finding tracker may still be reading
            # the open file (the caller stops it), and a running writer too.
            shutil.rmtree(tmp, ignore_errors=True)
    fresh = (np.array(fresh_frames, dtype=int),
             np.array(fresh_xy, dtype=np.float32).reshape(-1, 478, 2))
    return LandmarkTrack(np.array(ts), xy[: len(ts)], np.array(nf), *fresh,
                         z=zs[: len(ts)]), cache


def detect_cut(mesh: object, rgb: np.ndarray, cut: tuple[int, int]) -> list[np.ndarray]:
    """Every face a still-image ``mesh`` finds in ``rgb`` cut by ``cut`` = (dx, dy) pixels
    at the left and top (``face.detection_offset``), as (478, 2) float64 landmarks in
    pixels of the uncut frame. The analysis's fresh detections and the generator's
    ruler (``synth.ruler_iris_px``) both read the iris through it."""
    dx, dy = cut
    sub = np.ascontiguousarray(rgb[dy:, dx:])
    found = mesh.process(sub).multi_face_landmarks or []  # type: ignore[attr-defined]
    wh = np.array([sub.shape[1], sub.shape[0]], dtype=np.float64)
    return [mesh_points(f)[:, :2] * wh + (dx, dy) for f in found]


def _fresh(
    mesh: object, rgb: np.ndarray, pts: np.ndarray, cut: tuple[int, int], to_px: float = 1.0
) -> np.ndarray | None:
    """The fresh detection (:func:`detect_cut`) of the tracked face ``pts``, or None.

    ``to_px`` is frame pixels per ``rgb`` pixel (a 4K frame reaches the mesh reduced);
    ``pts``, ``cut`` and the result are in frame pixels, ``cut`` in ``rgb``'s."""
    centre = np.nanmean(pts[:468], axis=0)
    best, dist = None, 0.2 * _face_height(pts)  # another face is further away than this
    for c in detect_cut(mesh, rgb, cut):
        c = c * to_px
        d = float(np.linalg.norm(c[:468].mean(axis=0) - centre))
        if d < dist:
            best, dist = c.astype(np.float32), d
    return best


def _detect_on_cuts(
    mesh: object, rgb: np.ndarray, frame_width: int, pts: np.ndarray, cuts: range
) -> list[np.ndarray]:
    """The tracked face ``pts`` (frame px) detected afresh on the cuts ``cuts`` (indices
    into ``face.detection_offset``, within a tenth of the face height) of ``rgb``, the
    frame as the mesh sees it (``video.rgb_for_mesh``); landmarks in frame px."""
    to_px = frame_width / rgb.shape[1]
    span = DETECTION_JITTER * _face_height(pts) / to_px
    found = (_fresh(mesh, rgb, pts, detection_offset(i, span), to_px) for i in cuts)
    return [f for f in found if f is not None]


KEYFRAME_CUTS = 8
"""Detections behind each step's keyframe points (the median of this many cuts of the
frame). Where the landmark model puts a point moves with the pixel grid (0.3-0.6 mm
per cut on the inner brow) and, in tracking mode, with its history: its keyframe points
lay 0.7-1.0 mm from the median of 64 cuts of the generator's photo on the brows, 8
cuts of the keyframe 0.15-0.35 mm (docs/METHOD.md §7.2). Where the movement varies
steeply over the skin (a frown) that is what the value means."""


def keyframe_landmarks(
    info: VideoInfo, track: LandmarkTrack, cache: FrameCache, keyframes: list[int]
) -> dict[int, np.ndarray]:
    """Where FaceMesh puts the points on each keyframe: the median of
    :data:`KEYFRAME_CUTS` still-image detections of the frame, each cut by another
    offset, as (478, 2) float32 frame pixels; frames where fewer than half the cuts
    find the tracked face are left out (the caller keeps the tracking landmarks).

    The frames are read again from the video and checked against the frame cache, so
    a container that seeks inexactly cannot put another frame's face under the points.
    """
    import mediapipe as mp

    want = [k for k in dict.fromkeys(keyframes)
            if 0 <= k < min(len(track), len(cache)) and np.isfinite(track.xy[k]).all()]
    out: dict[int, np.ndarray] = {}
    if not want:
        return out
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=2, refine_landmarks=True,
        min_detection_confidence=0.5,
    ) as mesh:

        def place(k: int, image: np.ndarray) -> bool:
            if not _same_frame(image, k, cache):
                return False
            found = _detect_on_cuts(mesh, rgb_for_mesh(image), image.shape[1],
                                    track.xy[k].astype(np.float64), range(KEYFRAME_CUTS))
            if 2 * len(found) >= KEYFRAME_CUTS:
                out[k] = np.median(np.array(found), axis=0).astype(np.float32)
            return True

        read = {k for k, image in read_frames(info, want) if place(k, image)}
        again = [k for k in want if k not in read]
        for k, image in read_frames(info, again, seek=False):
            place(k, image)
    return out


def _same_frame(image: np.ndarray, t: int, cache: FrameCache) -> bool:
    """Whether ``image`` is frame ``t`` of the video: its crop equals the cached one."""
    crop = _crop_at(image, cache.offsets[t], cache)
    return float(np.mean(np.abs(crop.astype(np.int16) - cache.image(t)))) < 1.0


def _crop(
    image: np.ndarray, center: np.ndarray | None, cache: FrameCache
) -> tuple[np.ndarray, tuple[int, int]]:
    """Cut the cache crop around ``center`` (original px) at the cache scale."""
    s, n = cache.scale, cache.size
    c = center if center is not None else np.array([image.shape[1], image.shape[0]]) / 2
    # Integer offsets in the scaled frame keep the crop grid aligned between
    # frames, so no interpolation difference masquerades as motion.
    ox = int(round(c[0] * s - n / 2))
    oy = int(round(c[1] * s - n / 2))
    return _crop_at(image, (ox, oy), cache), (ox, oy)


def _crop_at(image: np.ndarray, offset: tuple[int, int], cache: FrameCache) -> np.ndarray:
    """The cache crop of ``image`` whose top-left is ``offset`` (scaled px)."""
    s, n = cache.scale, cache.size
    ox, oy = offset
    # Region of the original image that maps onto the crop.
    x0, y0 = ox / s, oy / s
    x1, y1 = (ox + n) / s, (oy + n) / s
    pad = int(np.ceil(2 / s)) + 2
    xa, ya = max(int(np.floor(x0)) - pad, 0), max(int(np.floor(y0)) - pad, 0)
    xb = min(int(np.ceil(x1)) + pad, image.shape[1])
    yb = min(int(np.ceil(y1)) + pad, image.shape[0])
    gray = cv2.cvtColor(image[ya:yb, xa:xb], cv2.COLOR_BGR2GRAY) if xb > xa and yb > ya else None
    if gray is None:
        return np.zeros((n, n), np.uint8)
    if s < 0.8:
        # Anti-alias before the affine resample (warpAffine has no area filter).
        gray = cv2.GaussianBlur(gray, (0, 0), 0.4 / s)
    # Affine from the sub-image to the crop: crop = (p + (xa, ya)) * s - (ox, oy).
    m = np.array([[s, 0, xa * s - ox], [0, s, ya * s - oy]], dtype=np.float64)
    out = cv2.warpAffine(
        gray,
        m,
        (n, n),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return out
