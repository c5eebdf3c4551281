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
4. Strength = RMS of the directional responses over the region (percent), what it
   covers left out: the eye openings (lid margins grown by :data:`EYE_MARGIN_MM`) and,
   for the forehead, the brows (:data:`BROW_MARGIN_MM`).

For a step (:func:`step_lines`) the rest frames are moved onto each peak frame by the
skin's movement (:func:`skin_motion`, refined by image registration), so strengths at
rest and at the peak are taken over the same skin: a line already there at rest that
moves with the skin is no change, one that deepens is. The value is
:func:`added_contrast` of the two, in percent of local skin brightness ("fold
contrast"); negative when the lines at rest softened (:func:`line_flags` says so).

Kept as one module: the reading, the same-skin comparison and the drawing share the
patch geometry and filters, and only :func:`step_lines` is the way in for a step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from movement.analysis.face import IRIS_DIAMETER_MM, face_axes, iris_diameter_px
from movement.analysis.uncertainty import crease_interval
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

CLUTTER_PCT = 9.0
"""A region whose line strength at rest (over the skin compared) is above this is
covered by strong static edges rather than skin: a fringe of hair, a glasses rim.
Lines etched in skin rest below it (the older face of docs/figures/lines.md rests at
up to about 8 on the forehead); hair does not move with the skin, and the comparison
leaves more of it than the interval's REST_DOUBT covers. Such a value is not reported
as a finding."""

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
    # step_lines only: the value's 95 % interval and the standard errors of the rest
    # and peak strengths (movement.analysis.uncertainty.crease_interval).
    lo: float = float("nan")
    hi: float = float("nan")
    rest_se: float = float("nan")
    peak_se: float = float("nan")


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
    hull : (K, 2) float32 polygon in patch pixels (before the margin is grown): the
        convex hull of the points, or for a ``band`` region the points in order
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
    hull = np.stack([(q[:, 0] - x0) * res, (y1 - q[:, 1]) * res], axis=1).astype(np.float32)
    if region.shape != "band":
        hull = cv2.convexHull(hull).reshape(-1, 2)
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

EYE_RING: dict[str, tuple[int, ...]] = {
    "right": (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    "left": (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
}
"""FaceMesh lid margins of each eye: the eye opening, which the lids close in a squint."""

INNER_LIPS = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13,
              82, 81, 80, 191)
"""The mouth opening's margin: it moves unlike the skin around it."""

EYE_MARGIN_MM = 2.0
"""The eye opening is kept out of every region with this much around it (the lashes,
the lid margin's own shadow), at rest and at the peak."""

BROW_RING: dict[str, tuple[int, ...]] = {
    "right": (70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
    "left": (300, 293, 334, 296, 336, 285, 295, 282, 283, 276),
}
"""FaceMesh's brow outline (upper edge lateral to medial, then the lower edge back)."""

BROW_MARGIN_MM = 1.0
"""The brows are kept out of a region that covers them (the forehead band) with this
much around them. Their hairs are a dark band whose edge the line filters answer as
strongly as a deep fold, and they reach past FaceMesh's upper brow edge. Masked like
the eye openings (filled smoothly before filtering), the brow edge no longer enters
the band; the brow moves with the raise, so each frame's own brows are masked."""

COVERS: dict[str, tuple[dict[str, tuple[int, ...]], float]] = {
    "eyes": (EYE_RING, EYE_MARGIN_MM), "brows": (BROW_RING, BROW_MARGIN_MM)}
"""What is not skin, by the name a region's ``covers`` uses: landmark rings per side
and the margin kept around them."""

WARP_FIT_MM = 35.0
"""Landmarks within this distance of a region carry the skin's movement to it."""

WARP_LOCAL_MM = 4.0
"""Scale over which the skin's movement between landmarks is interpolated: a
Gaussian-weighted mean of the landmarks' departures from the local affine fit."""


@dataclass(frozen=True, eq=False)
class _Patch:
    """A region rectified from one frame (see :func:`_patch`)."""

    logp: np.ndarray  # (h, w) float32 log intensity on the patch grid
    valid: np.ndarray  # (h, w) bool: in the region and clear
    clear: np.ndarray  # (h, w) bool: exposed, off the eyes, in the frame, a filter radius in
    a: np.ndarray  # (2, 3) patch -> image affine
    sigma_px: float
    rad: int  # filter radius (px) kept from clipped pixels and the frame's edge
    blur: float  # pre-filter (image px) applied before sampling the patch grid
    res: float  # patch pixels per mm


def _unreadable(reason: str, patch_to_image: np.ndarray | None = None) -> CreaseReading:
    a = patch_to_image if patch_to_image is not None else np.zeros((2, 3))
    return CreaseReading(float("nan"), np.zeros((1, 1), np.float32), a, False, reason)


def _log_sample(gray: np.ndarray, xy: np.ndarray, blur: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log intensity, well-exposed share, inside share) of ``gray`` at image points
    ``xy`` (h, w, 2), bilinear; only the points' bounding box is converted."""
    x, y = xy[..., 0], xy[..., 1]
    ih, iw = gray.shape
    c0 = max(int(np.floor(np.nanmin(x))) - 3, 0)
    r0 = max(int(np.floor(np.nanmin(y))) - 3, 0)
    c1 = min(int(np.ceil(np.nanmax(x))) + 4, iw)
    r1 = min(int(np.ceil(np.nanmax(y))) + 4, ih)
    shape = xy.shape[:2]
    if c0 >= c1 or r0 >= r1:
        z = np.zeros(shape, np.float32)
        return z, z, z
    crop = gray[r0:r1, c0:c1].astype(np.float32)
    if blur > 0:
        crop = cv2.GaussianBlur(crop, (0, 0), blur)
    logc = np.log(crop + 1.0)
    ok = ((crop > DARK) & (crop < SATURATED)).astype(np.float32)
    mx = (x - c0).astype(np.float32)
    my = (y - r0).astype(np.float32)
    logp = cv2.remap(logc, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    okp = cv2.remap(ok, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                    borderValue=0.0)
    inside = cv2.remap(np.ones_like(ok), mx, my, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    # A point beyond the source image is outside even where the crop was clamped.
    outside = (x < -0.5) | (y < -0.5) | (x > iw - 0.5) | (y > ih - 0.5)
    inside[outside] = 0.0
    okp[outside] = 0.0
    return logp, okp, inside


def _grid(a: np.ndarray, w: int, h: int) -> np.ndarray:
    """Image position (h, w, 2) of every patch pixel under the patch -> image affine."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.stack([a[0, 0] * gx + a[0, 1] * gy + a[0, 2],
                     a[1, 0] * gx + a[1, 1] * gy + a[1, 2]], axis=-1)


def _to_patch(a: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Image points (N, 2) -> patch pixels under the inverse of ``a``."""
    inv = cv2.invertAffineTransform(np.asarray(a, np.float64))
    return np.asarray(xy, float) @ inv[:, :2].T + inv[:, 2]


def _polygons_mask(polys: Sequence[np.ndarray], shape: tuple[int, int], grow_px: float
                   ) -> np.ndarray:
    """Polygons in patch pixels (eye openings, brows) filled and grown by ``grow_px``,
    drawn on a margin around the patch so that an eye or brow just beyond its edge
    still reaches in."""
    pad = int(math.ceil(max(grow_px, 0.0))) + 1
    h, w = shape
    m = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    for p in polys:
        if np.all(np.isfinite(p)):
            cv2.fillPoly(m, [np.round((p + pad) * 16).astype(np.int32)], 1, cv2.LINE_8,
                         shift=4)
    return grow_mask(m, grow_px)[pad:pad + h, pad:pad + w].astype(bool)


def _covers_mask(polys: dict[str, list[np.ndarray]], shape: tuple[int, int],
                 res: float) -> np.ndarray:
    """Patch pixels that are not skin: ``polys`` maps a name of COVERS to its polygons
    (patch pixels), each grown by its margin."""
    out = np.zeros(shape, bool)
    for name, ps in polys.items():
        out |= _polygons_mask(ps, shape, COVERS[name][1] * res)
    return out


def _cover_polys(region: CreaseRegion, lm: np.ndarray,
                 to_patch: Callable[[np.ndarray], np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The polygons of what ``region`` covers in frame ``lm``, through ``to_patch``."""
    return {name: [to_patch(np.asarray(lm, float)[list(COVERS[name][0][s])]) for s in SIDES]
            for name in region.covers}


def _patch(
    gray: np.ndarray, lm: np.ndarray, region: CreaseRegion, side: str,
    px_per_mm: float | None, resolved_px_per_mm: float | None,
) -> _Patch | CreaseReading:
    """The region of one frame rectified (see the module's steps 1-2), or why not."""
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)
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
    # Downsampling to the patch grid: low-pass first so skin pores don't alias.
    blur = 0.5 * px_per_mm / res if px_per_mm > 2 * res else 0.0
    logp, okp, inside = _log_sample(gray, _grid(a, w, h), blur)

    region_mask = np.zeros((h, w), np.uint8)
    if region.shape == "band":
        cv2.polylines(region_mask, [np.round(hull * 16).astype(np.int32)], False, 1,
                      lineType=cv2.LINE_8, shift=4)
    else:
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
    covered = _covers_mask(_cover_polys(region, lm, lambda xy: _to_patch(a, xy)),
                           (h, w), res)
    clear = grow_mask(((okp > 0.99) & ~covered).astype(np.uint8), -rad).astype(bool)
    valid = clear & in_region
    frac_valid = valid.sum() / n_region
    if frac_valid < MIN_VALID_FRACTION:
        return _unreadable(
            f"{region.name} region {100 * (1 - frac_valid):.0f} % clipped (over- or "
            "under-exposed), over the eye or outside the image", a)
    vals = logp[valid]
    q25, q75 = np.percentile(vals, [25, 75])
    if (q75 - q25) / 1.349 < MIN_TEXTURE:
        return _unreadable(f"{region.name} region is blank (no skin texture)", a)
    return _Patch(logp, valid, clear, a, sigma_px, rad, blur, res)


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
    the cost does not grow with the frame size. What the region covers (COVERS: the
    eye openings, for the forehead also the brows) is left out.
    """
    return _reading(_patch(gray, np.asarray(pts_xy, dtype=float), region, side, px_per_mm,
                           resolved_px_per_mm), region)


def _reading(p: _Patch | CreaseReading, region: CreaseRegion) -> CreaseReading:
    """The line strength of a rectified patch (an unreadable one passes through)."""
    if isinstance(p, CreaseReading):
        return p
    valley, energy = ridge_response(p.logp, p.sigma_px, region.orientation_deg)
    # Log units -> percent of local brightness.
    heat = np.where(p.valid, 100.0 * valley, 0.0).astype(np.float32)
    strength = 100.0 * math.sqrt(float(energy[p.valid].mean()))
    return CreaseReading(strength, heat, p.a, True, "")


# --------------------------------------------------------------------------- rest vs peak


def _skin_points() -> np.ndarray:
    """FaceMesh points that move with the skin: not the lid margins, iris or inner lips."""
    drop = set(EYE_RING["right"]) | set(EYE_RING["left"]) | set(INNER_LIPS)
    return np.array([i for i in range(468) if i not in drop])


_SKIN = _skin_points()


def skin_motion(lm_from: np.ndarray, lm_to: np.ndarray, centre: np.ndarray,
                px_per_mm: float) -> Callable[[np.ndarray], np.ndarray]:
    """Where image points of ``lm_to``'s frame were in ``lm_from``'s frame.

    The skin's movement between the two frames, from the landmarks that move with
    the skin within WARP_FIT_MM of ``centre`` (image px of the ``to`` frame): a
    distance-weighted affine fit (head motion, the region's overall stretch), plus
    a Gaussian-weighted mean (WARP_LOCAL_MM) of the landmarks' departures from it,
    which fades to the affine away from the landmarks.

    Returns a function taking (N, 2) points of the ``to`` frame to the ``from`` frame.
    """
    src = np.asarray(lm_to, float)[_SKIN]
    dst = np.asarray(lm_from, float)[_SKIN]
    ok = np.all(np.isfinite(src), axis=1) & np.all(np.isfinite(dst), axis=1)
    src, dst = src[ok], dst[ok]
    r2 = np.sum((src - centre) ** 2, axis=1) / px_per_mm**2
    near = r2 < WARP_FIT_MM**2
    src, dst, r2 = src[near], dst[near], r2[near]
    if len(src) < 3:
        return lambda p: np.asarray(p, float) + np.nan
    w = np.sqrt(np.exp(-r2 / (2 * (WARP_FIT_MM / 2) ** 2)))
    x = np.hstack([src, np.ones((len(src), 1))])
    b, *_ = np.linalg.lstsq(x * w[:, None], dst * w[:, None], rcond=None)
    resid = dst - x @ b
    s2 = 2 * (WARP_LOCAL_MM * px_per_mm) ** 2

    def move(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, float).reshape(-1, 2)
        g = np.exp(-np.sum((p[:, None, :] - src[None]) ** 2, axis=2) / s2)
        # The 0.3 lets the correction fade to the affine where no landmark is near.
        corr = (g @ resid) / (g.sum(axis=1, keepdims=True) + 0.3)
        return np.hstack([p, np.ones((len(p), 1))]) @ b + corr

    return move


FLOW_WINDOW_MM = 6.0
"""Window of the image registration that refines the landmarks' movement."""

FLOW_SMOOTH_MM = 2.0
"""The registration's flow is smoothed over this scale (several fold widths), so it
can shift and stretch skin but not squeeze rest texture into a fold the step added:
the strengths compared do not depend on where in the region a line lies, only on
which skin is in the region, which is what the registration settles."""


def _residual_flow(peak: np.ndarray, moved: np.ndarray, res: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Dense flow (patch px) with ``peak(x) ~ moved(x + flow(x))``: Farneback on the log
    patches (float, so faint skin texture is not lost to 8-bit steps), smoothed."""
    win = max(5, int(round(FLOW_WINDOW_MM * res)) | 1)
    # Log units x 400: the grey-level range Farneback's parameters are made for.
    flow = cv2.calcOpticalFlowFarneback(np.float32(400.0) * peak, np.float32(400.0) * moved,
                                        None, 0.5, 4, win, 6, 5, 1.1, 0)
    flow = cv2.GaussianBlur(flow, (0, 0), FLOW_SMOOTH_MM * res)
    return flow[..., 0], flow[..., 1]


def _warped(
    gray: np.ndarray, lm_from: np.ndarray, peak: _Patch, lm_to: np.ndarray,
    px_per_mm: float, shape: tuple[int, int], region: CreaseRegion,
) -> tuple[np.ndarray, np.ndarray, dict[str, list[np.ndarray]]]:
    """Frame ``gray`` moved onto ``peak``'s patch by the skin's movement: (log patch,
    validity, what ``region`` leaves out of that frame in patch pixels)."""
    h, w = shape
    centre = peak.a @ np.array([w / 2, h / 2, 1.0])
    move = skin_motion(lm_from, lm_to, centre, px_per_mm)
    # The movement is smooth: evaluated on a coarse grid (node k at patch pixel
    # k * step), then interpolated.
    step = 4
    cw, ch = (w - 1) // step + 2, (h - 1) // step + 2
    gx, gy = np.meshgrid(np.arange(cw) * step, np.arange(ch) * step)
    pts = np.stack([gx, gy, np.ones_like(gx)], axis=-1).reshape(-1, 3) @ peak.a.T
    src = move(pts).reshape(ch, cw, 2).astype(np.float32)
    mx, my = np.meshgrid(np.arange(w, dtype=np.float32) / step,
                         np.arange(h, dtype=np.float32) / step)
    xs = cv2.remap(src[..., 0], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ys = cv2.remap(src[..., 1], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    logp, okp, _ = _log_sample(gray, np.stack([xs, ys], axis=-1), peak.blur)
    # The landmarks follow the skin only roughly between them (the mesh's forehead
    # keeps its shape); the rest of the way is found in the images themselves.
    fx, fy = _residual_flow(peak.logp, logp, peak.res)
    mx, my = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = mx + fx, my + fy
    xs = cv2.remap(xs, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ys = cv2.remap(ys, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    logp, okp, _ = _log_sample(gray, np.stack([xs, ys], axis=-1), peak.blur)
    valid = grow_mask((okp > 0.99).astype(np.uint8), -peak.rad).astype(bool)
    # What that frame's region leaves out (eye openings, brows), carried to the peak
    # frame (inverting the movement by two fixed-point steps: it is close to a shift).
    def carried(y: np.ndarray) -> np.ndarray:
        x = y.copy()
        for _ in range(2):
            x = x + (y - move(x))
        return _to_patch(peak.a, x)

    return logp, valid, _cover_polys(region, lm_from, carried)


def _fill(delta: np.ndarray, valid: np.ndarray, sigma_px: float) -> np.ndarray:
    """``delta`` with its invalid pixels replaced by a smooth extension of the valid
    ones, so the filters see no step at the edge of the eye or a clipped area."""
    m = valid.astype(np.float32)
    k = 3.0 * sigma_px
    num = cv2.GaussianBlur(delta * m, (0, 0), k)
    den = cv2.GaussianBlur(m, (0, 0), k)
    smooth = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0).astype(np.float32)
    return np.where(valid, delta, smooth).astype(np.float32)


REST_DOUBT = 0.25
"""Share of the rest's line energy that the comparison may leave uncancelled: the
skin's movement is found only so well (landmarks, then registration), and lines etched
at rest or hair that end up a fraction of a fold width off, or squeezed a little
differently, change the energy. The value's interval is widened by it (in energy), so
a region full of static edges gives an `uncertain` call rather than a wrong one (the
fold-free consults of docs/figures/lines.md)."""

MAX_REST_COMPARED, MAX_PEAK_COMPARED = 4, 3
"""Rest and peak frames compared (evenly spread over the rest frames and the peak
window): each pair costs an image registration (a few ms to tens of ms), and the rest
strength is an RMS and the peak a median, both stable after a few frames."""


def _spread(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spread (first and last kept)."""
    if len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


CLUTTER_PIXEL_PCT = 40.0
"""A pixel whose line strength at rest is above this is not skin but lashes, eyeliner,
a strand of hair or a glasses rim (near black on skin): skin's own lines, etched ones
included, rest below 28 on every face of docs/figures/lines.md; mascara'd lashes at
the real clip's outer eye corner read 48-110, a fringe of hair up to 60."""


LASH_REACH_MM = 4.0
"""Static dark structures within this distance of the eye openings' mask (itself grown
by EYE_MARGIN_MM) are lashes or eyeliner: they grow from the lid margin and reach past
the outer eye corner into the crow's feet. Not near the brows: a fringe of hair ending
just above a brow (the generator's face) would pass for brow hairs, and the forehead
under it, read as skin, gave a negative index (docs/figures/accuracy.md)."""


def _strong(logp: np.ndarray, clear: np.ndarray, peak: _Patch, region: CreaseRegion
            ) -> np.ndarray:
    """Patch pixels whose line strength is above CLUTTER_PIXEL_PCT."""
    _, energy = ridge_response(_fill(logp, clear, peak.sigma_px), peak.sigma_px,
                               region.orientation_deg)
    return (energy > (CLUTTER_PIXEL_PCT / 100.0) ** 2).astype(np.uint8)


def _lashes(moved: Sequence[np.ndarray], clear: np.ndarray, eyes: np.ndarray,
            peak: _Patch, region: CreaseRegion) -> np.ndarray:
    """Patch pixels near lashes or eyeliner: static dark structures (CLUTTER_PIXEL_PCT)
    of any rest frame moved onto the peak with the skin, within LASH_REACH_MM of the eye
    openings' mask (``eyes``), grown by the filter's reach.

    Hair or a glasses rim elsewhere in the region is not left out: the skin slides
    under it, folds under it cannot be seen, and the rest strength says the region is
    covered (CLUTTER_PCT)."""
    out = np.zeros(clear.shape, np.uint8)
    for logp in moved:
        out |= _strong(logp, clear, peak, region)
    near = grow_mask(eyes.astype(np.uint8), LASH_REACH_MM * peak.res)
    return grow_mask(out & near, 2 * peak.rad).astype(bool)


def _compare(
    peak: _Patch, lm_peak: np.ndarray, px_per_mm: float,
    rests: Sequence[tuple[np.ndarray, np.ndarray]], region: CreaseRegion,
) -> tuple[float, list[float]]:
    """Line strength (percent) of the peak patch and of each rest frame moved onto it,
    all over the same pixels: the region's skin, off what it covers in every frame
    compared and off the lashes beside it (:func:`_lashes`). NaN where too little of
    the region is left."""
    h, w = peak.logp.shape
    moved, clear = [], peak.clear.copy()
    covers: dict[str, list[np.ndarray]] = {name: [] for name in region.covers}
    for gray, lm in rests:
        logp, ok, cov = _warped(gray, lm, peak, lm_peak, px_per_mm, (h, w), region)
        moved.append(logp)
        clear &= ok
        for name, ps in cov.items():
            covers[name] += ps
    clear &= ~grow_mask(_covers_mask(covers, (h, w), peak.res).astype(np.uint8),
                        peak.rad).astype(bool)
    if covers.get("eyes"):
        eyes = _covers_mask({"eyes": covers["eyes"]}, (h, w), peak.res)
        clear &= ~_lashes(moved, clear, eyes, peak, region)
    valid = peak.valid & clear
    if not valid.any() or valid.sum() < MIN_VALID_FRACTION * peak.valid.sum():
        return float("nan"), []

    def strength(logp: np.ndarray) -> float:
        # Pixels hidden in any frame compared (an eye, a clipped highlight) are
        # filled smoothly in all of them, so the filters see the same edges.
        _, energy = ridge_response(_fill(logp, clear, peak.sigma_px), peak.sigma_px,
                                   region.orientation_deg)
        return 100.0 * math.sqrt(float(energy[valid].mean()))

    return strength(peak.logp), [strength(m) for m in moved]


def step_lines(
    rest: Sequence[LineFrame], peak: Sequence[LineFrame], region: CreaseRegion, side: str
) -> CreaseChange:
    """A step's dynamic-line value for one region and side from its rest and peak frames.

    Each readable peak frame (up to MAX_PEAK_COMPARED) is compared with the rest
    frames (up to MAX_REST_COMPARED), each moved onto it by the skin's movement
    (:func:`skin_motion`): the strengths (:func:`ridge_response`) are taken over the
    same skin, off what the region covers in every frame, so a line already there
    at rest that only moves (or is squeezed with the skin) does not change the value,
    and one that deepens does. Per peak frame the value is ``added_contrast(peak,
    RMS of the rests)``; the step's value is that of the median peak frame, its
    interval from the spread of the frames (:func:`crease_interval`). Negative: the
    lines at rest softened.
    """
    def prep(f: LineFrame) -> _Patch | CreaseReading:
        return _patch(f.gray, np.asarray(f.pts, float), region, side, None,
                      f.resolved_px_per_mm)

    rest_p = [prep(f) for f in rest]
    peak_p = [prep(f) for f in peak]
    base = crease_change([_reading(p, region) for p in rest_p],
                         [_reading(p, region) for p in peak_p])
    if not base.readable:
        return base
    rest_ok = [(f.gray if f.gray.ndim == 2 else cv2.cvtColor(f.gray, cv2.COLOR_BGR2GRAY),
                np.asarray(f.pts, float))
               for f, p in zip(rest, rest_p, strict=True) if isinstance(p, _Patch)]
    rest_ok = _spread(rest_ok, MAX_REST_COMPARED)
    got = []
    for f, p in _spread([(f, p) for f, p in zip(peak, peak_p, strict=True)
                         if isinstance(p, _Patch)], MAX_PEAK_COMPARED):
        if isinstance(p, _Patch):
            lm = np.asarray(f.pts, float)
            pk, rs = _compare(p, lm, float(iris_diameter_px(lm) / IRIS_DIAMETER_MM), rest_ok,
                              region)
            if np.isfinite(pk) and rs:
                got.append((added_contrast(pk, float(np.sqrt(np.mean(np.square(rs))))),
                            pk, rs))
    if not got:
        return replace(base, value=float("nan"), readable=False,
                       reason=f"{region.name} region not readable once the rest frames "
                       "are moved onto the peak (over the eye or outside the image)")
    order = np.argsort([g[0] for g in got])
    value, pk_v, rs = got[int(order[len(order) // 2])]
    rest_v = float(np.sqrt(np.mean(np.square(rs))))
    lo, hi, rest_se, peak_se = crease_interval(np.array(rs), np.array([g[1] for g in got]),
                                               rest_v, pk_v)
    doubt = REST_DOUBT * rest_v * rest_v
    lo = added_contrast_of(math.copysign(lo * lo, lo) - doubt)
    hi = added_contrast_of(math.copysign(hi * hi, hi) + doubt)
    return replace(base, value=value, rest=rest_v, peak=pk_v, lo=lo, hi=hi,
                   rest_se=rest_se, peak_se=peak_se)


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
    return added_contrast_of(peak * peak - rest * rest)


def added_contrast_of(energy: float) -> float:
    """``sign * sqrt(|energy|)``: an energy difference back in percent contrast."""
    return math.copysign(math.sqrt(abs(energy)), energy)


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


def line_flags(c: CreaseChange) -> tuple[str, ...]:
    """Why a step's line value is not a finding (empty when it is)."""
    if not c.readable:
        return (f"region unreadable: {c.reason}",)
    if c.rest > CLUTTER_PCT:
        return (
            # Each side's strength at rest is in metrics.csv (rest_mm); leaving it out
            # here lets a reason both sides share be said once.
            f"region unreadable: covered by strong edges at rest (line strength over "
            f"{CLUTTER_PCT:g}: hair, glasses), which do not move with the skin; see the "
            "pictures",
        )
    if c.hi < 0:
        return ("lines present at rest softened at the peak (the step smoothed them): "
                "a negative index, no fold added",)
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
