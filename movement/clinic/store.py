"""The clinic store: patients, their sessions and treatment cycles, in one local SQLite file.

An injector treats at week 0, reviews at two weeks and repeats every 3-4 months;
what matters clinically is how each side's movement changes between visits and
which units went where. The store keeps that history on the laptop, next to the
session folders, with no server and no setup: one SQLite file
(``<store>/movement.sqlite``; the store folder is ``./reports`` unless
``--store``/``$MOVEMENT_STORE`` says otherwise).

Design choices, and why:

- **Schema version and migrations from day one** (``PRAGMA user_version``,
  :mod:`movement.clinic.schema`): clinic data outlives the software version
  that wrote it, so every later change is an appended migration, applied once,
  in a transaction.
- **One transaction per session** (``BEGIN IMMEDIATE``): a session's numbers
  appear completely or not at all, and two ``movement analyze`` runs writing at
  once queue up instead of failing (WAL mode, a busy timeout, and a retry loop
  on top for the rare ``SQLITE_BUSY`` the timeout does not absorb).
- **A session is identified by its patient and its video(s)** (the SHA-256 of
  each clip): re-analysing the same video replaces that session's numbers; it
  never adds a duplicate visit. A step recorded again by ``movement record`` adds a
  clip to the same visit: that session replaces the one stored from its folder.
- **Patient IDs are free text**, stored verbatim through parameterised SQL. Any
  folder derived from one is a slug plus a hash (:func:`patient_slug`) and is
  checked to stay inside the store (:func:`patient_dir`).
- **Private by default**: the database file is created 0600 and a store folder
  this module creates is 0700 (SQLite gives its -wal/-shm files the database's
  permissions).
- **Light imports**: only the standard library, so ``movement patients`` answers
  instantly (the analysis stack loads OpenCV and MediaPipe).

This module is the database: the connection, the schema and its migrations,
recording sessions and treatments, and the queries. What is stored and the
checks on what comes in are :mod:`movement.clinic.records` (re-exported here);
the CSV export and import are :mod:`movement.clinic.transfer`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

# The records and input checks live in movement.clinic.records; they are
# re-exported here so that ``store.X`` stays the one name callers use.
from movement.clinic.records import (
    ASYMMETRY_COLUMNS,
    CALL_COLUMNS,
    DEFAULT_STORE,
    ENV_STORE,
    MAX_ID_LEN,
    MAX_TEXT_LEN,
    METRICS_COLUMNS,
    MIDLINE_COLUMNS,
    PATIENTS_DIR,
    PLAN_OPTIONAL,
    PLAN_REQUIRED,
    REST_COLUMNS,
    SIDES,
    History,
    ImportSummary,
    InputError,
    OutputFolderError,
    PatientSummary,
    SessionRecord,
    SessionSummary,
    StoreError,
    Treatment,
    TreatmentRow,
    _clean_text,
    check_date,
    check_patient,
    csv_safe_text,
    normalise_group,
    patient_dir,
    patient_slug,
    read_plan,
    read_session_folder,
    resolve_store,
    treatment_row,
)
from movement.clinic.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "APPLICATION_ID", "ASYMMETRY_COLUMNS", "BUSY_TIMEOUT_S", "CALL_COLUMNS", "COMPARISON_FILE",
    "DB_NAME", "DEFAULT_STORE", "ENV_STORE", "MAX_ID_LEN", "MAX_TEXT_LEN", "METRICS_COLUMNS",
    "MIDLINE_COLUMNS", "MIGRATIONS", "PATIENTS_DIR", "PLAN_OPTIONAL", "PLAN_REQUIRED",
    "REST_COLUMNS", "SCHEMA_VERSION", "SIDES", "WRITE_RETRIES", "History", "ImportSummary",
    "InputError", "OutputFolderError", "PatientSummary", "SessionRecord", "SessionSummary",
    "StoreError", "Treatment", "TreatmentRow", "check_date", "check_patient", "csv_safe_text",
    "days_between", "history", "last_treatment_before", "list_patients", "list_sessions",
    "list_treatments", "normalise_group", "open_store", "patient_dir", "patient_slug",
    "read_plan", "read_session_folder", "record_session", "record_treatment", "replace_session",
    "resolve_store",
    "schema_version", "session_link", "session_tables", "treatment_row",
]  # fmt: skip

DB_NAME = "movement.sqlite"
COMPARISON_FILE = "comparison.html"
# A clinic laptop rarely has more than a few concurrent writers; 30 s of
# waiting plus a few retries covers a slow disk without hanging forever.
BUSY_TIMEOUT_S = 30.0
WRITE_RETRIES = 8

_CHILD_TABLES = ("clips", "asymmetry", "metrics", "midline", "rest", "warnings")
# The asymmetry table's columns: asymmetry.csv's stored ones, then the intervals.
_ASYMMETRY = ASYMMETRY_COLUMNS + CALL_COLUMNS
_T = TypeVar("_T")


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


def _patient_id(conn: sqlite3.Connection, patient: str) -> int:
    conn.execute(
        "INSERT INTO patients (patient, created) VALUES (?, ?) ON CONFLICT (patient) DO NOTHING",
        (patient, _now()),
    )
    return int(conn.execute("SELECT id FROM patients WHERE patient = ?", (patient,)).fetchone()[0])


def _put_session(
    conn: sqlite3.Connection, patient: str, rec: SessionRecord, source: str, keep_same: bool,
    same_folder: bool = False,
) -> tuple[int, str]:
    """Insert or replace one session inside the caller's transaction.

    Returns the session id and what happened: ``added``, ``updated`` or
    ``unchanged`` (only with ``keep_same``, when the numbers are identical).
    The session row keeps its id when replaced, so ids the clinician has seen
    in ``movement sessions`` stay valid. With ``same_folder``, a session of the
    patient stored from the same folder is replaced when no session has these
    videos (see :func:`record_session`).
    """
    pid = _patient_id(conn, patient)
    digest = rec.content_sha()
    old = conn.execute(
        "SELECT id, content_sha FROM sessions WHERE patient_id = ? AND video_key = ?",
        (pid, rec.video_key),
    ).fetchone()
    if old is None and same_folder and rec.session_dir:
        old = _folder_session(conn, pid, rec.session_dir)
    # The video key too: a folder's session replaced by a re-recording has new videos.
    values = {**_row_values(rec, source), "video_key": rec.video_key}
    if old is not None and keep_same and old[1] == digest:
        return int(old[0]), "unchanged"
    if old is not None:
        sid = int(old[0])
        _overwrite_session(conn, sid, values)
        status = "updated"
    else:
        values.update(patient_id=pid)
        cols = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        sid = int(conn.execute(f"INSERT INTO sessions ({cols}) VALUES ({marks})", values).lastrowid)
        status = "added"
    _put_children(conn, sid, rec)
    return sid, status


def _row_values(rec: SessionRecord, source: str) -> dict[str, Any]:
    """A session row's columns from a record (all but its id, patient and videos)."""
    return dict(
        date=rec.date, label=rec.label, protocol=rec.protocol,
        protocol_version=rec.protocol_version, min_diff_mm=rec.min_diff_mm,
        min_ratio=rec.min_ratio, software=rec.software, analysed=rec.analysed,
        recorded=_now(), source=source, content_sha=rec.content_sha(),
        session_dir=rec.session_dir, report_path=rec.report_path,
        landmarks_path=rec.landmarks_path, session_json=rec.session_json,
        measurement_version=rec.measurement_version,
    )  # fmt: skip


