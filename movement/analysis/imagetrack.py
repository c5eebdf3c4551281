"""Stage 5 — image-based tracking of one step against its own rest keyframe.

Why: the landmark model is a poor displacement sensor (it moves "rigid" points
during expressions and under-reads skin movement), while the skin texture of
brows, forehead, cheeks and mouth corners is visible and trackable. Each frame
of a step window is matched *directly* to the step's rest keyframe with
pyramidal Lucas-Kanade (seeded by the previous frame's result), so errors do
not accumulate along the step the way chained frame-to-frame tracking does;
each step re-anchors at its own rest. A forward-backward check drops points
the tracker lost. Head motion is a similarity transform fitted with RANSAC on
anchor points of regions that stay still in this step, so the few anchor
points that move anyway do not eat the signal.

Kept as one module: the keyframe crop, the sub-point rings, the Lucas-Kanade
passes, the forward-backward check and the head-motion fit share one set of
per-step constants and the :class:`_Tracker`'s state; split apart, each half
would need the other's internals.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from movement.analysis.face import IRIS_DIAMETER_MM, iris_diameter_px
from movement.analysis.landmarks import FrameCache, LandmarkTrack
from movement.analysis.stabilise import Scale, iris_centres

LK_WIN_MM = 3.5
"""Lucas-Kanade window side in mm. Skin moves non-uniformly (a frown bunches the
glabella, a smile drags the corner): a window averages the movement over its
area, so a small window reads the point itself. Measured on generated steps:
windows of 3-5 mm err 0.05-0.3 mm, 9 mm windows 0.3-1.9 mm."""
LK_LEVELS = 3
LK_WIN_MIN_PX = 7
FB_MAX_PX = 0.5
"""Forward-backward error (crop pixels, ~0.2 mm) above which a sub-point is dropped."""
RING_MM = 1.2
"""Each landmark is followed by itself and a ring of sub-points this far around
it; the median of their displacements is the landmark's. A single point on a
mouth corner or a brow hair often fails the forward-backward check when the
skin folds; a few neighbours almost never all fail, and the median ignores the
odd one that slid."""
RING = np.array(
    [[0.0, 0.0]]
    + [[np.cos(a), np.sin(a)] for a in np.arange(8) * np.pi / 4]
    + [[2 * np.cos(a), 2 * np.sin(a)] for a in (np.arange(8) + 0.5) * np.pi / 4]
)
"""Centre, an inner ring at RING_MM and an outer ring at twice that, offset by
22.5 degrees so the two rings sample different texture."""
ECC_HALF_MM = 4.0
"""Half side (mm) of the patch an affine (ECC) match refines a point with, for
groups whose protocol entry sets ``affine = true``. Lucas-Kanade windows are
translations: on near-textureless skin beside a single brow line (the
generator's inner brow) they under-read a frown by about half, as the skin
bunches across the window and along the line they see nothing. An affine patch
holding the line's end and the brow's edge follows the deformation. Measured on
a generated one-sided frown (truth 2.86 mm at the tracked points): LK 2.18 mm;
affine patches of 6, 8 and 11 mm 2.80, 2.76 and 2.52 mm. Over the accuracy
benchmark 8 mm called the frown's side better than 6 mm (30 vs 29 of 34 decisive
pairs, 12 vs 11 of 12 balanced ones). Where skin slides rather than bunches it is
not better: on a brow raise it read 3.86 mm where LK read 4.02 (truth 4.03)."""
ECC_FINE_MM = 2.5
"""Half side (mm) of the second, finer match at the centre of each affine patch.
The skin's movement is not affine over 8 mm: a frown's pull peaks at the
corrugator, so the patch's best affine fit places its centre short of the point
(on a generated 960x540 frown one inner-brow point read 3.3 of 4.7 mm). The
centre's own 5 mm, warped by the big patch's affine and then shifted to fit, reads
the point itself (4.3 mm there); the big patch keeps it from a wrong place."""
ECC_FINE_JUMP_MM = 1.5
"""The finer match may move the point this far from the big patch's reading."""
RESTART_MODEL_MM = 6.0
"""A patch match started from the previous frame's position must end this close
to the landmark model's point. The model sees about a third of a frown's medial
pull, so at a 4 mm frown its point lies about 3 mm from the skin's: with 3 mm here
the right restarts were refused on the bundled sample and its frown trace kept
jumping (by up to 2.2 mm between frames of the hold; 0.13 mm with 6 mm). A restart
left unchecked walked 8 mm along a brow under lighting drift."""
NEIGHBOUR_MM = 8.0
"""Affine-matched points this close (at the keyframe) are each other's neighbours."""
CC_TIE = 0.005
"""Matches whose correlations lie within this of the best are equally good: on
smooth skin the patch's correlation is flat, and which of them wins is chance.
Among them the one nearest the neighbours' movement is taken, and a third match
is started there. Measured on a generated 4.0 mm frown under noise and JPEG
(`ext-jpeg-1`): point 296's matches from Lucas-Kanade's reading and from the
previous frame ended up to 2.3 mm apart with correlations within 0.006, and the
point read 2.1 mm of 4.0; with the neighbours' start and choice 4.3 mm (its side
2.58 or 3.39 mm, by the run, -> 3.92 mm)."""
ECC_MIN_CC = 0.85
"""Correlation below which the affine match is not trusted (the LK value stays)."""
ECC_MAX_JUMP_MM = 3.0
"""An affine match this far from where it started found another place, not the point."""
GAIN_MIN = 0.003
"""Exposure changes smaller than this (relative) are left alone. Small is not
harmless: a 1.5 % change left alone read a mouth corner 6 % short (1.44 of
1.53 mm); at 0.3 % the scaled image differs from the frame by rounding only."""
GAIN_AGREE = 0.35
"""The windows' median deviation from the gain, as a share of it, below which they
agree on an exposure change. Measured: a real drift 0.02-0.13 (light-drift
consult), windows disturbed by head motion 0.9-1.1 (roll 5 deg, shift 20 px)."""
GAIN_WIN_MM = 10.0
"""Side (mm) of the windows the exposure is read on. A 3.5 mm window (the LK
window) changes its mean by more than a 1 % exposure change when it lands a
pixel off on shaded skin. Measured per frame on a consult whose exposure drifts
0.9 % a second (the benchmark's light-2), median error of the log gain per step
window: LK-sized windows at the guessed anchors 0.003-0.016, 10 mm windows
0.002-0.013, placed by the head's motion (GAIN_HEAD_PX) 0.001-0.003."""
GAIN_HEAD_PX = 2.0
"""RANSAC threshold (crop px) of the head motion that places the exposure windows."""
GAIN_LEVELS = (40.0, 250.0)
"""Windows darker on average than the first level, or holding a pixel at the
second, do not read the exposure: a clipped highlight cannot brighten, and in the
dark (hair, background) the camera's black level and noise dominate (windows at
mean level 225 on the nose read a third of a 1.5 % change; one at 13 read 6 %)."""
OUTLIER_PX = 2.0
STRAIN_RIDGE = 0.003
"""Weight of the prior that the skin's local strain is zero in the sub-point fit
(relative to the sub-points' texture); small, so a real stretch is kept."""
AFFINE_MIN_SUB = 5
"""Sub-points a landmark needs kept to fit a local affine motion (else their mean)."""
OUTLINE_MIN_COS = 0.5
"""Points on the face's outline (the jaw contour against the background) are read
as the outline's widening at their height: their movement across the outline,
divided by the cosine between the outline's normal and the lateral axis (the
sideways shift of an outline that moves by d across itself is d / cos). Along the
outline their windows see an edge and smooth skin, nothing to follow: under a 2
degree head roll jaw points slid about 1 mm along it and back, and at a clench's peak one
read (-0.2, -0.8) mm where the skin moved (+0.5, 0). Where the outline runs within
60 degrees of the lateral axis (the chin's underside) the widening is undefined and
the point is read as tracked."""
RANSAC_MM = 0.4
"""Anchor residual (mm) that counts as head motion; beyond it a point is moving."""
FIT_NOISE_MM = 0.1
"""Floor of the anchors' residual (mm) when the head fit's uncertainty is estimated
(:func:`head_fit_error`): a fit through a few anchors that happen to agree exactly
does not know the head's motion better than the tracker reads a point."""
FIT_MAX_ERROR_MM = 0.15
"""Largest standard error (mm) of the head fit at the measured points for a frame to
be measured (:func:`head_fit_error`). Measured on the real clip's crying frown (cues
1-4 s): at rest 13-36 anchors across the face agree and the error is 0.03-0.14 mm;
as the hand comes to the mouth 4-11 remain, bunched on the nose (spread 1-11 px
across), the fit's scale jumped between 0.94 and 1.09 from frame to frame and the
frown with it (0.7 <-> 3.7 mm); their error is 0.16-0.42 mm. Such a frame's motion
is not removed but guessed, and which anchors survive is decided by codec noise."""
ANCHOR_WIN_MM = 8.0
"""Lucas-Kanade window side (mm) for the anchors while a step is measured. The
anchors are skin that stays still in the step, so a window there has no
movement to average away (LK_WIN_MM is small for skin that deforms), and a
larger one sees enough texture on smooth skin. Measured on the benchmark's
second face (smooth, upscaled skin) through a sad mouth: with 3.5 mm windows
10-15 of its 28 anchors passed the forward-backward check and 4-8 agreed on
the head's motion (median residual 0.4-0.6 mm), and the head fit jumped the
mouth corners by 1-2 mm in single frames; with 8 mm windows 20-25 passed,
10-22 agreed (0.15-0.4 mm). Not while finding steps (StreamTracker): there it
moved the keyframes and the second face's pouts were then read at other rests."""


