"""Batches (``--batch``, ``--jobs``, ``--cluster``): the manifest, resuming, the summary,
the cluster address policy, and a real Dask LocalCluster with a worker killed mid-video."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from movement import batch as b
from movement import synth
from movement.cli import main

DEFAULTS = b.BatchItem(Path(""), Path(""), date="2026-01-05", protocol="standard")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- manifest


def test_manifest_rows_paths_and_defaults(tmp_path):
    (tmp_path / "clips").mkdir()
    m = _write(tmp_path / "study.csv",
               "Video,patient,label,date,mirrored,cues\n"
               "clips/a.mp4,P-001,baseline,2026-02-01,yes,\n"
               "\n"
               "/abs/b.mov,,,,,cues/b.csv\n")
    items = b.read_manifest(m, tmp_path / "out", DEFAULTS)
    assert [i.video for i in items] == [tmp_path / "clips" / "a.mp4", Path("/abs/b.mov")]
    assert [i.out for i in items] == [tmp_path / "out" / "a", tmp_path / "out" / "b"]
    a, c = items
    assert (a.patient, a.label, a.date, a.mirrored, a.cues) == (
        "P-001", "baseline", "2026-02-01", True, None)
    # Empty cells take the command line's values; an empty patient is not stored.
    assert (c.patient, c.date, c.protocol, c.mirrored) == ("", "2026-01-05", "standard", False)
    assert c.cues == str(tmp_path / "cues" / "b.csv")


@pytest.mark.parametrize("text, message", [
    ("video,patient,label\na.mp4,p,l\n", "without column(s) date"),
    ("video,patient,label,date,pateint\na.mp4,p,l,,x\n", "unknown manifest column(s) pateint"),
    ("video,patient,label,date\n,p,l,\n", "line 2: no video"),
    ("video,patient,label,date\na.mp4,p,l,2026-13-01\n", "line 2:"),
    ("video,patient,label,date,mirrored\na.mp4,p,l,,maybe\n", "mirrored must be yes or no"),
    ("video,patient,label,date\na.mp4,p,l,\nsub/../a.mp4,q,l,\n", "line 3:"),
    ("video,patient,label,date\nx/a.mp4,p,l,\ny/a.mp4,q,l,\n", "share the folder"),
    ("video,patient,label,date\n", "lists no video"),
    ("video,patient,label,date\na.mp4,p,l,,extra\n", "more cells than columns"),
])
def test_manifest_errors_name_the_line(tmp_path, text, message):
    m = _write(tmp_path / "m.csv", text)
    with pytest.raises(b.BatchError) as e:
        b.read_manifest(m, tmp_path / "out", DEFAULTS)
    assert e.value.exit_code == 2
    assert message in str(e.value)


# --------------------------------------------------------------------------- resume


def _outcome(**kw) -> b.Outcome:
    base = dict(video="/v/a.mp4", out="/o/a", patient="", label="", date="2026-01-05",
                protocol="standard", protocol_version=1, software="0.1.0", mirrored=False,
                cues="", face="largest", sha256="abc", status="")
    return b.Outcome(**{**base, **kw})


def test_resume_decisions(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "session.json").write_text("{}")
    now = _outcome(out=str(folder))
    ok = _outcome(out=str(folder), status="ok")
    assert b.decide(None, now, False) == "run"
    assert b.decide(ok, now, False) == "skip"
    # A different video content, protocol, software or measurement version or row runs again.
    for change in (dict(sha256="def"), dict(protocol_version=2), dict(software="0.2.0"),
                   dict(measurement_version=99), dict(mirrored=True), dict(label="2-week")):
        assert b.decide(ok, _outcome(out=str(folder), **change), False) == "run", change
    failed = _outcome(out=str(folder), status="failed", exit_code=4)
    assert b.decide(failed, now, False) == "skip"
    assert b.decide(failed, now, True) == "run"
    # Analysed but not in the store yet (the client stopped in between): record only.
    with_patient = _outcome(out=str(folder), patient="p1")
    assert b.decide(_outcome(out=str(folder), patient="p1", status="ok"), with_patient,
                    False) == "record"
    # The folder was deleted since: analyse again.
    shutil.rmtree(folder)
    assert b.decide(ok, now, False) == "run"


def test_ledger_round_trip_and_damage(tmp_path):
    o = _outcome(status="ok", steps_total=5, steps_measured=4, recorded=True)
    b.records.write_ledger(tmp_path, {"/v/a.mp4": o})
    assert b.read_ledger(tmp_path) == {"/v/a.mp4": o}
    (tmp_path / b.LEDGER).write_text("{not json")
    assert b.read_ledger(tmp_path) == {}  # costs a re-analysis, never a wrong skip


def test_summary_csv(tmp_path):
    rows = [_outcome(status="ok", steps_measured=4, steps_total=5, low_steps=1),
            _outcome(video="/v/=cmd().mp4", status="failed", exit_code=3,
                     meaning=b.EXIT_MEANINGS[3], error="not a video")]
    b.records.write_summary(tmp_path / "s.csv", rows)
    with open(tmp_path / "s.csv", newline="") as fh:
        got = list(csv.DictReader(fh))
    assert got[0]["status"] == "ok" and got[0]["low_steps"] == "1"
    assert got[1]["meaning"] == "unreadable video" and got[1]["exit_code"] == "3"
    assert not got[1]["video"].startswith("=")  # a spreadsheet would run it


def test_progress_line():
    line = b.BatchProgress.line(done=3, failed=1, running=2, total=10, left_s=600)
    assert "4/10" in line and "done 3" in line and "failed 1" in line
    assert "running 2" in line and "10 min left" in line


# --------------------------------------------------------------------------- cluster policy


def _no_config() -> b.Tls:
    return b.Tls()


@pytest.mark.parametrize("spec, kw, address", [
    ("local:2", {}, ""),
    ("tcp://127.0.0.1:8786", {}, "tcp://127.0.0.1:8786"),
    ("localhost:8786", {}, "tcp://localhost:8786"),
    ("tcp://[::1]:8786", {}, "tcp://[::1]:8786"),
    ("tcp://10.0.0.5:8786", {"allow_unencrypted": True}, "tcp://10.0.0.5:8786"),
    ("tls://sched.clinic:8786", {"tls": b.Tls("ca.pem", "me.pem", "me.key")},
     "tls://sched.clinic:8786"),
])
def test_cluster_addresses_accepted(spec, kw, address):
    got = b.parse_cluster(spec, config_tls=_no_config, **kw)
    assert got.address == address
    assert got.local_workers == (2 if spec == "local:2" else 0)


@pytest.mark.parametrize("spec, kw, message", [
    ("tcp://10.0.0.5:8786", {}, "--allow-unencrypted"),
    ("sched.clinic:8786", {}, "unencrypted"),
    ("tls://sched.clinic:8786", {}, "needs --tls-ca, --tls-cert and --tls-key"),
    ("tls://sched.clinic:8786", {"tls": b.Tls("ca.pem")}, "needs all of"),
    ("ws://sched.clinic:8786", {"allow_unencrypted": True}, "only tls://"),
    ("tcp://127.0.0.1:8786", {"tls": b.Tls("ca.pem", "c", "k")}, "for a tls:// scheduler"),
    ("local:0", {}, "N from 1 to 64"),
    ("sched.clinic", {}, "give local:N"),
])
def test_cluster_addresses_refused(spec, kw, message):
    with pytest.raises(b.BatchError) as e:
        b.parse_cluster(spec, config_tls=_no_config, **kw)
    assert e.value.exit_code == 2 and message in str(e.value)


def test_tls_credentials_from_dask_config():
    got = b.parse_cluster("tls://sched:8786", config_tls=lambda: b.Tls("c", "cert", "key"))
    assert got.tls == b.Tls("c", "cert", "key")


def _one_line(res, code: int, text: str) -> None:
    assert res.exit_code == code, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("movement: error:"), res.output
    assert text in lines[0]


def test_cli_without_dask_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "a.mp4").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "distributed", None)  # import raises ImportError
    res = CliRunner().invoke(main, ["analyze", str(tmp_path), "--batch", "--cluster", "local:2",
                                    "--out", str(tmp_path / "out")])
    _one_line(res, 9, "pip install 'movement-face[cluster]'")
    assert not (tmp_path / "out").exists()


def test_cli_refuses_plain_tcp_to_another_host(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    res = CliRunner().invoke(main, ["analyze", str(tmp_path), "--batch",
                                    "--cluster", "tcp://192.0.2.7:8786"])
    _one_line(res, 2, "--allow-unencrypted")


def test_cli_cluster_needs_batch(tmp_path):
    res = CliRunner().invoke(main, ["analyze", str(tmp_path / "a.mp4"), "--cluster", "local:2"])
    _one_line(res, 2, "go with --batch")


# --------------------------------------------------------------------------- engine (scripted)


class ScriptedExecutor:
    """Runs nothing: answers each video as scripted ('ok', 'lost', 'lost-once'), in order."""

    ship = False

    def __init__(self, script: dict[str, str]) -> None:
        self.script = script
        self.submitted: list[str] = []
        self.in_flight = 0

    def free(self) -> int:
        return 2 - self.in_flight

    def submit(self, fn, task, name):  # noqa: ANN001, ANN201
        self.submitted.append(name)
        self.in_flight += 1
        return (task.video.stem, task.attempt)

    def wait(self, handles, timeout):  # noqa: ANN001, ANN201
        return handles[:1]

    def result(self, handle):  # noqa: ANN001, ANN201
        stem, attempt = handle
        self.in_flight -= 1
        what = self.script[stem]
        if what == "lost" or (what == "lost-once" and attempt == 0):
            raise b.cluster.WorkerLost
        return b.engine.WorkerResult(True, steps_measured=4, steps_total=5, unusable_steps=1)

    def running(self) -> int:
        return self.in_flight


def test_engine_retries_a_lost_worker_once_then_reports(tmp_path):
    videos = []
    for stem in ("a", "b", "c"):
        videos.append(tmp_path / f"{stem}.mp4")
        videos[-1].write_bytes(stem.encode())
    items = b.folder_items(videos, tmp_path / "out", DEFAULTS)
    ex = ScriptedExecutor({"a": "ok", "b": "lost-once", "c": "lost"})
    rep = b.run_batch(items, tmp_path / "out", ex)
    by = {Path(o.video).stem: o for o in rep.outcomes}
    assert sorted(ex.submitted) == ["a-a0", "b-a0", "b-a1", "c-a0", "c-a1"]
    assert by["a"].status == "ok" and by["a"].attempts == 1 and by["a"].unusable_steps == 1
    assert by["b"].status == "ok" and by["b"].attempts == 2
    assert by["c"].status == "failed" and by["c"].exit_code == b.WORKER_DIED
    assert rep.exit_code == b.WORKER_DIED
    with open(rep.summary, newline="") as fh:
        assert [r["status"] for r in csv.DictReader(fh)] == ["ok", "ok", "failed"]
    # The scripted run wrote no folders, so pretend the ok ones did; then a rerun
    # submits nothing, and --retry-failed submits the failure only.
    for s in ("a", "b"):
        (tmp_path / "out" / s).mkdir()
        (tmp_path / "out" / s / "session.json").write_text("{}")
    again = ScriptedExecutor({"a": "ok", "b": "ok", "c": "ok"})
    rep2 = b.run_batch(items, tmp_path / "out", again)
    assert again.submitted == [] and [o.action for o in rep2.outcomes] == ["skipped"] * 3
    assert rep2.exit_code == b.WORKER_DIED  # the failure is still reported
    retry = ScriptedExecutor({"a": "ok", "b": "ok", "c": "ok"})
    rep3 = b.run_batch(items, tmp_path / "out", retry, retry_failed=True)
    assert retry.submitted == ["c-a0"] and rep3.exit_code == 0
    (tmp_path / "out" / "c").mkdir()
    (tmp_path / "out" / "c" / "session.json").write_text("{}")
    # A changed video is analysed again.
    videos[0].write_bytes(b"a, edited")
    changed = ScriptedExecutor({"a": "ok", "b": "ok", "c": "ok"})
    b.run_batch(items, tmp_path / "out", changed)
    assert changed.submitted == ["a-a0"]


# --------------------------------------------------------------------------- a real cluster


def _tiny_consult(path: Path, seed: int) -> Path:
    steps = (synth.StepMotion("smile", 1.0, 2.0, 3.0, 3.0 + 0.4 * seed, 2.0),)
    spec = synth.SynthSpec(steps=steps, duration_s=4.0, frame_size=(480, 270),
                           noise_sigma=1.0, seed=seed)
    synth.make_video(spec, path)
    return path


def _no_face(path: Path) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (320, 180))
    for _ in range(45):
        w.write(np.full((180, 320, 3), 120, np.uint8))
    w.release()
    return path


def _killer_plugin():  # noqa: ANN202 - a dask WorkerPlugin, defined here so it pickles by value
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillOnStart(WorkerPlugin):
        """SIGKILL the worker process when it starts ``killed_once`` (first attempt) or
        ``poison`` (every attempt): a worker dying mid-video, deterministically."""

        def transition(self, key, start, finish, **kwargs):  # noqa: ANN001, ANN201
            k = str(key)
            if finish == "executing" and ("-killed_once-a0-" in k or "-poison-" in k):
                os.kill(os.getpid(), signal.SIGKILL)

    return KillOnStart()


@pytest.mark.slow
def test_local_cluster_batch(tmp_path):
    pytest.importorskip("distributed", reason="needs the cluster extra")
    arc = tmp_path / "archive"
    arc.mkdir()
    _tiny_consult(arc / "a.mp4", 0)
    _tiny_consult(arc / "b.mp4", 1)
    _tiny_consult(arc / "killed_once.mp4", 2)
    shutil.copy(arc / "a.mp4", arc / "poison.mp4")
    (arc / "broken.mp4").write_text("not a video")
    _no_face(arc / "noface.mp4")
    manifest = _write(arc / "manifest.csv", "video,patient,label,date\n"
                      "a.mp4,p1,baseline,2026-01-05\n"
                      "b.mp4,p1,2-week,2026-01-19\n"
                      "killed_once.mp4,p2,baseline,2026-01-05\n"
                      "poison.mp4,p3,baseline,2026-01-05\n"
                      "broken.mp4,p4,baseline,2026-01-05\n"
                      "noface.mp4,p5,baseline,2026-01-05\n")
    out, st = tmp_path / "out", tmp_path / "store"
    items = b.read_manifest(manifest, out, DEFAULTS)
    ex = b.open_dask(b.ClusterSpec(local_workers=2))
    try:
        ex.client.register_plugin(_killer_plugin(), name="kill-on-start")
        rep = b.run_batch(items, out, ex, images=False, store_dir=st)
        by = {Path(o.video).stem: o for o in rep.outcomes}
        assert {k: o.status for k, o in by.items()} == {
            "a": "ok", "b": "ok", "killed_once": "ok",
            "poison": "failed", "broken": "failed", "noface": "failed"}
        # The worker that died under killed_once lost that video only: retried once.
        assert by["killed_once"].attempts == 2 and by["a"].attempts == by["b"].attempts == 1
        assert (by["poison"].exit_code, by["poison"].attempts) == (b.WORKER_DIED, 2)
        assert (by["broken"].exit_code, by["broken"].meaning) == (3, "unreadable video")
        assert (by["noface"].exit_code, by["noface"].meaning) == (4, "no face in the video")
        for s in ("a", "b", "killed_once"):
            meta = json.loads((out / s / "session.json").read_text())
            assert meta["clips"][0]["sha256"] == by[s].sha256
            assert by[s].steps_total == 5 and by[s].steps_measured >= 1
        assert not (out / "poison").exists() and not (out / "broken").exists()
        # The client recorded each good video once; the two visits of p1 are compared.
        assert len(b.engine.store.list_sessions(st, "p1")) == 2
        assert len(b.engine.store.list_sessions(st, "p2")) == 1
        assert [p.patient for p in b.engine.store.list_patients(st)] == ["p1", "p2"]
        assert (b.engine.store.patient_dir(st, "p1") / "comparison.html").exists()
        with open(out / b.SUMMARY, newline="") as fh:
            summary = {Path(r["video"]).stem: r for r in csv.DictReader(fh)}
        assert summary["noface"]["error"].endswith("no face found in any of 45 frames")

        # A rerun submits nothing and changes nothing.
        submitted: list[str] = []
        real_submit = ex.submit
        ex.submit = lambda fn, task, name: submitted.append(name) or real_submit(fn, task, name)
        stamp = (out / "a" / "session.json").stat().st_mtime_ns
        rep2 = b.run_batch(items, out, ex, images=False, store_dir=st)
        assert submitted == [] and {o.action for o in rep2.outcomes} == {"skipped"}
        assert [o.status for o in rep2.outcomes] == [o.status for o in rep.outcomes]
        assert (out / "a" / "session.json").stat().st_mtime_ns == stamp
        assert len(b.engine.store.list_sessions(st, "p1")) == 2
    finally:
        ex.close()


class InProcessExecutor:
    """Runs each task here, shipping its folder back as a remote worker does."""

    ship = True

    def __init__(self) -> None:
        self.results: dict[int, object] = {}

    def free(self) -> int:
        return 1

    def submit(self, fn, task, name):  # noqa: ANN001, ANN201
        h = len(self.results)
        self.results[h] = fn(task)
        return h

    def wait(self, handles, timeout):  # noqa: ANN001, ANN201
        return list(handles)

    def result(self, handle):  # noqa: ANN001, ANN201
        return self.results.pop(handle)

    def running(self) -> int:
        return 0


@pytest.mark.slow
def test_shipped_folder_is_written_and_recorded_by_the_client(tmp_path):
    """A remote worker's folder comes back as files: the client writes it atomically
    and records it; the worker's temporary folder is gone."""
    video = _tiny_consult(tmp_path / "v.mp4", 0)
    out, st = tmp_path / "out", tmp_path / "store"
    item = b.BatchItem(video, out / "v", patient="p1", label="baseline", date="2026-01-05")
    before = set(Path(tempfile.gettempdir()).glob("movement-batch-*"))
    rep = b.run_batch([item], out, InProcessExecutor(), images=False, store_dir=st)
    (o,) = rep.outcomes
    assert o.status == "ok" and o.recorded, o
    names = {p.name for p in (out / "v").iterdir()}
    assert {"session.json", "asymmetry.csv", "report.html", "landmarks.npz"} <= names
    assert json.loads((out / "v" / "session.json").read_text())["clips"][0]["sha256"] == o.sha256
    assert set(Path(tempfile.gettempdir()).glob("movement-batch-*")) == before
    (s,) = b.engine.store.list_sessions(st, "p1")
    assert Path(s.session_dir).resolve() == (out / "v").resolve()