def _overwrite_session(conn: sqlite3.Connection, sid: int, values: dict[str, Any]) -> None:
    """Replace a session row's values (its id stays) and drop its rows in every table."""
    sets = ", ".join(f"{k} = :{k}" for k in values)
    conn.execute(f"UPDATE sessions SET {sets} WHERE id = :id", {**values, "id": sid})
    for table in _CHILD_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (sid,))


def _put_children(conn: sqlite3.Connection, sid: int, rec: SessionRecord) -> None:
    conn.executemany(
        "INSERT INTO clips (session_id, idx, sha256, path) VALUES (?, ?, ?, ?)",
        [(sid, i, sha, path) for i, (sha, path) in enumerate(rec.clips)],
    )
    _insert_rows(conn, "asymmetry", sid, rec.asymmetry, _ASYMMETRY)
    _insert_rows(conn, "metrics", sid, rec.metrics, METRICS_COLUMNS)
    _insert_rows(conn, "midline", sid, rec.midline, MIDLINE_COLUMNS)
    _insert_rows(conn, "rest", sid, rec.rest, REST_COLUMNS)
    conn.executemany(
        "INSERT INTO warnings (session_id, row, text) VALUES (?, ?, ?)",
        [(sid, i, w) for i, w in enumerate(rec.warnings)],
    )