@dataclass
class WindowTrack:
    """Points of one step window in the keyframe's face frame, in mm.

    Attributes
    ----------
    frames : (n,) frame indices
    points : (P,) landmark numbers of the image-tracked points
    image_mm : (n, P, 2) image-tracked positions; NaN where lost
    landmarks_mm : (n, 478, 2) the landmark model's positions after the same
        head-motion removal (the eyelid sensor and the cross-check)
    inliers : (n,) anchors agreeing with the head-motion fit (0 = fit failed)
    fit_error_mm : (n,) the head fit's standard error at the measured points, the
        largest over them (:func:`head_fit_error`; NaN where the fit failed)
    keyframe : frame index of the rest keyframe
    mm_per_px : scale at the keyframe
    """

    frames: np.ndarray
    points: np.ndarray
    image_mm: np.ndarray
    landmarks_mm: np.ndarray
    inliers: np.ndarray
    keyframe: int
    mm_per_px: float
    fit_error_mm: np.ndarray | None = None

    def col(self, idx: tuple[int, ...]) -> np.ndarray:
        pos = {int(p): i for i, p in enumerate(self.points)}
        return np.array([pos[i] for i in idx])

    def drop_unfit(self, max_error_mm: float) -> None:
        """Leave unmeasured (NaN, no inliers) the frames whose head fit is more
        uncertain than ``max_error_mm`` at the measured points (FIT_MAX_ERROR_MM).

        Applied after the pose stage has had its say (``pose.correct_window`` may
        lower a frame's error): the tracker's similarity cannot describe a head
        turning out of the image plane, so its residual alone would throw away most
        frames of a turn that the pose model fits to a tenth of a millimetre.
        """
        if self.fit_error_mm is None:
            return
        bad = ~(self.fit_error_mm <= max_error_mm)
        self.image_mm[bad] = np.nan
        if self.landmarks_mm.shape[1]:
            self.landmarks_mm[bad] = np.nan
        self.inliers[bad] = 0


_LK = dict(
    maxLevel=LK_LEVELS,
    criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
)


_ECC_STOP = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-3)


