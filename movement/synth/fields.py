"""Displacement fields per muscle group and side, and their calibration to the truth.

A step's movement is a sum of smooth parts (:class:`Bump`, :class:`LidClosure`)
placed on the base face's landmarks (:data:`FIELD_DESIGNS`). A frame is a backward
warp, so a base point ``p`` shows up at ``q = p + f(q)`` (:func:`solve_forward`); the
truth is measured on those ``q`` with the protocol's measurement kind
(:func:`measure_group`), and :func:`calibrate_step` scales each side's field until
that true value is the requested one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from movement.protocol import MuscleGroup, Protocol, load_protocol
from movement.synth.face import BASE_SIZE, base_face, face_cache

PROTOCOL_NAME = "extended"
"""The protocol whose landmark groups the fields are anchored on and measured with
(the extended protocol holds every step; its standard steps are the standard's)."""

N_SIGMA_SUPPORT = 4.5
"""Fields are applied within this many sigmas of their centre (beyond: < 4e-5 of peak)."""

SIDES = ("right", "left")


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
        s: measure_group(group, s, face.landmarks, q, face.up, face.mm_per_px) for s in SIDES
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
    if side not in SIDES:
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


@face_cache(maxsize=256)
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
    units = {s: unit_side_field(step, s, size) for s in SIDES}
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
            req[s] == 0 or abs(truth[s] - req[s]) <= rtol * req[s] for s in SIDES
        )
        if done:
            break
        for s in SIDES:
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
