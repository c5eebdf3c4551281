"""Stage 5b — head pose per frame, and the skin's movement seen face-on.

Why: the image tracker measures movement in the image plane. On a curved face
turned by yaw, a symmetric movement reads smaller on the far side (the skin there
is seen more obliquely) and larger on the near side, so the head's pose, not the
patient, could decide which side dominates (a symmetric 3D-rendered smile read
right-dominant turned 10 degrees one way, left-dominant the other).

What this stage does, per step:

1. The head's 3D rotation per frame, from FaceMesh's 3D landmarks (its depth is
   kept by :mod:`movement.analysis.landmarks`): the absolute rotation at rest from
   the face's symmetry (:func:`head_rotation`), and each frame's rotation relative to
   the rest keyframe by a trimmed least-squares (Kabsch) fit on the step's anchor
   points -- the regions the step does not move (:func:`relative_rotation`).
2. The skin's geometry at rest: the landmarks in 3D in the head's frame and a
   surface normal per landmark from FaceMesh's triangles.
3. Each tracked point's displacement (already aligned to the keyframe by the image
   tracker's similarity fit) is freed of what the head's rotation alone moves it by
   (the rigid parallax a 2D similarity cannot remove when the head turns during the
   step), then back-projected onto the skin's tangent plane at rest through the pose
   at that frame, and finally re-projected face-on (onto the head's own lateral/up
   plane) -- :func:`face_on_matrix`.

The result is in the same units and frame as before -- millimetres in the face
frame, x toward the patient's left, y up -- and equals the image reading exactly
when the head faces the camera at rest and during the step. It is the movement a
camera facing the patient would have read, which is what the 2D ground truth and
every earlier session measure; the length along the skin itself (longer where the
skin slopes away, e.g. x1.1-1.4 at the mouth corners) is not what is reported (see
docs/METHOD.md).

Per side and group, the correction factor (corrected / image reading) and the pose
at rest and at the peak are kept for the outputs and the quality verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

# Mirror pairs (patient's right, patient's left) of FaceMesh points on bone or firm
# skin: inner/outer eye corners, the temples and forehead's edge, the face outline
# beside the eyes, the nose's side at the cheek. Their left-minus-right vectors give
# the head's lateral axis.
SYMMETRY_PAIRS: tuple[tuple[int, int], ...] = (
    (133, 362), (33, 263), (127, 356), (234, 454), (21, 251), (54, 284),
    (103, 332), (67, 297), (109, 338), (129, 358), (114, 343), (188, 412),
    (98, 327), (50, 280), (205, 425), (36, 266), (142, 371), (100, 329),
    (117, 346), (118, 347), (101, 330),
)
MIDLINE = (1, 4, 5, 195, 197, 6, 168, 9, 151, 10, 2, 164)
"""Points on the face's midline plane (nose ridge, glabella, forehead, nose base)."""
FOREHEAD_MIDLINE = (10, 151, 9)
NOSE_BASE = (2, 164)
"""Up axis: from the nose's base (the maxilla: it does not move with the lips) to the
forehead's midline, made perpendicular to the lateral axis."""
PITCH_ZERO_DEG = 0.0
"""The forehead-to-nose-base line's lean when the face looks straight at the camera
(FaceMesh's depth; measured on the generator's frontal faces), so that pitch 0 is a
frontal portrait's pitch."""
SMOOTH_FRAMES = 5
"""Median filter (frames) on the per-frame rotation angles: FaceMesh's depth jitters
by a degree or so from frame to frame while the head turns slowly."""
MIN_FACING = 0.35
"""A point's skin whose normal makes more than ~70 degrees with the camera axis (at
rest or in the frame; cosine below this) cannot be back-projected reliably: its image
reading is kept, and flagged (the face's outline, the far cheek of a turned head)."""
ENABLED = True
"""Whether :func:`correct_window` corrects (``movement analyze --no-pose-correction``
turns it off to read the image plane, as before the correction existed)."""
OBLIQUE_FACTOR = 1.25
"""A side whose correction factor exceeds this (or falls below its inverse) was hard
to read at this pose: the verdict notes it."""


