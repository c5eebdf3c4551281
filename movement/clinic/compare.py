"""Compare a patient's sessions across treatment cycles: ``comparison.html`` and ``comparison.csv``.

The question an injector asks at the two-week review is "did the units I put
in do what I wanted, per side?". This module answers it from the store: for
every measured muscle group, the right and left movement (mm) in each session,
the change from a chosen baseline (mm and %), the treatments placed on the same
time axis (days since treatment), and one plain sentence per group, e.g.
"right frontalis: 4.1 → 1.2 mm (−71 %) ... 14 days after 6 U right / 4 U left
(Botox, 2026-01-05); now balanced".

This module decides what the comparison says; :func:`page_record` hands it to
:mod:`movement.report.comparison_page` as plain records, which renders the
self-contained page (plotly.js inlined once, no network request). The folder is
written atomically (temporary sibling, then rename).

Kept as one module: the statements, the summary's order, the CSV and the page's
records all read one comparison's groups with the same rules (what changed beyond
the intervals, which treatment counts, which sessions compare at all); split, each
part would re-derive them.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import shlex
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from movement import MEASUREMENT_VERSION, __version__
from movement.analysis.uncertainty import change_interval
from movement.clinic.store import (
    COMPARISON_FILE,
    History,
    InputError,
    OutputFolderError,
    SessionSummary,
    StoreError,
    Treatment,
    check_patient,
    csv_safe_text,
    days_between,
    history,
    patient_dir,
)
from movement.protocol import ProtocolError, load_protocol
from movement.report import comparison_page as page
from movement.report.htmlkit import staged_folder

CSV_FILE = "comparison.csv"
OUR_FILES = {COMPARISON_FILE, CSV_FILE}
# Below this baseline movement a percentage is noise divided by noise (a 0.3 mm
# movement halving is tracking noise); the change is then given in mm only. Values
# that are not mm (crease indices, counts) never get one: they sit near zero.
MIN_BASE_FOR_PCT_MM = 1.0

COMPARISON_COLUMNS = [
    "patient", "session_id", "date", "label", "measurement_version", "baseline_session_id",
    "days_since_treatment",
    "step", "muscle_group", "measure", "primary", "right_mm", "left_mm", "asymmetry_index",
    "dominant_side", "quality", "right_change_mm", "right_change_pct", "left_change_mm",
    "left_change_pct", "repeat_mm", "change_rule", "asymmetry_index_change", "group_last_treated",
    "units_right", "units_left", "units_midline", "products", "statement",
]  # fmt: skip


@dataclass
class GroupView:
    """One measured muscle group (step, group, measure) across the chosen sessions."""

    step: str
    muscle_group: str
    measure: str
    primary: bool
    title: str
    rows: list[dict[str, Any] | None]  # per session (same order), the asymmetry row or None
    statement: str = ""
    # Two recordings of one movement read this far apart (the protocol's repeat_mm);
    # a smaller change is within the measurement's own variation. None: not known.
    repeat_mm: float | None = None


@dataclass
class Comparison:
    patient: str
    sessions: list[SessionSummary]  # chosen, by date
    baseline: SessionSummary
    treatments: list[Treatment]  # all of the patient's treatments
    groups: list[GroupView] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def latest(self) -> SessionSummary:
        """The session the headline statements describe: the last one that is not the baseline."""
        others = [s for s in self.sessions if s.id != self.baseline.id]
        return others[-1] if others else self.baseline

    @property
    def versions_note(self) -> str:
        """What to say when the sessions were measured by different measurement versions
        (and what to run); "" when they were not."""
        return versions_note(self.patient, self.sessions)


def comparable(a: SessionSummary, b: SessionSummary) -> bool:
    """Two sessions' numbers were made the same way (one measurement version), so a
    difference between them is the face's, not the measurement's."""
    return a.measurement_version == b.measurement_version


def version_name(v: int) -> str:
    return f"version {v}" if v else "an unrecorded version (older than 1)"


def reanalyze_command(patient: str) -> str:
    return f"movement reanalyze {shlex.quote(patient)} --all-old"


def versions_note(patient: str, sessions: Sequence[SessionSummary]) -> str:
    versions = sorted({s.measurement_version for s in sessions})
    if len(versions) < 2:
        return ""
    old = [s for s in sessions if s.measurement_version < MEASUREMENT_VERSION]
    which = "; ".join(
        f"{version_name(v)}: " + ", ".join(
            f"#{s.id} {s.date}" + (f" ({s.label})" if s.label else "")
            for s in sessions if s.measurement_version == v)
        for v in versions
    )  # fmt: skip
    text = (f"These sessions were measured by different versions of the measurement "
            f"({which}); values of different versions are shown but not compared, since "
            "a difference between them may be the measurement's, not the face's.")
    if old:
        text += (f" To compare them, re-analyse the older sessions from their videos: "
                 f"{reanalyze_command(patient)}")
    return text


# --------------------------------------------------------------------------- building


def pick_session(token: str, sessions: list[SessionSummary], patient: str) -> SessionSummary:
    """A session by id, else by its unique label or date (what the clinician remembers)."""
    t = token.strip()
    for s in sessions:
        if str(s.id) == t:
            return s
    for attr in ("label", "date"):
        found = [s for s in sessions if str(getattr(s, attr)).casefold() == t.casefold()]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            ids = ", ".join(str(s.id) for s in found)
            raise InputError(f"'{t}' matches sessions {ids} of '{patient}'; use a session id")
    ids = ", ".join(str(s.id) for s in sessions) or "none"
    raise InputError(f"patient '{patient}' has no session '{t}' (session ids: {ids})")


def build(
    hist: History, sessions: Sequence[str] | None = None, baseline: str | None = None
) -> Comparison:
    """Choose the sessions and the baseline, line the groups up and write the statements.

    Defaults: every session of the patient, the earliest as baseline. The
    baseline is added to an explicit ``sessions`` list if missing.
    """
    chosen = list(hist.sessions)
    if sessions:
        picked = [pick_session(t, hist.sessions, hist.patient) for t in sessions if t.strip()]
        chosen = list({s.id: s for s in picked}.values())
    if baseline:
        base = pick_session(baseline, hist.sessions, hist.patient)
        if base.id not in {s.id for s in chosen}:
            chosen.append(base)
    chosen.sort(key=lambda s: (s.date, s.id))
    if len(chosen) < 2:
        raise StoreError(
            f"patient '{hist.patient}' has {len(chosen)} session(s) to compare; need at least 2"
        )
    base = pick_session(baseline, hist.sessions, hist.patient) if baseline else chosen[0]
    cmp = Comparison(hist.patient, chosen, base, list(hist.treatments))
    keys: dict[tuple[str, str, str], bool] = {}
    for s in chosen:
        for r in hist.asymmetry.get(s.id, []):
            k = (r["step"], r["muscle_group"], r["measure"])
            keys[k] = keys.get(k, False) or bool(r["primary"])
    names = [k[1] for k in keys]
    repeat = _repeatability(chosen)
    for k, primary in keys.items():
        step, group, measure = k
        what = {"crease": " lines", "movements": " movements", "range_mm": " range"}.get(
            measure, " at rest" if step == "rest" else ""
        )
        title = _group_name(group) + what + (f" ({step})" if names.count(group) > 1 else "")
        rows = []
        for s in chosen:
            match = [
                r for r in hist.asymmetry.get(s.id, [])
                if (r["step"], r["muscle_group"], r["measure"]) == k
            ]  # fmt: skip
            rows.append(match[0] if match else None)
        cmp.groups.append(
            GroupView(step, group, measure, primary, title, rows, repeat_mm=repeat.get(k))
        )
    # Primary measurements first: they are what each step is for.
    cmp.groups.sort(key=lambda g: not g.primary)
    bi = _index(cmp, cmp.baseline)
    li = _index(cmp, cmp.latest)
    for g in cmp.groups:
        g.statement = statement(
            g, g.rows[bi], g.rows[li], cmp.baseline, cmp.latest, cmp.treatments
        )
    if cmp.versions_note:
        cmp.notes.insert(0, cmp.versions_note)
    _pose_notes(cmp, hist)
    _interval_note(cmp, hist)
    protos = sorted({s.protocol for s in chosen})
    if len(protos) > 1:
        cmp.notes.append(
            f"The sessions use different protocols ({', '.join(protos)}); only muscle groups "
            "measured the same way are comparable."
        )
    ths = {(s.min_diff_mm, s.min_ratio) for s in chosen}
    if len(ths) > 1:
        cmp.notes.append(
            "The sessions use different dominant-side thresholds; each session's dominant "
            "side follows its own protocol."
        )
    return cmp


POSE_NOTE_DEG = 5.0
"""Head poses (yaw or pitch at a step's rest) this far apart between the baseline and
the latest session are said in the step's statements: both are read face-on
(movement.analysis.pose)."""
POSE_CHECKED_DEG = 10.0
"""Beyond this difference the statement adds that part of the change may be the pose's:
the face-on correction was checked up to 10 degrees of yaw and pitch on the pose
benchmark (R-L within 0.46 mm there, docs/figures/pose.md), not beyond."""


def pose_difference(base: tuple[float, float], now: tuple[float, float]) -> str:
    """How the head's pose at a step's rest differed from the baseline's, in words:
    "turned 13° more to the patient's left and filmed 6° more chin-down than at
    baseline" (an empty string under POSE_NOTE_DEG either way)."""
    d_yaw, d_pitch = now[0] - base[0], now[1] - base[1]
    parts = []
    if abs(d_yaw) >= POSE_NOTE_DEG:
        parts.append(f"turned {abs(d_yaw):.0f}° more to the patient's "
                     f"{'left' if d_yaw > 0 else 'right'}")
    if abs(d_pitch) >= POSE_NOTE_DEG:
        parts.append(f"filmed {abs(d_pitch):.0f}° more chin-{'up' if d_pitch > 0 else 'down'}")
    if not parts:
        return ""
    text = " and ".join(parts) + " than at baseline"
    if max(abs(d_yaw), abs(d_pitch)) > POSE_CHECKED_DEG:
        return text + (f"; read face-on, but beyond the {POSE_CHECKED_DEG:.0f}° the "
                       "correction is checked for: part of the change may be the pose's")
    return text + "; both read face-on"


def _pose_notes(cmp: Comparison, hist: History) -> None:
    """Say where the head's pose differed between the baseline and the latest session,
    and which sessions were read without the face-on correction."""
    poses = hist.poses
    base, now = poses.get(cmp.baseline.id, {}), poses.get(cmp.latest.id, {})
    for g in cmp.groups:
        b, n = base.get(g.step), now.get(g.step)
        if b is None or n is None or g.step == "rest":
            continue
        if said := pose_difference(b, n):
            g.statement += f" ({said})"
    without = [s for s in cmp.sessions if not poses.get(s.id)]
    if without and len(without) < len(cmp.sessions):
        cmp.notes.append(
            "Read without the head-pose correction (image-plane millimetres): "
            + ", ".join(f"{s.date}" + (f" ({s.label})" if s.label else "") for s in without)
            + ". Where the head was turned, their values and the others' differ by it."
        )


def _within_variation(change_mm: float | None, repeat_mm: float | None) -> bool:
    """The change is smaller than two recordings of one movement read apart."""
    return repeat_mm is not None and change_mm is not None and abs(change_mm) < repeat_mm


def _repeatability(sessions: Sequence[SessionSummary]) -> dict[tuple[str, str, str], float]:
    """repeat_mm per (step, muscle group, measure) from the sessions' protocols, the
    latest session's first. A protocol no longer installed (a clinic's own file that
    moved) gives none: changes are then shown without the marker."""
    out: dict[tuple[str, str, str], float] = {}
    for name in dict.fromkeys(s.protocol for s in reversed(sessions)):
        try:
            proto = load_protocol(name)
        except ProtocolError:
            continue
        for st in proto.steps:
            for g in st.groups:
                if g.repeat_mm is not None:
                    out.setdefault((st.name, g.name, g.measure), g.repeat_mm)
    return out


def _index(cmp: Comparison, s: SessionSummary) -> int:
    return [x.id for x in cmp.sessions].index(s.id)


def _group_name(group: str) -> str:
    return group.replace("_", " ")


def unit(measure: str) -> str:
    """What a row's numbers count, as a suffix: millimetres for the ``*_mm``
    measures; the crease index and movement counts have no millimetres."""
    if measure == "crease":
        return " (crease index)"
    if measure == "movements":
        return " movements"
    return " mm"


def _value(row: dict[str, Any] | None, side: str) -> float | None:
    if row is None or row["quality"] in ("missing", "unusable"):
        return None
    return row.get(f"{side}_mm")


def change(base: float | None, now: float | None, measure: str = "displacement_mm"
           ) -> tuple[float | None, float | None]:
    """(mm, %) change from the baseline; % only for millimetres, when the baseline moved
    enough to divide by."""
    if base is None or now is None:
        return None, None
    mm = now - base
    pct = (mm / base * 100.0 if base >= MIN_BASE_FOR_PCT_MM and unit(measure) == " mm"
           else None)
    return mm, pct


def _interval(row: dict[str, Any] | None, side: str) -> tuple[float, float] | None:
    """A side's stored 95 % interval, None where the session has none (stored before
    intervals existed, or not read)."""
    if row is None:
        return None
    try:
        lo, hi = float(row[f"{side}_lo"]), float(row[f"{side}_hi"])
    except (KeyError, TypeError, ValueError):
        return None
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None


def side_change(g: GroupView, side: str, base_row: dict[str, Any] | None,
                now_row: dict[str, Any] | None) -> tuple[bool | None, tuple[float, float] | None]:
    """Whether one side changed beyond what the measurement reproduces, and the change's
    95 % interval. With both visits' intervals: the change's interval excludes 0
    (:func:`movement.analysis.uncertainty.changed`, this patient's recordings). Without
    (sessions stored before intervals existed): beyond the protocol's ``repeat_mm``.
    None: not known (a side not measured, or neither figure)."""
    b, n = _value(base_row, side), _value(now_row, side)
    if b is None or n is None:
        return None, None
    bi, ni = _interval(base_row, side), _interval(now_row, side)
    if bi is not None and ni is not None:
        lo, hi = change_interval(b, *bi, n, *ni)
        return bool(lo > 0 or hi < 0), (lo, hi)
    if g.repeat_mm is None:
        return None, None
    return abs(n - b) >= g.repeat_mm, None


def change_rule(g: GroupView, base_row: dict[str, Any] | None,
                now_row: dict[str, Any] | None) -> str:
    """Which rule :func:`side_change` judged the sides by: ``intervals`` (both visits'),
    ``repeat_mm`` (a visit stored without intervals), one per side when they differ, ""
    when no side was judged."""
    rules = {}
    for side in ("right", "left"):
        moved, iv = side_change(g, side, base_row, now_row)
        if moved is not None:
            rules[side] = "repeat_mm" if iv is None else "intervals"
    if len(set(rules.values())) > 1:
        return ", ".join(f"{side}: {rule}" for side, rule in rules.items())
    return next(iter(rules.values()), "")


def _interval_note(cmp: Comparison, hist: History) -> None:
    """Name the sessions stored without intervals, whose changes the protocol's
    ``repeat_mm`` judges instead (when the others carry them)."""
    def has(s: SessionSummary) -> bool:
        return any(_interval(r, side) for r in hist.asymmetry.get(s.id, [])
                   for side in ("right", "left"))  # fmt: skip

    without = [s for s in cmp.sessions if not has(s)]
    if without and len(without) < len(cmp.sessions):
        cmp.notes.append(
            "Stored without 95 % intervals: "
            + ", ".join(f"{s.date}" + (f" ({s.label})" if s.label else "") for s in without)
            + ". A change from or to them is judged against the protocol's repeat_mm (how "
            "far two recordings of one movement read apart); the others' against both "
            "visits' intervals."
        )


def _signed(x: float, digits: int) -> str:
    # A real minus sign: "−71 %" reads as a change, "-71 %" as a hyphen.
    text = f"{abs(x):.{digits}f}"
    if float(text) == 0:
        return f"±{text}"
    return ("+" if x > 0 else "−") + text


def _mm(x: float) -> str:
    return f"{x:.1f}".replace("-", "−")


def group_treatments(treatments: list[Treatment], group: str, before: str) -> list[Treatment]:
    """The group's treatment rows of its last treatment date strictly before ``before``.

    Only the last visit counts: the toxin of an earlier cycle (3-4 months
    before) has largely worn off and summing cycles would overstate the dose.
    """
    dates = [t.date for t in treatments if t.muscle_group == group and t.date < before]
    if not dates:
        return []
    last = max(dates)
    return [t for t in treatments if t.muscle_group == group and t.date == last]


def units_by_side(rows: list[Treatment]) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in rows:
        out[t.side] = out.get(t.side, 0.0) + t.units
    return out


def units_text(rows: list[Treatment]) -> str:
    """``6 U right / 4 U left``, per product when several products were used."""
    products = list(dict.fromkeys(t.product for t in rows))

    def sides(sub: list[Treatment]) -> str:
        u = units_by_side(sub)
        return " / ".join(f"{u[s]:g} U {s}" for s in ("right", "left", "midline") if s in u)

    if len(products) == 1:
        return sides(rows)
    return "; ".join(f"{p} {sides([t for t in rows if t.product == p])}" for p in products)


def _treatment_phrase(
    treatments: list[Treatment], group: str, base: SessionSummary, now: SessionSummary
) -> str:
    rows = group_treatments(treatments, group, now.date)
    if not rows:
        return f"with no {_group_name(group)} treatment recorded"
    date = rows[0].date
    products = list(dict.fromkeys(t.product for t in rows))
    days = days_between(date, now.date)
    what = units_text(rows)
    where = f"{products[0]}, {date}" if len(products) == 1 else date
    if date < base.date:
        return f"{days} days after {what} ({where}, before the baseline)"
    return f"{days} days after {what} ({where})"


def _outcome(before: str, now: str) -> str:
    sided = ("right", "left")
    was = f" (was {before})" if before in (*sided, "uncertain") and before != now else ""
    if now == "uncertain":
        return "which side dominates is uncertain now" + was
    if now not in sided + ("balanced",):
        return "dominant side undetermined now"
    if now == "balanced":
        if before == "uncertain":
            return "now balanced" + was
        return "now balanced" if before in sided else "still balanced"
    if now == before:
        return f"still {now}-dominant"
    if before in (*sided, "uncertain"):
        return f"now {now}-dominant{was}"
    return f"now {now}-dominant"


def statement(
    g: GroupView,
    base_row: dict[str, Any] | None,
    now_row: dict[str, Any] | None,
    base: SessionSummary,
    now: SessionSummary,
    treatments: list[Treatment],
    treated_phrase: bool = True,
) -> str:
    """One sentence for a muscle group: baseline -> latest, per side, with the treatment
    (``treated_phrase``; never for resting measures, which no treatment targets).

    It leads with the side that moved more at baseline (the one the clinician
    was balancing), then the other side, then the last treatment of this
    group and the resulting dominance.
    """
    name = g.title
    if base.id == now.id:
        return f"{name}: baseline only"
    if not comparable(base, now):
        when = f"{now.date}" + (f" ({now.label})" if now.label else "")
        return (f"{name}: not compared: the baseline was measured by "
                f"{version_name(base.measurement_version)}, {when} by "
                f"{version_name(now.measurement_version)}")
    for row, s, when in ((base_row, base, "at baseline"), (now_row, now, "")):
        if row is None or row["quality"] in ("missing", "unusable"):
            reason = "not in this session" if row is None else (row["reason"] or row["quality"])
            when = when or f"on {s.date}" + (f" ({s.label})" if s.label else "")
            return f"{name}: not measured {when} ({reason})"
    br, bl = _value(base_row, "right"), _value(base_row, "left")
    nr, nl = _value(now_row, "right"), _value(now_row, "left")
    assert base_row is not None and now_row is not None  # narrowed by the loop above
    lead = "right" if (br or 0.0) >= (bl or 0.0) else "left"
    parts = []
    for side, b, n in (("right", br, nr), ("left", bl, nl)):
        if b is None or n is None:
            parts.append((side, f"{side} not measured"))
            continue
        mm, pct = change(b, n, g.measure)
        u = unit(g.measure)
        moved, iv = side_change(g, side, base_row, now_row)
        rel = f"{_signed(pct, 0)} %" if pct is not None else f"{_signed(mm or 0.0, 1)}{u}"
        if iv is not None:
            rel += f"; 95 % {_signed(iv[0], 1)} to {_signed(iv[1], 1)}{u}"
        # "±0 %" already says nothing changed.
        if moved is False and not rel.startswith("±"):
            rel += ", within measurement variation"
        parts.append((side, f"{_mm(b)} → {_mm(n)}{u} ({rel})"))
    parts.sort(key=lambda p: p[0] != lead)
    text = f"{parts[0][0]} {name}: {parts[0][1]}, {parts[1][0]} {parts[1][1]}"
    if treated_phrase and g.step != "rest":
        text += ", " + _treatment_phrase(treatments, g.muscle_group, base, now)
    text += "; " + _outcome(base_row["dominant_side"], now_row["dominant_side"])
    if now_row["quality"] == "low":
        text += f" (low quality: {now_row['reason']})" if now_row["reason"] else " (low quality)"
    return text


# --------------------------------------------------------------------------- the CSV


def summary(cmp: Comparison) -> list[str]:
    """The comparison's summary, as a two-week check reads: first the groups treated
    between the baseline and the compared session (units, side, each side's change with
    its interval, the balance before and after), then what changed beyond the intervals
    without treatment, then one line naming everything unchanged (and one for what was
    not measured in both)."""
    bi, li = _index(cmp, cmp.baseline), _index(cmp, cmp.latest)
    base, now = cmp.baseline, cmp.latest
    if base.id == now.id or not comparable(base, now):
        return [g.statement for g in cmp.groups]  # nothing to order by: no change called
    treated, moved, same, unmeasured = [], [], [], []
    for g in cmp.groups:
        b, n = g.rows[bi], g.rows[li]
        tx = group_treatments(cmp.treatments, g.muscle_group, now.date)
        if g.step != "rest" and tx and tx[0].date >= base.date:
            treated.append(g.statement)
            continue
        if any(r is None or r["quality"] in ("missing", "unusable") for r in (b, n)):
            unmeasured.append(g.title)
            continue
        changed_sides = [side_change(g, side, b, n)[0] for side in ("right", "left")]
        if any(changed_sides) or b["dominant_side"] != n["dominant_side"]:
            moved.append(statement(g, b, n, base, now, cmp.treatments, treated_phrase=False))
        else:
            same.append(g.title)
    out = treated + moved
    if same:
        out.append("Unchanged within the measurement's variation: " + ", ".join(same) + ".")
    if unmeasured:
        out.append("Not measured in both sessions: " + ", ".join(unmeasured) + ".")
    return out


def _r(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def comparison_rows(cmp: Comparison) -> list[dict[str, str]]:
    """One row per (session, step, muscle group, measure): values, changes and treatment."""
    bi = _index(cmp, cmp.baseline)
    out = []
    for g in cmp.groups:
        b = g.rows[bi]
        for s, row in zip(cmp.sessions, g.rows, strict=True):
            tx = group_treatments(cmp.treatments, g.muscle_group, s.date)
            u = units_by_side(tx)
            vals = {side: _value(row, side) for side in ("right", "left")}
            # No change across measurement versions: it could be the measurement's.
            same = comparable(s, cmp.baseline)
            chg = {side: change(_value(b, side) if same else None, vals[side], g.measure)
                   for side in ("right", "left")}  # fmt: skip
            ai = row["asymmetry_index"] if row is not None else None
            bai = b["asymmetry_index"] if b is not None and same else None
            if row is not None and row["quality"] in ("missing", "unusable"):
                ai = None
            if s.id == cmp.baseline.id:
                text = "baseline"
            else:
                text = statement(g, b, row, cmp.baseline, s, cmp.treatments)
            out.append(
                dict(
                    patient=csv_safe_text(cmp.patient),
                    session_id=str(s.id),
                    date=s.date,
                    label=csv_safe_text(s.label),
                    measurement_version=str(s.measurement_version),
                    baseline_session_id=str(cmp.baseline.id),
                    days_since_treatment=""
                    if s.days_since_treatment is None
                    else str(s.days_since_treatment),
                    step=g.step,
                    muscle_group=g.muscle_group,
                    measure=g.measure,
                    primary=str(g.primary),
                    right_mm=_r(vals["right"]),
                    left_mm=_r(vals["left"]),
                    asymmetry_index=_r(ai),
                    dominant_side=row["dominant_side"] if row is not None else "",
                    quality=row["quality"] if row is not None else "missing",
                    right_change_mm=_r(chg["right"][0]),
                    right_change_pct=_r(chg["right"][1], 1),
                    left_change_mm=_r(chg["left"][0]),
                    left_change_pct=_r(chg["left"][1], 1),
                    # A change smaller than this is within the measurement's variation.
                    repeat_mm=_r(g.repeat_mm, 2),
                    # Which of the two judged this row's change (and its statement).
                    change_rule=change_rule(g, b, row) if s.id != cmp.baseline.id and same
                    else "",
                    asymmetry_index_change=_r(None if ai is None or bai is None else ai - bai),
                    group_last_treated=tx[0].date if tx else "",
                    units_right=_r(u.get("right"), 1),
                    units_left=_r(u.get("left"), 1),
                    units_midline=_r(u.get("midline"), 1),
                    products=csv_safe_text("; ".join(dict.fromkeys(t.product for t in tx))),
                    statement=csv_safe_text(text),
                )
            )
    return out


def comparison_csv(cmp: Comparison) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COMPARISON_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(comparison_rows(cmp))
    return buf.getvalue()


# --------------------------------------------------------------------------- the page


def _series(g: GroupView) -> page.Series:
    """A group's values across the sessions, for its figure and the index figure."""
    ok = [r is not None and r["quality"] not in ("missing", "unusable") for r in g.rows]
    return page.Series(
        g.title, g.muscle_group, g.measure, unit(g.measure), g.primary,
        right=[_value(r, "right") for r in g.rows], left=[_value(r, "left") for r in g.rows],
        quality=[r["quality"] if r is not None else "missing" for r in g.rows],
        index=[r["asymmetry_index"] if k and r is not None else None
               for r, k in zip(g.rows, ok, strict=True)],
    )  # fmt: skip


def _time_axis(cmp: Comparison) -> page.TimeAxis:
    return page.TimeAxis(
        [page.AxisSession(s.id, s.date, s.label, s.days_since_treatment) for s in cmp.sessions],
        [page.Injection(t.date, t.muscle_group, t.side, t.units, t.product)
         for t in cmp.treatments],
    )  # fmt: skip


def _report_href(path: str | None, out_dir: Path) -> str:
    """The session's report relative to the comparison page; "" when it is gone."""
    if not path or not Path(path).exists():
        return ""
    try:
        return urllib.parse.quote(Path(os.path.relpath(path, out_dir)).as_posix())
    except ValueError:  # another drive on Windows: no relative path exists
        return Path(path).as_uri()


def _timeline(cmp: Comparison, out_dir: Path) -> list[page.TimelineRow]:
    """Sessions and treatment visits in date order; a treatment sorts after a same-day session."""
    items: list[tuple[str, int, page.TimelineRow]] = []
    for s in cmp.sessions:
        base = s.id == cmp.baseline.id
        items.append((s.date, 0, page.TimelineRow(
            s.date, f"session #{s.id}" + (" (baseline)" if base else ""), baseline=base,
            label=s.label, protocol=s.protocol,
            days="" if s.days_since_treatment is None else str(s.days_since_treatment),
            report_href=_report_href(s.report_path, out_dir),
        )))  # fmt: skip
    for d in sorted({t.date for t in cmp.treatments}):
        rows = [t for t in cmp.treatments if t.date == d]
        groups = list(dict.fromkeys(t.muscle_group for t in rows))
        what = "; ".join(
            f"{_group_name(gr)} {units_text([t for t in rows if t.muscle_group == gr])}"
            for gr in groups
        )
        products = ", ".join(dict.fromkeys(t.product for t in rows))
        items.append((d, 1, page.TimelineRow(
            d, "treatment", treatment=True, treated=f"{products}: {what}"
        )))  # fmt: skip
    items.sort(key=lambda x: (x[0], x[1]))
    return [i[2] for i in items]


def _change(
    mm: float | None, pct: float | None, u: str = " mm", repeat_mm: float | None = None,
    moved: bool | None = None, iv: tuple[float, float] | None = None,
) -> page.Change:
    if mm is None:
        return page.Change()
    text = f"{_signed(mm, 2)}{u}" + (f" ({_signed(pct, 0)} %)" if pct is not None else "")
    if moved is False:
        tip = (f"the change's 95 % interval, {_mm(iv[0])} to {_mm(iv[1])}{u} from both "
               "recordings' intervals, holds 0: within the measurement's own variation"
               if iv is not None else
               f"smaller than the {repeat_mm:.2f} mm two recordings of the same movement "
               "can read apart: within the measurement's own variation")
        return page.Change(text, "same", tip)
    tip = ("" if moved is None else
           f"the change's 95 % interval, {_mm(iv[0])} to {_mm(iv[1])}{u} from both "
           "recordings' intervals, excludes 0" if iv is not None else
           f"at least the {repeat_mm:.2f} mm two recordings of the same movement can read "
           "apart (a session stored without intervals)")
    return page.Change(text, "down" if mm < 0 else "up" if mm > 0 else "", tip)


def _group_rows(cmp: Comparison, g: GroupView) -> page.GroupTable:
    bi = _index(cmp, cmp.baseline)
    body = []
    for i, (s, row) in enumerate(zip(cmp.sessions, g.rows, strict=True)):
        q = row["quality"] if row is not None else "missing"
        r, lft = _value(row, "right"), _value(row, "left")
        ai = row["asymmetry_index"] if row is not None and r is not None else None
        tx = group_treatments(cmp.treatments, g.muscle_group, s.date)
        reason = f" — {row['reason']}" if row is not None and row["reason"] else ""
        changes = None if i == bi else [
            _change(*change(_value(g.rows[bi], side), _value(row, side), g.measure),
                    unit(g.measure), g.repeat_mm, *side_change(g, side, g.rows[bi], row))
            for side in ("right", "left")
        ] if comparable(s, cmp.baseline) else [_not_compared(s, cmp.baseline)] * 2  # fmt: skip
        body.append(page.GroupRow(
            date=s.date, label=s.label,
            days="" if s.days_since_treatment is None else str(s.days_since_treatment),
            right="—" if r is None else f"{r:.2f}", left="—" if lft is None else f"{lft:.2f}",
            index="—" if ai is None else f"{ai:+.2f}",
            dominant=row["dominant_side"] if row is not None else "undetermined",
            quality=q + reason, cls="base" if i == bi else f"q-{q}", changes=changes,
            treatment=f"{tx[0].date}: {units_text(tx)}" if tx else "—",
        ))  # fmt: skip
    return page.GroupTable(_group_name(g.muscle_group), body)


def _not_compared(s: SessionSummary, base: SessionSummary) -> page.Change:
    tip = (f"measured by {version_name(s.measurement_version)}, the baseline by "
           f"{version_name(base.measurement_version)}: re-analyse the older session to compare")
    return page.Change("not compared", "", tip)


def _group_table(cmp: Comparison, g: GroupView) -> str:
    """One group's table as the page shows it."""
    return page.group_table(_group_rows(cmp, g))


def page_record(cmp: Comparison, out_dir: Path) -> page.ComparisonPage:
    """What the comparison page shows, as records for :mod:`movement.report.comparison_page`."""
    base, latest = cmp.baseline, cmp.latest
    tx_dates = sorted({t.date for t in cmp.treatments})
    last_tx = f", last {tx_dates[-1]}" if tx_dates else ""
    made = _dt.datetime.now().isoformat(timespec="minutes")
    return page.ComparisonPage(
        patient=cmp.patient,
        fields=[
            ("Patient", cmp.patient),
            ("Sessions",
             f"{len(cmp.sessions)} ({cmp.sessions[0].date} – {cmp.sessions[-1].date})"),
            ("Baseline", f"{base.label or '#' + str(base.id)} {base.date}"),
            ("Compared", f"{latest.label or '#' + str(latest.id)} {latest.date}"),
            ("Treatments", f"{len(tx_dates)} visit(s){last_tx}"),
            ("Measurement", ", ".join(
                version_name(v) for v in sorted({s.measurement_version for s in cmp.sessions}))),
            ("Generated", f"{made} · movement {__version__}"),
        ],
        base_date=base.date,
        latest_date=latest.date,
        statements=summary(cmp),
        timeline=_timeline(cmp, out_dir),
        axis=_time_axis(cmp),
        groups=[
            page.GroupSection(
                g.title, g.step, g.measure.replace("_", " "), g.primary, g.statement,
                _series(g), _group_rows(cmp, g),
            )
            for g in cmp.groups
        ],
        notes=list(cmp.notes),
    )


def render_html(cmp: Comparison, out_dir: Path) -> str:
    """The self-contained comparison page (plotly.js inlined once, no network)."""
    from plotly.offline import get_plotlyjs

    return page.render_comparison(page_record(cmp, out_dir), get_plotlyjs())


# --------------------------------------------------------------------------- writing


def write_comparison(cmp: Comparison, out_dir: str | Path, private: bool = False) -> Path:
    """Write ``comparison.html`` and ``comparison.csv`` into ``out_dir`` atomically.

    The folder is built next to its destination and renamed into place, so a
    reader never sees half a report. An existing folder is replaced only when
    it holds nothing but a previous comparison: ``--out`` pointing at a
    session folder or the store must never delete it.
    """
    out = Path(out_dir).absolute()
    if out.exists():
        if not out.is_dir():
            raise OutputFolderError(f"{out}: exists and is not a folder")
        others = sorted(n for n in os.listdir(out) if n not in OUR_FILES)
        if others:
            raise OutputFolderError(
                f"{out}: holds other files ({others[0]}); choose a new or empty folder"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"{out.parent}: cannot write ({exc.strerror or exc})") from None
    with staged_folder(out, OutputFolderError, 0o700 if private else 0o755) as tmp:
        (tmp / CSV_FILE).write_text(comparison_csv(cmp), encoding="utf-8", newline="")
        (tmp / COMPARISON_FILE).write_text(render_html(cmp, out), encoding="utf-8")
    return out


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two analyze runs do not interleave a comparison.

    Without it, a run that read the store before another recorded a session
    could write its (older) comparison last. POSIX only; elsewhere the
    atomic rename still keeps each write whole.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def compare(
    store_dir: str | Path | None,
    patient: str,
    out_dir: str | Path,
    sessions: Sequence[str] | None = None,
    baseline: str | None = None,
) -> Comparison:
    """Build and write a comparison of the patient's sessions into ``out_dir``."""
    cmp = build(history(store_dir, check_patient(patient)), sessions, baseline)
    write_comparison(cmp, out_dir)
    return cmp


def update_comparison(store_dir: str | Path | None, patient: str) -> Path | None:
    """(Re)write ``<store>/patients/<slug>/comparison.html`` when the patient has >= 2 sessions.

    Returns its path, or ``None`` when there is nothing to compare yet. All
    sessions are compared against the earliest. Meant to run right after
    :func:`movement.clinic.store.record_session`.
    """
    patient = check_patient(patient)
    target = patient_dir(store_dir, patient)
    hist = history(store_dir, patient)  # fails fast on an unknown patient or a missing store
    if len(hist.sessions) < 2:
        return None
    try:
        target.parent.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"{target.parent}: cannot write ({exc.strerror or exc})") from None
    with _lock(target.parent / ".lock"):
        # Read again under the lock: the newest state wins.
        cmp = build(history(store_dir, patient))
        write_comparison(cmp, target, private=True)
    return target / COMPARISON_FILE
