"""Stage 5b — head pose per frame, and the skin's movement seen face-on.

Why: the image tracker measures movement in the image plane. On a curved face
turned by yaw, a symmetric movement reads smaller on the far side (the skin there
is seen more obliquely) and larger on the near side, so the head's pose, not the
patient, could decide which side dominates (benchmarks/pose.py: a symmetric
3D-rendered eee's R-L moved by +0.75 and -0.68 mm turned 10 degrees either way, and
an asymmetric consult's left-dominant eee read balanced).

What this stage does, per step:

1. The head's pose at rest from FaceMesh's 3D landmarks (its depth is kept by
   :mod:`movement.analysis.landmarks`): yaw from the face's midline plane, pitch from
   the nose-base-to-forehead axis, on points the step does not move
   (:func:`head_angles`); and its turn during the step from the texture-tracked
   anchors' parallax (:func:`fit_turn`).
2. The skin's geometry at rest: the landmarks in 3D in the head's frame and a
   surface normal per landmark from its depth surface smoothed over 4 mm.
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
"""Median filter (frames) on the per-frame turn: the head turns slowly, and a frame
whose anchors the tracker misread should not turn it."""
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
    # Measured points whose skin faces away (MIN_FACING): read as imaged.
    kept_raw: tuple[int, ...] = ()
    # Positions before correction (the image reading), for the correction factors.
    raw_image_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2)))
    raw_landmarks_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2)))
    # (muscle group, side) -> face-on value / image reading (group_factors)
    factors: dict[tuple[str, str], float] = field(default_factory=dict)
    # FaceMesh's own yaw per frame (midline plane, median-filtered), beside the
    # anchors' turn in yaw_deg: see turn_deg.
    mesh_yaw_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def turn_deg(self) -> float:
        """How far the head turned during the step (degrees): the larger range of
        the anchors' yaw (under-reads: 7.5 for 10 degrees, ~0 behind a hand) and
        FaceMesh's midline yaw (the image-plane yaw index read 13-16 for 10)."""
        spans = [float(np.nanmax(a) - np.nanmin(a)) for a in (self.yaw_deg, self.mesh_yaw_deg)
                 if np.isfinite(a).any()]
        return max(spans, default=float("nan"))

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


def rotations(ang: np.ndarray) -> np.ndarray:
    """(F, 3, 3) :func:`rotation` of each row of ``ang`` (F, 3) = (yaw, pitch, roll)."""
    y, p, r = np.radians(np.asarray(ang, float)).T
    one, zero = np.ones_like(y), np.zeros_like(y)
    ry = np.stack([np.stack([np.cos(y), zero, np.sin(y)], -1), np.stack([zero, one, zero], -1),
                   np.stack([-np.sin(y), zero, np.cos(y)], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, np.cos(p), np.sin(p)], -1),
                   np.stack([zero, -np.sin(p), np.cos(p)], -1)], -2)
    rz = np.stack([np.stack([np.cos(r), -np.sin(r), zero], -1),
                   np.stack([np.sin(r), np.cos(r), zero], -1), np.stack([zero, zero, one], -1)],
                  -2)
    return rz @ rx @ ry


