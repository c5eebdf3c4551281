"""Synthetic consult videos with exact ground truth: the project's only truth source.

A real face photo (``skimage.data.astronaut``, or another one: :func:`use_face`) is
warped frame by frame with smooth displacement fields so that the landmark regions each
protocol step measures move a known number of millimetres per side. Head
roll/shift/zoom, blur, lighting drift, noise and JPEG loss are added on top, the frames
are written as an ``.mp4`` and the truth as JSON next to it.

Conventions (MEASUREMENTS.md sections 1, 2 and 5)
-------------------------------------------------
* Displacement fields live in *base-photo pixels* (the upscaled crop returned by
  :func:`load_face_photo`); amplitudes are requested in mm and converted with the base
  mm/px from the iris (:data:`movement.analysis.face.IRIS_DIAMETER_MM`).
* A frame is a *backward* warp, ``out(x) = in(x - f(x))`` (what ``cv2.remap`` does), so a
  base point ``p`` shows up at ``q = p + f(q)``, not at ``p + f(p)``. The truth is
  computed from the solved ``q`` (:func:`solve_forward`), in the base face frame, with
  the protocol's measurement kind, and every field is calibrated so that this *true*
  value equals the requested one.
* ``right``/``left`` are the patient's anatomical sides; the patient's right is on the
  image left of the base photo. Mirroring a video flips pixels only, never the truth.

Run ``python -m movement.synth [OUT_DIR]`` to (re)make the bundled sample video.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from movement.analysis.face import (
    DETECTION_JITTER,
    IRIS_DIAMETER_MM,
    detection_offset,
    face_axes,
    iris_diameter_px,
)
from movement.protocol import MuscleGroup, Protocol, load_protocol

PROTOCOL_NAME = "extended"
"""The protocol whose landmark groups the fields are anchored on and measured with
(the extended protocol holds every step; its standard steps are the standard's)."""

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


def use_face(face: str) -> None:
    """Render every later base face, field and truth from ``face``.

    ``face`` is ``"astronaut"``, an image file, or ``"VIDEO@FRAME"`` (a frame of a
    video, e.g. a real clip, for a benchmark on more than one face). The caches built
    on the previous face are dropped. :class:`Renderer` calls this with its spec's face,
    so a spec always renders its own face.
    """
    global _face
    if face == _face:
        return
    from movement.synth import creases as synth_creases  # imported here: it builds on this module

    _face_source(face)  # fail here, on a bad name, not in a later render
    _face = face
    for fn in (_base_face, calibrate_step, synth_creases._placed, synth_creases.hair_texture,
               synth_creases.beard_texture, synth_creases.glasses_texture):
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

HOLD_S = 0.15
"""Half-width of the plateau of the activation envelope around ``peak_s``."""

SPEECH_RAMP_S = 0.5
SPEECH_SYLLABLE_HZ = 2.0
"""Syllable rate of the generated speech sample (slow counting)."""

N_SIGMA_SUPPORT = 4.5
"""Fields are applied within this many sigmas of their centre (beyond: < 4e-5 of peak)."""

_SIDES = ("right", "left")


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


@lru_cache(maxsize=4)
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


# --------------------------------------------------------------------------- fields


def _as_points(pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, dtype=float)


@dataclass(frozen=True)
class Bump:
    """Anisotropic Gaussian displacement: ``vector * exp(-xi^2/2sl^2 - eta^2/2su^2)``.

    ``xi``/``eta`` are the offsets from ``centre`` along the face frame's lateral/up
    axes, so the ellipse follows the face, not the image axes. All lengths in base px.
    """

    centre: tuple[float, float]
    vector: tuple[float, float]
    sigma_lat: float
    sigma_up: float
    lateral: tuple[float, float]
    up: tuple[float, float]

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        d = pts - np.asarray(self.centre, dtype=pts.dtype)
        xi = d @ np.asarray(self.lateral, dtype=pts.dtype)
        eta = d @ np.asarray(self.up, dtype=pts.dtype)
        g = np.exp(-0.5 * ((xi / self.sigma_lat) ** 2 + (eta / self.sigma_up) ** 2))
        return g[..., None] * np.asarray(self.vector, dtype=pts.dtype)

    def scaled(self, k: float) -> Bump:
        return Bump(
            self.centre,
            (self.vector[0] * k, self.vector[1] * k),
            self.sigma_lat,
            self.sigma_up,
            self.lateral,
            self.up,
        )

    @property
    def peak_px(self) -> float:
        return float(np.hypot(*self.vector))

    def bbox(self, n_sigma: float = N_SIGMA_SUPPORT) -> tuple[float, float, float, float]:
        return _ellipse_bbox(self.centre, self.sigma_lat, self.sigma_up, self.lateral, n_sigma)


@dataclass(frozen=True)
class LidClosure:
    """Eyelid closure: a vertical (face-frame) squeeze of the eye towards its centre.

    The displacement along ``up`` is ``-A * Gl(xi) * Gu(eta) * w(eta)`` with
    ``w(eta) = tanh(eta/h) * (0.5 + (upper_share - 0.5) * tanh(eta/h))``: above the eye
    centre (upper lid) it points down, below (lower lid) up, and far from the centre the
    upper lid moves ``upper_share`` of ``A`` and the lower lid the rest, as in a real
    squeeze where the upper lid does most of the work. ``w`` is monotone, so the warp
    compresses the fissure without folding; compression makes the Jacobian of ``f``
    exceed 1 near the eye centre, which is why :func:`solve_forward` falls back to
    Newton's method.
    """

    centre: tuple[float, float]
    amplitude: float
    sigma_lat: float
    sigma_up: float
    h: float
    lateral: tuple[float, float]
    up: tuple[float, float]
    upper_share: float = 0.6

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        d = pts - np.asarray(self.centre, dtype=pts.dtype)
        up = np.asarray(self.up, dtype=pts.dtype)
        xi = d @ np.asarray(self.lateral, dtype=pts.dtype)
        eta = d @ up
        th = np.tanh(eta / self.h)
        w = th * (0.5 + (self.upper_share - 0.5) * th)
        g = np.exp(-0.5 * ((xi / self.sigma_lat) ** 2 + (eta / self.sigma_up) ** 2))
        return (-self.amplitude * g * w)[..., None] * up

    def scaled(self, k: float) -> LidClosure:
        return LidClosure(
            self.centre,
            self.amplitude * k,
            self.sigma_lat,
            self.sigma_up,
            self.h,
            self.lateral,
            self.up,
            self.upper_share,
        )

    @property
    def peak_px(self) -> float:
        return abs(self.amplitude) * max(self.upper_share, 1 - self.upper_share)

    def bbox(self, n_sigma: float = N_SIGMA_SUPPORT) -> tuple[float, float, float, float]:
        return _ellipse_bbox(self.centre, self.sigma_lat, self.sigma_up, self.lateral, n_sigma)


def _ellipse_bbox(
    centre: Sequence[float],
    sigma_lat: float,
    sigma_up: float,
    lateral: Sequence[float],
    n_sigma: float,
) -> tuple[float, float, float, float]:
    # Axis-aligned box of an ellipse whose axes are the (possibly tilted) face frame.
    lx, ly = lateral
    hx = n_sigma * math.hypot(sigma_lat * lx, sigma_up * ly)
    hy = n_sigma * math.hypot(sigma_lat * ly, sigma_up * lx)
    return centre[0] - hx, centre[1] - hy, centre[0] + hx, centre[1] + hy


Part = Bump | LidClosure


@dataclass(frozen=True)
class DisplacementField:
    """A smooth displacement field ``f`` (base px -> base px), the sum of its parts.

    Linear in its amplitude: ``field.scaled(a)`` is the field at activation ``a``.
    """

    parts: tuple[Part, ...] = ()

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """Displacement at ``pts`` of shape ``(..., 2)`` (x, y); same shape out."""
        pts = np.asarray(pts)
        if not np.issubdtype(pts.dtype, np.floating):
            pts = pts.astype(float)
        out = np.zeros_like(pts)
        for p in self.parts:
            out += p(pts)
        return out

    def __add__(self, other: DisplacementField) -> DisplacementField:
        return DisplacementField(self.parts + other.parts)

    def scaled(self, k: float) -> DisplacementField:
        return DisplacementField(tuple(p.scaled(k) for p in self.parts))

    @property
    def peak_px(self) -> float:
        """Largest single-part amplitude (px); a scale for tolerances, not a max of |f|."""
        return max((p.peak_px for p in self.parts), default=0.0)

    def bbox(self, n_sigma: float = N_SIGMA_SUPPORT) -> tuple[float, float, float, float] | None:
        """Box (x0, y0, x1, y1) outside which the field is negligible; None if empty."""
        boxes = [p.bbox(n_sigma) for p in self.parts if p.peak_px > 0]
        if not boxes:
            return None
        b = np.array(boxes)
        return (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())

    def jacobian(self, pts: np.ndarray, eps: float = 1e-3) -> np.ndarray:
        """``df/dx`` at ``pts`` (..., 2) as (..., 2, 2), by central differences."""
        pts = _as_points(pts)
        cols = []
        for k in range(2):
            e = np.zeros(2)
            e[k] = eps
            cols.append((self(pts + e) - self(pts - e)) / (2 * eps))
        return np.stack(cols, axis=-1)


def solve_forward(
    points: np.ndarray,
    fld: DisplacementField,
    activation: float = 1.0,
    tol: float = 1e-6,
    max_iter: int = 20,
) -> np.ndarray:
    """Where base points ``p`` appear in the warped image: solve ``q = p + a f(q)``.

    Parameters
    ----------
    points : (N, 2)
        Base points ``p`` in base pixels.
    fld : DisplacementField
    activation : float
        ``a``; the warp at activation ``a`` uses the field ``a * f``.
    tol : float
        Convergence threshold on the residual ``|q - a f(q) - p|`` (px).
    max_iter : int
        Fixed-point iterations before switching to Newton's method.

    Returns
    -------
    (N, 2) array ``q``.

    Notes
    -----
    With the backward warp ``out(x) = in(x - a f(x))``, the pixel showing base point
    ``p`` is the ``x`` with ``x - a f(x) = p``. Reading ``p + a f(p)`` instead is off by
    ``a f(q) - a f(p)``, 5-10 % of the movement for our fields (MEASUREMENTS.md 5).
    Fixed-point iteration converges when ``|a df/dx| < 1`` (brow, commissure fields);
    the eyelid squeeze is steeper, so a damped Newton iteration finishes the job.
    """
    p = _as_points(points)
    f = fld.scaled(activation)
    q = p + f(p)
    for _ in range(max_iter):
        q_new = p + f(q)
        step = float(np.max(np.abs(q_new - q), initial=0.0))
        q = q_new
        if step < tol * 0.1:
            break
    res = q - f(q) - p
    if float(np.max(np.abs(res), initial=0.0)) < tol:
        return q
    # Newton on g(q) = q - f(q) - p, whose Jacobian I - df/dq is invertible for a warp
    # that does not fold (checked by check_no_fold). Start from p: it is always inside
    # the basin for a monotone squeeze, while a diverging fixed-point estimate is not.
    q = p + f(p)
    eye = np.eye(2)
    res = q - f(q) - p
    for _ in range(50):
        err = np.linalg.norm(res, axis=-1)
        if float(np.max(err, initial=0.0)) < tol:
            return q
        jac = eye - f.jacobian(q)
        dq = np.linalg.solve(jac, res[..., None])[..., 0]
        # Backtrack per point so the residual never grows (damped Newton).
        t = np.ones(err.shape)
        for _ in range(20):
            q_try = q - t[..., None] * dq
            res_try = q_try - f(q_try) - p
            worse = np.linalg.norm(res_try, axis=-1) > err
            if not worse.any():
                break
            t = np.where(worse, t / 2, t)
        q, res = q_try, res_try
    raise RuntimeError(
        f"forward solve did not converge (max residual {np.abs(res).max():.2e} px); "
        "the displacement field is probably folding"
    )


def check_no_fold(fld: DisplacementField, step_px: float = 1.0, min_det: float = 0.2) -> float:
    """Raise if the warp ``x -> x - a f(x)`` folds (is not one-to-one) for any a in (0, 1].

    Returns the smallest ``det(I - a df/dx)`` found. A fold would duplicate skin (a
    base point shown twice) and make the truth ambiguous; ``det`` is quadratic in
    ``a``, so it is checked on a grid of activations, not only at the peak.
    """
    box = fld.bbox(3.5)
    if box is None:
        return 1.0
    xs = np.arange(box[0], box[2] + step_px, step_px)
    ys = np.arange(box[1], box[3] + step_px, step_px)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)
    v = fld(grid)
    # np.gradient over (rows=y, cols=x): d/dy along axis 0, d/dx along axis 1.
    dfx_dy, dfx_dx = np.gradient(v[..., 0], step_px)
    dfy_dy, dfy_dx = np.gradient(v[..., 1], step_px)
    worst = 1.0
    for a in np.linspace(0.1, 1.0, 10):
        det = (1 - a * dfx_dx) * (1 - a * dfy_dy) - (a * dfx_dy) * (a * dfy_dx)
        worst = min(worst, float(det.min()))
    if worst < min_det:
        # Below min_det the skin is stretched more than 1/min_det times: a fold in the
        # making, and texture no tracker could follow.
        raise ValueError(
            f"displacement too large: the warp folds or nearly folds "
            f"(min det(I - a df/dx) = {worst:.2f} < {min_det})"
        )
    return worst


