"""Ground-truth dynamic lines (creases) for the synthetic generator, and confounders.

Creases are drawn as multiplicative shading: a fold darkens the skin along a line by
``depth`` (0.2 = 20 % darker at the fold centre) with a Gaussian cross-profile. The
shading is a function of the *base-photo position* of each frame pixel, so it moves
and deforms with the skin exactly like the photo does: after
``img = cv2.remap(canvas, source_map)`` the generator multiplies the pixels by
``crease_shade(source_map - offset, ...)`` (see :func:`apply_creases`).

Designs are laid out in the base face frame in mm, relative to a landmark pair of
:func:`movement.synth.face.base_face` (one landmark per side), with coordinates
(outward from the midline, up); the left side is the mirror image of the right.

The "known strength" of a side is its ``depth`` at activation 1; at activation ``a``
the fold is ``a * depth`` deep and ``0.75 + 0.25 a`` of its full width (folds both
deepen and widen as the muscle contracts).

Confounders (hair over the forehead, a beard on the chin, glasses rims by the eyes)
are :class:`Texture` shadings in the same base coordinates, so they move with the head
but do not change with the step; lighting and JPEG helpers act on finished images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from movement.synth.face import BASE_SIZE, base_face, face_cache

STEP_CREASES: dict[str, tuple[str, ...]] = {
    "raise": ("forehead",),
    "frown": ("glabella",),
    "squint": ("crow_feet",),
    "smile": ("crow_feet",),
    "scrunch": ("bunny_lines",),
    "pout": ("chin",),
}
"""Which crease designs a step's activation folds."""

MAX_DEPTH = 0.95
"""Deepest fold the generator accepts (95 % darker at the fold centre): deep enough to
check that the index keeps growing past the 35 % most dynamic lines reach (a deep
fold in side light, or etched skin, is much darker)."""


@dataclass(frozen=True)
class CreaseLine:
    """One fold, in mm relative to its design's anchor on the patient's RIGHT side.

    ``out_mm`` runs away from the midline, ``up_mm`` toward the forehead.
    ``angle_deg`` follows :class:`movement.protocol.CreaseRegion`: the line direction
    counter-clockwise from the "toward the patient's left" axis as the camera sees the
    right side (0 horizontal, 90 vertical). ``length_mm == 0`` makes a round dimple.
    """

    out_mm: float
    up_mm: float
    angle_deg: float
    length_mm: float


@dataclass(frozen=True)
class CreaseDesign:
    """The fold pattern of one region, mirrored onto both sides.

    anchor : (right, left) landmark numbers the pattern is placed from
    width_mm : full width at half depth of one fold at activation 1
    """

    name: str
    anchor: tuple[int, int]
    lines: tuple[CreaseLine, ...]
    width_mm: float
    note: str = ""


def _parallel(n: int, spacing: float, out: float, up: float, angle: float,
              length: float) -> tuple[CreaseLine, ...]:
    """``n`` parallel folds centred on (out, up), ``spacing`` mm apart across the lines."""
    th = math.radians(angle)
    # Across-line unit vector in (out, up): the line runs (-cos, sin) in (out, up)
    # because the angle is measured from the medial (= -out) axis.
    nx, ny = math.sin(th), math.cos(th)
    k0 = (n - 1) / 2
    return tuple(
        CreaseLine(out + (k - k0) * spacing * nx, up + (k - k0) * spacing * ny, angle, length)
        for k in range(n)
    )


def _fan(start: float, length: float, spokes_deg: tuple[float, ...]) -> tuple[CreaseLine, ...]:
    """Folds radiating outward from the anchor (crow's feet), ``spokes_deg`` above the
    outward axis, each from ``start`` to ``start + length`` mm."""
    lines = []
    for phi in spokes_deg:
        p = math.radians(phi)
        r = start + length / 2
        # Direction (cos phi, sin phi) in (out, up) is angle 180 - phi from medial.
        lines.append(CreaseLine(r * math.cos(p), r * math.sin(p), (180.0 - phi) % 180.0, length))
    return tuple(lines)


