"""The batch engine: fingerprint, decide, submit, retry a lost worker once, record, summarise."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from movement import MEASUREMENT_VERSION, __version__
from movement.analysis.pipeline import Options, file_sha256
from movement.analysis.steps import read_cues
from movement.batch.cluster import DaskExecutor, PoolExecutor, WorkerLost
from movement.batch.records import (
    EXIT_MEANINGS,
    SUMMARY,
    WORKER_DIED,
    BatchError,
    BatchItem,
    Outcome,
    decide,
    read_ledger,
    write_ledger,
    write_summary,
)
from movement.clinic import store
from movement.clinic.compare import update_comparison
from movement.consult import exit_code, write_consult
from movement.protocol import Protocol, load_protocol
from movement.report.folder import OutputError, check_out_dir
from movement.report.htmlkit import staged_folder

# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class Task:
    """Everything a worker needs for one video (picklable; no store, no client state)."""

    video: Path
    out: Path
    opts: Options
    images: bool
    force: bool
    comparison_href: str | None
    ship: bool  # write to a temporary folder and send the files back
    attempt: int = 0


@dataclass
class WorkerResult:
    ok: bool
    code: int = 0
    error: str = ""
    steps_measured: int = 0
    steps_total: int = 0
    low_steps: int = 0
    unusable_steps: int = 0
    seconds: float = 0.0
    files: dict[str, bytes] | None = None  # the session folder, when shipped


def analyse_task(task: Task) -> WorkerResult:
    """Run on a worker: analyse one video into its session folder; never raises for a video."""
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="movement-batch-")) if task.ship else None
    out = tmp / "session" if tmp else task.out
    try:
        s = write_consult([task.video], None, out, task.opts, task.images, task.force,
                          comparison_href=lambda _: task.comparison_href)
        files = None
        if tmp:
            files = {p.relative_to(out).as_posix(): p.read_bytes()
                     for p in sorted(out.rglob("*")) if p.is_file()}
    except Exception as exc:  # one video's failure must not stop the batch
        code = exit_code(exc)
        msg = str(exc) if code else f"internal error ({type(exc).__name__}: {exc})"
        return WorkerResult(False, code or 1, msg, seconds=time.monotonic() - t0)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    prim = s.asymmetry[s.asymmetry["primary"]]
    q = prim["quality"]
    return WorkerResult(
        True, steps_measured=int((q != "missing").sum()), steps_total=len(prim),
        low_steps=int((q == "low").sum()), unusable_steps=int((q == "unusable").sum()),
        seconds=time.monotonic() - t0, files=files,
    )


# --------------------------------------------------------------------------- progress


class BatchProgress:
    """One line on stderr over videos: done, failed, running, time left (a terminal only)."""

    def __init__(self, total: int, enabled: bool, stream: Any = None) -> None:
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.shown = False

    @staticmethod
    def line(done: int, failed: int, running: int, total: int, left_s: float | None) -> str:
        pct = (done + failed) / max(total, 1)
        bar = "#" * int(pct * 30)
        left = "" if left_s is None else (
            f"  {left_s / 60:4.0f} min left" if left_s >= 90 else f"  {left_s:4.0f} s left")
        return (f"  videos [{bar:<30}] {done + failed}/{total}  done {done}  failed {failed}  "
                f"running {running}{left}")

    def update(self, done: int, failed: int, running: int, finished_here: int,
               remaining: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.t0
        # The rate over videos analysed by this run (skipped ones cost nothing).
        left = elapsed / finished_here * remaining if finished_here else None
        self.stream.write("\r" + self.line(done, failed, running, self.total, left) + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


# --------------------------------------------------------------------------- engine


@dataclass
class BatchReport:
    outcomes: list[Outcome]  # in the batch's order
    summary: Path

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != "ok"]

    @property
    def exit_code(self) -> int:
        return max((o.exit_code for o in self.failed), default=0)


@contextmanager
def _batch_lock(out_root: Path) -> Iterator[None]:
    """One batch per output folder at a time: two would overwrite each other's ledger."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_root / ".movement-batch.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise BatchError(f"{out_root}: cannot write ({exc.strerror or exc})", 6) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BatchError(f"{out_root}: another batch is writing this folder", 6) from None
        yield
    finally:
        os.close(fd)


