"""Sessions across measurement versions: the store keeps each session's version, the
comparison never calls a change across versions, and `movement reanalyze` brings a
stored session to the current version from its video.

Stores are built from hand-made session folders (:func:`test_store.make_session`);
the analysis itself is replaced by a stand-in except in one slow test.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_store import BASE_VALUES, make_session, one_line_error

from movement import MEASUREMENT_VERSION, consult
from movement.analysis import pose
from movement.cli import main
from movement.clinic import compare, store

NEW = {**BASE_VALUES, "raise": (3.0, 2.9)}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _with_video(folder: Path, video: Path, stored_path: str | None = None, **options) -> Path:
    """Point the folder's session.json at a real file (its sha256 and path)."""
    meta = json.loads((folder / "session.json").read_text())
    meta["clips"][0].update(sha256=_sha(video), path=stored_path or str(video))
    meta["options"].update(options)
    (folder / "session.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def clinic(tmp_path: Path) -> dict:
    """p1: a baseline measured by an older version (its video beside it) and a review
    measured by the current one."""
    st = tmp_path / "st"
    video = tmp_path / "videos" / "w0.mp4"
    video.parent.mkdir()
    video.write_bytes(b"the baseline consult")
    old = _with_video(make_session(tmp_path / "s", "w0", measurement=None), video,
                      mirrored=True, face="left", cues={"raise": [5.0, 9.0]},
                      pose_correction=False)  # fmt: skip
    sid = store.record_session(st, old, "p1", "baseline", "2026-01-05")
    new = make_session(tmp_path / "s", "w2", NEW)
    store.record_session(st, new, "p1", "2-week", "2026-01-19")
    return dict(store=st, video=video, old=old, sid=sid)


def _reanalyze(*args: str) -> object:
    return CliRunner().invoke(main, ["reanalyze", *args])


# --------------------------------------------------------------------------- the store


def test_a_store_of_the_first_schema_opens_and_its_sessions_count_as_older(tmp_path):
    db = tmp_path / store.DB_NAME
    with closing(sqlite3.connect(db)) as conn:
        for stmt in store.MIGRATIONS[0]:
            conn.execute(stmt)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO patients (id, patient, created) VALUES (1, 'p1', 'x')")
        conn.execute(
            "INSERT INTO sessions (patient_id, video_key, date, recorded, source, content_sha) "
            "VALUES (1, 'abc', '2025-12-01', 'x', 'analyze', 'd')"
        )
        conn.commit()
    [s] = store.list_sessions(tmp_path, "p1")
    assert s.measurement_version == 0
    assert store.schema_version(tmp_path) == store.SCHEMA_VERSION
    sid = store.record_session(tmp_path, make_session(tmp_path, "n"), "p1", "", "2026-01-05")
    assert store.session_tables(tmp_path, sid)["session"]["measurement_version"] == (
        MEASUREMENT_VERSION)


def test_each_session_keeps_its_version_through_export_and_import(clinic, tmp_path):
    versions = [s.measurement_version for s in store.list_sessions(clinic["store"], "p1")]
    assert versions == [0, MEASUREMENT_VERSION]
    from movement.clinic import transfer

    transfer.export_csv(clinic["store"], "p1", tmp_path / "p1.csv")
    transfer.import_csv(tmp_path / "copy", tmp_path / "p1.csv")
    again = [s.measurement_version for s in store.list_sessions(tmp_path / "copy", "p1")]
    assert again == versions


def test_replace_session_keeps_the_id_and_is_one_transaction(clinic, tmp_path, monkeypatch):
    st, sid = clinic["store"], clinic["sid"]
    fresh = _with_video(make_session(tmp_path / "f", "w0-m", NEW, label="baseline"),
                        clinic["video"])
    real = store._put_children

    def crash(conn, *a):
        raise RuntimeError("power cut")

    monkeypatch.setattr(store, "_put_children", crash)
    with pytest.raises(RuntimeError):
        store.replace_session(st, sid, fresh)
    assert store.session_tables(st, sid)["session"]["session_dir"] == str(clinic["old"])
    monkeypatch.setattr(store, "_put_children", real)
    assert store.replace_session(st, sid, fresh) == sid
    t = store.session_tables(st, sid)
    assert t["session"]["session_dir"] == str(fresh) and t["session"]["label"] == "baseline"
    assert t["session"]["measurement_version"] == MEASUREMENT_VERSION
    assert [r["right_mm"] for r in t["asymmetry"] if r["step"] == "raise"] == [3.0]
    assert len(store.list_sessions(st, "p1")) == 2
    # Another session's video cannot take this one's place; an unknown id is said.
    other = make_session(tmp_path / "f", "w2-copy", NEW, video="w2")
    with pytest.raises(store.StoreError, match="already the patient's session"):
        store.replace_session(st, sid, other)
    with pytest.raises(store.StoreError, match="no session 99"):
        store.replace_session(st, 99, fresh)


# --------------------------------------------------------------------------- compare


def test_compare_never_calls_a_change_across_versions(clinic, tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["compare", "p1", "--out", str(out), "--store",
                                    str(clinic["store"])])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "different versions of the measurement" in res.stderr
    assert "movement reanalyze p1 --all-old" in res.stderr
    cmp = compare.build(store.history(clinic["store"], "p1"))
    frontalis = next(g for g in cmp.groups if g.muscle_group == "frontalis")
    assert frontalis.statement.startswith("frontalis: not compared: the baseline was measured "
                                          "by an unrecorded version")  # fmt: skip
    assert "→" not in frontalis.statement and "%" not in frontalis.statement
    with (out / "comparison.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["muscle_group"] == "frontalis"]
    review = rows[1]
    assert review["measurement_version"] == str(MEASUREMENT_VERSION)
    assert review["right_mm"] == "3.000"  # the value is shown ...
    assert review["right_change_mm"] == review["right_change_pct"] == ""  # ... not compared
    assert review["asymmetry_index_change"] == ""
    page = (out / "comparison.html").read_text()
    assert "movement reanalyze p1 --all-old" in page and "not compared" in page


def test_sessions_of_one_version_compare_as_before(clinic, tmp_path):
    st = tmp_path / "one"
    for name, label, date in (("a", "baseline", "2026-01-05"), ("b", "2-week", "2026-01-19")):
        store.record_session(st, make_session(tmp_path / "o", name, measurement=None), "p1",
                             label, date)  # fmt: skip
    cmp = compare.build(store.history(st, "p1"))
    assert cmp.versions_note == "" and not any("not compared" in g.statement for g in cmp.groups)


# --------------------------------------------------------------------------- reanalyze


@pytest.fixture
def fake_analysis(monkeypatch, tmp_path):
    """write_consult replaced by a stand-in that writes a current-version folder."""
    calls = []

    def write(videos, steps, out, opts, images=True, force=False, progress=None,
              comparison_href=None, attach=None):
        calls.append(dict(videos=list(videos), steps=steps, opts=opts, pose=pose.ENABLED))
        src = make_session(tmp_path / "made", out.name, NEW, label=opts.label, date=opts.date)
        _with_video(src, videos[0])
        shutil.copytree(src, out)

    monkeypatch.setattr(consult, "write_consult", write)
    return calls


def test_reanalyze_all_old_replaces_the_session_with_the_same_options(clinic, fake_analysis):
    st, sid = clinic["store"], clinic["sid"]
    res = _reanalyze("p1", "--all-old", "--store", str(st), "-q")
    assert res.exit_code == 0, res.output
    [call] = fake_analysis  # only the older session
    assert call["videos"] == [clinic["video"]] and call["steps"] is None
    o = call["opts"]
    assert (o.mirrored, o.face, o.cues, o.label, o.date, o.patient) == (
        True, "left", {"raise": (5.0, 9.0)}, "baseline", "2026-01-05", "p1")
    assert [s.name for s in o.protocol.steps] == ["frown", "raise", "squint", "eee", "smile"]
    assert call["pose"] is False and pose.ENABLED is True  # restored after
    t = store.session_tables(st, sid)
    fresh = Path(t["session"]["session_dir"])
    assert fresh == clinic["old"].with_name(f"w0-m{MEASUREMENT_VERSION}")
    assert t["session"]["measurement_version"] == MEASUREMENT_VERSION
    assert (clinic["old"] / "session.json").exists()  # the earlier analysis stays
    assert f"written to {fresh}" in res.output and str(clinic["old"]) in res.output
    assert compare.build(store.history(st, "p1")).versions_note == ""
    # Nothing older is left: a second run has nothing to do.
    res = _reanalyze("p1", "--all-old", "--store", str(st))
    assert res.exit_code == 0 and "nothing to re-analyse" in res.output
    assert len(fake_analysis) == 1


def test_reanalyze_finds_a_recording_kept_in_its_folder_or_a_moved_video(
    clinic, fake_analysis, tmp_path
):
    st = clinic["store"]
    # A `movement record` session: the recording inside the folder, its path relative.
    rec = make_session(tmp_path / "s", "rec", measurement=None, date="2026-02-01")
    (rec / "recording.webm").write_bytes(b"a recording")
    _with_video(rec, rec / "recording.webm", stored_path="recording.webm")
    store.record_session(st, rec, "p1", "", "2026-02-01")
    # The baseline's video moved: the store's path no longer finds it.
    moved = tmp_path / "archive.mp4"
    clinic["video"].rename(moved)
    res = _reanalyze("p1", "--all-old", "--store", str(st), "-q")
    one_line_error(res, 2, "its video (sha256")
    assert "give the file with --video" in res.output and not fake_analysis
    res = _reanalyze("p1", "--all-old", "--video", str(moved), "--store", str(st), "-q")
    assert res.exit_code == 0, res.output
    assert sorted(str(c["videos"][0]) for c in fake_analysis) == sorted(
        [str(moved), str(rec / "recording.webm")])


def test_reanalyze_refuses_a_wrong_or_changed_video_before_writing(clinic, fake_analysis,
                                                                    tmp_path):
    st = clinic["store"]
    wrong = tmp_path / "other.mp4"
    wrong.write_bytes(b"another patient's consult")
    res = _reanalyze("p1", "--session", "baseline", "--video", str(wrong), "--store", str(st))
    one_line_error(res, 2, "not the video of any session to re-analyse")
    clinic["video"].write_bytes(b"edited since")
    res = _reanalyze("p1", "--session", str(clinic["sid"]), "--store", str(st))
    one_line_error(res, 2, "has changed since it was analysed")
    one_line_error(_reanalyze("p1", "--store", str(st)), 2, "--session ID")
    one_line_error(_reanalyze("p1", "--session", "9", "--store", str(st)), 2, "no session '9'")
    assert not fake_analysis
    assert store.list_sessions(st, "p1")[0].measurement_version == 0


def test_a_failed_reanalysis_leaves_the_store_as_it_was(clinic, monkeypatch):
    def fail(*a, **k):
        raise consult.VideoError("truncated")

    monkeypatch.setattr(consult, "write_consult", fail)
    res = _reanalyze("p1", "--all-old", "--store", str(clinic["store"]))
    one_line_error(res, 3, "truncated")
    t = store.session_tables(clinic["store"], clinic["sid"])
    assert t["session"]["session_dir"] == str(clinic["old"])
    assert t["session"]["measurement_version"] == 0


@pytest.mark.slow
def test_reanalyze_a_real_session(consult, tmp_path):
    """One real re-analysis: the generated consult stored as an older version comes back
    at the current one, same id, with the same numbers (same video, same options)."""
    video, _, real = consult
    old = tmp_path / "visit"
    shutil.copytree(real, old)
    meta = json.loads((old / "session.json").read_text())
    del meta["measurement_version"]
    meta["clips"][0]["path"] = str(video.absolute())
    (old / "session.json").write_text(json.dumps(meta))
    st = tmp_path / "st"
    sid = store.record_session(st, old, "p1", "baseline", "2026-11-27")
    res = _reanalyze("p1", "--all-old", "--store", str(st), "-q", "--no-images")
    assert res.exit_code == 0, res.output
    t = store.session_tables(st, sid)
    assert t["session"]["measurement_version"] == MEASUREMENT_VERSION
    fresh = Path(t["session"]["session_dir"])
    assert fresh != old and (old / "report.html").exists() and (fresh / "report.html").exists()
    with (real / "asymmetry.csv").open(newline="") as fh:
        want = {(r["step"], r["muscle_group"], r["measure"]): r for r in csv.DictReader(fh)}
    assert len(t["asymmetry"]) == len(want)
    for r in t["asymmetry"]:
        w = want[(r["step"], r["muscle_group"], r["measure"])]
        assert (r["quality"], r["dominant_side"]) == (w["quality"], w["dominant_side"]), r
        for side in ("right_mm", "left_mm"):
            if w[side]:
                assert r[side] == pytest.approx(float(w[side]), abs=0.02), r
