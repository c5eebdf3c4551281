"""Dynamic lines (creases): how deep a step folds the skin of a region, per side.

A step that contracts a muscle under thin skin folds it into lines: frontalis ->
horizontal forehead lines, corrugator/procerus -> vertical glabellar "11s",
orbicularis oculi -> crow's feet, nasalis -> bunny lines, mentalis -> a pebbled chin.
The measure is how much darker-than-surroundings valleys of the region's line width
and direction appear between the step's rest frames and its peak.

Pipeline for one region, one side, one frame (:func:`read_region`):

1. Rectify the region into the face frame at :data:`PATCH_PX_PER_FOLD`, the patient's
   left side mirrored, so head roll, zoom and shift do not change the patch and one
   filter serves both sides (patch x = toward the midline, patch up = face up).
2. Take log intensity, so a multiplicative lighting change (global or a smooth
   one-sided gradient) adds a nearly flat offset that a second derivative ignores.
3. Oriented Gaussian second derivative across the line direction, steered over
   ``orientation_deg +- STEER_DEG``, scale-normalised so that a Gaussian valley of the
   region's width and log-depth ``A`` reads ``A`` (x100: percent).
4. Strength = RMS of the directional responses over the region hull (percent).

:func:`crease_change` turns rest and peak readings into the step's value: peak minus
mean rest, in percent of local skin brightness ("fold contrast").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from movement.analysis.face import IRIS_DIAMETER_MM, face_axes, iris_diameter_px
from movement.protocol import CreaseRegion

PATCH_PX_PER_FOLD = 8.0
"""Resolution of the rectified patch in pixels per fold width (8 px/mm for 1 mm folds,
4 px/mm for 2 mm dimples): fixed per region whatever the camera distance, fine enough
that the filter is well sampled, coarse enough that a region reads in a few ms."""

STEER_DEG = 25.0
"""Lines may run up to this far from the region's nominal direction (crow's feet
radiate, 11s converge); beyond it a line is another structure (hair, a glasses rim)."""

N_STEER = 11
"""Number of directions sampled within +-STEER_DEG (5 degree steps)."""

MIN_PX_PER_FOLD = 1.5
"""Image pixels across one fold width below which the fold is not resolved: the face
is too small in the frame (a 1 mm fold needs at least 1.5 px/mm)."""

MIN_VALID_FRACTION = 0.6
"""At least this share of the region must be inside the frame and well exposed."""

SATURATED, DARK = 250, 6
"""Grey levels treated as clipped (specular highlight, crushed shadow): no log contrast."""

MIN_TEXTURE = 0.004
"""Robust spread of log intensity (about 0.4 %) below which the region is blank
(a flat-filled or blacked-out area) rather than skin."""

NOISE_FLOOR_PCT = 1.8
"""A step value (added fold contrast, percent) below this is not a line: on a face
without creases, head motion + sensor noise read up to 0.8, a lighting change up to
0.7, static hair/beard/glasses up to 1.0 and JPEG q30 blocking up to 1.7 (measured in
tests/test_creases.py, docs/METHOD.md §9). A 10 % fold reads about 2.3, a 25 % fold 6."""

CLUTTER_PCT = 4.0
"""A region whose line strength is above this *at rest* holds strong static edges
(a hair fringe, the brow's own edge, glasses rims, deeply etched lines). Their
movement relative to the region reads as lines: on the generator's face, whose
fringe reaches within ~1 cm of the brows, a raise with no folds at all read -3 to
+7 on the forehead (rest 4.3-9.5), while clean skin regions rest at 0.6-2.4.
Such a value is not reported as a finding."""

SIDES = ("right", "left")


@dataclass(frozen=True, eq=False)
class CreaseReading:
    """One region, one side, one frame.

    Attributes
    ----------
    strength : float
        Fold contrast in percent of local skin brightness: the mean, over the deepest
        quarter of the region, of the scale-normalised valley response (a Gaussian
        fold of the region's width darkening the skin by 10 % reads about 10). NaN
        when not readable.
    heat : (H, W) float32
        Response map (percent, >= 0, zero outside the region) in the rectified patch.
    patch_to_image : (2, 3) float
        Affine taking patch pixels to image pixels; ``cv2.warpAffine(heat,
        patch_to_image, (W, H))`` lays the heat onto the frame.
    readable : bool
    reason : str
        Why the region could not be read (empty when readable).
    """

    strength: float
    heat: np.ndarray
    patch_to_image: np.ndarray
    readable: bool
    reason: str = ""


@dataclass(frozen=True, eq=False)
class CreaseChange:
    """A step's dynamic-line value for one region and side (see :func:`crease_change`)."""

    value: float  # percent fold contrast the step adds (NaN when not readable)
    rest: float  # rest strength (RMS over the rest frames)
    peak: float  # median peak strength
    heat_at_peak: np.ndarray
    patch_to_image: np.ndarray
    readable: bool
    reason: str = ""


# --------------------------------------------------------------------------- geometry


def _side_axes(lm: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(medial, up) image-plane unit vectors for ``side``.

    Patch x runs toward the midline on both sides: for the patient's right that is the
    face's lateral axis, for the left its opposite, which mirrors the left side onto
    the right and lets one oriented filter serve both.
    """
    if side not in SIDES:
        raise ValueError(f"side must be 'right' or 'left', not {side!r}")
    lateral, up = face_axes(lm)
    medial = lateral if side == "right" else -lateral
    return np.asarray(medial, float), np.asarray(up, float)


def patch_px_per_mm(region: CreaseRegion) -> float:
    """Resolution of the region's rectified patch (see :data:`PATCH_PX_PER_FOLD`)."""
    return PATCH_PX_PER_FOLD / region.width_mm


def region_geometry(
    pts_xy: np.ndarray, region: CreaseRegion, side: str, px_per_mm: float,
    res: float | None = None, pad_mm: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Hull of the region in patch pixels, the patch->image affine and the patch size.

    Returns
    -------
    hull : (K, 2) float32 polygon in patch pixels (before the margin is grown)
    patch_to_image : (2, 3)
    size : (width, height) of the patch in pixels
    """
    lm = np.asarray(pts_xy, dtype=float)
    res = patch_px_per_mm(region) if res is None else res
    medial, up = _side_axes(lm, side)
    pts = lm[list(region.points(side))]
    origin = pts.mean(axis=0)
    rel = pts - origin
    # Face-frame mm: x toward the midline, y up; shift_mm is (outward, up).
    q = np.stack([rel @ medial, rel @ up], axis=1) / px_per_mm
    q += np.array([-region.shift_mm[0], region.shift_mm[1]])
    border = max(region.margin_mm, 0.0) + pad_mm
    x0, y0 = q.min(axis=0) - border
    x1, y1 = q.max(axis=0) + border
    w = int(math.ceil((x1 - x0) * res)) + 1
    h = int(math.ceil((y1 - y0) * res)) + 1
    # Patch pixel (c, r) is the face-frame point (x0 + c/res, y1 - r/res).
    k = px_per_mm / res
    lin = np.stack([k * medial, -k * up], axis=1)
    t = origin + px_per_mm * (x0 * medial + y1 * up)
    patch_to_image = np.hstack([lin, t[:, None]])
    hull = np.stack([(q[:, 0] - x0) * res, (y1 - q[:, 1]) * res], axis=1)
    hull = cv2.convexHull(hull.astype(np.float32)).reshape(-1, 2)
    return hull, patch_to_image, (w, h)


def grow_mask(mask: np.ndarray, r_px: float) -> np.ndarray:
    """Grow (``r_px > 0``) or shrink (``< 0``) a binary mask by a disc.

    Shrinking lets a region keep clear of a dark neighbour that moves with the step
    (the brow under the forehead band, the lash line at the outer eye corner).
    """
    r = int(round(abs(r_px)))
    if r == 0:
        return mask
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    if r_px > 0:
        return cv2.dilate(mask, disc)
    return cv2.erode(mask, disc, borderValue=0)


def _kernels(sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampled Gaussian and its first and second derivatives (1-D, float32)."""
    r = int(math.ceil(3.5 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-x * x / (2 * sigma * sigma))
    g /= g.sum()
    d1 = -x / sigma**2 * g
    d2 = (x * x / sigma**4 - 1 / sigma**2) * g
    # Remove the DC leak of the sampled second derivative so flat regions read 0.
    d2 -= d2.mean()
    return g.astype(np.float32), d1.astype(np.float32), d2.astype(np.float32)


def ridge_response(
    logpatch: np.ndarray, sigma_px: float, orientation_deg: float,
    steer_deg: float = STEER_DEG, n_steer: int = N_STEER,
) -> tuple[np.ndarray, np.ndarray]:
    """Oriented line-scale contrast of a log-intensity patch, in log units.

    ``orientation_deg`` is CCW from patch +x with patch y pointing up (rows down). At
    each of ``n_steer`` directions within ``+-steer_deg`` the response is the second
    derivative across the line, times ``sigma**2 * 2**1.5`` so that a Gaussian valley
    of std ``sigma`` and log depth ``A`` reads ``A`` at its centre.

    Returns
    -------
    valley : best direction's response, bright ridges clipped to 0 (for display)
    energy : mean over the directions of the squared response (for the measure)

    Notes
    -----
    The measure uses the energy, not the clipped valley map: each directional
    response is linear in the image, so a fold adds its own energy to that of the
    skin texture (the cross term averages out), and the rest energy can be
    subtracted. A clipped or max-over-directions map is not additive: a shallow fold
    on textured skin is under-read (measured: a 10 % fold read 2x too low next to a
    25 % one), which would exaggerate side ratios.
    """
    g, d1, d2 = _kernels(sigma_px)
    lxx = cv2.sepFilter2D(logpatch, cv2.CV_32F, d2, g, borderType=cv2.BORDER_REFLECT)
    lyy = cv2.sepFilter2D(logpatch, cv2.CV_32F, g, d2, borderType=cv2.BORDER_REFLECT)
    lxy = cv2.sepFilter2D(logpatch, cv2.CV_32F, d1, d1, borderType=cv2.BORDER_REFLECT)
    norm = sigma_px**2 * 2**1.5
    angles = np.radians(orientation_deg + (
        np.linspace(-steer_deg, steer_deg, n_steer) if n_steer > 1 else np.zeros(1)))
    # Line direction in (col, row) is (cos, -sin); the across-line normal is
    # (sin, cos), and second derivatives steer exactly as a quadratic form:
    # R = s^2 lxx + 2 s c lxy + c^2 lyy. The mean of R^2 over the directions is then a
    # fixed quadratic form in (lxx, lxy, lyy): six products instead of a loop.
    sn, cs = np.sin(angles), np.cos(angles)
    u, v, w = sn * sn, 2 * sn * cs, cs * cs
    k = {n: np.float32(norm * norm * np.mean(c)) for n, c in (
        ("xx", u * u), ("xy", v * v), ("yy", w * w),
        ("xx_xy", 2 * u * v), ("xx_yy", 2 * u * w), ("xy_yy", 2 * v * w))}
    energy = (k["xx"] * lxx * lxx + k["xy"] * lxy * lxy + k["yy"] * lyy * lyy
              + k["xx_xy"] * lxx * lxy + k["xx_yy"] * lxx * lyy + k["xy_yy"] * lxy * lyy)
    # The display map needs only the best of a few directions.
    valley = np.full(logpatch.shape, -np.inf, dtype=np.float32)
    for th in np.linspace(angles[0], angles[-1], min(len(angles), 5)):
        a, b = math.sin(th), math.cos(th)
        resp = (a * a) * lxx + (2 * a * b) * lxy + (b * b) * lyy
        np.maximum(valley, resp, out=valley)
    valley *= np.float32(norm)
    np.maximum(valley, 0.0, out=valley)
    np.maximum(energy, 0.0, out=energy)  # rounding only: the form is >= 0
    return valley, energy


# --------------------------------------------------------------------------- reading


def _unreadable(reason: str, patch_to_image: np.ndarray | None = None) -> CreaseReading:
    a = patch_to_image if patch_to_image is not None else np.zeros((2, 3))
    return CreaseReading(float("nan"), np.zeros((1, 1), np.float32), a, False, reason)


def read_region(
    gray: np.ndarray, pts_xy: np.ndarray, region: CreaseRegion, side: str,
    px_per_mm: float | None = None, resolved_px_per_mm: float | None = None,
) -> CreaseReading:
    """Read one region's line strength on one side of one frame.

    Parameters
    ----------
    gray : (H, W) uint8 grey image (a BGR image is converted)
    pts_xy : (478, 2) FaceMesh landmarks in ``gray``'s pixels
    region : the protocol's crease region
    side : "right" | "left" (the patient's)
    px_per_mm : image scale; default from the iris (``iris_diameter_px / 11.7``)
    resolved_px_per_mm : what the camera resolved, when ``gray`` is an upsampled
        crop (default ``px_per_mm``); a fold needs MIN_PX_PER_FOLD of these

    Notes
    -----
    Only the bounding box of the region is converted to log intensity and warped, so
    the cost does not grow with the frame size.
    """
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)
    lm = np.asarray(pts_xy, dtype=float)
    if not np.all(np.isfinite(lm[list(region.points(side)) + [33, 263]])):
        return _unreadable("landmarks of the region not tracked")
    if px_per_mm is None:
        px_per_mm = float(iris_diameter_px(lm) / IRIS_DIAMETER_MM)
    if not np.isfinite(px_per_mm) or px_per_mm <= 0:
        return _unreadable("no image scale (iris not found)")
    resolved = px_per_mm if resolved_px_per_mm is None else resolved_px_per_mm
    if resolved * region.width_mm < MIN_PX_PER_FOLD:
        need = MIN_PX_PER_FOLD / region.width_mm
        return _unreadable(
            f"face too small: {resolved:.2f} px/mm, {region.name} lines need "
            f">= {need:.2f} px/mm (move closer or film at higher resolution)"
        )

    res = patch_px_per_mm(region)
    sigma_mm = region.width_mm / 2.355  # width is the fold's full width at half depth
    pad_mm = 3.5 * sigma_mm
    hull, a, (w, h) = region_geometry(lm, region, side, px_per_mm, res, pad_mm)

    # Source crop holding the patch (plus a pixel for interpolation).
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ a.T
    c0, r0 = np.floor(corners.min(axis=0)).astype(int) - 2
    c1, r1 = np.ceil(corners.max(axis=0)).astype(int) + 3
    ih, iw = gray.shape
    cc0, rr0, cc1, rr1 = max(c0, 0), max(r0, 0), min(c1, iw), min(r1, ih)
    if cc0 >= cc1 or rr0 >= rr1:
        return _unreadable(f"{region.name} region outside the image", a)
    crop = gray[rr0:rr1, cc0:cc1].astype(np.float32)
    if px_per_mm > 2 * res:
        # Downsampling to the patch grid: low-pass first so skin pores don't alias.
        crop = cv2.GaussianBlur(crop, (0, 0), 0.5 * px_per_mm / res)
    logc = np.log(crop + 1.0)
    ok = ((crop > DARK) & (crop < SATURATED)).astype(np.float32)
    a_crop = a.copy()
    a_crop[:, 2] -= (cc0, rr0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    logp = cv2.warpAffine(logc, a_crop, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    # Outside the frame counts as invalid: a constant 0 border for the validity map.
    okp = cv2.warpAffine(ok, a_crop, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0.0)
    inside = cv2.warpAffine(np.ones_like(ok), a_crop, (w, h), flags=flags,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    region_mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(region_mask, np.round(hull * 16).astype(np.int32), 1,
                       lineType=cv2.LINE_8, shift=4)
    region_mask = grow_mask(region_mask, region.margin_mm * res)
    in_region = region_mask.astype(bool)
    n_region = int(in_region.sum())
    if n_region == 0:
        return _unreadable(f"{region.name} region is empty", a)
    frac_inside = float((inside[in_region] > 0.99).mean())
    if frac_inside < MIN_VALID_FRACTION:
        return _unreadable(
            f"{region.name} region {100 * (1 - frac_inside):.0f} % outside the image", a)

    sigma_px = sigma_mm * res
    # A clipped pixel next to skin makes a false step; keep a filter radius away.
    rad = max(1, int(round(1.5 * sigma_px)))
    valid = cv2.erode((okp > 0.99).astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * rad + 1, 2 * rad + 1)), borderValue=0).astype(bool)
    valid &= in_region
    frac_valid = valid.sum() / n_region
    if frac_valid < MIN_VALID_FRACTION:
        return _unreadable(
            f"{region.name} region {100 * (1 - frac_valid):.0f} % clipped (over- or "
            "under-exposed) or outside the image", a)
    vals = logp[valid]
    q25, q75 = np.percentile(vals, [25, 75])
    if (q75 - q25) / 1.349 < MIN_TEXTURE:
        return _unreadable(f"{region.name} region is blank (no skin texture)", a)

    valley, energy = ridge_response(logp, sigma_px, region.orientation_deg)
    # Log units -> percent of local brightness.
    heat = np.where(valid, 100.0 * valley, 0.0).astype(np.float32)
    strength = 100.0 * math.sqrt(float(energy[valid].mean()))
    return CreaseReading(strength, heat, a, True, "")


def read_sides(
    gray: np.ndarray, pts_xy: np.ndarray, region: CreaseRegion, px_per_mm: float | None = None
) -> dict[str, CreaseReading]:
    """:func:`read_region` for both sides."""
    return {s: read_region(gray, pts_xy, region, s, px_per_mm) for s in SIDES}


def added_contrast(peak: float, rest: float) -> float:
    """Fold contrast a step adds: ``sign * sqrt(|peak**2 - rest**2|)`` (percent).

    Strengths are RMS values; their squares (energies) add, so the energy of the new
    folds is the peak energy minus the rest energy. The square root brings it back to
    percent contrast, proportional to fold depth (a fold twice as deep reads twice
    as high). Negative when the region has fewer lines at the peak than at rest.
    """
    d = peak * peak - rest * rest
    return math.copysign(math.sqrt(abs(d)), d)


def crease_change(
    rest: Sequence[CreaseReading], peak: Sequence[CreaseReading]
) -> CreaseChange:
    """A step's dynamic-line value for one region and side.

    ``value = added_contrast(peak, rest)``: the RMS fold contrast the step adds to
    the region (percent of local skin brightness), peak = median of the readable
    peak frames (one blurred or blinking frame does not set it), rest = RMS over the
    readable rest frames. The heat returned is that of the peak frame nearest the
    median. Not readable when no rest or no peak frame is.
    """
    rest_ok = [r for r in rest if r.readable]
    peak_ok = [p for p in peak if p.readable]
    if not peak_ok or not rest_ok:
        kind = "peak" if not peak_ok else "rest"
        which = peak if not peak_ok else rest
        reason = next((r.reason for r in which if r.reason), f"no {kind} frames given")
        src = next(iter(peak), None)
        return CreaseChange(
            float("nan"), float("nan"), float("nan"),
            src.heat if src is not None else np.zeros((1, 1), np.float32),
            src.patch_to_image if src is not None else np.zeros((2, 3)),
            False, f"no readable {kind} frame: {reason}",
        )
    rest_v = math.sqrt(float(np.mean([r.strength**2 for r in rest_ok])))
    peaks = np.array([p.strength for p in peak_ok])
    peak_v = float(np.median(peaks))
    best = peak_ok[int(np.argmin(np.abs(peaks - peak_v)))]
    return CreaseChange(
        added_contrast(peak_v, rest_v), rest_v, peak_v, best.heat, best.patch_to_image, True
    )


@dataclass(frozen=True, eq=False)
class LineFrame:
    """One frame given to :func:`step_lines`: grey image and its landmarks.

    ``resolved_px_per_mm``: what the camera resolved when ``gray`` is an upsampled crop.
    """

    gray: np.ndarray
    pts: np.ndarray
    resolved_px_per_mm: float | None = None


def step_lines(
    rest: Sequence[LineFrame], peak: Sequence[LineFrame], region: CreaseRegion, side: str
) -> CreaseChange:
    """A step's dynamic-line value for one region and side from its rest and peak frames."""
    def read(f: LineFrame) -> CreaseReading:
        return read_region(f.gray, f.pts, region, side, resolved_px_per_mm=f.resolved_px_per_mm)

    return crease_change([read(f) for f in rest], [read(f) for f in peak])


def line_flags(c: CreaseChange) -> tuple[str, ...]:
    """Why a step's line value is not a finding (empty when it is)."""
    if not c.readable:
        return (f"region unreadable: {c.reason}",)
    if c.rest > CLUTTER_PCT:
        return (
            # Each side's index at rest is in metrics.csv (rest_mm); leaving it out
            # here lets a reason both sides share be said once.
            f"region unreadable: strong edges in it at rest (crease index over "
            f"{CLUTTER_PCT:g}: hair, the brow's edge, glasses or etched lines) whose "
            "movement reads as lines; see the pictures",
        )
    return ()


# --------------------------------------------------------------------------- drawing


def draw_heat(
    frame_bgr: np.ndarray,
    reading_or_heat: CreaseReading | CreaseChange | np.ndarray,
    patch_to_image: np.ndarray | None = None,
    vmax: float | None = None,
    alpha: float = 0.6,
    colormap: int = cv2.COLORMAP_INFERNO,
) -> np.ndarray:
    """Overlay the response as a translucent heat map; returns a new BGR image.

    Opacity follows the response (0 -> transparent, ``vmax`` -> ``alpha``) so the skin
    stays visible between the lines. Give the same ``vmax`` to both sides of a step to
    make their colours comparable (default: this map's 99th percentile).
    """
    if isinstance(reading_or_heat, (CreaseReading, CreaseChange)):
        heat = reading_or_heat.heat_at_peak if isinstance(reading_or_heat, CreaseChange) \
            else reading_or_heat.heat
        a = reading_or_heat.patch_to_image if patch_to_image is None else patch_to_image
    else:
        if patch_to_image is None:
            raise ValueError("patch_to_image is needed with a bare heat map")
        heat, a = reading_or_heat, patch_to_image
    out = frame_bgr.copy()
    if heat.size <= 1 or not np.any(heat > 0):
        return out
    if vmax is None:
        vmax = float(np.percentile(heat[heat > 0], 99))
    vmax = max(vmax, 1e-6)
    h, w = out.shape[:2]
    on_frame = cv2.warpAffine(heat.astype(np.float32), np.asarray(a, np.float64), (w, h),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    level = np.clip(on_frame / vmax, 0.0, 1.0)
    ys, xs = np.nonzero(level > 0.02)
    if ys.size == 0:
        return out
    r0, r1, c0, c1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    lv = level[r0:r1, c0:c1]
    colour = cv2.applyColorMap((lv * 255).astype(np.uint8), colormap).astype(np.float32)
    op = (alpha * lv)[..., None]
    base = out[r0:r1, c0:c1].astype(np.float32)
    out[r0:r1, c0:c1] = np.clip(base * (1 - op) + colour * op, 0, 255).astype(np.uint8)
    return out
