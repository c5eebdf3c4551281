"""Consults with head pose: the base photo's face as a textured 3D mesh, turned.

The 2D generator (:mod:`movement.synth.render`) warps a flat photo, so every
movement it makes is a movement in the image plane. Here the photo's face is lifted
onto a 3D mesh -- the FaceMesh points of the base photo with FaceMesh's own depth,
densified by a grid inside the face and two rings of surroundings (hair, neck,
background) falling back to the depth of the head's centre -- and rendered by an
orthographic camera at a known yaw/pitch/roll, constant or turning during each step.

Skin movement: each vertex moves by the step's calibrated 2D field (the same per-side
field and forward solve as the 2D generator, at the vertex's base position), lifted
onto the skin's tangent plane there (the depth component that keeps the displacement
perpendicular to the surface normal). Seen facing the camera (yaw = pitch = 0), every
vertex therefore lands exactly where the 2D generator puts it, and the landmarks'
truth is the 2D generator's.

Truth per step and side (in ``steps[*].groups[*]``):

- ``right_mm``/``left_mm``: the protocol measure of the skin's movement *seen face-on*
  (the head's own frontal view: lateral and up axes of the head) -- the 2D
  generator's truth, whatever the pose. This is what the analysis reports, so a
  turned recording is compared with the same number as a frontal one.
- ``skin_right_mm``/``skin_left_mm``: the length of the mean 3D displacement of the
  group's points along the skin (the tangent vectors), for the record.

Per frame the truth holds the pose (``pose.yaw_deg``, ``pose.pitch_deg``).
Conventions (:func:`movement.analysis.pose.rotation`, shared with the analysis):
yaw > 0 turns the face toward the patient's left (the nose moves to the image right
of an unmirrored video); pitch > 0 tilts the chin up.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from movement.analysis.pose import rotation, smooth_normals
from movement.synth.face import base_face, use_face
from movement.synth.fields import solve_forward
from movement.synth.render import Renderer, truth_record, write_consult
from movement.synth.schedule import SynthSpec, envelope

GRID_MM = 3.0
"""Spacing of the extra vertices inside the face: the per-triangle affine warp is the
2D generator's smooth field to within its curvature over a triangle (fields have
sigmas of 5-18 mm)."""
RING_SCALES = (1.25, 1.7)
"""Rings of surrounding vertices, as multiples of the face outline's distance from its
centre: skin/hair just outside the face, then hair/background."""
MIN_NZ = 0.25
"""Smallest normal component toward the camera used to lift a displacement onto the
tangent plane (the face's outline is seen edge-on; there the lift would explode)."""


@dataclass(frozen=True)
class PoseSpec:
    """Head pose of a 3D-rendered consult (degrees; see the module's conventions).

    ``turn_deg`` is added to the yaw during every step, rising with the step's
    activation (the head turns while the patient makes the expression and turns back).
    ``depth_scale`` stretches the mesh's depth: the true face is this many times deeper
    than FaceMesh's estimate on the base photo (the analysis only sees FaceMesh's).
    """

    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    roll_deg: float = 0.0
    turn_deg: float = 0.0
    depth_scale: float = 1.0

    def at(self, activation: float) -> tuple[float, float, float]:
        return (self.yaw_deg + self.turn_deg * activation, self.pitch_deg, self.roll_deg)


@dataclass(frozen=True, eq=False)
class FaceMesh3D:
    """The base photo as a mesh: vertices in base px (x right, y DOWN as in the image,
    z toward the camera, px), triangles, and which vertices are the 478 landmarks."""

    base_xy: np.ndarray  # (V, 2) base-photo positions (texture coordinates)
    depth: np.ndarray  # (V,) z toward the camera, base px (FaceMesh's estimate)
    normals: np.ndarray  # (V, 3) unit surface normals (x right, y down, z toward camera)
    triangles: np.ndarray  # (F, 3) vertex indices
    centre: np.ndarray  # (3,) rotation centre (base px, z)


def _detect_depth(image: np.ndarray) -> np.ndarray:
    """FaceMesh's z of the 478 landmarks of ``image`` (px of its width, toward the
    camera positive), the median of a few detections on cut images."""
    import mediapipe as mp

    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    zs = []
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1
    ) as mesh:
        for cut in ((0, 0), (3, 1), (1, 4), (5, 3)):
            sub = np.ascontiguousarray(rgb[cut[1]:, cut[0]:])
            res = mesh.process(sub)
            if res.multi_face_landmarks:
                w = sub.shape[1]
                zs.append([-p.z * w for p in res.multi_face_landmarks[0].landmark])
    if not zs:
        raise RuntimeError("FaceMesh found no face on the base photo")
    return np.median(np.array(zs), axis=0)


