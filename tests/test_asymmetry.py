import math

import numpy as np
import pytest

from movement.analysis.activation import GroupMeasure, StepResult
from movement.analysis.asymmetry import asymmetry_index, tables
from movement.analysis.creases import CreaseChange, line_flags
from movement.analysis.dominance import dominant_side, side_call
from movement.analysis.steps import StepWindow
from movement.protocol import Thresholds, load_protocol

TH = Thresholds(min_diff_mm=1.0, min_ratio=0.20)


@pytest.mark.parametrize(
    "right, left, expected",
    [
        (4.2, 2.3, "right"),  # 1.9 mm and 45 %
        (2.3, 4.2, "left"),
        (4.0, 3.5, "balanced"),  # 0.5 mm: too small in mm
        (9.0, 7.9, "balanced"),  # 1.1 mm but only 12 %
        (1.0, 0.0, "right"),  # exactly the thresholds
        (0.0, 0.0, "balanced"),
        (float("nan"), 1.0, "undetermined"),
    ],
)
def test_dominant_side_needs_mm_and_relative_difference(right, left, expected):
    assert dominant_side(right, left, TH) == expected


def test_thresholds_come_from_the_protocol():
    assert dominant_side(4.0, 3.5, Thresholds(min_diff_mm=0.4, min_ratio=0.1)) == "right"


@pytest.mark.parametrize(
    "right, left, diff_iv, expected",
    [
        (3.0, 1.0, (1.6, 2.4), "right"),  # all of it >= 1 mm and 20 %
        (1.0, 3.0, (-2.4, -1.6), "left"),
        (2.0, 1.9, (-0.5, 0.7), "balanced"),  # none of it reaches 1 mm
        (2.0, 1.0, (0.6, 1.4), "uncertain"),  # part of it does
        (1.566, 0.569, (0.9, 1.1), "uncertain"),  # 0.997 mm apart, interval over 1 mm
        (1.566, 0.569, (0.95, 0.99), "balanced"),  # a narrow interval all under 1 mm
        # 1.2 mm apart but left 6 mm: right needs 1.5 mm (20 % of 7.5 mm) all through.
        (7.2, 6.0, (1.1, 1.3), "balanced"),
        (7.2, 6.0, (1.1, 1.6), "uncertain"),
        (float("nan"), 1.0, (0.0, 1.0), "undetermined"),
        # No interval (a session stored without one): the rule on the values.
        (3.0, 1.0, (float("nan"), float("nan")), "right"),
    ],
)
def test_a_side_call_holds_the_whole_interval_against_the_rule(right, left, diff_iv, expected):
    assert side_call("displacement_mm", right, left, TH, diff_iv=diff_iv) == expected


def test_crease_calls_hold_each_sides_interval_against_the_ratio_rule():
    th = Thresholds()  # an index of at least 2.0 and 1.3x the other side
    assert side_call("crease", 5.0, 2.0, th, (4.5, 5.5), (1.5, 2.5)) == "right"
    assert side_call("crease", 3.0, 2.0, th, (2.5, 3.5), (1.5, 2.5)) == "uncertain"
    assert side_call("crease", 2.2, 2.0, th, (2.1, 2.3), (1.9, 2.1)) == "balanced"
    assert side_call("crease", 1.5, 0.1, th, (1.0, 1.9), (0.0, 0.2)) == "balanced"  # < 2.0
    assert side_call("crease", 1.5, 4.0, th, (1.2, 1.8), (3.5, 4.5)) == "left"
    # Counts have no interval: the rule on the values.
    assert side_call("movements", 4, 12, th) == "left"


def test_asymmetry_index():
    assert asymmetry_index(3.0, 1.0) == pytest.approx(0.5)
    assert asymmetry_index(1.0, 3.0) == pytest.approx(-0.5)
    assert asymmetry_index(2.0, 0.0) == pytest.approx(1.0)
    assert math.isnan(asymmetry_index(0.0, 0.0))
    assert math.isnan(asymmetry_index(-1.0, -0.5))


def test_a_reason_both_sides_share_is_said_once():
    """The bundled sample's forehead lines are unreadable on both sides for the same
    long reason; the report's banner printed it twice, once per side."""
    why = "region unreadable: strong edges in it at rest (hair, the brow's edge)"
    measures = [
        GroupMeasure("raise", "forehead", "crease", "crease", "image", False, side,
                     float("nan"), 0.0, 0.0, float("nan"), (why,))
        for side in ("right", "left")
    ]
    window = StepWindow("raise", True, 10, 20, 30, (1, 2), 5)
    result = StepResult(window, (20,), np.arange(10, 31) / 30.0, np.arange(10, 31),
                        measures=measures, head_inliers=20.0)
    asym, _, _ = tables([result], load_protocol("standard"))
    row = asym.iloc[0]
    assert row.quality == "unusable"
    assert row.reason == why


def test_softened_line_regions_share_one_reason_whatever_their_index():
    """A side's own figures kept out of the reason let both sides' reasons be one."""

    def flags(value: float, hi: float) -> tuple[str, ...]:
        return line_flags(CreaseChange(value, 5.0, 4.0, np.zeros((2, 2)), np.eye(3), True,
                                        lo=value - 1.0, hi=hi))

    assert flags(-3.0, -1.0) == flags(-8.0, -6.0)
    assert flags(-3.0, -1.0) and "softened" in flags(-3.0, -1.0)[0]
    assert flags(-3.0, 0.5) == ()  # the interval reaches 0: not surely softened
    assert flags(4.0, 5.0) == ()


def test_cluttered_line_regions_share_one_reason_whatever_their_index():
    """Each side's strength at rest stays out of the reason, so both sides' are one."""

    def flags(rest: float) -> tuple[str, ...]:
        return line_flags(CreaseChange(2.0, rest, rest, np.zeros((2, 2)), np.eye(3), True,
                                        lo=1.0, hi=3.0))

    assert flags(9.5) == flags(14.0)
    assert flags(9.5) and flags(9.5)[0].startswith("region unreadable")
    assert flags(6.0) == ()  # etched skin rests below the rule