def angles(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a head-to-camera rotation: the inverse of
    :func:`rotation`."""
    # With c/s the cosine/sine of each angle, rotation() has third row
    # (-cp sy, -sp, cp cy) and second column (-sr cp, cr cp, -sp): closed form
    # (SciPy's Rotation took half a second to import on the analysis's path).
    m = np.asarray(rot, float)
    pitch = math.degrees(math.asin(float(np.clip(-m[2, 1], -1.0, 1.0))))
    yaw = math.degrees(math.atan2(-m[2, 0], m[2, 2]))
    roll = math.degrees(math.atan2(-m[0, 1], m[1, 1]))
    return yaw, pitch, roll


NORMAL_SMOOTH_MM = 4.0
"""The skin's normals are those of FaceMesh's depth surface smoothed over this many mm
(sigma). The tessellation's own triangles fold at the lip margins, whose points sit
deeper than the skin beside them: a mouth corner's normal tilted 20-50 degrees up or
down depending on the mesh, which moved its correction by several per cent."""


def smooth_normals(xy: np.ndarray, depth: np.ndarray, units_per_mm: float = 1.0
                   ) -> np.ndarray:
    """(N, 3) unit normals ``(-dz/dx, -dz/dy, 1)`` of the depth surface through the
    points (``xy`` (N, 2), ``depth`` (N,) toward the viewer, in units of
    ``units_per_mm``), interpolated on a 1 mm raster and smoothed by NORMAL_SMOOTH_MM.
    Valid for y up or y down alike (the 3D generator renders with the same function).
    """
    from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator
    from scipy.ndimage import gaussian_filter, map_coordinates

    ok = np.isfinite(xy).all(1) & np.isfinite(depth)
    step = units_per_mm
    x0, y0 = xy[ok].min(0) - 2 * step
    x1, y1 = xy[ok].max(0) + 2 * step
    gx, gy = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    z = LinearNDInterpolator(xy[ok], depth[ok])(pts)
    miss = ~np.isfinite(z)
    z[miss] = NearestNDInterpolator(xy[ok], depth[ok])(pts[miss])
    z = gaussian_filter(z.reshape(gx.shape), NORMAL_SMOOTH_MM)
    dzdy, dzdx = np.gradient(z, step)
    at = [(np.nan_to_num(xy[:, 1]) - y0) / step, (np.nan_to_num(xy[:, 0]) - x0) / step]
    hx = map_coordinates(dzdx, at, order=1, mode="nearest")
    hy = map_coordinates(dzdy, at, order=1, mode="nearest")
    n = np.column_stack([-hx, -hy, np.ones(len(xy))])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


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
    c, facing = face_on_matrices(rot[None], normals, None if sim is None else sim[None])
    return c[0], facing[0]


def face_on_matrices(rots: np.ndarray, normals: np.ndarray, sims: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`face_on_matrix` for F frames at once: ``rots`` (F, 3, 3), ``sims``
    (F, 2, 2) -> (F, N, 2, 2) matrices and (F, N) cosines. Where the skin is seen
    edge-on (a singular projection) the matrix is the tangent basis' own (no
    correction can be read there; the caller keeps such points as read)."""
    e = _tangent_basis(normals)
    s = np.broadcast_to(np.eye(2), (len(rots), 2, 2)) if sims is None else sims
    seen = np.einsum("fik,nkl->fnil", s @ rots[:, :2], e)  # (F, N, 2, 2)
    face_on = e[:, :2, :]  # P E
    det = seen[..., 0, 0] * seen[..., 1, 1] - seen[..., 0, 1] * seen[..., 1, 0]
    safe = np.abs(det) > 1e-9  # False for NaN too
    inv = np.stack([np.stack([seen[..., 1, 1], -seen[..., 0, 1]], -1),
                    np.stack([-seen[..., 1, 0], seen[..., 0, 0]], -1)], -2)
    inv = np.where(safe[..., None, None], inv / np.where(safe, det, 1.0)[..., None, None],
                   np.eye(2))
    c = np.einsum("nij,fnjk->fnik", face_on, inv)
    facing = np.einsum("nk,fjk->fnj", normals, rots)[..., 2]
    return c, facing


# --------------------------------------------------------------------------- per step


def frame_points_3d(xy: np.ndarray, z: np.ndarray, origin: np.ndarray, lateral: np.ndarray,
                    mm_per_px: float) -> np.ndarray:
    """Image landmarks (…, 478, 2) px and depth (…, 478) px -> (…, 478, 3) mm in the
    keyframe's face frame (x lateral, y up, z toward the camera)."""
    up = np.array([lateral[1], -lateral[0]])
    rel = xy - origin
    return np.stack([rel @ lateral, rel @ up, z], axis=-1) * mm_per_px


def similarity_2d(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares 2D similarity (linear part, shift) taking ``src`` to ``dst``: the
    one-frame case of :func:`_similarities`."""
    lin, shift = _similarities(src[None], dst[None], np.ones((1, len(src)), bool))
    return lin[0], shift[0]


def _similarities(src: np.ndarray, dst: np.ndarray, use: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares 2D similarity per frame, on the points ``use`` (F, A) bool of
    ``src``, ``dst`` (F, A, 2): linear parts (F, 2, 2) and shifts (F, 2)."""
    w = use[..., None].astype(float)
    n = np.maximum(w.sum(1), 1.0)
    ms, md = (src * w).sum(1) / n, (dst * w).sum(1) / n
    a, b = (src - ms[:, None]) * w, (dst - md[:, None]) * w
    den = np.sum(a * a, axis=(1, 2))
    den = np.where(den == 0, 1.0, den)
    c = np.sum(a * b, axis=(1, 2)) / den
    s = np.sum(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0], axis=1) / den
    lin = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    return lin, md - np.einsum("fj,fij->fi", ms, lin)


def _trimmed(err: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``ok`` without each frame's TURN_TRIM share of the largest ``err`` (F, A)."""
    q = np.nanquantile(np.where(ok, err, np.nan), 1 - TURN_TRIM, axis=1)
    return ok & (err <= q[:, None])


def rigid_parallax(x_head: np.ndarray, rot: np.ndarray, r_rest: np.ndarray, pts: np.ndarray,
                   anchors: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """What the head's rotation alone (``r_rest`` -> ``rot``) moves points ``pts`` by,
    once the frame is aligned to the rest one by a 2D similarity on the ``anchors``
    (as the image tracker aligns it): the parallax of points off the anchors' mean
    depth, (P, 2) mm; and the similarity's linear part (2, 2)."""
    view_rest = x_head @ r_rest.T
    seen = x_head @ rot.T
    idx = np.array(anchors)
    lin, shift = similarity_2d(seen[idx, :2], view_rest[idx, :2])
    return seen[pts, :2] @ lin.T + shift - view_rest[pts, :2], lin


TURN_TRIM = 0.25
"""Share of the anchors with the largest residuals left out of the second fit of a
frame's turn (an anchor the expression moves after all, or one the tracker lost)."""


def fit_turn(obs: np.ndarray, x_head: np.ndarray, rest_angles: np.ndarray,
             anchors: tuple[int, ...]) -> tuple[float, float, np.ndarray, np.ndarray]:
    """The head's turn since rest, read from the anchors' aligned positions.

    ``obs`` (A, 2): the anchors' aligned displacements from rest (mm). The image
    tracker aligned the frame on a RANSAC subset of the anchors, which when the head
    turns out of the image plane is the subset at one depth (the others move by
    parallax: the nose tip against the face's outline). So the model is free in its
    own 2D similarity: for a (yaw, pitch) change the turned rest shape is fitted onto
    the observed anchors by a similarity, and the change is the one whose fit leaves
    the least residual (Gauss-Newton, two steps; then again without the worst
    TURN_TRIM of the anchors). FaceMesh's per-frame depth was not used for this: its
    pose leans with the expression (the forehead rising in a brow raise tilted its
    nose-to-forehead axis by 1.6 degrees).

    Returns (yaw change, pitch change) in degrees and the similarity (linear part,
    shift) taking the turned shape's image onto the aligned frame. :func:`fit_turns`
    fits every frame of a step at once.
    """
    turn, lin, shift = fit_turns(obs[None], x_head, rest_angles, anchors)
    return float(turn[0, 0]), float(turn[0, 1]), lin[0], shift[0]


def fit_turns(obs: np.ndarray, x_head: np.ndarray, rest_angles: np.ndarray,
              anchors: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fit_turn` of F frames, ``obs`` (F, A, 2): turns (F, 2), linear parts
    (F, 2, 2), shifts (F, 2). One array pass per Gauss-Newton step for the whole step
    (a Python loop over frames cost 8 ms a frame)."""
    nf = len(obs)
    ok = np.isfinite(obs).all(2)
    anc = np.asarray(anchors, int)
    view_rest = x_head @ rotation(*rest_angles).T
    target = view_rest[anc, :2] + np.nan_to_num(obs)
    base = np.broadcast_to(np.asarray(rest_angles, float), (nf, 3))
    xa = x_head[anc]

    def model(t: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seen = np.einsum("ak,fjk->faj", xa, rotations(base + np.pad(t, ((0, 0), (0, 1)))))
        seen = seen[..., :2]
        lin, shift = _similarities(seen, target, use)
        fitted = np.einsum("faj,fij->fai", seen, lin) + shift[:, None]
        return target - fitted, lin, shift

    t = np.zeros((nf, 2))
    fit = ok.sum(1) >= 6  # too few anchors: no turn read
    use = ok.copy()
    steps = np.array([[0.5, 0.0], [0.0, 0.5]])
    for rnd in range(2):
        for _ in range(3):
            f0 = model(t, use)[0]
            jac = np.stack([(model(t + e, use)[0] - f0) / 0.5 for e in steps], -1)
            jac = jac * use[..., None, None]  # (F, A, 2 coords, 2 params)
            jtj = np.einsum("fack,facl->fkl", jac, jac)
            jtf = np.einsum("fack,fac->fk", jac, f0 * use[..., None])
            det = jtj[:, 0, 0] * jtj[:, 1, 1] - jtj[:, 0, 1] * jtj[:, 1, 0]
            good = fit & (np.abs(det) > 1e-12)
            d = np.where(good, det, 1.0)
            dt = np.stack([jtj[:, 1, 1] * jtf[:, 0] - jtj[:, 0, 1] * jtf[:, 1],
                           jtj[:, 0, 0] * jtf[:, 1] - jtj[:, 1, 0] * jtf[:, 0]], -1) / d[:, None]
            t = t - np.where(good[:, None], dt, 0.0)
        if rnd == 0:
            err = np.linalg.norm(model(t, use)[0], axis=2)
            keep = _trimmed(err, ok)
            # A frame left with too few anchors keeps its first fit.
            fit = fit & (keep.sum(1) >= 6)
            use = np.where(fit[:, None], keep, use)
    _, lin, shift = model(t, use)
    lin = np.where((ok.sum(1) >= 6)[:, None, None], lin, np.eye(2))
    shift = np.where((ok.sum(1) >= 6)[:, None], shift, 0.0)
    return t, lin, shift


def fit_alignment(obs: np.ndarray, x_head: np.ndarray, rest_angles: np.ndarray,
                  angles_now: np.ndarray, anchors: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The similarity taking the rest shape turned to ``angles_now`` onto the observed
    anchors (rest positions plus ``obs``), trimmed as :func:`fit_turn`'s."""
    lin, shift = fit_alignments(obs[None], x_head, rest_angles,
                                np.asarray(angles_now, float)[None], anchors)
    return lin[0], shift[0]


def fit_alignments(obs: np.ndarray, x_head: np.ndarray, rest_angles: np.ndarray,
                   angles_now: np.ndarray, anchors: tuple[int, ...]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_alignment` of F frames: ``obs`` (F, A, 2), ``angles_now`` (F, 3)."""
    ok = np.isfinite(obs).all(2)
    anc = np.asarray(anchors, int)
    view_rest = x_head @ rotation(*rest_angles).T
    target = view_rest[anc, :2] + np.nan_to_num(obs)
    seen = np.einsum("ak,fjk->faj", x_head[anc], rotations(angles_now))[..., :2]
    lin, shift = _similarities(seen, target, ok)
    err = np.linalg.norm(target - (np.einsum("faj,fij->fai", seen, lin) + shift[:, None]),
                         axis=2)
    trim = ok.sum(1) >= 8
    lin2, shift2 = _similarities(seen, target, np.where(trim[:, None], _trimmed(err, ok), ok))
    few = ok.sum(1) < 3
    lin = np.where(few[:, None, None], np.eye(2), np.where(trim[:, None, None], lin2, lin))
    shift = np.where(few[:, None], 0.0, np.where(trim[:, None], shift2, shift))
    return lin, shift


def turn_fit_errors(obs: np.ndarray, x_head: np.ndarray, rest_angles: np.ndarray,
                    angles_now: np.ndarray, anchors: tuple[int, ...],
                    measured: tuple[int, ...],
                    aligned: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The head fit's standard error (mm) at the ``measured`` points per frame, with
    the turn modelled: the rest shape turned to ``angles_now`` (F, 3) and aligned by
    its similarity (``aligned``, :func:`fit_alignments`' output, refitted when None)
    onto the observed anchors (``obs`` (F, A, 2), displacements from rest).

    Why: no flat similarity follows a head turning out of the image plane (the nose
    tip moves against the outline): turning 10 degrees per step, the flat fit kept
    43-59 % of each step's frames, the turn model 98-100 %. Anchors within RANSAC_MM
    count (at least four, else infinite), as in imagetrack.head_fit_error.
    """
    from movement.analysis.imagetrack import FIT_NOISE_MM, RANSAC_MM, head_fit_error

    anc = np.asarray(anchors, int)
    view_rest = x_head @ rotation(*rest_angles).T
    target = view_rest[anc, :2] + obs
    lin, shift = aligned or fit_alignments(obs, x_head, rest_angles, angles_now, anchors)
    rots = rotations(np.asarray(angles_now, float))
    seen = np.einsum("ak,fjk->faj", x_head[anc], np.nan_to_num(rots))[..., :2]
    at = view_rest[np.asarray(measured, int), :2]
    out = np.full(len(obs), np.inf)
    for j in range(len(obs)):
        if not np.isfinite(rots[j]).all():
            continue
        res = np.linalg.norm(seen[j] @ lin[j].T + shift[j] - target[j], axis=1)
        inl = res <= RANSAC_MM  # NaN (a lost anchor) is not an inlier
        if inl.sum() < 4:
            continue
        m = np.column_stack([lin[j], shift[j]])
        out[j] = head_fit_error(seen[j][inl], target[j][inl], m, at, FIT_NOISE_MM)
    return out


def correct_positions(
    pos: np.ndarray,
    points: np.ndarray,
    rest_pos: np.ndarray,
    x_head: np.ndarray,
    normals: np.ndarray,
    rots: np.ndarray,
    r_rest: np.ndarray,
    anchors: tuple[int, ...],
    aligned: list[tuple[np.ndarray, np.ndarray]] | None = None,
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
    aligned : the similarity per frame (linear parts (n, 2, 2), shifts (n, 2)) taking
        the turned rest shape's image onto the aligned frame (:func:`fit_alignments`);
        by default a least-squares similarity on all the anchors

    Returns
    -------
    (n, P, 2) corrected positions and (P,) bool: points kept as read (skin facing away).
    """
    n, npts = pos.shape[:2]
    pts = np.asarray(points, int)
    rest = np.nanmean(pos[rest_pos], axis=0)
    rigid = np.zeros((n, npts, 2))
    sims = np.tile(np.eye(2), (n, 1, 1))
    view_rest = x_head @ r_rest.T
    turned = np.isfinite(rots).all(axis=(1, 2))
    if aligned is None:
        for j in np.flatnonzero(turned):
            rigid[j], sims[j] = rigid_parallax(x_head, rots[j], r_rest, pts, anchors)
    else:
        lin, shift = aligned
        seen = np.einsum("pk,fjk->fpj", x_head[pts], np.nan_to_num(rots))[..., :2]
        moved = np.einsum("fpj,fij->fpi", seen, lin) + shift[:, None] - view_rest[pts, :2]
        rigid[turned], sims[turned] = moved[turned], lin[turned]
    rigid_rest = rigid[rest_pos].mean(axis=0)
    d = pos - rest - (rigid - rigid_rest)
    nrm = normals[pts]
    _, facing_rest = face_on_matrix(r_rest, nrm)
    c, facing = face_on_matrices(rots, nrm, sims)
    bad = (facing < MIN_FACING) | (facing_rest < MIN_FACING)
    kept = bad.any(axis=0)
    c[bad] = np.eye(2)
    out = rest + np.einsum("fpij,fpj->fpi", c, d)
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
    from movement.analysis.face import LEFT_IRIS, RIGHT_IRIS

    z = getattr(track, "z", None)
    if not ENABLED or z is None or not len(wt.frames):
        return None
    frames = np.asarray(wt.frames)
    key = int(wt.keyframe)
    key_r, key_l = track.xy[key, RIGHT_IRIS[0]], track.xy[key, LEFT_IRIS[0]]
    ipd = float(np.linalg.norm(key_l - key_r))
    origin = (key_r + key_l) / 2
    lateral = (key_l - key_r) / ipd
    p3 = frame_points_3d(track.xy[frames].astype(float), z[frames].astype(float), origin,
                         lateral, wt.mm_per_px)
    rest_pos = np.array([r - first for r in rest if 0 <= r - first < len(frames)], int)
    if not len(rest_pos) or not np.isfinite(p3[key - first, 0, 0]):
        return None
    exclude = frozenset(int(p) for p in moving)
    # The pose at rest from FaceMesh's depth (median over the rest frames)...
    fm_ang = np.array([head_angles(p3[r], exclude) for r in rest_pos])
    rest_ang = np.nanmedian(fm_ang, axis=0)
    if not np.isfinite(rest_ang).all():
        return None
    r_rest = rotation(*rest_ang)
    # Rest geometry in the head's frame: the keyframe's 3D points (placed where its
    # detections put them, when given) turned back by FaceMesh's own axes.
    key3 = p3[key - first].copy()
    if key_xy is not None:
        key3[:, :2] = frame_points_3d(key_xy, z[key], origin, lateral, wt.mm_per_px)[:, :2]
    axes = head_rotation(key3, exclude)
    x_head = (key3 - np.nanmean(key3[:468], axis=0)) @ axes
    normals = smooth_normals(x_head[:, :2], x_head[:, 2])
    # ...and its change during the step from the texture-tracked anchors' parallax.
    cols = {int(p): i for i, p in enumerate(wt.points)}
    # All the anchors, those on the outline too. Their windows follow the silhouette,
    # which slides over the skin as the head turns: with them a 10 deg turn during a
    # step reads 7.5 deg. Without them (skin facing < 0.6) it read 9.3-10.7 deg, but
    # the parallax then removed from the mouth corners was 3 mm too much (a symmetric
    # eee read R-L -2.9 mm): the similarity fitted on the nose and forehead alone
    # does not extrapolate to the corners as the tracker's alignment does.
    anc = tuple(a for a in anchors if a in cols)
    obs = wt.image_mm[:, [cols[a] for a in anc]]
    obs = obs - np.nanmean(obs[rest_pos], axis=0)
    turn = fit_turns(obs, x_head, rest_ang, anc)[0]
    if len(turn) > SMOOTH_FRAMES:
        from scipy.ndimage import median_filter

        turn = median_filter(turn, size=(SMOOTH_FRAMES, 1), mode="nearest")
    turn -= np.mean(turn[rest_pos], axis=0)
    ang = np.column_stack([rest_ang[0] + turn[:, 0], rest_ang[1] + turn[:, 1],
                           np.full(len(turn), rest_ang[2])])
    rots = rotations(ang)
    # The alignment each frame's turned shape needs, refitted on the smoothed turn.
    aligned = fit_alignments(obs, x_head, rest_ang, ang, anc)
    raw_img = wt.image_mm.copy()
    raw_lm = wt.landmarks_mm.copy()
    img, kept = correct_positions(wt.image_mm, wt.points, rest_pos, x_head, normals, rots,
                                  r_rest, anc, aligned)
    wt.image_mm[:] = img
    if wt.fit_error_mm is not None and len(exclude):
        from movement.analysis.imagetrack import FIT_MAX_ERROR_MM

        # Only frames the flat fit cannot explain (a turn's parallax) ask the turn
        # model: its two extra parameters also absorb anchors' small real movements
        # (asked everywhere, 2D intervals held the truth 92.0 % instead of 93.3 %).
        over = np.isfinite(wt.fit_error_mm) & ~(wt.fit_error_mm <= FIT_MAX_ERROR_MM)
        if over.any():
            wt.fit_error_mm[over] = np.fmin(wt.fit_error_mm[over], turn_fit_errors(
                obs[over], x_head, rest_ang, ang[over], anc, tuple(sorted(exclude)),
                (aligned[0][over], aligned[1][over])))
    if wt.landmarks_mm.shape[1]:
        lm, _ = correct_positions(wt.landmarks_mm, np.arange(478), rest_pos, x_head, normals,
                                  rots, r_rest, anc, aligned)
        wt.landmarks_mm[:] = lm
    # FaceMesh's own yaw per frame, for how far the head turned (StepPose.turn_deg);
    # frames without a face take their neighbours' yaw for the median filter only.
    mesh_yaw = np.array([head_angles(p3[j], exclude)[0] if np.isfinite(p3[j, 0, 0])
                         else np.nan for j in range(len(frames))])
    if (seen := np.isfinite(mesh_yaw)).sum() > SMOOTH_FRAMES:
        from scipy.ndimage import median_filter

        filled = np.interp(np.arange(len(mesh_yaw)), np.flatnonzero(seen), mesh_yaw[seen])
        mesh_yaw = np.where(seen, median_filter(filled, SMOOTH_FRAMES, mode="nearest"), np.nan)
    ry, rp, _ = rest_ang
    return StepPose(frames=frames, yaw_deg=ang[:, 0], pitch_deg=ang[:, 1],
                    roll_deg=ang[:, 2], rest_yaw_deg=float(ry), rest_pitch_deg=float(rp),
                    applied=True, points=tuple(int(p) for p in wt.points),
                    rest_pos=tuple(int(r) for r in rest_pos),
                    # Only measured points: the anchors on the face's outline are always
                    # edge-on, and only align the frames.
                    kept_raw=tuple(int(p) for p, k in zip(wt.points, kept, strict=True)
                                   if k and int(p) in exclude),
                    raw_image_mm=raw_img, raw_landmarks_mm=raw_lm, mesh_yaw_deg=mesh_yaw)


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


def group_factors(sp: StepPose | None, groups: list, measures: list) -> None:
    """Fill ``sp.factors`` for the step's measures (``groups``: the protocol step's
    MuscleGroups, ``measures``: its GroupMeasures)."""
    if sp is None:
        return
    by_name = {g.name: g for g in groups}
    for m in measures:
        g = by_name.get(m.muscle_group)
        if g is None or m.measure != g.measure:
            continue
        sp.factors[(g.name, m.side)] = side_factor(
            sp, g.kind, g.points(m.side), g.lower_points(m.side), m.side, m.sensor,
            m.peak_frames, m.activation_mm)


def pose_fields(sp: StepPose | None, m: object) -> dict[str, float]:
    """The POSE_COLUMNS of the metrics row of GroupMeasure ``m`` (NaN where not
    applicable)."""
    out = dict.fromkeys(POSE_COLUMNS, float("nan"))
    if sp is None:
        return out
    frames = m.peak_frames  # type: ignore[attr-defined]
    out["rest_yaw_deg"], out["rest_pitch_deg"] = sp.rest_yaw_deg, sp.rest_pitch_deg
    if frames:
        out["yaw_deg"], out["pitch_deg"] = sp.at(frames)
    if m.measure not in ("movements", "crease"):  # type: ignore[attr-defined]
        key = (m.muscle_group, m.side)  # type: ignore[attr-defined]
        out["pose_factor"] = sp.factors.get(key, float("nan"))
    return out


def hard_to_read(sp: StepPose | None, primary: str) -> list[str]:
    """Sentences for the quality verdict: the primary group's sides whose reading the
    pose changed by more than OBLIQUE_FACTOR (either way). (Points read as imaged, skin
    seen edge-on, are listed in session.json: one brow tail at 8 degrees of yaw is not
    a side hard to read.)"""
    if sp is None:
        return []
    out = []
    ys = sp.yaw_deg[np.isfinite(sp.yaw_deg)]
    yaw = float(ys[np.argmax(np.abs(ys))]) if len(ys) else sp.rest_yaw_deg
    turned = (f"head turned up to {abs(yaw):.0f}° to the patient's "
              f"{'left' if yaw > 0 else 'right'}" if abs(yaw) >= 1 else "head facing the camera")
    for side in ("right", "left"):
        f = sp.factors.get((primary, side), float("nan"))
        if np.isfinite(f) and not 1 / OBLIQUE_FACTOR <= f <= OBLIQUE_FACTOR:
            out.append(f"{turned}: the {side} {primary}'s reading was corrected "
                       f"x{f:.2f} for the pose")
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
