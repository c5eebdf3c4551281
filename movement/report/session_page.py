"""The HTML report: one self-contained file rendered from a finished session.

The report never recomputes the analysis; it renders the session's records
(the asymmetry, midline and rest tables, each step's traces, peak frames and
measured points). This module turns them into plain records for the page
template (``templates/report.html``, ``step.html``, ``macros.html``); the
figures come from :mod:`movement.report.figures` and the face images from
:mod:`movement.report.images`. plotly.js is inlined once; every figure is a
``to_html(full_html=False, include_plotlyjs=False)`` fragment, so the file opens
offline from a USB stick and makes no network request.

Layout, top to bottom: the patient bar, the checks (warnings and every value
whose quality is not ``ok``, with the reason), the summary (the face map and the
findings in plain words), the movement table, side-to-side pull (midline
drift), resting asymmetry, one card per step (numbers, left/right traces with a
frame viewer that follows the cursor, rest and peak frames with displacement
arrows) and the tracking quality. A print stylesheet turns it into a short
summary on paper (traces, frame viewer and thumbnails are left out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from plotly.offline import get_plotlyjs

from movement import MEASUREMENT_VERSION, __version__
from movement.analysis.activation import StepResult
from movement.analysis.landmarks import FrameCache
from movement.analysis.pipeline import ClipResult, Session
from movement.analysis.stabilise import yaw_degrees
from movement.protocol import Thresholds
from movement.report import figures
from movement.report import images as face_images
from movement.report.figures import (
    LEFT_COLOUR,
    NEUTRAL_COLOUR,
    RIGHT_COLOUR,
    UNCERTAIN_COLOUR,
    fmt,
    nice,
)
from movement.report.htmlkit import macro, render, safe
from movement.report.images import ARROW_GAIN, LinesFigure, Picture, lines_name

QUALITY_TEXT = {
    "ok": "ok",
    "low": "low confidence",
    "unusable": "unusable",
    "missing": "missing",
}
MEASURE_TEXT = {
    "displacement_mm": "displacement",
    "aperture_mm": "eye closure (aperture)",
    "range_mm": "dynamic range (95th percentile)",
    "movements": "movements (count, not mm)",
    "crease": "line depth (crease index, not mm)",
}


def _moving(session: Session) -> pd.DataFrame:
    """The movement rows of the asymmetry table (resting position has its own section)."""
    a = session.asymmetry
    return a[a["step"] != "rest"]


def _is_mm(measure: str) -> bool:
    return str(measure).endswith("_mm")


def _reason(text: object) -> str:
    """A row's reason with repeated parts said once (both sides often give the same)."""
    if not isinstance(text, str) or not text:
        return ""
    return "; ".join(dict.fromkeys(p.strip() for p in text.split(";") if p.strip()))


def _bar_scale(df: pd.DataFrame) -> float:
    """Common bar scale: the largest usable value (unusable values would squash the rest)."""
    df = df[df["quality"].isin(["ok", "low"]) & df["measure"].map(_is_mm)]
    vals = pd.concat([df["right_mm"], df["left_mm"]]).astype(float)
    vals = vals[np.isfinite(vals)]
    return max(3.0, float(vals.max()) if len(vals) else 3.0)


# --------------------------------------------------------------------------- findings


def _num(r: pd.Series, key: str) -> float:
    """A row's number, NaN where the column is absent (sessions stored without
    intervals) or empty."""
    try:
        return float(r.get(key, np.nan))
    except (TypeError, ValueError):
        return float("nan")


def _span(r: pd.Series, abs_: bool = False) -> str:
    """"0.8–1.6 mm", the 95 % interval of right - left; with ``abs_`` that of the larger
    side's excess; empty without one."""
    lo, hi = _num(r, "diff_lo"), _num(r, "diff_hi")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    if abs_ and _num(r, "right_mm") < _num(r, "left_mm"):
        lo, hi = -hi, -lo
    return f"{lo:.1f}–{hi:.1f} mm" if lo >= 0 or abs_ else f"{lo:.1f} to {hi:.1f} mm"


def _doubt(r: pd.Series) -> str:
    """The call's reason beyond its interval ("; the interval is widest from ...")."""
    why = r.get("call_reason", "")
    if not isinstance(why, str) or "; the interval is widest from " not in why:
        return ""
    return "; most of the doubt comes from " + why.split("; the interval is widest from ", 1)[1]


