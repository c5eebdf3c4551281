"""The clinic store: patients, their sessions and treatment cycles, in one local SQLite file.

An injector treats at week 0, reviews at two weeks and repeats every 3-4 months;
what matters clinically is how each side's movement changes between visits and
which units went where. The store keeps that history on the laptop, next to the
session folders, with no server and no setup: one SQLite file
(``<store>/movement.sqlite``; the store folder is ``./reports`` unless
``--store``/``$MOVEMENT_STORE`` says otherwise).

Design choices, and why:

- **Schema version and migrations from day one** (``PRAGMA user_version``,
  :data:`MIGRATIONS`): clinic data outlives the software version that wrote it,
  so every later change is an appended migration, applied once, in a
  transaction.
- **One transaction per session** (``BEGIN IMMEDIATE``): a session's numbers
  appear completely or not at all, and two ``movement analyze`` runs writing at
  once queue up instead of failing (WAL mode, a busy timeout, and a retry loop
  on top for the rare ``SQLITE_BUSY`` the timeout does not absorb).
- **A session is identified by its patient and its video(s)** (the SHA-256 of
  each clip): re-analysing the same video replaces that session's numbers; it
  never adds a duplicate visit.
- **Patient IDs are free text**, stored verbatim through parameterised SQL. Any
  folder derived from one is a slug plus a hash (:func:`patient_slug`) and is
  checked to stay inside the store (:func:`patient_dir`).
- **Private by default**: the database file is created 0600 and a store folder
  this module creates is 0700 (SQLite gives its -wal/-shm files the database's
  permissions).
- **Light imports**: only the standard library, so ``movement patients`` answers
  instantly (the analysis stack loads OpenCV and MediaPipe).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import os
import random
import re
import sqlite3
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

DB_NAME = "movement.sqlite"
DEFAULT_STORE = "reports"
ENV_STORE = "MOVEMENT_STORE"
PATIENTS_DIR = "patients"
COMPARISON_FILE = "comparison.html"
SIDES = ("right", "left", "midline")
MAX_ID_LEN = 200
MAX_TEXT_LEN = 2000
# Marks the file as a movement store ("MOVE"), so a foreign SQLite file that
# happens to carry the name is refused instead of migrated.
APPLICATION_ID = 0x4D4F5645

# A clinic laptop rarely has more than a few concurrent writers; 30 s of
# waiting plus a few retries covers a slow disk without hanging forever.
BUSY_TIMEOUT_S = 30.0
WRITE_RETRIES = 8

# The columns movement analyze writes (movement.analysis.asymmetry is the contract; it
# is not imported because it pulls the whole analysis stack; a test checks
# both lists agree).
ASYMMETRY_COLUMNS = [
    "step", "muscle_group", "measure", "primary", "right_mm", "left_mm", "diff_mm",
    "asymmetry_index", "dominant_side", "quality", "reason", "peak_s",
]  # fmt: skip
METRICS_COLUMNS = [
    "step", "muscle_group", "measure", "kind", "sensor", "side", "peak_s", "rest_mm",
    "peak_mm", "activation_mm", "check_mm", "rest_frames", "peak_frames", "keyframe", "flags",
]  # fmt: skip
MIDLINE_COLUMNS = ["step", "points", "drift_mm", "toward"]
REST_COLUMNS = ["measure", "right_mm", "left_mm", "diff_mm", "larger_side"]

# Column types when read from the CSVs: f = float (blank = missing), i = int,
# b = bool, s = text.
_TYPES = {
    "right_mm": "f", "left_mm": "f", "diff_mm": "f", "asymmetry_index": "f", "peak_s": "f",
    "rest_mm": "f", "peak_mm": "f", "activation_mm": "f", "check_mm": "f", "drift_mm": "f",
    "keyframe": "i", "primary": "b",
}  # fmt: skip

MIGRATIONS: list[list[str]] = [
    # 1: the first schema.
    [
        f"PRAGMA application_id = {APPLICATION_ID}",
        """CREATE TABLE patients (
            id INTEGER PRIMARY KEY,
            patient TEXT NOT NULL UNIQUE,      -- verbatim, as the clinician typed it
            created TEXT NOT NULL
        )""",
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            patient_id INTEGER NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
            video_key TEXT NOT NULL,           -- the clips' sha256, space-separated, in order
            date TEXT NOT NULL,                -- YYYY-MM-DD
            label TEXT NOT NULL DEFAULT '',
            protocol TEXT NOT NULL DEFAULT '',
            protocol_version TEXT,
            min_diff_mm REAL,
            min_ratio REAL,
            software TEXT,
            analysed TEXT,                     -- session.json "created"
            recorded TEXT NOT NULL,            -- when this row was (re)written
            source TEXT NOT NULL,              -- 'analyze' or 'import'
            content_sha TEXT NOT NULL,         -- digest of the numbers (import: unchanged?)
            session_dir TEXT,                  -- absolute paths, NULL when unknown
            report_path TEXT,
            landmarks_path TEXT,
            session_json TEXT,                 -- the full session.json, for later migrations
            UNIQUE (patient_id, video_key)
        )""",
        "CREATE INDEX sessions_by_patient ON sessions(patient_id, date)",
        """CREATE TABLE clips (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            path TEXT,
            PRIMARY KEY (session_id, idx)
        )""",
        "CREATE INDEX clips_by_sha ON clips(sha256)",
        """CREATE TABLE asymmetry (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            step TEXT NOT NULL, muscle_group TEXT NOT NULL, measure TEXT NOT NULL,
            is_primary INTEGER NOT NULL,
            right_mm REAL, left_mm REAL, diff_mm REAL, asymmetry_index REAL,
            dominant_side TEXT NOT NULL, quality TEXT NOT NULL, reason TEXT NOT NULL,
            peak_s REAL,
            PRIMARY KEY (session_id, row)
        )""",
        """CREATE TABLE metrics (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            step TEXT NOT NULL, muscle_group TEXT NOT NULL, measure TEXT NOT NULL,
            kind TEXT NOT NULL, sensor TEXT NOT NULL, side TEXT NOT NULL,
            peak_s REAL, rest_mm REAL, peak_mm REAL, activation_mm REAL, check_mm REAL,
            rest_frames TEXT NOT NULL, peak_frames TEXT NOT NULL, keyframe INTEGER,
            flags TEXT NOT NULL,
            PRIMARY KEY (session_id, row)
        )""",
        """CREATE TABLE midline (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            step TEXT NOT NULL, points TEXT NOT NULL, drift_mm REAL, toward TEXT NOT NULL,
            PRIMARY KEY (session_id, row)
        )""",
        """CREATE TABLE rest (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            measure TEXT NOT NULL, right_mm REAL, left_mm REAL, diff_mm REAL,
            larger_side TEXT NOT NULL,
            PRIMARY KEY (session_id, row)
        )""",
        """CREATE TABLE warnings (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (session_id, row)
        )""",
        """CREATE TABLE treatments (
            id INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,          -- survives export/import, so import is idempotent
            patient_id INTEGER NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
            date TEXT NOT NULL,
            product TEXT NOT NULL,
            muscle_group TEXT NOT NULL,
            side TEXT NOT NULL CHECK (side IN ('right', 'left', 'midline')),
            units REAL NOT NULL CHECK (units >= 0),
            point TEXT NOT NULL DEFAULT '',
            lot TEXT NOT NULL DEFAULT '',
            notes TEXT NOT NULL DEFAULT '',
            recorded TEXT NOT NULL
        )""",
        "CREATE INDEX treatments_by_patient ON treatments(patient_id, date)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

