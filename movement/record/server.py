"""`movement record`: a local page that guides the patient through the protocol.

The page (``page.html``, self-contained) is served on 127.0.0.1 at a free port and
talks only to this server:

``GET /``             the page, with the schedule and options filled in
``POST /check``       a JPEG camera frame -> the recording check's verdict
                      (:mod:`movement.analysis.preview`, the analysis's own rules)
``POST /video?name=`` the recorded WebM (``recording`` or ``redo-<step>``)
``POST /analyse``     JSON cues (step, start_s, end_s per step, seconds into the video)
``GET /status``       the analysis's progress and, when done, each step's verdict
``GET /session/...``  the finished session folder (the report)
``POST /closed``      the page went away (sent by the page as it closes)

Uploads land in a temporary folder beside the session folder; the analysis runs in
the main thread (so Ctrl-C stops it and nothing half-written remains) and the session
folder, with the recording, ``cues.csv`` and the schedule in ``session.json``, appears
in one rename (:func:`movement.consult.analyze_to_folder`). Until then there is no
session: a closed page, a lost camera or Ctrl-C leave nothing behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from movement.protocol import Protocol

PAGE = Path(__file__).with_name("page.html")
MAX_VIDEO_BYTES = 4 << 30
"""Largest upload accepted (a 10-minute 1080p WebM is about 600 MB)."""
MAX_FRAME_BYTES = 8 << 20
RELEASE_S = 0.5
"""Added to each step's cue after its hold: people react to "relax" about half a
second late, and the movement's return belongs to the step."""
LEAD_IN_S = 2.0
"""Rest recorded before the first step's rest (the neutral face the analysis reads)."""
PAGE_GONE_S = 20.0
"""The page polls every second or two; silent this long, it is gone (closed, crashed)."""


class RecordError(Exception):
    """A recording session cannot go on (closed page, bad upload)."""


@dataclass(frozen=True)
class ScheduleStep:
    """One step as the page runs it: rest (with countdown), then hold."""

    step: str
    instruction: str
    rest_s: float
    hold_s: float


def schedule(protocol: Protocol) -> list[ScheduleStep]:
    """The page's schedule, from the protocol file.

    Each step is held for its ``duration_s``; before it the patient rests for twice the
    protocol's ``rest_window_s`` (the analysis takes each step's rest frames from the
    ``rest_window_s`` before the step: the first half lets the previous movement settle).
    """
    rest = 2.0 * protocol.detection.rest_window_s
    return [ScheduleStep(s.name, s.instruction, rest, s.duration_s) for s in protocol.steps]


@dataclass
class Config:
    protocol: Protocol
    out: Path
    patient: str = ""
    label: str = ""
    date: str = ""
    store_dir: Path | None = None
    auto: bool = False
    speak: bool = True


@dataclass
class State:
    """What the page polls (``/status``)."""

    phase: str = "waiting"  # waiting | analysing | done | failed
    progress: float = 0.0
    message: str = ""
    report: str = ""
    steps: list[dict] = field(default_factory=list)
    attempt: int = 0


def write_cues(path: Path, cues: dict[str, tuple[float, float]]) -> None:
    """``step,start_s,end_s`` as :func:`movement.analysis.steps.read_cues` reads it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "start_s", "end_s"])
    for name, (a, b) in cues.items():
        w.writerow([name, f"{a:.3f}", f"{b:.3f}"])
    _atomic_write(path, buf.getvalue().encode())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def parse_cues(payload: object, protocol: Protocol) -> dict[str, tuple[float, float]]:
    """The page's cues, checked: known steps, finite times, end after start."""
    if not isinstance(payload, list):
        raise RecordError("cues: expected a list")
    names = {s.name for s in protocol.steps}
    out: dict[str, tuple[float, float]] = {}
    for c in payload:
        try:
            name, a, b = str(c["step"]), float(c["start_s"]), float(c["end_s"])
        except (KeyError, TypeError, ValueError):
            raise RecordError("cues: each needs step, start_s, end_s") from None
        if name not in names or not 0 <= a < b < 86400:
            raise RecordError(f"cues: bad entry for step {name!r}")
        out[name] = (a, b)
    return out


