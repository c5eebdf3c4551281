"""What the clinic store holds, and the checks on everything that goes into it.

The records (patients, sessions, treatments, a parsed session folder), the
validation of what a user types (patient IDs, dates, units, plan files), the
folder a patient's files go to, and the reading of a finished session folder.
Nothing here opens the database (:mod:`movement.clinic.store` does), so every
input is checked before a write transaction starts. Standard library only, like
the store.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_STORE = "reports"
ENV_STORE = "MOVEMENT_STORE"
PATIENTS_DIR = "patients"
SIDES = ("right", "left", "midline")
MAX_ID_LEN = 200
MAX_TEXT_LEN = 2000

# The columns movement analyze writes (movement.analysis.asymmetry is the contract; it
# is not imported because it pulls the whole analysis stack; a test checks
# both lists agree).
ASYMMETRY_COLUMNS = [
    "step", "muscle_group", "measure", "primary", "right_mm", "left_mm", "diff_mm",
    "asymmetry_index", "dominant_side", "quality", "reason", "peak_s",
]  # fmt: skip
# asymmetry.csv's 95 % intervals and why the side call is what it is; stored beside the
# columns above, NULL for sessions stored before intervals existed (and optional in a
# folder, so folders written before them still record).
CALL_COLUMNS = ["right_lo", "right_hi", "left_lo", "left_hi", "diff_lo", "diff_hi",
                "call_reason"]  # fmt: skip
METRICS_COLUMNS = [
    "step", "muscle_group", "measure", "kind", "sensor", "side", "peak_s", "rest_mm",
    "peak_mm", "activation_mm", "check_mm", "rest_frames", "peak_frames", "keyframe", "flags",
]  # fmt: skip
MIDLINE_COLUMNS = ["step", "points", "drift_mm", "toward"]
REST_COLUMNS = ["measure", "right_mm", "left_mm", "diff_mm", "larger_side"]

# Column types when read from the CSVs: f = float (blank = missing), i = int,
# b = bool, s = text, n = text (blank = missing).
_TYPES = {
    "right_mm": "f", "left_mm": "f", "diff_mm": "f", "asymmetry_index": "f", "peak_s": "f",
    "rest_mm": "f", "peak_mm": "f", "activation_mm": "f", "check_mm": "f", "drift_mm": "f",
    "keyframe": "i", "primary": "b", "call_reason": "n",
    **dict.fromkeys(CALL_COLUMNS[:6], "f"),
}  # fmt: skip


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
    # How the numbers were made (movement.MEASUREMENT_VERSION); 0: not recorded, older.
    measurement_version: int = 0


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
    measurement_version: int = 0  # movement.MEASUREMENT_VERSION; 0: not recorded, older

    def content_sha(self) -> str:
        """Digest of what the session says (not where its files lie), to spot re-imports."""
        body: dict[str, Any] = dict(
            video_key=self.video_key, date=self.date, label=self.label, protocol=self.protocol,
            protocol_version=self.protocol_version, min_diff_mm=self.min_diff_mm,
            min_ratio=self.min_ratio, asymmetry=self.asymmetry, metrics=self.metrics,
            midline=self.midline, rest=self.rest, warnings=self.warnings,
        )  # fmt: skip
        if self.measurement_version:
            # Only when known, so sessions stored before the version existed keep
            # their digest (a re-import of them stays "unchanged").
            body["measurement_version"] = self.measurement_version
        # The same for the intervals: an empty one is left out of the digest.
        body["asymmetry"] = [{k: v for k, v in r.items() if k not in CALL_COLUMNS
                              or v is not None} for r in self.asymmetry]  # fmt: skip
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


# --------------------------------------------------------------------------- session folders


def _cell(value: str, kind: str, where: str) -> Any:
    value = value.strip()
    if kind == "s":
        return value
    if kind == "n":
        return value or None
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


def _read_table(
    path: Path, columns: list[str], required: bool = True, optional: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The file's ``columns`` (each must be there) and ``optional`` ones (None where the
    file has none: it was written before them), one dict per row."""
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
            cols = columns + [c for c in optional if c in (reader.fieldnames or [])]
            absent = dict.fromkeys(c for c in optional if c not in cols)
            return [
                {**{c: _cell(r[c] or "", _TYPES.get(c, "s"), f"{path} line {reader.line_num}")
                    for c in cols}, **absent}
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
        asymmetry=_read_table(folder / "asymmetry.csv", ASYMMETRY_COLUMNS,
                              optional=tuple(CALL_COLUMNS)),
        metrics=_read_table(folder / "metrics.csv", METRICS_COLUMNS),
        midline=_read_table(folder / "midline.csv", MIDLINE_COLUMNS, required=False),
        rest=_read_table(folder / "rest.csv", REST_COLUMNS, required=False),
        warnings=[str(w) for w in meta.get("warnings") or []],
        session_dir=str(folder),
        report_path=str(report) if report.exists() else None,
        landmarks_path=str(landmarks) if landmarks.exists() else None,
        session_json=meta_text,
        measurement_version=measurement_version(meta),
    )


def measurement_version(meta: dict[str, Any]) -> int:
    """The measurement version a session.json names; 0 (older) when it names none."""
    v = meta.get("measurement_version")
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _num_or_none(v: object) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def csv_safe_text(v: str) -> str:
    """Text a spreadsheet will not run as a formula; ``transfer._csv_untext`` reverses it
    exactly."""
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r", "'") else v