_CHILD_TABLES = ("clips", "asymmetry", "metrics", "midline", "rest", "warnings")
_T = TypeVar("_T")


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """The store cannot be opened, read or written (CLI exit code 7)."""

    exit_code = 7


class InputError(StoreError):
    """Something the user gave is invalid: an ID, a date, a plan file (exit code 2)."""

    exit_code = 2


class OutputFolderError(StoreError):
    """An output folder cannot be written or holds other files (exit code 6, as analyze)."""

    exit_code = 6


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TreatmentRow:
    """One injection record as planned: a product, a muscle group, a side and units."""

    product: str
    muscle_group: str
    side: str
    units: float
    point: str = ""
    lot: str = ""
    notes: str = ""


@dataclass(frozen=True)
class Treatment(TreatmentRow):
    """A stored treatment row."""

    id: int = 0
    uid: str = ""
    patient: str = ""
    date: str = ""


@dataclass(frozen=True)
class PatientSummary:
    patient: str
    sessions: int
    first_date: str | None
    last_date: str | None
    treatments: int  # treatment visits (distinct dates), the number of cycles
    last_treatment: str | None


@dataclass(frozen=True)
class SessionSummary:
    id: int
    patient: str
    date: str
    label: str
    protocol: str
    video_key: str
    source: str
    report_path: str | None
    session_dir: str | None
    last_treatment: str | None  # the latest treatment date strictly before the session
    days_since_treatment: int | None
    min_diff_mm: float | None = None
    min_ratio: float | None = None


@dataclass
class History:
    """Everything the comparison needs about one patient, read in one transaction."""

    patient: str
    sessions: list[SessionSummary]
    asymmetry: dict[int, list[dict[str, Any]]]
    treatments: list[Treatment]
    # session id -> step -> the head's (yaw, pitch) at rest in degrees, from the stored
    # session.json (steps[*].pose); absent for sessions analysed without it.
    poses: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict)


@dataclass
class SessionRecord:
    """One session, normalised, ready to be written (from a folder or an import)."""

    video_key: str
    clips: list[tuple[str, str | None]]
    date: str
    label: str
    protocol: str
    protocol_version: str | None
    min_diff_mm: float | None
    min_ratio: float | None
    software: str | None
    analysed: str | None
    asymmetry: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    midline: list[dict[str, Any]]
    rest: list[dict[str, Any]]
    warnings: list[str]
    session_dir: str | None = None
    report_path: str | None = None
    landmarks_path: str | None = None
    session_json: str | None = None

    def content_sha(self) -> str:
        """Digest of what the session says (not where its files lie), to spot re-imports."""
        body = dict(
            video_key=self.video_key, date=self.date, label=self.label, protocol=self.protocol,
            protocol_version=self.protocol_version, min_diff_mm=self.min_diff_mm,
            min_ratio=self.min_ratio, asymmetry=self.asymmetry, metrics=self.metrics,
            midline=self.midline, rest=self.rest, warnings=self.warnings,
        )  # fmt: skip
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ImportSummary:
    sessions_added: int = 0
    sessions_updated: int = 0
    sessions_unchanged: int = 0
    treatments_added: int = 0
    treatments_updated: int = 0
    treatments_unchanged: int = 0
    patients: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- validation


_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _clean_text(value: object, what: str, max_len: int = MAX_ID_LEN) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    # Control characters (NUL, newlines) break tables and file names; lone
    # surrogates (undecodable bytes on the command line) cannot be stored as
    # text; bidi overrides make one ID display as another.
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in _BIDI:
            raise InputError(f"{what} contains a control character ({ascii(ch)})")
    if len(value) > max_len:
        raise InputError(f"{what} is too long ({len(value)} characters, at most {max_len})")
    return value


def check_patient(patient: object) -> str:
    """The patient ID, verbatim, or :class:`InputError` when it cannot be one.

    IDs are free text (names, file numbers); only what would corrupt a table or
    mislead the reader is refused: empty, control characters, over 200 characters.
    """
    if not isinstance(patient, str) or not patient.strip():
        raise InputError("patient ID is empty")
    return _clean_text(patient, "patient ID")


def check_date(date: object, what: str = "date") -> str:
    """An ISO date ``YYYY-MM-DD`` (returned normalised), or :class:`InputError`."""
    text = str(date).strip() if date is not None else ""
    try:
        # fromisoformat alone would also accept "20260105"; the store wants one spelling.
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        return _dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise InputError(f"{what} '{text}' is not a date YYYY-MM-DD") from None