def _fine_match(
    tmpl: np.ndarray, centre: np.ndarray, sub: np.ndarray, m: np.ndarray, half: int
) -> np.ndarray | None:
    """The template's centre in ``sub`` (float32) from its own ``half``-pixel neighbourhood.

    ``m`` is the whole template's affine match; the small patch keeps its linear
    part and only shifts (two unknowns are what a few mm of skin can fix).
    """
    cx, cy = (int(round(v)) for v in centre)
    n = tmpl.shape[0]
    if min(cx, cy) < half or max(cx, cy) + half >= n:
        return None
    small = np.ascontiguousarray(tmpl[cy - half : cy + half + 1, cx - half : cx + half + 1])
    off = np.array([cx - half, cy - half], np.float32)
    m2 = m.copy()
    m2[:, 2] = m[:, :2] @ off + m[:, 2]
    try:
        cc, m2 = cv2.findTransformECC(small, sub, m2, cv2.MOTION_TRANSLATION, _ECC_STOP, None, 1)
    except cv2.error:
        return None
    if cc < ECC_MIN_CC:
        return None
    return m2[:, :2] @ (centre - off) + m2[:, 2]


def _lk(
    img0: np.ndarray,
    img1: np.ndarray,
    p0: np.ndarray,
    guess: np.ndarray,
    win: int,
    across: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lucas-Kanade from ``img0`` to ``img1``, forward-backward checked.

    ``across`` (N, 2): for sub-points on the face's outline, the outline's unit
    normal (zeros elsewhere); their check is on the error across it only.
    """
    opts = dict(_LK, winSize=(win, win))
    p1, st, _ = cv2.calcOpticalFlowPyrLK(
        img0, img1, p0, guess.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **opts
    )
    back, st2, _ = cv2.calcOpticalFlowPyrLK(img1, img0, p1, p1.copy(), **opts)
    fb = (back - p0).reshape(-1, 2)
    if across is not None:
        # Only across an outline: along it the window sees a straight edge and
        # smooth skin, and the forward-backward error there measures nothing.
        fb = np.where(np.any(across != 0, axis=1, keepdims=True),
                      np.sum(fb * across, axis=1, keepdims=True) * across, fb)
    ok = (st.ravel() == 1) & (st2.ravel() == 1) & (np.linalg.norm(fb, axis=1) < FB_MAX_PX)
    return p1.reshape(-1, 2), ok


def _levels(img: np.ndarray, pts: np.ndarray, win: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and brightest grey level of the LK window around each point (nearest pixel).

    Only the few windows are read (this runs on every tracked frame), with
    OpenCV's default border (reflect-101) where a window crosses the edge.
    """
    h, w = img.shape
    xs = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
    off = np.arange(win) - win // 2
    cols = _reflect101(xs[:, None] + off, w)
    rows = _reflect101(ys[:, None] + off, h)
    px = img[rows[:, :, None], cols[:, None, :]]
    return px.mean(axis=(1, 2), dtype=np.float32), px.max(axis=(1, 2))


def _reflect101(i: np.ndarray, n: int) -> np.ndarray:
    i = np.abs(i)
    return np.where(i >= n, 2 * n - 2 - i, i)


def _structure_tensors(img: np.ndarray, pts: np.ndarray, win: int) -> np.ndarray:
    """The 2x2 structure tensor (gradient covariance) of the LK window at each point."""
    f = img.astype(np.float32)
    ix = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3) / 8
    iy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3) / 8
    prods = [cv2.boxFilter(a, -1, (win, win)) for a in (ix * ix, ix * iy, iy * iy)]
    h, w = img.shape
    xs = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
    xx, xy, yy = (p[ys, xs] for p in prods)
    return np.stack([np.stack([xx, xy], -1), np.stack([xy, yy], -1)], -2)


def nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=1)``, NaN (and no warning) where a row has no value.

    NumPy's own takes a masked-array path for short rows that cost a tenth of a
    step's tracking here (it runs for every frame); sorting puts NaNs last, so the
    middle of each row's finite values is read directly. Warning-free too, which
    matters because ``warnings.catch_warnings`` is not thread-safe and the trackers
    run in threads.
    """
    s = np.sort(a, axis=1)
    n = np.isfinite(a).sum(axis=1, keepdims=True)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0), axis=1)
    hi = np.take_along_axis(s, np.maximum(n // 2, 0), axis=1)
    mid = (lo + hi) / 2
    return np.where(n > 0, mid, np.nan).squeeze(1)


def _fuse(
    disp: np.ndarray,
    tensors: np.ndarray,
    ok: np.ndarray,
    offsets: np.ndarray | None = None,
    fit: np.ndarray | None = None,
) -> np.ndarray:
    """One displacement per landmark from its sub-points, weighted by their texture.

    A sub-point on a single edge (a brow margin, a lip line) only knows its
    movement across that edge; along the edge LK barely moves from its start
    (the aperture problem), which under-reads a frown's medial pull. Weighting
    each sub-point's displacement by its structure tensor G (information
    weighting) takes each direction from the sub-points that see texture in it.
    Outliers are removed first: sub-points more than 0.8 px (crop) from the
    median across their edge.

    With ``offsets``, the landmarks in ``fit`` (all if None) have their
    sub-points fitted with a local affine motion ``d(o) = d0 + J o`` (the same
    information weighting) and ``d0``, the motion at the landmark itself, is
    returned. An average reads the motion at the sub-points' centroid: on a
    mouth corner's half ring that lies on the skin side, where the pull has
    already fallen off. Measured on a generated smile: a corner whose truth is
    6.85 mm read 6.50 as an average, 6.66 fitted. A full ring's centroid is the
    landmark, so there the fit would only add noise.

    Parameters
    ----------
    disp : (P, R, 2) sub-point displacements (NaN where lost)
    tensors : (P, R, 2, 2)
    ok : (P, R) sub-points that passed the forward-backward check
    offsets : (R, 2) sub-point offsets from the landmark, same units as ``disp``
    fit : (P,) landmarks to fit (the others get the weighted mean)
    """
    # A point whose sub-points were all lost has no median (NaN, as intended).
    med = nanmedian_rows(disp)
    dev = np.linalg.norm(disp - med[:, None, :], axis=-1)
    spread = nanmedian_rows(np.where(ok, dev, np.nan))
    keep = ok & (dev < np.maximum(OUTLIER_PX, 3 * spread)[:, None])
    g = np.where(keep[..., None, None], tensors, 0.0)
    d = np.where(keep[..., None], disp, 0.0)
    a = g.sum(axis=1)
    b = np.einsum("prij,prj->pi", g, d)
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] ** 2
    tr = a[:, 0, 0] + a[:, 1, 1]
    usable = det > 1e-6 * np.maximum(tr, 1e-9) ** 2
    out = med.copy()
    if usable.any():
        out[usable] = np.linalg.solve(a[usable], b[usable][..., None])[..., 0]
    if offsets is None:
        return out
    do = usable & (keep.sum(axis=1) >= AFFINE_MIN_SUB)
    if fit is not None:
        do &= fit
    if not do.any():
        return out
    # Rows of the design: d = M x with x = (d0x, d0y, Jxx, Jxy, Jyx, Jyy).
    m = np.zeros((len(offsets), 2, 6))
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    m[:, 0, 2:4] = m[:, 1, 4:6] = offsets
    big_a = np.einsum("rki,prkl,rlj->pij", m, g[do], m)
    big_b = np.einsum("rki,prkl,prl->pi", m, g[do], d[do])
    # The strain is a nuisance: a weak prior (ridge) keeps it finite where the
    # kept sub-points lie on one line, without pulling a real strain to zero.
    r2 = float(np.mean(np.sum(offsets**2, axis=1)))
    big_a[:, 2:, 2:] += (STRAIN_RIDGE * tr[do] * max(r2, 1e-9))[:, None, None] * np.eye(4)
    out[do] = np.linalg.solve(big_a, big_b[..., None])[:, :2, 0]
    return out


@dataclass
class _Tracker:
    """Lucas-Kanade of one point set against one keyframe (no head-motion removal)."""

    cache: FrameCache
    keyframe: int
    idx: np.ndarray
    seed: np.ndarray  # (P, 2) keyframe positions, image px
    seed_sub: np.ndarray  # (P, R, 2)
    use: np.ndarray  # (P, R) sub-points in use
    need: np.ndarray  # (P,) sub-points that must pass for a point to count
    key_crop: np.ndarray
    key_img: np.ndarray
    tensors: np.ndarray
    patches: dict[int, tuple[np.ndarray, np.ndarray]]  # point row -> (template, centre in it)
    max_jump: float  # crop px
    still: np.ndarray  # (used sub-points,) bool: an anchor's, for the exposure
    key_levels: tuple[np.ndarray, np.ndarray]  # (still sub-points,) keyframe means, maxima
    gain_win: int  # crop px, see GAIN_WIN_MM
    fit: np.ndarray  # (P,) bool: fused with a local affine fit (see _fuse)
    fine: int  # half side (crop px) of the finer match in an affine patch
    fine_jump: float  # crop px
    model_tol: float  # crop px, see RESTART_MODEL_MM
    neighbours: dict[int, list[int]]  # patch row -> the patch rows near it (NEIGHBOUR_MM)
    # (P, 2) image px from the landmark model's keyframe points to the seeds: the
    # model's later positions are guesses for the seeds' points only after it.
    model_shift: np.ndarray | None = None
    # The Lucas-Kanade calls per frame, over the used sub-points: (which ones, their
    # keyframe crop positions, window in crop px, outline normals or None; see _lk).
    # One call with the LK_WIN_MM window, or, when the anchors (not also measured)
    # get ANCHOR_WIN_MM windows, one for the others and one for them.
    passes: tuple[tuple[np.ndarray | slice, np.ndarray, int, np.ndarray | None], ...] = ()

    @property
    def offsets(self) -> np.ndarray:
        """(R, 2) sub-point offsets from their landmark, image px (the same for all)."""
        return self.seed_sub[0] - self.seed[0]

    @classmethod
    def build(
        cls,
        cache: FrameCache,
        key_xy: np.ndarray,
        keyframe: int,
        points: tuple[int, ...],
        anchors: tuple[int, ...],
        ring: bool | int,
        mm_per_px: float,
        outward: dict[int, np.ndarray] | None = None,
        affine: tuple[int, ...] = (),
        fit: tuple[int, ...] = (),
        model_key: np.ndarray | None = None,
        outline: dict[int, np.ndarray] | None = None,
        anchor_mm: float = 0.0,
    ) -> _Tracker:
        """``key_xy`` seeds the points; ``model_key`` is the landmark model's own
        keyframe (``key_xy`` when None), whose later frames guide the tracking."""
        all_pts = tuple(dict.fromkeys(points + anchors))
        idx = np.array(all_pts)
        seed = key_xy[idx]
        shift = None if model_key is None else np.nan_to_num(seed - model_key[idx])
        seed_sub = seed[:, None, :] + RING[None] * (RING_MM / mm_per_px)
        use = np.zeros((len(idx), RING.shape[0]), bool)
        use[:, 0] = True
        if ring:
            # ring=True: all sub-points; an int: the first n (centre + inner ring).
            n_sub = RING.shape[0] if ring is True else int(ring)
            use[[all_pts.index(p) for p in points], :n_sub] = True
        for p, direction in (outward or {}).items():
            # Only the half-ring on the skin side: sub-points over the eyeball
            # would follow the iris, which does not move when the lid does.
            use[all_pts.index(p)] &= RING @ direction >= -1e-9
        key_crop = cache.to_crop(seed_sub[use], keyframe).reshape(-1, 1, 2)
        key_img = cache.image(keyframe)
        crop_mm_per_px = mm_per_px / cache.scale
        # Window in crop pixels, odd, for LK_WIN_MM of skin.
        half = round(LK_WIN_MM / crop_mm_per_px / 2)
        win = int(np.clip(2 * half + 1, LK_WIN_MIN_PX, 21))
        tensors = np.zeros(use.shape + (2, 2))
        tensors[use] = _structure_tensors(key_img, key_crop.reshape(-1, 2), win)
        # Affine patches for the points asked for whose whole ring is in use (not
        # a lid margin, whose patch would hold the eye).
        patches = {}
        fine = max(int(round(ECC_FINE_MM / crop_mm_per_px)), 3)
        if ring:
            hp = max(int(round(ECC_HALF_MM / crop_mm_per_px)), 4)
            for p in dict.fromkeys(affine):
                i = all_pts.index(p)
                if not use[i].all():
                    continue
                c = cache.to_crop(seed[i : i + 1], keyframe)[0].astype(np.float64)
                x0, y0 = int(round(c[0])) - hp, int(round(c[1])) - hp
                if x0 < 0 or y0 < 0 or x0 + 2 * hp + 1 > key_img.shape[1] or (
                    y0 + 2 * hp + 1 > key_img.shape[0]
                ):
                    continue
                tmpl = key_img[y0 : y0 + 2 * hp + 1, x0 : x0 + 2 * hp + 1].astype(np.float32)
                if tmpl.std() < 1.0:
                    continue
                patches[i] = (tmpl, c - (x0, y0))
        max_jump = ECC_MAX_JUMP_MM / crop_mm_per_px
        neighbours = {
            i: [j for j in patches if j != i
                and np.linalg.norm(seed[j] - seed[i]) * mm_per_px <= NEIGHBOUR_MM]
            for i in patches
        }
        # The exposure is read on the anchors, skin that stays still in this step
        # (lips and lids change their brightness as they move).
        rows = np.nonzero(use)[0]
        still = np.isin(rows, [all_pts.index(a) for a in anchors if a not in points])
        if not still.any():
            still = np.ones(len(rows), bool)
        # ... on its flattest windows: an edge's mean changes when the window
        # shifts a pixel or the face turns or zooms a little, a flat one's does not.
        texture = np.trace(tensors[use], axis1=-2, axis2=-1)
        still &= texture <= np.median(texture[still])
        gain_win = int(2 * round(GAIN_WIN_MM / crop_mm_per_px / 2) + 1)
        across = None
        if outline:
            normals = np.zeros((len(idx), 2))
            for p, tangent in outline.items():
                if p in all_pts:
                    normals[all_pts.index(p)] = (-tangent[1], tangent[0])
            across = np.broadcast_to(normals[:, None, :], use.shape + (2,))[use]
        passes: tuple[tuple[np.ndarray | slice, np.ndarray, int, np.ndarray | None], ...]
        passes = ((slice(None), key_crop, win, across),)
        anchor_sub = np.isin(rows, [all_pts.index(a) for a in anchors if a not in points])
        if anchor_mm > 0 and anchor_sub.any():
            ah = round(anchor_mm / crop_mm_per_px / 2)
            anchor_win = int(np.clip(2 * ah + 1, LK_WIN_MIN_PX, 31))
            rest = ~anchor_sub
            passes = tuple(
                (sel, key_crop[sel], w, None if acr is None else acr[sel])
                for sel, w, acr in ((rest, win, across), (anchor_sub, anchor_win, None))
                if sel.any()
            )
        return cls(cache, keyframe, idx, seed, seed_sub, use, np.minimum(use.sum(1), 3),
                   key_crop, key_img, tensors, patches, max_jump, still,
                   _levels(key_img, key_crop.reshape(-1, 2)[still], gain_win), gain_win,
                   np.isin(idx, fit), fine, ECC_FINE_JUMP_MM / crop_mm_per_px,
                   RESTART_MODEL_MM / crop_mm_per_px, neighbours, shift, passes)

    def track(self, t: int, guess_img: np.ndarray, model: np.ndarray | None = None) -> np.ndarray:
        """Positions (P, 2) in frame ``t`` (image px; NaN where lost).

        ``model`` is the landmark model's positions in this frame: an affine
        patch match started from the previous frame's position must land near it
        (see ``_refine``).
        """
        guess_sub = (self.seed_sub + (guess_img - self.seed)[:, None, :])[self.use]
        guess = self.cache.to_crop(guess_sub, t).reshape(-1, 1, 2)
        img = self._image(t, guess.reshape(-1, 2)[self.still])
        p1 = np.zeros((len(self.key_crop), 2), np.float32)
        ok1 = np.zeros(len(self.key_crop), bool)
        for sel, key, win, across in self.passes:
            p1[sel], ok1[sel] = _lk(self.key_img, img, key, guess[sel], win, across)
        disp = np.full(self.use.shape + (2,), np.nan)
        disp[self.use] = self.cache.to_image(p1, t) - self.seed_sub[self.use]
        ok = np.zeros(self.use.shape, bool)
        ok[self.use] = ok1
        disp[~ok] = np.nan
        good = ok.sum(axis=1) >= self.need
        fused = _fuse(disp, self.tensors, ok, self.offsets, self.fit)
        out = np.where(good[:, None], self.seed + fused, np.nan)
        if self.patches:
            self._refine(t, img, out, guess_img, model)
        return out

    def _image(self, t: int, guess: np.ndarray) -> np.ndarray:
        """Frame ``t``'s crop at the keyframe's exposure.

        Lucas-Kanade assumes the brightness of each point stays the same: a
        camera's exposure drifting by 3 % moves a grey level of 200 by 6, which on
        smooth skin (gradients of a few levels per pixel) reads as pixels of
        movement (a 1.5 % change left alone read a mouth corner 6 % short). The
        gain is the median ratio of 10 mm windows' mean levels at the keyframe's
        anchors and where the head took them in this frame (a similarity fitted to
        ``guess``): robust to the odd anchor that moves and, unlike a mean over
        the crop, blind to the head moving within the crop.
        """
        img = self.cache.image(t)
        m = self._gain(img, guess)
        if m == 0.0:
            return img
        return cv2.convertScaleAbs(img, alpha=float(np.exp(m)))

    def _gain(self, img: np.ndarray, guess: np.ndarray) -> float:
        """Log of the exposure change from ``img`` back to the keyframe's; 0 to leave it."""
        key, key_top = self.key_levels
        # The windows go where the head took the keyframe's, not where each anchor
        # is guessed: an anchor lost in the last frame is guessed at the landmark
        # model's point, several pixels off on a cheek during a brow raise.
        start = self.key_crop.reshape(-1, 2)[self.still]
        head, _ = cv2.estimateAffinePartial2D(
            start, guess, method=cv2.RANSAC, ransacReprojThreshold=GAIN_HEAD_PX
        )
        at = guess if head is None else start @ head[:, :2].T + head[:, 2]
        now, top = _levels(img, at, self.gain_win)
        ok = (now >= GAIN_LEVELS[0]) & (key >= GAIN_LEVELS[0])
        ok &= np.maximum(top, key_top) < GAIN_LEVELS[1]
        if ok.sum() < 3:
            return 0.0
        r = np.log(key[ok] / now[ok])
        m = float(np.median(r))
        # Exposure brightens every still window alike; windows that disagree
        # (one slid onto hair or off the frame) are not an exposure change.
        if abs(m) < np.log1p(GAIN_MIN) or np.median(np.abs(r - m)) > GAIN_AGREE * abs(m):
            return 0.0
        return m

    def _refine(
        self, t: int, img: np.ndarray, out: np.ndarray, guess: np.ndarray, model: np.ndarray | None
    ) -> None:
        """Affine (ECC) patch match of each measured point.

        The match starts from Lucas-Kanade's reading (``out``), from the previous
        frame's position (``guess``) and from where the point's neighbours have
        moved it (their median movement in the previous frame); the best
        correlation wins, and among matches within CC_TIE of it the one nearest
        the neighbours' movement. On smooth skin a small window now and then
        slides about 3 mm in one frame (along a brow it matches well in many
        places) and a patch started there settles on a nearby wrong place: on the
        bundled sample the frown's trace jumped by up to 2 mm between frames of a
        still hold, and in every such frame the match from the previous position
        correlated better (0.991 vs 0.982). Where Lucas-Kanade lost the point, the
        other starts are the only ones. A match from the previous position or the
        neighbours' must end near the landmark model's point in this frame
        (RESTART_MODEL_MM), so that from frame to frame it cannot walk along the brow.
        """
        moved = guess - self.seed
        for i, (tmpl, centre) in self.patches.items():
            found: list[tuple[float, np.ndarray]] = []
            if np.isfinite(out[i]).all():
                a = self._match(t, img, tmpl, centre, out[i])
                if a is not None:
                    found.append(a)
            near = [j for j in self.neighbours[i] if np.isfinite(moved[j]).all()]
            want = self.seed[i] + np.median(moved[near], axis=0) if near else None
            if model is not None and np.isfinite(guess[i]).all():
                at = self.cache.to_crop(model[i : i + 1], t)[0]
                for start in (guess[i], want):
                    if start is None:
                        continue
                    m = self._match(t, img, tmpl, centre, start)
                    # Written so that a frame without the model's point (NaN) rejects too.
                    if m is not None and np.linalg.norm(at - m[1]) <= self.model_tol:
                        found.append(m)
            if not found:
                continue
            top = max(m[0] for m in found)
            tied = [m for m in found if m[0] >= top - CC_TIE]
            if want is not None and len(tied) > 1:
                w = self.cache.to_crop(want[None], t)[0]
                best = min(tied, key=lambda m: float(np.linalg.norm(m[1] - w)))
            else:
                best = max(found, key=lambda m: m[0])
            out[i] = self.cache.to_image(best[1][None], t)[0]

    def _match(
        self, t: int, img: np.ndarray, tmpl: np.ndarray, centre: np.ndarray, start: np.ndarray
    ) -> tuple[float, np.ndarray] | None:
        """Correlation and crop position of the patch's centre matched from ``start``
        (image px), or None where it does not match."""
        h, w = img.shape
        c = self.cache.to_crop(start[None], t)[0].astype(np.float64)
        m = np.array([[1, 0, c[0] - centre[0]], [0, 1, c[1] - centre[1]]], np.float32)
        # Only the neighbourhood: ECC on the whole crop would be 100x slower.
        n = tmpl.shape[0]
        x0 = int(max(0, np.floor(c[0] - centre[0]) - n))
        y0 = int(max(0, np.floor(c[1] - centre[1]) - n))
        sub = img[y0 : min(h, y0 + 3 * n), x0 : min(w, x0 + 3 * n)].astype(np.float32)
        if sub.shape[0] < n or sub.shape[1] < n:
            return None
        m[:, 2] -= (x0, y0)
        try:
            cc, m = cv2.findTransformECC(tmpl, sub, m, cv2.MOTION_AFFINE, _ECC_STOP, None, 1)
        except cv2.error:
            return None
        new = m[:, :2] @ centre + m[:, 2] + (x0, y0)
        if cc < ECC_MIN_CC or np.linalg.norm(new - c) > self.max_jump:
            return None
        fine = _fine_match(tmpl, centre, sub, m, self.fine)
        if fine is not None and np.linalg.norm(fine + (x0, y0) - new) <= self.fine_jump:
            new = fine + (x0, y0)
        return float(cc), new

    def run(self, frames: list[int], xy: np.ndarray, start: np.ndarray | None) -> np.ndarray:
        """Track consecutive ``frames`` in order, each seeded by the previous result.

        ``start`` seeds the first frame (the keyframe's own positions next to
        it); otherwise, and wherever the previous frame lost a point, the
        landmark model's position is the guess.
        """
        out = np.full((len(frames), len(self.idx), 2), np.nan)
        prev = start if start is not None else np.full_like(self.seed, np.nan)
        shift = 0.0 if self.model_shift is None else self.model_shift
        for j, t in enumerate(frames):
            model = xy[t, self.idx] + shift
            guess = np.where(np.isfinite(prev), prev, model)
            if not np.isfinite(guess).all():
                continue
            cur = self.track(t, guess, model)
            out[j] = cur
            prev = np.where(np.isfinite(cur), cur, prev)
        return out


