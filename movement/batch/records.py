"""The batch's inputs and records: the manifest, the ledger, the summary CSV, what to rerun.

No analysis here: the client reads the manifest and decides what to run before
any worker starts.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from movement import __version__
from movement.clinic import store
from movement.clinic.transfer import write_text_atomic

LEDGER = ".movement-batch.json"
SUMMARY = "batch-summary.csv"
INSTALL_HINT = "pip install 'movement-face[cluster]'"

WORKER_DIED = 8
"""Exit code of a video whose worker died on both attempts."""
CLUSTER_UNAVAILABLE = 9
"""Exit code when the cluster cannot be used: Dask missing, or the scheduler unreachable."""

EXIT_MEANINGS = {
    1: "unexpected error",
    2: "usage error",
    3: "unreadable video",
    4: "no face in the video",
    5: "protocol or cues file invalid",
    6: "output folder unwritable or holding another session",
    7: "clinic store error",
    WORKER_DIED: "the worker analysing it died twice (out of memory, or killed)",
    CLUSTER_UNAVAILABLE: "cluster unavailable",
}
"""What each exit code of ``movement analyze`` means (the summary CSV's ``meaning``)."""

MANIFEST_REQUIRED = ("video", "patient", "label", "date")
MANIFEST_OPTIONAL = ("protocol", "mirrored", "cues")


class BatchError(Exception):
    """A batch that cannot start: one line for the user, and its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class BatchItem:
    """One video of the batch and how to analyse and record it."""

    video: Path
    out: Path
    patient: str = ""
    label: str = ""
    date: str = ""
    protocol: str = "standard"
    mirrored: bool = False
    cues: str | None = None
    face: str = "largest"

    @property
    def key(self) -> str:
        """The ledger's key: the video's absolute path."""
        return str(self.video.absolute())


_YES = {"1", "yes", "true", "y"}
_NO = {"", "0", "no", "false", "n"}


def _flag(text: str, where: str) -> bool:
    t = text.strip().lower()
    if t in _YES:
        return True
    if t in _NO:
        return False
    raise BatchError(f"{where}mirrored must be yes or no, not '{text}'", 2)


def _check_names(items: list[BatchItem], where: Callable[[int], str]) -> None:
    """Two rows for one video, or two videos for one folder, are refused up front."""
    seen: dict[str, int] = {}
    outs: dict[Path, int] = {}
    for i, it in enumerate(items):
        if it.key in seen:
            raise BatchError(f"{where(i)}{it.video} is listed twice ({where(seen[it.key])})", 2)
        if it.out in outs:
            raise BatchError(
                f"{where(i)}{it.video.name} would share the folder {it.out} with "
                f"{items[outs[it.out]].video} ({where(outs[it.out]).rstrip(': ')})", 2)
        seen[it.key], outs[it.out] = i, i


def folder_items(videos: list[Path], out_root: Path, defaults: BatchItem) -> list[BatchItem]:
    """Each video as its own consult, with the command line's patient, label, date, protocol."""
    items = [
        BatchItem(v, out_root / v.stem, defaults.patient, defaults.label, defaults.date,
                  defaults.protocol, defaults.mirrored, defaults.cues, defaults.face)
        for v in videos
    ]
    _check_names(items, lambda i: "")
    return items


def read_manifest(path: Path, out_root: Path, defaults: BatchItem) -> list[BatchItem]:
    """The manifest CSV: ``video, patient, label, date[, protocol, mirrored, cues]``.

    Relative video and cues paths are relative to the manifest's folder. An
    empty date, protocol or mirrored cell takes the command line's value; an
    empty patient means the session is not recorded in the store. Unknown
    columns are refused (a misspelt ``patient`` column would silently store
    nothing).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"{path}: cannot read the manifest ({exc})", 2) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in MANIFEST_REQUIRED if c not in header]
    if missing:
        raise BatchError(f"{path}: manifest without column(s) {', '.join(missing)}", 2)
    unknown = [h for h in header if h not in MANIFEST_REQUIRED + MANIFEST_OPTIONAL]
    if unknown:
        raise BatchError(f"{path}: unknown manifest column(s) {', '.join(unknown)}", 2)
    reader.fieldnames = header
    base = path.parent
    items: list[BatchItem] = []
    rows: list[int] = []
    for n, row in enumerate(reader, start=2):  # line 1 is the header
        if None in row:
            raise BatchError(f"{path}: line {n}: more cells than columns", 2)
        cell = {k: (v or "").strip() for k, v in row.items()}
        if not any(cell.values()):
            continue
        where = f"{path}: line {n}: "
        if not cell["video"]:
            raise BatchError(f"{where}no video", 2)
        try:
            patient = store.check_patient(cell["patient"]) if cell["patient"] else ""
            date = store.check_date(cell["date"]) if cell["date"] else defaults.date
        except store.StoreError as exc:
            raise BatchError(f"{where}{exc}", 2) from None
        video = base / cell["video"]
        cues = cell.get("cues") or ""
        items.append(BatchItem(
            video=video,
            out=out_root / video.stem,
            patient=patient,
            label=cell["label"],
            date=date,
            protocol=cell.get("protocol") or defaults.protocol,
            mirrored=_flag(cell["mirrored"], where) if cell.get("mirrored") else defaults.mirrored,
            cues=str(base / cues) if cues else defaults.cues,
            face=defaults.face,
        ))
        rows.append(n)
    if not items:
        raise BatchError(f"{path}: the manifest lists no video", 2)
    _check_names(items, lambda i: f"{path}: line {rows[i]}: ")
    return items


# --------------------------------------------------------------------------- ledger


@dataclass
class Outcome:
    """One video's outcome: a ledger entry and a row of the summary CSV."""

    video: str
    out: str
    patient: str
    label: str
    date: str
    protocol: str
    protocol_version: int | None
    software: str
    mirrored: bool
    cues: str
    face: str
    sha256: str
    status: str  # ok | failed
    action: str = ""  # this run: analysed | recorded | skipped
    steps_measured: int = 0
    steps_total: int = 0
    low_steps: int = 0
    unusable_steps: int = 0
    exit_code: int = 0
    meaning: str = ""
    error: str = ""
    attempts: int = 0
    seconds: float = 0.0
    recorded: bool = False  # in the clinic store
    size: int = 0  # with mtime_ns: the sha256 is reused while the file is untouched
    mtime_ns: int = 0
    # movement.MEASUREMENT_VERSION; 0 in a ledger written before it was kept (older)
    measurement_version: int = 0

    def fingerprint(self) -> tuple:
        return (self.sha256, self.protocol, self.protocol_version, self.software,
                self.measurement_version, self.mirrored, self.cues, self.face, self.patient,
                self.label, self.date)


SUMMARY_COLUMNS = [f.name for f in fields(Outcome) if f.name not in ("size", "mtime_ns")]


def read_ledger(out_root: Path) -> dict[str, Outcome]:
    """The ledger's entries by video path; empty when there is none (or it is unreadable)."""
    path = out_root / LEDGER
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        names = {f.name for f in fields(Outcome)}
        return {k: Outcome(**{n: v for n, v in e.items() if n in names})
                for k, e in raw["videos"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # A damaged ledger costs a re-analysis, never a wrong skip.
        return {}


def write_ledger(out_root: Path, ledger: dict[str, Outcome]) -> None:
    data = {"software": __version__, "videos": {k: asdict(v) for k, v in ledger.items()}}
    write_text_atomic(out_root / LEDGER, json.dumps(data, indent=1, sort_keys=True))


def write_summary(path: Path, outcomes: list[Outcome]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for o in outcomes:
        row = asdict(o)
        # Cells a spreadsheet would run as a formula are defused, as in the store's export.
        row.update({k: store.csv_safe_text(v) for k, v in row.items() if isinstance(v, str)})
        row["seconds"] = f"{o.seconds:.1f}"
        w.writerow(row)
    write_text_atomic(path, buf.getvalue())


def decide(entry: Outcome | None, now: Outcome, retry_failed: bool) -> str:
    """What a run does with one video: ``run``, ``record`` or ``skip``.

    ``now`` is the video as it is (its fingerprint); ``entry`` what the ledger
    says of it. Anything new or changed runs; an analysed video whose folder is
    gone runs again; a finished one not yet in the store is only recorded; a
    failure is retried with ``retry_failed`` only.
    """
    if entry is None or entry.fingerprint() != now.fingerprint():
        return "run"
    if entry.status == "failed":
        return "run" if retry_failed else "skip"
    if not (Path(entry.out) / "session.json").exists():
        return "run"
    if now.patient and not entry.recorded:
        return "record"
    return "skip"