def normalise_group(name: str) -> str:
    """``Corrugator Procerus`` -> ``corrugator_procerus``: the protocol's spelling.

    Treatments must line up with the measured groups whatever the clinician typed.
    """
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _units(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise InputError(f"{where}units '{value}' is not a number")
    if isinstance(value, int | float):
        units = float(value)
    else:
        text = str(value).strip()
        # Decimal comma, as European spreadsheets write it ("2,5").
        if re.fullmatch(r"\d+,\d+", text):
            text = text.replace(",", ".")
        try:
            units = float(text)
        except ValueError:
            raise InputError(f"{where}units '{text}' is not a number") from None
    if not math.isfinite(units) or units < 0:
        raise InputError(f"{where}units {value} must be a number >= 0")
    return units


def treatment_row(
    product: object,
    muscle_group: object,
    side: object,
    units: object,
    point: object = "",
    lot: object = "",
    notes: object = "",
    where: str = "",
) -> TreatmentRow:
    """A validated :class:`TreatmentRow`; ``where`` prefixes errors (e.g. ``plan.csv line 3: ``).

    The side is the patient's anatomical side (or ``midline`` for e.g. the
    procerus); units must be a number >= 0; the muscle group is normalised to
    the protocol's spelling so treatments line up with measured groups.
    """
    prod = _clean_text(product, f"{where}product").strip()
    group = normalise_group(_clean_text(muscle_group, f"{where}muscle_group"))
    if not prod:
        raise InputError(f"{where}product is empty")
    if not group:
        raise InputError(f"{where}muscle_group is empty")
    s = str(side if side is not None else "").strip().lower()
    if s not in SIDES:
        raise InputError(f"{where}side '{side}' must be right, left or midline")
    return TreatmentRow(
        product=prod,
        muscle_group=group,
        side=s,
        units=_units(units, where),
        point=_clean_text(point, f"{where}point").strip(),
        lot=_clean_text(lot, f"{where}lot").strip(),
        notes=_clean_text(notes, f"{where}notes", MAX_TEXT_LEN).strip(),
    )


PLAN_REQUIRED = ("product", "muscle_group", "side", "units")
PLAN_OPTIONAL = ("point", "lot", "notes")


def read_plan(path: str | Path) -> list[TreatmentRow]:
    """Read a treatment plan CSV: ``product, muscle_group, side, units[, point, lot, notes]``.

    Accepts what spreadsheets write: a UTF-8 BOM or Windows-1252 text, ``;`` or
    tab separators, header case and spaces. An unknown column is an error
    rather than ignored, because a misspelt ``units`` column must not silently
    record nothing.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError:
            raise InputError(f"{path}: not a text file") from None
    first = text.splitlines()[0] if text.strip() else ""
    delim = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    try:
        header = [normalise_group(h) for h in next(reader)]
    except StopIteration:
        raise InputError(f"{path}: empty file") from None
    missing = [c for c in PLAN_REQUIRED if c not in header]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)} "
            f"(columns: {', '.join(PLAN_REQUIRED + PLAN_OPTIONAL)})"
        )
    unknown = [h for h in header if h not in PLAN_REQUIRED + PLAN_OPTIONAL]
    if unknown:
        raise InputError(f"{path}: unknown column '{unknown[0]}'")
    rows = []
    try:
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(header):
                raise InputError(
                    f"{path} line {reader.line_num}: {len(values)} values for "
                    f"{len(header)} columns"
                )
            rec = dict(zip(header, values, strict=False))
            rows.append(
                treatment_row(
                    **{k: rec.get(k, "") for k in PLAN_REQUIRED + PLAN_OPTIONAL},
                    where=f"{path} line {reader.line_num}: ",
                )
            )
    except csv.Error as exc:
        raise InputError(f"{path} line {reader.line_num}: {exc}") from None
    if not rows:
        raise InputError(f"{path}: no treatment rows")
    return rows


# --------------------------------------------------------------------------- paths


def resolve_store(store_dir: str | Path | None = None) -> Path:
    """The store folder: the argument, else ``$MOVEMENT_STORE``, else ``./reports``."""
    if store_dir is None or str(store_dir) == "":
        store_dir = os.environ.get(ENV_STORE) or DEFAULT_STORE
    return Path(store_dir).expanduser().absolute()


def patient_slug(patient: str) -> str:
    """A folder name for a patient: readable ASCII slug + 10 hex digits of the ID's hash.

    The slug alone is never trusted: ``Anna``/``anna``, or two IDs that only
    differ in characters the slug drops, still get different folders through
    the hash, and nothing of ``../``, ``/etc``, ``..\\``, look-alike dots or
    slashes survives the ASCII filter.
    """
    ascii_ = unicodedata.normalize("NFKD", patient).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_).strip("-")[:32].strip("-") or "patient"
    digest = hashlib.sha256(patient.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{slug}-{digest}"


def patient_dir(store_dir: str | Path | None, patient: str) -> Path:
    """``<store>/patients/<slug>``, verified to resolve inside the store folder."""
    store = resolve_store(store_dir).resolve()
    base = (store / PATIENTS_DIR).resolve()
    target = (base / patient_slug(check_patient(patient))).resolve()
    # Belt and braces: the slug cannot contain a separator, but a symlinked
    # patients/ folder could still point elsewhere.
    if target.parent != base or not base.is_relative_to(store):
        raise StoreError(f"patient folder for '{patient}' would lie outside {store}")
    return target


def session_link(
    store_dir: str | Path | None, patient: str, sha256s: list[str] | None = None
) -> Path | None:
    """Where the patient's comparison report is (or will be), when there is one to link.

    Returns ``<store>/patients/<slug>/comparison.html`` when the patient has at
    least two sessions, counting the session being analysed (give its clips'
    ``sha256s`` so a not-yet-recorded video counts, and a re-analysed one does
    not count twice); ``None`` for no patient ID or a single session. Never
    creates the store.
    """
    if not patient:
        return None
    try:
        link = patient_dir(store_dir, patient) / COMPARISON_FILE
    except StoreError:
        return None
    db = resolve_store(store_dir) / DB_NAME
    count, known = 0, False
    if db.exists():
        try:
            with _Store(store_dir, create=False) as st:
                keys = [
                    r[0]
                    for r in st.conn.execute(
                        "SELECT s.video_key FROM sessions s JOIN patients p ON p.id = s.patient_id "
                        "WHERE p.patient = ?",
                        (patient,),
                    )
                ]
        except StoreError:
            return None
        count = len(keys)
        known = sha256s is not None and " ".join(sha256s) in keys
    if sha256s is not None and not known:
        count += 1
    return link if count >= 2 else None


# --------------------------------------------------------------------------- connection


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class _Store:
    """One connection to the store, migrated to :data:`SCHEMA_VERSION`.

    ``create=False`` refuses a missing store instead of creating an empty one,
    so a mistyped ``--store`` is reported, not silently answered with nothing.
    """

    def __init__(self, store_dir: str | Path | None, create: bool) -> None:
        self.dir = resolve_store(store_dir)
        self.path = self.dir / DB_NAME
        if self.dir.exists() and not self.dir.is_dir():
            raise StoreError(f"{self.dir}: store path exists and is not a folder")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"{self.path}: exists and is not a database file")
        if not self.path.exists():
            if not create:
                raise StoreError(
                    f"no clinic store in {self.dir} (analyze a session with --patient first, "
                    f"or give --store / ${ENV_STORE})"
                )
            self._create_files()
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE),
            # not the sqlite3 module's implicit ones.
            self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open ({exc})") from None
        try:
            self._setup()
        except BaseException:
            self.conn.close()
            raise

    def _create_files(self) -> None:
        try:
            try:
                self.dir.mkdir(parents=True, mode=0o700)
                os.chmod(self.dir, 0o700)  # mkdir's mode is subject to the umask
            except FileExistsError:
                pass  # an existing folder keeps the permissions its owner chose
            # O_EXCL: when two processes create the store at once, one makes the
            # file and the other just opens it.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create ({exc.strerror or exc})") from None

    def _setup(self) -> None:
        try:
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._retry(lambda: self.conn.execute("PRAGMA journal_mode = WAL").fetchone())
            # One statement, one snapshot: a process migrating a new store at the
            # same moment must not make this one see "version 0 with tables".
            version, app, tables = self.conn.execute(
                "SELECT (SELECT user_version FROM pragma_user_version), "
                "(SELECT application_id FROM pragma_application_id), "
                "(SELECT count(*) FROM sqlite_master)"
            ).fetchone()
            if app not in (0, APPLICATION_ID) or (version == 0 and tables):
                raise StoreError(f"{self.path}: not a movement store")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: written by a newer movement (schema {version}, this version "
                    f"knows {SCHEMA_VERSION}); update movement"
                )
            if version < SCHEMA_VERSION:
                self.write(self._migrate)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        # Re-read inside the write lock: another process may have migrated
        # while this one waited.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, SCHEMA_VERSION):
            for stmt in MIGRATIONS[number]:
                conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _retry(self, fn: Callable[[], _T]) -> _T:
        for attempt in range(WRITE_RETRIES):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == WRITE_RETRIES - 1:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
        raise AssertionError("unreachable")

    def write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction, retrying when the store is busy.

        IMMEDIATE takes the write lock up front, so a transaction never fails
        half-way on a lock it could not upgrade; ``fn`` must only touch the
        database, since a retry runs it again.
        """

        def attempt() -> _T:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self.conn)
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            return result

        try:
            return self._retry(attempt)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several SELECTs (WAL readers never block writers)."""
        try:
            self._retry(lambda: self.conn.execute("BEGIN"))
            try:
                yield self.conn
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(store_dir: str | Path | None = None, create: bool = True) -> Path:
    """Create (or check and migrate) the store; return the database file's path."""
    with _Store(store_dir, create=create) as st:
        return st.path