CHUNK = 120
"""Frames per work item when tracking in parallel; each chunk restarts from the
landmark model's guess, which LK corrects within a frame."""


def _parallel_run(tracker: _Tracker, order: list[int], xy: np.ndarray) -> np.ndarray:
    """``tracker.run`` over ``order`` split in chunks on two threads (OpenCV drops the GIL)."""
    chunks = [order[i : i + CHUNK] for i in range(0, len(order), CHUNK)]
    if not chunks:
        return np.zeros((0, len(tracker.idx), 2))
    starts = [tracker.seed] + [None] * (len(chunks) - 1)
    if len(chunks) == 1:
        return tracker.run(chunks[0], xy, starts[0])
    with ThreadPoolExecutor(max_workers=2) as pool:
        work = zip(chunks, starts, strict=True)
        parts = list(pool.map(lambda a: tracker.run(a[0], xy, a[1]), work))
    return np.concatenate(parts)


STREAM_RING = 9
"""Sub-points per point while finding steps: the centre and the inner ring. A
lone point is lost too often in a frown's deformation (the step then went
unfound); the outer ring would double the cost for little more."""


class StreamTracker:
    """Follows points from the first face frame while the landmark pass runs.

    Called with each frame as soon as it is cached; the Lucas-Kanade work
    runs in a background thread, on the core the single-threaded face mesh
    leaves free, so finding steps costs almost no extra time.
    """

    def __init__(self, points: tuple[int, ...], anchors: tuple[int, ...]) -> None:
        self.points, self.anchors = points, anchors
        self.rows = np.full((0, len(dict.fromkeys(points + anchors)), 2), np.nan)
        self.keyframe = -1
        self.error: BaseException | None = None
        self._q: queue.Queue = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def __call__(self, t: int, pts: np.ndarray, cache: FrameCache) -> None:
        self._q.put((t, pts, cache))

    def _work(self) -> None:
        tracker: _Tracker | None = None
        prev: np.ndarray | None = None
        try:
            while (item := self._q.get()) is not None:
                t, pts, cache = item
                if tracker is None:
                    if not np.isfinite(pts).all():
                        continue
                    mm_per_px = IRIS_DIAMETER_MM / float(iris_diameter_px(pts))
                    tracker = _Tracker.build(cache, pts, t, self.points, self.anchors,
                                             STREAM_RING, mm_per_px)
                    self.keyframe = t
                    prev = tracker.seed
                    self._put(t, tracker.seed)
                    continue
                guess = np.where(np.isfinite(prev), prev, pts[tracker.idx])
                if not np.isfinite(guess).all():
                    continue
                cur = tracker.track(t, guess)
                self._put(t, cur)
                prev = np.where(np.isfinite(cur), cur, prev)
        except BaseException as exc:  # re-raised in the caller's thread by finish()
            self.error = exc
            while self._q.get() is not None:
                pass

    def _put(self, t: int, row: np.ndarray) -> None:
        if t >= len(self.rows):
            grow = np.full((max(t + 1, 2 * len(self.rows), 256),) + self.rows.shape[1:], np.nan)
            grow[: len(self.rows)] = self.rows
            self.rows = grow
        self.rows[t] = row

    def finish(self, n_frames: int) -> tuple[np.ndarray, int]:
        """Positions (T, P, 2) of every frame (NaN where not tracked), and the keyframe."""
        self._q.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error
        if len(self.rows) >= n_frames:
            return self.rows[:n_frames], self.keyframe
        out = np.full((n_frames,) + self.rows.shape[1:], np.nan)
        out[: len(self.rows)] = self.rows
        return out, self.keyframe