def findings(session: Session) -> list[str]:
    """Plain-language findings for the primary and secondary rows that are usable.

    Dominant rows name the side and muscle group ("Left frontalis pulls ..."),
    balanced primary rows say so; low-confidence values carry their reason;
    unusable and missing values are never findings, only said to be missing.
    """
    out = []
    a = _moving(session)
    th = session.options.protocol.thresholds
    for _, r in a.iterrows():
        if r["quality"] in ("unusable", "missing"):
            continue
        grp, step = nice(r["muscle_group"]), nice(r["step"])
        diff = abs(r["right_mm"] - r["left_mm"])
        caveat = (f" Low confidence: {_reason(r['reason']).rstrip('.')}."
                  if r["quality"] == "low" else "")
        if not _is_mm(r["measure"]):
            text = _relative_finding(r)
            if text:
                out.append(text + caveat)
            continue
        sides = f"right {r['right_mm']:.1f} mm, left {r['left_mm']:.1f} mm"
        if r["dominant_side"] in ("right", "left"):
            side = r["dominant_side"]
            other = "left" if side == "right" else "right"
            span = _span(r, abs_=True)
            out.append(
                f"{side.capitalize()} {grp} pulls {diff:.1f} mm more than the {other} in the "
                f"{step} ({span + ' at 95 %; ' if span else ''}{sides}, index "
                f"{r['asymmetry_index']:+.2f}).{caveat}"
            )
        elif r["dominant_side"] == "uncertain":
            bigger = "right" if r["right_mm"] > r["left_mm"] else "left"
            span = _span(r, abs_=True)
            out.append(
                f"{grp.capitalize()} in the {step}: which side dominates is uncertain (the "
                f"{bigger} reads {diff:.1f} mm more{', ' + span + ' at 95 %' if span else ''}; "
                f"a side dominates from {th.min_diff_mm:g} mm and {th.min_ratio:.0%}; {sides})"
                f"{_doubt(r)}.{caveat}"
            )
        elif r["primary"] and r["dominant_side"] == "balanced":
            span = _span(r)
            out.append(f"{grp.capitalize()} is balanced in the {step} ({sides}"
                       f"{'; right − left ' + span + ' at 95 %' if span else ''}).{caveat}")
    for _, r in a.iterrows():
        if r["quality"] == "missing" and r["primary"]:
            why = _reason(r["reason"])
            out.append(
                f"The {r['step']} step was not found in the video; nothing is reported for it."
                if not why or why == "step not found in the video"
                else f"The {r['step']} step was not measured ({why}); nothing is reported for it."
            )
        elif r["quality"] == "unusable" and r["primary"]:
            out.append(f"The {r['step']} value is not usable: {_reason(r['reason'])}.")
    return out


def _relative_finding(r: pd.Series) -> str:
    """A finding for a value without millimetres (a count, a crease depth)."""
    grp, step, side = nice(r["muscle_group"]), nice(r["step"]), r["dominant_side"]
    right, left = r["right_mm"], r["left_mm"]
    if r["measure"] == "movements":
        if side not in ("right", "left"):
            return ""
        return (
            f"In the {step}, the {side} {grp} moved more often ({right:.0f} movements on the "
            f"right, {left:.0f} on the left)."
        )
    if r["measure"] == "crease" and side in ("right", "left"):
        big, small = (right, left) if side == "right" else (left, right)
        times = f"{big / small:.1f}× deeper" if small > 0.05 else "deeper"
        other = "left" if side == "right" else "right"
        name = lines_name(r["muscle_group"])
        return (
            f"{side.capitalize()} {name} fold {times} than the {other} in the "
            f"{step} (crease index right {right:.2f}, left {left:.2f})."
        )
    if r["measure"] == "crease" and side == "uncertain":
        name = lines_name(r["muscle_group"])
        return (f"Which side's {name} fold deeper in the {step} is uncertain (crease index "
                f"right {right:.2f}, left {left:.2f}; {r.get('call_reason', '')}).")
    return ""



# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Alert:
    """One line of the checks: a warning, or a value that is not ``ok`` and why."""

    cls: str  # the element's class: "alert", "alert bad", "alert ok"
    title: str
    text: str


