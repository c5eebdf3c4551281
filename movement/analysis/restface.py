"""The head outside the steps: the neutral face turned face-on for the resting
measures, and the gaze's angle for the iris scale.

Why: on a turned head, a resting width measured from the point between the irises
moves with the turn (the alar base lies ~15 mm in front of the irises, the jaw ~50 mm
behind), and the horizontal iris the scale is read on is foreshortened when the eyes
turn with the head. Both use the head's pose from FaceMesh's 3D landmarks
(:mod:`movement.analysis.pose`); see docs/METHOD.md sections 3 and 4.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from movement.analysis import pose
from movement.analysis.landmarks import LandmarkTrack
from movement.analysis.pose import MIDLINE, SYMMETRY_PAIRS, head_angles, midline_axis, rotation
from movement.analysis.stabilise import Scale

EYE_RADIUS_MM = 10.5
"""From the eye's centre of rotation to the iris plane (anatomical, ~10-11 mm)."""
IPD_MM = 63.0
"""A typical inter-iris distance: it puts the iris's offset in mm before the scale is
known (the gaze angle it gives is insensitive to +-10 %)."""


def iris_facing(xy: np.ndarray, z: np.ndarray) -> float:
    """cos of the angle between the gaze and the camera axis, median over frames: the
    horizontal iris diameter's foreshortening.

    ``xy`` (F, 478, 2) image px (y down), ``z`` (F, 478) FaceMesh's depth in px. The
    gaze is the head's yaw (:func:`head_angles`) plus the eyes' yaw in the head: both
    irises' lateral offset from their eye corners' midpoint, face-on, averaged over the
    two eyes (a face's own symmetric offsets cancel), over EYE_RADIUS_MM. Eyes that turn
    with the head see the camera at the head's yaw and the iris reads cos(yaw) short;
    eyes that look at the camera while the head is turned are not foreshortened. The
    inter-iris distance is foreshortened either way and cannot tell them apart. 1.0
    when no frame has a pose.
    """
    out = []
    for f in range(len(xy)):
        p3 = np.column_stack([xy[f, :, 0], -xy[f, :, 1], z[f]]).astype(float)
        if not np.isfinite(p3[:478]).all():
            continue
        ang = head_angles(p3)
        if not np.isfinite(ang).all():
            continue
        q = p3 @ rotation(*ang)
        ipd = float(np.linalg.norm(q[473] - q[468]))
        if ipd <= 0:
            continue
        off = ((q[468, 0] - (q[33, 0] + q[133, 0]) / 2)
               + (q[473, 0] - (q[263, 0] + q[362, 0]) / 2)) / 2
        eye = math.asin(float(np.clip(off / ipd * IPD_MM / EYE_RADIUS_MM, -1, 1)))
        out.append(math.cos(math.radians(ang[0]) + eye))
    return float(np.median(out)) if out else 1.0


FACING_FRAMES = 120
"""Frames the gaze's angle is read on (the fresh detections' frames, else evenly spread)."""


def facing_scale(scale: Scale, track: LandmarkTrack) -> Scale:
    """``scale`` corrected for the iris's foreshortening (:func:`iris_facing`), read on
    the fresh detections' frames (the scale's own) or tracked frames evenly spread.
    Unchanged without depth or with the pose correction off."""
    if track.z is None or not pose.ENABLED or not track.valid.any():
        return scale
    frames = np.unique(track.fresh_frames)
    frames = frames[track.valid[frames]] if len(frames) else frames
    if not len(frames):
        ok = np.flatnonzero(track.valid)
        frames = ok[np.linspace(0, len(ok) - 1, min(FACING_FRAMES, len(ok))).astype(int)]
    facing = iris_facing(track.xy[frames], track.z[frames])
    mm_per_px = scale.mm_per_px * facing
    return replace(scale, mm_per_px=mm_per_px, ipd_mm=scale.ipd_px * mm_per_px,
                   iris_facing=facing)


REST_FRAMES_MAX = 30
"""Neutral frames the face-on rest face is averaged over (evenly spread)."""
FACE_OVAL = frozenset((10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365,
                       379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93,
                       234, 127, 162, 21, 54, 103, 67, 109))