def track_window(
    cache: FrameCache,
    track: LandmarkTrack,
    scale: Scale,
    first: int,
    last: int,
    keyframe: int,
    points: tuple[int, ...],
    anchors: tuple[int, ...],
    ring: bool = True,
    tracked: np.ndarray | None = None,
    with_landmarks: bool = True,
    outward: dict[int, np.ndarray] | None = None,
    affine: tuple[int, ...] = (),
    fit: tuple[int, ...] = (),
    outline: dict[int, np.ndarray] | None = None,
    key_xy: np.ndarray | None = None,
) -> WindowTrack:
    """Track ``points`` and ``anchors`` over frames ``first..last`` from ``keyframe``.

    Returns the points with head motion removed, in mm in the keyframe's face
    frame (x toward the patient's left, y up). With ``ring`` the measured
    points (not the anchors, which RANSAC already makes robust) are followed
    by a ring of sub-points each. ``tracked`` passes image positions already
    tracked (e.g. during the landmark pass) so only the alignment remains.
    ``with_landmarks=False`` skips aligning the 478 landmarks (``landmarks_mm``
    is then empty), which the whole-video track for finding steps does not use.
    ``outward`` maps a point (an eyelid margin) to the image direction of the
    skin beside it; only sub-points on that side follow it. ``affine`` points
    are refined with an affine patch match after Lucas-Kanade (see ECC_HALF_MM).
    ``fit`` points (half rings) are read at the landmark from a local affine fit
    of their sub-points (see ``_fuse``). ``outline`` maps points on the face's
    outline to its unit tangent at the keyframe (image px): they are read as the
    outline's widening at their height (see OUTLINE_MIN_COS). ``key_xy`` (478, 2)
    places the points on the keyframe (``landmarks.keyframe_landmarks``); by default
    the landmark model's keyframe positions. The face frame and scale stay the model's.
    Every fitted frame is kept and its head fit's error recorded
    (:func:`head_fit_error`); the caller leaves the uncertain ones unmeasured
    (:meth:`WindowTrack.drop_unfit`) once the pose stage has judged them.
    """
    model_key = track.xy[keyframe]
    if key_xy is None:
        key_xy = model_key
    all_pts = tuple(dict.fromkeys(points + anchors))
    idx = np.array(all_pts)
    anchor_cols = np.array([all_pts.index(a) for a in anchors])
    key_r, key_l = iris_centres(track.xy[keyframe])
    ipd_k = float(np.linalg.norm(key_l - key_r))
    mm_per_px = scale.mm_per_px * scale.ipd_px / ipd_k
    seed = key_xy[idx]
    frames = np.arange(first, last + 1)
    n = len(frames)
    if tracked is not None:
        img_px = tracked
    else:
        tracker = _Tracker.build(cache, key_xy, keyframe, points, anchors, ring,
                                 mm_per_px, outward, affine, fit, model_key, outline,
                                 ANCHOR_WIN_MM)
        img_px = np.full((n, len(idx), 2), np.nan)
        kpos = keyframe - first
        img_px[kpos] = seed
        # Outward from the keyframe in both directions.
        fwd = list(range(keyframe + 1, last + 1))
        bwd = list(range(keyframe - 1, first - 1, -1))
        if fwd:
            img_px[kpos + 1 :] = _parallel_run(tracker, fwd, track.xy)
        if bwd:
            img_px[:kpos] = _parallel_run(tracker, bwd, track.xy)[::-1]

    # Head motion: similarity from each frame's anchors onto the keyframe's.
    thresh_px = RANSAC_MM / mm_per_px
    aligned = np.full_like(img_px, np.nan)
    # The whole-video track for finding steps does not need the 478 landmarks
    # aligned (they would be the largest array of a long video).
    lm_aligned = np.full((n, 478 if with_landmarks else 0, 2), np.nan)
    inliers = np.zeros(n, dtype=int)
    fit_err = np.full(n, np.nan)
    # The points measured (not only anchors), where the fit's uncertainty matters.
    measured = np.array([i for i, p in enumerate(all_pts) if p in points], int)
    for j in range(n):
        src = img_px[j, anchor_cols]
        dst = seed[anchor_cols]
        good = np.isfinite(src).all(axis=1)
        if good.sum() < 4:
            continue
        m, inl = cv2.estimateAffinePartial2D(
            src[good],
            dst[good],
            method=cv2.RANSAC,
            ransacReprojThreshold=thresh_px,
            maxIters=500,
            confidence=0.995,
            refineIters=10,
        )
        if m is None or inl is None or inl.sum() < 4:
            continue
        inl = inl.ravel().astype(bool)
        fit_err[j] = head_fit_error(src[good][inl], dst[good][inl], m, img_px[j, measured],
                                    FIT_NOISE_MM / mm_per_px) * mm_per_px
        inliers[j] = int(inl.sum())
        aligned[j] = img_px[j] @ m[:, :2].T + m[:, 2]
        if with_landmarks and np.isfinite(track.xy[frames[j], 0, 0]):
            lm_aligned[j] = track.xy[frames[j]] @ m[:, :2].T + m[:, 2]

    # Face frame of the keyframe: origin between the irises, x toward the
    # patient's left, y up; then to mm.
    origin = (key_r + key_l) / 2
    lateral = (key_l - key_r) / ipd_k
    for p, tangent in (outline or {}).items():
        c = all_pts.index(p)
        normal = np.array([-tangent[1], tangent[0]])
        cos = float(normal @ lateral)
        if abs(cos) >= OUTLINE_MIN_COS:
            across = (aligned[:, c] - seed[c]) @ normal
            aligned[:, c] = seed[c] + np.outer(across / cos, lateral)
    up = np.array([lateral[1], -lateral[0]])
    rot = np.stack([lateral, up])  # rows: x axis, y axis

    def to_mm(p: np.ndarray) -> np.ndarray:
        return ((p - origin) @ rot.T) * mm_per_px

    return WindowTrack(
        frames=frames,
        points=idx,
        image_mm=to_mm(aligned),
        landmarks_mm=to_mm(lm_aligned),
        inliers=inliers,
        keyframe=keyframe,
        mm_per_px=mm_per_px,
        fit_error_mm=fit_err,
    )


