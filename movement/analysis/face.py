"""Face geometry shared by every stage: iris scale, the face frame, mirror map.

Landmarks are arrays of shape ``(..., 478, 2)`` in image pixels (x right, y down).
"""

from __future__ import annotations

import numpy as np

IRIS_DIAMETER_MM = 11.7
"""Horizontal visible iris diameter (HVID) of adults: the anatomical scale reference,
read on the iris ring's horizontal axis (:func:`iris_diameter_px`)."""

# Refined FaceMesh iris rings: centre then 4 ring points (patient's right, left).
RIGHT_IRIS = (468, 469, 470, 471, 472)
LEFT_IRIS = (473, 474, 475, 476, 477)
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
RIGHT_EYE_INNER, LEFT_EYE_INNER = 133, 362


def iris_diameter_px(lm: np.ndarray) -> np.ndarray:
    """Horizontal visible iris diameter in pixels, the mean of both eyes.

    Returns an array of shape ``lm.shape[:-2]``.

    Notes
    -----
    11.7 mm is the anatomical *horizontal* visible iris diameter. FaceMesh's iris ring
    has a horizontal pair of points (the first and third after the centre) and a
    vertical pair; it places the vertical at 0.80-0.87 of the horizontal (partly under
    the lids), against ~0.91 anatomically, so calling the mean of both axes 11.7 mm would
    make every millimetre read 8-10 % large. The pair lies along the eye's own axis, so
    head roll does not shorten it. Over frames (relative to the inter-iris distance) it
    is also the steadier axis: robust spread 1.3 % against 1.8 % for the vertical on
    the bundled sample, 4.9 % against 6.5 % on the real clip, whose roll of -10 to 23
    degrees moved it by 1 % per 10 degrees against 2.5 % for the vertical.
    """
    a, c = RIGHT_IRIS[1], RIGHT_IRIS[3]
    b, e = LEFT_IRIS[1], LEFT_IRIS[3]
    right = np.linalg.norm(lm[..., a, :] - lm[..., c, :], axis=-1)
    left = np.linalg.norm(lm[..., b, :] - lm[..., e, :], axis=-1)
    return (right + left) / 2


DETECTION_JITTER = 0.1
"""Span of the offsets a fresh detection's frame is cut by, as a fraction of the face
height (see :func:`detection_offset`)."""


def detection_offset(i: int, span_px: float) -> tuple[int, int]:
    """The ``i``-th (from 0) integer offset ``(dx, dy)`` in ``[0, span_px)``.

    FaceMesh's still-image iris depends on where the face falls on the detector's
    pixel grid: the same photo cut by 1 to 8 pixels read the iris between -1.0 %
    and +1.9 % of the uncut reading. A median over detections of the frame cut by
    these offsets (top and left) averages that out, for the analysis and for the
    generator's ground truth alike. A Halton sequence (bases 2 and 3) keeps any
    prefix of it evenly spread.
    """

    def halton(k: int, base: int) -> float:
        f, r = 1.0, 0.0
        while k > 0:
            f /= base
            r += f * (k % base)
            k //= base
        return r

    span = max(float(span_px), 1.0)
    return int(halton(i + 1, 2) * span), int(halton(i + 1, 3) * span)


def face_axes(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit ``lateral`` and ``up`` axes of the face frame, in image coordinates.

    ``lateral`` runs along the outer eye corners from the patient's right eye to
    the left eye; ``up`` is perpendicular to it, pointing to the forehead. In an
    unmirrored frame the patient's right eye is on the image left, so
    ``lateral`` is about (1, 0) and ``up`` about (0, -1).
    """
    v = lm[..., LEFT_EYE_OUTER, :] - lm[..., RIGHT_EYE_OUTER, :]
    lateral = v / np.linalg.norm(v, axis=-1, keepdims=True)
    # Rotating lateral by -90 degrees in image coordinates (y down) points up.
    up = np.stack([lateral[..., 1], -lateral[..., 0]], axis=-1)
    return lateral, up


def outline_tangents(chains: list[tuple[int, ...]], xy: np.ndarray) -> dict[int, np.ndarray]:
    """Unit tangent (image px) at each point of each chain of landmarks along an outline.

    Central differences inside a chain, one-sided at its ends; a chain is one side's
    points of an outline group, in order along the outline.
    """
    out: dict[int, np.ndarray] = {}
    for chain in chains:
        for i, p in enumerate(chain):
            a, b = chain[max(i - 1, 0)], chain[min(i + 1, len(chain) - 1)]
            v = xy[b] - xy[a]
            n = float(np.linalg.norm(v))
            if n > 0 and np.isfinite(n):
                out[p] = v / n
    return out


def to_face_frame(vectors: np.ndarray, lateral: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Express image-plane vectors ``(..., 2)`` as (toward patient's left, up)."""
    return np.stack([vectors @ lateral, vectors @ up], axis=-1)


def measure_series(
    pos: np.ndarray,
    rest: np.ndarray,
    kind: str,
    cols: np.ndarray,
    lower: np.ndarray | None = None,
    side: str = "right",
) -> np.ndarray:
    """One side's value of a measurement kind over time, relative to rest.

    Parameters
    ----------
    pos : (T, P, 2) positions in mm in the face frame (x, up)
    rest : (P, 2) rest positions in the same frame
    kind : "length" | "up" | "down" | "medial" | "lateral" | "aperture" | "opening"
        (see protocols/standard.toml)
    cols : columns of the points (the upper lid for "aperture")
    lower : columns of the lower lid for "aperture" and "opening"
    side : the patient's side the points are on ("medial" and "lateral" depend on it)

    Returns
    -------
    (T,) mm; positive means the muscle pulls (displacement, lid closing, lip everting).
    """
    if kind in ("aperture", "opening"):
        if lower is None:
            raise ValueError(f"{kind} needs the lower points")
        ap = _mean(pos[:, cols, 1]) - _mean(pos[:, lower, 1])
        ap_rest = rest[cols, 1].mean() - rest[lower, 1].mean()
        return ap_rest - ap if kind == "aperture" else ap - ap_rest
    d = _mean(pos[:, cols] - rest[cols])
    if kind == "length":
        return np.linalg.norm(d, axis=-1)
    if kind == "up":
        return d[:, 1]
    if kind == "down":
        return -d[:, 1]
    if kind in ("medial", "lateral"):
        # x runs toward the patient's left: the right side's midline is at +x.
        toward_midline = d[:, 0] if side == "right" else -d[:, 0]
        return toward_midline if kind == "medial" else -toward_midline
    raise ValueError(f"unknown measurement kind {kind!r}")


def _mean(a: np.ndarray) -> np.ndarray:
    """Mean over the points (axis 1), allowing a minority of them to be lost.

    A group's value stays defined while at least half of its points are
    tracked; below that it is NaN rather than a value from a few points.
    """
    ok = np.isfinite(a)
    n_ok = ok.sum(axis=1)
    with np.errstate(all="ignore"):
        m = np.nansum(a, axis=1) / n_ok
    return np.where(n_ok * 2 >= a.shape[1], m, np.nan)