class Recorder:
    """One recording session: the uploads, the analysis, the state the page polls."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        parent = cfg.out.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{cfg.out.name}.rec-", dir=parent))
        self.state = State()
        self.events: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.lock = threading.Lock()
        self.last_seen = 0.0
        self.report_seen = False
        self.cues: dict[str, tuple[float, float]] = {}
        self.redo: dict[str, dict[str, tuple[float, float]]] = {}  # step -> its clip's cues
        self.meta: dict = {}
        self.written = False
        self._checker = None
        self._check_lock = threading.Lock()

    # -- the camera check -------------------------------------------------------
    def warm(self) -> None:
        """Load the face models now, so the page's first check answers at once."""
        with self._check_lock:
            if self._checker is None:
                from movement.analysis.preview import FrameChecker

                self._checker = FrameChecker()

    def check(self, jpeg: bytes) -> dict:
        import cv2
        import numpy as np

        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise RecordError("not a JPEG image")
        self.warm()
        with self._check_lock:
            return self._checker.check(img).record()

    def close(self) -> None:
        if self._checker is not None:
            self._checker.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    # -- uploads -------------------------------------------------------------
    def video_path(self, name: str) -> Path:
        steps = {s.name for s in self.cfg.protocol.steps}
        if name != "recording" and not (name.startswith("redo-") and name[5:] in steps):
            raise RecordError(f"unknown recording name {name!r}")
        return self.staging / f"{name}.webm"

    def analyse_request(self, payload: dict) -> None:
        cues = parse_cues(payload.get("cues"), self.cfg.protocol)
        if not cues:
            raise RecordError("no step was recorded")
        redo = payload.get("redo")
        if redo:
            if redo not in cues or len(cues) != 1 or not self.video_path(f"redo-{redo}").exists():
                raise RecordError("a step recorded again needs its own video and cue")
            if not self.written:
                raise RecordError("nothing to re-analyse yet")
        elif not self.video_path("recording").exists():
            raise RecordError("no recording was uploaded")
        with self.lock:
            if self.state.phase == "analysing":
                raise RecordError("the analysis is already running")
            self.state = State("analysing", 0.0, "Starting the analysis", "", [],
                               self.state.attempt + 1)
        self.events.put(("analyse", {"cues": cues, "redo": redo or "",
                                     "meta": payload.get("meta") or {}}))

    # -- the analysis (main thread) -------------------------------------------
    def analyse(self, job: dict) -> None:
        from movement import consult
        from movement.analysis.pipeline import Options

        if job["redo"]:
            self.redo[job["redo"]] = job["cues"]
        else:
            self.cues, self.redo = job["cues"], {}
            self.meta = job["meta"] if isinstance(job["meta"], dict) else {}
        main = [n for n in self.cues if n not in self.redo]
        videos = [self.staging / "recording.webm"] if main else []
        groups: list[list[str]] = [main] if main else []
        for step in self.redo:
            videos.append(self.staging / f"redo-{step}.webm")
            groups.append([step])
        all_cues = {**self.cues, **{k: v for c in self.redo.values() for k, v in c.items()}}
        order = [s.name for s in self.cfg.protocol.steps]
        groups = [sorted(g, key=order.index) for g in groups]
        proto = self.cfg.protocol.subset(
            [n for n in order if n in all_cues]) if len(videos) == 1 else self.cfg.protocol
        opts = Options(proto, False, all_cues, "largest", self.cfg.patient, self.cfg.label,
                       self.cfg.date)
        total = _expected_frames(videos, float(self.meta.get("duration_s") or 0.0),
                                 [max(b for _, b in c.values()) for c in self.redo.values()])
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            with self.lock:
                self.state.progress = min(done[0] / max(total, 1.0), 0.97)
                self.state.message = "Measuring the movement"

        def attach(folder: Path) -> None:
            names = [v.name for v in videos]
            # The first recording stays with the session (cues.csv describes it) even
            # when every step in it was recorded again and none is measured from it.
            for v in {*videos, self.staging / "recording.webm"}:
                _link_or_copy(v, folder / v.name)
            write_cues(folder / "cues.csv", self.cues)
            for step, c in self.redo.items():
                write_cues(folder / f"cues-redo-{step}.csv", c)
            meta_path = folder / "session.json"
            record = json.loads(meta_path.read_text(encoding="utf-8"))
            for clip, name in zip(record.get("clips", []), names, strict=False):
                clip["path"] = name  # the recording lives in the session folder
            record["recording"] = {
                "schedule": [asdict(s) for s in schedule(self.cfg.protocol)],
                "cues": [{"step": k, "start_s": a, "end_s": b} for k, (a, b) in self.cues.items()],
                "redone": {k: [{"step": s, "start_s": a, "end_s": b} for s, (a, b) in c.items()]
                           for k, c in self.redo.items()},
                "page": self.meta,
            }
            _atomic_write(meta_path, json.dumps(record, indent=2).encode())

        try:
            session = consult.analyze_to_folder(
                videos, groups if len(videos) > 1 else None, self.cfg.out, opts,
                force=self.written, progress=progress, store_dir=self.cfg.store_dir,
                attach=attach, replace_stored=self.written,
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            code = consult.exit_code(exc)
            msg = str(exc) if code else f"internal error ({type(exc).__name__}: {exc})"
            with self.lock:
                self.state.phase, self.state.message = "failed", f"{msg}; nothing was written"
            if not self.written:
                for v in videos:
                    v.unlink(missing_ok=True)
            return
        self.written = True
        verdicts = {q.step: q for c in session.clips for q in c.quality}
        steps = []
        for name in order:
            if name not in all_cues:
                continue
            q = verdicts.get(name)
            steps.append({
                "step": name,
                "verdict": q.verdict if q else "missing",
                "instruction": q.instruction if q else "",
                "redone": name in self.redo,
            })
        with self.lock:
            self.state.phase, self.state.progress = "done", 1.0
            self.state.message = f"Session written to {self.cfg.out}"
            self.state.report = "/session/report.html"
            self.state.steps = steps


def _expected_frames(videos: list[Path], main_s: float, redo_s: list[float]) -> float:
    """Frames the analysis will read, for its progress bar. A browser's WebM carries no
    frame count or duration in its header: the page's durations times the frame rate."""
    from movement.analysis.video import VideoError, probe

    total = 0.0
    durations = ([main_s] if len(videos) > len(redo_s) else []) + [b + 1.0 for b in redo_s]
    for v, d in zip(videos, durations, strict=False):
        try:
            fps = probe(v).fps
        except VideoError:
            fps = 30.0
        total += d * (fps if 5.0 <= fps <= 120.0 else 30.0)
    return total


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def render_page(cfg: Config) -> bytes:
    """The page with its configuration (schedule, patient, options) filled in."""
    conf = {
        "protocol": cfg.protocol.name,
        "title": cfg.protocol.title,
        "patient": cfg.patient,
        "label": cfg.label,
        "date": cfg.date,
        "lead_in_s": LEAD_IN_S,
        "release_s": RELEASE_S,
        "steps": [asdict(s) for s in schedule(cfg.protocol)],
        "auto": cfg.auto,
        "speak": cfg.speak,
    }
    # Inside a <script> element "</" would end it: JSON allows "\u003c" instead of "<".
    blob = json.dumps(conf).replace("<", "\\u003c")
    return PAGE.read_text(encoding="utf-8").replace("/*CONFIG*/{}", blob).encode()


def make_handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    page = render_page(rec.cfg)

    class Handler(BaseHTTPRequestHandler):
        server_version = "movement-record"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # the terminal is for the clinician, not for request logs

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: object) -> None:
            self._send(code, json.dumps(obj).encode())

        def _body(self, limit: int) -> bytes:
            n = int(self.headers.get("Content-Length") or -1)
            if n < 0 or n > limit:
                raise RecordError("missing or too large upload")
            return self.rfile.read(n)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            rec.last_seen = time.monotonic()
            url = urlparse(self.path)
            if url.path in ("/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8")
            elif url.path == "/status":
                with rec.lock:
                    self._json(200, asdict(rec.state))
            elif url.path.startswith("/session/") and rec.written:
                name = url.path[len("/session/"):]
                path = (rec.cfg.out / name).resolve()
                if rec.cfg.out.resolve() not in path.parents or not path.is_file():
                    self._json(404, {"error": "not found"})
                    return
                if name == "report.html":
                    rec.report_seen = True
                ctype = {".html": "text/html; charset=utf-8", ".csv": "text/csv",
                         ".json": "application/json"}.get(path.suffix, "application/octet-stream")
                self._send(200, path.read_bytes(), ctype)
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            # Another web page open in the same browser may not post here (a browser
            # always names the page's origin on a cross-site POST).
            origin = self.headers.get("Origin")
            host = self.headers.get("Host", "")
            if origin and origin != f"http://{host}":
                self._json(403, {"error": "not from the recording page"})
                return
            rec.last_seen = time.monotonic()
            url = urlparse(self.path)
            try:
                if url.path == "/check":
                    self._json(200, rec.check(self._body(MAX_FRAME_BYTES)))
                elif url.path == "/video":
                    name = parse_qs(url.query).get("name", [""])[0]
                    path = rec.video_path(name)
                    _receive(self, path)
                    self._json(200, {"saved": name, "bytes": path.stat().st_size})
                elif url.path == "/analyse":
                    rec.analyse_request(json.loads(self._body(1 << 20) or b"{}"))
                    self._json(202, {"ok": True})
                elif url.path == "/closed":
                    info = json.loads(self._body(1 << 16) or b"{}")
                    rec.events.put(("closed", info if isinstance(info, dict) else {}))
                    self._json(200, {"ok": True})
                else:
                    self._json(404, {"error": "not found"})
            except (RecordError, ValueError) as exc:
                self._json(400, {"error": str(exc)})
            except Exception as exc:  # the page shows it; the server goes on
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    return Handler