def head_fit_error(
    src: np.ndarray, dst: np.ndarray, m: np.ndarray, at: np.ndarray, floor: float
) -> float:
    """Standard error (px) of a head-motion similarity ``m`` (src -> dst, fitted on
    these inlier anchors) where it carries the points ``at``: the largest over them.

    The fit's four parameters (scale-rotation a, b and the shift) have the
    least-squares covariance sigma^2 (J^T J)^-1, sigma the anchors' residual (at
    least ``floor``); a point's error follows from where it lies. Few anchors
    clustered on one region (the nose, when a hand covers the mouth and cheeks)
    pin the shift there but hardly the rotation and scale, and the error grows
    with the distance to the brows.
    """
    n = len(src)
    at = at[np.isfinite(at).all(axis=1)]
    if n < 2 or not len(at):
        return float("inf") if n < 2 else 0.0
    c = src.mean(axis=0)  # centred: the same fit, a better-conditioned system
    x, y = (src - c).T
    jac = np.zeros((2 * n, 4))
    jac[0::2] = np.stack([x, -y, np.ones(n), np.zeros(n)], axis=1)
    jac[1::2] = np.stack([y, x, np.zeros(n), np.ones(n)], axis=1)
    res = (src @ m[:, :2].T + m[:, 2] - dst).ravel()
    dof = 2 * n - 4
    sigma2 = max(float(res @ res) / dof if dof > 0 else 0.0, floor**2)
    try:
        cov = sigma2 * np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return float("inf")
    ax, ay = (at - c).T
    k = len(at)
    jx = np.stack([ax, -ay, np.ones(k), np.zeros(k)], axis=1)
    jy = np.stack([ay, ax, np.zeros(k), np.ones(k)], axis=1)
    var = (np.einsum("ki,ij,kj->k", jx, cov, jx) + np.einsum("ki,ij,kj->k", jy, cov, jy)) / 2
    return float(np.sqrt(var.max()))