def schema_version(store_dir: str | Path | None = None) -> int:
    with _Store(store_dir, create=False) as st:
        return int(st.conn.execute("PRAGMA user_version").fetchone()[0])


# --------------------------------------------------------------------------- sessions


def _cell(value: str, kind: str, where: str) -> Any:
    value = value.strip()
    if kind == "s":
        return value
    if kind == "b":
        return value.lower() in ("true", "1", "yes")
    if value == "" or value.lower() in ("nan", "none", "null"):
        return None
    try:
        num = float(value)
    except ValueError:
        raise InputError(f"{where}: '{value}' is not a number") from None
    if not math.isfinite(num):
        return None
    return int(num) if kind == "i" else num


def _read_table(path: Path, columns: list[str], required: bool = True) -> list[dict[str, Any]]:
    if not path.exists():
        if required:
            raise InputError(f"{path}: missing (not a finished session folder?)")
        return []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
            return [
                {c: _cell(r[c] or "", _TYPES.get(c, "s"), f"{path} line {reader.line_num}")
                 for c in columns}
                for r in reader
            ]  # fmt: skip
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def read_session_folder(session_dir: str | Path, label: str = "", date: str = "") -> SessionRecord:
    """A session folder written by ``movement analyze``, as a :class:`SessionRecord`.

    Everything is parsed before the store is touched, so a damaged folder never
    opens a write transaction.
    """
    folder = Path(session_dir).absolute()
    meta_path = folder / "session.json"
    if not folder.is_dir():
        raise InputError(f"{folder}: no such session folder")
    try:
        meta_text = meta_path.read_text(encoding="utf-8")
        meta = json.loads(meta_text)
    except FileNotFoundError:
        raise InputError(f"{meta_path}: missing (not a finished session folder?)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{meta_path}: unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: not a session description")
    clips = []
    for c in meta.get("clips") or []:
        sha = str(c.get("sha256") or "")
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise InputError(f"{meta_path}: a clip has no valid sha256")
        p = c.get("path")
        # Clip paths are as typed on the command line; record_session runs in
        # the analysing process, so the current folder usually resolves them.
        if p and Path(p).exists():
            p = str(Path(p).absolute())
        clips.append((sha, str(p) if p else None))
    if not clips:
        raise InputError(f"{meta_path}: no clips (video hash) recorded")
    proto = meta.get("protocol") or {}
    th = proto.get("thresholds") or {}
    version = proto.get("version")
    report = folder / "report.html"
    landmarks = folder / "landmarks.npz"
    return SessionRecord(
        video_key=" ".join(sha for sha, _ in clips),
        clips=clips,
        date=date or check_date(meta.get("date") or "", f"{meta_path}: date"),
        label=label if label else str(meta.get("label") or ""),
        protocol=str(proto.get("name") or ""),
        protocol_version=None if version is None else str(version),
        min_diff_mm=_num_or_none(th.get("min_diff_mm")),
        min_ratio=_num_or_none(th.get("min_ratio")),
        software=str((meta.get("software") or {}).get("version") or "") or None,
        analysed=str(meta.get("created") or "") or None,
        asymmetry=_read_table(folder / "asymmetry.csv", ASYMMETRY_COLUMNS),
        metrics=_read_table(folder / "metrics.csv", METRICS_COLUMNS),
        midline=_read_table(folder / "midline.csv", MIDLINE_COLUMNS, required=False),
        rest=_read_table(folder / "rest.csv", REST_COLUMNS, required=False),
        warnings=[str(w) for w in meta.get("warnings") or []],
        session_dir=str(folder),
        report_path=str(report) if report.exists() else None,
        landmarks_path=str(landmarks) if landmarks.exists() else None,
        session_json=meta_text,
    )


def _num_or_none(v: object) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _patient_id(conn: sqlite3.Connection, patient: str) -> int:
    conn.execute(
        "INSERT INTO patients (patient, created) VALUES (?, ?) ON CONFLICT (patient) DO NOTHING",
        (patient, _now()),
    )
    return int(conn.execute("SELECT id FROM patients WHERE patient = ?", (patient,)).fetchone()[0])