# --------------------------------------------------------------------------- measurement


def measure_group(
    group: MuscleGroup,
    side: str,
    p_all: np.ndarray,
    q_all: np.ndarray,
    up: np.ndarray,
    mm_per_px: float,
) -> float:
    """Peak-minus-rest value (mm) of ``group`` on ``side`` from rest/peak landmarks.

    ``p_all``/``q_all`` are (478, 2) landmark arrays at rest and at peak (same frame of
    reference, base px). Implements the protocol kinds of MEASUREMENTS.md section 2:
    length / up / down of the mean displacement, and aperture = rest minus peak of
    (mean upper-lid height - mean lower-lid height) along ``up``.
    """
    idx = list(group.points(side))
    if group.kind in ("aperture", "opening"):
        lo = list(group.lower_points(side))

        def aperture(lm: np.ndarray) -> float:
            return float(np.mean(lm[idx] @ up) - np.mean(lm[lo] @ up))

        change = (aperture(p_all) - aperture(q_all)) * mm_per_px
        return change if group.kind == "aperture" else -change
    mean_d = np.mean(q_all[idx] - p_all[idx], axis=0)
    if group.kind in ("medial", "lateral"):
        # The face's lateral axis (toward the patient's left) is up rotated by -90 deg
        # in image coordinates; the right side's midline lies along +lateral.
        lateral = np.array([-up[1], up[0]])
        toward = float(mean_d @ lateral) * mm_per_px
        toward = toward if side == "right" else -toward
        return toward if group.kind == "medial" else -toward
    if group.kind == "length":
        return float(np.linalg.norm(mean_d)) * mm_per_px
    if group.kind == "up":
        return float(mean_d @ up) * mm_per_px
    if group.kind == "down":
        return -float(mean_d @ up) * mm_per_px
    raise ValueError(f"unknown measurement kind {group.kind!r}")