@pytest.mark.slow
def test_tls_scheduler_with_client_certificate(tmp_path):
    """A tls:// scheduler that requires encryption: the batch connects with the given
    files, ships the folder back and records it here; plain tcp:// to it fails (9)."""
    pytest.importorskip("distributed", reason="needs the cluster extra")
    import subprocess

    from distributed import LocalCluster
    from distributed.security import Security

    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("needs openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-subj", "/CN=dask-internal", "-days", "1"],
                   check=True, capture_output=True)
    c, k = str(cert), str(key)
    sec = Security(tls_ca_file=c, tls_scheduler_cert=c, tls_scheduler_key=k, tls_worker_cert=c,
                   tls_worker_key=k, tls_client_cert=c, tls_client_key=k,
                   require_encryption=True)
    video = _tiny_consult(tmp_path / "v.mp4", 1)
    out, st = tmp_path / "out", tmp_path / "store"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, protocol="tls://",
                      host="127.0.0.1", security=sec, dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        with pytest.raises(b.BatchError) as e:
            b.open_dask(b.ClusterSpec(address=addr.replace("tls://", "tcp://")))
        assert e.value.exit_code == b.CLUSTER_UNAVAILABLE
        ex = b.open_dask(b.parse_cluster(addr, b.Tls(c, c, k)))
        try:
            assert ex.ship  # a scheduler address: results come back to this machine
            item = b.BatchItem(video, out / "v", patient="p1", date="2026-01-05")
            rep = b.run_batch([item], out, ex, images=False, store_dir=st)
        finally:
            ex.close()
    (o,) = rep.outcomes
    assert o.status == "ok" and o.recorded, o
    assert (out / "v" / "report.html").exists()
    assert len(b.engine.store.list_sessions(st, "p1")) == 1