def _receive(handler: BaseHTTPRequestHandler, path: Path) -> None:
    """Stream an upload to ``path`` atomically (a part file renamed when complete)."""
    n = int(handler.headers.get("Content-Length") or -1)
    if n <= 0 or n > MAX_VIDEO_BYTES:
        raise RecordError("missing, empty or too large recording")
    tmp = path.with_name(f".{path.name}.part")
    left = n
    with open(tmp, "wb") as fh:
        while left:
            chunk = handler.rfile.read(min(left, 1 << 20))
            if not chunk:
                tmp.unlink(missing_ok=True)
                raise RecordError("the upload was cut off")
            fh.write(chunk)
            left -= len(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class Outcome:
    written: bool
    message: str
    code: int


def serve(
    cfg: Config,
    on_url: Callable[[str], None],
    say: Callable[[str], None] = print,
    host: str = "127.0.0.1",
) -> Outcome:
    """Serve the page until the session is done (with ``auto``), the page goes away
    or Ctrl-C; analyse in this thread when the page asks. ``on_url`` gets the page's
    address once the server listens."""
    rec = Recorder(cfg)
    try:
        rec.warm()
    except BaseException:
        rec.close()
        raise
    httpd = ThreadingHTTPServer((host, 0), make_handler(rec))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    url = f"http://{host}:{httpd.server_address[1]}/"
    try:
        on_url(url)
        rec.last_seen = time.monotonic()
        done_at = 0.0
        while True:
            try:
                kind, data = rec.events.get(timeout=0.5)
            except queue.Empty:
                kind, data = "", {}
            now = time.monotonic()
            if kind == "analyse":
                say("analysing the recording ...")
                rec.analyse(data)
                with rec.lock:
                    phase, msg = rec.state.phase, rec.state.message
                say(msg)
                if phase == "done" and cfg.auto:
                    done_at = time.monotonic()
                rec.last_seen = time.monotonic()
                continue
            if kind == "closed":
                if rec.written:
                    if not cfg.auto:
                        return Outcome(True, f"Session written to {cfg.out}", 0)
                    # --auto: the page is on its way to the report; serve it first.
                    done_at = done_at or now
                    continue
                why = str(data.get("reason") or "the page was closed")
                return Outcome(False, f"recording interrupted ({why}); no session was written",
                               130)
            if done_at and (rec.report_seen or now - done_at > 15.0):
                time.sleep(1.0)  # let the report's response finish
                return Outcome(True, f"Session written to {cfg.out}", 0)
            if now - rec.last_seen > PAGE_GONE_S:
                with rec.lock:
                    busy = rec.state.phase == "analysing"
                if not busy:
                    if rec.written:
                        return Outcome(True, f"Session written to {cfg.out}", 0)
                    return Outcome(False, "the page stopped answering (closed?); "
                                   "no session was written", 130)
    except KeyboardInterrupt:
        if rec.written:
            return Outcome(True, f"interrupted; the session in {cfg.out} is complete", 130)
        return Outcome(False, "interrupted; no session was written", 130)
    finally:
        httpd.shutdown()
        httpd.server_close()
        rec.close()
