"""Bad input: one clear line on stderr, a documented exit code, nothing written."""

from click.testing import CliRunner

from movement.cli import main


def _run(args):
    return CliRunner().invoke(main, args)


def _one_line_error(res, code, text):
    assert res.exit_code == code, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("movement: error:"), res.output
    assert text in lines[0]
    assert "Traceback" not in res.output


def test_missing_file(tmp_path):
    _one_line_error(_run(["analyze", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")]),
                    3, "no such file")
    assert not (tmp_path / "o").exists()


def test_empty_file(tmp_path):
    f = tmp_path / "empty.mp4"
    f.write_bytes(b"")
    _one_line_error(_run(["analyze", str(f), "--out", str(tmp_path / "o")]), 3, "empty")


def test_not_a_video(tmp_path):
    f = tmp_path / "notes.mp4"
    f.write_text("this is a text file, not a video\n" * 50)
    _one_line_error(_run(["analyze", str(f), "--out", str(tmp_path / "o")]), 3, "video")
    assert not (tmp_path / "o").exists()


def test_unknown_protocol(tmp_path):
    f = tmp_path / "x.mp4"
    f.write_bytes(b"x")
    _one_line_error(_run(["analyze", str(f), "--protocol", "nope"]), 5, "not found")


def test_wrong_step_names_for_clips(tmp_path):
    f = tmp_path / "x.mp4"
    f.write_bytes(b"x")
    _one_line_error(_run(["analyze", str(f), "--steps", "wink"]), 5, "wink")


def test_bad_date():
    res = _run(["analyze", "x.mp4", "--date", "27/11/2026"])
    assert res.exit_code == 2 and "YYYY-MM-DD" in res.output


def test_protocols_command_lists_and_shows():
    res = _run(["protocols"])
    assert res.exit_code == 0 and "standard" in res.output
    res = _run(["protocols", "standard"])
    assert res.exit_code == 0
    assert "corrugator_procerus" in res.output and "frontalis" in res.output
    assert "sensor=image+affine" in res.output  # the frown's patches are shown
    _one_line_error(_run(["protocols", "nope"]), 5, "not found")


def test_help_is_instant_and_lists_commands():
    res = _run(["--help"])
    assert res.exit_code == 0
    for cmd in ("analyze", "protocols", "synth"):
        assert cmd in res.output


def test_synth_face_that_is_not_there(tmp_path):
    out = tmp_path / "v.mp4"
    _one_line_error(_run(["synth", str(out), "--face", str(tmp_path / "nope.png")]), 2,
                    "no such file")
    _one_line_error(_run(["synth", str(out), "--face", f"{tmp_path / 'c.mp4'}@ten"]), 2,
                    "frame number")
    notes = tmp_path / "notes.png"
    notes.write_text("not an image\n")
    _one_line_error(_run(["synth", str(out), "--face", str(notes)]), 2, "not an image")
    assert not out.exists()
