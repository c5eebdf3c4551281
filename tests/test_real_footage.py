"""Real footage (no ground truth): robustness and mirror consistency.

The clip is ``../shared/data/pexels_wolfganglanger_cry_laugh.mp4`` next to the
repository (640x360, 23.976 fps, 19.7 s; crying with hands over the face, then
laughing with head turns; not a protocol recording). It is not part of the
repository: every test here skips when it is absent.

Mirror consistency (MEASUREMENTS.md section 5): a horizontally flipped copy
analysed with ``--mirrored`` must give the same per-side numbers. ``--mirrored``
flips the decoded pixels back before anything else, so a *lossless* flipped copy
must reproduce the original exactly; a copy re-encoded with a lossy codec (what
a phone or an editor would write) differs by the codec's noise, and on this
clip that noise is large (see docs/METHOD.md and ``benchmarks/accuracy.py
--real``: re-encoding alone moves the cued values by 1-4 mm). Those
values are flagged ``unusable``; the safety property tested here is that any
value reported as a finding (``ok``/``low``) reproduces.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REAL_CLIP, analyze

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from cases import write_flipped  # noqa: E402

CLIP = REAL_CLIP
CUES = "step,start_s,end_s\nfrown,1.0,4.0\nsmile,10.0,19.0\n"
"""Crying with the brows pulled together (1-4 s) and the laughing part (10-19 s)."""

EXACT_MM = 0.01
"""Lossless flip + --mirrored vs the original; measured: 0.000 mm on every value."""
FINDING_MM = 1.0
"""Lossy (mp4v) flip + --mirrored vs the original, for values reported as findings
(ok/low). 1 mm is the dominant-side threshold: a finding that moved more could
change the side called. Measured on this clip: no value of the cued windows is
reported as a finding (all unusable: head turns of 30-40 degrees, points lost); the
unusable smile values differed by 3.9 mm (right) and 1.2 mm (left) at commit
9085e51; since ab7626b (measured at 26b08bb) the smile gives no value in either run
(points not followed) and the re-encoded copy loses the frown as well."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CLIP.exists(), reason=f"real clip not found: {CLIP}"),
]


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "asymmetry.csv").set_index(["step", "muscle_group", "measure"])


def _copy(dst: Path, fourcc: str, flip: bool = True) -> Path:
    """The real clip re-written (flipped or not) with the benchmark's own writer."""
    assert write_flipped(CLIP, dst, fourcc, flip) > 400
    return dst


@pytest.fixture(scope="module")
def cued(tmp_path_factory) -> tuple[Path, Path]:
    """The original clip analysed with the cue windows."""
    d = tmp_path_factory.mktemp("real")
    cues = d / "cues.csv"
    cues.write_text(CUES)
    return cues, analyze(CLIP, d / "orig", "--cues", str(cues))


def test_real_clip_gives_a_report_with_steps_missing_not_invented(tmp_path):
    # analyze() asserts exit code 0.
    out = analyze(CLIP, tmp_path / "out")
    for f in ("report.html", "asymmetry.csv", "metrics.csv", "session.json", "landmarks.npz"):
        assert (out / f).stat().st_size > 0, f
    a = pd.read_csv(out / "asymmetry.csv")
    prim = a[a["primary"]].set_index("step")
    # Nothing in this clip is a protocol step performed on cue: every step is
    # reported missing, without numbers or a side, and said so in the warnings.
    assert list(prim.index) == ["frown", "raise", "squint", "eee", "smile"]
    assert (prim["quality"] == "missing").all(), prim[["quality", "reason"]]
    assert prim["right_mm"].isna().all() and prim["left_mm"].isna().all()
    assert (prim["dominant_side"] == "undetermined").all()
    s = json.loads((out / "session.json").read_text())
    assert not any(x["found"] for x in s["steps"])
    for name in prim.index:
        assert any(f"'{name}' not found" in w for w in s["warnings"]), name
    clip = s["clips"][0]
    assert (clip["width"], clip["height"]) == (640, 360)
    assert clip["frames"] == 472


def test_mirror_consistency_lossless_flip_is_exact(tmp_path, cued):
    cues, orig = cued
    flipped = _copy(tmp_path / "flip.avi", "FFV1")
    mir = analyze(flipped, tmp_path / "flip", "--mirrored", "--cues", str(cues))
    a, b = _rows(orig), _rows(mir)
    assert list(a.index) == list(b.index)
    for key in a.index:
        assert a.loc[key, "quality"] == b.loc[key, "quality"], key
        for col in ("right_mm", "left_mm"):
            va, vb = a.loc[key, col], b.loc[key, col]
            assert math.isnan(va) == math.isnan(vb), (key, col, va, vb)
            if not math.isnan(va):
                assert vb == pytest.approx(va, abs=EXACT_MM), (key, col)


def test_mirror_consistency_reencoded_flip_findings_reproduce(tmp_path, cued):
    cues, orig = cued
    flipped = _copy(tmp_path / "flip.mp4", "mp4v")
    mir = analyze(flipped, tmp_path / "flip", "--mirrored", "--cues", str(cues))
    a, b = _rows(orig), _rows(mir)
    assert list(a.index) == list(b.index)
    assert a.loc[("smile", "zygomaticus", "displacement_mm"), "quality"] != "missing"
    for key in a.index:
        findings = {a.loc[key, "quality"], b.loc[key, "quality"]} & {"ok", "low"}
        if not findings:
            continue  # unusable or missing in both runs: not reported as a finding
        # A resting row's finding is the side-to-side difference; its levels are
        # absolute positions (the mouth corner ~66 mm below the irises) that
        # re-encoding moves together on both sides.
        cols = ("diff_mm",) if key[0] == "rest" else ("right_mm", "left_mm")
        for col in cols:
            assert b.loc[key, col] == pytest.approx(a.loc[key, col], abs=FINDING_MM), (key, col)