"""FaceMesh's face-oval points: they sit on the face's outline in the image."""
OUTLINE_REST_YAW_DEG = 7.0
"""A resting width read on outline points only (the jaw contour) is marked ``low`` beyond
this yaw at rest: turned, the outline is another line of skin (by the jaw's curvature
rho, a depth error of about rho sin(yaw) that the turn back leaves as rho sin^2(yaw):
0.5 mm for rho = 35 mm at 7 degrees; measured -1.15 mm on the far side at 8 degrees read)."""
REST_YAW_LOW_DEG = 10.0
"""Every resting row is marked ``low`` beyond this yaw at rest. FaceMesh places the far
side's brow and mouth corner less surely as the head turns (the image plane shows it as
well, so no geometry removes it): on the 3D generator the rows' R-L moved at most
0.8 mm at 8 degrees read (a 10 degree turn) but up to 1.6 mm (brows) and 0.95 mm
(commissure) at 13-15 degrees read (a 15 degree turn)."""
REST_PITCH_LOW_DEG = 8.0
"""Every resting row is marked ``low`` beyond this pitch at rest (chin up or down). The
face-on correction turns the head back about its lateral axis, but FaceMesh places the
brows and the mouth corners by their contours, which a tilted head shows differently:
on the 3D generator at 10 degrees of pitch the rows moved by up to 1.8 mm per side
(the lower-face width) and 0.56 mm in R-L (benchmarks/pose.py, docs/figures/pose.md)."""


@dataclass(frozen=True)
class RestFace:
    """The neutral face turned back face-on (:func:`face_on_rest`).

    ``xy`` (478, 2) mm: x the signed distance from the face's midline plane (toward
    the patient's left), y up from the line through the iris centres; ``yaw_deg`` and
    ``pitch_deg`` the head's pose at rest (median over the frames used).
    """

    xy: np.ndarray
    yaw_deg: float
    pitch_deg: float


def _midline_offset(p3: np.ndarray, lat: np.ndarray) -> float:
    """Where the midline plane (normal ``lat``) crosses its normal: the median of the
    mirror pairs' midpoints and midline points projected on it."""
    pairs = np.array(SYMMETRY_PAIRS)
    pts = np.vstack([(p3[pairs[:, 0]] + p3[pairs[:, 1]]) / 2, p3[list(MIDLINE)]])
    return float(np.nanmedian(pts @ lat))


def face_on_rest(track: object, traj: object, frames: np.ndarray) -> RestFace | None:
    """The neutral face face-on (:class:`RestFace`), or None without depth or with the
    correction off (the image reading is then used).

    Per neutral frame, FaceMesh's 3D landmarks are turned back by the pose read from
    the face's midline plane (:func:`head_angles`). Heights are then measured along the
    head's up axis from the iris line (a turn about the up axis does not move them);
    widths as each point's signed distance from the midline plane itself, so a point
    in front of or behind the irises is not shifted sideways by the turn.
    """
    from movement.analysis.face import LEFT_IRIS, RIGHT_IRIS

    z = getattr(track, "z", None)
    frames = np.asarray(frames, int)
    if not pose.ENABLED or z is None or not len(frames):
        return None
    if len(frames) > REST_FRAMES_MAX:
        frames = frames[np.linspace(0, len(frames) - 1, REST_FRAMES_MAX).round().astype(int)]
    faces, poses = [], []
    for f in frames:
        mm = traj.mm[f].astype(float)  # type: ignore[attr-defined]
        xy = track.xy[f].astype(float)  # type: ignore[attr-defined]
        ri, li = RIGHT_IRIS[0], LEFT_IRIS[0]
        px = float(np.linalg.norm(xy[li] - xy[ri]))
        if not np.isfinite(mm[0, 0]) or not np.isfinite(z[f, 0]) or px <= 0:
            continue
        k = float(np.linalg.norm(mm[li] - mm[ri])) / px
        p3 = np.column_stack([mm, (z[f] - np.nanmean(z[f, [ri, li]])) * k])
        ang = head_angles(p3)
        if not np.isfinite(ang).all():
            continue
        # Widths against the midline plane, not the point midway between the irises:
        # the alar base sits ~15 mm in front of the irises, the jaw ~50 mm behind, and a
        # turn of 8 degrees moved them sideways by 2 and 7 mm in the image. Turned back by
        # FaceMesh's own axes (8 degrees read 6.3) the nostrils' R-L still moved 1.8 mm;
        # against the plane 0.4 mm (docs/METHOD.md section 4.1).
        lat3 = midline_axis(p3)
        x = p3 @ lat3 - _midline_offset(p3, lat3)
        # Heights: the head's up axis from the pose; the iris line face-on.
        q = p3 @ rotation(*ang)
        lat = q[li, :2] - q[ri, :2]
        lat = lat / np.linalg.norm(lat)
        up = np.array([-lat[1], lat[0]])
        o = (q[li, :2] + q[ri, :2]) / 2
        faces.append(np.column_stack([x, (q[:, :2] - o) @ up]))
        poses.append(ang[:2])
    if not faces:
        return None
    yaw, pitch = np.nanmedian(np.array(poses), axis=0)
    return RestFace(np.nanmean(np.array(faces), axis=0), float(yaw), float(pitch))
