"""The face every synthetic video is warped from: the photo, its landmarks, its ruler.

:func:`base_face` crops and upscales the photo (``skimage.data.astronaut`` unless
:func:`use_face` chose another one), finds its landmarks and its mm/px scale from
the iris, exactly as the analysis reads a real video's first frames. Everything
built on the face (fields, calibrations, dynamic lines) is cached with
:func:`face_cache`, so :func:`use_face` can drop it all when the face changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from movement.analysis.face import (
    DETECTION_JITTER,
    IRIS_DIAMETER_MM,
    detection_offset,
    face_axes,
    iris_diameter_px,
)

BASE_SIZE = 720
"""Height in px of the base photo every video is rendered from."""

# Face box of skimage.data.astronaut (x0, y0, x1, y1 in its 512x512 pixels), from FaceMesh.
_ASTRONAUT_FACE_BOX = (179.0, 71.0, 271.0, 177.0)
# Face height / crop height of the base photo: large enough that the 106 px face of the
# source is upscaled (more pixels per mm for the warp), small enough to keep hair and
# shoulders so a face detector sees a normal portrait.
_CROP_FACE_FRAC = 0.55
# Crop aspect: 16:9 so that the default 1280x720 frame shows real photo everywhere.
_CROP_ASPECT = 16 / 9
_PAD_FRAC = 0.3
"""Margin (share of the crop) added around another photo's crop by replicating its
edge, where the photo holds too little around the face (a close-up video frame);
replicated rather than reflected so that no mirror copy of the face appears."""

ASTRONAUT = "astronaut"
"""The default face: ``skimage.data.astronaut``."""

_face = ASTRONAUT
"""The photo :func:`base_face` builds from (see :func:`use_face`)."""

_FACE_CACHES: list[Any] = []
"""The caches :func:`face_cache` made; :func:`use_face` clears them."""

_F = TypeVar("_F", bound=Callable[..., Any])


def face_cache(maxsize: int) -> Callable[[_F], _F]:
    """``functools.lru_cache`` for anything built on the current face.

    The modules that build on the face (fields, calibration, dynamic lines) cache
    with this instead of ``lru_cache``, so :func:`use_face` drops their caches
    without importing them (they import this module, not the other way round).
    """

    def wrap(fn: _F) -> _F:
        cached = lru_cache(maxsize=maxsize)(fn)
        _FACE_CACHES.append(cached)
        return cached  # type: ignore[return-value]

    return wrap


def use_face(face: str) -> None:
    """Render every later base face, field and truth from ``face``.

    ``face`` is ``"astronaut"``, an image file, or ``"VIDEO@FRAME"`` (a frame of a
    video, e.g. a real clip, for a benchmark on more than one face). The caches built
    on the previous face (:func:`face_cache`) are dropped. :class:`Renderer` calls this
    with its spec's face, so a spec always renders its own face.
    """
    global _face
    if face == _face:
        return
    _face_source(face)  # fail here, on a bad name, not in a later render
    _face = face
    for fn in _FACE_CACHES:
        fn.cache_clear()


@lru_cache(maxsize=2)
def _face_source(face: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """(BGR photo, face box x0, y0, x1, y1 of its landmarks) for a face name."""
    if face == ASTRONAUT:
        from skimage import data  # imported lazily: only the generator needs it

        return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), _ASTRONAUT_FACE_BOX
    path, _, frame = face.rpartition("@") if "@" in face else (face, "", "")
    if frame and not frame.isdigit():
        raise ValueError(f"{face}: use VIDEO@FRAME with a frame number")
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    if frame:
        cap = cv2.VideoCapture(path)
        try:
            img = None
            # Read up to the frame: seeking is inexact in compressed video.
            for _ in range(int(frame) + 1):
                ok, img = cap.read()
                if not ok:
                    raise ValueError(f"{path}: no frame {frame}")
        finally:
            cap.release()
    else:
        img = cv2.imread(path)
        if img is None:
            raise ValueError(f"{path}: not an image")
    lm = detect_landmarks(img)
    if lm is None:
        raise ValueError(f"{face}: no face found")
    x0, y0 = lm[:468].min(axis=0)
    x1, y1 = lm[:468].max(axis=0)
    img.flags.writeable = False
    return img, (float(x0), float(y0), float(x1), float(y1))


# --------------------------------------------------------------------------- base photo


@dataclass(frozen=True, eq=False)
class BaseFace:
    """The base photo, its landmarks and its face frame.

    Attributes
    ----------
    image : (H, W, 3) uint8
        BGR crop around the face (what :func:`load_face_photo` returns).
    canvas : (Hc, Wc, 3) uint8
        The whole source photo at the same scale; ``image`` is
        ``canvas[oy:oy + H, ox:ox + W]``. Frames are rendered from the canvas so that
        small faces and head motion show real photo, not reflections of the crop
        (reflected copies of a face could be picked up by a face detector).
    offset : (ox, oy)
        Base (crop) pixel ``p`` is canvas pixel ``p + offset``.
    landmarks : (478, 2) float
        FaceMesh landmarks of ``image`` in base pixels: the median of
        :data:`RULER_DETECTIONS` detections cut by :func:`movement.analysis.face.detection_offset`.
    mm_per_px : float
        ``IRIS_DIAMETER_MM`` over the median iris diameter of the same detections: one
        detection's iris depends on the pixel grid by up to 2 %.
    lateral, up : (2,) float
        Face-frame axes of the base photo (:func:`movement.analysis.face.face_axes`).
    centre : (2,) float
        Centre of the landmark extent; head motion rotates and scales about it.
    height_px : float
        Landmark extent along ``up``: the "face height" that placement scales.
    """

    image: np.ndarray
    canvas: np.ndarray
    offset: tuple[int, int]
    landmarks: np.ndarray
    mm_per_px: float
    lateral: np.ndarray
    up: np.ndarray
    centre: np.ndarray
    height_px: float

    @property
    def px_per_mm(self) -> float:
        return 1.0 / self.mm_per_px


def detect_landmarks(image_bgr: np.ndarray) -> np.ndarray | None:
    """FaceMesh (refined, 478 points) on one still image, in pixels; None if no face.

    Notes
    -----
    ``static_image_mode=True`` so every call is an independent detection, which is what
    a ground-truth anchor (and a sanity check on a single synthetic frame) needs.
    """
    import mediapipe as mp  # heavy import, only when a detection is actually needed

    h, w = image_bgr.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1
    ) as mesh:
        res = mesh.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    if not res.multi_face_landmarks:
        return None
    pts = res.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h] for p in pts], dtype=float)


RULER_DETECTIONS = 64
"""Detections behind the base photo's landmarks and iris scale. One detection's iris
depends on the pixel grid (SD ~0.9 %), and so do its points: on the astronaut photo the
inner-brow points of one detection lay 0.15-0.8 mm from the median of 64 cuts (a cut's
points 0.3-0.6 mm, median)."""


def cut_detections(
    image_bgr: np.ndarray, face_height_px: float, n: int = RULER_DETECTIONS
) -> np.ndarray:
    """FaceMesh landmarks (m, 478, 2) of ``n`` detections of the image cut by jittered
    offsets (``face.detection_offset``), in pixels of the uncut image.

    The same estimator as the analysis's fresh and keyframe detections
    (``movement.analysis.landmarks``), so the ground truth's points and ruler and the analysed
    ones mean the same thing: where FaceMesh puts a point on this face, not where one
    detection happened to put it on one pixel grid.
    """
    import mediapipe as mp

    from movement.analysis.landmarks import detect_cut

    span = DETECTION_JITTER * face_height_px
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    found = []
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1
    ) as mesh:
        for i in range(n):
            faces = detect_cut(mesh, rgb, detection_offset(i, span))
            if faces:
                found.append(faces[0])
    if not found:
        raise RuntimeError("FaceMesh found no face on the base photo")
    return np.array(found)


def ruler_iris_px(dets: np.ndarray) -> float:
    """Median iris diameter (px) of detections from :func:`cut_detections`."""
    return float(np.median([iris_diameter_px(d) for d in dets]))


def base_face(size: int = BASE_SIZE) -> BaseFace:
    """Build (once per ``size`` and face) the base photo, its canvas and its landmarks.

    Parameters
    ----------
    size : int
        Height of the crop in pixels; the face is about ``0.55 * size`` tall.

    Notes
    -----
    The source is upscaled with one ``cv2.warpAffine`` (INTER_CUBIC) into a canvas that
    holds the whole photo; the crop is a sub-array of that canvas, so crop and canvas
    pixels are identical by construction. The face is the one :func:`use_face` set.
    """
    return _base_face(size, _face)


@face_cache(maxsize=4)
def _base_face(size: int, face: str) -> BaseFace:
    src, (x0, y0, x1, y1) = _face_source(face)
    k = size * _CROP_FACE_FRAC / (y1 - y0)
    width = int(round(size * _CROP_ASPECT))
    # Pixel-centre convention: source pixel centre x maps to k * x + t.
    tx = (width - 1) / 2 - k * (x0 + x1) / 2
    ty = (size - 1) / 2 - k * (y0 + y1) / 2
    # Integer offsets make the crop an exact sub-array of the canvas.
    ox = int(math.ceil(0.5 * k - 0.5 - tx))
    oy = int(math.ceil(0.5 * k - 0.5 - ty))
    # The astronaut photo holds the crop; another may not, and gets a margin.
    pad = 0 if face == ASTRONAUT else int(round(_PAD_FRAC * size))
    ox, oy = max(ox, pad), max(oy, pad)
    sh, sw = src.shape[:2]
    cw = max(int(math.ceil(k * (sw - 0.5) + tx + ox + 0.5)), ox + width + pad)
    ch = max(int(math.ceil(k * (sh - 0.5) + ty + oy + 0.5)), oy + size + pad)
    if ox < 0 or oy < 0 or ox + width > cw or oy + size > ch:
        raise RuntimeError("base photo crop does not fit inside the source photo")
    m = np.array([[k, 0.0, tx + ox], [0.0, k, ty + oy]])
    canvas = cv2.warpAffine(
        src, m, (cw, ch), flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT if face == ASTRONAUT else cv2.BORDER_REPLICATE,
    )
    canvas.flags.writeable = False
    image = canvas[oy : oy + size, ox : ox + width]
    first = detect_landmarks(np.ascontiguousarray(image))
    if first is None:
        raise RuntimeError("FaceMesh found no face on the base photo")
    dets = cut_detections(image, float(np.ptp(first @ face_axes(first)[1])))
    lm = np.median(dets, axis=0)
    lateral, up = face_axes(lm)
    along_up = lm @ up
    along_lat = lm @ lateral
    # Centre of the extent in the face frame, mapped back to image coordinates.
    centre = (
        lateral * (along_lat.max() + along_lat.min()) / 2
        + up * (along_up.max() + along_up.min()) / 2
    )
    for a in (lm, lateral, up, centre):
        a.flags.writeable = False
    return BaseFace(
        image=image,
        canvas=canvas,
        offset=(ox, oy),
        landmarks=lm,
        mm_per_px=IRIS_DIAMETER_MM / ruler_iris_px(dets),
        lateral=lateral,
        up=up,
        centre=centre,
        height_px=float(along_up.max() - along_up.min()),
    )


def load_face_photo(size: int = BASE_SIZE) -> np.ndarray:
    """The base face photo: a BGR uint8 crop of ``size`` px height, face ~0.55 of it.

    A fresh copy each call, so callers may draw on it without touching the cache.
    """
    return base_face(size).image.copy()


