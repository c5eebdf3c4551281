"""How sure a value is: the parts of its 95 % interval, read from the recording itself.

Every activation value is peak minus rest of a group's points on one side. What can
move it, each as a standard error (1 sigma) in the value's unit:

- ``hold``: the frames' spread over the hold the value is averaged on;
- ``rest``: the frames' spread over the rest it is measured from;
- ``points``: the spread between the group's points, where some were not followed
  (the mean of those followed stands for all of them);
- ``scale``: the millimetre scale's spread over the video, times the value;
- ``fit``: the head-motion fit's standard error at the measured points, at the hold
  and at rest; the fit is made afresh in every frame, so over a hold it counts as
  many times as the hold has independent frames (:func:`effective_count`);
- ``pose``: the share of the face-on correction that may be wrong, where one was made;
- ``method``: the value times the protocol's ``reads_spread``, how much the method's
  reading of a movement varies from consult to consult at the generator's own scale
  (point placement, texture): what the recording's own parts do not show; never
  below the group's ``reads_floor_mm``, its error on movements under 1 mm, which a
  share of a small value does not reach. (The larger of the two, not their sum: the
  spread is measured on values of 1 mm or more and already holds what the floor is
  at that size.)

They are independent, so they add in quadrature; the interval is the value +- 1.96
times that, times the group's ``interval_scale`` (the share of it that held 95 % of the
group's values on the accuracy benchmark: the parts are not all normal, and a face that
reads a movement short is a tail), widened toward the truth where the method is known to
read short (the protocol's ``reads``, measured by the accuracy benchmark at the
generator's own scale).
For a side difference the parts of both sides add, except the scale, which is shared
(it scales the difference) and the method's shortfall, which scales it too.

Crease indices are not a mean of frames minus a mean: their interval comes from the
rest and peak frames' spread pushed through the index's formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from movement.analysis.face import measure_series
from movement.protocol import MuscleGroup

if TYPE_CHECKING:  # the comparison imports this module without the analysis stack
    from movement.analysis.stabilise import Scale

Z95 = 1.959964
"""Half-width of a two-sided 95 % normal interval in standard errors."""
POSE_DOUBT = 0.25
"""Share of the face-on correction that may be wrong: a turn during a step is read at
about 7.5 of 10 degrees (docs/METHOD.md §4.1)."""
MAX_AUTOCORRELATION = 0.9
"""Cap on the frames' lag-1 correlation when counting how many independent readings a
hold holds: a hold of ten frames is never worth less than about half a frame."""
SCALE_DOUBT = 0.01
"""The iris scale's own relative error (1 sigma) beside its spread over the video: the
spread shows how steadily one video's iris is read, not how far the reading is from the
true scale (generated video reads within about 2 %, docs/METHOD.md §3)."""
CREASE_DRAWS = 400
"""Draws pushing the crease frames' spread through the index's formula."""

PART_NAMES = ("hold", "rest", "points", "scale", "fit", "pose", "method")


@dataclass(frozen=True)
class Spread:
    """The parts of one value's uncertainty: standard errors in the value's unit (mm,
    or crease index); ``points_used`` / ``points_total`` say how many of the group's
    points were followed at the hold."""

    hold: float = 0.0
    rest: float = 0.0
    points: float = 0.0
    scale: float = 0.0
    fit: float = 0.0
    pose: float = 0.0
    method: float = 0.0
    points_used: int = 0
    points_total: int = 0

    def parts(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)
                if f.name in PART_NAMES}

    def total(self) -> float:
        """Standard error of the value: its parts added in quadrature (NaN parts are
        parts that could not be read, e.g. a one-frame hold, and count as 0)."""
        return math.sqrt(sum(v * v for v in self.parts().values() if np.isfinite(v)))


def effective_count(x: np.ndarray) -> float:
    """How many independent readings a run of frames is worth: n (1 - r) / (1 + r), r
    its lag-1 correlation (capped, see MAX_AUTOCORRELATION); at least 1 (NaN without
    a finite frame)."""
    v = np.asarray(x, float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return float("nan")
    c = v - v.mean()
    ss = float(np.sum(c * c))
    r = float(np.sum(c[1:] * c[:-1]) / ss) if n > 2 and ss > 0 else 0.0
    r = min(max(r, 0.0), MAX_AUTOCORRELATION)
    return max(n * (1 - r) / (1 + r), 1.0)


def frames_se(x: np.ndarray) -> float:
    """Standard error of the mean of a run of frames.

    Consecutive frames are not independent readings: tracking noise and a slow drift
    carry over. The lag-1 correlation r of the run shrinks the count to
    n (1 - r) / (1 + r) (capped, see MAX_AUTOCORRELATION). NaN with fewer than two
    finite frames.
    """
    v = np.asarray(x, float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 2:
        return float("nan")
    sd = float(np.std(v, ddof=1))
    if sd == 0.0:
        return 0.0
    return sd / math.sqrt(effective_count(v))


def points_se(per_point: np.ndarray) -> tuple[float, int]:
    """Standard error a group's value carries from points it did not follow, and how
    many it followed.

    The value is the mean over the group's points; each point's own value is in
    ``per_point`` (NaN: not followed at the hold). With every point followed the mean
    is the group's, whatever their spread (the brow's head and tail move differently
    by nature). With k of N followed, the mean of the k stands for the N's with the
    standard error of a sample drawn without replacement:
    sd / sqrt(k) * sqrt((N - k) / (N - 1)). A group with one point followed of
    several takes the others' spread as unknown and is given the followed point's
    own size as its spread (nothing else says how the others moved).
    """
    v = np.asarray(per_point, float)
    n = len(v)
    ok = v[np.isfinite(v)]
    k = len(ok)
    if k == n or n < 2:
        return 0.0, k
    if k == 0:
        return float("nan"), 0
    sd = float(np.std(ok, ddof=1)) if k >= 2 else abs(float(ok[0]))
    return sd / math.sqrt(k) * math.sqrt((n - k) / (n - 1)), k


def value_spread(
    series: np.ndarray,
    pos: np.ndarray,
    rest: np.ndarray,
    g: MuscleGroup,
    side: str,
    cols: dict[int, int],
    hold: np.ndarray,
    rest_pos: np.ndarray,
    value: float,
    scale: Scale,
    fit_error: np.ndarray | None,
    range_mode: bool = False,
) -> Spread:
    """The parts of one side's value's uncertainty, from the step's tracked positions
    ``pos`` (frames, points, 2) against ``rest`` in the columns ``cols`` of the points.

    ``hold`` are the frames (positions in the series) the value is read at: its hold,
    or for a range measure the whole step, whose 95th percentile is near one frame's
    reading, so there the part is one frame's spread at rest, not a mean's.
    """
    if range_mode:
        at_rest = series[rest_pos]
        sd = float(np.nanstd(at_rest, ddof=1)) if np.isfinite(at_rest).sum() > 1 else np.nan
        hold_se, rest_se = sd, frames_se(at_rest)
    else:
        hold_se, rest_se = frames_se(series[hold]), frames_se(series[rest_pos])
    # Each point's own value: the group's value is their mean.
    up = g.points(side)
    low = np.array([cols[i] for i in g.lower_points(side)]) if g.lower_points(side) else None
    per_point = []
    for p in up:
        one = measure_series(pos[hold], rest, g.kind, np.array([cols[p]]), low, side)
        per_point.append(float(np.max(one)) if range_mode and np.isfinite(one).any()
                         else _finite_mean(one))
    pts_se, used = points_se(np.array(per_point))
    # IQR -> sigma; never below the ruler's own doubt (SCALE_DOUBT).
    rel_scale = max(scale.spread / 1.349 if np.isfinite(scale.spread) else 0.0, SCALE_DOUBT)
    fit = 0.0
    if fit_error is not None:
        # Fitted afresh each frame: over the hold (rest) it averages like the frames do;
        # a range is near one frame's reading, and carries one frame's error.
        at_hold = _finite_mean(fit_error[hold] ** 2)
        parts = [at_hold if range_mode else at_hold / effective_count(series[hold]),
                 _finite_mean(fit_error[rest_pos] ** 2) / effective_count(series[rest_pos])]
        fit = float(np.sqrt(np.nansum(parts)))
    size = abs(value) if np.isfinite(value) else 0.0
    return Spread(
        hold=hold_se, rest=rest_se, points=pts_se, scale=size * rel_scale, fit=fit,
        method=max(size * g.reads_spread, g.reads_floor_mm),
        points_used=used, points_total=len(up),
    )


def value_interval(value: float, spread: Spread | None, reads: float = 1.0,
                   scale: float = 1.0) -> tuple[float, float]:
    """The 95 % interval of one side's value (mm or count-free units).

    ``reads``: the share of the truth the method reads (the protocol's figure); the
    interval reaches to the value it implies, so a value that reads short is still
    covered. ``scale``: the group's ``interval_scale``, the half-width in units of 1.96
    standard errors. NaN without a value or a spread.
    """
    if spread is None or not np.isfinite(value):
        return float("nan"), float("nan")
    half = Z95 * scale * spread.total()
    lo, hi = value - half, value + half
    if reads > 0 and reads != 1:
        lo, hi = min(lo, value / reads - half), max(hi, value / reads + half)
    return lo, hi


def difference_interval(
    right: float, left: float, sr: Spread | None, sl: Spread | None, reads: float = 1.0,
    spread: float = 0.0, shared: float = 0.0, scale: float = 1.0,
) -> tuple[float, float]:
    """The 95 % interval of right - left.

    The sides' own parts add; the scale is one ruler for both, so its part is the
    relative spread times the difference, not the sum of the sides'; a method reading
    short reads the difference short by the same share. Of the method's part, the
    share ``shared`` of its proportional variance (the group's ``reads_spread``,
    ``spread``) is common to both sides of a consult (a face that reads one movement
    short reads it short on both sides): like the scale, that part is ``spread`` times
    the difference; the rest of each side's method part adds as its own. ``scale``: the
    group's ``interval_scale``, as for each side's value.
    """
    if sr is None or sl is None or not (np.isfinite(right) and np.isfinite(left)):
        return float("nan"), float("nan")
    d = right - left
    var = 0.0
    for name in PART_NAMES:
        if name == "scale":
            continue
        for s, x in ((sr, right), (sl, left)):
            v = getattr(s, name)
            if not np.isfinite(v):
                continue
            if name == "method":
                var += max(v * v - shared * (x * spread) ** 2, 0.0)
            else:
                var += v * v
    var += shared * (spread * d) ** 2
    rel = [s.scale / abs(x) for s, x in ((sr, right), (sl, left))
           if abs(x) > 1e-9 and np.isfinite(s.scale)]
    if rel:
        var += (max(rel) * d) ** 2
    half = Z95 * scale * math.sqrt(var)
    lo, hi = d - half, d + half
    if reads > 0 and reads != 1:
        # A short reading shrinks the difference toward 0: the truth lies further out.
        lo, hi = min(lo, d / reads - half), max(hi, d / reads + half)
    return lo, hi


def crease_interval(rest: np.ndarray, peak: np.ndarray, rest_v: float, peak_v: float
                    ) -> tuple[float, float, float, float]:
    """The 95 % interval of a crease index ``sign * sqrt(|peak^2 - rest^2|)`` from the
    rest and peak frames' strengths, and their standard errors (rest, peak).

    The index is not linear near zero, so the frames' spread is pushed through it by
    draws (seeded: the same recording always gives the same interval). The rest value
    is an RMS and the peak a median (1.25 times a mean's standard error).
    """
    se_r = frames_se(rest)
    se_p = frames_se(peak)
    se_r = 0.0 if not np.isfinite(se_r) else se_r
    se_p = 0.0 if not np.isfinite(se_p) else 1.25 * se_p
    if not (np.isfinite(rest_v) and np.isfinite(peak_v)):
        return float("nan"), float("nan"), se_r, se_p
    rng = np.random.default_rng(0)
    r = rest_v + se_r * rng.standard_normal(CREASE_DRAWS)
    p = peak_v + se_p * rng.standard_normal(CREASE_DRAWS)
    d = p * p - r * r
    v = np.sign(d) * np.sqrt(np.abs(d))
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(lo), float(hi), se_r, se_p


_PART_WORDS = {
    "hold": "the {side} {group} not holding still at the peak",
    "rest": "the {side} {group} not still at rest",
    "points": "the {side} {group}'s points moving unevenly",
    "fit": "the head-motion fit at the measured points",
    "pose": "the correction for the head's turn on the {side} side",
    "method": "how this movement reads from consult to consult",
}


def doubt_words(group: str, sr: Spread | None, sl: Spread | None, diff: float,
                reads: float = 1.0) -> str:
    """What widens the interval of a side difference most, in words ("the left chin
    pad followed on 3 of 4 points", "the right corrugator not holding still at the
    peak"); empty without parts."""
    if sr is None or sl is None:
        return ""
    name = group.replace("_", " ")
    var: dict[tuple[str, str], float] = {}
    for side, s in (("right", sr), ("left", sl)):
        for part, v in s.parts().items():
            if np.isfinite(v) and part != "scale":
                var[(side, part)] = v * v
    # The method's shortfall acts on the difference itself. (The shared scale does
    # too, and is a few percent of it: never the widest part of a difference.)
    short = abs(diff) * (1 / reads - 1) / Z95 if 0 < reads < 1 else 0.0  # as an SE
    if short > 0:
        var[("", "reads")] = short * short
    if not var or max(var.values()) <= 0:
        return ""
    side, part = max(var, key=var.__getitem__)
    if part == "reads":
        return f"this movement reading short (about {reads:.0%} of the truth)"
    s = sr if side == "right" else sl
    lost = s.points_total - s.points_used
    if part == "points" or (lost > 0 and part in ("hold", "points")):
        if lost > 0:
            return f"the {side} {name} followed on {s.points_used} of {s.points_total} points"
    return _PART_WORDS[part].format(side=side, group=name)


def change_interval(before: float, b_lo: float, b_hi: float, after: float, a_lo: float,
                    a_hi: float) -> tuple[float, float]:
    """The 95 % interval of ``after - before`` from both values' intervals: each
    value's half-widths on the side the change looks toward add in quadrature (the
    two recordings' errors are independent). NaN where either has no interval."""
    if not np.isfinite([before, b_lo, b_hi, after, a_lo, a_hi]).all():
        return float("nan"), float("nan")
    d = after - before
    # after - before is larger than read when after reads low or before reads high.
    up = math.hypot(a_hi - after, before - b_lo)
    down = math.hypot(after - a_lo, b_hi - before)
    return d - down, d + up


def changed(before: float, b_lo: float, b_hi: float, after: float, a_lo: float,
            a_hi: float) -> bool | None:
    """Whether a value changed beyond both recordings' intervals: the change's 95 %
    interval excludes 0. None without intervals."""
    lo, hi = change_interval(before, b_lo, b_hi, after, a_lo, a_hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return bool(lo > 0 or hi < 0)


def _finite_mean(x: np.ndarray) -> float:
    """Mean of the finite values; NaN (without numpy's warning) when there are none."""
    v = np.asarray(x, float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")
