"""The 95 % intervals: their parts, how they combine, and the calls and changes they
decide (movement.analysis.uncertainty, asymmetry.tables)."""

import math

import numpy as np
import pytest

from movement.analysis.activation import GroupMeasure, StepResult
from movement.analysis.asymmetry import tables
from movement.analysis.steps import StepWindow
from movement.analysis.uncertainty import (
    Z95,
    Spread,
    change_interval,
    changed,
    crease_interval,
    difference_interval,
    effective_count,
    frames_se,
    points_se,
    value_interval,
)
from movement.protocol import load_protocol


def test_correlated_frames_count_as_fewer_readings():
    rng = np.random.default_rng(1)
    white = rng.standard_normal(400)
    # The same noise smoothed over 8 frames: the mean of 400 frames is worth far fewer.
    slow = np.convolve(rng.standard_normal(407), np.ones(8) / 8, mode="valid")
    assert frames_se(white) == pytest.approx(1 / 20, rel=0.2)
    naive = np.std(slow, ddof=1) / 20
    assert frames_se(slow) > 2.5 * naive
    assert math.isnan(frames_se(np.array([1.0, np.nan])))
    assert frames_se(np.full(10, 2.0)) == 0.0


def test_points_not_followed_widen_a_value_and_followed_ones_do_not():
    # Every point followed: the mean is the group's, however unevenly they moved.
    assert points_se(np.array([1.0, 2.0, 3.0, 4.0])) == (0.0, 4)
    se, used = points_se(np.array([1.0, 2.0, 3.0, np.nan]))
    assert used == 3
    assert se == pytest.approx(1.0 / math.sqrt(3) * math.sqrt(1 / 3))
    # One of two followed: the other's movement is unknown, of the followed one's size.
    se, used = points_se(np.array([2.0, np.nan]))
    assert (se, used) == (pytest.approx(2.0), 1)


def test_a_value_interval_adds_its_parts_and_reaches_toward_a_short_reading():
    s = Spread(hold=0.03, rest=0.04, fit=0.12)
    lo, hi = value_interval(2.0, s)
    assert (hi - lo) / 2 == pytest.approx(Z95 * 0.13)
    lo2, hi2 = value_interval(2.0, s, reads=0.8)  # the method reads 80 % of the truth
    assert lo2 == pytest.approx(lo)
    assert hi2 == pytest.approx(2.0 / 0.8 + Z95 * 0.13)
    assert all(math.isnan(x) for x in value_interval(float("nan"), s))


def test_the_shared_scale_scales_the_difference_not_each_side():
    # A 2 % scale spread on 5 and 4.9 mm: 0.1 mm per side, but the difference is
    # 0.1 mm, so the ruler moves it by 0.002 mm.
    sr, sl = Spread(scale=0.1), Spread(scale=0.098)
    lo, hi = difference_interval(5.0, 4.9, sr, sl)
    assert (hi - lo) / 2 == pytest.approx(Z95 * 0.02 * 0.1, rel=1e-6)
    lo, hi = difference_interval(5.0, 4.9, Spread(hold=0.3), Spread(hold=0.4))
    assert (hi - lo) / 2 == pytest.approx(Z95 * 0.5)
    # Reading short shrinks the difference: the interval reaches further out.
    lo, hi = difference_interval(3.0, 1.0, Spread(), Spread(), reads=0.8)
    assert (lo, hi) == (pytest.approx(2.0), pytest.approx(2.5))


def test_a_crease_interval_follows_its_frames_spread():
    rest = np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    steady = crease_interval(rest, np.full(5, 3.0), 1.0, 3.0)
    shaky = crease_interval(rest, np.array([2.0, 4.0, 3.0, 2.5, 3.5]), 1.0, 3.0)
    v = math.sqrt(3.0**2 - 1.0**2)
    assert steady[0] < v < steady[1]
    assert shaky[1] - shaky[0] > 3 * (steady[1] - steady[0])
    assert crease_interval(rest, np.full(5, 3.0), 1.0, 3.0) == steady  # seeded