def warped_landmarks(
    fld: DisplacementField, activation: float = 1.0, size: int = BASE_SIZE
) -> np.ndarray:
    """All 478 base landmarks moved by the warp at ``activation`` (base px)."""
    return solve_forward(base_face(size).landmarks, fld, activation)


def group_truth(
    group: MuscleGroup,
    fld: DisplacementField,
    activation: float = 1.0,
    size: int = BASE_SIZE,
) -> dict[str, float]:
    """True per-side value (mm) of ``group`` under the warp ``fld`` at ``activation``."""
    face = base_face(size)
    q = warped_landmarks(fld, activation, size)
    return {
        s: measure_group(group, s, face.landmarks, q, face.up, face.mm_per_px) for s in _SIDES
    }


# --------------------------------------------------------------------------- step designs


@dataclass(frozen=True)
class Lobe:
    """One anisotropic Gaussian of a design: relative weight, sigmas and centre shift (mm)."""

    weight: float
    sigma_lat_mm: float
    sigma_up_mm: float
    shift_mm: float = 0.0


@dataclass(frozen=True)
class Companion:
    """A second pull that comes with a step's primary one (e.g. the corner with
    the upper lip in a gummy smile), centred on another group's points.

    Its peak is ``ratio`` times the primary lobes' (the calibration scales both
    together); its true effect on every group is computed, never assumed.
    """

    group: str
    lobe: Lobe
    direction: tuple[float, float]
    ratio: float


@dataclass(frozen=True)
class FieldDesign:
    """How one step's muscle pull is drawn, per side (sizes in mm, directions unitless).

    ``kind`` is ``"bump"`` (a sum of Gaussian lobes, all pulling along ``direction``)
    or ``"lids"`` (a :class:`LidClosure` with the sigmas of the single lobe).
    ``direction`` is (outward, up) in the face frame, "outward" meaning away from the
    midline on that side (medial is negative outward). Lobes are centred on the
    centroid of the step's primary landmark group, shifted by ``shift_mm`` along the
    pull ``direction``.
    """

    kind: str
    lobes: tuple[Lobe, ...]
    direction: tuple[float, float] = (0.0, 1.0)
    h_mm: float = 0.0
    note: str = ""
    companions: tuple[Companion, ...] = ()


# Lobes are shifted a few mm along their pull so that the landmarks move *towards* the
# field's peak as the muscle contracts. Centred on the landmarks, the true movement
# saturates (q = p + f(q) runs down the Gaussian's flank) and the warp folds early:
# a brow raise centred on the brow with sigma_up 9 mm could not exceed ~5.5 mm and
# lifted the upper lid with the brow (aperture +2.9 mm for a 4.2 mm raise). With the
# shifts below each step reaches at least: frown 6 mm, raise 10 mm, squint 4 mm
# (60 % of the rest aperture), eee 8 mm, smile 10 mm (both sides at once, warp never
# folding, min det(I - a df/dx) > 0.2).
FIELD_DESIGNS: dict[str, FieldDesign] = {
    "frown": FieldDesign(
        "bump", (Lobe(1.0, 7.5, 7.5, 2.5),), (-0.75, -0.66),
        note="inner brow pulled medially and down",
    ),
    "raise": FieldDesign(
        "bump", (Lobe(1.0, 18.0, 12.0, 9.0),), (0.0, 1.0),
        note="brow and forehead lifted; wide along the brow, peak above it",
    ),
    "squint": FieldDesign(
        "lids", (Lobe(1.0, 10.0, 6.0),), h_mm=3.0,
        note="lids squeezed towards the eye centre, upper lid 60 %, lower 40 %",
    ),
    "eee": FieldDesign(
        "bump", (Lobe(1.0, 9.0, 9.0, 3.0),), (0.8, -0.6),
        note="commissure pulled out and down",
    ),
    "smile": FieldDesign(
        "bump", (Lobe(1.0, 10.0, 10.0, 4.0),), (0.7, 0.7),
        note="commissure pulled out and up",
    ),
    # Extended protocol. The sigmas stay small next to the mouth so the other
    # side and the neighbouring groups move little (their truth is reported).
    "pout": FieldDesign(
        "bump", (Lobe(1.0, 7.0, 6.0, 2.0),), (0.0, 1.0),
        note="chin pad pushed up; corners drawn toward the midline",
        companions=(
            Companion("orbicularis_oris", Lobe(1.0, 6.0, 6.0, 1.5), (-1.0, 0.0), 0.6),
            Companion("mentalis_lip", Lobe(1.0, 5.0, 3.5, 2.0), (0.0, -1.0), 0.5),
        ),
    ),
    "scrunch": FieldDesign(
        "bump", (Lobe(1.0, 5.0, 6.0, 2.0),), (0.15, 1.0),
        note="alar base and nasal sidewall lifted",
    ),
    "gummy_smile": FieldDesign(
        "bump", (Lobe(1.0, 6.0, 6.0, 2.0),), (0.0, 1.0),
        note="upper lip lifted at the canine; the corner goes out and up with it",
        companions=(Companion("zygomaticus", Lobe(1.0, 8.0, 8.0, 3.0), (0.7, 0.7), 0.8),),
    ),
    "sad_mouth": FieldDesign(
        "bump", (Lobe(1.0, 8.0, 8.0, 3.0),), (0.25, -1.0),
        note="commissure pulled down (and slightly out)",
    ),
    "clench": FieldDesign(
        "bump", (Lobe(1.0, 9.0, 12.0, 2.0),), (1.0, 0.0),
        note="jaw outline below the ear pushed outward (masseter bulk)",
    ),
    "speech": FieldDesign(
        "bump", (Lobe(1.0, 7.0, 7.0, 2.0),), (-0.8, 0.3),
        note="corners drawn in and released with each syllable; chin pad with them",
        companions=(Companion("mentalis", Lobe(1.0, 7.0, 6.0, 2.0), (0.0, 1.0), 0.7),),
    ),
}
"""Per-step field shapes. Sigmas are small enough that the nose tip, face contour and
the other side barely move (a Gaussian is < 3 % of its peak beyond 2.65 sigma)."""