@dataclass(frozen=True)
class Bars:
    """A butterfly bar: each side's share of the common scale (%), and its tooltip values."""

    right: str
    left: str
    right_pct: str
    left_pct: str
    muted: bool
    # Each side's 95 % interval as an error bar: (start, width) in % of the half from
    # the centre line, and the interval in words for the tooltip; None without one.
    right_bar: tuple[str, str] | None = None
    left_bar: tuple[str, str] | None = None
    right_iv: str = ""
    left_iv: str = ""


@dataclass(frozen=True)
class MovementRow:
    """One row of a movement table (the summary's or a step card's)."""

    step: str
    group: str
    primary: bool
    measure: str
    right: str
    left: str
    bars: Bars | None  # None: the value is not in mm
    diff: str
    index: str
    dominant: str
    quality: str
    quality_text: str
    reason: str
    right_iv: str = ""  # the 95 % interval under the value ("2.8–3.4")
    left_iv: str = ""


@dataclass(frozen=True)
class Badge:
    side: str | None  # the badge's colour; None: plain text
    text: str


@dataclass(frozen=True)
class Recording:
    """A step's recording-quality verdict (movement.analysis.quality)."""

    verdict: str
    text: str
    reasons: str
    instruction: str = ""
    bad: bool = False


@dataclass(frozen=True)
class Viewer:
    """The frame viewer beside a step's traces: the frame nearest the peak to start with."""

    img_id: str
    cap_id: str
    src: str
    frame: int
    time: str