@lru_cache(maxsize=2)
def build_mesh(size: int, face: str) -> FaceMesh3D:
    """The mesh of the base photo of ``face`` at ``size`` (cached)."""
    from scipy.interpolate import LinearNDInterpolator
    from scipy.spatial import Delaunay

    use_face(face)
    bf = base_face(size)
    lm = bf.landmarks[:468]
    z = _detect_depth(np.ascontiguousarray(bf.image))[:468]
    c2 = lm.mean(axis=0)
    px_mm = bf.px_per_mm
    # Interior grid, inside the landmarks' hull.
    hull = Delaunay(lm)
    step = GRID_MM * px_mm
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    gx, gy = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
    g = np.stack([gx.ravel(), gy.ravel()], 1)
    g = g[hull.find_simplex(g) >= 0]
    # Not on top of a landmark (sliver triangles).
    d = np.min(np.linalg.norm(g[:, None] - lm[None], axis=2), axis=1)
    g = g[d > 0.4 * step]
    gz = LinearNDInterpolator(lm, z)(g)
    # Rings around the outline: directions from the centre, radius from the hull.
    ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    dirs = np.stack([np.cos(ang), np.sin(ang)], 1)
    rel = lm - c2
    r_land = np.linalg.norm(rel, axis=1)
    a_land = np.arctan2(rel[:, 1], rel[:, 0])
    radius = np.array([
        r_land[np.abs(np.angle(np.exp(1j * (a_land - a)))) < 0.15].max() for a in ang
    ])
    z_back = float(np.min(z))  # the outline's depth: the head's sides
    z_centre = float(np.median(z)) - 0.6 * float(np.ptp(z))
    rings, rz = [], []
    for k, s in enumerate(RING_SCALES):
        rings.append(c2 + dirs * (radius * s)[:, None])
        rz.append(np.full(len(ang), z_back if k == 0 else z_centre))
    verts = np.vstack([bf.landmarks[:468], g, *rings])
    depth = np.concatenate([z, gz, *rz])
    # Landmarks 468-477 (irises) are not vertices; the iris moves with the eye's mesh.
    tri = Delaunay(verts).simplices
    # The lip margins fold the raw mesh (a mouth corner's triangles pointed 50 degrees
    # downward): normals of the smoothed depth surface, as the analysis reads them.
    normals = smooth_normals(verts, depth, px_mm)
    # The 2D generator places the face by the centre of its landmarks' extent.
    centre = np.array([bf.centre[0], bf.centre[1], z_centre])
    return FaceMesh3D(verts, depth, normals, tri.astype(np.int32), centre)