@dataclass(frozen=True)
class StepPose:
    """The head's pose over one step and the correction applied to its points.

    Angles in degrees (yaw > 0: face turned toward the patient's left; pitch > 0:
    chin up; roll > 0: the patient's left eye higher), per frame of the step's window.
    """

    frames: np.ndarray
    yaw_deg: np.ndarray
    pitch_deg: np.ndarray
    roll_deg: np.ndarray
    rest_yaw_deg: float
    rest_pitch_deg: float
    applied: bool
    # The window's tracked landmarks (columns of raw_image_mm) and rest frames
    # (positions in the window).
    points: tuple[int, ...] = ()
    rest_pos: tuple[int, ...] = ()
    # Image reading kept for points whose skin faces away (MIN_FACING), by landmark.
    kept_raw: tuple[int, ...] = ()
    # Positions before correction (the image reading), for the correction factors.
    raw_image_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2)))
    raw_landmarks_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2)))

    def at(self, frames: tuple[int, ...] | np.ndarray) -> tuple[float, float]:
        """Mean (yaw, pitch) over ``frames`` (video frame indices)."""
        pos = np.searchsorted(self.frames, np.asarray(frames, int))
        pos = pos[(pos >= 0) & (pos < len(self.frames))]
        if not len(pos):
            return float("nan"), float("nan")
        return float(np.nanmean(self.yaw_deg[pos])), float(np.nanmean(self.pitch_deg[pos]))


# --------------------------------------------------------------------------- geometry


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def head_rotation(p3: np.ndarray, exclude: frozenset[int] = frozenset()) -> np.ndarray:
    """The head's axes (3, 3) as FaceMesh's 3D landmarks of one face hold them.

    ``p3`` (478, 3) in camera-like coordinates: x to the image right, y up, z toward
    the camera (any common unit). Columns: the head's lateral axis (toward the
    patient's left, from the mirror pairs' left-minus-right vectors), up axis (nose
    base to forehead, perpendicular to it) and forward axis. Used to bring FaceMesh's
    shape to the head's frame; the pose itself is :func:`head_angles` (FaceMesh's depth
    turns with the head by only about 0.8 of the turn, so these axes under-read yaw).
    """
    pairs = np.array([p for p in SYMMETRY_PAIRS if not exclude.intersection(p)])
    lat = _unit(np.nanmean(p3[pairs[:, 1]] - p3[pairs[:, 0]], axis=0))
    top = [p for p in FOREHEAD_MIDLINE if p not in exclude] or list(FOREHEAD_MIDLINE)
    up0 = np.nanmean(p3[top], axis=0) - np.nanmean(p3[list(NOSE_BASE)], axis=0)
    up = _unit(up0 - (up0 @ lat) * lat)
    fwd = np.cross(lat, up)
    a = math.radians(PITCH_ZERO_DEG)
    up2 = math.cos(a) * up + math.sin(a) * fwd
    return np.column_stack([lat, up2, np.cross(lat, up2)])


def midline_axis(p3: np.ndarray, exclude: frozenset[int] = frozenset(),
                 trim: float = 0.25) -> np.ndarray:
    """The head's lateral axis (3,) as the normal of the face's midline plane.

    The midpoints of mirror pairs and the midline points all lie on that plane; a
    trimmed least-squares plane ``x = a z + b y + c`` through them gives its normal.
    Only image x, y and FaceMesh's depth of *midpoints* enter, which FaceMesh gets
    right when the head turns (its left-minus-right depths turn by only about 0.8 of
    the turn). Points the step moves (``exclude``) and the worst quarter are left out.
    """
    pairs = np.array([p for p in SYMMETRY_PAIRS if not exclude.intersection(p)])
    mid = [p for p in MIDLINE if p not in exclude]
    pts = np.vstack([(p3[pairs[:, 0]] + p3[pairs[:, 1]]) / 2, p3[mid]])
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) < 4:
        return np.full(3, np.nan)
    a = np.column_stack([pts[:, 2], pts[:, 1], np.ones(len(pts))])
    coef = np.linalg.lstsq(a, pts[:, 0], rcond=None)[0]
    if trim > 0 and len(pts) >= 8:
        res = np.abs(a @ coef - pts[:, 0])
        keep = res <= np.quantile(res, 1 - trim)
        coef = np.linalg.lstsq(a[keep], pts[keep, 0], rcond=None)[0]
    return _unit(np.array([1.0, -coef[1], -coef[0]]))