def _put_session(
    conn: sqlite3.Connection, patient: str, rec: SessionRecord, source: str, keep_same: bool
) -> tuple[int, str]:
    """Insert or replace one session inside the caller's transaction.

    Returns the session id and what happened: ``added``, ``updated`` or
    ``unchanged`` (only with ``keep_same``, when the numbers are identical).
    The session row keeps its id when replaced, so ids the clinician has seen
    in ``movement sessions`` stay valid.
    """
    pid = _patient_id(conn, patient)
    digest = rec.content_sha()
    old = conn.execute(
        "SELECT id, content_sha FROM sessions WHERE patient_id = ? AND video_key = ?",
        (pid, rec.video_key),
    ).fetchone()
    values = dict(
        date=rec.date, label=rec.label, protocol=rec.protocol,
        protocol_version=rec.protocol_version, min_diff_mm=rec.min_diff_mm,
        min_ratio=rec.min_ratio, software=rec.software, analysed=rec.analysed,
        recorded=_now(), source=source, content_sha=digest, session_dir=rec.session_dir,
        report_path=rec.report_path, landmarks_path=rec.landmarks_path,
        session_json=rec.session_json,
    )  # fmt: skip
    if old is not None and keep_same and old[1] == digest:
        return int(old[0]), "unchanged"
    if old is not None:
        sid = int(old[0])
        sets = ", ".join(f"{k} = :{k}" for k in values)
        conn.execute(f"UPDATE sessions SET {sets} WHERE id = :id", {**values, "id": sid})
        for table in _CHILD_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (sid,))
        status = "updated"
    else:
        values.update(patient_id=pid, video_key=rec.video_key)
        cols = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        sid = int(conn.execute(f"INSERT INTO sessions ({cols}) VALUES ({marks})", values).lastrowid)
        status = "added"
    conn.executemany(
        "INSERT INTO clips (session_id, idx, sha256, path) VALUES (?, ?, ?, ?)",
        [(sid, i, sha, path) for i, (sha, path) in enumerate(rec.clips)],
    )
    _insert_rows(conn, "asymmetry", sid, rec.asymmetry, ASYMMETRY_COLUMNS)
    _insert_rows(conn, "metrics", sid, rec.metrics, METRICS_COLUMNS)
    _insert_rows(conn, "midline", sid, rec.midline, MIDLINE_COLUMNS)
    _insert_rows(conn, "rest", sid, rec.rest, REST_COLUMNS)
    conn.executemany(
        "INSERT INTO warnings (session_id, row, text) VALUES (?, ?, ?)",
        [(sid, i, w) for i, w in enumerate(rec.warnings)],
    )
    return sid, status


def _db_col(c: str) -> str:
    return "is_primary" if c == "primary" else c


def _insert_rows(
    conn: sqlite3.Connection, table: str, sid: int, rows: list[dict[str, Any]], cols: list[str]
) -> None:
    names = ", ".join(["session_id", "row", *(_db_col(c) for c in cols)])
    marks = ", ".join("?" * (len(cols) + 2))
    conn.executemany(
        f"INSERT INTO {table} ({names}) VALUES ({marks})",
        [(sid, i, *(_db_value(r.get(c)) for c in cols)) for i, r in enumerate(rows)],
    )


def _db_value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    return v


def record_session(
    store_dir: str | Path | None, session_dir: Path, patient: str, label: str, date: str
) -> int:
    """Record a finished session folder in the store; return the session id.

    Reads ``session.json``, ``asymmetry.csv``, ``metrics.csv``, ``midline.csv``
    and ``rest.csv`` first, then writes everything in one transaction. The
    same video(s) for the same patient replace that session's numbers (same
    id) instead of adding a second visit; other sessions are untouched.
    """
    patient = check_patient(patient)
    date = check_date(date)
    label = _clean_text(label, "label")
    rec = read_session_folder(session_dir, label=label, date=date)
    rec.label = label  # an explicit empty label wins over the folder's
    with _Store(store_dir, create=True) as st:
        sid, _ = st.write(lambda conn: _put_session(conn, patient, rec, "analyze", False))
    return sid


# --------------------------------------------------------------------------- treatments


def _as_row(row: TreatmentRow | Mapping[str, object], where: str) -> TreatmentRow:
    if isinstance(row, TreatmentRow):
        return treatment_row(
            row.product, row.muscle_group, row.side, row.units, row.point, row.lot, row.notes,
            where=where,
        )
    missing = [k for k in PLAN_REQUIRED if k not in row]
    if missing:
        raise InputError(f"{where}missing {', '.join(missing)}")
    return treatment_row(**{k: row.get(k, "") for k in PLAN_REQUIRED + PLAN_OPTIONAL}, where=where)


def record_treatment(
    store_dir: str | Path | None,
    patient: str,
    date: str,
    rows: Iterable[TreatmentRow | Mapping[str, object]],
) -> list[int]:
    """Record the injections of one visit (all rows or none); return their ids.

    A patient not yet in the store is created: a treatment may be entered
    before the first analysed consult.
    """
    patient = check_patient(patient)
    date = check_date(date)
    clean = [_as_row(r, f"row {i}: ") for i, r in enumerate(rows, 1)]
    if not clean:
        raise InputError("no treatment rows")

    def put(conn: sqlite3.Connection) -> list[int]:
        pid = _patient_id(conn, patient)
        return [_insert_treatment(conn, pid, date, r, uuid.uuid4().hex) for r in clean]

    with _Store(store_dir, create=True) as st:
        return st.write(put)


def _insert_treatment(
    conn: sqlite3.Connection, pid: int, date: str, r: TreatmentRow, uid: str
) -> int:
    cur = conn.execute(
        "INSERT INTO treatments (uid, patient_id, date, product, muscle_group, side, units, "
        "point, lot, notes, recorded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (uid, pid, date, r.product, r.muscle_group, r.side, r.units, r.point, r.lot, r.notes,
         _now()),
    )  # fmt: skip
    return int(cur.lastrowid)


# --------------------------------------------------------------------------- queries


def _require_patient(conn: sqlite3.Connection, patient: str, where: Path) -> int:
    row = conn.execute("SELECT id FROM patients WHERE patient = ?", (patient,)).fetchone()
    if row is None:
        raise StoreError(f"no patient '{patient}' in the store at {where}")
    return int(row[0])


def days_between(earlier: str, later: str) -> int:
    return (_dt.date.fromisoformat(later) - _dt.date.fromisoformat(earlier)).days


def last_treatment_before(dates: Iterable[str], date: str) -> str | None:
    """The latest treatment date strictly before ``date``.

    A treatment on the session's own day counts as after it: a consult is
    filmed before injecting, so the same-day video is that cycle's baseline.
    """
    before = [d for d in dates if d < date]
    return max(before) if before else None


def _treatments(conn: sqlite3.Connection, pid: int, patient: str) -> list[Treatment]:
    rows = conn.execute(
        "SELECT id, uid, date, product, muscle_group, side, units, point, lot, notes "
        "FROM treatments WHERE patient_id = ? ORDER BY date, id",
        (pid,),
    ).fetchall()
    return [
        Treatment(
            id=r[0], uid=r[1], date=r[2], product=r[3], muscle_group=r[4], side=r[5],
            units=r[6], point=r[7], lot=r[8], notes=r[9], patient=patient,
        )
        for r in rows
    ]  # fmt: skip