class PoseRenderer:
    """Renders a :class:`SynthSpec` at a head pose (:class:`PoseSpec`).

    The 2D :class:`Renderer` of the same spec calibrates the fields and gives the
    truth; this class only draws. Per frame: vertices displaced (skin movement),
    scaled by ``depth_scale``, rotated about the head's centre, placed like the 2D
    generator's face (centre of the frame, ``face_height_frac``); triangles are drawn
    far to near into a triangle-index image, and one backward map (each pixel's
    triangle's affine map back to the canvas) feeds a single ``cv2.remap``. Outside the
    mesh the canvas is shown unmoved (the background does not turn with the head).
    """

    def __init__(self, spec: SynthSpec, pose: PoseSpec, size: int = 720) -> None:
        self.spec, self.pose, self.size = spec, pose, size
        self.r2d = Renderer(spec, size)
        self.face = self.r2d.face
        self.mesh = build_mesh(size, spec.face)
        w, h = spec.frame_size
        self.scale = self.r2d.scale
        self.frame_centre = np.array([(w - 1) / 2, (h - 1) / 2])
        # Outside the mesh: the canvas placed as the 2D generator places it at rest.
        a = self._rest_frame_to_base()
        a[:, 2] += self.face.offset
        self.background = cv2.transform(self.r2d.grid, a)
        self._tangent_cache: dict[tuple[str, float, float], np.ndarray] = {}

    def _rest_frame_to_base(self) -> np.ndarray:
        m = 1.0 / self.scale
        return np.array([[m, 0.0, self.face.centre[0] - m * self.frame_centre[0]],
                         [0.0, m, self.face.centre[1] - m * self.frame_centre[1]]])

    def active(self, t: float) -> tuple[tuple[str, float, float] | None, float]:
        for s in self.spec.steps:
            a = float(envelope(s, t))
            if a > 0:
                return (s.name, s.right_mm, s.left_mm), a
        return None, 0.0

    def lift(self, d2: np.ndarray) -> np.ndarray:
        """(V, 3): 2D vertex displacements (base px) lifted onto the skin's tangent plane
        (the depth component perpendicular to the vertex normal)."""
        n = self.mesh.normals
        nz = np.where(np.abs(n[:, 2]) < MIN_NZ, MIN_NZ, n[:, 2])
        dz = -(n[:, 0] * d2[:, 0] + n[:, 1] * d2[:, 1]) / nz
        return np.column_stack([d2, dz])

    def tangent_displacement(self, key: tuple[str, float, float], a: float = 1.0
                             ) -> np.ndarray:
        """(V, 3) displacement of every vertex at activation ``a`` (base px; x right,
        y down, z toward the camera), in the skin's tangent plane: the 2D generator's
        forward solve at the vertex, lifted."""
        if a != 1.0:
            p = self.mesh.base_xy
            return self.lift(solve_forward(p, self.r2d.steps[key].field, a) - p)
        if key not in self._tangent_cache:
            p = self.mesh.base_xy
            self._tangent_cache[key] = self.lift(solve_forward(p, self.r2d.steps[key].field) - p)
        return self._tangent_cache[key]

    def pose_at(self, t: float) -> tuple[float, float, float]:
        _, a = self.active(t)
        return self.pose.at(a)

    def vertices(self, t: float) -> np.ndarray:
        """(V, 3) vertices at ``t`` in head coordinates (x right, y down, z toward), px,
        displaced and depth-scaled, relative to the mesh centre."""
        key, a = self.active(t)
        v = np.column_stack([self.mesh.base_xy, self.mesh.depth]).astype(float)
        if key is not None:
            v = v + self.tangent_displacement(key, min(a, 1.0))
        v = v - self.mesh.centre
        v[:, 2] *= self.pose.depth_scale
        return v

    def project(self, t: float, v: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(V, 2) frame pixels and (V,) depth toward the camera of the vertices at ``t``."""
        v = self.vertices(t) if v is None else v
        # Head coordinates with y up for the rotation, back to y down for pixels.
        up = v * np.array([1.0, -1.0, 1.0])
        rot = up @ rotation(*self.pose_at(t)).T
        xy = rot[:, :2] * np.array([1.0, -1.0]) * self.scale + self.frame_centre
        return xy, rot[:, 2]

    def frame(self, i: int) -> np.ndarray:
        t = i / self.spec.fps
        xy, depth = self.project(t)
        w, h = self.spec.frame_size
        tri = self.mesh.triangles
        ids = np.full((h, w), -1, np.int32)
        order = np.argsort(depth[tri].mean(axis=1))  # far first
        pts = np.round(xy * 16).astype(np.int32)
        # Backface culling: triangles seen from behind are hidden by nearer ones anyway,
        # but drawing them would let them win where the mesh folds at the outline.
        a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
        area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        ref = self._ref_sign
        for k in order:
            if area[k] * ref[k] <= 0:
                continue
            cv2.fillConvexPoly(ids, pts[tri[k]], int(k), lineType=cv2.LINE_8, shift=4)
        # Per triangle: affine frame px -> canvas px.
        src = self.mesh.base_xy + np.asarray(self.face.offset, float)
        aff = _affines(xy[tri], src[tri])
        ymap = self.background.copy()
        inside = ids >= 0
        yy, xx = np.nonzero(inside)
        m = aff[ids[inside]]
        ymap[yy, xx, 0] = m[:, 0, 0] * xx + m[:, 0, 1] * yy + m[:, 0, 2]
        ymap[yy, xx, 1] = m[:, 1, 0] * xx + m[:, 1, 1] * yy + m[:, 1, 2]
        img = cv2.remap(self.face.canvas, ymap, None, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)
        return self._degrade(img, i)

    @property
    def _ref_sign(self) -> np.ndarray:
        if not hasattr(self, "_sign"):
            p = self.mesh.base_xy[self.mesh.triangles]
            a, b, c = p[:, 0], p[:, 1], p[:, 2]
            ab, ac = b - a, c - a
            self._sign = np.sign(ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0])
        return self._sign

    def _degrade(self, img: np.ndarray, i: int) -> np.ndarray:
        spec = self.spec
        if spec.blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), spec.blur_sigma)
        if spec.noise_sigma > 0:
            cv2.setRNGSeed(int(spec.seed) * 1_000_003 + i)
            noise = np.empty(img.shape, np.float32)
            cv2.randn(noise, 0.0, float(spec.noise_sigma))
            img = cv2.addWeighted(img, 1.0, noise, 1.0, 0.0, dtype=cv2.CV_8U)
        if spec.mirrored:
            img = cv2.flip(img, 1)
        return img

    def frames(self, workers: int = 2):
        n = self.spec.n_frames
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, n, 8):
                yield from pool.map(self.frame, range(start, min(start + 8, n)))


def _affines(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """(F, 2, 3) affine maps taking each triangle's ``dst`` corners to its ``src``."""
    ones = np.ones((len(dst), 3, 1))
    a = np.concatenate([dst, ones], axis=2)  # (F, 3, 3)
    # Degenerate (edge-on) triangles are never drawn; keep their solve finite.
    det = np.linalg.det(a)
    a[np.abs(det) < 1e-9] = np.eye(3)
    return np.transpose(np.linalg.solve(a, src), (0, 2, 1))


def skin_truth(r: PoseRenderer, key: tuple[str, float, float], group_points: dict[str, list[int]]
               ) -> dict[str, float]:
    """Length (mm) of the mean 3D displacement along the skin of each side's points."""
    d = r.tangent_displacement(key).copy()
    d[:, 2] *= r.pose.depth_scale
    return {s: float(np.linalg.norm(d[pts].mean(axis=0))) * r.face.mm_per_px
            for s, pts in group_points.items()}


def pose_truth(spec: SynthSpec, pose: PoseSpec, renderer: PoseRenderer) -> dict[str, object]:
    """The 2D truth of ``spec`` plus the pose, per frame, and the skin lengths."""
    from movement.synth.fields import protocol

    truth = truth_record(spec, renderer.r2d)
    proto = protocol(spec.protocol)
    for st, rec in zip(spec.steps, truth["steps"], strict=True):
        key = (st.name, st.right_mm, st.left_mm)
        for g in rec["groups"]:
            grp = next(x for x in proto.step(st.name).groups if x.name == g["muscle_group"])
            # Landmark indices beyond the mesh (irises) have no vertex.
            pts = {s: [p for p in grp.points(s) if p < 468] for s in ("right", "left")}
            if all(pts.values()):
                sk = skin_truth(renderer, key, pts)
                g["skin_right_mm"] = round(sk["right"], 6)
                g["skin_left_mm"] = round(sk["left"], 6)
        if pose.turn_deg:
            rec["turn_deg"] = pose.turn_deg
    times = np.arange(spec.n_frames) / spec.fps
    poses = np.array([renderer.pose_at(float(t)) for t in times])
    truth["pose"] = {
        **asdict(pose),
        "convention": "yaw > 0: face turned toward the patient's left; pitch > 0: chin up",
        "yaw_deg": [round(float(v), 3) for v in poses[:, 0]],
        "pitch_deg": [round(float(v), 3) for v in poses[:, 1]],
        "constant_yaw_deg": pose.yaw_deg,
        "constant_pitch_deg": pose.pitch_deg,
        "turn_deg": pose.turn_deg,
        "depth_scale": pose.depth_scale,
    }
    truth["generator"] = "movement.synth.pose3d (textured 3D mesh, orthographic)"
    return truth


def make_pose_video(spec: SynthSpec, pose: PoseSpec, out: Path,
                    truth_path: Path | None = None) -> dict:
    """Render ``spec`` at ``pose`` to ``out`` (.mp4) and write its truth JSON next to it
    (``<out>.truth.json``); returns the truth plus ``video`` and ``render_s``."""
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"video path must end in .mp4: {out}")
    truth_path = Path(truth_path) if truth_path else out.with_suffix(".truth.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    r = PoseRenderer(spec, pose)
    truth = pose_truth(spec, pose, r)
    return write_consult(r.frames(), out, spec, truth, truth_path, indent=1)


def with_pose_defaults(spec: SynthSpec) -> SynthSpec:
    """``spec`` without the 2D head motion (roll/shift/zoom): pose comes from PoseSpec."""
    return replace(spec, roll_deg=0.0, shift_px=0.0, zoom=0.0)
