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
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from movement.landmarks import FrameCache, LandmarkTrack
from movement.stabilise import Scale, iris_centres

LK_WIN_MM = 3.5
"""Lucas-Kanade window side in mm. Skin moves non-uniformly (a frown bunches the
glabella, a smile drags the corner): a window averages the movement over its
area, so a small window reads the point itself. Measured on generated steps:
windows of 3-5 mm err 0.05-0.3 mm, 9 mm windows 0.3-1.9 mm."""
LK_LEVELS = 3
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
OUTLIER_PX = 2.0
RANSAC_MM = 0.4
"""Anchor residual (mm) that counts as head motion; beyond it a point is moving."""


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

    def col(self, idx: tuple[int, ...]) -> np.ndarray:
        pos = {int(p): i for i, p in enumerate(self.points)}
        return np.array([pos[i] for i in idx])


_LK = dict(
    maxLevel=LK_LEVELS,
    criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
)


def _lk(
    img0: np.ndarray, img1: np.ndarray, p0: np.ndarray, guess: np.ndarray, win: int
) -> tuple[np.ndarray, np.ndarray]:
    opts = dict(_LK, winSize=(win, win))
    p1, st, _ = cv2.calcOpticalFlowPyrLK(
        img0, img1, p0, guess.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **opts
    )
    back, st2, _ = cv2.calcOpticalFlowPyrLK(img1, img0, p1, p1.copy(), **opts)
    fb = np.linalg.norm(back - p0, axis=-1).ravel()
    ok = (st.ravel() == 1) & (st2.ravel() == 1) & (fb < FB_MAX_PX)
    return p1.reshape(-1, 2), ok


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


def _fuse(disp: np.ndarray, tensors: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """One displacement per landmark from its sub-points, weighted by their texture.

    A sub-point on a single edge (a brow margin, a lip line) only knows its
    movement across that edge; along the edge LK barely moves from its start
    (the aperture problem), which under-reads a frown's medial pull. Weighting
    each sub-point's displacement by its structure tensor G (information
    weighting, ``(sum G)^-1 sum G d``) takes each direction from the sub-points
    that see texture in it. Outliers are removed first: sub-points more than
    0.8 px (crop) from the median across their edge.

    Parameters
    ----------
    disp : (P, R, 2) sub-point displacements (NaN where lost)
    tensors : (P, R, 2, 2)
    ok : (P, R) sub-points that passed the forward-backward check
    """
    with np.errstate(all="ignore"):
        med = np.nanmedian(disp, axis=1)
    dev = np.linalg.norm(disp - med[:, None, :], axis=-1)
    keep = ok & (
        dev < np.maximum(OUTLIER_PX, 3 * np.nanmedian(np.where(ok, dev, np.nan), axis=1))[:, None]
    )
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
    return out


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
) -> WindowTrack:
    """Track ``points`` and ``anchors`` over frames ``first..last`` from ``keyframe``.

    Returns the points with head motion removed, in mm in the keyframe's face
    frame (x toward the patient's left, y up). With ``ring`` the measured
    points (not the anchors, which RANSAC already makes robust) are followed
    by a ring of sub-points each.
    """
    all_pts = tuple(dict.fromkeys(points + anchors))
    n_pts = len(all_pts)
    idx = np.array(all_pts)
    anchor_cols = np.array([all_pts.index(a) for a in anchors])
    key_r, key_l = iris_centres(track.xy[keyframe])
    ipd_k = float(np.linalg.norm(key_l - key_r))
    mm_per_px = scale.mm_per_px * scale.ipd_px / ipd_k

    seed = track.xy[keyframe, idx]
    seed_sub = seed[:, None, :] + RING[None] * (RING_MM / mm_per_px)  # (P, R, 2)
    n_ring = RING.shape[0]
    use = np.zeros((n_pts, n_ring), bool)
    use[:, 0] = True
    if ring:
        use[[all_pts.index(p) for p in points], :] = True
    need = np.minimum(use.sum(axis=1), 3)
    key_crop = cache.to_crop(seed_sub[use], keyframe).reshape(-1, 1, 2)
    key_img = cache.image(keyframe)
    # Window in crop pixels, odd, for LK_WIN_MM of skin.
    win = int(np.clip(2 * round(LK_WIN_MM / (mm_per_px / cache.scale) / 2) + 1, 7, 21))

    tensors = np.zeros((n_pts, n_ring, 2, 2))
    tensors[use] = _structure_tensors(key_img, key_crop.reshape(-1, 2), win)

    frames = np.arange(first, last + 1)
    n = len(frames)
    img_px = np.full((n, n_pts, 2), np.nan)
    kpos = keyframe - first
    img_px[kpos] = seed

    # Outward from the keyframe in both directions, each frame seeded by its
    # neighbour's result (or the landmark model where the neighbour lost it).
    for order in (range(kpos + 1, n), range(kpos - 1, -1, -1)):
        prev = seed.copy()
        for j in order:
            t = int(frames[j])
            lm = track.xy[t, idx]
            guess_img = np.where(np.isfinite(prev), prev, lm)
            if not np.isfinite(guess_img).all():
                continue
            guess_sub = (seed_sub + (guess_img - seed)[:, None, :])[use]
            guess = cache.to_crop(guess_sub, t).reshape(-1, 1, 2)
            p1, ok1 = _lk(key_img, cache.image(t), key_crop, guess, win)
            disp = np.full((n_pts, n_ring, 2), np.nan)
            disp[use] = cache.to_image(p1, t) - seed_sub[use]
            ok = np.zeros((n_pts, n_ring), bool)
            ok[use] = ok1
            disp[~ok] = np.nan
            good = ok.sum(axis=1) >= need
            cur = np.where(good[:, None], seed + _fuse(disp, tensors, ok), np.nan)
            img_px[j] = cur
            prev = np.where(good[:, None], cur, prev)

    # Head motion: similarity from each frame's anchors onto the keyframe's.
    thresh_px = RANSAC_MM / mm_per_px
    aligned = np.full_like(img_px, np.nan)
    lm_aligned = np.full((n, 478, 2), np.nan)
    inliers = np.zeros(n, dtype=int)
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
        inliers[j] = int(inl.sum())
        aligned[j] = img_px[j] @ m[:, :2].T + m[:, 2]
        if np.isfinite(track.xy[frames[j], 0, 0]):
            lm_aligned[j] = track.xy[frames[j]] @ m[:, :2].T + m[:, 2]

    # Face frame of the keyframe: origin between the irises, x toward the
    # patient's left, y up; then to mm.
    origin = (key_r + key_l) / 2
    lateral = (key_l - key_r) / ipd_k
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
    )