def _sessions(
    conn: sqlite3.Connection, pid: int, patient: str, tx_dates: list[str]
) -> list[SessionSummary]:
    rows = conn.execute(
        "SELECT id, date, label, protocol, video_key, source, report_path, session_dir, "
        "min_diff_mm, min_ratio FROM sessions WHERE patient_id = ? ORDER BY date, id",
        (pid,),
    ).fetchall()
    out = []
    for r in rows:
        last = last_treatment_before(tx_dates, r[1])
        out.append(
            SessionSummary(
                id=r[0], patient=patient, date=r[1], label=r[2], protocol=r[3], video_key=r[4],
                source=r[5], report_path=r[6], session_dir=r[7], last_treatment=last,
                days_since_treatment=None if last is None else days_between(last, r[1]),
                min_diff_mm=r[8], min_ratio=r[9],
            )
        )  # fmt: skip
    return out


def list_patients(store_dir: str | Path | None = None) -> list[PatientSummary]:
    with _Store(store_dir, create=False) as st, st.read() as conn:
        rows = conn.execute(
            """SELECT p.patient,
                (SELECT count(*) FROM sessions s WHERE s.patient_id = p.id),
                (SELECT min(date) FROM sessions s WHERE s.patient_id = p.id),
                (SELECT max(date) FROM sessions s WHERE s.patient_id = p.id),
                (SELECT count(DISTINCT date) FROM treatments t WHERE t.patient_id = p.id),
                (SELECT max(date) FROM treatments t WHERE t.patient_id = p.id)
            FROM patients p ORDER BY lower(p.patient), p.patient"""
        ).fetchall()
    return [PatientSummary(*r) for r in rows]


def list_sessions(store_dir: str | Path | None, patient: str) -> list[SessionSummary]:
    """The patient's sessions by date, each with the days since the last treatment before it."""
    patient = check_patient(patient)
    with _Store(store_dir, create=False) as st, st.read() as conn:
        pid = _require_patient(conn, patient, st.dir)
        tx = _treatments(conn, pid, patient)
        return _sessions(conn, pid, patient, [t.date for t in tx])


def list_treatments(store_dir: str | Path | None, patient: str) -> list[Treatment]:
    patient = check_patient(patient)
    with _Store(store_dir, create=False) as st, st.read() as conn:
        return _treatments(conn, _require_patient(conn, patient, st.dir), patient)


def _select_dicts(conn: sqlite3.Connection, sql: str, args: tuple) -> list[dict[str, Any]]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def history(store_dir: str | Path | None, patient: str) -> History:
    """The patient's sessions (with their asymmetry rows) and treatments, one snapshot."""
    patient = check_patient(patient)
    with _Store(store_dir, create=False) as st, st.read() as conn:
        pid = _require_patient(conn, patient, st.dir)
        tx = _treatments(conn, pid, patient)
        sessions = _sessions(conn, pid, patient, [t.date for t in tx])
        asym = {}
        for s in sessions:
            rows = _select_dicts(
                conn,
                "SELECT step, muscle_group, measure, is_primary AS \"primary\", right_mm, "
                "left_mm, diff_mm, asymmetry_index, dominant_side, quality, reason, peak_s "
                "FROM asymmetry WHERE session_id = ? ORDER BY row",
                (s.id,),
            )
            for r in rows:
                r["primary"] = bool(r["primary"])
            asym[s.id] = rows
        poses = {}
        for sid, text in conn.execute(
            "SELECT id, session_json FROM sessions WHERE patient_id = ?", (pid,)
        ):
            poses[sid] = _step_poses(text)
    return History(patient, sessions, asym, tx, poses)


def _step_poses(session_json: str | None) -> dict[str, tuple[float, float]]:
    """step -> (yaw, pitch) at rest from a stored session.json (none where absent)."""
    try:
        meta = json.loads(session_json or "{}")
    except ValueError:
        return {}
    out = {}
    for st in meta.get("steps") or [] if isinstance(meta, dict) else []:
        pose = st.get("pose") if isinstance(st, dict) else None
        if isinstance(pose, dict) and pose.get("rest_yaw_deg") is not None:
            out[str(st.get("name"))] = (float(pose["rest_yaw_deg"]),
                                        float(pose.get("rest_pitch_deg") or 0.0))
    return out


def session_tables(store_dir: str | Path | None, session_id: int) -> dict[str, Any]:
    """One stored session in full: its row, clips and every table (for export and checks)."""
    with _Store(store_dir, create=False) as st, st.read() as conn:
        return _session_tables(conn, session_id)


def _session_tables(conn: sqlite3.Connection, sid: int) -> dict[str, Any]:
    rows = _select_dicts(conn, "SELECT * FROM sessions WHERE id = ?", (sid,))
    if not rows:
        raise StoreError(f"no session {sid} in the store")
    out: dict[str, Any] = {"session": rows[0]}
    out["clips"] = _select_dicts(
        conn, "SELECT sha256, path FROM clips WHERE session_id = ? ORDER BY idx", (sid,)
    )
    for table, cols in (
        ("asymmetry", ASYMMETRY_COLUMNS),
        ("metrics", METRICS_COLUMNS),
        ("midline", MIDLINE_COLUMNS),
        ("rest", REST_COLUMNS),
    ):
        sel = ", ".join(f'{_db_col(c)} AS "{c}"' for c in cols)
        recs = _select_dicts(
            conn, f"SELECT {sel} FROM {table} WHERE session_id = ? ORDER BY row", (sid,)
        )
        if table == "asymmetry":
            for r in recs:
                r["primary"] = bool(r["primary"])
        out[table] = recs
    out["warnings"] = [
        r[0]
        for r in conn.execute(
            "SELECT text FROM warnings WHERE session_id = ? ORDER BY row", (sid,)
        )
    ]
    return out


# --------------------------------------------------------------------------- export / import

EXPORT_COLUMNS = [
    # The tidy core, one value per row:
    "patient", "session_id", "date", "label", "step", "muscle_group", "measure", "side",
    "value_mm", "asymmetry_index", "dominant_side", "quality",
    # What the row is (session, asymmetry, metric, midline, rest, warning, treatment)
    # and the details that make an import reproduce the store exactly:
    "kind", "reason", "primary", "diff_mm", "peak_s", "rest_mm", "peak_mm", "check_mm",
    "sensor", "measure_kind", "rest_frames", "peak_frames", "keyframe", "flags", "protocol",
    "video_sha256", "product", "units", "point", "lot", "notes", "uid", "meta",
]  # fmt: skip
KINDS = ("session", "asymmetry", "metric", "midline", "rest", "warning", "treatment")
# Free-text columns a spreadsheet could run as a formula (=, +, -, @): written
# with a leading apostrophe and read back without it.
_TEXT_COLUMNS = {
    "patient", "label", "reason", "flags", "product", "muscle_group", "point", "lot", "notes",
    "step", "measure", "protocol",
}  # fmt: skip