def _fingerprint(item: BatchItem, proto: Protocol | None, old: Outcome | None) -> Outcome:
    """The video as it is now (its sha256 reused from the ledger while size and mtime match)."""
    sha, size, mtime = "", 0, 0
    try:
        st = item.video.stat()
        size, mtime = st.st_size, st.st_mtime_ns
        if old and old.sha256 and (old.size, old.mtime_ns) == (size, mtime):
            sha = old.sha256
        elif item.video.is_file():
            sha = file_sha256(item.video)
    except OSError:
        pass  # the worker reports the unreadable video with its exit code
    return Outcome(
        video=str(item.video), out=str(item.out), patient=item.patient, label=item.label,
        date=item.date, protocol=proto.name if proto else item.protocol,
        protocol_version=proto.version if proto else None, software=__version__,
        mirrored=item.mirrored, cues=item.cues or "", face=item.face, sha256=sha, status="",
        size=size, mtime_ns=mtime, measurement_version=MEASUREMENT_VERSION,
    )


def _fail(o: Outcome, code: int, message: str) -> Outcome:
    o.status, o.exit_code, o.error = "failed", code, message
    o.meaning = EXIT_MEANINGS.get(code, "")
    return o


def _href(store_dir: Path | None, item: BatchItem, sha: str, batch_count: int) -> str | None:
    """The report's link to the patient's comparison, counting the batch's other videos."""
    if not item.patient:
        return None
    link = store.session_link(store_dir, item.patient, [sha] if sha else None)
    if link is None and batch_count >= 2:
        link = store.patient_dir(store_dir, item.patient) / store.COMPARISON_FILE
    return os.path.relpath(link, item.out.absolute()) if link else None


