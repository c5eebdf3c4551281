"""The clinic workflow from the README: baseline, treatment, two-week review, compare."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from movement import synth
from movement.cli import main


def _consult(path, raise_rl):
    steps = (
        synth.StepMotion("raise", 1.5, 3.0, 4.5, *raise_rl),
        synth.StepMotion("smile", 6.5, 8.0, 9.5, 4.0, 4.0),
    )
    spec = synth.SynthSpec(steps=steps, duration_s=11.0, frame_size=(640, 360), noise_sigma=1.0)
    return synth.make_video(spec, path)


@pytest.mark.slow
def test_baseline_treatment_review_compare(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    store = tmp_path / "clinic"
    _consult(tmp_path / "week0.mp4", (4.5, 2.0))
    _consult(tmp_path / "week2.mp4", (1.5, 1.8))
    r = run(main, ["analyze", "week0.mp4", "--out", "s0", "-q", "--patient", "anna",
                   "--label", "baseline", "--date", "2026-01-05", "--store", str(store)])
    assert r.exit_code == 0, r.output
    r = run(main, ["treat", "anna", "--date", "2026-01-05", "--product", "Botox",
                   "--muscle-group", "frontalis", "--side", "right", "--units", "6",
                   "--store", str(store)])
    assert r.exit_code == 0, r.output
    r = run(main, ["analyze", "week2.mp4", "--out", "s1", "-q", "--patient", "anna",
                   "--label", "2-week", "--date", "2026-01-19", "--store", str(store)])
    assert r.exit_code == 0, r.output
    # The second report links the patient's comparison, which exists.
    html = (tmp_path / "s1" / "report.html").read_text()
    assert "compare with this patient's other sessions" in html
    assert list((store / "patients").glob("*/comparison.html"))
    r = run(main, ["sessions", "anna", "--store", str(store)])
    assert r.exit_code == 0 and "baseline" in r.output and "2-week" in r.output
    r = run(main, ["compare", "anna", "--out", "cmp", "--store", str(store)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "comparison.csv")))
    right = [x for x in rows if x.get("muscle_group") == "frontalis"]
    assert right, rows[:2]
    text = (tmp_path / "cmp" / "comparison.html").read_text()
    assert "frontalis" in text and "6 U right" in text
    # Re-analysing the baseline replaces it, it does not add a third session.
    r = run(main, ["analyze", "week0.mp4", "--out", "s0", "-q", "--patient", "anna",
                   "--label", "baseline", "--date", "2026-01-05", "--store", str(store)])
    assert r.exit_code == 0, r.output
    r = run(main, ["patients", "--store", str(store)])
    assert r.exit_code == 0
    line = next(x for x in r.output.splitlines() if x.startswith("anna"))
    assert " 2 " in f" {line} "


@pytest.mark.slow
def test_patient_id_cannot_escape_the_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _consult(tmp_path / "v.mp4", (3.0, 1.0))
    store = tmp_path / "clinic"
    r = CliRunner().invoke(main, ["analyze", "v.mp4", "--out", "s", "-q", "--patient",
                                  "../../etc/passwd", "--store", str(store)])
    assert r.exit_code == 0, r.output
    for p in tmp_path.rglob("*"):
        assert p.resolve().is_relative_to(tmp_path.resolve())
    assert not (tmp_path.parent / "etc").exists()


@pytest.mark.parametrize("bad", ["a\x00b", "x" * 500])
def test_invalid_patient_id_fails_before_the_analysis(tmp_path, bad):
    r = CliRunner().invoke(main, ["analyze", str(tmp_path / "missing.mp4"), "--patient", bad,
                                  "--store", str(tmp_path / "st")])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("movement: error:")
