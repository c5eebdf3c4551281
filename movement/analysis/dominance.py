"""Which side dominates: the protocol's thresholds applied to a pair of values.

Kept apart from :mod:`movement.analysis.asymmetry` (which builds the tables from a
session's measures) so that the report and the comparison of stored sessions
apply the same rules without loading the analysis.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from movement.protocol import Thresholds


def dominant_side(right: float, left: float, th: Thresholds) -> str:
    """``right`` / ``left`` when the difference is large in mm AND relative.

    ``balanced`` otherwise; ``undetermined`` when a side has no value.
    """
    return _by_difference(right, left, th.min_diff_mm, th.min_ratio)


def _by_difference(right: float, left: float, min_diff: float, min_ratio: float) -> str:
    if not (np.isfinite(right) and np.isfinite(left)):
        return "undetermined"
    diff = right - left
    big = max(right, left)
    if abs(diff) >= min_diff and big > 0 and abs(diff) / big >= min_ratio:
        return "right" if diff > 0 else "left"
    return "balanced"


def dominant_for(measure: str, right: float, left: float, th: Thresholds) -> str:
    """The dominance rule of a measure: mm rules for millimetres, relative
    rules for counts and crease strengths (which have no millimetres)."""
    if not (np.isfinite(right) and np.isfinite(left)):
        return "undetermined"
    if measure == "movements":
        return _by_difference(right, left, th.min_count_diff, th.min_ratio)
    if measure == "crease":
        lo, hi = sorted((right, left))
        if hi >= th.crease_min and hi >= th.crease_min_ratio * max(lo, 0.0):
            return "right" if right > left else "left"
        return "balanced"
    return dominant_side(right, left, th)


def near_threshold(measure: str, right: float, left: float, th: Thresholds) -> bool:
    """Whether the side call changes with the thresholds ``th.near_threshold`` looser or
    tighter (every threshold scaled by 1 -/+ that fraction).

    A value just under 1 mm apart is ``balanced`` and one just over is dominant; both
    are within what a repeat recording moves (a narrow movement reads 0.82-0.94 of its
    truth, docs/METHOD.md §7.7), so the report says such a call is near the
    threshold rather than letting 0.99 and 1.01 mm read as opposite findings.
    """
    if not (np.isfinite(right) and np.isfinite(left)) or th.near_threshold <= 0:
        return False
    calls = set()
    for k in (1.0 - th.near_threshold, 1.0, 1.0 + th.near_threshold):
        scaled = replace(
            th, min_diff_mm=th.min_diff_mm * k, min_ratio=th.min_ratio * k,
            min_count_diff=th.min_count_diff * k, crease_min=th.crease_min * k,
            crease_min_ratio=1.0 + (th.crease_min_ratio - 1.0) * k,
        )
        calls.add(dominant_for(measure, right, left, scaled))
    return len(calls) > 1