def test_a_change_is_called_only_beyond_both_visits_intervals():
    assert changed(3.0, 2.8, 3.2, 1.5, 1.3, 1.7) is True
    assert changed(3.0, 2.8, 3.2, 2.8, 2.6, 3.0) is False
    assert changed(3.0, float("nan"), 3.2, 2.8, 2.6, 3.0) is None
    lo, hi = change_interval(3.0, 2.7, 3.1, 2.0, 1.9, 2.4)
    # after - before = -1.0; it is lower when after reads high or before reads low.
    assert lo == pytest.approx(-1.0 - math.hypot(0.1, 0.1))
    assert hi == pytest.approx(-1.0 + math.hypot(0.4, 0.3))


def _measure(side: str, value: float, spread: Spread) -> GroupMeasure:
    lo, hi = value_interval(value, spread)
    return GroupMeasure("raise", "frontalis", "displacement_mm", "up", "image", True, side,
                        value, 0.0, value, float("nan"), (), (20,), spread, lo, hi)


@pytest.mark.parametrize(
    "right, left, sr, sl, call, words",
    [
        (3.0, 1.5, Spread(hold=0.05), Spread(hold=0.05), "right", "all of it meets"),
        (2.2, 1.0, Spread(hold=0.3), Spread(points=0.1, points_used=3, points_total=4),
         "uncertain", "the right frontalis not holding still at the peak"),
        (2.2, 1.0, Spread(hold=0.05),
         Spread(points=0.35, points_used=3, points_total=4), "uncertain",
         "the left frontalis followed on 3 of 4 points"),
        (2.0, 1.9, Spread(hold=0.05), Spread(hold=0.05), "balanced", "none of it meets"),
    ],
)
def test_tables_give_the_intervals_the_call_and_its_reason(right, left, sr, sl, call, words):
    window = StepWindow("raise", True, 10, 20, 30, (1, 2), 5)
    result = StepResult(window, (20,), np.arange(10, 31) / 30.0, np.arange(10, 31),
                        measures=[_measure("right", right, sr), _measure("left", left, sl)],
                        head_inliers=20.0)
    asym, metrics, _ = tables([result], load_protocol("standard"))
    row = asym.iloc[0]
    assert row.dominant_side == call
    assert words in row.call_reason
    assert row.right_lo < right < row.right_hi and row.left_lo < left < row.left_hi
    assert row.diff_lo < right - left < row.diff_hi
    assert list(metrics["points_used"].isna()) == [sr.points_total == 0, sl.points_total == 0]
    assert metrics["value_lo"].tolist() == pytest.approx([row.right_lo, row.left_lo])


def test_an_effective_count_shrinks_with_the_frames_correlation():
    rng = np.random.default_rng(2)
    assert effective_count(rng.standard_normal(100)) == pytest.approx(100, rel=0.25)
    ramp = np.linspace(0.0, 1.0, 30)  # a drift: nearly one reading
    assert effective_count(ramp) < 2.5
    assert effective_count(np.array([np.nan, 1.0])) == 1.0
    assert math.isnan(effective_count(np.array([np.nan])))


@pytest.mark.parametrize("value", [0.0, 0.2, 3.0])
def test_the_method_part_has_a_floor_for_small_movements(value: float):
    """A movement of 0.2 mm is not read to within a share of it: the method's part is
    never below the group's reads_floor_mm, and is the value's share beyond it."""
    from types import SimpleNamespace

    from movement.analysis.uncertainty import value_spread

    g = load_protocol("standard").step("frown").primary
    pts = g.points("right")
    cols = {p: i for i, p in enumerate(pts)}
    n = 20
    rest = np.zeros((len(pts), 2))
    pos = np.zeros((n, len(pts), 2))
    pos[:, :, 0] = value  # every point moved by the value, no noise
    s = value_spread(np.full(n, value), pos, rest, g, "right", cols, np.arange(10, n),
                     np.arange(0, 5), value, SimpleNamespace(spread=0.0), None)
    assert g.reads_floor_mm == pytest.approx(0.09)
    assert s.method == pytest.approx(max(value * g.reads_spread, g.reads_floor_mm))
    assert (s.method > g.reads_floor_mm) == (value * g.reads_spread > g.reads_floor_mm)
    assert s.method >= g.reads_floor_mm


