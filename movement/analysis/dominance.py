"""Which side dominates: the protocol's thresholds applied to a pair of values.

Kept apart from :mod:`movement.analysis.asymmetry` (which builds the tables from a
session's measures) so that the report and the comparison of stored sessions
apply the same rules without loading the analysis.
"""

from __future__ import annotations

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


def side_call(
    measure: str,
    right: float,
    left: float,
    th: Thresholds,
    right_iv: tuple[float, float] = (np.nan, np.nan),
    left_iv: tuple[float, float] = (np.nan, np.nan),
    diff_iv: tuple[float, float] = (np.nan, np.nan),
) -> str:
    """The side call from the values' 95 % intervals: ``right`` / ``left`` when every
    value in the interval meets the rule, ``balanced`` when none does, ``uncertain``
    when some do (``undetermined`` without values).

    Millimetres: the interval of right - left against the rule (1 mm and 20 % of the
    larger side: right - left >= max(min_diff, left * r / (1 - r)), the other side's
    value taken as read). Crease indices: each side's interval against the ratio rule.
    Counts, and values without an interval (sessions stored before intervals
    existed), keep the rule on the values themselves.
    """
    if not (np.isfinite(right) and np.isfinite(left)):
        return "undetermined"
    if measure == "crease" and np.isfinite([*right_iv, *left_iv]).all():
        return _crease_call(right_iv, left_iv, th)
    if measure in ("movements", "crease") or not np.isfinite(diff_iv).all():
        return dominant_for(measure, right, left, th)
    lo, hi = diff_iv
    k = th.min_ratio / (1.0 - th.min_ratio) if th.min_ratio < 1 else np.inf
    need_r = max(th.min_diff_mm, k * max(left, 0.0))  # right - left needed for "right"
    need_l = max(th.min_diff_mm, k * max(right, 0.0))  # left - right needed for "left"
    if lo >= need_r:
        return "right"
    if hi <= -need_l:
        return "left"
    if hi < need_r and lo > -need_l:
        return "balanced"
    return "uncertain"


def _crease_call(r: tuple[float, float], lft: tuple[float, float], th: Thresholds) -> str:
    def meets(a: float, b: float) -> bool:  # side at a, other side at b
        return a >= th.crease_min and a >= th.crease_min_ratio * max(b, 0.0)

    if meets(r[0], lft[1]):
        return "right"
    if meets(lft[0], r[1]):
        return "left"
    if not meets(r[1], lft[0]) and not meets(lft[1], r[0]):
        return "balanced"
    return "uncertain"


def rule_words(measure: str, th: Thresholds) -> str:
    """The rule a call is held against, in words."""
    if measure == "crease":
        return (f"a crease index of at least {th.crease_min:g} and "
                f"{th.crease_min_ratio:g} times the other side's")
    if measure == "movements":
        return f"at least {th.min_count_diff} more movements and {th.min_ratio:.0%}"
    return f"{th.min_diff_mm:g} mm and {th.min_ratio:.0%} of the larger side"