def csv_safe_text(v: str) -> str:
    """Text a spreadsheet will not run as a formula; :func:`_csv_untext` reverses it exactly."""
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r", "'") else v


def _csv_untext(v: str) -> str:
    return v[1:] if v[:1] == "'" else v


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float):
        # repr is the shortest text that reads back as the same float, so an
        # export -> import round trip reproduces every number exactly.
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def export_rows(store_dir: str | Path | None, patient: str) -> list[dict[str, str]]:
    """The patient's sessions and treatments in tidy long format (:data:`EXPORT_COLUMNS`)."""
    patient = check_patient(patient)
    out: list[dict[str, Any]] = []
    with _Store(store_dir, create=False) as st, st.read() as conn:
        pid = _require_patient(conn, patient, st.dir)
        tx = _treatments(conn, pid, patient)
        for s in _sessions(conn, pid, patient, [t.date for t in tx]):
            t = _session_tables(conn, s.id)
            row = t["session"]
            base = dict(patient=patient, session_id=s.id, date=s.date, label=s.label,
                        protocol=s.protocol)  # fmt: skip
            meta = dict(
                protocol_version=row["protocol_version"], min_diff_mm=row["min_diff_mm"],
                min_ratio=row["min_ratio"], software=row["software"], analysed=row["analysed"],
                clips=[c["path"] for c in t["clips"]], session_dir=row["session_dir"],
                report=row["report_path"], landmarks=row["landmarks_path"],
                days_since_treatment=s.days_since_treatment,
            )  # fmt: skip
            out.append(dict(base, kind="session", video_sha256=row["video_key"],
                            meta=json.dumps(meta, separators=(",", ":"))))  # fmt: skip
            for a in t["asymmetry"]:
                for side in ("right", "left"):
                    out.append(dict(
                        base, kind="asymmetry", step=a["step"], muscle_group=a["muscle_group"],
                        measure=a["measure"], side=side, value_mm=a[f"{side}_mm"],
                        asymmetry_index=a["asymmetry_index"], dominant_side=a["dominant_side"],
                        quality=a["quality"], reason=a["reason"], primary=a["primary"],
                        diff_mm=a["diff_mm"], peak_s=a["peak_s"],
                    ))  # fmt: skip
            for m in t["metrics"]:
                out.append(dict(
                    base, kind="metric", step=m["step"], muscle_group=m["muscle_group"],
                    measure=m["measure"], side=m["side"], value_mm=m["activation_mm"],
                    peak_s=m["peak_s"], rest_mm=m["rest_mm"], peak_mm=m["peak_mm"],
                    check_mm=m["check_mm"], sensor=m["sensor"], measure_kind=m["kind"],
                    rest_frames=m["rest_frames"], peak_frames=m["peak_frames"],
                    keyframe=m["keyframe"], flags=m["flags"],
                ))  # fmt: skip
            for m in t["midline"]:
                out.append(dict(base, kind="midline", step=m["step"], measure=m["points"],
                                side=m["toward"], value_mm=m["drift_mm"]))  # fmt: skip
            for r in t["rest"]:
                for side in ("right", "left"):
                    out.append(dict(
                        base, kind="rest", measure=r["measure"], side=side,
                        value_mm=r[f"{side}_mm"], diff_mm=r["diff_mm"],
                        dominant_side=r["larger_side"],
                    ))  # fmt: skip
            for w in t["warnings"]:
                out.append(dict(base, kind="warning", notes=w))
        for t in tx:
            out.append(dict(
                patient=patient, date=t.date, kind="treatment", muscle_group=t.muscle_group,
                side=t.side, product=t.product, units=t.units, point=t.point, lot=t.lot,
                notes=t.notes, uid=t.uid,
            ))  # fmt: skip
    return [
        {c: (csv_safe_text(_fmt(r.get(c))) if c in _TEXT_COLUMNS else _fmt(r.get(c)))
         for c in EXPORT_COLUMNS}
        for r in out
    ]  # fmt: skip