@lru_cache(maxsize=4)
def protocol(name: str = PROTOCOL_NAME) -> Protocol:
    return load_protocol(name)


def unit_side_field(step: str, side: str, size: int = BASE_SIZE) -> DisplacementField:
    """The uncalibrated field of ``step`` on ``side``, lobe weights summing to 1 mm.

    Calibration (:func:`calibrate_step`) multiplies it to reach the requested truth.
    """
    if step not in FIELD_DESIGNS:
        raise ValueError(f"no displacement design for step {step!r}; known: {list(FIELD_DESIGNS)}")
    if side not in _SIDES:
        raise ValueError(f"side must be 'right' or 'left', not {side!r}")
    d = FIELD_DESIGNS[step]
    face = base_face(size)
    grp = protocol().step(step).primary
    lm = face.landmarks
    lat, up = face.lateral, face.up
    px = face.px_per_mm
    axes = (tuple(lat.tolist()), tuple(up.tolist()))
    if d.kind == "lids":
        # Centre between the mean upper and mean lower lid: w(eta) is then symmetric
        # about the fissure and both lids start in the same part of the tanh.
        upper = lm[list(grp.points(side))].mean(0)
        centre = (upper + lm[list(grp.lower_points(side))].mean(0)) / 2
        (lobe,) = d.lobes
        part: Part = LidClosure(
            tuple(centre.tolist()), px, lobe.sigma_lat_mm * px, lobe.sigma_up_mm * px,
            d.h_mm * px, *axes,
        )
        return DisplacementField((part,))
    # Patient's right is on the image left: outward is -lateral on the right side.
    outward = -lat if side == "right" else lat
    unit = d.direction[0] * outward + d.direction[1] * up
    unit = unit / np.linalg.norm(unit)
    centroid = lm[list(grp.points(side))].mean(0)
    pulls = [(lobe, unit, centroid, lobe.weight) for lobe in d.lobes]
    for c in d.companions:
        cg = next(g for g in protocol().step(step).groups if g.name == c.group)
        cu = c.direction[0] * outward + c.direction[1] * up
        at = lm[list(cg.points(side) + cg.lower_points(side))].mean(0)
        pulls.append((c.lobe, cu / np.linalg.norm(cu), at, c.ratio))
    parts = []
    for lobe, u, at, weight in pulls:
        centre = at + lobe.shift_mm * px * u
        vec = u * weight * px
        parts.append(
            Bump(
                tuple(centre.tolist()), tuple(vec.tolist()),
                lobe.sigma_lat_mm * px, lobe.sigma_up_mm * px, *axes,
            )
        )
    return DisplacementField(tuple(parts))


@dataclass(frozen=True)
class CalibratedStep:
    """A step's combined (both sides) field, calibrated to the requested truth.

    Attributes
    ----------
    name : str
    requested : {"right": mm, "left": mm}
    gains : {"right": g, "left": g}
        Multipliers of the 1 mm unit fields.
    field : DisplacementField
        The sum of both sides' fields at activation 1.
    truth : {"right": mm, "left": mm}
        The primary group's true value at the peak (computed, not assumed).
    min_det : float
        Smallest ``det(I - a df/dx)``; > 0 means the warp never folds.
    """

    name: str
    requested: dict[str, float]
    gains: dict[str, float]
    field: DisplacementField
    truth: dict[str, float]
    min_det: float

    def truth_at(self, activation: float, size: int = BASE_SIZE) -> dict[str, float]:
        """Primary group's true value (mm) at an intermediate activation."""
        return group_truth(protocol().step(self.name).primary, self.field, activation, size)


@lru_cache(maxsize=256)
def calibrate_step(
    step: str, right_mm: float, left_mm: float, size: int = BASE_SIZE, rtol: float = 1e-4
) -> CalibratedStep:
    """Scale the two sides' fields so the TRUE primary value equals the request.

    Notes
    -----
    The truth is nearly but not exactly linear in the field gain (backward warp, the
    other side's small spill-over, the lid squeeze saturating), so the gains are
    refined by a few multiplicative updates ``g <- g * requested / true``, jointly for
    both sides, until every side is within ``rtol``. A side requested at 0 keeps a zero
    gain; its truth is then only the other side's spill-over (reported, not hidden).
    """
    req = {"right": float(right_mm), "left": float(left_mm)}
    if min(req.values()) < 0:
        raise ValueError(f"{step}: amplitudes must be >= 0 mm, got {req}")
    grp = protocol().step(step).primary
    units = {s: unit_side_field(step, s, size) for s in _SIDES}
    gains = dict(req)

    def combined(g: Mapping[str, float]) -> DisplacementField:
        return units["right"].scaled(g["right"]) + units["left"].scaled(g["left"])

    def true_value(g: Mapping[str, float]) -> dict[str, float]:
        try:
            return group_truth(grp, combined(g), 1.0, size)
        except RuntimeError:
            # The solve only fails when the warp folds: the request is out of range.
            raise ValueError(
                f"{step}: {req} mm is more than this field can produce without folding "
                "the image (see FIELD_DESIGNS for the supported range)"
            ) from None

    truth = true_value(gains)
    for _ in range(40):
        done = all(
            req[s] == 0 or abs(truth[s] - req[s]) <= rtol * req[s] for s in _SIDES
        )
        if done:
            break
        for s in _SIDES:
            if req[s] > 0:
                if truth[s] <= 0:
                    raise RuntimeError(f"{step}/{s}: field produces no movement to calibrate")
                gains[s] *= req[s] / truth[s]
        truth = true_value(gains)
    else:
        raise RuntimeError(f"{step}: calibration did not converge ({truth} vs {req})")
    fld = combined(gains)
    try:
        min_det = check_no_fold(fld)
    except ValueError as exc:
        raise ValueError(f"{step} {req} mm: {exc}") from None
    return CalibratedStep(step, req, gains, fld, truth, min_det)


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class StepMotion:
    """One protocol step in a synthetic video: timing and requested truth per side (mm).

    The activation rises (raised cosine) from ``start_s`` to ``peak_s - HOLD_S``, holds
    1 until ``peak_s + HOLD_S`` and falls back to 0 at ``end_s``.
    """

    name: str
    start_s: float
    peak_s: float
    end_s: float
    right_mm: float
    left_mm: float
    syllable_hz: float = 0.0  # > 0: repeated movement (speech), see :func:`envelope`
    crease_right: float = 0.0  # fold depth of the step's dynamic lines at activation 1
    crease_left: float = 0.0  # (0.2 = 20 % darker; movement.synth.creases)

    def __post_init__(self) -> None:
        if not self.start_s < self.peak_s - HOLD_S < self.peak_s + HOLD_S < self.end_s:
            raise ValueError(
                f"step {self.name}: need start_s < peak_s - {HOLD_S} and "
                f"peak_s + {HOLD_S} < end_s (got {self.start_s}, {self.peak_s}, {self.end_s})"
            )
        if self.right_mm < 0 or self.left_mm < 0:
            raise ValueError(f"step {self.name}: amplitudes must be >= 0 mm")
        if not (0 <= self.crease_right <= 0.6 and 0 <= self.crease_left <= 0.6):
            raise ValueError(f"step {self.name}: crease depths must be 0-0.6")


