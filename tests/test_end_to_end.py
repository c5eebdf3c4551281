"""End-to-end: generated consult videos with known truth through `movement analyze`."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from conftest import TEST_AMPLITUDES, analyze, load_session, make_consult

from movement.analysis.dominance import dominant_side
from movement.protocol import load_protocol

MM_TOL = 0.6  # per side, any step (the benchmark holds the tighter statistics)
PEAK_TOL_S = 0.25


def _primary(out):
    a = pd.read_csv(out / "asymmetry.csv")
    return a[a["primary"]].set_index("step")


def test_output_contract(consult):
    _, _, out = consult
    for f in ("report.html", "asymmetry.csv", "metrics.csv", "session.json", "landmarks.npz",
              "midline.csv", "rest.csv"):
        assert (out / f).stat().st_size > 0, f
    a = pd.read_csv(out / "asymmetry.csv")
    for col in ("step", "muscle_group", "measure", "right_mm", "left_mm", "asymmetry_index",
                "dominant_side"):
        assert col in a.columns
    m = pd.read_csv(out / "metrics.csv")
    assert {"step", "muscle_group", "side", "peak_s", "rest_mm", "peak_mm"} <= set(m.columns)
    assert set(m["side"]) == {"right", "left"}
    s = load_session(out)
    assert s["patient"] == "p1" and s["label"] == "baseline" and s["date"] == "2026-11-27"
    clip = s["clips"][0]
    assert clip["width"] == 800 and clip["height"] == 450 and abs(clip["fps"] - 30) < 0.01
    assert 0.3 < clip["scale"]["mm_per_px"] < 1.5
    assert [x["name"] for x in s["steps"]] == ["frown", "raise", "squint", "eee", "smile"]
    npz = np.load(out / "landmarks.npz")
    assert npz["mm"].shape == (clip["frames"], 478, 2)
    # Every step's points start where its keyframe's cut detections put them, and
    # the file says where: close to the tracking pass's points, not the same.
    assert [x["keyframe_points"] for x in s["steps"]] == ["detected"] * 5
    keys = sorted({x["keyframe"] for x in s["steps"]})
    assert npz["keyframes"].tolist() == keys
    assert npz["keyframe_px"].shape == (len(keys), 478, 2)
    d = np.linalg.norm(npz["keyframe_px"] - npz["px"][keys], axis=-1)
    assert 0.05 < np.median(d) < 3.0


def test_sides_and_millimetres_match_the_truth(consult):
    _, truth, out = consult
    p = _primary(out)
    th = load_protocol("standard").thresholds
    for st in truth["steps"]:
        g = st["groups"][0]
        row = p.loc[st["name"]]
        assert row["quality"] == "ok", (st["name"], row["reason"])
        assert row["right_mm"] == pytest.approx(g["right_mm"], abs=MM_TOL), st["name"]
        assert row["left_mm"] == pytest.approx(g["left_mm"], abs=MM_TOL), st["name"]
        # The side call is checked where the truth is clear of the thresholds
        # (the benchmark measures the borderline pairs statistically).
        diff = abs(g["right_mm"] - g["left_mm"])
        if diff >= 1.5 or diff <= 0.35:
            expected = dominant_side(g["right_mm"], g["left_mm"], th)
            assert row["dominant_side"] == expected, st["name"]


def test_steps_found_at_their_peaks(consult):
    _, truth, out = consult
    found = {x["name"]: x for x in load_session(out)["steps"]}
    for st in truth["steps"]:
        f = found[st["name"]]
        assert f["found"]
        assert abs(f["peak_s"] - st["peak_s"]) <= PEAK_TOL_S, st["name"]
        assert f["start_s"] < st["peak_s"] < f["end_s"]


@pytest.mark.slow
def test_mirrored_selfie_gives_the_same_sides(consult, mirrored_consult):
    a, b = _primary(consult[2]), _primary(mirrored_consult[2])
    # MEASUREMENTS.md section 5: mirror consistency is the mean |difference| per
    # side (target 0.3 mm); no single value may differ by more than 0.7 mm (the
    # inner-brow frown on this photo's faint brows is the least stable reading).
    diffs = np.abs(np.r_[b["right_mm"] - a["right_mm"], b["left_mm"] - a["left_mm"]])
    assert diffs.mean() <= 0.3, diffs
    assert diffs.max() <= 0.7, diffs
    for step in a.index:
        # Sides must agree wherever the difference is clear of the 1 mm threshold.
        # The frown is left out here: on this photo's faint left brow the medial
        # pull reads up to 0.6 mm apart between a video and its mirror image (a
        # known limit, docs/METHOD.md); its values are held by the checks above.
        if step != "frown" and abs(abs(a.loc[step, "diff_mm"]) - 1.0) > 0.3:
            assert b.loc[step, "dominant_side"] == a.loc[step, "dominant_side"], step


@pytest.mark.slow
def test_skipped_step_is_reported_missing(tmp_path):
    video, truth = make_consult(tmp_path, "skip", skip=("squint",), seed=5)
    p = _primary(analyze(video, tmp_path / "out"))
    assert p.loc["squint", "quality"] == "missing"
    assert p.loc["squint", "dominant_side"] == "undetermined"
    for st in truth["steps"]:
        assert p.loc[st["name"], "quality"] == "ok"


@pytest.mark.slow
def test_one_clip_per_step(tmp_path):
    from movement import synth

    clips = []
    for name in ("raise", "smile"):
        r, lft = TEST_AMPLITUDES[name]
        step = synth.StepMotion(name, 1.5, 3.0, 4.5, r, lft)
        spec = synth.SynthSpec(steps=(step,), duration_s=5.5, frame_size=(800, 450),
                               noise_sigma=1.0, seed=7)
        synth.make_video(spec, tmp_path / f"{name}.mp4")
        clips.append(tmp_path / f"{name}.mp4")
    out = analyze(clips[0], tmp_path / "out", str(clips[1]), "--steps", "raise,smile")
    p = _primary(out)
    assert list(p.index) == ["raise", "smile"]
    for name in ("raise", "smile"):
        r, lft = TEST_AMPLITUDES[name]
        assert p.loc[name, "right_mm"] == pytest.approx(r, abs=MM_TOL)
        assert p.loc[name, "left_mm"] == pytest.approx(lft, abs=MM_TOL)
    assert len(load_session(out)["clips"]) == 2


def test_report_is_self_contained(consult):
    html = (consult[2] / "report.html").read_text()
    assert html.count("<script") >= 2  # plotly.js once, then the figures
    # Nothing loaded from elsewhere: no external scripts, stylesheets or images.
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=[\"']?(https?:)?//", html)
    assert html.count("Plotly.newPlot") >= 5
    assert "data:image/jpeg;base64," in html
