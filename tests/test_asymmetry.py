import math

import numpy as np
import pytest

from movement.analysis.activation import GroupMeasure, StepResult, _line_flags
from movement.analysis.asymmetry import asymmetry_index, tables
from movement.analysis.creases import CreaseChange
from movement.analysis.dominance import dominant_side, near_threshold
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
    "right, left, near",
    [
        (1.566, 0.569, True),  # 0.997 mm: balanced, dominant from 0.9 mm
        (2.0, 1.05, True),  # 0.95 mm
        (2.0, 0.95, True),  # 1.05 mm: dominant, balanced from 1.1 mm
        (5.0, 3.95, True),  # 1.05 mm and 21 %: balanced from 22 %
        (2.0, 0.85, False),  # 1.15 mm: dominant either way
        (3.0, 1.0, False),
        (1.2, 1.1, False),  # 0.1 mm: balanced either way
        (float("nan"), 1.0, False),
    ],
)
def test_a_call_that_10_percent_looser_or_tighter_thresholds_change_is_near(right, left, near):
    assert near_threshold("displacement_mm", right, left, TH) is near


def test_near_threshold_follows_each_measure_rule_and_can_be_off():
    assert not near_threshold("displacement_mm", 1.566, 0.569, Thresholds(near_threshold=0.0))
    # Lines: the deeper side needs an index of 2.0 and 1.3x the other.
    assert near_threshold("crease", 2.1, 1.0, Thresholds())
    assert near_threshold("crease", 3.0, 2.33, Thresholds())  # 1.29x: 1.3 less 10 % of 0.3
    assert not near_threshold("crease", 5.0, 1.0, Thresholds())
    assert load_protocol("standard").thresholds.near_threshold == pytest.approx(0.10)


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


def test_cluttered_line_regions_share_one_reason_whatever_their_index():
    """Each side's strength at rest went into the reason (5.4 and 9.1 on the sample),
    so the two sides' reasons differed and both were printed in full."""

    def flags(rest: float) -> tuple[str, ...]:
        return _line_flags(CreaseChange(float("nan"), rest, rest, np.zeros((2, 2)),
                                        np.eye(3), True))

    assert flags(5.4) == flags(9.1)
    assert flags(5.4) and flags(5.4)[0].startswith("region unreadable")
    assert flags(1.0) == ()