def _dimples(seed: int, n: int, out: tuple[float, float], up: tuple[float, float]
             ) -> tuple[CreaseLine, ...]:
    """``n`` short dimples scattered (reproducibly) over a box: the pebbled chin."""
    rng = np.random.default_rng(seed)
    return tuple(
        CreaseLine(float(rng.uniform(*out)), float(rng.uniform(*up)),
                   float(rng.uniform(-30, 30)), float(rng.uniform(0.0, 2.0)))
        for _ in range(n)
    )


DESIGNS: dict[str, CreaseDesign] = {
    d.name: d
    for d in (
        CreaseDesign(
            "forehead", (105, 334), _parallel(3, 2.2, -1.0, 4.7, 0.0, 20.0), 1.5,
            "three horizontal frontalis lines 3.5-9.5 mm above the mid-brow",
        ),
        CreaseDesign(
            "glabella", (9, 9),
            (CreaseLine(4.0, 3.0, 96.0, 11.0), CreaseLine(7.0, 4.0, 100.0, 7.0)), 1.5,
            "vertical '11s' 4 and 7 mm from the midline, diverging slightly upward",
        ),
        CreaseDesign(
            "crow_feet", (33, 263), _fan(3.0, 9.0, (-28.0, -12.0, 4.0, 20.0, 33.0)), 1.0,
            "five lines radiating from the outer eye corner, 3-12 mm out",
        ),
        CreaseDesign(
            "bunny_lines", (196, 419), _parallel(3, 2.5, 0.5, 0.5, 40.0, 6.0), 1.0,
            "three oblique lines on the nasal sidewall, medial end higher",
        ),
        CreaseDesign(
            "chin", (200, 200), _dimples(7, 9, (1.0, 7.5), (-5.5, 2.0)), 2.0,
            "pebbled chin pad: nine dimples per side",
        ),
    )
}


@dataclass(frozen=True, eq=False)
class _Placed:
    """A design's folds on one side in base-photo pixels."""

    centre: np.ndarray  # (L, 2)
    direction: np.ndarray  # (L, 2) unit
    half_len: np.ndarray  # (L,)


def varied_design(name: str, seed: int) -> CreaseDesign:
    """Design ``name`` redrawn with seeded variety: another count of folds, spacing,
    width, length, position and angle, within what faces show (``seed`` 0 is the
    standard design itself).

    Count goes 2-5 (parallel lines) or 3-7 (crow's feet spokes), spacing and length
    x0.7-1.4, width x0.6-1.6, each fold shifted up to 1 mm and turned up to 8 degrees.
    """
    d = DESIGNS[name]
    if seed == 0:
        return d
    rng = np.random.default_rng(seed)
    k_len = float(rng.uniform(0.7, 1.4))
    k_space = float(rng.uniform(0.7, 1.4))
    if name == "crow_feet":
        n = int(rng.integers(3, 8))
        spokes = tuple(float(a) for a in np.linspace(-30.0, 35.0, n) + rng.uniform(-5, 5, n))
        base = _fan(3.0 * k_space, 9.0 * k_len, spokes)
    elif name == "chin":
        base = _dimples(seed, int(rng.integers(5, 13)), (1.0, 7.5), (-5.5, 2.0))
    else:
        first = d.lines[0]
        n = int(rng.integers(2, 6))
        if name == "glabella":
            n = min(n, 3)
        spacing = {"forehead": 2.2, "glabella": 3.0, "bunny_lines": 2.5}[name] * k_space
        mid = np.mean([[ln.out_mm, ln.up_mm] for ln in d.lines], axis=0)
        base = _parallel(n, spacing, float(mid[0]), float(mid[1]), first.angle_deg,
                         first.length_mm * k_len)
    lines = tuple(
        CreaseLine(ln.out_mm + float(rng.uniform(-1, 1)), ln.up_mm + float(rng.uniform(-1, 1)),
                   ln.angle_deg + float(rng.uniform(-8, 8)),
                   ln.length_mm * float(rng.uniform(0.8, 1.2)))
        for ln in base
    )
    return CreaseDesign(d.name, d.anchor, lines, d.width_mm * float(rng.uniform(0.6, 1.6)),
                        f"{d.note} (variant {seed})")


