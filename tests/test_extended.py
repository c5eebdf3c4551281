"""The extended protocol end to end: a generated consult with known truth for the
lower-face steps and speech, one step skipped by the patient."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import TEST_AMPLITUDES, analyze

from movement import synth
from movement.asymmetry import dominant_side
from movement.protocol import load_protocol

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
# and its image-tracked elevation reads up to ~0.6 mm low (docs/METHOD.md §13).
MM_TOL = 0.8


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    d = tmp_path_factory.mktemp("extended")
    spec = synth.standard_spec(
        EXTENDED_AMPLITUDES, protocol="extended", skip=("sad_mouth",), frame_size=(800, 450),
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
            assert row["right_mm"] == pytest.approx(g["right_mm"], abs=MM_TOL), where
            assert row["left_mm"] == pytest.approx(g["left_mm"], abs=MM_TOL), where
            if g["primary"]:
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
    html = (out / "report.html").read_text()
    assert 'id="pairs"' in html and "depressor anguli oris – levator labii" in html
    assert "Lower face width" in html or "lower face width" in html
