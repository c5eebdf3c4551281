"""The clinic store against a real SQLite file: recording, replacing, concurrency, IDs, export.

Session folders are built by :func:`make_session` in the exact format
``movement analyze`` writes (checked against a real run in
``test_fixture_format_matches_a_real_analyze_folder``), so these tests never
run the video pipeline themselves.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing
import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from movement import MEASUREMENT_VERSION
from movement.analysis.asymmetry import CALL_COLUMNS, INTERVAL_COLUMNS
from movement.analysis.pose import POSE_COLUMNS
from movement.clinic import compare, store, transfer
from movement.clinic.commands import COMMANDS

# (step, muscle group, measure, metrics kind, sensor), as protocols/standard.toml.
STEPS = [
    ("frown", "corrugator_procerus", "displacement_mm", "length", "image"),
    ("raise", "frontalis", "displacement_mm", "up", "image"),
    ("squint", "orbicularis_oculi", "aperture_mm", "aperture", "hybrid:image"),
    ("eee", "platysma", "displacement_mm", "length", "image"),
    ("smile", "zygomaticus", "displacement_mm", "length", "image"),
]
BASE_VALUES = {"frown": (2.9, 1.4), "raise": (4.1, 2.0), "squint": (2.2, 1.1),
               "eee": (1.7, 3.2), "smile": (5.9, 3.8)}  # fmt: skip


def _f(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _dominant(r: float, lft: float) -> str:
    diff, big = r - lft, max(r, lft)
    if abs(diff) >= 1.0 and big > 0 and abs(diff) / big >= 0.2:
        return "right" if diff > 0 else "left"
    return "balanced"


def make_session(
    root: Path,
    name: str,
    values: dict[str, tuple[float, float] | None] | None = None,
    video: str | None = None,
    patient: str = "p1",
    label: str = "",
    date: str = "2026-01-05",
    warnings: tuple[str, ...] = (),
    quality: dict[str, tuple[str, str]] | None = None,
    clips: int = 1,
    measurement: int | None = MEASUREMENT_VERSION,
    half: float | None = None,
) -> Path:
    """A finished session folder, as ``movement analyze`` writes it (no video needed).

    ``values`` maps a step to its (right, left) activation in mm, or ``None``
    for a step not found; ``video`` seeds the clip hash(es), so the same seed
    means "the same video"; ``measurement=None`` writes a session.json that names
    no measurement version (an older one); ``half`` writes each side's 95 % interval as
    the value ± half (blank without: a folder stored before intervals existed reads so).
    """
    values = dict(BASE_VALUES if values is None else values)
    quality = quality or {}
    video = video or name
    folder = root / name
    folder.mkdir(parents=True)
    shas = [hashlib.sha256(f"{video}-{i}".encode()).hexdigest() for i in range(clips)]
    asym, metr, steps_json = [], [], []
    for i, (step, group, measure, kind, sensor) in enumerate(STEPS):
        peak = 3.133 + 5 * i
        v = values.get(step)
        if step not in values:
            continue
        if v is None:
            asym.append([step, group, measure, "True", "", "", "", "", "undetermined", "missing",
                         "step not found in the video", ""] + [""] * len(CALL_COLUMNS))  # fmt: skip
            continue
        r, lft = v
        ai = (r - lft) / (r + lft) if r + lft > 1e-9 else float("nan")
        q, reason = quality.get(step, ("ok", ""))
        calls = [""] * len(CALL_COLUMNS) if half is None else [
            _f(r - half), _f(r + half), _f(lft - half), _f(lft + half),
            _f(r - lft - half * math.sqrt(2)), _f(r - lft + half * math.sqrt(2)),
            f"-the difference's interval, ±{half * math.sqrt(2):.2f} mm"]  # fmt: skip
        asym.append([step, group, measure, "True", _f(r), _f(lft), _f(r - lft), _f(ai),
                     _dominant(r, lft) if q != "unusable" else "undetermined", q, reason,
                     _f(peak)] + calls)  # fmt: skip
        for side, val in (("right", r), ("left", lft)):
            rest = 16.336 if kind == "up" else 6.297 if kind == "aperture" else 0.0
            pk = rest + val if kind == "up" else rest - val if kind == "aperture" else 0.0
            metr.append([step, group, measure, kind, sensor, side, _f(peak), _f(rest), _f(pk),
                         _f(val), _f(val * 0.9), "0 1 2 3 19 21", "89 90 91 92", "2",
                         "", "0.412", "-1.203", "0.388", "-1.190", "1.004"]
                        + [""] * len(INTERVAL_COLUMNS))  # fmt: skip
        steps_json.append(dict(name=step, found=True, source="auto", start_s=peak - 1.1,
                               peak_s=peak, end_s=peak + 0.9, rest_frames=[0, 1, 2],
                               keyframe=2, peak_frames=[89, 90], head_fit_inliers=16.8,
                               points_lost_fraction=0.2,
                               midline_drift_mm={"mouth": 0.1, "chin": 0.03},
                               quality=dict(verdict="ok", reasons=[], instruction="")))  # fmt: skip
    # The intervals (movement.analysis.uncertainty) and the pose columns
    # (movement.analysis.pose) follow the stored ones in the files.
    _write_csv(folder / "asymmetry.csv", store.ASYMMETRY_COLUMNS + CALL_COLUMNS, asym)
    _write_csv(folder / "metrics.csv", store.METRICS_COLUMNS + POSE_COLUMNS + INTERVAL_COLUMNS,
               metr)
    _write_csv(folder / "midline.csv", store.MIDLINE_COLUMNS,
               [[s, p, "0.107", "left"] for s in values for p in ("mouth", "chin")])  # fmt: skip
    _write_csv(folder / "rest.csv", store.REST_COLUMNS,
               [["brow_height", "16.039", "15.507", "0.532", "right"],
                ["palpebral_aperture", "6.268", "6.390", "-0.123", "left"]])  # fmt: skip
    clip_json = [dict(path=f"videos/{video}-{i}.mp4", sha256=sha, width=960, height=540,
                      fps=30.0, frames=795, duration_s=26.47, rotation=0, codec="FMP4",
                      mirrored=False, timing_s={"steps": {"wall": 0.1, "cpu": 0.1}},
                      scale=dict(mm_per_px=0.54, iris_px=21.7,
                      iris_spread=0.03, ipd_mm=64.7, frames_used=795),
                      rest_pose=dict(yaw_deg=-0.7, pitch_deg=-1.9),
                      tracking=dict(face_tracked_fraction=1.0, multiple_faces_fraction=0.0,
                      roll_range_deg=[-5.3, -1.1], yaw_range_deg=[-2.6, 0.9]),
                      steps=steps_json if i == 0 else [])
                 for i, sha in enumerate(shas)]  # fmt: skip
    meta = dict(
        software=dict(name="movement", version="0.1.0"), created="2026-11-27T15:05:29+00:00",
        patient=patient, label=label, date=date,
        protocol=dict(name="standard", version=1, path="/x/protocols/standard.toml",
                      steps=[s[0] for s in STEPS],
                      thresholds=dict(min_diff_mm=1.0, min_ratio=0.2)),
        options=dict(mirrored=False, face="largest", cues=None, pose_correction=True),
        clips=clip_json,
        steps=steps_json, warnings=list(warnings),
        stages=[dict(stage="landmarks", method="MediaPipe FaceMesh")],
    )  # fmt: skip
    if measurement is not None:
        meta["measurement_version"] = measurement
    (folder / "session.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (folder / "report.html").write_text("<!DOCTYPE html><title>report</title>", encoding="utf-8")
    (folder / "landmarks.npz").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return folder


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def cli() -> click.Group:
    """The clinic commands in a group, as the lead adds them to ``movement``."""
    return click.Group("movement", commands=COMMANDS)


def run(*args: str) -> object:
    return CliRunner().invoke(cli(), list(args))


def one_line_error(res: object, code: int, text: str) -> None:
    assert res.exit_code == code, res.output  # type: ignore[attr-defined]
    lines = [x for x in res.output.splitlines() if x.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("movement: error:"), res.output  # type: ignore[attr-defined]
    assert text in lines[0], lines[0]
    assert "Traceback" not in res.output  # type: ignore[attr-defined]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _count(db: Path, sql: str, args: tuple = ()) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, args).fetchone()[0]


# --------------------------------------------------------------------------- format


def test_columns_match_the_analysis_contract():
    from movement.analysis import asymmetry

    assert store.ASYMMETRY_COLUMNS == asymmetry.ASYMMETRY_COLUMNS
    assert store.CALL_COLUMNS == asymmetry.CALL_COLUMNS
    assert store.METRICS_COLUMNS == asymmetry.METRICS_COLUMNS


def test_fixture_format_matches_a_real_analyze_folder(consult, tmp_path):
    """The hand-made folders follow what analyze really writes, and a real one records."""
    real = consult[2]
    fake = make_session(tmp_path / "f", "s")
    for name in ("asymmetry.csv", "metrics.csv", "midline.csv", "rest.csv"):
        header = (real / name).read_text().splitlines()[0]
        assert header == (fake / name).read_text().splitlines()[0]
    rj, fj = (json.loads((p / "session.json").read_text()) for p in (real, fake))
    assert set(rj) == set(fj)
    assert set(rj["clips"][0]) == set(fj["clips"][0])
    sid = store.record_session(tmp_path / "st", real, "p1", "baseline", "2026-11-27")
    t = store.session_tables(tmp_path / "st", sid)
    with (real / "asymmetry.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(t["asymmetry"]) == len(rows) and len(rows) >= 5
    for got, want in zip(t["asymmetry"], rows, strict=True):
        assert got["step"] == want["step"] and got["quality"] == want["quality"]
        if want["right_mm"]:
            assert got["right_mm"] == float(want["right_mm"])
    assert t["clips"][0]["sha256"] == rj["clips"][0]["sha256"]


# --------------------------------------------------------------------------- recording


def test_record_session_stores_everything(tmp_path):
    folder = make_session(tmp_path, "s1", warnings=("head turned up to 22 degrees",), clips=2)
    st = tmp_path / "clinic"
    sid = store.record_session(st, folder, "Anna Müller", "baseline", "2026-01-05")
    db = st / store.DB_NAME
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(st.stat().st_mode) == 0o700
    assert store.schema_version(st) == store.SCHEMA_VERSION == 3
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    t = store.session_tables(st, sid)
    s = t["session"]
    assert (s["date"], s["label"], s["protocol"], s["source"]) == (
        "2026-01-05", "baseline", "standard", "analyze")
    assert s["report_path"] == str((folder / "report.html").absolute())
    assert s["landmarks_path"] == str((folder / "landmarks.npz").absolute())
    assert Path(s["session_dir"]).is_absolute()
    assert json.loads(s["session_json"])["clips"][1]["sha256"] == t["clips"][1]["sha256"]
    assert len(t["clips"]) == 2 and s["video_key"] == " ".join(c["sha256"] for c in t["clips"])
    assert len(t["asymmetry"]) == 5 and len(t["metrics"]) == 10
    assert len(t["midline"]) == 10 and len(t["rest"]) == 2
    raise_row = [r for r in t["asymmetry"] if r["step"] == "raise"][0]
    assert (raise_row["right_mm"], raise_row["left_mm"], raise_row["primary"]) == (4.1, 2.0, True)
    assert raise_row["dominant_side"] == "right"
    assert t["warnings"] == ["head turned up to 22 degrees"]
    [p] = store.list_patients(st)
    assert p.patient == "Anna Müller" and p.sessions == 1 and p.treatments == 0


def test_missing_step_is_stored_as_missing_not_zero(tmp_path):
    folder = make_session(tmp_path, "s", values={**BASE_VALUES, "frown": None})
    sid = store.record_session(tmp_path / "st", folder, "p1", "", "2026-01-05")
    frown = store.session_tables(tmp_path / "st", sid)["asymmetry"][0]
    assert frown["quality"] == "missing" and frown["right_mm"] is None


def test_reanalysing_the_same_video_replaces_not_duplicates(tmp_path):
    st = tmp_path / "st"
    other = store.record_session(st, make_session(tmp_path, "other"), "p1", "b", "2026-01-01")
    before_other = store.session_tables(st, other)
    a = store.record_session(st, make_session(tmp_path, "a", video="v"), "p1", "x", "2026-01-05")
    # Same video, new numbers and label (re-analysed with another protocol setting).
    again = make_session(tmp_path, "a2", video="v", values={"raise": (1.0, 1.0)})
    b = store.record_session(st, again, "p1", "2-week", "2026-01-19")
    assert a == b
    db = st / store.DB_NAME
    assert _count(db, "SELECT count(*) FROM sessions") == 2
    t = store.session_tables(st, a)
    assert [r["step"] for r in t["asymmetry"]] == ["raise"]
    assert len(t["metrics"]) == 2 and t["session"]["label"] == "2-week"
    assert _count(db, "SELECT count(*) FROM asymmetry WHERE session_id = ?", (a,)) == 1
    after_other = store.session_tables(st, other)
    after_other["session"].pop("recorded"), before_other["session"].pop("recorded")
    assert after_other == before_other
    # The same video for another patient is that patient's own session.
    c = store.record_session(st, again, "p2", "", "2026-01-19")
    assert c != a and _count(db, "SELECT count(*) FROM sessions") == 3


def test_a_crash_half_way_leaves_no_half_session(tmp_path, monkeypatch):
    st = tmp_path / "st"
    keep = store.record_session(st, make_session(tmp_path, "keep"), "p1", "", "2026-01-01")
    real = store._insert_rows

    def crash(conn, table, *a):
        if table == "metrics":
            raise RuntimeError("power cut")
        return real(conn, table, *a)

    monkeypatch.setattr(store, "_insert_rows", crash)
    with pytest.raises(RuntimeError):
        store.record_session(st, make_session(tmp_path, "new"), "p1", "", "2026-01-05")
    with pytest.raises(RuntimeError):  # a replacement that crashes keeps the old numbers
        changed = make_session(tmp_path, "k2", video="keep", values={"raise": (9.0, 9.0)})
        store.record_session(st, changed, "p1", "", "2026-01-01")
    monkeypatch.setattr(store, "_insert_rows", real)
    db = st / store.DB_NAME
    assert _count(db, "SELECT count(*) FROM sessions") == 1
    assert _count(db, "SELECT count(*) FROM asymmetry") == 5
    assert _count(db, "SELECT count(*) FROM clips") == 1
    assert store.session_tables(st, keep)["asymmetry"][1]["right_mm"] == 4.1


def test_a_folder_that_grew_a_clip_replaces_its_stored_session(tmp_path, monkeypatch):
    """`movement record` re-recording a step: the folder's session now has two clips
    (a new video key). With replace_folder it replaces the session stored from that
    folder (same id), in one transaction; without, it is a visit of its own."""
    import shutil

    st = tmp_path / "st"
    db = st / store.DB_NAME
    other = store.record_session(st, make_session(tmp_path, "other"), "p1", "", "2026-01-01")
    folder = make_session(tmp_path, "visit", video="v")
    first = store.record_session(st, folder, "p1", "", "2026-01-05")
    # The other patient's session from a folder of the same name stays theirs.
    theirs = store.record_session(st, folder, "p2", "", "2026-01-05")

    def regrow(video: str, values: dict) -> None:
        grown = make_session(tmp_path / video, "visit", video=video, clips=2, values=values)
        shutil.rmtree(folder)
        grown.rename(folder)

    regrow("redo1", {**BASE_VALUES, "eee": (1.0, 3.5)})
    sha1 = hashlib.sha256(b"redo1-0").hexdigest()
    sha2 = hashlib.sha256(b"redo1-1").hexdigest()
    # The report's comparison link counts the replacement once, not as a second visit.
    solo = make_session(tmp_path, "solo", video="solo")
    store.record_session(st, solo, "p3", "", "2026-01-05")
    assert store.session_link(st, "p3", [sha1, sha2]) is not None  # a new visit: two
    assert store.session_link(st, "p3", [sha1, sha2], replace_folder=solo) is None

    real = store._insert_rows

    def crash(conn, table, *a):
        if table == "metrics":
            raise RuntimeError("power cut")
        return real(conn, table, *a)

    monkeypatch.setattr(store, "_insert_rows", crash)
    with pytest.raises(RuntimeError):
        store.record_session(st, folder, "p1", "", "2026-01-05", replace_folder=True)
    monkeypatch.setattr(store, "_insert_rows", real)
    kept = store.session_tables(st, first)  # the failed swap kept the old session whole
    assert [c["sha256"] for c in kept["clips"]] == [hashlib.sha256(b"v-0").hexdigest()]
    assert len(kept["metrics"]) == 10 and kept["asymmetry"][3]["right_mm"] == 1.7
    assert _count(db, "SELECT count(*) FROM sessions") == 4

    again = store.record_session(st, folder, "p1", "", "2026-01-05", replace_folder=True)
    assert again == first
    assert _count(db, "SELECT count(*) FROM sessions") == 4
    t = store.session_tables(st, first)
    assert t["session"]["video_key"] == f"{sha1} {sha2}"
    assert [c["sha256"] for c in t["clips"]] == [sha1, sha2]
    assert t["asymmetry"][3]["right_mm"] == 1.0 and t["asymmetry"][3]["dominant_side"] == "left"
    assert _count(db, "SELECT count(*) FROM asymmetry WHERE session_id = ?", (first,)) == 5
    assert store.session_tables(st, theirs)["clips"][0]["sha256"] == kept["clips"][0]["sha256"]
    assert len(store.session_tables(st, other)["asymmetry"]) == 5

    # The same step recorded again once more: still that one session.
    regrow("redo2", {**BASE_VALUES, "eee": (1.2, 3.0)})
    assert store.record_session(st, folder, "p1", "", "2026-01-05", replace_folder=True) == first
    assert _count(db, "SELECT count(*) FROM sessions") == 4
    # Without replace_folder new videos are a visit of their own (what analyze does).
    regrow("redo3", BASE_VALUES)
    assert store.record_session(st, folder, "p1", "", "2026-01-05") != first
    assert _count(db, "SELECT count(*) FROM sessions") == 5


def _writer(args: tuple[str, list[str], str]) -> list[int]:
    st, folders, patient = args
    return [store.record_session(st, Path(f), patient, "", "2026-01-05") for f in folders]


def test_concurrent_writers_lose_nothing(tmp_path):
    """8 processes x 5 sessions on one new store at once, plus all re-recording one video."""
    st = tmp_path / "st"
    shared = make_session(tmp_path, "shared", video="shared")
    jobs = []
    for w in range(8):
        folders = [str(make_session(tmp_path, f"w{w}s{i}")) for i in range(5)]
        folders.insert(2, str(shared))
        jobs.append((str(st), folders, "p1" if w % 2 else f"patient {w}"))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        ids = pool.map(_writer, jobs)
    db = st / store.DB_NAME
    # The shared video is one session of p1 (re-recorded by its 4 writers) and one
    # session of each of the 4 other patients.
    n_sessions = 40 + 1 + 4
    assert _count(db, "SELECT count(*) FROM sessions") == n_sessions
    assert _count(db, "SELECT count(*) FROM asymmetry") == 5 * n_sessions
    assert _count(db, "SELECT count(*) FROM metrics") == 10 * n_sessions
    assert len({i for w in ids for i in w}) == n_sessions
    assert store.schema_version(st) == store.SCHEMA_VERSION
    assert sorted(p.sessions for p in store.list_patients(st)) == [6, 6, 6, 6, 21]


# --------------------------------------------------------------------------- patient IDs

HOSTILE_IDS = [
    "../x", "../../etc/passwd", "/etc", "/etc/passwd", "..\\x", "..\\..\\windows", "C:\\x",
    "．．／x", "‥/x", "..∕x", "a/../../b", ".", "..", "~", "CON", "nul.txt", "x" * 200,
    "Robert'); DROP TABLE patients;--", "<script>alert(1)</script>", "Anna", "anna", "Ånna",
]  # fmt: skip


@pytest.mark.parametrize("pid", HOSTILE_IDS)
def test_patient_ids_never_escape_the_store(tmp_path, pid):
    st = tmp_path / "ws" / "st"
    base = (st / store.PATIENTS_DIR).resolve()
    d = store.patient_dir(st, pid)
    assert d.parent == base and d.resolve().is_relative_to(st.resolve())
    assert all(c.isalnum() or c == "-" for c in d.name) and len(d.name) <= 43
    # Recorded verbatim and its comparison written inside the store.
    store.record_session(st, make_session(tmp_path, "a"), pid, "", "2026-01-05")
    store.record_session(st, make_session(tmp_path, "b"), pid, "", "2026-01-19")
    assert [p.patient for p in store.list_patients(st)] == [pid]
    link = compare.update_comparison(st, pid)
    assert link == store.session_link(st, pid) == d / store.COMPARISON_FILE and link.exists()
    outside = {p for p in (tmp_path / "ws").rglob("*")} - {p for p in st.rglob("*")} - {st}
    assert outside == set()


def test_lookalike_ids_get_distinct_folders(tmp_path):
    names = {store.patient_dir(tmp_path, p).name for p in ("Anna", "anna", "Ånna", "anna ")}
    assert len(names) == 4


@pytest.mark.parametrize("pid,text", [
    ("", "empty"), ("   ", "empty"), ("a\x00b", "control"), ("a\nb", "control"),
    ("x" * 201, "too long"), ("abc\u202edcba", "control"), ("a\udcff", "control"),
])  # fmt: skip
def test_unusable_patient_ids_are_refused(tmp_path, pid, text):
    with pytest.raises(store.InputError, match=text):
        store.record_session(tmp_path / "st", make_session(tmp_path, "s"), pid, "", "2026-01-05")
    with pytest.raises(store.InputError):
        store.patient_dir(tmp_path, pid)
    assert store.session_link(tmp_path, pid) is None
    assert not (tmp_path / "st").exists()


# --------------------------------------------------------------------------- treatments


def test_treatments_and_days_since_treatment(tmp_path):
    st = tmp_path / "st"
    s0 = store.record_session(st, make_session(tmp_path, "w0"), "p1", "baseline", "2026-01-05")
    store.record_session(st, make_session(tmp_path, "w2"), "p1", "2-week", "2026-01-19")
    store.record_session(st, make_session(tmp_path, "m4"), "p1", "4-month", "2026-05-04")
    store.record_session(st, make_session(tmp_path, "m4b"), "p1", "4m 2-week", "2026-05-18")
    ids = store.record_treatment(st, "p1", "2026-01-05", [
        store.TreatmentRow("Botox", "frontalis", "right", 6),
        {"product": "Botox", "muscle_group": "Frontalis", "side": "LEFT", "units": "4"},
    ])  # fmt: skip
    assert len(ids) == 2
    store.record_treatment(st, "p1", "2026-05-04", [dict(product="Botox", muscle_group="frontalis",
                                                         side="right", units=5.5)])  # fmt: skip
    ss = store.list_sessions(st, "p1")
    # Same day = filmed before injecting: the baseline has no treatment before it.
    assert [s.days_since_treatment for s in ss] == [None, 14, 119, 14]
    assert [s.last_treatment for s in ss] == [None, "2026-01-05", "2026-01-05", "2026-05-04"]
    assert ss[0].id == s0
    tx = store.list_treatments(st, "p1")
    assert [(t.muscle_group, t.side, t.units) for t in tx] == [
        ("frontalis", "right", 6.0), ("frontalis", "left", 4.0), ("frontalis", "right", 5.5)]
    [p] = store.list_patients(st)
    assert (p.sessions, p.treatments, p.last_treatment) == (4, 2, "2026-05-04")


def test_treatment_before_any_session_creates_the_patient(tmp_path):
    store.record_treatment(tmp_path, "new", "2025-12-01",
                           [store.TreatmentRow("Botox", "frontalis", "right", 2)])  # fmt: skip
    [p] = store.list_patients(tmp_path)
    assert (p.patient, p.sessions, p.treatments) == ("new", 0, 1)


@pytest.mark.parametrize("row,text", [
    (dict(product="B", muscle_group="frontalis", side="rigth", units=2), "side 'rigth'"),
    (dict(product="B", muscle_group="frontalis", side="right", units=-1), ">= 0"),
    (dict(product="B", muscle_group="frontalis", side="right", units="two"), "not a number"),
    (dict(product="B", muscle_group="frontalis", side="right", units="nan"), ">= 0"),
    (dict(product="", muscle_group="frontalis", side="right", units=1), "product is empty"),
    (dict(product="B", muscle_group="frontalis", side="right"), "missing units"),
])  # fmt: skip
def test_invalid_treatment_rows_are_refused(tmp_path, row, text):
    with pytest.raises(store.InputError, match=text):
        store.record_treatment(tmp_path / "st", "p1", "2026-01-05", [row])
    assert not (tmp_path / "st").exists()


@pytest.mark.parametrize("date", ["27/11/2026", "2026-13-01", "20260105", "", "yesterday"])
def test_invalid_dates_are_refused(tmp_path, date):
    with pytest.raises(store.InputError, match="YYYY-MM-DD"):
        store.record_treatment(tmp_path, "p1", date, [store.TreatmentRow("B", "f", "right", 1)])


def test_plan_file_as_spreadsheets_write_it(tmp_path):
    plan = tmp_path / "plan.csv"
    plan.write_bytes("\ufeffProduct;Muscle Group;Side;Units;Point;Lot;Notes\n"
                     "Botox;Frontalis;Right;2,5;F1;C1234;\n"
                     ";;;;;;\n"
                     "Botox;corrugator procerus;midline;10;;C1234;procerus, deep\n"
                     .encode())  # fmt: skip
    rows = store.read_plan(plan)
    assert rows == [
        store.TreatmentRow("Botox", "frontalis", "right", 2.5, "F1", "C1234", ""),
        store.TreatmentRow("Botox", "corrugator_procerus", "midline", 10.0, "", "C1234",
                           "procerus, deep"),
    ]


@pytest.mark.parametrize("text,msg", [
    ("product,muscle_group,side\nB,f,right\n", "missing column(s) units"),
    ("product,muscle_group,side,unit\nB,f,right,2\n", "missing column(s) units"),
    ("product,muscle_group,side,units,cost\nB,f,right,2,5\n", "unknown column 'cost'"),
    ("product,muscle_group,side,units\nB,f,right,2\nB,f,leftt,2\n", "line 3: side 'leftt'"),
    ("product,muscle_group,side,units\n", "no treatment rows"),
    ("", "empty"),
])  # fmt: skip
def test_bad_plan_files_name_the_problem(tmp_path, text, msg):
    plan = tmp_path / "plan.csv"
    plan.write_text(text)
    with pytest.raises(store.InputError) as exc:
        store.read_plan(plan)
    assert msg in str(exc.value) and "\n" not in str(exc.value)


# --------------------------------------------------------------------------- export / import


def _numbers(st: Path, patient: str) -> list[dict]:
    """Everything a session says (not where its files lie), by date, for comparing stores."""
    out = []
    for s in store.list_sessions(st, patient):
        t = store.session_tables(st, s.id)
        row = {k: t["session"][k] for k in ("video_key", "date", "label", "protocol",
                                            "protocol_version", "min_diff_mm", "min_ratio",
                                            "content_sha")}  # fmt: skip
        out.append(dict(row, **{k: t[k] for k in ("asymmetry", "metrics", "midline", "rest",
                                                  "warnings")}))  # fmt: skip
    return out


def _treat_tuples(st: Path, patient: str) -> list[tuple]:
    return [(t.uid, t.date, t.product, t.muscle_group, t.side, t.units, t.point, t.lot, t.notes)
            for t in store.list_treatments(st, patient)]  # fmt: skip


def test_export_import_round_trip(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    pid = "=HYPERLINK(\"x\") -Anna"  # also checks the spreadsheet-formula escaping
    store.record_session(a, make_session(tmp_path, "s1", warnings=("w1", "-w2")), pid,
                         "@baseline", "2026-01-05")  # fmt: skip
    store.record_session(a, make_session(tmp_path, "s2", values={**BASE_VALUES, "frown": None,
                                                                "raise": (1.234, 0.987)},
                                         quality={"smile": ("low", "face turned")}),
                         pid, "2-week", "2026-01-19")  # fmt: skip
    store.record_session(a, make_session(tmp_path, "other"), "someone else", "", "2026-01-05")
    store.record_treatment(a, pid, "2026-01-05", [
        store.TreatmentRow("Botox", "frontalis", "right", 6, "F1", "L1", "+1 U touch-up"),
        store.TreatmentRow("Botox", "frontalis", "left", 4.25)])  # fmt: skip
    out = tmp_path / "export.csv"
    res = run("export", pid, "--out", str(out), "--store", str(a))
    assert res.exit_code == 0, res.output
    rows = _read_csv(out)
    assert list(rows[0])[:12] == ["patient", "session_id", "date", "label", "step",
                                  "muscle_group", "measure", "side", "value_mm",
                                  "asymmetry_index", "dominant_side", "quality"]  # fmt: skip
    assert {r["kind"] for r in rows} == {"session", "asymmetry", "metric", "midline", "rest",
                                         "warning", "treatment"}  # fmt: skip
    assert all(r["patient"].startswith("'=") for r in rows)  # no live formula in Excel
    raise2 = [r for r in rows if r["kind"] == "asymmetry" and r["step"] == "raise"
              and r["label"] == "2-week"]  # fmt: skip
    assert {(r["side"], r["value_mm"]) for r in raise2} == {("right", "1.234"), ("left", "0.987")}
    assert [r["units"] for r in rows if r["kind"] == "treatment"] == ["6.0", "4.25"]

    res = run("import", str(out), "--store", str(b))
    assert res.exit_code == 0, res.output
    assert "sessions 2 added" in res.output and "treatments 2 added" in res.output
    assert _numbers(b, pid) == _numbers(a, pid)
    assert _treat_tuples(b, pid) == _treat_tuples(a, pid)
    ds = [s.days_since_treatment for s in store.list_sessions(b, pid)]
    assert ds == [None, 14]
    # Idempotent: a second import (and one into the source store) adds nothing.
    for target in (b, a):
        res = run("import", str(out), "--store", str(target))
        assert res.exit_code == 0, res.output
        assert "sessions 0 added, 0 updated, 2 unchanged" in res.output
        assert "treatments 0 added, 0 updated, 2 unchanged" in res.output
    assert _count(b / store.DB_NAME, "SELECT count(*) FROM sessions") == 2
    assert _count(b / store.DB_NAME, "SELECT count(*) FROM treatments") == 2
    assert _count(a / store.DB_NAME, "SELECT count(*) FROM sessions") == 3
    # The export of the imported store is the same file, bar paths of files not on this machine.
    again = tmp_path / "again.csv"
    transfer.export_csv(b, pid, again)
    strip = [{k: v for k, v in r.items() if k != "meta"} for r in _read_csv(again)]
    assert strip == [{k: v for k, v in r.items() if k != "meta"} for r in rows]


def _without_columns(path: Path, drop: list[str]) -> None:
    """Rewrite a CSV without some columns, as a file written before them."""
    rows = _read_csv(path)
    keep = [c for c in rows[0] if c not in drop]
    _write_csv(path, keep, [[r[c] for c in keep] for r in rows])


def test_intervals_are_stored_and_round_trip(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    folder = make_session(tmp_path, "s1", half=0.25)
    sid = store.record_session(a, folder, "p1", "", "2026-01-05")
    smile = [r for r in store.session_tables(a, sid)["asymmetry"] if r["step"] == "smile"][0]
    csv_smile = [r for r in _read_csv(folder / "asymmetry.csv") if r["step"] == "smile"][0]
    for col in store.CALL_COLUMNS[:6]:
        assert smile[col] == pytest.approx(float(csv_smile[col]))
    assert smile["call_reason"] == csv_smile["call_reason"] != ""
    assert smile["right_lo"] == pytest.approx(5.65)
    out = tmp_path / "e.csv"
    transfer.export_csv(a, "p1", out)
    rows = [r for r in _read_csv(out) if r["kind"] == "asymmetry" and r["step"] == "smile"]
    assert {(r["side"], r["value_lo"], r["value_hi"]) for r in rows} == {
        ("right", "5.65", "6.15"), ("left", "3.55", "4.05")}
    assert all(r["call_reason"].startswith("'-") for r in rows)  # no live formula
    assert run("import", str(out), "--store", str(b)).exit_code == 0
    assert _numbers(b, "p1") == _numbers(a, "p1")
    assert "1 unchanged" in run("import", str(out), "--store", str(b)).output
    # An export written before the intervals still imports, without them.
    _without_columns(out, ["value_lo", "value_hi", "diff_lo", "diff_hi", "call_reason"])
    assert run("import", str(out), "--store", str(c)).exit_code == 0
    [only] = store.session_tables(c, store.list_sessions(c, "p1")[0].id)["asymmetry"][-1:]
    assert all(only[k] is None for k in store.CALL_COLUMNS)
    assert only["right_mm"] == smile["right_mm"]


def test_a_folder_without_intervals_stores_and_keeps_its_digest(tmp_path):
    folder = make_session(tmp_path, "s1")
    _without_columns(folder / "asymmetry.csv", store.CALL_COLUMNS)
    sid = store.record_session(tmp_path / "st", folder, "p1", "", "2026-01-05")
    t = store.session_tables(tmp_path / "st", sid)
    assert all(r[k] is None for r in t["asymmetry"] for k in store.CALL_COLUMNS)
    # The digest of a session without intervals is that of its numbers before the
    # intervals were stored: re-imports of sessions stored then stay "unchanged".
    rec = store.read_session_folder(folder)
    old = store.read_session_folder(folder)
    old.asymmetry = [{k: v for k, v in r.items() if k in store.ASYMMETRY_COLUMNS}
                     for r in old.asymmetry]  # fmt: skip
    assert rec.content_sha() == old.content_sha() == t["session"]["content_sha"]
    with_iv = store.read_session_folder(make_session(tmp_path, "s2", video="s1", half=0.2))
    assert with_iv.content_sha() != rec.content_sha()


def test_a_schema_2_store_opens_and_migrates(tmp_path, monkeypatch):
    st = tmp_path / "st"
    # The store as schema 2 wrote it: no interval columns in its asymmetry table.
    monkeypatch.setattr(store, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(store, "_ASYMMETRY", store.ASYMMETRY_COLUMNS)
    sid = store.record_session(st, make_session(tmp_path, "s1"), "p1", "", "2026-01-05")
    before = store.session_tables(st, sid)
    monkeypatch.undo()
    with closing(sqlite3.connect(st / store.DB_NAME)) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(asymmetry)")]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "right_lo" not in cols
    assert store.schema_version(st) == 3  # opening migrates
    after = store.session_tables(st, sid)
    assert after["session"]["content_sha"] == before["session"]["content_sha"]
    assert all(r[k] is None for r in after["asymmetry"] for k in store.CALL_COLUMNS)
    strip = [{k: v for k, v in r.items() if k not in store.CALL_COLUMNS}
             for r in after["asymmetry"]]  # fmt: skip
    assert strip == before["asymmetry"]
    # Its export in the columns exports had then imports as unchanged; a session with
    # intervals then stores beside it.
    out = tmp_path / "old.csv"
    transfer.export_csv(st, "p1", out)
    _without_columns(out, ["value_lo", "value_hi", "diff_lo", "diff_hi", "call_reason"])
    assert "1 unchanged" in run("import", str(out), "--store", str(st)).output
    sid2 = store.record_session(st, make_session(tmp_path, "s2", half=0.2), "p1", "",
                                "2026-01-19")  # fmt: skip
    rows = store.history(st, "p1").asymmetry
    assert rows[sid][0]["right_lo"] is None and rows[sid2][0]["right_lo"] is not None


def test_import_refuses_a_damaged_file_without_writing(tmp_path):
    a = tmp_path / "a"
    store.record_session(a, make_session(tmp_path, "s1"), "p1", "", "2026-01-05")
    out = tmp_path / "e.csv"
    transfer.export_csv(a, "p1", out)
    lines = out.read_text().splitlines()
    lines[5] = lines[5].replace(",2026-01-05,", ",2026-02-30,", 1)
    out.write_text("\n".join(lines) + "\n")
    res = run("import", str(out), "--store", str(tmp_path / "b"))
    one_line_error(res, 2, "line 6")
    assert not (tmp_path / "b").exists()
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    one_line_error(run("import", str(tmp_path / "x.csv"), "--store", str(a)), 2,
                   "not a movement export")  # fmt: skip


# --------------------------------------------------------------------------- store health


def test_foreign_newer_and_damaged_databases_are_refused(tmp_path):
    d = tmp_path / "foreign"
    d.mkdir()
    with closing(sqlite3.connect(d / store.DB_NAME)) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(store.StoreError, match="not a movement store"):
        store.list_patients(d)
    n = tmp_path / "newer"
    store.open_store(n)
    with closing(sqlite3.connect(n / store.DB_NAME)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(store.StoreError, match="newer movement"):
        store.list_patients(n)
    g = tmp_path / "garbage"
    g.mkdir()
    (g / store.DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(store.StoreError):
        store.list_patients(g)
    one_line_error(run("patients", "--store", str(g)), 7, str(g))


def test_migrations_run_once_and_keep_data(tmp_path):
    store.record_session(tmp_path, make_session(tmp_path, "s"), "p1", "", "2026-01-05")
    store.open_store(tmp_path)  # reopening an up-to-date store changes nothing
    assert store.schema_version(tmp_path) == len(store.MIGRATIONS)
    assert [p.sessions for p in store.list_patients(tmp_path)] == [1]


def test_store_location_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(store.ENV_STORE, str(tmp_path / "env-store"))
    store.record_session(None, make_session(tmp_path, "s"), "p1", "", "2026-01-05")
    assert (tmp_path / "env-store" / store.DB_NAME).exists()
    res = run("patients")
    assert res.exit_code == 0 and "p1" in res.output
    monkeypatch.delenv(store.ENV_STORE)
    monkeypatch.chdir(tmp_path)
    assert store.resolve_store(None) == tmp_path / "reports"


def test_session_link(tmp_path):
    st = tmp_path / "st"
    assert store.session_link(st, "p1") is None
    assert store.session_link(st, "") is None
    f1 = make_session(tmp_path, "s1", video="v1")
    sha1 = json.loads((f1 / "session.json").read_text())["clips"][0]["sha256"]
    # Before recording the first session: one session (this one) -> no link.
    assert store.session_link(st, "p1", [sha1]) is None
    store.record_session(st, f1, "p1", "", "2026-01-05")
    assert not (st / store.PATIENTS_DIR).exists()
    # Re-analysing the same video still makes one session; a new video makes two.
    assert store.session_link(st, "p1", [sha1]) is None
    link = store.session_link(st, "p1", ["0" * 64])
    assert link == store.patient_dir(st, "p1") / "comparison.html"
    assert compare.update_comparison(st, "p1") is None  # one session: nothing to compare
    store.record_session(st, make_session(tmp_path, "s2"), "p1", "", "2026-01-19")
    assert store.session_link(st, "p1") == link
    assert compare.update_comparison(st, "p1") == link and link.exists()
    assert stat.S_IMODE(link.parent.stat().st_mode) == 0o700


# --------------------------------------------------------------------------- CLI


def test_cli_patients_sessions_treat(tmp_path):
    st = str(tmp_path / "st")
    store.record_session(st, make_session(tmp_path, "a"), "Anna", "baseline", "2026-01-05")
    store.record_session(st, make_session(tmp_path, "b"), "Anna", "2-week", "2026-01-19")
    plan = tmp_path / "plan.csv"
    plan.write_text("product,muscle_group,side,units\nBotox,frontalis,right,6\n"
                    "Botox,frontalis,left,4\nBotox,glabella,midline,10\n")  # fmt: skip
    res = run("treat", "Anna", "--date", "2026-01-05", "--file", str(plan), "--store", st)
    assert res.exit_code == 0, res.output
    assert "frontalis: 6 U right / 4 U left (Botox)" in res.output
    assert "glabella is not among the muscle groups measured" in res.output
    assert "comparison updated" in res.output
    res = run("treat", "Anna", "--date", "2026-01-19", "--product", "Botox", "--muscle-group",
              "frontalis", "--side", "right", "--units", "1", "--lot", "C1",
              "--store", st)  # fmt: skip
    assert res.exit_code == 0, res.output
    res = run("patients", "--store", st)
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].split() == ["patient", "sessions", "first", "last", "treatments", "last",
                                "treatment"]  # fmt: skip
    assert lines[2].split() == ["Anna", "2", "2026-01-05", "2026-01-19", "2", "2026-01-19"]
    res = run("sessions", "Anna", "--store", st)
    assert res.exit_code == 0
    rows = [ln.split() for ln in res.output.splitlines()[2:4]]
    assert rows[0][:5] == ["1", "2026-01-05", "baseline", "standard", "—"]
    assert rows[1][:5] == ["2", "2026-01-19", "2-week", "standard", "14"]
    assert rows[1][5].endswith("report.html")
    assert "comparison:" in res.output


@pytest.mark.parametrize("args,code,text", [
    (["sessions", "nobody"], 7, "no patient 'nobody'"),
    (["treat", "p1", "--date", "2026-01-05", "--product", "B", "--muscle-group", "frontalis",
      "--side", "up", "--units", "2"], 2, "side 'up' must be right, left or midline"),
    (["treat", "p1", "--date", "2026-01-05", "--product", "B", "--muscle-group", "frontalis",
      "--side", "right", "--units", "-2"], 2, "must be a number >= 0"),
    (["treat", "p1", "--date", "5 Jan", "--product", "B", "--muscle-group", "f", "--side",
      "right", "--units", "2"], 2, "not a date YYYY-MM-DD"),
    (["treat", "p1", "--product", "B"], 2, "missing --muscle-group, --side, --units"),
    (["treat", "p1", "--file", "plan.csv", "--units", "2"], 2,
     "give either --file or the single-row options (--units)"),
    (["treat", "p1", "--file", "nope.csv"], 2, "cannot read"),
    (["treat", "a\x00b", "--product", "B", "--muscle-group", "f", "--side", "right", "--units",
      "1"], 2, "control character"),
    (["export", "nobody", "--out", "x.csv"], 7, "no patient 'nobody'"),
    (["import", "missing.csv"], 2, "cannot read"),
    (["compare", "nobody", "--out", "cmp"], 7, "no patient 'nobody'"),
])  # fmt: skip
def test_cli_errors_are_one_line(tmp_path, monkeypatch, args, code, text):
    monkeypatch.chdir(tmp_path)
    store.record_session(tmp_path / "st", make_session(tmp_path, "s"), "p1", "", "2026-01-05")
    one_line_error(run(*args, "--store", str(tmp_path / "st")), code, text)


def test_cli_without_a_store_says_so(tmp_path):
    one_line_error(run("patients", "--store", str(tmp_path / "nope")), 7, "no clinic store")
    assert not (tmp_path / "nope").exists()


def test_cli_export_to_a_folder_is_refused(tmp_path):
    store.record_session(tmp_path / "st", make_session(tmp_path, "s"), "p1", "", "2026-01-05")
    one_line_error(run("export", "p1", "--out", str(tmp_path), "--store", str(tmp_path / "st")),
                   6, "is a folder")  # fmt: skip


def test_commands_are_click_commands():
    names = {c.name for c in COMMANDS}
    assert names == {"patients", "sessions", "treat", "compare", "export", "import"}
    for c in COMMANDS:
        assert "--store" in {o for p in c.params for o in p.opts}
    assert os.environ.get("MOVEMENT_DEBUG") is None