@dataclass
class StepCard:
    """One step's card: header, numbers, traces, frames, lines, drift and notes."""

    k: int
    name: str
    title: str
    badge: Badge | None
    instruction: str
    found: bool
    recording: Recording | None = None
    rows: list[MovementRow] = field(default_factory=list)
    trace: str = ""
    viewer: Viewer | None = None
    frames: list[Picture] = field(default_factory=list)
    lines: list[LinesFigure] = field(default_factory=list)
    drift: list[dict[str, str]] | None = None  # None: no drift measured at this step
    notes: list[dict[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- checks


def _checks(session: Session) -> list[Alert]:
    """Warnings and every value that is not ``ok``, with the reason."""
    a = _moving(session)
    missing = set(a.loc[a["quality"] == "missing", "step"])
    # "step 'x' not found" warnings are said below, with what to do about it.
    items = [
        Alert("alert", "Warning", w)
        for w in session.warnings
        if not any(w.startswith(f"step '{m}' not found") for m in missing)
    ]
    missing_steps: set[str] = set()
    for _, r in a.iterrows():
        q = r["quality"]
        if q == "ok":
            continue
        if q == "missing":
            if r["step"] in missing_steps:
                continue
            missing_steps.add(r["step"])
            items.append(Alert(
                "alert bad", f"{r['step']}: missing",
                f"{_reason(r['reason']) or 'step not found in the video'}; nothing is reported "
                "for it (use --cues to give its times if the patient did perform it).",
            ))  # fmt: skip
            continue
        items.append(Alert(
            "alert bad" if q == "unusable" else "alert ",
            f"{r['step']} · {nice(r['muscle_group'])}: {QUALITY_TEXT.get(q, q)}",
            (_reason(r["reason"]) or "no reason given")
            + (" — not listed as a finding." if q == "unusable" else ""),
        ))  # fmt: skip
    if not items:
        items.append(Alert(
            "alert ok", "Checks passed",
            f"All {len(a)} values passed the tracking and plausibility checks; no warnings.",
        ))  # fmt: skip
    return items


# --------------------------------------------------------------------------- tables


def _bars(right: float, left: float, scale: float, muted: bool = False,
          right_iv: tuple[float, float] = (np.nan, np.nan),
          left_iv: tuple[float, float] = (np.nan, np.nan)) -> Bars:
    """A butterfly bar as seen facing the patient: right grows left, left grows right,
    each with its 95 % interval as an error bar (clipped to the half it is drawn in)."""

    def w(v: float) -> str:
        return f"{0.0 if not np.isfinite(v) or v <= 0 else min(100.0, 100.0 * v / scale):.1f}"

    def bar(iv: tuple[float, float]) -> tuple[str, str] | None:
        if muted or not np.isfinite(iv).all():
            return None
        a, b = (min(100.0, max(0.0, 100.0 * x / scale)) for x in iv)
        return f"{a:.1f}", f"{max(b - a, 0.5):.1f}"

    def words(iv: tuple[float, float]) -> str:
        return f" (95 %: {iv[0]:.2f}–{iv[1]:.2f})" if np.isfinite(iv).all() else ""

    return Bars(fmt(right), fmt(left), w(right), w(left), muted, bar(right_iv), bar(left_iv),
                words(right_iv), words(left_iv))


def _iv(r: pd.Series, side: str) -> tuple[float, float]:
    return _num(r, f"{side}_lo"), _num(r, f"{side}_hi")


def _movement_rows(df: pd.DataFrame, scale: float, th: Thresholds) -> list[MovementRow]:
    rows = []
    for _, r in df.iterrows():
        q = r["quality"]
        mm = _is_mm(r["measure"])
        rows.append(MovementRow(
            step=r["step"], group=nice(r["muscle_group"]), primary=bool(r["primary"]),
            measure=MEASURE_TEXT.get(r["measure"], nice(r["measure"])),
            right=fmt(r["right_mm"]), left=fmt(r["left_mm"]),
            bars=_bars(r["right_mm"], r["left_mm"], scale, q == "unusable", _iv(r, "right"),
                       _iv(r, "left")) if mm else None,
            right_iv=_iv_text(r, "right", q), left_iv=_iv_text(r, "left", q),
            diff=fmt(r["diff_mm"]), index=fmt(r["asymmetry_index"]),
            dominant=r["dominant_side"],
            quality=q, quality_text=QUALITY_TEXT.get(q, q), reason=_reason(r["reason"]),
        ))  # fmt: skip
    return rows


def _iv_text(r: pd.Series, side: str, quality: str) -> str:
    """"2.8–3.4", a side's 95 % interval under its value; empty for an unusable value
    or one without an interval."""
    lo, hi = _iv(r, side)
    if quality not in ("ok", "low") or not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    return f"{lo:.1f}–{hi:.1f}"


def _table(df: pd.DataFrame, scale: float, th: Thresholds, with_step: bool = True) -> str:
    """The movement table of ``df``'s rows, as the report writes it."""
    return macro("macros.html", "mv_table")(_movement_rows(df, scale, th), with_step)


REST_WORDS = {
    "height": ("higher", "height above the iris line"),
    "aperture": ("more open", "aperture, upper − lower lid"),
    "width": ("further from the midline", "distance from the midline"),
}


def _rest_rows(session: Session) -> list[dict[str, str]]:
    proto = session.options.protocol
    kinds = {m.name: m.kind for m in proto.rest_measures}
    notes = {m.name: m.note for m in proto.rest_measures}
    th = proto.thresholds
    rows = []
    for _, r in session.rest.iterrows():
        word, level = REST_WORDS.get(kinds.get(r["measure"], "height"), REST_WORDS["height"])
        d = r["diff_mm"]
        under = ""
        if not np.isfinite(d):
            reading = "not measured"
        else:
            side = "right" if d > 0 else "left"
            reading = f"{side} {word} by {abs(d):.1f} mm"
            if abs(d) < th.rest_min_diff_mm:
                under = f"{th.rest_min_diff_mm:g}"
        rows.append(dict(
            measure=nice(r["measure"]), note=notes.get(r["measure"], ""), level=level,
            right=fmt(r["right_mm"]), left=fmt(r["left_mm"]), diff=fmt(r["diff_mm"]),
            reading=reading, under=under,
        ))  # fmt: skip
    return rows


def _pairs(session: Session) -> list[dict[str, Any]]:
    """Neighbouring muscles side by side: quieting one can reveal the other."""
    proto = session.options.protocol
    a = _moving(session)
    blocks = []
    for pair in proto.pairs:
        cells = []
        for step, group in (pair.first, pair.second):
            rows = a[(a["step"] == step) & (a["muscle_group"] == group) & a["measure"].map(_is_mm)]
            r = rows.iloc[0] if not rows.empty else None
            usable = r is not None and r["quality"] not in ("missing", "unusable")
            cells.append(dict(
                group=nice(group), step=step, usable=usable,
                right=fmt(r["right_mm"] if usable else np.nan),
                left=fmt(r["left_mm"] if usable else np.nan),
                dominant=r["dominant_side"] if usable else "",
                state=r["quality"] if r is not None else "not measured",
            ))  # fmt: skip
        title = pair.name or " – ".join(nice(g) for _, g in (pair.first, pair.second))
        blocks.append(dict(title=title, note=pair.note, rows=cells))
    return blocks


def _midline_rows(session: Session) -> list[dict[str, str]]:
    return [
        dict(step=r["step"], points=r["points"], drift=fmt(r["drift_mm"]), toward=r["toward"])
        for _, r in session.midline.iterrows()
    ]


# --------------------------------------------------------------------------- steps


def _step_badge(rows: pd.DataFrame) -> Badge | None:
    """The step's headline: its primary value's dominant side (or why there is none)."""
    prim = rows[rows["primary"]]
    if prim.empty:
        return None
    p = prim.iloc[0]
    if p["quality"] in ("missing", "unusable"):
        return Badge("undetermined", p["quality"])
    d = p["dominant_side"]
    if d in ("right", "left"):
        return Badge(d, f"{d} dominant {abs(p['diff_mm']):.1f} mm")
    return Badge(d if d in ("balanced", "uncertain", "undetermined") else None, d)


def _viewer(
    k: int, r: StepResult, clip: ClipResult, cache: FrameCache, frame_data: list[dict]
) -> Viewer | None:
    """Thumbnails of the step's window for the frame viewer (added to ``frame_data``)."""
    if not len(r.frames):
        return None
    fr, ts, srcs = face_images.thumbnails(cache, r, face_images.face_box(clip, r.window.keyframe))
    if not fr:
        return None
    trace_id, img_id, cap_id = f"trace-{k}", f"view-{k}", f"view-cap-{k}"
    target = r.peak_t if np.isfinite(r.peak_t) else ts[0]
    j = int(np.argmin(np.abs(np.asarray(ts) - target)))
    frame_data.append(dict(plot=trace_id, img=img_id, cap=cap_id, frames=fr, t=ts, src=srcs))
    return Viewer(img_id, cap_id, srcs[j], fr[j], f"{ts[j]:.2f}")


def _step_card(
    k: int,
    r: StepResult,
    clip: ClipResult,
    cache: FrameCache | None,
    session: Session,
    scale: float,
    frame_data: list[dict],
) -> StepCard:
    step = session.options.protocol.step(r.window.name)
    a = session.asymmetry
    rows = a[a["step"] == step.name]
    card = StepCard(
        k=k, name=step.name,
        title=f"{k + 1} · {nice(step.name).capitalize()} — {nice(step.primary.name)}",
        badge=_step_badge(rows), instruction=step.instruction, found=r.window.found,
    )  # fmt: skip
    if not r.window.found:
        return card
    rq = _recording(clip, step.name)
    if rq is not None and getattr(rq, "verdict", "ok") in ("low", "unusable"):
        card.recording = Recording(
            rq.verdict, QUALITY_TEXT[rq.verdict], "; ".join(rq.reasons),
            getattr(rq, "instruction", "") or "", rq.verdict == "unusable",
        )  # fmt: skip
    card.rows = _movement_rows(rows, scale, session.options.protocol.thresholds)
    card.trace = figures.trace_figure(r, session, f"trace-{k}")
    if cache is not None:
        card.viewer = _viewer(k, r, clip, cache, frame_data)
        card.frames = face_images.step_frames(cache, r, clip, session)
        if r.lines:
            card.lines = face_images.lines_figures(r, clip, cache)
    if r.drift_mm:
        card.drift = [
            dict(name=name, mm=f"{abs(v):.2f}", side="left" if v > 0 else "right")
            for name, v in r.drift_mm.items()
            if np.isfinite(v)
        ]
    card.notes = [dict(group=nice(g.name), note=g.note) for g in step.groups if g.note]
    return card


# --------------------------------------------------------------------------- quality


def _recording(clip: ClipResult, step: str) -> Any | None:
    """The clip's recording-quality verdict for ``step`` (movement.analysis.quality), if any."""
    for q in getattr(clip, "quality", None) or []:
        if getattr(q, "step", None) == step:
            return q
    return None


def _recording_cell(q: Any | None) -> Recording | None:
    if q is None:
        return None
    verdict = getattr(q, "verdict", "ok")
    reasons = "; ".join(getattr(q, "reasons", ()) or ())
    return Recording(verdict, QUALITY_TEXT.get(verdict, verdict),
                     reasons if verdict != "ok" else "")  # fmt: skip


def _clip_rows(session: Session) -> list[dict[str, str]]:
    rows = []
    for c in session.clips:
        yaw = yaw_degrees(c.traj.yaw_index)
        rows.append(dict(
            video=Path(c.info.path).name, size=f"{c.info.width}×{c.info.height}",
            fps=f"{c.info.fps:.2f}", frames=str(len(c.track)),
            tracked=f"{c.track.valid.mean():.0%}", mm_per_px=f"{c.scale.mm_per_px:.4f}",
            iris=f"{c.scale.iris_px:.1f} (±{c.scale.spread:.0%})",
            roll=f"{np.nanmin(c.traj.roll_deg):.1f} … {np.nanmax(c.traj.roll_deg):.1f}",
            yaw=f"{np.nanmin(yaw):.0f} … {np.nanmax(yaw):.0f}",
        ))  # fmt: skip
    return rows


def _window_rows(session: Session) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for c in session.clips:
        t = c.track.t
        for r in c.results:
            w = r.window
            rq = _recording(c, w.name)
            row: dict[str, Any] = dict(name=w.name, found=w.found, recording=_recording_cell(rq))
            if w.found:
                ok = 0 <= w.start <= w.end < len(t)
                row.update(
                    source=w.source, verdict=getattr(rq, "verdict", "ok"),
                    span=f"{t[w.start]:.2f} – {t[w.end]:.2f}" if ok else "–",
                    peak=fmt(r.peak_t), rest=f"{len(w.rest)} (key {w.keyframe})",
                    inliers=f"{r.head_inliers:.1f}", lost=f"{r.lost_fraction:.0%}",
                )  # fmt: skip
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- report


def render_report(
    session: Session,
    path: str | Path,
    caches: list[FrameCache] | None = None,
    images: bool = True,
    comparison_href: str | None = None,
) -> None:
    """Write the report of ``session`` to ``path`` (one self-contained HTML file).

    ``comparison_href`` (relative to the report) links the patient's comparison
    across sessions when there is more than one.

    ``images=False`` leaves every face image out (rest/peak frames and the
    frame viewer), for sharing; the face map is drawn from landmarks only.
    """
    o = session.options
    caches = caches if images and caches else []
    th = o.protocol.thresholds
    who = " · ".join(x for x in (o.patient and f"patient {o.patient}", o.label, o.date) if x)
    scale = _bar_scale(_moving(session))
    frame_data: list[dict] = []
    steps = []
    k = 0
    for ci, clip in enumerate(session.clips):
        cache = caches[ci] if ci < len(caches) else None
        for r in clip.results:
            steps.append(_step_card(k, r, clip, cache, session, scale, frame_data))
            k += 1
    videos = ", ".join(Path(c.info.path).name for c in session.clips)
    doc = render(
        "report.html",
        title="Facial movement report",
        title_suffix=f" — {who}" if who else "",
        fields=[
            ("Patient", o.patient),
            ("Visit", o.label),
            ("Date", o.date),
            ("Protocol", o.protocol.name),
            ("Video", videos + (" (mirrored)" if o.mirrored else "")),
            ("Analysed", f"{session.created} · movement {__version__}, "
                         f"measurement {MEASUREMENT_VERSION}"),
        ],
        comparison_href=comparison_href,
        plotlyjs=safe(get_plotlyjs()),
        version=__version__,
        alerts=_checks(session),
        colours=dict(
            right=RIGHT_COLOUR, left=LEFT_COLOUR, neutral=NEUTRAL_COLOUR,
            neutral_fill=figures.rgba(NEUTRAL_COLOUR, 0.5), uncertain=UNCERTAIN_COLOUR,
        ),  # fmt: skip
        face_map=figures.face_map(session),
        findings=findings(session),
        th=dict(
            min_diff=f"{th.min_diff_mm:g}", min_ratio=f"{th.min_ratio:.0%}",
        ),  # fmt: skip
        movement=_movement_rows(_moving(session), scale, th),
        scale=f"{scale:.1f}",
        drift_figure=figures.drift_figure(session),
        midline=_midline_rows(session),
        midline_points=", ".join(
            f"{k} ({', '.join(map(str, v))})" for k, v in o.protocol.midline.items()
        ),
        rest=_rest_rows(session),
        pairs=_pairs(session),
        images=bool(caches),
        arrow_gain=f"{ARROW_GAIN:g}",
        steps=steps,
        clips=_clip_rows(session),
        windows=_window_rows(session),
        # JSON inside <script>: "</" would end the element.
        frame_data=json.dumps(frame_data, separators=(",", ":")).replace("</", "<\\/"),
    )
    Path(path).write_text(doc, encoding="utf-8")