@dataclass(frozen=True)
class SynthSpec:
    """Everything that defines a synthetic video (and, with ``seed``, its pixels)."""

    steps: tuple[StepMotion, ...]
    duration_s: float
    fps: float = 30.0
    frame_size: tuple[int, int] = (1280, 720)  # (width, height); portrait = (720, 1280)
    face_height_frac: float = 0.55  # face height / frame height (0.35 = small face)
    roll_deg: float = 0.0  # amplitude of a slow head roll
    shift_px: float = 0.0  # amplitude of a slow head drift (frame px)
    zoom: float = 0.0  # amplitude of relative scale change, e.g. 0.05
    noise_sigma: float = 0.0  # gaussian pixel noise (grey levels)
    jpeg_quality: int | None = None  # pass each frame through JPEG at this quality
    blur_sigma: float = 0.0
    light_drift: float = 0.0  # relative brightness change across the video (e.g. 0.2)
    mirrored: bool = False  # selfie video: flip every frame horizontally
    seed: int = 0
    protocol: str = "standard"  # the protocol the video performs (order, truth record)
    face: str = ASTRONAUT  # the photo warped (see use_face)

    def __post_init__(self) -> None:
        # Accept lists from callers but keep the spec immutable (and hashable).
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "frame_size", (int(self.frame_size[0]), int(self.frame_size[1])))
        if self.fps <= 0 or self.duration_s <= 0:
            raise ValueError("fps and duration_s must be positive")
        w, h = self.frame_size
        if w < 16 or h < 16:
            raise ValueError(f"frame_size too small: {self.frame_size}")
        if not 0.05 <= self.face_height_frac <= 1.5:
            raise ValueError(f"face_height_frac out of range: {self.face_height_frac}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be 1..100")
        if min(self.noise_sigma, self.blur_sigma, self.shift_px, self.zoom) < 0:
            raise ValueError("noise_sigma, blur_sigma, shift_px and zoom must be >= 0")
        if self.zoom >= 0.5:
            raise ValueError("zoom is a relative amplitude and must be < 0.5")
        ordered = sorted(self.steps, key=lambda s: s.start_s)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if b.start_s < a.end_s:
                raise ValueError(f"steps overlap: {a.name} ends after {b.name} starts")
        for s in self.steps:
            if s.start_s < 0 or s.end_s > self.duration_s:
                raise ValueError(f"step {s.name} lies outside 0..{self.duration_s} s")
            if s.name not in FIELD_DESIGNS:
                raise ValueError(f"no displacement design for step {s.name!r}")

    @property
    def n_frames(self) -> int:
        return int(round(self.duration_s * self.fps))


def envelope(step: StepMotion, t: float | np.ndarray) -> np.ndarray:
    """Activation of ``step`` at times ``t`` (s): 0 at rest, 1 on the plateau.

    A raised cosine has zero slope at both ends, so landmarks start and stop moving
    smoothly, like a real muscle, and peak detection has a flat top to find.
    """
    t = np.asarray(t, dtype=float)
    if step.syllable_hz > 0:
        # Speech: each syllable a raised-cosine movement, at full height except
        # for the first and last half-second.
        ramp = np.clip(np.minimum(t - step.start_s, step.end_s - t) / SPEECH_RAMP_S, 0.0, 1.0)
        osc = 0.5 - 0.5 * np.cos(2 * np.pi * step.syllable_hz * (t - step.start_s))
        return np.where((t > step.start_s) & (t < step.end_s), ramp * osc, 0.0)
    rise_end, fall_start = step.peak_s - HOLD_S, step.peak_s + HOLD_S
    up = 0.5 - 0.5 * np.cos(np.pi * (t - step.start_s) / (rise_end - step.start_s))
    down = 0.5 + 0.5 * np.cos(np.pi * (t - fall_start) / (step.end_s - fall_start))
    return np.select(
        [t <= step.start_s, t < rise_end, t <= fall_start, t < step.end_s],
        [0.0, up, 1.0, down],
        0.0,
    )