@face_cache(maxsize=64)
def _placed(d: CreaseDesign, side: str, size: int) -> _Placed:
    face = base_face(size)
    anchor = face.landmarks[d.anchor[0] if side == "right" else d.anchor[1]]
    outward = -face.lateral if side == "right" else face.lateral
    ppm = face.px_per_mm
    cs, ds, hs = [], [], []
    for ln in d.lines:
        cs.append(anchor + ppm * (ln.out_mm * outward + ln.up_mm * face.up))
        th = math.radians(ln.angle_deg)
        # Right side: the angle is from the medial axis (= -outward).
        v = -math.cos(th) * outward + math.sin(th) * face.up
        ds.append(v / np.linalg.norm(v))
        hs.append(ppm * ln.length_mm / 2)
    return _Placed(np.array(cs), np.array(ds), np.array(hs))


def _fold_profile(pts: np.ndarray, placed: _Placed, sigma_px: float) -> np.ndarray:
    """Max over the folds of a Gaussian cross-profile with smooth, tapering ends."""
    out = np.zeros(len(pts))
    for c, v, hl in zip(placed.centre, placed.direction, placed.half_len, strict=True):
        rel = pts - c
        along = rel @ v
        across = rel @ np.array([-v[1], v[0]])
        # Beyond the fold's half length the valley fades like its cross-profile, so a
        # length-0 fold is a round dimple.
        beyond = np.maximum(np.abs(along) - hl, 0.0)
        prof = np.exp(-(across * across + beyond * beyond) / (2 * sigma_px * sigma_px))
        # The middle of a line is deepest, its ends shallower (as real folds).
        if hl > 0:
            prof *= 1.0 - 0.4 * np.clip(np.abs(along) / hl, 0.0, 1.0) ** 2
        np.maximum(out, prof, out=out)
    return out


def crease_shade(
    pts_base: np.ndarray, name: str | CreaseDesign, depth_right: float, depth_left: float,
    activation: float = 1.0, size: int = BASE_SIZE,
) -> np.ndarray:
    """Multiplicative shading (N,) in (0, 1] of design ``name`` at base-photo points.

    Parameters
    ----------
    pts_base : (N, 2) base-photo positions of frame pixels (``source_map - offset``)
    depth_right, depth_left : fold depth per side at activation 1 (0 - MAX_DEPTH)
    activation : the step's activation, 0 (rest) to 1 (peak)
    """
    for dep in (depth_right, depth_left):
        if not 0.0 <= dep <= MAX_DEPTH:
            raise ValueError(f"crease depth {dep} outside 0-{MAX_DEPTH}")
    pts = np.asarray(pts_base, dtype=float).reshape(-1, 2)
    a = float(np.clip(activation, 0.0, 1.0))
    shade = np.ones(len(pts))
    if a == 0.0:
        return shade.astype(np.float32)
    face = base_face(size)
    d = DESIGNS[name] if isinstance(name, str) else name
    sigma = d.width_mm / 2.355 * (0.75 + 0.25 * a) * face.px_per_mm
    dark = np.zeros(len(pts))
    for side, dep in (("right", depth_right), ("left", depth_left)):
        if dep > 0:
            np.maximum(dark, a * dep * _fold_profile(pts, _placed(d, side, size), sigma),
                       out=dark)
    shade -= dark
    return shade.astype(np.float32)


