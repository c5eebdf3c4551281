"""End to end: a symmetric step rendered as a turned 3D face (movement.synth.pose3d)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import analyze

from movement import synth
from movement.synth.pose3d import PoseSpec, make_pose_video

YAW = 12.0


@pytest.mark.slow
def test_a_turned_head_does_not_decide_the_dominant_side(tmp_path):
    step = synth.StepMotion("eee", 1.5, 3.0, 4.5, 3.0, 3.0)
    spec = synth.SynthSpec(steps=(step,), duration_s=5.5, frame_size=(800, 450),
                           noise_sigma=1.0, seed=4)
    video = tmp_path / "turned.mp4"
    truth = make_pose_video(spec, PoseSpec(yaw_deg=YAW), video)
    assert truth["pose"]["yaw_deg"][0] == YAW
    face_on = analyze(video, tmp_path / "face_on", "--steps", "eee")
    imaged = analyze(video, tmp_path / "imaged", "--steps", "eee", "--no-pose-correction")

    def primary(out):
        a = pd.read_csv(out / "asymmetry.csv")
        return a[(a.step == "eee") & a.primary].iloc[0]

    got, raw = primary(face_on), primary(imaged)
    # As imaged, the near side (the patient's right: the face turns to its left)
    # reads larger; face-on the two sides agree.
    assert raw.right_mm - raw.left_mm > 0.5
    assert abs(got.right_mm - got.left_mm) < 0.35
    assert got.dominant_side == "balanced"
    for side in ("right", "left"):
        assert got[f"{side}_mm"] == pytest.approx(3.0, abs=0.5)
    m = pd.read_csv(face_on / "metrics.csv")
    f = m[(m.step == "eee") & (m.muscle_group == raw.muscle_group)].set_index("side")
    assert f.loc["left", "pose_factor"] > f.loc["right", "pose_factor"]
    assert f.loc["right", "yaw_deg"] == pytest.approx(YAW, abs=3.0)
    pose = json.loads((face_on / "session.json").read_text())["steps"][0]["pose"]
    assert pose["rest_yaw_deg"] == pytest.approx(YAW, abs=3.0)
    assert json.loads((imaged / "session.json").read_text())["steps"][0]["pose"] is None