def standard_steps(
    amplitudes: Mapping[str, tuple[float, float]],
    start_s: float = 1.5,
    step_s: float = 3.0,
    rest_s: float = 2.0,
    skip: Iterable[str] = (),
    protocol_name: str = "standard",
    creases: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[StepMotion, ...]:
    """Lay out the protocol's steps in order with rests between them.

    Parameters
    ----------
    amplitudes : {step: (right_mm, left_mm)}
        Requested truth per step; every step not skipped needs an entry.
    start_s, step_s, rest_s : float
        Rest before the first step, length of each step, rest between steps.
    skip : names of steps the patient skips
        Their time slot stays in the video as rest (the patient was asked and did
        nothing), so the timing of the other steps does not depend on what is skipped.
    protocol_name : the protocol whose steps are laid out ("standard", "extended")
        A repeated-movement step (speech) lasts its protocol duration, with syllables.
    creases : {step: (right, left)} fold depth of the step's dynamic lines (0-0.6)
    """
    creases = creases or {}
    skip = set(skip)
    proto = protocol(protocol_name)
    names = [s.name for s in proto.steps]
    unknown = (set(amplitudes) | skip) - set(names)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; protocol order is {names}")
    out = []
    t = start_s
    for name in names:
        length, hz = _slot(proto, name, step_s)
        if name not in skip:
            if name not in amplitudes:
                raise ValueError(f"no amplitudes for step {name!r} (skip it explicitly)")
            r, lft = amplitudes[name]
            cr, cl = creases.get(name, (0.0, 0.0))
            out.append(
                StepMotion(name, t, t + length / 2, t + length, float(r), float(lft), hz,
                           float(cr), float(cl))
            )
        t += length + rest_s
    return tuple(out)


def _slot(proto: Protocol, name: str, step_s: float) -> tuple[float, float]:
    """Length (s) and syllable rate of a step's slot in a generated video."""
    st = proto.step(name)
    if st.mode == "range":
        return st.duration_s, SPEECH_SYLLABLE_HZ
    return step_s, 0.0


def standard_spec(
    amplitudes: Mapping[str, tuple[float, float]],
    *,
    skip: Iterable[str] = (),
    start_s: float = 1.5,
    step_s: float = 3.0,
    rest_s: float = 2.0,
    tail_s: float = 2.0,
    creases: Mapping[str, tuple[float, float]] | None = None,
    **kwargs: object,
) -> SynthSpec:
    """A :class:`SynthSpec` for a protocol, ending ``tail_s`` after the last step.

    ``kwargs`` are the other :class:`SynthSpec` fields (``fps``, ``roll_deg``,
    ``protocol`` ...).
    """
    name = str(kwargs.get("protocol", "standard"))
    proto = protocol(name)
    steps = standard_steps(amplitudes, start_s, step_s, rest_s, skip, name, creases)
    # The video always covers the full protocol slot layout, skipped steps included.
    slots = [_slot(proto, s.name, step_s)[0] for s in proto.steps]
    end = start_s + sum(slots) + (len(slots) - 1) * rest_s
    return SynthSpec(steps=steps, duration_s=end + tail_s, **kwargs)  # type: ignore[arg-type]


SAMPLE_AMPLITUDES: dict[str, tuple[float, float]] = {
    "frown": (3.0, 1.6),
    "raise": (4.2, 2.3),
    "squint": (2.6, 1.3),  # aperture mm; the base eyes are ~6.5 mm open
    "eee": (2.0, 3.4),
    "smile": (6.0, 4.0),
}
"""A clearly asymmetric pattern (right, left) in mm, with the left side dominant in eee."""


# --------------------------------------------------------------------------- rendering

# Periods (s) of the slow head-motion sinusoids; incommensurate so the pose never repeats.
_ROLL_PERIOD_S, _SHIFT_X_PERIOD_S, _SHIFT_Y_PERIOD_S, _ZOOM_PERIOD_S = 6.1, 7.7, 5.3, 9.1
_SHIFT_Y_RATIO = 0.7


@dataclass(frozen=True)
class HeadMotion:
    """Slow similarity motion of the head: roll, drift and zoom as sinusoids."""

    roll_deg: float
    shift_px: float
    zoom: float
    phases: tuple[float, float, float, float]

    def at(self, t: float) -> tuple[float, float, float, float]:
        """(roll radians, shift x px, shift y px, relative zoom) at time ``t``."""
        two_pi = 2 * math.pi
        p = self.phases
        roll = math.radians(self.roll_deg) * math.sin(two_pi * t / _ROLL_PERIOD_S + p[0])
        sx = self.shift_px * math.sin(two_pi * t / _SHIFT_X_PERIOD_S + p[1])
        sy = _SHIFT_Y_RATIO * self.shift_px * math.sin(two_pi * t / _SHIFT_Y_PERIOD_S + p[2])
        z = self.zoom * math.sin(two_pi * t / _ZOOM_PERIOD_S + p[3])
        return roll, sx, sy, z

    def describe(self) -> dict[str, object]:
        return {
            "model": "similarity about the face centre, sinusoids",
            "roll_deg": {"amplitude": self.roll_deg, "period_s": _ROLL_PERIOD_S,
                         "phase_rad": self.phases[0]},
            "shift_x_px": {"amplitude": self.shift_px, "period_s": _SHIFT_X_PERIOD_S,
                           "phase_rad": self.phases[1]},
            "shift_y_px": {"amplitude": _SHIFT_Y_RATIO * self.shift_px,
                           "period_s": _SHIFT_Y_PERIOD_S, "phase_rad": self.phases[2]},
            "zoom": {"amplitude": self.zoom, "period_s": _ZOOM_PERIOD_S,
                     "phase_rad": self.phases[3]},
        }


class Renderer:
    """Renders the frames of one :class:`SynthSpec` (each frame independently).

    Per frame the backward map is built once: frame pixel -> (inverse head motion and
    placement) -> base pixel ``y`` -> ``y - a f(y)`` inside the active step's support
    box -> canvas pixel, followed by a single ``cv2.remap``. The field is evaluated
    analytically on that box, so the pixels use exactly the field the truth is
    computed from.
    """

    def __init__(self, spec: SynthSpec, size: int = BASE_SIZE) -> None:
        self.spec = spec
        use_face(spec.face)
        self.face = base_face(size)
        self.size = size
        self.steps = {
            (s.name, s.right_mm, s.left_mm): calibrate_step(s.name, s.right_mm, s.left_mm, size)
            for s in spec.steps
        }
        rng = np.random.default_rng(spec.seed)
        self.head = HeadMotion(
            spec.roll_deg, spec.shift_px, spec.zoom, tuple(rng.uniform(0, 2 * np.pi, 4).tolist())
        )
        w, h = spec.frame_size
        # Placement: face height -> face_height_frac of the frame, face centre -> centre.
        self.scale = spec.face_height_frac * h / self.face.height_px
        self.frame_centre = np.array([(w - 1) / 2, (h - 1) / 2])
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self.grid = np.dstack([gx, gy])

    @property
    def frame_mm_per_px(self) -> float:
        """mm per frame pixel with the head at its mean pose (no zoom)."""
        return self.face.mm_per_px / self.scale

    def frame_to_base(self, t: float) -> np.ndarray:
        """2x3 affine taking frame pixels to base pixels at time ``t`` (head motion)."""
        roll, sx, sy, z = self.head.at(t)
        m = 1.0 / (self.scale * (1.0 + z))
        c, s = math.cos(roll), math.sin(roll)
        lin = m * np.array([[c, s], [-s, c]])  # inverse of a rotation by +roll, scaled
        shift = self.frame_centre + np.array([sx, sy])
        return np.hstack([lin, (self.face.centre - lin @ shift)[:, None]])

    def base_to_frame(self, t: float, pts: np.ndarray) -> np.ndarray:
        """Where base points appear in the frame at ``t`` (head motion only, unmirrored)."""
        a = self.frame_to_base(t)
        inv = np.linalg.inv(a[:, :2])
        return (np.asarray(pts, dtype=float) - a[:, 2]) @ inv.T

    def activation(self, t: float) -> tuple[CalibratedStep | None, float]:
        for s in self.spec.steps:
            a = float(envelope(s, t))
            if a > 0:
                return self.steps[(s.name, s.right_mm, s.left_mm)], a
        return None, 0.0

    def source_map(self, t: float) -> np.ndarray:
        """(H, W, 2) float32 canvas position shown by each (unmirrored) frame pixel at ``t``."""
        to_canvas = self.frame_to_base(t)
        to_canvas[:, 2] += self.face.offset
        ymap = cv2.transform(self.grid, to_canvas)
        step, a = self.activation(t)
        box = step.field.bbox() if step is not None else None
        if box is not None:
            self._apply_field(ymap, t, step.field.scaled(a), box)
        return ymap

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (BGR uint8), degradations and mirroring included."""
        t = i / self.spec.fps
        ymap = self.source_map(t)
        img = cv2.remap(
            self.face.canvas, ymap, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT,
        )
        return self._degrade(self._fold(img, ymap, t), i, t)

    def _fold(self, img: np.ndarray, ymap: np.ndarray, t: float) -> np.ndarray:
        """The active step's dynamic lines, drawn where the skin now is."""
        # Imported here: synth_creases builds on this module's base face.
        from movement.synth.creases import STEP_CREASES, apply_creases

        for s in self.spec.steps:
            if not (s.crease_right or s.crease_left):
                continue
            a = float(envelope(s, t))
            if a > 0:
                depths = {n: (s.crease_right, s.crease_left) for n in STEP_CREASES.get(s.name, ())}
                offset = np.asarray(self.face.offset, dtype=np.float32)
                return apply_creases(img, ymap - offset, depths, a, self.size)
        return img

    def _apply_field(
        self, ymap: np.ndarray, t: float, fld: DisplacementField, box: tuple[float, ...]
    ) -> None:
        # Only the frame pixels whose base position lies in the field's support box
        # need the field; outside it the field is < 4e-5 of its peak.
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])
        fc = self.base_to_frame(t, corners)
        h, w = ymap.shape[:2]
        c0, r0 = np.floor(fc.min(0)).astype(int) - 2
        c1, r1 = np.ceil(fc.max(0)).astype(int) + 3
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, w), min(r1, h)
        if c0 >= c1 or r0 >= r1:
            return
        sub = ymap[r0:r1, c0:c1]
        offset = np.asarray(self.face.offset, dtype=np.float32)
        disp = fld(sub - offset)
        sub -= disp.astype(np.float32)

    def _degrade(self, img: np.ndarray, i: int, t: float) -> np.ndarray:
        spec = self.spec
        if spec.blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), spec.blur_sigma)
        gain = 1.0 + spec.light_drift * (t / spec.duration_s - 0.5)
        if spec.noise_sigma > 0:
            # OpenCV's RNG is per thread; seeding it per frame keeps frames reproducible
            # whichever worker thread renders them (and 3x faster than NumPy's normal).
            cv2.setRNGSeed(int(spec.seed) * 1_000_003 + i)
            noise = np.empty(img.shape, np.float32)
            cv2.randn(noise, 0.0, float(spec.noise_sigma))
            img = cv2.addWeighted(img, gain, noise, 1.0, 0.0, dtype=cv2.CV_8U)
        elif gain != 1.0:
            img = cv2.convertScaleAbs(img, alpha=gain)
        if spec.jpeg_quality is not None:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(spec.jpeg_quality)])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if spec.mirrored:
            img = cv2.flip(img, 1)
        return img

    def frames(self, workers: int | None = None) -> Iterator[np.ndarray]:
        """All frames in order, rendered by a small thread pool (OpenCV drops the GIL)."""
        n = self.spec.n_frames
        workers = workers or min(4, os.cpu_count() or 1)
        chunk = 4 * workers
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, n, chunk):
                yield from pool.map(self.frame, range(start, min(start + chunk, n)))