def head_angles(p3: np.ndarray, exclude: frozenset[int] = frozenset()
                ) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of one face from its 3D landmarks (camera-like
    coordinates as :func:`head_rotation`'s): the lateral axis from the midline plane
    (:func:`midline_axis`), the up axis from the nose base to the forehead.

    Measured on the 3D generator (astronaut, relative to its frontal reading): turns
    of 5, 10, -10 and 20 degrees read 5.2, 10.7, -9.0 and 20.5.
    """
    lat = midline_axis(p3, exclude)
    if not np.isfinite(lat).all():
        return (float("nan"),) * 3
    top = [p for p in FOREHEAD_MIDLINE if p not in exclude] or list(FOREHEAD_MIDLINE)
    up0 = np.nanmean(p3[top], axis=0) - np.nanmean(p3[list(NOSE_BASE)], axis=0)
    up = _unit(up0 - (up0 @ lat) * lat)
    a = math.radians(PITCH_ZERO_DEG)
    fwd = np.cross(lat, up)
    up = math.cos(a) * up + math.sin(a) * fwd
    return angles(np.column_stack([lat, up, np.cross(lat, up)]))


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """Head-to-camera rotation in (x right, y up, z toward the camera) coordinates.

    Yaw about the head's up axis (positive: the nose toward the camera's right, the
    face turned toward the patient's left), then pitch about the lateral axis
    (positive: the nose up, chin up), then roll about the camera axis. The generator
    (:mod:`movement.synth.pose3d`) renders with the same function.
    """
    y, p, r = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def angles(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a head-to-camera rotation: the inverse of
    :func:`rotation`."""
    from scipy.spatial.transform import Rotation

    # rotation() is Rz(roll) Rx(-pitch) Ry(yaw): extrinsic y, x, z.
    y, p, r = Rotation.from_matrix(rot).as_euler("yxz", degrees=True)
    return float(y), float(-p), float(r)


@lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """(F, 3) triangles of FaceMesh's tessellation (from its edge list)."""
    import mediapipe as mp  # the analysis already depends on it (landmarks)

    edges = mp.solutions.face_mesh_connections.FACEMESH_TESSELATION
    nb: dict[int, set[int]] = {}
    for a, b in edges:
        nb.setdefault(a, set()).add(b)
        nb.setdefault(b, set()).add(a)
    tris = set()
    for a, b in edges:
        for c in nb[a] & nb[b]:
            tris.add(tuple(sorted((a, b, c))))
    return np.array(sorted(tris), dtype=np.int32)


def vertex_normals(p3: np.ndarray, tri: np.ndarray | None = None) -> np.ndarray:
    """(478, 3) unit normals of the face at its landmarks, pointing out of the face
    (toward +z of the coordinates ``p3`` is given in, which should face the skin).
    The irises (468-477) take their eye's normal."""
    tri = mesh_triangles() if tri is None else tri
    a, b, c = p3[tri[:, 0]], p3[tri[:, 1]], p3[tri[:, 2]]
    fn = np.cross(b - a, c - a)
    fn *= np.where(fn[:, 2] < 0, -1.0, 1.0)[:, None]
    n = np.zeros((len(p3), 3))
    for k in range(3):
        np.add.at(n, tri[:, k], np.nan_to_num(fn))
    n[468:473] = n[[33, 133]].sum(0)
    n[473:478] = n[[263, 362]].sum(0)
    return _unit(n)


def _tangent_basis(n: np.ndarray) -> np.ndarray:
    """(N, 3, 2) orthonormal tangent vectors at normals ``n`` (N, 3): the head's lateral
    and up axes made perpendicular to the normal."""
    ex = np.array([1.0, 0.0, 0.0])
    e1 = _unit(ex - (n @ ex)[:, None] * n)
    e2 = np.cross(n, e1)
    return np.stack([e1, e2], axis=2)


def face_on_matrix(rot: np.ndarray, normals: np.ndarray, sim: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per point, the 2x2 matrix taking an image displacement to the face-on one.

    Parameters
    ----------
    rot : (3, 3) head-to-camera rotation at the frame (camera x right, y up)
    normals : (N, 3) skin normals at rest in head coordinates
    sim : (2, 2) linear part of the similarity aligning the frame to the keyframe
        (identity when None)

    Returns
    -------
    (N, 2, 2) matrices ``C`` with ``face_on = C @ image`` and (N,) the cosine between
    each normal and the camera axis at this pose (how squarely the skin is seen).

    Notes
    -----
    The skin moves by ``t = E a`` in its tangent plane (E: two tangent vectors in head
    coordinates); the camera sees ``S P R t`` (P drops depth, S the alignment), so
    ``a = (S P R E)^-1 d`` and face-on the movement is ``P E a``. At R = I (and S = I)
    ``C`` is the identity: a frontal recording is unchanged.
    """
    e = _tangent_basis(normals)
    s = np.eye(2) if sim is None else sim
    seen = np.einsum("ij,jk,nkl->nil", s, rot[:2], e)  # (N, 2, 2)
    face_on = e[:, :2, :]  # P E
    det = np.linalg.det(seen)
    safe = np.where(np.abs(det)[:, None, None] > 1e-9, seen, np.eye(2))
    c = face_on @ np.linalg.inv(safe)
    facing = (normals @ rot.T)[:, 2]
    return c, facing


# --------------------------------------------------------------------------- per step


def frame_points_3d(xy: np.ndarray, z: np.ndarray, origin: np.ndarray, lateral: np.ndarray,
                    mm_per_px: float) -> np.ndarray:
    """Image landmarks (…, 478, 2) px and depth (…, 478) px -> (…, 478, 3) mm in the
    keyframe's face frame (x lateral, y up, z toward the camera)."""
    up = np.array([lateral[1], -lateral[0]])
    rel = xy - origin
    return np.stack([rel @ lateral, rel @ up, z], axis=-1) * mm_per_px


def step_rotations(p3: np.ndarray, rest: np.ndarray, exclude: frozenset[int]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head's pose over a step window.

    ``p3`` (n, 478, 3) the window's landmarks in the keyframe's face frame; ``rest``
    positions in the window; ``exclude`` the points the step moves. Per frame
    (yaw, pitch, roll) from :func:`head_angles` on the points the step does not move,
    median-filtered over SMOOTH_FRAMES; at rest their median over the rest frames.

    Returns (n, 3, 3) rotations, (3, 3) the rotation at rest and (n, 3) the angles.
    """
    from scipy.ndimage import median_filter

    n = len(p3)
    ang = np.full((n, 3), np.nan)
    for j in range(n):
        if np.isfinite(p3[j, 0, 0]):
            ang[j] = head_angles(p3[j], exclude)
    good = np.isfinite(ang).all(1)
    if good.sum() > SMOOTH_FRAMES:
        ang[good] = median_filter(ang[good], size=(SMOOTH_FRAMES, 1), mode="nearest")
    rest_ang = np.nanmedian(ang[rest], axis=0) if good[rest].any() else np.nanmedian(ang, 0)
    ang[~good] = rest_ang
    rots = np.array([rotation(*a) for a in ang])
    return rots, rotation(*rest_ang), ang


def similarity_2d(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares 2D similarity (linear part, shift) taking ``src`` to ``dst``."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    den = float(np.sum(a * a)) or 1.0
    c = float(np.sum(a * b)) / den
    s = float(np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])) / den
    lin = np.array([[c, -s], [s, c]])
    return lin, md - ms @ lin.T


def correct_positions(
    pos: np.ndarray,
    points: np.ndarray,
    rest_pos: np.ndarray,
    x_head: np.ndarray,
    normals: np.ndarray,
    rots: np.ndarray,
    r_rest: np.ndarray,
    anchors: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Face-on positions of tracked points over a step.

    Parameters
    ----------
    pos : (n, P, 2) aligned positions (mm, keyframe face frame) of landmarks ``points``
    rest_pos : (n_rest,) positions in the window of the rest frames
    x_head : (478, 3) rest landmarks in head coordinates (mm)
    normals : (478, 3) normals in head coordinates
    rots : (n, 3, 3) head-to-camera rotation per frame; r_rest at rest
    anchors : the step's anchor landmarks (the image tracker aligned frames on them)

    Returns
    -------
    (n, P, 2) corrected positions and (P,) bool: points kept as read (skin facing away).
    """
    n, npts = pos.shape[:2]
    pts = np.asarray(points, int)
    idx = np.array(anchors)
    rest = np.nanmean(pos[rest_pos], axis=0)
    view_rest = x_head @ r_rest.T  # rest positions as the camera saw them (3D)
    # What the head's rotation alone does to each point, after the tracker's 2D
    # similarity alignment on the anchors: the parallax of points off the anchors' depth.
    rigid = np.zeros((n, npts, 2))
    sims = np.tile(np.eye(2), (n, 1, 1))
    for j in range(n):
        if not np.isfinite(rots[j]).all():
            continue
        seen = x_head @ rots[j].T
        lin, shift = similarity_2d(seen[idx, :2], view_rest[idx, :2])
        sims[j] = lin
        rigid[j] = seen[pts, :2] @ lin.T + shift - view_rest[pts, :2]
    rigid_rest = rigid[rest_pos].mean(axis=0)
    d = pos - rest - (rigid - rigid_rest)
    out = np.empty_like(pos)
    kept = np.zeros(npts, bool)
    nrm = normals[pts]
    _, facing_rest = face_on_matrix(r_rest, nrm)
    for j in range(n):
        c, facing = face_on_matrix(rots[j], nrm, sims[j])
        bad = (facing < MIN_FACING) | (facing_rest < MIN_FACING)
        kept |= bad
        c[bad] = np.eye(2)
        out[j] = rest + np.einsum("pij,pj->pi", c, d[j])
    # Points left as read keep their own reading (no parallax removal either).
    out[:, kept] = pos[:, kept]
    return out, kept


def correct_window(wt: object, track: object, rest: tuple[int, ...], anchors: tuple[int, ...],
                   moving: tuple[int, ...], first: int, key_xy: np.ndarray | None = None
                   ) -> StepPose | None:
    """Correct an :class:`imagetrack.WindowTrack` in place to face-on positions.

    ``rest``: the step's rest frames (video indices); ``anchors``: the landmarks the
    image tracker aligned frames on; ``moving``: the points the step's groups measure
    (left out of the pose); ``first``: the window's first frame; ``key_xy``: where the
    keyframe's detections put the points. Returns the step's pose, or None when the
    track holds no depth (nothing is changed then).
    """
    from movement.analysis.stabilise import iris_centres

    z = getattr(track, "z", None)
    if not ENABLED or z is None or not len(wt.frames):
        return None
    frames = np.asarray(wt.frames)
    key = int(wt.keyframe)
    key_r, key_l = iris_centres(track.xy[key])
    ipd = float(np.linalg.norm(key_l - key_r))
    origin = (key_r + key_l) / 2
    lateral = (key_l - key_r) / ipd
    p3 = frame_points_3d(track.xy[frames].astype(float), z[frames].astype(float), origin,
                         lateral, wt.mm_per_px)
    rest_pos = np.array([r - first for r in rest if 0 <= r - first < len(frames)], int)
    if not len(rest_pos) or not np.isfinite(p3[key - first, 0, 0]):
        return None
    exclude = frozenset(int(p) for p in moving)
    rots, r_rest, ang = step_rotations(p3, rest_pos, exclude)
    # Rest geometry in the head's frame: the keyframe's 3D points (placed where its
    # detections put them, when given) turned back by FaceMesh's own axes.
    key3 = p3[key - first].copy()
    if key_xy is not None:
        key3[:, :2] = frame_points_3d(key_xy, z[key], origin, lateral, wt.mm_per_px)[:, :2]
    axes = head_rotation(key3, exclude)
    x_head = (key3 - np.nanmean(key3[:468], axis=0)) @ axes
    normals = vertex_normals(x_head)
    raw_img = wt.image_mm.copy()
    raw_lm = wt.landmarks_mm.copy()
    img, kept = correct_positions(wt.image_mm, wt.points, rest_pos, x_head, normals, rots,
                                  r_rest, anchors)
    wt.image_mm[:] = img
    if wt.landmarks_mm.shape[1]:
        lm, _ = correct_positions(wt.landmarks_mm, np.arange(478), rest_pos, x_head, normals,
                                  rots, r_rest, anchors)
        wt.landmarks_mm[:] = lm
    ry, rp, _ = np.nanmedian(ang[rest_pos], axis=0)
    return StepPose(frames=frames, yaw_deg=ang[:, 0], pitch_deg=ang[:, 1],
                    roll_deg=ang[:, 2], rest_yaw_deg=float(ry), rest_pitch_deg=float(rp),
                    applied=True, points=tuple(int(p) for p in wt.points),
                    rest_pos=tuple(int(r) for r in rest_pos),
                    kept_raw=tuple(int(p) for p, k in zip(wt.points, kept, strict=True) if k),
                    raw_image_mm=raw_img, raw_landmarks_mm=raw_lm)


def side_factor(sp: StepPose | None, kind: str, points: tuple[int, ...],
                lower: tuple[int, ...], side: str, sensor: str,
                peak_frames: tuple[int, ...], corrected: float) -> float:
    """Correction factor of one group's side: the face-on value over the image
    reading at the same frames (NaN without a pose, for range measures, or when the
    image reading is under 0.2 mm and a ratio means nothing)."""
    from movement.analysis.face import measure_series

    if sp is None or not peak_frames or not np.isfinite(corrected):
        return float("nan")
    if sensor.endswith("landmarks"):
        pos, cols = sp.raw_landmarks_mm, {i: i for i in range(478)}
    else:
        pos, cols = sp.raw_image_mm, {p: i for i, p in enumerate(sp.points)}
    if not all(p in cols for p in points + lower):
        return float("nan")
    rest = np.nanmean(pos[list(sp.rest_pos)], axis=0)
    c = np.array([cols[p] for p in points])
    low = np.array([cols[p] for p in lower]) if lower else None
    at = np.searchsorted(sp.frames, np.asarray(peak_frames, int))
    with np.errstate(all="ignore"):
        raw = float(np.nanmean(measure_series(pos[at], rest, kind, c, low, side)))
    if not np.isfinite(raw) or abs(raw) < 0.2:
        return float("nan")
    return corrected / raw


POSE_COLUMNS = ["yaw_deg", "pitch_deg", "rest_yaw_deg", "rest_pitch_deg", "pose_factor"]
"""metrics.csv columns this stage adds: the head's yaw and pitch at the group's peak and
at rest (degrees), and the side's correction factor (face-on value / image reading)."""


def pose_fields(sp: StepPose | None, group: object, m: object) -> dict[str, float]:
    """The POSE_COLUMNS of one metrics row (``group``: the protocol's MuscleGroup of the
    row's GroupMeasure ``m``; NaN where not applicable)."""
    out = dict.fromkeys(POSE_COLUMNS, float("nan"))
    if sp is None:
        return out
    frames = m.peak_frames  # type: ignore[attr-defined]
    out["rest_yaw_deg"], out["rest_pitch_deg"] = sp.rest_yaw_deg, sp.rest_pitch_deg
    if frames:
        out["yaw_deg"], out["pitch_deg"] = sp.at(frames)
    if group is not None and m.measure == group.measure:  # type: ignore[attr-defined]
        side = m.side  # type: ignore[attr-defined]
        out["pose_factor"] = side_factor(
            sp, group.kind, group.points(side), group.lower_points(side), side,  # type: ignore[attr-defined]
            m.sensor, frames, m.activation_mm)  # type: ignore[attr-defined]
    return out


def pose_record(sp: StepPose | None, peak_frames: tuple[int, ...]) -> dict[str, object] | None:
    """session.json's ``pose`` of a step: the head's angles at rest and at the peak,
    their range over the step, and the points read as imaged (skin facing away)."""
    if sp is None:
        return None

    def num(v: float) -> float | None:
        return round(float(v), 2) if np.isfinite(v) else None

    yaw, pitch = sp.at(peak_frames) if peak_frames else (float("nan"),) * 2
    return dict(
        method="face-on correction: image displacement back-projected onto the skin's "
        "tangent plane (FaceMesh depth and normals) through the head's pose",
        rest_yaw_deg=num(sp.rest_yaw_deg), rest_pitch_deg=num(sp.rest_pitch_deg),
        peak_yaw_deg=num(yaw), peak_pitch_deg=num(pitch),
        yaw_range_deg=[num(np.nanmin(sp.yaw_deg)), num(np.nanmax(sp.yaw_deg))],
        pitch_range_deg=[num(np.nanmin(sp.pitch_deg)), num(np.nanmax(sp.pitch_deg))],
        points_read_as_imaged=list(sp.kept_raw),
    )
