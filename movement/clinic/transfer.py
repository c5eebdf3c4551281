"""A patient's store contents as one tidy CSV, and back.

``movement export`` writes every session (its asymmetry, metrics, midline,
rest and warnings) and every treatment of one patient, one value per row
(:data:`EXPORT_COLUMNS`); ``movement import`` reads such a file into a store,
reproducing the numbers exactly (floats are written with ``repr``). Importing
the same file twice changes nothing: sessions are matched by their videos,
treatments by their uid. Standard library only, like the store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from movement.clinic.records import (
    _TYPES,
    ImportSummary,
    InputError,
    OutputFolderError,
    SessionRecord,
    Treatment,
    TreatmentRow,
    _cell,
    _clean_text,
    _num_or_none,
    check_date,
    check_patient,
    csv_safe_text,
    measurement_version,
    treatment_row,
)
from movement.clinic.store import (
    _insert_treatment,
    _now,
    _patient_id,
    _put_session,
    _require_patient,
    _session_tables,
    _sessions,
    _Store,
    _treatments,
)

EXPORT_COLUMNS = [
    # The tidy core, one value per row:
    "patient", "session_id", "date", "label", "step", "muscle_group", "measure", "side",
    "value_mm", "asymmetry_index", "dominant_side", "quality",
    # What the row is (session, asymmetry, metric, midline, rest, warning, treatment)
    # and the details that make an import reproduce the store exactly:
    "kind", "reason", "primary", "diff_mm", "peak_s", "rest_mm", "peak_mm", "check_mm",
    "sensor", "measure_kind", "rest_frames", "peak_frames", "keyframe", "flags", "protocol",
    "video_sha256", "product", "units", "point", "lot", "notes", "uid", "meta",
    # An asymmetry row's 95 % intervals (the side's, and of right - left) and why its side
    # call is what it is; blank for sessions stored without them (files without these
    # columns import too).
    "value_lo", "value_hi", "diff_lo", "diff_hi", "call_reason",
]  # fmt: skip
KINDS = ("session", "asymmetry", "metric", "midline", "rest", "warning", "treatment")
# Free-text columns a spreadsheet could run as a formula (=, +, -, @): written
# with a leading apostrophe and read back without it.
_TEXT_COLUMNS = {
    "patient", "label", "reason", "flags", "product", "muscle_group", "point", "lot", "notes",
    "step", "measure", "protocol", "call_reason",
}  # fmt: skip



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
                measurement_version=row["measurement_version"],
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
                        diff_mm=a["diff_mm"], peak_s=a["peak_s"], value_lo=a[f"{side}_lo"],
                        value_hi=a[f"{side}_hi"], diff_lo=a["diff_lo"], diff_hi=a["diff_hi"],
                        call_reason=a["call_reason"],
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
    kind = {"value_mm": "f", "units": "f", "value_lo": "f", "value_hi": "f"}.get(
        col, _TYPES.get(col, "s"))
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
            # An export written before the version existed names none: older (0).
            measurement_version=measurement_version(m),
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
            quality=r["quality"], reason=r["reason"], peak_s=r["peak_s"], right_lo=None,
            right_hi=None, left_lo=None, left_hi=None, diff_lo=r["diff_lo"],
            diff_hi=r["diff_hi"], call_reason=r["call_reason"],
        ))  # fmt: skip
        if r["side"] in ("right", "left"):
            a[f"{r['side']}_mm"] = r["value_mm"]
            a[f"{r['side']}_lo"], a[f"{r['side']}_hi"] = r["value_lo"], r["value_hi"]
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