# --------------------------------------------------------------------------- truth + video


def _group_record(
    grp: MuscleGroup, fld: DisplacementField, size: int, primary: bool
) -> dict[str, object]:
    tr = group_truth(grp, fld, 1.0, size)
    return {
        "muscle_group": grp.name,
        "measure": grp.measure,
        "kind": grp.kind,
        "primary": primary,
        "right_mm": round(tr["right"], 6),
        "left_mm": round(tr["left"], 6),
    }


def _range_truth(
    s: StepMotion, grp: MuscleGroup, fld: DisplacementField, fps: float, size: int
) -> dict[str, object]:
    """Truth of a repeated movement, defined as the analyzer reads it: per side the
    95th percentile of the true value over the step's frames, and its movements.

    The true value at each frame's activation comes from a 41-point table of
    exact solves (linear interpolation between them errs < 0.001 mm).
    """
    from movement.analysis.activation import RANGE_PERCENTILE, count_movements

    grid = np.linspace(0.0, 1.0, 41)
    table = {side: [] for side in _SIDES}
    for a in grid:
        tr = group_truth(grp, fld, float(a), size) if a > 0 else {x: 0.0 for x in _SIDES}
        for side in _SIDES:
            table[side].append(tr[side])
    n0, n1 = int(math.ceil(s.start_s * fps)), int(math.floor(s.end_s * fps))
    t = np.arange(n0, n1 + 1) / fps
    act = envelope(s, t)
    out: dict[str, object] = {}
    moves = {}
    for side in _SIDES:
        v = np.interp(act, grid, table[side])
        rng = float(np.percentile(v, RANGE_PERCENTILE))
        out[f"{side}_mm"] = round(rng, 6)
        moves[side] = count_movements(v, rng)
    out["movements"] = moves
    out["definition"] = f"{RANGE_PERCENTILE}th percentile over the step; movements counted"
    return out


