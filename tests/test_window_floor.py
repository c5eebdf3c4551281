"""The generator's truth against what an ideal tracking window reads of it.

``benchmarks/window_floor.py`` reads each step's movement, noise-free and started at
the truth, on the photo, on a canvas of random texture and under a pure shift. Where
the field is broad (raise, smile, eee, clench) a window on ideal texture must read
the generator's truth: a truth read at the wrong place (``p + f(p)`` instead of
solving ``q = p + f(q)``, MEASUREMENTS.md §5) is 5-10 % off. A pure shift must read
1 everywhere (the tracker's window settings are unbiased), and no step may read
below the floor documented in docs/METHOD.md §7.7.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from window_floor import floors  # noqa: E402

BROAD = ("raise", "smile", "eee", "clench")


@pytest.fixture(scope="module")
def rows():
    return {r.step: r for r in floors()[1]}


def test_every_measured_step_is_read(rows) -> None:
    assert set(rows) >= {"frown", "raise", "eee", "smile", "pout", "scrunch",
                         "gummy_smile", "sad_mouth", "clench"}
    assert all(r.points >= 2 and r.truth_mm > 0.5 for r in rows.values())


def test_a_pure_shift_reads_its_truth(rows) -> None:
    for r in rows.values():
        assert r.shift[0] == pytest.approx(1.0, abs=0.03), r


def test_an_ideal_window_reads_the_truth_of_broad_fields(rows) -> None:
    for name in BROAD:
        assert rows[name].ideal[0] == pytest.approx(1.0, abs=0.04), rows[name]


def test_no_step_reads_below_the_window_floor(rows) -> None:
    for r in rows.values():
        assert 0.9 <= r.ideal[0] <= 1.05, r
        assert r.ideal[1] >= 0.85, r
