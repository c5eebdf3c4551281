"""`movement record`: the recording page's server, its camera check and the whole
recording in a real browser.

The camera check runs the analysis's own rules on generated frames (a good face
passes; a small, turned, dark, one-sided, blurred, off-centre or doubled one fails
with its instruction). The end-to-end test drives the page in headless Chromium whose
fake camera plays a generated consult (dark at first, then a good face performing
the steps); it is marked slow and skips without Playwright or Chromium.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from movement import synth
from movement.analysis.steps import read_cues
from movement.cli import main
from movement.protocol import load_protocol
from movement.record.server import (
    Config,
    RecordError,
    parse_cues,
    render_page,
    schedule,
    serve,
    write_cues,
)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "reports" / "test-artifacts"
SIZE = (640, 360)
FACE = 0.7  # face height / frame height: 1.69 px per mm at 640x360


# ---------------------------------------------------------------- the schedule, cues, page


def test_schedule_comes_from_the_protocol_file():
    for name in ("standard", "extended"):
        proto = load_protocol(name)
        sched = schedule(proto)
        assert [s.step for s in sched] == [s.name for s in proto.steps]
        assert [s.hold_s for s in sched] == [s.duration_s for s in proto.steps]
        assert [s.instruction for s in sched] == [s.instruction for s in proto.steps]
        assert all(s.rest_s == 2 * proto.detection.rest_window_s for s in sched)


def test_cues_are_written_as_the_analysis_reads_them(tmp_path):
    proto = load_protocol("standard")
    page = [{"step": "raise", "start_s": 4.0139, "end_s": 7.5139},
            {"step": "eee", "start_s": 9.02, "end_s": 12.52}]
    cues = parse_cues(page, proto)
    write_cues(tmp_path / "cues.csv", cues)
    back = read_cues(tmp_path / "cues.csv", proto)
    assert list(back) == ["raise", "eee"]
    assert back["raise"] == pytest.approx((4.014, 7.514), abs=1e-3)
    for bad in ([{"step": "wink", "start_s": 1, "end_s": 2}],
                [{"step": "raise", "start_s": 3, "end_s": 2}],
                [{"step": "raise", "start_s": "x", "end_s": 2}], {"raise": 1}):
        with pytest.raises(RecordError):
            parse_cues(bad, proto)


def test_page_is_self_contained_and_escapes_its_configuration(tmp_path):
    cfg = Config(load_protocol("extended"), tmp_path / "s", patient="</script><b>x",
                 label="baseline")
    html = render_page(cfg).decode()
    assert "</script><b>x" not in html  # cannot close the script element
    assert "http://" not in html and "https://" not in html
    assert "<link rel=\"stylesheet\"" not in html and " src=" not in html
    conf = json.loads(html.split("const CONF = ", 1)[1].split(";\n", 1)[0])
    assert conf["patient"] == "</script><b>x"
    assert [s["step"] for s in conf["steps"]] == [s.name for s in cfg.protocol.steps]


# ---------------------------------------------------------------- the server's camera check


def _serve_in_thread(cfg: Config) -> tuple[str, list, threading.Thread]:
    """The server started in its own thread: its address (waited for up to 30 s), the
    list its outcome is appended to, and the thread."""
    urls: list[str] = []
    result: list = []
    t = threading.Thread(target=lambda: result.append(serve(cfg, urls.append, lambda m: None)),
                         daemon=True)
    t.start()
    for _ in range(300):
        if urls:
            break
        time.sleep(0.1)
    return urls[0], result, t


@pytest.fixture(scope="module")
def good_frame() -> np.ndarray:
    spec = synth.SynthSpec(steps=(), duration_s=1.0, frame_size=SIZE, face_height_frac=FACE)
    return synth.Renderer(spec).frame(0)


def _shrunk(img: np.ndarray, k: float) -> np.ndarray:
    """The same scene filmed from further away: the face k times smaller, centred."""
    h, w = img.shape[:2]
    small = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    out = np.full_like(img, int(np.median(img[:10])))
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def _turned(img: np.ndarray) -> np.ndarray:
    """The nose pushed toward the image right (the patient's left), eyes in place:
    what a head turned to the patient's left shows a frontal camera."""
    h, w = img.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    cx, cy = w / 2, h * 0.6
    bump = np.exp(-(((gx - cx) / 60.0) ** 2 + ((gy - cy) / 70.0) ** 2) / 2)
    return cv2.remap(img, gx - 60.0 * bump, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _one_sided(img: np.ndarray) -> np.ndarray:
    out = img.astype(np.float32)
    out[:, : img.shape[1] // 2] *= 0.35  # image left: the patient's right
    return out.astype(np.uint8)


def _two_faces(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    small = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    out = img.copy()
    out[h - small.shape[0] :, : small.shape[1] // 2] = small[:, small.shape[1] // 4 :
                                                               small.shape[1] // 4 * 3]
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running server (its own thread) and its address; closed at the end."""
    d = tmp_path_factory.mktemp("server")
    cfg = Config(load_protocol("standard").subset(["raise", "eee"]), d / "session")
    url, result, t = _serve_in_thread(cfg)
    yield url, cfg, result, t
    if t.is_alive():
        _post(url + "closed", b'{"reason": "test over"}')
        t.join(10)


def _post(url: str, data: bytes, ctype: str = "application/octet-stream") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _check(url: str, img: np.ndarray) -> dict:
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    code, verdict = _post(url + "check", jpg.tobytes(), "image/jpeg")
    assert code == 200, verdict
    return verdict


def test_check_passes_a_good_face_with_the_analysis_scale(server, good_frame):
    url = server[0]
    v = _check(url, good_frame)
    assert v["ok"], v
    assert v["instruction"] == "Good. Hold still."
    # The generator's own scale at this size is 1.69 px per mm (horizontal iris = 11.7 mm).
    assert v["px_per_mm"] == pytest.approx(1.69, rel=0.06)
    assert abs(v["yaw_deg"]) < 5 and abs(v["roll_deg"]) < 5


@pytest.mark.parametrize(
    ("fault", "check", "instruction"),
    [
        ("small", "size", "Move closer to the camera"),
        ("turned", "turn", "Turn your head a little to your right"),
        ("dark", "light", "More light on the face, from the front"),
        ("one_sided", "even", "Light from the front: your right side is in shadow"),
        ("blurred", "sharp", "Hold still; clean the lens or add light"),
        ("off_centre", "centre", "Move a little to your left"),
        ("two_faces", "faces", "Only the patient in view, please"),
        ("no_face", "face", "Face the camera, with the whole face in the frame"),
    ],
)
def test_check_fails_with_the_right_instruction(server, good_frame, fault, check, instruction):
    img = {
        "small": lambda f: _shrunk(f, 0.55),
        "turned": _turned,
        "dark": lambda f: (f * 0.12).astype(np.uint8),
        "one_sided": _one_sided,
        "blurred": lambda f: cv2.GaussianBlur(f, (0, 0), 3.0),
        # The face moved to the image left, the patient's right.
        "off_centre": lambda f: np.roll(f, -130, axis=1),
        "two_faces": _two_faces,
        "no_face": lambda f: np.full_like(f, 128),
    }[fault](good_frame)
    v = _check(server[0], img)
    assert not v["ok"]
    failing = [c["name"] for c in v["checks"] if not c["ok"]]
    assert check in failing, v
    assert v["instruction"] == instruction or any(
        c["instruction"] == instruction for c in v["checks"]), v


def test_upload_rules_and_a_closed_page_leave_no_session(server):
    url, cfg, result, thread = server
    code, err = _post(url + "analyse", json.dumps(
        {"cues": [{"step": "raise", "start_s": 1, "end_s": 3}]}).encode(), "application/json")
    assert code == 400 and "no recording" in err["error"]
    code, err = _post(url + "video?name=../../etc", b"x")
    assert code == 400
    req = urllib.request.Request(url + "closed", data=b"{}",
                                 headers={"Origin": "https://elsewhere.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 403 and thread.is_alive()
    code, ok = _post(url + "video?name=recording", b"not really a video")
    assert code == 200 and ok["bytes"] == 18
    _post(url + "closed", b'{"reason": "the page was closed during recording"}',
          "application/json")
    thread.join(10)
    assert result and result[0].code == 130 and not result[0].written
    assert "no session was written" in result[0].message
    parent = cfg.out.parent
    assert not cfg.out.exists()
    assert [p.name for p in parent.iterdir()] == []  # the uploads' folder is gone too


def test_cli_refuses_a_folder_holding_something_and_bad_protocols(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "note.txt").write_text("x")
    r = CliRunner().invoke(main, ["record", "--no-open", "--out", str(tmp_path / "s")])
    assert r.exit_code == 6 and "not empty" in r.output
    r = CliRunner().invoke(main, ["record", "--no-open", "--protocol", "nope"])
    assert r.exit_code == 5 and "not found" in r.output
    r = CliRunner().invoke(main, ["record", "--no-open", "--steps", "raise,wink"])
    assert r.exit_code == 5 and "wink" in r.output


# ---------------------------------------------------------------- end to end in Chromium

FAULTS = (("dark", 3.0), ("small", 2.5), ("turned", 2.5))
"""The fake camera starts with faulty framings, each for so many seconds (the page's
check must say what to do about each); then the good face."""
FAULTS_S = sum(d for _, d in FAULTS)
START_S = 1.5
"""About when --auto starts recording once the face is good: three passing checks."""
AMPLITUDES = {"raise": (2.0, 4.5), "eee": (3.0, 1.2)}  # (right, left) mm
BAR = 16  # px per block of the frame-number code drawn in the frame's top-left corner


def _code(img: np.ndarray, i: int) -> None:
    for b in range(10):
        v = 255 if (i >> b) & 1 else 0
        img[4 : 4 + BAR, 4 + b * BAR : 4 + (b + 1) * BAR] = v


def _read_code(img: np.ndarray) -> int:
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    bits = [grey[4 + BAR // 4 : 4 + 3 * BAR // 4,
                 4 + b * BAR + BAR // 4 : 4 + b * BAR + 3 * BAR // 4].mean() > 128
            for b in range(10)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def _fake_camera(path: Path) -> tuple[list[synth.StepMotion], float]:
    """A .y4m the fake camera plays: the faults, then a consult timed like the page's
    schedule for raise and eee (lead-in 2 s, rest 2 s, hold 3 s), each frame numbered."""
    sched = schedule(load_protocol("standard").subset(["raise", "eee"]))
    t = FAULTS_S + START_S + 2.0  # the page's lead-in
    steps = []
    for s in sched:
        t += s.rest_s
        steps.append(synth.StepMotion(s.step, t, t + s.hold_s / 2, t + s.hold_s,
                                      *AMPLITUDES[s.step]))
        t += s.hold_s
    fps = 15
    spec = synth.SynthSpec(steps=steps, duration_s=t + 4.0, fps=fps, frame_size=SIZE,
                           face_height_frac=FACE, noise_sigma=1.0, seed=5)
    r = synth.Renderer(spec)
    w, h = SIZE
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(spec.n_frames):
            img = r.frame(i)
            fault = next((f for f, end in zip([f for f, _ in FAULTS], np.cumsum(
                [d for _, d in FAULTS]), strict=True) if i < end * fps), None)
            if fault is not None:
                img = {"dark": lambda f: (f * 0.12).astype(np.uint8),
                       "small": lambda f: _shrunk(f, 0.55), "turned": _turned}[fault](img)
            _code(img, i)
            fh.write(b"FRAME\n")
            fh.write(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes())
    return steps, fps


@pytest.mark.slow
def test_recording_in_chromium_end_to_end(tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed ({exc})")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("no Chromium binary (apt-get install chromium)")
    y4m = tmp_path / "camera.y4m"
    truth, fps = _fake_camera(y4m)
    out = tmp_path / "session"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "movement.cli", "record", "--no-open", "--auto", "--silent",
         "--steps", "raise,eee", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen: list[tuple[str, str]] = []
    shots: dict[str, Path] = {}
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={y4m}",
            ])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            outside: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:"))
                    else outside.append(r.url))
            page.goto(url)
            t0 = time.monotonic()
            while proc.poll() is None and time.monotonic() - t0 < 150:
                if "/session/" in page.url:
                    break
                try:
                    state = page.evaluate(
                        "[document.body.className, document.getElementById('say').textContent]")
                except Exception:  # navigating to the report
                    time.sleep(0.2)
                    continue
                seen.append((state[0], state[1]))
                want = {"checking": "light" in state[1], "recording": "eyebrows" in state[1],
                        "analysing": state[1] == "Analysing", "done": True}
                if state[0] in want and want[state[0]] and state[0] not in shots:
                    shots[state[0]] = ARTIFACTS / f"record-{state[0]}.png"
                    page.screenshot(path=str(shots[state[0]]))
                time.sleep(0.25)
            if "/session/" in page.url:
                page.wait_for_load_state("load")
                shots["report"] = ARTIFACTS / "record-report.png"
                page.screenshot(path=str(shots["report"]))
            browser.close()
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert rc == 0, stderr[-2000:]
    assert "Session written" in stdout
    assert errors == [] and outside == []
    # The checks failed on the dark, small and turned face with their instructions, then
    # passed.
    phases = [ph for ph, _ in seen]
    before = [say for ph, say in seen[: phases.index("recording")]]
    for instruction in ("More light on the face, from the front",
                        "Move closer to the camera", "Turn your head a little to your right"):
        assert instruction in before, (instruction, before)
    assert "Good. Hold still." in before
    assert {"checking", "recording", "analysing"} <= set(phases)
    assert set(shots) >= {"checking", "recording", "analysing", "done"}

    # The session: recording, cues as the analysis reads them, schedule in session.json.
    proto = load_protocol("standard").subset(["raise", "eee"])
    cues = read_cues(out / "cues.csv", proto)
    meta = json.loads((out / "session.json").read_text())
    assert meta["recording"]["schedule"][0] == {"step": "raise", "instruction":
                                                proto.steps[0].instruction,
                                                "rest_s": 2.0, "hold_s": 3.0}
    assert meta["clips"][0]["path"] == "recording.webm"
    assert (out / "recording.webm").stat().st_size > 10_000
    assert not list(tmp_path.glob(".session*"))  # no staging left
    # Where the recording began in the camera's file: the first frame's number.
    cap = cv2.VideoCapture(str(out / "recording.webm"))
    ok, first = cap.read()
    cap.release()
    assert ok
    start = _read_code(first) / fps
    steps = {s["name"]: s for s in meta["clips"][0]["steps"]}
    import pandas as pd

    asym = pd.read_csv(out / "asymmetry.csv")
    prim = asym[asym["primary"].astype(str) == "True"].set_index("step")
    (ARTIFACTS / "record-e2e.json").write_text(json.dumps({
        "recording_starts_at_camera_s": start,
        "page_camera_to_start_s": meta["recording"]["page"]["camera_to_start_s"],
        "steps": {m.name: {"cue": cues[m.name], "truth_peak_s": m.peak_s - start,
                           "peak_s": steps[m.name]["peak_s"],
                           "dominant": prim.loc[m.name, "dominant_side"]} for m in truth},
    }, indent=1))
    for m in truth:
        a, b = cues[m.name]
        s = steps[m.name]
        assert s["source"] == "cues" and s["quality"]["verdict"] == "ok", s
        # The page's cue window holds the movement, and the peak found in it is the truth's.
        assert a <= m.peak_s - start <= b, (m.name, a, b, m.peak_s - start)
        assert abs(s["peak_s"] - (m.peak_s - start)) <= 0.2, (m.name, s["peak_s"],
                                                               m.peak_s - start)
        want = "left" if m.left_mm > m.right_mm else "right"
        assert prim.loc[m.name, "dominant_side"] == want, prim.loc[m.name].to_dict()


def _status(url: str, timeout: float = 120.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with urllib.request.urlopen(url + "status", timeout=10) as r:
            st = json.loads(r.read())
        if st["phase"] in ("done", "failed"):
            return st
        time.sleep(0.5)
    raise AssertionError("the analysis did not finish")


@pytest.mark.slow
def test_a_step_recorded_again_replaces_it_in_the_session(tmp_path):
    """The recording, then 'eee' recorded again with the other side stronger: the
    re-analysed session measures eee from the new clip and keeps raise from the first,
    and replaces the visit in the clinic store rather than adding a second one."""
    import pandas as pd

    from movement.clinic import store

    def consult(name: str, steps: list[synth.StepMotion], length: float) -> bytes:
        spec = synth.SynthSpec(steps=steps, duration_s=length, fps=15, frame_size=SIZE,
                               face_height_frac=FACE, noise_sigma=1.0, seed=7)
        path = tmp_path / f"{name}.mp4"
        synth.make_video(spec, path)
        return path.read_bytes()

    first = consult("first", [synth.StepMotion("raise", 4.0, 5.5, 7.0, 2.0, 4.5),
                              synth.StepMotion("eee", 9.0, 10.5, 12.0, 3.0, 1.2)], 14.0)
    again = consult("again", [synth.StepMotion("eee", 4.0, 5.5, 7.0, 1.0, 3.5)], 9.0)
    clinic = tmp_path / "clinic"
    cfg = Config(load_protocol("standard").subset(["raise", "eee"]), tmp_path / "session",
                 patient="p1", date="2026-03-02", store_dir=clinic)
    url, result, t = _serve_in_thread(cfg)
    try:
        assert _post(url + "video?name=recording", first)[0] == 200
        cues = [{"step": "raise", "start_s": 4.0, "end_s": 7.5},
                {"step": "eee", "start_s": 9.0, "end_s": 12.5}]
        assert _post(url + "analyse", json.dumps({"cues": cues, "meta": {"duration_s": 14}})
                     .encode(), "application/json")[0] == 202
        st = _status(url)
        assert st["phase"] == "done", st
        side = pd.read_csv(cfg.out / "asymmetry.csv").query("primary").set_index("step")
        assert side.loc["eee", "dominant_side"] == "right"
        [visit] = store.list_sessions(clinic, "p1")
        # A redo needs its own video.
        code, err = _post(url + "analyse", json.dumps(
            {"cues": [{"step": "eee", "start_s": 4, "end_s": 7.5}], "redo": "eee"}).encode(),
            "application/json")
        assert code == 400
        assert _post(url + "video?name=redo-eee", again)[0] == 200
        assert _post(url + "analyse", json.dumps(
            {"cues": [{"step": "eee", "start_s": 4.0, "end_s": 7.5}], "redo": "eee"}).encode(),
            "application/json")[0] == 202
        st = _status(url)
        assert st["phase"] == "done", st
        assert [(s["step"], s["redone"]) for s in st["steps"]] == [("raise", False),
                                                                    ("eee", True)]
    finally:
        _post(url + "closed", b"{}")
        t.join(20)
    assert result[0].code == 0 and result[0].written
    side = pd.read_csv(cfg.out / "asymmetry.csv").query("primary").set_index("step")
    assert side.loc["eee", "dominant_side"] == "left"
    assert side.loc["raise", "dominant_side"] == "left"
    meta = json.loads((cfg.out / "session.json").read_text())
    assert [c["path"] for c in meta["clips"]] == ["recording.webm", "redo-eee.webm"]
    assert list(meta["recording"]["redone"]) == ["eee"]
    assert read_cues(cfg.out / "cues-redo-eee.csv", cfg.protocol) == {"eee": (4.0, 7.5)}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    [stored] = store.list_sessions(clinic, "p1")
    assert stored.id == visit.id and stored.date == "2026-03-02"
    tables = store.session_tables(clinic, stored.id)
    assert [c["sha256"] for c in tables["clips"]] == [c["sha256"] for c in meta["clips"]]
    eee = [r for r in tables["asymmetry"] if r["step"] == "eee" and r["primary"]]
    assert eee[0]["dominant_side"] == "left"


@pytest.mark.slow
def test_record_again_from_the_page(tmp_path):
    """In Chromium: a head tilted 35 degrees (the checks refuse it; started anyway) makes
    the step unusable; the page's "Record again" button records that step alone, the
    server re-analyses, the page shows it redone and the report opens."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed ({exc})")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("no Chromium binary (apt-get install chromium)")
    import signal

    # A still, tilted face: every stretch of it is unusable, whenever recording starts.
    face = synth.Renderer(synth.SynthSpec(steps=(), duration_s=1.0, frame_size=SIZE,
                                          face_height_frac=FACE)).frame(0)
    w, h = SIZE
    tilted = cv2.warpAffine(face, cv2.getRotationMatrix2D((w / 2, h / 2), 35, 1.0), SIZE,
                            borderMode=cv2.BORDER_REPLICATE)
    y4m = tmp_path / "camera.y4m"
    rng = np.random.default_rng(3)
    with open(y4m, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F15:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(45):
            img = np.clip(tilted + rng.normal(0, 1.0, tilted.shape), 0, 255).astype(np.uint8)
            fh.write(b"FRAME\n" + cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes())
    out = tmp_path / "session"
    proc = subprocess.Popen(
        [sys.executable, "-m", "movement.cli", "record", "--no-open", "--silent",
         "--steps", "eee", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = proc.stdout.readline().strip()
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, args=[
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={y4m}",
            ])
            page = b.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function(
                "document.getElementById('say').textContent.includes('head level')",
                timeout=60_000)
            page.locator("#force").click()
            again = page.locator("#results button", has_text="Record again")
            again.wait_for(timeout=120_000)
            first = page.evaluate("document.getElementById('results').innerText")
            again.click()
            page.locator("#force").click(timeout=30_000)
            page.wait_for_function("document.body.className === 'recording'")
            page.wait_for_function("document.getElementById('results').innerText"
                                   ".includes('eee (again)')", timeout=120_000)
            with page.context.expect_page() as report:
                page.locator("#open").click()
            report.value.wait_for_load_state("load")
            title = report.value.title()
            b.close()  # the page says it is gone; the session is written, so that ends it
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # Ctrl-C keeps a complete session too
            rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, err = proc.stdout.read(), proc.stderr.read()
    assert errors == [], errors
    assert "unusable" in first and "tilted" in first, first
    assert (rc == 0 and "Session written" in stdout) or (rc == 130 and "is complete" in err), (
        rc, stdout, err)
    assert title, "the report did not open"
    meta = json.loads((out / "session.json").read_text())
    # The only step was recorded again: it is measured from its own clip, and the first
    # recording stays in the folder with the cues that describe it.
    assert [c["path"] for c in meta["clips"]] == ["redo-eee.webm"]
    assert list(meta["recording"]["redone"]) == ["eee"]
    assert (out / "cues-redo-eee.csv").exists() and (out / "redo-eee.webm").stat().st_size
    assert (out / "cues.csv").exists() and (out / "recording.webm").stat().st_size


# ---------------------------------------------------------------- interruptions


def _start_record(out: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "movement.cli", "record", "--no-open", "--silent",
         "--steps", "raise,eee", "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    return proc, proc.stdout.readline().strip()


def test_ctrl_c_while_the_page_is_open_leaves_nothing(tmp_path):
    import signal

    proc, url = _start_record(tmp_path / "session")
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"Recording a consult" in r.read()
        assert _post(url + "video?name=recording", b"half a video")[0] == 200
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert rc == 130
    assert "movement: error: interrupted; no session was written" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_analysis_interrupted_leaves_no_session(tmp_path, monkeypatch):
    from movement import consult

    spec = synth.SynthSpec(steps=[synth.StepMotion("raise", 1.0, 1.8, 2.6, 2.0, 4.0)],
                           duration_s=3.0, fps=15, frame_size=SIZE, face_height_frac=FACE)
    video = tmp_path / "clip.mp4"
    synth.make_video(spec, video)
    real = consult.analyze_to_folder

    def interrupted(*args, **kw):
        seen = [0]
        inner = kw["progress"]

        def progress(n: int) -> None:
            inner(n)
            seen[0] += n
            if seen[0] >= 20:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the analysis

        kw["progress"] = progress
        return real(*args, **kw)

    monkeypatch.setattr(consult, "analyze_to_folder", interrupted)
    out = tmp_path / "rec" / "session"
    cfg = Config(load_protocol("standard").subset(["raise"]), out)
    urls: list[str] = []

    def client() -> None:
        while not urls:
            time.sleep(0.05)
        _post(urls[0] + "video?name=recording", video.read_bytes())
        _post(urls[0] + "analyse", json.dumps(
            {"cues": [{"step": "raise", "start_s": 0.8, "end_s": 2.8}]}).encode(),
            "application/json")

    threading.Thread(target=client, daemon=True).start()
    outcome = serve(cfg, urls.append, lambda m: None)  # the analysis runs in this thread
    assert outcome.code == 130 and not outcome.written
    assert outcome.message == "interrupted; no session was written"
    assert list((tmp_path / "rec").iterdir()) == []


@pytest.mark.slow
def test_camera_problems_get_one_clear_message_each(tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed ({exc})")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("no Chromium binary (apt-get install chromium)")
    base = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    proc, url = _start_record(tmp_path / "session")
    said: dict[str, str] = {}
    try:
        with sync_playwright() as p:

            def message(args: list[str], grant: bool, then=None, init: str = "") -> str:  # noqa: ANN001
                b = p.chromium.launch(executable_path=chromium, args=base + args)
                ctx = b.new_context(permissions=["camera"] if grant else [])
                page = ctx.new_page()
                if init:
                    page.add_init_script(init)
                page.goto(url)
                if then is not None:
                    then(page)
                page.wait_for_function(
                    "document.body.className === 'error'", timeout=30_000)
                text = page.evaluate("document.getElementById('say').textContent")
                b.close()
                return text

            said["none"] = message([], grant=True)

            # A camera held by another program: what the browser then reports.
            said["busy"] = message(["--use-fake-device-for-media-stream"], True, None,
                                   "navigator.mediaDevices.getUserMedia = () => Promise.reject("
                                   "new DOMException('Could not start video source', "
                                   "'NotReadableError'));")
            said["denied"] = message(["--use-fake-device-for-media-stream"], grant=False)

            def record_then_unplug(page) -> None:  # noqa: ANN001
                # Chromium's own fake camera shows no face: start anyway, then the
                # camera goes away mid-recording.
                page.locator("#force").click(timeout=30_000)
                page.wait_for_function("document.body.className === 'recording'")
                page.wait_for_timeout(500)
                page.evaluate("cam.srcObject.getVideoTracks()[0]"
                              ".dispatchEvent(new Event('ended'))")

            said["unplugged"] = message(["--use-fake-device-for-media-stream",
                                         "--use-fake-ui-for-media-stream"], True,
                                        record_then_unplug)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert said["none"].startswith("No camera found"), said
    assert said["denied"].startswith("Camera permission was refused"), said
    assert said["busy"].startswith("The camera is in use by another program"), said
    assert said["unplugged"].startswith("Recording stopped: the camera was disconnected"), said
    assert "Nothing was saved" in said["unplugged"]
    err = proc.stderr.read()
    assert rc == 130, err
    assert "recording interrupted (the camera was disconnected); no session was written" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_pause_and_redo_repeat_the_step_and_keep_the_cues_honest(tmp_path):
    """Redo during a hold repeats that step; a pause repeats the step it interrupted and
    its time is not in the recording. The cues the page sends say so; an analysis that
    finds no face (Chromium's own fake camera) then fails and writes nothing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed ({exc})")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("no Chromium binary (apt-get install chromium)")
    import signal

    proc, url = _start_record(tmp_path / "session")
    sent: list[dict] = []
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, args=[
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream"])
            page = b.new_page()
            page.on("request", lambda r: sent.append(json.loads(r.post_data))
                    if r.url.endswith("/analyse") else None)
            page.goto(url)
            page.locator("#force").click(timeout=30_000)

            def wait_say(text: str) -> None:
                page.wait_for_function(
                    f"document.getElementById('say').textContent.includes({text!r})",
                    timeout=30_000)

            wait_say("eyebrows")
            page.wait_for_timeout(1000)
            # One second into the raise: do it again (the page's clock when pressed).
            t_redo = page.evaluate("document.getElementById('redo').click(), clock.now()")
            wait_say("Relax")
            wait_say("eyebrows")
            wait_say("'eee'")
            page.wait_for_timeout(1000)
            t_pause = page.evaluate("document.getElementById('pause').click(), clock.now()")
            wait_say("Paused")
            page.wait_for_timeout(2000)
            page.locator("#pause").click()  # resume: the eee starts again from its rest
            page.wait_for_function("document.body.className === 'error'", timeout=90_000)
            failed = page.evaluate("document.getElementById('say').textContent")
            b.close()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130
    assert len(sent) == 1
    cues = {c["step"]: (c["start_s"], c["end_s"]) for c in sent[0]["cues"]}
    # Lead-in 2 s, rest 2 s, about a second of raise, Redo: its rest again, then raise.
    assert 4.9 <= t_redo <= 6.5
    assert t_redo + 2.0 <= cues["raise"][0] <= t_redo + 2.3, (t_redo, cues)
    assert cues["raise"][1] - cues["raise"][0] == pytest.approx(3.5, abs=0.1)
    # eee: its rest, a second of eee, the pause (not on the clock), its rest again, eee.
    assert cues["raise"][1] - 0.5 + 2.0 + 0.9 <= t_pause, (t_pause, cues)
    assert t_pause + 2.0 <= cues["eee"][0] <= t_pause + 2.3, (t_pause, cues)
    # The recording clock stops while paused: the page's duration is the schedule's.
    assert sent[0]["meta"]["duration_s"] == pytest.approx(cues["eee"][1] - 0.5 + 2, abs=0.6)
    assert failed.startswith("The analysis failed:") and "nothing was written" in failed
    assert list(tmp_path.iterdir()) == []