def truth_record(spec: SynthSpec, renderer: Renderer | None = None) -> dict[str, object]:
    """The ground truth of ``spec`` as a JSON-ready dict (see :func:`make_video`)."""
    r = renderer or Renderer(spec)
    face = r.face
    proto = protocol(spec.protocol)
    primaries = {s.name: s.primary for s in proto.steps}
    steps = []
    for s in spec.steps:
        cal = r.steps[(s.name, s.right_mm, s.left_mm)]
        pstep = proto.step(s.name)
        # Primary first, then any secondary groups the protocol lists for this step.
        ordered = sorted(pstep.groups, key=lambda g: not g.primary)
        groups = [_group_record(g, cal.field, r.size, g.primary) for g in ordered]
        if s.syllable_hz > 0:
            for rec, g in zip(groups, ordered, strict=True):
                rec.update(_range_truth(s, g, cal.field, spec.fps, r.size))
        # What the *other* steps' primary measurements read during this step: they
        # should be ~0 (the fields are local); an analyzer reporting more is leaking.
        crosstalk = [
            {"step": name, **_group_record(g, cal.field, r.size, False)}
            for name, g in primaries.items()
            if name != s.name
        ]
        from movement.synth.creases import STEP_CREASES

        steps.append(
            {
                "creases": [
                    {"region": n, "right_depth": s.crease_right, "left_depth": s.crease_left}
                    for n in STEP_CREASES.get(s.name, ())
                ],
                "name": s.name,
                "start_s": s.start_s,
                "peak_s": s.peak_s,
                "end_s": s.end_s,
                "plateau_s": [s.peak_s - HOLD_S, s.peak_s + HOLD_S],
                "requested": {"right_mm": s.right_mm, "left_mm": s.left_mm},
                "groups": groups,
                "crosstalk": crosstalk,
                "field": {
                    "design": asdict(FIELD_DESIGNS[s.name]),
                    "gains_mm": {k: round(v, 5) for k, v in cal.gains.items()},
                    "min_jacobian_det": round(cal.min_det, 4),
                },
            }
        )
    lm = face.landmarks
    ap = next(m for m in proto.rest_measures if m.kind == "aperture")
    aperture = {
        side: float(
            (np.mean(lm[list(getattr(ap, side))] @ face.up)
             - np.mean(lm[list(getattr(ap, f"{side}_lower"))] @ face.up)) * face.mm_per_px
        )
        for side in _SIDES
    }
    w, h = spec.frame_size
    return {
        "format": "movement-synth-truth",
        "version": 1,
        "protocol": proto.name,
        "sides": "anatomical (patient's right/left), unchanged by mirroring",
        "fps": spec.fps,
        "n_frames": spec.n_frames,
        "duration_s": spec.duration_s,
        "frame_size": [w, h],
        "mirrored": spec.mirrored,
        "mm_per_px_base": face.mm_per_px,
        "frame_mm_per_px": r.frame_mm_per_px,
        "placement_scale": r.scale,
        "face_height_frac": spec.face_height_frac,
        "seed": spec.seed,
        "degradations": {
            "roll_deg": spec.roll_deg,
            "shift_px": spec.shift_px,
            "zoom": spec.zoom,
            "noise_sigma": spec.noise_sigma,
            "jpeg_quality": spec.jpeg_quality,
            "blur_sigma": spec.blur_sigma,
            "light_drift": spec.light_drift,
        },
        "head_motion": r.head.describe(),
        "envelope": f"raised cosine start->peak-{HOLD_S}s, hold, raised cosine ->end",
        "base": {
            "photo": "skimage.data.astronaut" if spec.face == ASTRONAUT else spec.face,
            "size_px": [int(face.image.shape[1]), int(face.image.shape[0])],
            "face_height_px": face.height_px,
            "rest_aperture_mm": {k: round(v, 4) for k, v in aperture.items()},
        },
        "steps": steps,
    }


def make_video(spec: SynthSpec, out: Path, truth_path: Path | None = None) -> dict:
    """Render ``spec`` to ``out`` (.mp4, 'mp4v') and write its truth JSON.

    Parameters
    ----------
    spec : SynthSpec
    out : Path
        Video path; must end in ``.mp4``. Parent directories are created.
    truth_path : Path, optional
        Where to write the truth; default ``<out without .mp4>.truth.json``.

    Returns
    -------
    dict
        The truth (as written), plus ``video``, ``truth_path`` and ``render_s``.
        Per step: ``name, start_s, peak_s, end_s`` and ``groups`` with
        ``muscle_group, measure, kind, primary, right_mm, left_mm`` -- the protocol
        groups of that step, primary first, values at the peak (activation 1).
    """
    import time

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"video path must end in .mp4: {out}")
    truth_path = Path(truth_path) if truth_path else out.with_suffix(".truth.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    renderer = Renderer(spec)
    truth = truth_record(spec, renderer)
    writer = cv2.VideoWriter(
        str(out), cv2.VideoWriter_fourcc(*"mp4v"), float(spec.fps), tuple(spec.frame_size)
    )
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a video writer for {out} (codec mp4v, {spec.frame_size})")
    t0 = time.perf_counter()
    try:
        for img in renderer.frames():
            writer.write(img)
    finally:
        writer.release()
    truth["video"] = out.name
    text = json.dumps(truth, indent=2) + "\n"
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    truth_path.write_text(text, encoding="utf-8")
    # Return what the file holds (JSON types: lists, not tuples), plus where things are.
    return {**json.loads(text), "video": str(out), "truth_path": str(truth_path),
            "render_s": time.perf_counter() - t0}


def sample_spec() -> SynthSpec:
    """The bundled sample: 960x540 at 30 fps, SAMPLE_AMPLITUDES with their lines
    (SAMPLE_CREASES), mild head motion."""
    return standard_spec(
        SAMPLE_AMPLITUDES,
        creases={k: v for k, v in SAMPLE_CREASES.items() if k in SAMPLE_AMPLITUDES},
        fps=30.0,
        frame_size=(960, 540),
        roll_deg=2.0,
        shift_px=8.0,
        zoom=0.02,
        noise_sigma=1.5,
        seed=7,
    )


EXTENDED_SAMPLE_AMPLITUDES: dict[str, tuple[float, float]] = {
    **SAMPLE_AMPLITUDES,
    "pout": (2.4, 1.2),
    "scrunch": (1.0, 2.2),
    "gummy_smile": (3.2, 1.6),
    "sad_mouth": (1.4, 2.8),
    "clench": (1.6, 0.6),
    "speech": (3.0, 1.8),
}
"""The extended sample: the standard pattern, then the lower face (mm, right/left)."""

SAMPLE_CREASES: dict[str, tuple[float, float]] = {
    "frown": (0.25, 0.10),
    "raise": (0.30, 0.15),
    "squint": (0.12, 0.30),
    "smile": (0.20, 0.20),
    "scrunch": (0.10, 0.28),
    "pout": (0.22, 0.08),
}
"""Fold depths (fraction darker at the fold) of the extended sample's dynamic lines."""


def extended_sample_spec() -> SynthSpec:
    """The extended-protocol sample: the sample's settings, every step, with lines."""
    return standard_spec(
        EXTENDED_SAMPLE_AMPLITUDES,
        creases=SAMPLE_CREASES,
        protocol="extended",
        fps=30.0,
        frame_size=(960, 540),
        roll_deg=2.0,
        shift_px=8.0,
        zoom=0.02,
        noise_sigma=1.5,
        seed=11,
    )


def make_sample(out_dir: Path) -> Path:
    """Write ``sample_consult.mp4`` and ``sample_extended.mp4`` (each with its
    ``.truth.json``) into ``out_dir``; returns the first."""
    out = Path(out_dir) / "sample_consult.mp4"
    make_video(sample_spec(), out)
    make_video(extended_sample_spec(), Path(out_dir) / "sample_extended.mp4")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m movement.synth [OUT_DIR]``: regenerate the sample (default ./videos)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    out_dir = Path(args[0]) if args else Path("videos")
    path = make_sample(out_dir)
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