def _install(out: Path, files: dict[str, bytes], sha: str, force: bool) -> None:
    """Write a shipped session folder on the client, atomically."""
    check_out_dir(out, [sha], force)
    with staged_folder(out.absolute(), OutputError) as tmp:
        for name, data in files.items():
            target = tmp / name
            if tmp.resolve() not in target.resolve().parents:
                raise OutputError(f"{out}: a worker sent a file outside the folder ({name})")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def run_batch(
    items: list[BatchItem],
    out_root: Path,
    executor: PoolExecutor | DaskExecutor,
    images: bool = True,
    force: bool = False,
    store_dir: Path | None = None,
    retry_failed: bool = False,
    progress: BatchProgress | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> BatchReport:
    """Analyse ``items`` on ``executor``; record on this process; return every outcome.

    The executor stays open (its owner closes it), so one cluster can serve
    several batches.

    Writes the ledger after each video and ``OUT/batch-summary.csv`` at the end
    (and on an interruption, for what finished). ``on_outcome`` sees each video
    as it settles (for the command line's per-video lines).
    """
    with _batch_lock(out_root):
        ledger = read_ledger(out_root)
        protos: dict[str, Protocol | Exception] = {}
        outcomes: dict[str, Outcome] = {}
        todo: list[tuple[BatchItem, Outcome, Options]] = []
        to_record: list[tuple[BatchItem, Outcome]] = []

        def settle(item: BatchItem, o: Outcome) -> None:
            outcomes[item.key] = o
            ledger[item.key] = o
            write_ledger(out_root, ledger)
            if on_outcome:
                on_outcome(o)

        for item in items:
            if item.protocol not in protos:
                try:
                    protos[item.protocol] = load_protocol(item.protocol)
                except Exception as exc:  # noqa: BLE001 - reported per video
                    protos[item.protocol] = exc
            proto = protos[item.protocol]
            now = _fingerprint(item, proto if isinstance(proto, Protocol) else None,
                               ledger.get(item.key))
            action = decide(ledger.get(item.key), now, retry_failed)
            if action == "skip":
                o = ledger[item.key]
                o.action = "skipped"
                outcomes[item.key] = o
                continue
            if action == "record":
                to_record.append((item, ledger[item.key]))
                continue
            if isinstance(proto, Exception):
                settle(item, _fail(now, exit_code(proto) or 1, str(proto)))
                continue
            try:
                cues = read_cues(item.cues, proto) if item.cues else None
            except Exception as exc:  # noqa: BLE001 - reported per video
                settle(item, _fail(now, exit_code(exc) or 1, str(exc)))
                continue
            opts = Options(proto, item.mirrored, cues, item.face, item.patient, item.label,
                           item.date)
            todo.append((item, now, opts))

        for item, o in to_record:
            _record(item, o, store_dir)
            o.action = "recorded"
            settle(item, o)

        # A patient's sessions after this batch: the report links to the
        # comparison page when there will be two or more.
        per_patient: dict[str, set[str]] = {}
        ok_before = [(it, outcomes[it.key]) for it in items
                     if it.key in outcomes and outcomes[it.key].status == "ok"]
        for it, o in ok_before + [(it, o) for it, o, _ in todo]:
            if it.patient:
                per_patient.setdefault(it.patient, set()).add(o.sha256 or it.key)

        try:
            _execute(todo, executor, images, force, store_dir, per_patient, settle, progress,
                     (sum(o.status == "ok" for o in outcomes.values()),
                      sum(o.status != "ok" for o in outcomes.values())))
        finally:
            if progress:
                progress.clear()
            report = BatchReport([outcomes[it.key] for it in items if it.key in outcomes],
                                 out_root / SUMMARY)
            write_summary(report.summary, report.outcomes)
    return report


def _record(item: BatchItem, o: Outcome, store_dir: Path | None) -> None:
    """Record a finished folder in the store (the client's only store writes)."""
    if not item.patient:
        return
    try:
        store.record_session(store_dir, item.out, item.patient, item.label, item.date)
        update_comparison(store_dir, item.patient)
    except Exception as exc:  # noqa: BLE001 - the folder stays; the video is reported
        _fail(o, exit_code(exc) or 1, f"analysed, but not recorded: {exc}")
        o.recorded = False
        return
    o.recorded = True


def _execute(
    todo: list[tuple[BatchItem, Outcome, Options]],
    executor: PoolExecutor | DaskExecutor,
    images: bool,
    force: bool,
    store_dir: Path | None,
    per_patient: dict[str, set[str]],
    settle: Callable[[BatchItem, Outcome], None],
    progress: BatchProgress | None,
    already: tuple[int, int],
) -> None:
    queue: list[tuple[BatchItem, Outcome, Task]] = []
    for item, o, opts in todo:
        href = _href(store_dir, item, o.sha256, len(per_patient.get(item.patient, ())))
        # Absolute paths: a worker's working folder is not the client's.
        queue.append((item, o, Task(item.video.absolute(), item.out.absolute(), opts, images,
                                    force, href, executor.ship)))
    queue.reverse()  # pop() from the end keeps the batch's order
    in_flight: dict[Any, tuple[BatchItem, Outcome, Task]] = {}
    done = failed = finished_here = 0
    t_start = {}

    def fill() -> None:
        while queue and executor.free() > 0:
            item, o, task = queue.pop()
            h = executor.submit(analyse_task, task, f"{task.video.stem}-a{task.attempt}")
            in_flight[h] = (item, o, task)
            t_start[h] = time.monotonic()

    def show() -> None:
        if progress:
            progress.update(already[0] + done, already[1] + failed, executor.running(),
                            finished_here, len(in_flight) + len(queue))

    fill()
    show()
    try:
        while in_flight or queue:
            if not in_flight:
                # Every worker is gone for now (restarting after a crash, or a
                # remote cluster scaling): wait for one to come back.
                time.sleep(1.0)
            for h in executor.wait(list(in_flight), timeout=1.0) if in_flight else ():
                item, o, task = in_flight.pop(h)
                o.attempts = task.attempt + 1
                try:
                    res = executor.result(h)
                except WorkerLost:
                    if task.attempt == 0:
                        queue.append((item, o, Task(**{**asdict_shallow(task), "attempt": 1})))
                        continue
                    res = WorkerResult(False, WORKER_DIED, "the worker analysing it died twice",
                                       seconds=time.monotonic() - t_start[h])
                except Exception as exc:  # noqa: BLE001 - e.g. a result that failed to unpickle
                    res = WorkerResult(False, 1, f"internal error ({type(exc).__name__}: {exc})")
                _settle_result(item, o, res, force, store_dir, settle)
                finished_here += 1
                if o.status == "ok":
                    done += 1
                else:
                    failed += 1
            fill()
            show()
    except BaseException:
        # Interrupted: what is still queued or running is not waited for (a
        # rerun resumes it); the executor's owner shuts it down.
        for h in in_flight:
            if hasattr(h, "cancel"):
                h.cancel()
        raise


def asdict_shallow(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict without deep-copying them (``asdict`` copies Options)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _settle_result(
    item: BatchItem, o: Outcome, res: WorkerResult, force: bool, store_dir: Path | None,
    settle: Callable[[BatchItem, Outcome], None],
) -> None:
    o.seconds = res.seconds
    o.action = "analysed"
    if not res.ok:
        settle(item, _fail(o, res.code, res.error))
        return
    if res.files is not None:
        try:
            _install(item.out, res.files, o.sha256, force)
        except Exception as exc:  # noqa: BLE001 - reported per video
            settle(item, _fail(o, exit_code(exc) or 1, str(exc)))
            return
    o.status, o.exit_code, o.meaning, o.error = "ok", 0, "", ""
    o.steps_measured, o.steps_total = res.steps_measured, res.steps_total
    o.low_steps, o.unusable_steps = res.low_steps, res.unusable_steps
    _record(item, o, store_dir)
    settle(item, o)
