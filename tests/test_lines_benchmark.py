"""The lines benchmark's scoring counts what its page says it counts."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.lines import Consult, Result, clear_kind, consults, score, spearman  # noqa: E402


def _r(step: str, kind: str, depth: tuple[float, float], value: tuple[float, float],
       call: str, face: str = "older", usable: bool = True) -> Result:
    c = Consult(face, "720p", step, kind, (3.0, 3.0), depth, 1, "clean", 1)
    return Result(c, value, (1.0, 1.0), usable, call)


def test_clear_pairs_need_a_ratio_and_a_depth():
    assert clear_kind((0.5, 0.2)) == "right"
    assert clear_kind((0.1, 0.4)) == "left"
    assert clear_kind((0.5, 0.4)) == ""  # not 1.6 times
    assert clear_kind((0.1, 0.02)) == ""  # too shallow to be clear
    assert clear_kind((0.3, 0.3)) == ""


def test_spearman_handles_ties_and_too_few():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [5, 5, 7, 7]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))
    assert math.isnan(spearman([1, 2, float("nan")], [1, 2, 3]))


def test_score_counts_wrong_and_unusable_calls_and_false_calls():
    rs = [
        _r("raise", "right", (0.5, 0.1), (10.0, 2.0), "right"),
        _r("raise", "left", (0.1, 0.5), (2.0, 10.0), "right"),  # wrong side
        _r("raise", "left", (0.1, 0.6), (2.0, 12.0), "unusable", usable=False),
        _r("raise", "balanced", (0.3, 0.3), (6.0, 6.0), "balanced"),
        _r("raise", "balanced", (0.4, 0.4), (6.0, 12.0), "left"),
        _r("frown", "none", (0.0, 0.0), (0.5, 3.0), "left"),
        _r("frown", "none", (0.0, 0.0), (0.5, 0.3), "uncertain"),
    ]
    s = score(rs)
    assert (s.decisive, s.right, s.unusable) == (3, 1, 1)
    assert (s.fold_free, s.false_calls) == (2, 1)
    assert (s.balanced, s.balanced_sided) == (2, 1)
    assert s.spearman["forehead"] == pytest.approx(
        spearman([0.5, 0.1, 0.1, 0.5, 0.1, 0.6, 0.3, 0.3, 0.4, 0.4],
                 [10, 2, 2, 10, 2, 12, 6, 6, 6, 12]))


def test_a_saturating_ladder_fails_its_rungs():
    ok = [_r("squint", "ladder", (d, d), (10 * d, 10 * d), "balanced") for d in (0.3, 0.6, 0.9)]
    flat = [_r("squint", "ladder", (d, d), (6.0, 6.0 + d), "balanced", face="darker")
            for d in (0.3, 0.6, 0.9)]
    s = score(ok + flat)
    assert s.ladder_rungs == 8 and s.ladder_ok == 4


def test_consults_are_seeded_and_cover_every_kind():
    a, b = consults("older", "720p", 7), consults("older", "720p", 7)
    assert a == b
    assert {c.kind for c in a} == {"right", "left", "balanced", "none", "ladder"}
    assert {c.condition for c in a if c.kind == "none"} >= {"light", "jpeg"}
    assert max(max(c.depth) for c in a) > 0.6  # folds past the standard generator's 0.6
    assert not any(c.kind == "ladder" for c in consults("older", "1080p", 7))
