"""Shared fixtures: small generated consult videos, built once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from movement import synth
from movement.cli import main

REAL_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / (
    "pexels_wolfganglanger_cry_laugh.mp4")
"""The real clip in ../shared/data (tests that need it skip without it)."""

# Mixed pattern, unlike the bundled sample: left-dominant brows, right-dominant
# eee, balanced squint and smile.
TEST_AMPLITUDES = {
    "frown": (1.4, 2.7),
    "raise": (2.0, 4.5),
    "squint": (1.8, 1.7),
    "eee": (3.0, 1.2),
    "smile": (4.5, 4.3),
}
SIZE = (800, 450)


def make_consult(folder: Path, name: str, skip=(), mirrored=False, **kw) -> tuple[Path, dict]:
    steps = synth.standard_steps(TEST_AMPLITUDES, skip=skip)
    last = max(s.end_s for s in synth.standard_steps(TEST_AMPLITUDES))
    spec = synth.SynthSpec(
        steps=steps, duration_s=last + 1.5, frame_size=SIZE, roll_deg=2.0, shift_px=6.0,
        zoom=0.02, noise_sigma=1.0, mirrored=mirrored, seed=kw.pop("seed", 3), **kw,
    )
    video = folder / f"{name}.mp4"
    truth = synth.make_video(spec, video)
    return video, truth


def analyze(video: Path, out: Path, *extra: str) -> Path:
    res = CliRunner().invoke(main, ["analyze", str(video), "--out", str(out), "-q", *extra])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def consult(tmp_path_factory) -> tuple[Path, dict, Path]:
    d = tmp_path_factory.mktemp("consult")
    video, truth = make_consult(d, "consult")
    out = analyze(video, d / "session", "--patient", "p1", "--label", "baseline",
                  "--date", "2026-11-27")
    return video, truth, out


@pytest.fixture(scope="session")
def mirrored_consult(tmp_path_factory) -> tuple[Path, dict, Path]:
    d = tmp_path_factory.mktemp("mirrored")
    video, truth = make_consult(d, "selfie", mirrored=True)
    return video, truth, analyze(video, d / "session", "--mirrored")


def load_session(out: Path) -> dict:
    return json.loads((out / "session.json").read_text())
