"""Stage 3 — head-motion removal and millimetre scale for the whole video.

This gives every frame's landmarks in millimetres in a head-fixed face frame.
It is the coarse, whole-video view used to find steps and rest frames and to
draw traces; the per-step measurement itself is refined by the image tracker
(:mod:`movement.analysis.imagetrack`), which is far more precise on skin.

Why the irises: during a pure brow raise the landmark model also moves the
"rigid" nose-bridge and eye-corner points by 2-3 mm, so a similarity fit on
them removes much of the movement it should measure. The iris centres follow
the eyeballs, which do not move with expression, and their distance gives the
zoom. Gaze shifts move them slightly; the per-step image tracker does not use
them at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

from movement.analysis.face import IRIS_DIAMETER_MM, LEFT_IRIS, RIGHT_IRIS, iris_diameter_px
from movement.analysis.landmarks import LandmarkTrack

FRESH_MIN = 3
"""Frames with fresh detections the correction needs; with fewer the tracked iris stands."""


@dataclass(frozen=True)
class Scale:
    """Millimetre scale of the video.

    mm_per_px applies at the reference inter-iris distance ``ipd_px``; a frame
    whose inter-iris distance is ``d`` has ``mm_per_px * ipd_px / d``.
    """

    mm_per_px: float
    spread: float  # IQR / median of the per-frame iris diameters (at the reference distance)
    iris_px: float
    ipd_px: float
    ipd_mm: float
    frames_used: int  # tracked frames the iris was read on
    fresh_factor: float = 1.0  # fresh / tracking-mode iris (median over fresh detections)
    fresh_used: int = 0  # fresh detections behind fresh_factor (0: no correction)
    # The horizontal iris's foreshortening by the gaze's angle, already in mm_per_px
    # (restface.facing_scale; 1.0 when not corrected).
    iris_facing: float = 1.0


@dataclass
class Trajectories:
    """Stabilised landmark trajectories.

    Attributes
    ----------
    t : (T,) seconds
    mm : (T, 478, 2) float32 position in mm in the face frame: x toward the
        patient's left, y up, origin between the iris centres; NaN where no face
    roll_deg : (T,) head roll (positive: patient's left eye higher in the image)
    yaw_index : (T,) nose offset between the eyes (-1..1), a head-turn proxy
    zoom : (T,) inter-iris distance relative to the reference
    """

    t: np.ndarray
    mm: np.ndarray
    roll_deg: np.ndarray
    yaw_index: np.ndarray
    zoom: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.mm[:, 0, 0])


def iris_centres(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return xy[..., RIGHT_IRIS[0], :], xy[..., LEFT_IRIS[0], :]


def _iris_ratio(xy: np.ndarray) -> np.ndarray:
    """Iris diameter over inter-iris distance, per frame (NaN where no face)."""
    r, left = iris_centres(xy)
    return iris_diameter_px(xy) / np.linalg.norm(left - r, axis=-1)


def estimate_scale(track: LandmarkTrack) -> Scale:
    """Scale from the iris diameter, robust over many frames.

    Notes
    -----
    The iris is read relative to the inter-iris distance in every tracked frame, and
    that ratio's median times the median inter-iris distance is the iris in pixels at
    the reference distance. Tracking mode reads the iris larger than a fresh
    (static-mode) detection by an amount that depends on the face (1.7 % and 8.7 %
    larger than the generator's truth on the benchmark's two faces), so the landmark
    pass also detects the face afresh every half second, on several cuts of the frame
    (one detection's iris moves with the pixel grid by up to 2 %); the median of each
    frame's cuts over its tracked iris, median over those frames, corrects it. Paired
    frame by frame, the correction leaves out what changes between frames
    (expression, pose, blur). The medians ignore the squints and blinks that shrink
    the visible iris in a minority of frames. With fresh detections on fewer than
    three frames there is no correction. Zoom during the video is corrected frame by
    frame through the inter-iris distance.
    """
    ok = track.valid
    if not ok.any():
        raise ValueError("no tracked frames")
    r, left = iris_centres(track.xy)
    ipd_px = float(np.median(np.linalg.norm(left - r, axis=-1)[ok]))
    # Per-frame values first, then the tracked frames: ``track.xy[ok]`` would copy
    # every landmark of a long video (130 MB for ten minutes) to read a few.
    d = _iris_ratio(track.xy)[ok] * ipd_px
    # The cuts of one frame (landmarks.FRESH_CUTS) are one reading: their median,
    # then the ratio to that frame's tracked iris, then the median over frames.
    ratio = _iris_ratio(track.fresh_xy)
    ok_f = np.isfinite(ratio)
    frames = np.unique(track.fresh_frames[ok_f])
    tracked = _iris_ratio(track.xy[frames]) if len(frames) else np.zeros(0)
    factor = np.array(
        [np.median(ratio[ok_f & (track.fresh_frames == f)]) for f in frames]
    ) / np.where(tracked > 0, tracked, np.nan)
    good = np.isfinite(factor)
    factor = factor[good]
    used = int(np.isin(track.fresh_frames[ok_f], frames[good]).sum())
    fresh = len(factor) >= FRESH_MIN
    if fresh:
        d = d * float(np.median(factor))
    med = float(np.median(d))
    q1, q3 = np.percentile(d, [25, 75])
    mm_per_px = IRIS_DIAMETER_MM / med
    return Scale(
        mm_per_px=mm_per_px,
        spread=float((q3 - q1) / med),
        iris_px=med,
        ipd_px=ipd_px,
        ipd_mm=ipd_px * mm_per_px,
        frames_used=int(ok.sum()),
        fresh_factor=float(np.median(factor)) if fresh else 1.0,
        fresh_used=used if fresh else 0,
    )


def stabilise(track: LandmarkTrack, scale: Scale, smooth: int = 3) -> Trajectories:
    """Landmarks of every frame in mm in the iris-anchored face frame.

    Parameters
    ----------
    smooth : frames of the median filter on the frame's origin, axis and zoom;
        the irises jitter by a fraction of a pixel and the head moves slowly.
    """
    xy = track.xy
    r, left = iris_centres(xy)
    origin = (r + left) / 2
    v = left - r
    ipd = np.linalg.norm(v, axis=-1)
    ok = np.isfinite(ipd)
    if smooth > 1 and ok.sum() > smooth:
        for arr in (origin, v):
            arr[ok] = median_filter(arr[ok], size=(smooth, 1), mode="nearest")
        ipd = np.linalg.norm(v, axis=-1)
    lateral = v / ipd[:, None]
    up = np.stack([lateral[:, 1], -lateral[:, 0]], axis=-1)
    # In blocks of frames: (T, 478, 2) arrays are the largest of a long video,
    # and whole-video temporaries would double or triple them.
    k = (scale.mm_per_px * scale.ipd_px / ipd)[:, None]
    mm = np.empty(xy.shape, np.float32)
    for a in range(0, len(xy), 1024):
        b = a + 1024
        rel = xy[a:b] - origin[a:b, None, :]
        mm[a:b, :, 0] = (rel * lateral[a:b, None, :]).sum(-1) * k[a:b]
        mm[a:b, :, 1] = (rel * up[a:b, None, :]).sum(-1) * k[a:b]
    roll = np.degrees(np.arctan2(-v[:, 1], v[:, 0]))
    # Nose tip (1) between the outer eye corners: 0 when frontal.
    nose_x = mm[:, 1, 0]
    half = (mm[:, 263, 0] - mm[:, 33, 0]) / 2
    yaw = np.clip(nose_x / np.where(half > 0, half, np.nan), -1, 1)
    return Trajectories(track.t, mm, roll, yaw, ipd / scale.ipd_px)


def yaw_degrees(yaw_index: np.ndarray) -> np.ndarray:
    """Approximate head yaw from the nose offset index (arcsine model)."""
    return np.degrees(np.arcsin(np.clip(yaw_index * 1.6, -1, 1)))
