import math

import pytest

from movement.asymmetry import asymmetry_index, dominant_side
from movement.protocol import Thresholds

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


def test_asymmetry_index():
    assert asymmetry_index(3.0, 1.0) == pytest.approx(0.5)
    assert asymmetry_index(1.0, 3.0) == pytest.approx(-0.5)
    assert asymmetry_index(2.0, 0.0) == pytest.approx(1.0)
    assert math.isnan(asymmetry_index(0.0, 0.0))
    assert math.isnan(asymmetry_index(-1.0, -0.5))