def crease_bbox(name: str | CreaseDesign, size: int = BASE_SIZE
                ) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in base-photo px outside which ``crease_shade`` is 1 (to < 1e-4)."""
    face = base_face(size)
    d = DESIGNS[name] if isinstance(name, str) else name
    sigma = d.width_mm / 2.355 * face.px_per_mm
    pts = []
    for side in ("right", "left"):
        p = _placed(d, side, size)
        ends = np.concatenate([p.centre + p.direction * p.half_len[:, None],
                               p.centre - p.direction * p.half_len[:, None]])
        pts.append(ends)
    allp = np.concatenate(pts)
    r = 4.5 * sigma
    x0, y0 = allp.min(axis=0) - r
    x1, y1 = allp.max(axis=0) + r
    return float(x0), float(y0), float(x1), float(y1)


def _in_box(base_map: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    x, y = base_map[..., 0], base_map[..., 1]
    return (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])


def apply_creases(
    img: np.ndarray, base_map: np.ndarray, depths: Mapping[str, tuple[float, float]],
    activation: float = 1.0, size: int = BASE_SIZE, variant: int = 0,
) -> np.ndarray:
    """Fold the skin of a rendered frame; returns a new image of ``img``'s dtype.

    Parameters
    ----------
    img : (H, W[, 3]) frame rendered from ``base_map``
    base_map : (H, W, 2) base-photo position of each frame pixel (a ``source_map``
        minus ``base_face().offset``), before any mirroring
    depths : design name -> (right, left) depth at activation 1
    variant : 0 for the standard designs, else the seed of :func:`varied_design`
    """
    out = img.astype(np.float32)
    for name, (dr, dl) in depths.items():
        d = varied_design(name, variant)
        m = _in_box(base_map, crease_bbox(d, size))
        if not m.any():
            continue
        s = crease_shade(base_map[m], d, dr, dl, activation, size)
        out[m] *= s[:, None] if out.ndim == 3 else s
    return _like(out, img)


def _like(out: np.ndarray, img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out.astype(img.dtype)


# --------------------------------------------------------------------------- confounders


@dataclass(frozen=True, eq=False)
class Texture:
    """A static shading pattern fixed to the face (moves with the head, not the step).

    ``shade`` is a float32 image in (0, 1] covering base-photo px from ``origin``.
    """

    shade: np.ndarray
    origin: tuple[float, float]

    def at(self, pts_base: np.ndarray) -> np.ndarray:
        """Shading at base-photo points (N, 2); 1 outside the texture."""
        p = np.asarray(pts_base, np.float32).reshape(-1, 1, 2) - np.float32(self.origin)
        s = cv2.remap(self.shade, p[..., 0], p[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
        return s.reshape(-1)

    def apply(self, img: np.ndarray, base_map: np.ndarray) -> np.ndarray:
        m = base_map.astype(np.float32) - np.float32(self.origin)
        s = cv2.remap(self.shade, m[..., 0], m[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
        out = img.astype(np.float32) * (s[..., None] if img.ndim == 3 else s)
        return _like(out, img)


_SUPER = 4  # textures are drawn 4x supersampled, then reduced: anti-aliased strands


TEXTURE_EYE_DISTANCE_MM = 65.4
"""Inter-iris distance the hair, beard and glasses sizes are drawn for. They are sized to
the face (its eyes' distance in px), not to the ruler: 65.4 mm is the default face's
inter-iris distance under the mean-axis iris scale they were drawn with, so the
horizontal-diameter ruler leaves them the same size relative to its features."""


def texture_px_per_mm(size: int = BASE_SIZE) -> float:
    """Pixels per (texture) millimetre of the base face: its inter-iris distance over
    :data:`TEXTURE_EYE_DISTANCE_MM`."""
    lm = base_face(size).landmarks
    return float(np.linalg.norm(lm[468] - lm[473])) / TEXTURE_EYE_DISTANCE_MM


def _texture_canvas(centre: np.ndarray, half_mm: tuple[float, float], size: int
                    ) -> tuple[np.ndarray, tuple[float, float], float]:
    ppm = texture_px_per_mm(size)
    hw, hh = half_mm[0] * ppm, half_mm[1] * ppm
    x0, y0 = float(centre[0] - hw), float(centre[1] - hh)
    w, h = int(math.ceil(2 * hw)), int(math.ceil(2 * hh))
    return np.zeros((h * _SUPER, w * _SUPER), np.float32), (x0, y0), ppm


def _finish(dark: np.ndarray, origin: tuple[float, float], blur_px: float) -> Texture:
    h, w = dark.shape[0] // _SUPER, dark.shape[1] // _SUPER
    small = cv2.resize(dark, (w, h), interpolation=cv2.INTER_AREA)
    if blur_px > 0:
        small = cv2.GaussianBlur(small, (0, 0), blur_px)
    return Texture((1.0 - np.clip(small, 0.0, 0.95)).astype(np.float32), origin)


def _to_super(p: np.ndarray, origin: tuple[float, float]) -> np.ndarray:
    return np.round((p - np.asarray(origin)) * _SUPER * 16).astype(np.int32)


@face_cache(maxsize=8)
def hair_texture(size: int = BASE_SIZE, seed: int = 1, n: int = 14,
                 darkness: float = 0.45) -> Texture:
    """Thin strands hanging from the hairline over the forehead (mostly steep, curved)."""
    face = base_face(size)
    lm = face.landmarks
    top = (lm[108] + lm[337]) / 2
    dark, origin, ppm = _texture_canvas(top - 8 * face.up * texture_px_per_mm(size),
                                        (45.0, 18.0), size)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.uniform(-40, 40)
        start = top + ppm * (x * face.lateral + rng.uniform(0, 6) * face.up)
        ang = math.radians(rng.uniform(-40, 40))  # from straight down
        bend = rng.uniform(-0.04, 0.04)
        length = rng.uniform(8, 20)
        pts = []
        for s in np.linspace(0, length, 24):
            a = ang + bend * s
            pts.append(start + ppm * s * (math.sin(a) * face.lateral - math.cos(a) * face.up))
        thick = max(1, int(round(rng.uniform(0.25, 0.5) * ppm * _SUPER)))
        cv2.polylines(dark, [_to_super(np.array(pts), origin)], False,
                      float(darkness * rng.uniform(0.6, 1.0)), thick, cv2.LINE_AA, shift=4)
    return _finish(dark, origin, 0.3)


@face_cache(maxsize=8)
def beard_texture(size: int = BASE_SIZE, seed: int = 2, per_mm2: float = 1.5,
                  darkness: float = 0.4) -> Texture:
    """Stubble over the chin and jaw: short dark hairs at random angles."""
    face = base_face(size)
    lm = face.landmarks
    centre = lm[199]
    half = (26.0, 16.0)
    dark, origin, ppm = _texture_canvas(centre, half, size)
    rng = np.random.default_rng(seed)
    n = int(per_mm2 * 4 * half[0] * half[1])
    for _ in range(n):
        p = centre + ppm * (rng.uniform(-half[0], half[0]) * face.lateral
                            + rng.uniform(-half[1], half[1]) * face.up)
        a = rng.uniform(0, math.pi)
        d = ppm * rng.uniform(0.3, 0.9) * np.array([math.cos(a), math.sin(a)])
        cv2.line(dark, tuple(_to_super(p, origin)), tuple(_to_super(p + d, origin)),
                 float(darkness * rng.uniform(0.5, 1.0)), max(1, int(0.2 * ppm * _SUPER)),
                 cv2.LINE_AA, shift=4)
    return _finish(dark, origin, 0.3)


@face_cache(maxsize=8)
def glasses_texture(size: int = BASE_SIZE, darkness: float = 0.7, rim_mm: float = 1.8
                    ) -> Texture:
    """Dark glasses rims around both eyes, their outer edge over the crow's-feet area."""
    face = base_face(size)
    lm = face.landmarks
    mid = (lm[468] + lm[473]) / 2
    dark, origin, ppm = _texture_canvas(mid, (70.0, 30.0), size)
    roll = math.degrees(math.atan2(face.lateral[1], face.lateral[0]))
    for iris in (468, 473):
        c = lm[iris]
        axes = (int(24 * ppm * _SUPER), int(14 * ppm * _SUPER))
        cv2.ellipse(dark, tuple(_to_super(c, origin)), (axes[0] * 16, axes[1] * 16), roll,
                    0, 360, darkness, max(1, int(rim_mm * ppm * _SUPER)), cv2.LINE_AA, shift=4)
    return _finish(dark, origin, 0.4)


def global_light(img: np.ndarray, gain: float) -> np.ndarray:
    """Whole frame brighter/darker (exposure change)."""
    return _like(img.astype(np.float32) * gain, img)


def one_sided_light(img: np.ndarray, lm: np.ndarray, gain: float = 0.7,
                    width_mm: float = 25.0) -> np.ndarray:
    """A lamp on one side: a smooth sigmoid ramp across the face in image coordinates,
    ``gain`` on the patient's left (image right when unmirrored), 1 on the right."""
    from movement.analysis.face import IRIS_DIAMETER_MM, face_axes, iris_diameter_px

    lateral, _ = face_axes(lm)
    ppm = float(iris_diameter_px(lm) / IRIS_DIAMETER_MM)
    mid = (lm[33] + lm[263]) / 2
    h, w = img.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    u = ((gx - mid[0]) * lateral[0] + (gy - mid[1]) * lateral[1]) / (ppm * width_mm)
    g = 1.0 + (gain - 1.0) * (0.5 + 0.5 * np.tanh(u))
    return _like(img.astype(np.float32) * (g[..., None] if img.ndim == 3 else g), img)


def jpeg(img: np.ndarray, quality: int = 30) -> np.ndarray:
    """JPEG round trip (8x8 blocking, ringing)."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


# --------------------------------------------------------------------------- stills


@dataclass(frozen=True, eq=False)
class Still:
    """One rendered frame of the base face: image, exact landmarks, base positions."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    landmarks: np.ndarray  # (478, 2) in image px (the base landmarks moved by the pose)
    base_map: np.ndarray  # (H, W, 2) base-photo position of each pixel
    px_per_mm: float


def render_still(
    depths: Mapping[str, tuple[float, float]] | None = None,
    activation: float = 1.0,
    roll_deg: float = 0.0,
    zoom: float = 1.0,
    shift_px: tuple[float, float] = (0.0, 0.0),
    frame_size: tuple[int, int] = (600, 600),
    textures: tuple[Texture, ...] = (),
    noise_sigma: float = 0.0,
    seed: int = 0,
    size: int = BASE_SIZE,
) -> Still:
    """The base face under a similarity pose with creases and confounders, no video.

    The face centre goes to the frame centre (plus ``shift_px``), rotated by
    ``roll_deg`` (counter-clockwise on screen) and scaled by ``zoom``. Landmarks are
    the base landmarks moved by the same pose, so they are exact: a test of the
    crease measure then does not also test the landmark model.
    """
    face = base_face(size)
    w, h = frame_size
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    # Forward pose base -> frame: rotate (screen CCW with y down is [[c, s], [-s, c]]).
    lin = zoom * np.array([[c, s], [-s, c]])
    t = np.array([(w - 1) / 2 + shift_px[0], (h - 1) / 2 + shift_px[1]]) - lin @ face.centre
    inv = np.linalg.inv(lin)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    grid = np.stack([gx, gy], axis=-1)
    base_map = ((grid - t) @ inv.T).astype(np.float32)
    canvas_map = base_map + np.asarray(face.offset, np.float32)
    img = cv2.remap(face.canvas, canvas_map, None, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT)
    if depths:
        img = apply_creases(img, base_map, depths, activation, size)
    for tex in textures:
        img = tex.apply(img, base_map)
    if noise_sigma > 0:
        rng = np.random.default_rng(seed)
        noisy = img.astype(np.float32) + rng.normal(0.0, noise_sigma, img.shape)
        img = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    lm = face.landmarks @ lin.T + t
    return Still(img, lm, base_map, face.px_per_mm * zoom)
