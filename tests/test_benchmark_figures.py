"""The accuracy benchmark's consistency figures count what the report shows.

The target (mirror consistency <= 0.3 mm) is on findings: values flagged
``unusable`` in both runs are never listed to the clinician and are left out of
it, while a flag that changes under the flip is reported as an inconsistency.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from consistency import flag_disagreements, mean_abs_diff  # noqa: E402


def _row(right: float, left: float, quality: str) -> dict:
    return {"right_mm": str(right), "left_mm": str(left), "quality": quality}


def test_findings_leave_out_values_unusable_in_either_run() -> None:
    key_ok, key_bad = ("smile", "zygomaticus", "d"), ("frown", "corrugator", "d")
    a = {key_ok: _row(3.0, 2.0, "ok"), key_bad: _row(3.0, 5.0, "unusable")}
    b = {key_ok: _row(3.2, 2.0, "low"), key_bad: _row(1.0, 2.7, "unusable")}
    every, _ = mean_abs_diff(a, b)
    findings, detail = mean_abs_diff(a, b, findings=True)
    assert every == pytest.approx((0.2 + 0.0 + 2.0 + 2.3) / 4)
    assert findings == pytest.approx(0.1)
    assert [d[0] for d in detail] == [key_ok]
    assert flag_disagreements(a, b) == []


def test_a_flag_that_changes_under_the_flip_is_listed() -> None:
    key = ("pout", "mentalis", "d")
    a, b = {key: _row(1.0, 1.0, "ok")}, {key: _row(1.1, 1.0, "unusable")}
    assert flag_disagreements(a, b) == ["pout/mentalis (ok -> unusable)"]
    assert flag_disagreements(b, a) == ["pout/mentalis (unusable -> ok)"]
    assert mean_abs_diff(a, b, findings=True)[1] == []