def _folder_session(conn: sqlite3.Connection, pid: int, session_dir: str) -> tuple | None:
    """(id, content_sha) of the patient's session last stored from ``session_dir``."""
    return conn.execute(
        "SELECT id, content_sha FROM sessions WHERE patient_id = ? AND session_dir = ? "
        "ORDER BY recorded DESC, id DESC LIMIT 1",
        (pid, session_dir),
    ).fetchone()


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
    store_dir: str | Path | None, session_dir: Path, patient: str, label: str, date: str,
    replace_folder: bool = False,
) -> int:
    """Record a finished session folder in the store; return the session id.

    Reads ``session.json``, ``asymmetry.csv``, ``metrics.csv``, ``midline.csv``
    and ``rest.csv`` first, then writes everything in one transaction. The
    same video(s) for the same patient replace that session's numbers (same
    id) instead of adding a second visit; other sessions are untouched.

    ``replace_folder``: this folder's session grew new videos (``movement
    record`` re-recording a step: the same visit, one more clip), so the
    patient's session last stored from this folder is replaced (same id) rather
    than a second visit added. The swap is the one transaction: if writing the
    new numbers fails, the old ones stay.
    """
    patient = check_patient(patient)
    date = check_date(date)
    label = _clean_text(label, "label")
    rec = read_session_folder(session_dir, label=label, date=date)
    rec.label = label  # an explicit empty label wins over the folder's
    with _Store(store_dir, create=True) as st:
        sid, _ = st.write(
            lambda conn: _put_session(conn, patient, rec, "analyze", False, replace_folder)
        )
    return sid


def replace_session(store_dir: str | Path | None, session_id: int, session_dir: Path) -> int:
    """Replace stored session ``session_id`` by a finished session folder; return its id.

    The row keeps its id and patient (ids the clinician has seen stay valid); the
    numbers, videos, label, date and files become the folder's, in one transaction,
    so a failure leaves the stored session as it was. The folder may hold another
    video of the visit (filmed again) unless it is already another of the patient's
    sessions. The earlier session folder is left where it is.
    """
    rec = read_session_folder(session_dir)

    def put(conn: sqlite3.Connection) -> int:
        sql = "SELECT patient_id FROM sessions WHERE id = ?"
        row = conn.execute(sql, (session_id,)).fetchone()
        if row is None:
            raise StoreError(f"no session {session_id} in the store")
        pid = int(row[0])
        clash = conn.execute(
            "SELECT id FROM sessions WHERE patient_id = ? AND video_key = ? AND id != ?",
            (pid, rec.video_key, session_id),
        ).fetchone()
        if clash is not None:
            raise StoreError(f"{session_dir}: its video is already the patient's session "
                             f"{clash[0]}")
        values = {**_row_values(rec, "analyze"), "video_key": rec.video_key}
        _overwrite_session(conn, session_id, values)
        _put_children(conn, session_id, rec)
        return session_id

    with _Store(store_dir, create=False) as st:
        return st.write(put)


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
        "min_diff_mm, min_ratio, measurement_version FROM sessions WHERE patient_id = ? "
        "ORDER BY date, id",
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
                min_diff_mm=r[8], min_ratio=r[9], measurement_version=r[10],
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
        asym = {s.id: _table(conn, "asymmetry", _ASYMMETRY, s.id) for s in sessions}
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
        ("asymmetry", _ASYMMETRY),
        ("metrics", METRICS_COLUMNS),
        ("midline", MIDLINE_COLUMNS),
        ("rest", REST_COLUMNS),
    ):
        out[table] = _table(conn, table, cols, sid)
    out["warnings"] = [
        r[0]
        for r in conn.execute(
            "SELECT text FROM warnings WHERE session_id = ? ORDER BY row", (sid,)
        )
    ]
    return out


def _table(conn: sqlite3.Connection, table: str, cols: list[str], sid: int
           ) -> list[dict[str, Any]]:
    """One session's rows of a table, keyed by the CSV's column names."""
    sel = ", ".join(f'{_db_col(c)} AS "{c}"' for c in cols)
    recs = _select_dicts(
        conn, f"SELECT {sel} FROM {table} WHERE session_id = ? ORDER BY row", (sid,)
    )
    if table == "asymmetry":
        for r in recs:
            r["primary"] = bool(r["primary"])
    return recs


def session_link(
    store_dir: str | Path | None, patient: str, sha256s: list[str] | None = None,
    replace_folder: Path | None = None,
) -> Path | None:
    """Where the patient's comparison report is (or will be), when there is one to link.

    Returns ``<store>/patients/<slug>/comparison.html`` when the patient has at
    least two sessions, counting the session being analysed (give its clips'
    ``sha256s`` so a not-yet-recorded video counts, and a re-analysed one does
    not count twice; give ``replace_folder`` when it will replace the session
    stored from that folder, as :func:`record_session` does); ``None`` for no
    patient ID or a single session. Never creates the store.
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
                rows = st.conn.execute(
                    "SELECT s.video_key, s.session_dir FROM sessions s "
                    "JOIN patients p ON p.id = s.patient_id WHERE p.patient = ?",
                    (patient,),
                ).fetchall()
        except StoreError:
            return None
        keys = [r[0] for r in rows]
        count = len(keys)
        known = sha256s is not None and " ".join(sha256s) in keys
        if replace_folder is not None:
            known = known or str(Path(replace_folder).absolute()) in {r[1] for r in rows}
    if sha256s is not None and not known:
        count += 1
    return link if count >= 2 else None