def export_csv(store_dir: str | Path | None, patient: str, out: str | Path) -> int:
    """Write :func:`export_rows` to ``out`` atomically (``-`` = stdout); return the row count."""
    rows = export_rows(store_dir, patient)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if str(out) == "-":
        print(buf.getvalue(), end="")
        return len(rows)
    write_text_atomic(Path(out), buf.getvalue())
    return len(rows)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file via a temporary sibling and a rename: readers never see half of it."""
    path = Path(path)
    if path.is_dir():
        raise OutputFolderError(f"{path}: is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    except OSError as exc:
        raise OutputFolderError(f"{path.parent}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputFolderError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise


def _import_value(col: str, text: str, where: str) -> Any:
    text = _csv_untext(text) if col in _TEXT_COLUMNS else text
    kind = {"value_mm": "f", "units": "f"}.get(col, _TYPES.get(col, "s"))
    return _cell(text, kind, f"{where} {col}") if kind != "s" else text


@dataclass
class _ImportedSession:
    patient: str
    date: str
    label: str
    protocol: str
    video_key: str
    meta: dict[str, Any]
    asymmetry: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    midline: list[dict[str, Any]] = field(default_factory=list)
    rest: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def record(self) -> SessionRecord:
        m = self.meta
        clips = m.get("clips") or []
        shas = self.video_key.split()
        paths = [clips[i] if i < len(clips) else None for i in range(len(shas))]

        def existing(key: str) -> str | None:
            # Paths only make sense on the machine that wrote them; keep them
            # when the files are here (a restore), drop them otherwise.
            p = m.get(key)
            return p if isinstance(p, str) and Path(p).exists() else None

        return SessionRecord(
            video_key=self.video_key, clips=list(zip(shas, paths, strict=True)),
            date=self.date, label=self.label, protocol=self.protocol,
            protocol_version=None if m.get("protocol_version") is None
            else str(m["protocol_version"]),
            min_diff_mm=_num_or_none(m.get("min_diff_mm")),
            min_ratio=_num_or_none(m.get("min_ratio")),
            software=m.get("software"), analysed=m.get("analysed"),
            asymmetry=list(self.asymmetry.values()), metrics=self.metrics,
            midline=self.midline, rest=list(self.rest.values()), warnings=self.warnings,
            session_dir=existing("session_dir"), report_path=existing("report"),
            landmarks_path=existing("landmarks"),
        )  # fmt: skip


def _treatment_uid(patient: str, date: str, r: TreatmentRow) -> str:
    """A stable uid for a treatment row that has none (a hand-made file): same row, same uid."""
    key = json.dumps([patient, date, r.product, r.muscle_group, r.side, r.units, r.point,
                      r.lot, r.notes])  # fmt: skip
    return "h" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:31]


def parse_export(path: str | Path) -> tuple[list[_ImportedSession], list[Treatment]]:
    """Read and validate an export file completely (before anything is written)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    need = ["kind", "patient", "session_id", "date", "label", "step", "muscle_group",
            "measure", "side", "value_mm"]  # fmt: skip
    missing = [c for c in need if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{path}: not a movement export (no column {missing[0]})")
    sessions: dict[tuple[str, str], _ImportedSession] = {}
    treatments: list[Treatment] = []
    try:
        for raw in reader:
            where = f"{path} line {reader.line_num}:"
            r = {c: _import_value(c, raw.get(c) or "", where) for c in EXPORT_COLUMNS}
            kind = r["kind"]
            if kind not in KINDS:
                raise InputError(f"{where} unknown kind '{kind}'")
            patient = check_patient(r["patient"])
            date = check_date(r["date"], f"{where} date")
            if kind == "treatment":
                row = treatment_row(
                    r["product"], r["muscle_group"], r["side"], raw.get("units", ""),
                    r["point"], r["lot"], r["notes"], where=f"{where} ",
                )
                uid = r["uid"] or _treatment_uid(patient, date, row)
                treatments.append(Treatment(**vars(row), uid=uid, patient=patient, date=date))
                continue
            key = (patient, r["session_id"])
            if kind == "session":
                if key in sessions:
                    raise InputError(f"{where} session {r['session_id']} appears twice")
                video = r["video_sha256"]
                if not re.fullmatch(r"[0-9a-f]{64}( [0-9a-f]{64})*", video):
                    raise InputError(f"{where} video_sha256 is not a list of SHA-256 hashes")
                try:
                    meta = json.loads(r["meta"]) if r["meta"] else {}
                except ValueError:
                    raise InputError(f"{where} meta is not JSON") from None
                sessions[key] = _ImportedSession(
                    patient, date, _clean_text(r["label"], f"{where} label"), r["protocol"],
                    video, meta if isinstance(meta, dict) else {},
                )
                continue
            s = sessions.get(key)
            if s is None:
                raise InputError(f"{where} row of session {r['session_id']} before its session row")
            _add_imported(s, kind, r)
    except csv.Error as exc:
        raise InputError(f"{path} line {reader.line_num}: {exc}") from None
    return list(sessions.values()), treatments


def _add_imported(s: _ImportedSession, kind: str, r: dict[str, Any]) -> None:
    if kind == "asymmetry":
        key = (r["step"], r["muscle_group"], r["measure"])
        a = s.asymmetry.setdefault(key, dict(
            step=r["step"], muscle_group=r["muscle_group"], measure=r["measure"],
            primary=r["primary"], right_mm=None, left_mm=None, diff_mm=r["diff_mm"],
            asymmetry_index=r["asymmetry_index"], dominant_side=r["dominant_side"],
            quality=r["quality"], reason=r["reason"], peak_s=r["peak_s"],
        ))  # fmt: skip
        if r["side"] in ("right", "left"):
            a[f"{r['side']}_mm"] = r["value_mm"]
    elif kind == "metric":
        s.metrics.append(dict(
            step=r["step"], muscle_group=r["muscle_group"], measure=r["measure"],
            kind=r["measure_kind"], sensor=r["sensor"], side=r["side"], peak_s=r["peak_s"],
            rest_mm=r["rest_mm"], peak_mm=r["peak_mm"], activation_mm=r["value_mm"],
            check_mm=r["check_mm"], rest_frames=r["rest_frames"], peak_frames=r["peak_frames"],
            keyframe=r["keyframe"], flags=r["flags"],
        ))  # fmt: skip
    elif kind == "midline":
        s.midline.append(dict(step=r["step"], points=r["measure"], drift_mm=r["value_mm"],
                              toward=r["side"]))  # fmt: skip
    elif kind == "rest":
        rr = s.rest.setdefault(r["measure"], dict(
            measure=r["measure"], right_mm=None, left_mm=None, diff_mm=r["diff_mm"],
            larger_side=r["dominant_side"],
        ))  # fmt: skip
        if r["side"] in ("right", "left"):
            rr[f"{r['side']}_mm"] = r["value_mm"]
    elif kind == "warning":
        s.warnings.append(r["notes"])


def import_csv(store_dir: str | Path | None, path: str | Path) -> ImportSummary:
    """Re-create the sessions and treatments of an export in the store, in one transaction.

    Idempotent: a session is matched by patient and video hash, a treatment by
    its uid, so importing the same file twice adds nothing. A session whose
    numbers differ from the stored one is replaced (the export is newer).
    """
    sessions, treatments = parse_export(path)
    records = [(s.patient, s.record()) for s in sessions]
    summary = ImportSummary(
        patients=sorted({p for p, _ in records} | {t.patient for t in treatments})
    )

    def put(conn: sqlite3.Connection) -> None:
        for field_ in vars(summary):
            if field_ != "patients":
                setattr(summary, field_, 0)  # a retried transaction starts the count again
        for patient, rec in records:
            _, status = _put_session(conn, patient, rec, "import", keep_same=True)
            setattr(summary, f"sessions_{status}", getattr(summary, f"sessions_{status}") + 1)
        for t in treatments:
            pid = _patient_id(conn, t.patient)
            old = conn.execute(
                "SELECT patient_id, date, product, muscle_group, side, units, point, lot, notes "
                "FROM treatments WHERE uid = ?",
                (t.uid,),
            ).fetchone()
            new = (pid, t.date, t.product, t.muscle_group, t.side, t.units, t.point, t.lot,
                   t.notes)  # fmt: skip
            if old is None:
                _insert_treatment(conn, pid, t.date, t, t.uid)
                summary.treatments_added += 1
            elif tuple(old) == new:
                summary.treatments_unchanged += 1
            else:
                conn.execute(
                    "UPDATE treatments SET patient_id = ?, date = ?, product = ?, "
                    "muscle_group = ?, side = ?, units = ?, point = ?, lot = ?, notes = ?, "
                    "recorded = ? WHERE uid = ?",
                    (*new, _now(), t.uid),
                )
                summary.treatments_updated += 1

    with _Store(store_dir, create=True) as st:
        st.write(put)
    return summary