def test_a_method_error_both_sides_share_scales_the_difference():
    """A face that reads a movement short reads it short on both sides: the shared
    share of the method's part scales R - L like the ruler, and the rest of each
    side's part adds as its own. With nothing shared the parts add as before."""
    sr, sl = Spread(method=0.3), Spread(method=0.2)  # 3 mm and 2 mm at a spread of 0.1
    lo0, hi0 = difference_interval(3.0, 2.0, sr, sl, spread=0.1, shared=0.0)
    assert (hi0 - lo0) / 2 == pytest.approx(Z95 * math.hypot(0.3, 0.2))
    lo, hi = difference_interval(3.0, 2.0, sr, sl, spread=0.1, shared=0.6)
    own = 0.3**2 - 0.6 * 0.3**2 + 0.2**2 - 0.6 * 0.2**2
    assert (hi - lo) / 2 == pytest.approx(Z95 * math.sqrt(own + 0.6 * (0.1 * 1.0) ** 2))
    assert hi - lo < hi0 - lo0
    # A floor above the value's share is the side's own, never shared below zero.
    lo2, hi2 = difference_interval(0.2, 0.1, Spread(method=0.09), Spread(method=0.09),
                                   spread=0.06, shared=0.5)
    assert (hi2 - lo2) / 2 > Z95 * 0.09


def test_the_interval_scale_sets_the_half_width_in_standard_errors():
    """A group's interval_scale (the benchmark's calibration) multiplies the 1.96 standard
    errors of a value and of a side difference; the stretch toward a short reading stays."""
    s = Spread(hold=0.1, method=0.2)
    lo, hi = value_interval(2.0, s)
    lo2, hi2 = value_interval(2.0, s, scale=0.5)
    assert (hi2 - lo2) == pytest.approx((hi - lo) / 2)
    lo3, hi3 = value_interval(2.0, s, reads=0.8, scale=0.5)
    assert lo3 == pytest.approx(2.0 - 0.5 * Z95 * s.total())
    assert hi3 == pytest.approx(2.5 + 0.5 * Z95 * s.total())
    dlo, dhi = difference_interval(3.0, 1.0, s, s, spread=0.1, shared=0.3)
    dlo2, dhi2 = difference_interval(3.0, 1.0, s, s, spread=0.1, shared=0.3, scale=1.5)
    assert (dhi2 - dlo2) == pytest.approx(1.5 * (dhi - dlo))
    assert (dlo2 + dhi2) / 2 == pytest.approx(2.0)


def test_tables_apply_the_groups_interval_scale_to_the_difference():
    window = StepWindow("pout", True, 10, 20, 30, (1, 2), 5)
    sr, sl = Spread(hold=0.1, method=0.3), Spread(hold=0.1, method=0.2)

    def measure(side: str, value: float, spread: Spread) -> GroupMeasure:
        lo, hi = value_interval(value, spread)
        return GroupMeasure("pout", "mentalis", "displacement_mm", "up", "image", True, side,
                            value, 0.0, value, float("nan"), (), (20,), spread, lo, hi)

    result = StepResult(window, (20,), np.arange(10, 31) / 30.0, np.arange(10, 31),
                        measures=[measure("right", 3.0, sr), measure("left", 1.5, sl)],
                        head_inliers=20.0)
    ext = load_protocol("extended")
    g = ext.step("pout").primary
    row = tables([result], ext)[0].iloc[0]
    plain = difference_interval(3.0, 1.5, sr, sl, g.reads, g.reads_spread, g.reads_shared)
    scaled = difference_interval(3.0, 1.5, sr, sl, g.reads, g.reads_spread, g.reads_shared,
                                 g.interval_scale)
    assert (row.diff_lo, row.diff_hi) == pytest.approx(scaled, abs=1e-3)
    # The pout's scale is under 1: narrower than the parts' 1.96 standard errors.
    assert g.interval_scale < 1 and row.diff_hi - row.diff_lo < plain[1] - plain[0] - 0.1
