"""The HTML report: one self-contained file rendered from a finished session.

The report never recomputes the analysis; it renders the session's records
(the asymmetry, midline and rest tables, each step's traces, peak frames and
measured points). plotly.js is inlined once; every figure is a
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

import base64
import html
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots
from scipy.spatial import ConvexHull, QhullError

from movement import __version__
from movement.analysis.activation import LineReading, StepResult
from movement.analysis.creases import draw_heat
from movement.analysis.dominance import near_threshold
from movement.analysis.landmarks import FrameCache
from movement.analysis.pipeline import ClipResult, Session
from movement.analysis.stabilise import yaw_degrees
from movement.protocol import Thresholds
from movement.report.htmlkit import BASE_CSS, NEAR_NOTE

RIGHT_COLOUR = "#1f6fb4"  # patient's right
LEFT_COLOUR = "#d9541e"  # patient's left
NEUTRAL_COLOUR = "#9aa5b1"  # not dominant / balanced
SIDE_COLOUR = {"right": RIGHT_COLOUR, "left": LEFT_COLOUR, "balanced": "#4d8f4d"}
ARROW_GAIN = 3.0
DRIFT_GAIN = 10.0
"""Midline drift arrows on the summary faces are drawn 10x: a few tenths of a
millimetre of sideways pull would otherwise not show on a whole face."""
"""Displacement arrows are drawn this many times longer than the movement so
that 1-2 mm is visible on a face a few hundred pixels tall."""
FRAME_HEIGHT = 320
LINES_HEIGHT = 220
"""Height (px) of the rest and peak frames (cut to the step's region)."""
REGION_MIN_MM = 110.0
REGION_ASPECT = 1.4
"""The rest and peak frames show the step's region: at least this wide (mm),
width / height = REGION_ASPECT."""
THUMB_HEIGHT = 160
"""Height (px) of the frame-viewer thumbnails."""
THUMB_STEP_S = 0.1
THUMBS_PER_STEP = 40
"""Thumbnails every THUMB_STEP_S seconds of a step's window, at most this many
per step (about 7 kB each), so a whole consult adds well under 2 MB."""
MAP_TOP_PX, MAP_BOTTOM_PX, MAP_GAP_PX = 44, 26, 76
"""Face map: room for each face's title (above) and values (below), in pixels."""
STRONG_DIFF = 3.0
"""R-L difference (in units of the protocol's min_diff_mm) drawn at full colour
on the face map; smaller dominant differences are drawn paler."""

STEPS_NOTE = (
    '<p class="note noprint">Per step: the numbers, both sides over time (the step shaded, '
    "its rest green, the peak dashed; hover or click a trace to see that moment's frame), and "
    "the rest and peak frames. Dots: the measured points at rest; rings on the peak frame: "
    "where they sat at rest (in the peak frame's head pose). Arrows: each side's measured "
    f"value, drawn {ARROW_GAIN:g}× its millimetres — along the face's up axis for brow "
    "heights, one arrow per lid for eye closure; for displacements the direction is the "
    "landmark model's (head motion removed), which can differ from the image tracker's for "
    "small skin movements such as the frown.</p>"
)
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

# Outline of the face for the face map: MediaPipe FaceMesh contour loops.
FACE_LINES: tuple[tuple[int, ...], ...] = (
    (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
     377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
     109, 10),
    (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7, 33),
    (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249, 263),
    (46, 53, 52, 65, 55),
    (70, 63, 105, 66, 107),
    (276, 283, 282, 295, 285),
    (300, 293, 334, 296, 336),
    (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91,
     146, 61),
    (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88,
     95, 78),
    (168, 6, 197, 195, 5, 4, 1, 19, 94, 2),
    (98, 97, 2, 326, 327),
    (4, 45, 220, 115, 48, 64, 98),
    (4, 275, 440, 344, 278, 294, 327),
    (469, 470, 471, 472, 469),
    (474, 475, 476, 477, 474),
)  # fmt: skip

CSS = BASE_CSS + """
.pbar span{font-size:14px}
nav{position:sticky;top:0;z-index:10;background:#fff;border-bottom:1px solid #d5dbe1;
padding:6px 32px;font-size:13px}
nav a{color:#16324f;text-decoration:none;margin-right:18px}nav a:hover{text-decoration:underline}
td.l,th.l{text-align:left}td.c,th.c{text-align:center}
tr.row-low td{background:#fff8e6}
tr.row-unusable td,tr.row-missing td{background:#fdeeee;color:#7a2a2a}
.badge{display:inline-block;border-radius:3px;padding:1px 7px;font-size:12px;font-weight:600;
white-space:nowrap}
.q{font-size:12px;white-space:nowrap}.q-ok{color:#2d6a2d}.q-low{color:#8a5a00;font-weight:600}
.q-unusable,.q-missing{color:#a11;font-weight:600}
.reason{display:block;font-size:11px;color:#7a4b00;white-space:normal;text-align:right}
.checks{margin:14px 0 0}
.alert{border-left:4px solid #e69a00;background:#fff6e3;padding:7px 12px;margin:5px 0;
border-radius:3px;font-size:13.5px}
.alert.bad{border-color:#c62828;background:#fdecec}.alert.ok{border-color:#3d8b3d;background:#eaf5ea}
.alert b{margin-right:6px}
.summary-map{margin:0 -6px}
.findings{margin:6px 0 4px;padding-left:20px}.findings li{margin:5px 0;font-size:15px}
.findings li.f-right{list-style:square;color:#123}.findings li::marker{color:#16324f}
.legend{font-size:12.5px;color:#334;margin:2px 0 6px}
.legend span{display:inline-block;margin-right:16px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin-right:4px}
.note{font-size:12px;color:#566}
.bf{display:flex;width:170px;height:12px;margin:0 auto}
.bf>div{flex:1;display:flex;background:#f1f3f5}
.bf>div:first-child{justify-content:flex-end;border-right:1px solid #667}
.bf i{display:block;height:100%}
.bf .r{background:#1f6fb4}.bf .lf{background:#d9541e}.bf.muted i{background:#c9ced4}
.two{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:20px;align-items:start}
.step{border-top:1px solid #e3e8ee;padding-top:10px;margin-top:12px}
.step:first-of-type{border-top:none;margin-top:0}
.step-head{display:flex;justify-content:space-between;align-items:baseline;gap:12px;flex-wrap:wrap}
.step-head .instr{font-size:12.5px;color:#566;font-style:italic}
.trace-row{display:grid;grid-template-columns:minmax(0,1fr) 176px;gap:12px;align-items:start}
.trace-row.solo{grid-template-columns:minmax(0,1fr)}
.viewer{margin:8px 0 0;text-align:center}
.viewer img{height:160px;width:auto;max-width:172px;border-radius:4px;background:#222;
border:1px solid #ccd}
.viewer figcaption{font-size:11.5px;color:#445}
.frames{display:grid;grid-template-columns:repeat(2,minmax(0,448px));gap:12px;margin-top:6px}
.frames figure{margin:0}.frames img{width:100%;border-radius:4px;display:block}
.frames figcaption{font-size:12px;color:#445;text-align:center}
.missing{color:#a11}
footer{font-size:12px;color:#667;text-align:center;padding:10px}
@media print{
@page{size:A4;margin:11mm 10mm}
body{background:#fff;font-size:11px}
header{background:#fff;color:#000;border-bottom:2px solid #16324f;padding:0 0 6px}
header h1{color:#16324f}
nav,.noprint,.modebar-container,.viewer,.trace-row,footer{display:none!important}
main{max-width:none;padding:0}
section{border:none;border-radius:0;padding:0;margin:8px 0}
h2{font-size:14px;margin-bottom:6px}
table{font-size:10px;margin:2px 0 4px}th,td{padding:2px 5px}
.findings li{font-size:12px;margin:2px 0}
.alert{padding:3px 8px;margin:3px 0;font-size:11px}
#summary,#movement,#midline,#rest,#quality{break-inside:avoid}
#midline{break-before:page}
#steps{break-before:page}
#steps .step{display:inline-block;width:48%;vertical-align:top;break-inside:avoid;border:none;
margin:0 1.5% 8px 0;padding:0}
#steps .step>:not(.step-head):not(.frames){display:none}
.step-head .instr{display:none}
.frames{gap:4px;margin-top:2px}
.frames figcaption{font-size:9px}
#steps.noimg .step{display:block;width:auto;margin:0 0 6px}
#steps.noimg .step>.trace-row{display:block!important}
}
"""

JS = """
(function(){
  function setup(){
    var el = document.getElementById('frame-data');
    if (!el) return;
    JSON.parse(el.textContent).forEach(function(d){
      var gd = document.getElementById(d.plot), img = document.getElementById(d.img),
          cap = document.getElementById(d.cap);
      if (!gd || !img || !gd.on) return;
      function show(e){
        if (!e || !e.points || !e.points.length) return;
        var x = e.points[0].x, best = 0, bd = Infinity;
        for (var i = 0; i < d.t.length; i++){
          var dd = Math.abs(d.t[i] - x); if (dd < bd){ bd = dd; best = i; }
        }
        if (img.getAttribute('data-frame') == String(d.frames[best])) return;
        img.src = d.src[best];
        img.setAttribute('data-frame', d.frames[best]);
        if (cap) cap.textContent = 'frame ' + d.frames[best] + ' · ' + d.t[best].toFixed(2) + ' s';
      }
      gd.on('plotly_hover', show);
      gd.on('plotly_click', show);
    });
  }
  // The face map keeps the faces' aspect ratio whatever the width.
  function fitMap(){
    var wrap = document.querySelector('.summary-map[data-ratio]');
    var gd = wrap && wrap.querySelector('.js-plotly-plot');
    if (!gd || !window.Plotly) return;
    var w = gd.getBoundingClientRect().width;
    var h = Math.round(w * parseFloat(wrap.dataset.ratio) + parseFloat(wrap.dataset.extra));
    if (h > 120 && Math.abs(h - gd.getBoundingClientRect().height) > 6){
      gd.parentElement.style.height = h + 'px';  // to_html's wrapper holds the height
      Plotly.relayout(gd, {height: h});
    }
  }
  function start(){ setup(); fitMap(); }
  if (document.readyState === 'complete') start(); else window.addEventListener('load', start);
  var timer = null;
  window.addEventListener('resize', function(){
    clearTimeout(timer); timer = setTimeout(fitMap, 150);
  });
  // Plotly sizes its figures for the screen; fit them to the printed page.
  window.addEventListener('beforeprint', function(){
    document.querySelectorAll('.js-plotly-plot').forEach(function(gd){
      var w = gd.getBoundingClientRect().width;
      if (w > 700) gd.style.zoom = (700 / w).toFixed(3);
    });
  });
  window.addEventListener('afterprint', function(){
    document.querySelectorAll('.js-plotly-plot').forEach(function(gd){ gd.style.zoom = ''; });
  });
})();
"""


# --------------------------------------------------------------------------- helpers


def _fmt(v: float | None, nd: int = 2) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def _esc(s: object) -> str:
    return html.escape(str(s))


def _dom(d: str) -> str:
    if d in ("right", "left", "balanced", "undetermined"):
        return f'<span class="badge dom-{d}">{d}</span>'
    return _esc(d)


def _reason(text: object) -> str:
    """A row's reason with repeated parts said once (both sides often give the same)."""
    if not isinstance(text, str) or not text:
        return ""
    return "; ".join(dict.fromkeys(p.strip() for p in text.split(";") if p.strip()))


def _nice(name: str) -> str:
    return name.replace("_", " ")


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:.2f})"


def _config(modebar: bool) -> dict:
    cfg: dict = {"displaylogo": False, "responsive": True}
    if modebar:
        cfg["modeBarButtonsToRemove"] = [
            "select2d",
            "lasso2d",
            "autoScale2d",
            "toggleSpikelines",
            "hoverClosestCartesian",
            "hoverCompareCartesian",
        ]
    else:
        cfg["displayModeBar"] = False
    return cfg


def _fig_html(fig: go.Figure, div_id: str, modebar: bool = False) -> str:
    return fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config=_config(modebar)
    )


def _quality_cell(q: str, reason: str) -> str:
    reason_html = f'<span class="reason">{_esc(reason)}</span>' if reason else ""
    return f'<td class="q q-{_esc(q)}">{_esc(QUALITY_TEXT.get(q, q))}{reason_html}</td>'


def _bars(right: float, left: float, scale: float, muted: bool = False) -> str:
    """A butterfly bar as seen facing the patient: right grows left, left grows right."""

    def w(v: float) -> float:
        return 0.0 if not np.isfinite(v) or v <= 0 else min(100.0, 100.0 * v / scale)

    cls = "bf muted" if muted else "bf"
    return (
        f'<div class="{cls}" title="right {_fmt(right)} mm · left {_fmt(left)} mm">'
        f'<div><i class="r" style="width:{w(right):.1f}%"></i></div>'
        f'<div><i class="lf" style="width:{w(left):.1f}%"></i></div></div>'
    )


def _bar_scale(df: pd.DataFrame) -> float:
    """Common bar scale: the largest usable value (unusable values would squash the rest)."""
    df = df[df["quality"].isin(["ok", "low"]) & df["measure"].map(_is_mm)]
    vals = pd.concat([df["right_mm"], df["left_mm"]]).astype(float)
    vals = vals[np.isfinite(vals)]
    return max(3.0, float(vals.max()) if len(vals) else 3.0)


# --------------------------------------------------------------------------- findings


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
        grp, step = _nice(r["muscle_group"]), _nice(r["step"])
        diff = abs(r["right_mm"] - r["left_mm"])
        caveat = (f" Low confidence: {_reason(r['reason']).rstrip('.')}."
                  if r["quality"] == "low" else "")
        if _is_mm(r["measure"]) and near_threshold(r["measure"], r["right_mm"], r["left_mm"], th):
            bigger = "right" if r["right_mm"] > r["left_mm"] else "left"
            other = (f"call the {bigger} side dominant" if r["dominant_side"] == "balanced"
                     else "call it balanced")
            caveat = (f" Near the threshold ({diff:.2f} mm apart; a side is dominant from "
                      f"{th.min_diff_mm:g} mm and {th.min_ratio:.0%}): a repeat recording may "
                      f"{other}.") + caveat
        if not _is_mm(r["measure"]):
            text = _relative_finding(r)
            if text:
                out.append(text + caveat)
            continue
        if r["dominant_side"] in ("right", "left"):
            side = r["dominant_side"]
            other = "left" if side == "right" else "right"
            out.append(
                f"{side.capitalize()} {grp} pulls {diff:.1f} mm more than the {other} in the "
                f"{step} (right {r['right_mm']:.1f} mm, left {r['left_mm']:.1f} mm, index "
                f"{r['asymmetry_index']:+.2f}).{caveat}"
            )
        elif r["primary"] and r["dominant_side"] == "balanced":
            out.append(
                f"{grp.capitalize()} is balanced in the {step} (right {r['right_mm']:.1f} mm, "
                f"left {r['left_mm']:.1f} mm).{caveat}"
            )
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


LINE_NAMES = {
    "crow_feet": "crow's feet",
    "bunny_lines": "bunny lines",
    "forehead": "forehead lines",
    "glabella": "glabellar lines",
    "chin": "chin (pebbling)",
}


def _lines_name(region: str) -> str:
    return LINE_NAMES.get(region, f"{_nice(region)} lines")


def _relative_finding(r: pd.Series) -> str:
    """A finding for a value without millimetres (a count, a crease depth)."""
    grp, step, side = _nice(r["muscle_group"]), _nice(r["step"]), r["dominant_side"]
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
        name = _lines_name(r["muscle_group"])
        return (
            f"{side.capitalize()} {name} fold {times} than the {other} in the "
            f"{step} (crease index right {right:.2f}, left {left:.2f})."
        )
    return ""


def _checks(session: Session) -> str:
    """Warnings and every value that is not ``ok``, with the reason."""
    a = _moving(session)
    missing = set(a.loc[a["quality"] == "missing", "step"])
    # "step 'x' not found" warnings are said below, with what to do about it.
    items = [
        f'<div class="alert"><b>Warning</b>{_esc(w)}</div>'
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
            items.append(
                f'<div class="alert bad"><b>{_esc(r["step"])}: missing</b>'
                f"{_esc(_reason(r['reason']) or 'step not found in the video')}; nothing is "
                "reported for "
                "it (use --cues to give its times if the patient did perform it).</div>"
            )
            continue
        cls = "bad" if q == "unusable" else ""
        items.append(
            f'<div class="alert {cls}"><b>{_esc(r["step"])} · {_esc(_nice(r["muscle_group"]))}:'
            f" {_esc(QUALITY_TEXT.get(q, q))}</b>{_esc(_reason(r['reason']) or 'no reason given')}"
            + (" — not listed as a finding." if q == "unusable" else "")
            + "</div>"
        )
    if not items:
        n = len(a)
        items.append(
            f'<div class="alert ok"><b>Checks passed</b>All {n} values passed the tracking and '
            "plausibility checks; no warnings.</div>"
        )
    return '<div class="checks" id="checks">' + "".join(items) + "</div>"


# --------------------------------------------------------------------------- tables


def _table(
    df: pd.DataFrame, scale: float, th: Thresholds, with_step: bool = True
) -> str:
    rows = []
    for _, r in df.iterrows():
        q = r["quality"]
        near = (
            NEAR_NOTE
            if q in ("ok", "low")
            and near_threshold(r["measure"], r["right_mm"], r["left_mm"], th)
            else ""
        )
        sec = "" if r["primary"] else ' <span class="note">(secondary)</span>'
        step_td = f'<td class="l">{_esc(r["step"])}</td>' if with_step else ""
        rows.append(
            f'<tr class="row-{_esc(q)}">{step_td}'
            f'<td class="l">{_esc(_nice(r["muscle_group"]))}{sec}</td>'
            f'<td class="l">{_esc(MEASURE_TEXT.get(r["measure"], _nice(r["measure"])))}</td>'
            f"<td><b>{_fmt(r['right_mm'])}</b></td>"
            + (
                f'<td class="c">{_bars(r["right_mm"], r["left_mm"], scale, q == "unusable")}</td>'
                if _is_mm(r["measure"])
                else '<td class="c note">not mm</td>'
            )
            +
            f"<td class=l><b>{_fmt(r['left_mm'])}</b></td>"
            f"<td>{_fmt(r['diff_mm'])}</td><td>{_fmt(r['asymmetry_index'])}</td>"
            f'<td class="c">{_dom(r["dominant_side"])}{near}</td>'
            f"{_quality_cell(q, _reason(r['reason']))}"
            "</tr>"
        )
    step_th = '<th class="l">step</th>' if with_step else ""
    return (
        f'<table class="mv"><tr>{step_th}<th class="l">muscle group</th><th class="l">measure</th>'
        '<th>right mm</th><th class="c">right ◀ ▶ left</th><th class="l">left mm</th>'
        "<th>R−L mm</th><th>index</th><th class=c>dominant</th><th>quality</th></tr>"
        + "".join(rows)
        + "</table>"
    )


REST_WORDS = {
    "height": ("higher", "height above the iris line"),
    "aperture": ("more open", "aperture, upper − lower lid"),
    "width": ("further from the midline", "distance from the midline"),
}


def _rest_section(session: Session) -> str:
    proto = session.options.protocol
    kinds = {m.name: m.kind for m in proto.rest_measures}
    notes = {m.name: m.note for m in proto.rest_measures}
    th = proto.thresholds
    rows = []
    for _, r in session.rest.iterrows():
        word, level = REST_WORDS.get(kinds.get(r["measure"], "height"), REST_WORDS["height"])
        d = r["diff_mm"]
        if not np.isfinite(d):
            meaning = "not measured"
        else:
            side = "right" if d > 0 else "left"
            meaning = f"{side} {word} by {abs(d):.1f} mm"
            if abs(d) < th.rest_min_diff_mm:
                meaning += f' <span class="note">(under {th.rest_min_diff_mm:g} mm)</span>'
        note = notes.get(r["measure"], "")
        rows.append(
            f'<tr><td class="l">{_esc(_nice(r["measure"]))}'
            + (f'<div class="note">{_esc(note)}</div>' if note else "")
            + f'</td><td class="l note">{level}</td>'
            f"<td>{_fmt(r['right_mm'])}</td><td>{_fmt(r['left_mm'])}</td>"
            f"<td>{_fmt(r['diff_mm'])}</td><td class=l>{meaning}</td></tr>"
        )
    return (
        '<section id="rest"><h2>Resting asymmetry — how the face sits at rest</h2>'
        "<p>Position, <b>not movement</b>: how the two sides sit on the neutral face (the rest "
        "frames chosen before the steps), before any muscle pulls. A brow that sits higher at "
        "rest is not a stronger frontalis; the movement table above is peak minus each side's "
        "own rest, so a resting difference does not enter it.</p>"
        '<table id="rest-table"><tr><th class="l">measure at rest</th><th class="l">level</th>'
        "<th>right mm</th><th>left mm</th><th>R−L mm</th>"
        f'<th class="l">reading</th></tr>{"".join(rows)}</table>'
        '<p class="note">Heights are along the face\'s up axis above the line through the iris '
        "centres (negative = below it, e.g. the mouth corners); apertures are the upper minus the "
        "lower lid; widths are distances from the facial midline (midway between the irises). "
        "These rows are also in asymmetry.csv with step <code>rest</code>.</p></section>"
    )


def _pairs_section(session: Session) -> str:
    """Neighbouring muscles side by side: quieting one can reveal the other."""
    proto = session.options.protocol
    if not proto.pairs:
        return ""
    a = _moving(session)
    blocks = []
    for pair in proto.pairs:
        cells = []
        for step, group in (pair.first, pair.second):
            rows = a[(a["step"] == step) & (a["muscle_group"] == group) & a["measure"].map(_is_mm)]
            r = rows.iloc[0] if not rows.empty else None
            usable = r is not None and r["quality"] not in ("missing", "unusable")
            vals = []
            for side in ("right", "left"):
                v = r[f"{side}_mm"] if usable else np.nan
                vals.append(f"<td><b>{_fmt(v)}</b></td>")
            state = _dom(r["dominant_side"]) if usable else (
                f'<span class="note">{_esc(r["quality"]) if r is not None else "not measured"}'
                "</span>"
            )
            cells.append(
                f'<tr><td class="l">{_esc(_nice(group))}</td><td class="l note">{_esc(step)}</td>'
                f'{"".join(vals)}<td class="c">{state}</td></tr>'
            )
        blocks.append(
            f'<h3>{_esc(pair.name or " – ".join(_nice(g) for _, g in (pair.first, pair.second)))}'
            "</h3>"
            + (f'<p class="note">{_esc(pair.note)}</p>' if pair.note else "")
            + '<table class="pair"><tr><th class="l">muscle group</th><th class="l">step</th>'
            "<th>right mm</th><th>left mm</th><th class=c>dominant</th></tr>"
            + "".join(cells)
            + "</table>"
        )
    return (
        '<section id="pairs"><h2>Muscle pairs — both activations together</h2>'
        "<p>Neighbouring muscles work together or against each other; quieting one side of one "
        "can unmask the other. Each pair shows both activations per side (peak minus rest).</p>"
        + "".join(blocks)
        + "</section>"
    )


# --------------------------------------------------------------------------- face map


def _rest_face(session: Session) -> np.ndarray | None:
    clip = session.clips[0]
    rest = sorted({f for w in clip.windows for f in w.rest}) or list(
        np.flatnonzero(clip.traj.valid)
    )
    if not rest:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # landmarks never seen at rest
        face = np.nanmean(clip.traj.mm[rest], axis=0)
    return face if np.isfinite(face[:468]).any() else None


def _outline(face: np.ndarray) -> tuple[list, list]:
    xs: list = []
    ys: list = []
    for line in FACE_LINES:
        if max(line) >= len(face):
            continue
        xs.extend([*face[list(line), 0].tolist(), None])
        ys.extend([*face[list(line), 1].tolist(), None])
    return xs, ys


def _region(pts: np.ndarray) -> np.ndarray | None:
    """A filled region around the points: their convex hull grown by a few mm."""
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        return None
    r = 3.0 if len(pts) >= 3 else 6.0
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = np.stack([np.cos(ang), np.sin(ang)], axis=1) * r
    cloud = (pts[:, None, :] + ring[None, :, :]).reshape(-1, 2)
    try:
        hull = ConvexHull(cloud)
    except QhullError:
        return None
    v = cloud[hull.vertices]
    return np.vstack([v, v[:1]])


def _region_style(row: pd.Series, side: str, min_diff: float) -> tuple[str, str, str]:
    """(fill, line colour, line dash) of one side's region."""
    q, dom = row["quality"], row["dominant_side"]
    if q in ("unusable", "missing") or dom == "undetermined":
        return "rgba(255,255,255,0)", NEUTRAL_COLOUR, "dot"
    if dom == side:
        diff = abs(row["right_mm"] - row["left_mm"])
        strength = float(np.clip(diff / (STRONG_DIFF * min_diff), 0, 1))
        colour = SIDE_COLOUR[side]
        return _rgba(colour, 0.35 + 0.55 * strength), colour, "solid"
    alpha = 0.2 if dom in ("right", "left") else 0.35
    return _rgba(NEUTRAL_COLOUR, alpha), NEUTRAL_COLOUR, "solid"


def _value_label(row: pd.Series) -> str:
    if row["quality"] == "missing":
        return '<span style="color:#a11">not found</span>'
    if row["quality"] == "unusable":
        return '<span style="color:#a11">unusable</span>'
    parts = []
    for side, key in (("right", "right_mm"), ("left", "left_mm")):
        txt = f"{side[0].upper()} {_fmt(row[key], 1)}"
        if row["dominant_side"] == side:
            txt = f'<b><span style="color:{SIDE_COLOUR[side]}">{txt}</span></b>'
        parts.append(txt)
    label = " · ".join(parts) + " mm"
    if row["quality"] == "low":
        label += ' <span style="color:#8a5a00">(low)</span>'
    return label


def _face_map(session: Session) -> str:
    """The patient's own rest face, once per step, each measured region coloured.

    Seen facing the patient (patient's right on the viewer's left). The
    dominant side's region is filled with its colour, stronger for a bigger
    difference; the other side and balanced regions are grey; unusable or
    missing values are dotted outlines.
    """
    face = _rest_face(session)
    steps = [r for r in session.results]
    if face is None or not steps:
        return '<p class="note">No rest face to draw.</p>'
    proto = session.options.protocol
    a = session.asymmetry
    n = len(steps)
    cols = min(n, 5)
    nrows = -(-n // cols)
    ox, oy = _outline(face)
    oval = face[list(FACE_LINES[0])]
    y_top, y_bot = float(np.nanmax(oval[:, 1])), float(np.nanmin(oval[:, 1]))
    x_half = float(np.nanmax(np.abs(oval[:, 0]))) + 8
    # Faces keep their aspect; titles above and values below take fixed pixels.
    ratio = nrows * (y_top - y_bot + 4) / (cols * 2 * x_half)
    extra = MAP_TOP_PX + MAP_BOTTOM_PX + (nrows - 1) * MAP_GAP_PX
    height = int(1070 * ratio + extra)
    fig = make_subplots(
        rows=nrows, cols=cols, horizontal_spacing=0.012,
        vertical_spacing=min(0.3, MAP_GAP_PX / height) if nrows > 1 else 0.0,
    )  # fmt: skip
    for k, res in enumerate(steps):
        row_i, col_i = k // cols + 1, k % cols + 1
        i = k + 1
        xid, yid = ("x", "y") if i == 1 else (f"x{i}", f"y{i}")
        step = proto.step(res.window.name)
        fig.add_trace(
            go.Scatter(
                x=ox, y=oy, mode="lines", line=dict(color="#c3cbd3", width=1),
                hoverinfo="skip", showlegend=False,
            ),
            row=row_i, col=col_i,
        )  # fmt: skip
        primary_row = None
        for g in sorted(step.groups, key=lambda g: g.primary):
            rows = a[(a["step"] == step.name) & (a["muscle_group"] == g.name)]
            if rows.empty:
                continue
            rr = rows.iloc[0]
            if g.primary:
                primary_row = rr
            for side in ("right", "left"):
                idx = [p for p in g.points(side) + g.lower_points(side) if p < len(face)]
                poly = _region(face[idx])
                if poly is None:
                    continue
                fill, line, dash = _region_style(rr, side, proto.thresholds.min_diff_mm)
                val = rr["right_mm"] if side == "right" else rr["left_mm"]
                verdict = rr["dominant_side"]
                name = (
                    f"{step.name} · {_nice(g.name)} · {side}: {_fmt(val)} mm "
                    f"({verdict}{'' if rr['quality'] == 'ok' else ', ' + rr['quality']})"
                )
                fig.add_trace(
                    go.Scatter(
                        x=poly[:, 0], y=poly[:, 1], mode="lines", fill="toself",
                        fillcolor=fill,
                        line=dict(color=line, width=1.5 if g.primary else 1, dash=dash),
                        hoveron="fills", hoverinfo="name", name=name, showlegend=False,
                        hoverlabel=dict(namelength=-1),
                    ),
                    row=row_i, col=col_i,
                )  # fmt: skip
        # Side-to-side pull: the midline's drift at the peak as arrows (x10).
        for name, drift in res.drift_mm.items():
            pts = [p for p in proto.midline.get(name, ()) if p < len(face)]
            if not pts or not np.isfinite(drift):
                continue
            x0, y0 = np.nanmean(face[pts], axis=0)
            fig.add_annotation(
                x=x0 + DRIFT_GAIN * drift, y=y0, ax=x0, ay=y0, xref=xid, yref=yid,
                axref=xid, ayref=yid, showarrow=True, arrowhead=2, arrowsize=1,
                arrowwidth=2, arrowcolor=SIDE_COLOUR["left" if drift > 0 else "right"],
                text="", hovertext=(
                    f"{name} midline drift {abs(drift):.2f} mm toward the patient's "
                    f"{'left' if drift > 0 else 'right'} (arrow x{DRIFT_GAIN:g})"
                ),
            )  # fmt: skip
        title = f"<b>{_esc(_nice(step.name).capitalize())}</b>"
        sub = _nice(step.primary.name)
        fig.add_annotation(
            x=0, y=y_top, yshift=32, xref=xid, yref=yid, text=title, showarrow=False,
            font=dict(size=14, color="#16324f"),
        )  # fmt: skip
        fig.add_annotation(
            x=0, y=y_top, yshift=15, xref=xid, yref=yid, text=_esc(sub), showarrow=False,
            font=dict(size=11, color="#556"),
        )  # fmt: skip
        label = _value_label(primary_row) if primary_row is not None else ""
        fig.add_annotation(
            x=0, y=y_bot, yshift=-14, xref=xid, yref=yid, text=label, showarrow=False,
            font=dict(size=12, color="#333"),
        )  # fmt: skip
        for sx, txt in ((-x_half + 2, "R"), (x_half - 2, "L")):
            fig.add_annotation(
                x=sx, y=(y_top + y_bot) / 2, xref=xid, yref=yid, text=txt, showarrow=False,
                font=dict(size=11, color="#8a96a3"),
            )  # fmt: skip
        fig.update_xaxes(
            visible=False, range=[-x_half, x_half], fixedrange=True, row=row_i, col=col_i
        )
        fig.update_yaxes(
            visible=False, range=[y_bot - 2, y_top + 2], fixedrange=True,
            scaleanchor=xid, scaleratio=1, constrain="domain", row=row_i, col=col_i,
        )  # fmt: skip
    fig.update_layout(
        height=height,
        margin=dict(l=12, r=12, t=MAP_TOP_PX, b=MAP_BOTTOM_PX),
        plot_bgcolor="#fff",
        paper_bgcolor="#fff",
        hovermode="closest",
    )
    # Height per width that fits the faces without blank bands (JS keeps it on resize).
    return (
        f'<div class="summary-map" data-ratio="{ratio:.4f}" data-extra="{extra}">'
        f'{_fig_html(fig, "face-map")}</div>'
    )


# --------------------------------------------------------------------------- midline


def _drift_figure(session: Session) -> str:
    """Midline drift per step, as seen facing the patient (toward right = to the left)."""
    mid = session.midline
    if mid.empty:
        return '<p class="note">No midline drift measured.</p>'
    order = list(dict.fromkeys(mid["step"]))
    signed = np.where(mid["toward"] == "left", 1.0, -1.0) * mid["drift_mm"].astype(float)
    mid = mid.assign(signed=signed)
    lim = max(1.0, 1.25 * float(np.nanmax(np.abs(signed)))) if len(mid) else 1.0
    fig = go.Figure()
    for pts, opacity in zip(dict.fromkeys(mid["points"]), (1.0, 0.55, 0.35, 0.25), strict=False):
        d = mid[mid["points"] == pts]
        colours = [LEFT_COLOUR if v > 0 else RIGHT_COLOUR for v in d["signed"]]
        fig.add_trace(
            go.Bar(
                y=d["step"], x=d["signed"], orientation="h", name=pts,
                marker=dict(color=colours, opacity=opacity),
                text=[f"{pts} {abs(v):.2f}" for v in d["signed"]], textposition="outside",
                cliponaxis=False,
                customdata=d["toward"],
                hovertemplate=f"{pts}: %{{customdata}} %{{text}} mm<extra>%{{y}}</extra>",
            )
        )  # fmt: skip
    fig.add_vline(x=0, line=dict(color="#445", width=1))
    fig.update_layout(
        barmode="group",
        height=70 + 46 * len(order),
        margin=dict(l=60, r=20, t=10, b=44),
        plot_bgcolor="#fff",
        showlegend=False,
        bargap=0.3,
        font=dict(size=11),
    )
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1], fixedrange=True)
    fig.update_xaxes(
        range=[-lim, lim], gridcolor="#eee", zeroline=False, fixedrange=True,
        title=dict(text="◀ toward patient's right · mm · toward patient's left ▶",
                   font=dict(size=11)),
    )  # fmt: skip
    return _fig_html(fig, "midline-drift")


def _midline_section(session: Session) -> str:
    mid = session.midline
    rows = "".join(
        f'<tr><td class="l">{_esc(r["step"])}</td><td class="l">{_esc(r["points"])}</td>'
        f"<td>{_fmt(r['drift_mm'])}</td><td class=l>{_esc(r['toward'])}</td></tr>"
        for _, r in mid.iterrows()
    )
    pts = session.options.protocol.midline
    which = ", ".join(f"{_esc(k)} ({', '.join(map(str, v))})" for k, v in pts.items())
    return (
        '<section id="midline"><h2>Side-to-side pull: midline drift at each step\'s peak</h2>'
        '<div class="two"><div>'
        + _drift_figure(session)
        + "</div><div>"
        '<table><tr><th class="l">step</th><th class="l">points</th><th>drift mm</th>'
        f'<th class="l">toward patient\'s</th></tr>{rows}</table>'
        f'<p class="note">How far the midline points ({which}; MediaPipe numbers) moved '
        "sideways at the peak, relative to rest, in the face frame. A midline pulled toward one "
        "side is a sign of that side pulling harder. Drawn as seen facing the patient, on a "
        "scale of at least ±1 mm so that tracking-level drift (a few tenths) stays small.</p>"
        "</div></div></section>"
    )


# --------------------------------------------------------------------------- steps


def _trace_figure(r: StepResult, session: Session, div_id: str) -> str:
    step = session.options.protocol.step(r.window.name)
    fig = go.Figure()
    dash = {True: "solid", False: "dot"}
    for g in step.groups:
        for side in ("right", "left"):
            y = r.series.get((g.name, side))
            if y is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=r.t,
                    y=y,
                    mode="lines",
                    line=dict(color=SIDE_COLOUR[side], dash=dash[g.primary], width=2),
                    name=f"{side} · {_nice(g.name)}",
                    customdata=r.frames,
                    hovertemplate="%{y:.2f} mm<extra>%{fullData.name}</extra>",
                )
            )
    t = r.t
    pos = {int(f): i for i, f in enumerate(r.frames)}
    if r.window.start in pos and r.window.end in pos:
        fig.add_vrect(
            x0=t[pos[r.window.start]],
            x1=t[pos[r.window.end]],
            fillcolor="#16324f",
            opacity=0.08,
            line_width=0,
            annotation_text=r.window.name,
            annotation_position="top left",
        )
    rest_t = [t[pos[f]] for f in r.window.rest if f in pos]
    if rest_t:
        fig.add_vrect(
            x0=min(rest_t),
            x1=max(rest_t),
            fillcolor="#4d8f4d",
            opacity=0.12,
            line_width=0,
            annotation_text="rest",
            annotation_position="bottom left",
        )
    if np.isfinite(r.peak_t):
        fig.add_vline(
            x=r.peak_t,
            line=dict(color="#333", dash="dash", width=1),
            annotation_text=f"peak {r.peak_t:.2f} s",
            annotation_position="top right",
            annotation_font=dict(size=11),
        )
        for m in r.measures:
            if not m.primary or not np.isfinite(m.activation_mm):
                continue
            fig.add_trace(
                go.Scatter(
                    x=[r.peak_t], y=[m.activation_mm], mode="markers",
                    marker=dict(color=SIDE_COLOUR[m.side], size=10, symbol="diamond",
                                line=dict(color="#fff", width=1.5)),
                    name=f"{m.side} at peak", showlegend=False,
                    hovertemplate=f"{m.side} at peak: {m.activation_mm:.2f} mm<extra></extra>",
                )
            )  # fmt: skip
    fig.update_layout(
        height=270,
        margin=dict(l=50, r=10, t=24, b=36),
        plot_bgcolor="#fff",
        xaxis_title="time in the video (s)",
        yaxis_title="mm (minus rest)",
        legend=dict(orientation="h", y=1.0, x=0, xanchor="left", yanchor="bottom"),
        hovermode="x unified",
        font=dict(size=11),
    )
    fig.update_xaxes(gridcolor="#eee", showspikes=True, spikemode="across", spikethickness=1)
    fig.update_yaxes(gridcolor="#eee", zeroline=True, zerolinecolor="#bbb")
    return _fig_html(fig, div_id, modebar=True)


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (5, 3, 1))  # type: ignore[return-value]


def _jpeg(img: np.ndarray, quality: int) -> str:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


def _rest_peak_arrows(
    r: StepResult, clip: ClipResult, session: Session, frame: int
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Arrows for the peak frame: (side, rest points, arrow start, arrow end) in image px.

    Length: the measured value of that side (the table's number) × ARROW_GAIN.
    Direction: what the measurement defines -- along the face's up axis for
    ``up``/``down`` values, and for eyelids the upper lid down and the lower lid
    up (the closing split between them as the landmark model sees it); for
    ``length`` values (a displacement in any direction) the mean movement of the
    points as the value's sensor measured it (``StepResult.displacement_mm``;
    the head-stabilised landmark trajectories where it is absent).
    Start: where the points would sit at rest in the peak frame's head pose.
    """
    step = session.options.protocol.step(r.window.name)
    traj, mmpp = clip.traj, clip.scale.mm_per_px
    rest = [f for f in r.window.rest if 0 <= f < len(traj.mm)]
    peak = [f for f in r.peak_frames if 0 <= f < len(traj.mm)]
    if not rest or not peak or not 0 <= frame < len(traj.mm):
        return []
    th = np.radians(traj.roll_deg[frame])
    lat = np.array([np.cos(th), -np.sin(th)])
    up = np.array([lat[1], -lat[0]])
    px_per_mm = traj.zoom[frame] / mmpp if np.isfinite(traj.zoom[frame]) else np.nan
    values = {(m.muscle_group, m.side): m.activation_mm for m in r.measures}
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for g in step.groups:
            for side in ("right", "left"):
                peak_px = r.peak_points_px.get(f"{g.name}:{side}")
                val = values.get((g.name, side), np.nan)
                if peak_px is None or not (np.isfinite(px_per_mm) and np.isfinite(val)):
                    continue
                sets = [list(g.points(side))]
                if g.kind == "aperture":
                    sets.append(list(g.lower_points(side)))
                disp = [
                    np.nanmean(traj.mm[peak][:, s], axis=(0, 1))
                    - np.nanmean(traj.mm[rest][:, s], axis=(0, 1))
                    for s in sets
                ]
                # The direction of pull as the value's own sensor measured it
                # (the image tracker for skin), where the step recorded it.
                keys = [f"{g.name}:{side}", f"{g.name}:{side}:lower"][: len(sets)]
                measured = [r.displacement_mm.get(k) for k in keys]
                if all(m is not None and np.isfinite(m).all() for m in measured):
                    disp = [np.asarray(m) for m in measured]
                if g.kind == "aperture":
                    down_up = -disp[0][1], disp[1][1]  # upper lid down, lower lid up
                    total = down_up[0] + down_up[1]
                    share = (down_up[0] / total) if total > 0.1 else 0.6
                    share = float(np.clip(share, 0, 1))
                    drawn = [np.array([0.0, -share * val]), np.array([0.0, (1 - share) * val])]
                elif g.kind in ("up", "down"):
                    drawn = [np.array([0.0, val if g.kind == "up" else -val])]
                else:
                    n = float(np.hypot(*disp[0]))
                    drawn = [disp[0] * (abs(val) / n) if n > 1e-6 else np.zeros(2)]
                start_i = 0
                for s, d, v in zip(sets, disp, drawn, strict=True):
                    idx = slice(start_i, start_i + len(s))
                    start_i += len(s)
                    if not (np.isfinite(d).all() and np.isfinite(v).all()):
                        continue
                    pts_rest = peak_px[idx] - (d[0] * lat + d[1] * up) * px_per_mm
                    c = np.nanmean(pts_rest, axis=0)
                    end = c + ARROW_GAIN * (v[0] * lat + v[1] * up) * px_per_mm
                    out.append((side, pts_rest, c, end))
    return out


def _face_crop(
    cache: FrameCache, frame: int, box_px: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The grey crop of ``frame`` cut to ``box_px`` (x0, y0, x1, y1 in image px).

    Returns the image and its top-left corner in cache-crop coordinates; the
    whole cache crop when there is no box.
    """
    grey = cache.image(frame)
    if box_px is None or not np.isfinite(box_px).all():
        return grey, np.zeros(2)
    (x0, y0), (x1, y1) = cache.to_crop(box_px.reshape(2, 2), frame)
    x0, y0, x1, y1 = (int(round(v)) for v in (x0, y0, x1, y1))
    h, w = grey.shape
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        grey = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    out = grey[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    if out.size == 0:
        return cache.image(frame), np.zeros(2)
    return out, np.array([x0, y0], float)


def _face_box(clip: ClipResult, frame: int) -> np.ndarray | None:
    """A portrait box around the face at ``frame`` (image px): forehead to chin, margin."""
    if not 0 <= frame < len(clip.track):
        return None
    pts = clip.track.xy[frame]
    if not np.isfinite(pts[[10, 152]]).all():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cx, cy = np.nanmean(pts[:468], axis=0)
    hgt = 1.3 * float(np.hypot(*(pts[10] - pts[152])))
    wid = 0.82 * hgt
    return np.array([cx - wid / 2, cy - hgt / 2, cx + wid / 2, cy + hgt / 2])


def _region_box(clip: ClipResult, r: StepResult, session: Session) -> np.ndarray | None:
    """A landscape box (image px, at the step's keyframe) around the step's points.

    Wide enough for some context (at least REGION_MIN_MM), so a few millimetres
    of pull, drawn ×ARROW_GAIN, read clearly.
    """
    kf = r.window.keyframe
    if not 0 <= kf < len(clip.track):
        return None
    step = session.options.protocol.step(r.window.name)
    idx = sorted({p for g in step.groups for p in g.all_points})
    pts = clip.track.xy[kf, idx]
    pts = pts[np.isfinite(pts).all(axis=1)]
    z = clip.traj.zoom[kf] if kf < len(clip.traj.zoom) else np.nan
    if not len(pts) or not np.isfinite(z):
        return None
    px_per_mm = z / clip.scale.mm_per_px
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    wid = max(1.35 * (x1 - x0), REGION_MIN_MM * px_per_mm)
    hgt = max(wid / REGION_ASPECT, 1.8 * (y1 - y0))
    wid = max(wid, hgt * REGION_ASPECT)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([cx - wid / 2, cy - hgt / 2, cx + wid / 2, cy + hgt / 2])


def _frame_img(
    cache: FrameCache,
    frame: int,
    points: dict[str, np.ndarray],
    arrows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] | None = None,
    box_px: np.ndarray | None = None,
    height: int = FRAME_HEIGHT,
) -> str:
    """A grey face crop with the measured points, or (peak) the rest points and arrows."""
    grey, corner = _face_crop(cache, frame, box_px)
    f = height / grey.shape[0]
    img = cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)

    def xy(p: np.ndarray) -> tuple[int, int]:
        return int(round((float(p[0]) - corner[0]) * f)), int(round((float(p[1]) - corner[1]) * f))

    def dots(pts: np.ndarray, bgr: tuple[int, int, int]) -> None:
        for p in cache.to_crop(np.asarray(pts, float), frame):
            if not np.isfinite(p).all():
                continue
            if arrows is None:  # the rest frame: where the points are
                cv2.circle(img, xy(p), 4, (255, 255, 255), -1, cv2.LINE_AA)
                cv2.circle(img, xy(p), 3, bgr, -1, cv2.LINE_AA)
            else:  # the peak frame: where they were at rest, as light rings
                cv2.circle(img, xy(p), 3, bgr, 1, cv2.LINE_AA)

    if arrows is None:
        for key, pts in points.items():
            dots(pts, _bgr(SIDE_COLOUR.get(key.split(":")[-1], "#ffffff")))
    else:
        for side, pts, a, b in arrows:
            bgr = _bgr(SIDE_COLOUR[side])
            dots(pts, bgr)
            p, q = cache.to_crop(np.stack([a, b]), frame)
            length = float(np.hypot(*(q - p))) * f
            if length < 3 or not (np.isfinite(p).all() and np.isfinite(q).all()):
                continue
            tip = min(0.45, 10 / length)
            cv2.arrowedLine(img, xy(p), xy(q), (255, 255, 255), 6, cv2.LINE_AA, tipLength=tip)
            cv2.arrowedLine(img, xy(p), xy(q), bgr, 3, cv2.LINE_AA, tipLength=tip)
    return _jpeg(img, 82)


def _lines_figures(r: StepResult, clip: ClipResult, cache: FrameCache, step: str) -> str:
    """Per crease region: rest and peak frames with each side's line response as a
    heat map (one colour scale for both sides and both frames), and the numbers."""
    by_region: dict[str, dict[str, LineReading]] = {}
    for lr in r.lines:
        by_region.setdefault(lr.region, {})[lr.side] = lr
    t = clip.track.t
    figs = []
    for region, sides in by_region.items():
        heats = [x.heat for lr in sides.values() for x in (lr.rest, lr.peak) if x.readable]
        pos = np.concatenate([h[h > 0].ravel() for h in heats]) if heats else np.zeros(0)
        vmax = float(np.percentile(pos, 99)) if len(pos) else 1.0
        any_lr = next(iter(sides.values()))
        frames = (("rest", any_lr.rest_frame, "rest"), ("peak", any_lr.peak_frame, "peak"))
        # One crop box (cache-crop px) for both frames, around every drawn region,
        # so the rest and peak pictures show the same skin at the same size.
        corners = []
        for lr in sides.values():
            for which in ("rest", "peak"):
                reading = getattr(lr, which)
                if reading.readable:
                    hh, ww = reading.heat.shape
                    c = np.array([[0, 0, 1], [ww, 0, 1], [0, hh, 1], [ww, hh, 1]], float)
                    corners.append(c @ np.asarray(reading.patch_to_image, float).T)
        box = None
        if corners:
            b = np.concatenate(corners)
            (x0, y0), (x1, y1) = b.min(axis=0), b.max(axis=0)
            pad = 0.25 * max(x1 - x0, y1 - y0)
            box = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
        imgs = []
        for label, frame, which in frames:
            img = cv2.cvtColor(cache.image(frame), cv2.COLOR_GRAY2BGR)
            for lr in sides.values():
                reading = getattr(lr, which)
                if reading.readable:
                    img = draw_heat(img, reading, vmax=vmax)
            if box is not None:
                h, w = img.shape[:2]
                x0, y0 = int(max(box[0], 0)), int(max(box[1], 0))
                x1, y1 = int(min(box[2], w)), int(min(box[3], h))
                if x1 > x0 + 4 and y1 > y0 + 4:
                    img = img[y0:y1, x0:x1]
            f = LINES_HEIGHT / img.shape[0]
            img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            imgs.append(
                f'<figure><img src="{_jpeg(img, 82)}" alt="{_esc(region)} lines at {label}">'
                f"<figcaption>{label}, frame {frame} ({t[frame]:.2f} s)</figcaption></figure>"
            )
        vals = []
        for side in ("right", "left"):
            lr = sides.get(side)
            if lr is None:
                continue
            c = lr.change
            vals.append(
                f"{side} {c.value:.1f}" if c.readable else f"{side}: not readable ({c.reason})"
            )
        figs.append(
            f'<div class="lines"><h4>Dynamic lines · {_esc(_lines_name(region))}</h4>'
            f'<div class="frames">{"".join(imgs)}</div>'
            f'<p class="note">Line depth the {_esc(step)} adds (crease index, % fold contrast; '
            f"not mm): {_esc(', '.join(vals))}. Brighter heat = deeper fold; both sides and "
            "both frames share one colour scale.</p></div>"
        )
    return "".join(figs)


def _thumbnails(
    cache: FrameCache, r: StepResult, box_px: np.ndarray | None
) -> tuple[list[int], list[float], list[str]]:
    """Plain grey thumbnails every ~THUMB_STEP_S s of the step's window."""
    frames, t = np.asarray(r.frames, int), np.asarray(r.t, float)
    if len(frames) == 0:
        return [], [], []
    span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    every = max(THUMB_STEP_S, span / THUMBS_PER_STEP)
    stride = max(1, int(round(every / dt))) if dt > 0 else 1
    idx = list(range(0, len(frames), stride))
    out_f, out_t, out_s = [], [], []
    for i in idx:
        fr = int(frames[i])
        if not 0 <= fr < len(cache):
            continue
        grey, _ = _face_crop(cache, fr, box_px)
        f = THUMB_HEIGHT / grey.shape[0]
        small = cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        out_f.append(fr)
        out_t.append(round(float(t[i]), 3))
        out_s.append(_jpeg(small, 72))
    return out_f, out_t, out_s


def _step_section(
    k: int,
    r: StepResult,
    clip: ClipResult,
    cache: FrameCache | None,
    session: Session,
    scale: float,
    frame_data: list[dict],
) -> str:
    step = session.options.protocol.step(r.window.name)
    a = session.asymmetry
    rows = a[a["step"] == step.name]
    badge = ""
    prim = rows[rows["primary"]]
    if not prim.empty:
        p = prim.iloc[0]
        if p["quality"] in ("missing", "unusable"):
            badge = f'<span class="badge dom-undetermined">{_esc(p["quality"])}</span>'
        elif p["dominant_side"] in ("right", "left"):
            badge = (
                f'<span class="badge dom-{p["dominant_side"]}">{p["dominant_side"]} dominant '
                f"{abs(p['diff_mm']):.1f} mm</span>"
            )
        else:
            badge = _dom(p["dominant_side"])
    head = (
        f'<div class="step-head"><h3>{k + 1} · {_esc(_nice(step.name).capitalize())} — '
        f"{_esc(_nice(step.primary.name))} {badge}</h3>"
        f'<span class="instr">“{_esc(step.instruction)}”</span></div>'
    )
    if not r.window.found:
        return (
            f'<div class="step" id="step-{k}">{head}<p class="missing">Not found in the video: '
            "the patient may have skipped this step, or it was too small to tell from rest. "
            "Nothing is reported for it. Use --cues to give its times.</p></div>"
        )
    parts = [head]
    rq = _recording(clip, step.name)
    if rq is not None and getattr(rq, "verdict", "ok") in ("low", "unusable"):
        bad = " bad" if rq.verdict == "unusable" else ""
        parts.append(
            f'<div class="alert{bad}"><b>Recording {_esc(QUALITY_TEXT[rq.verdict])}</b>'
            f"{_esc('; '.join(rq.reasons))}"
            + (f" — {_esc(rq.instruction)}" if getattr(rq, "instruction", "") else "")
            + "</div>"
        )
    parts.append(_table(rows, scale, session.options.protocol.thresholds, with_step=False))
    trace_id, img_id, cap_id = f"trace-{k}", f"view-{k}", f"view-cap-{k}"
    viewer = ""
    if cache is not None and len(r.frames):
        fr, ts, srcs = _thumbnails(cache, r, _face_box(clip, r.window.keyframe))
        if fr:
            target = r.peak_t if np.isfinite(r.peak_t) else ts[0]
            j = int(np.argmin(np.abs(np.asarray(ts) - target)))
            frame_data.append(
                dict(plot=trace_id, img=img_id, cap=cap_id, frames=fr, t=ts, src=srcs)
            )
            viewer = (
                f'<figure class="viewer noprint"><img id="{img_id}" src="{srcs[j]}" '
                f'data-frame="{fr[j]}" alt="frame at the cursor">'
                f'<figcaption id="{cap_id}">frame {fr[j]} · {ts[j]:.2f} s</figcaption>'
                '<figcaption class="note">hover or click the trace to see that moment</figcaption>'
                "</figure>"
            )
    parts.append(
        f'<div class="trace-row{"" if viewer else " solo"}">'
        f'<div class="plot">{_trace_figure(r, session, trace_id)}</div>'
        f"{viewer}</div>"
    )
    if cache is not None and r.peak_frames and r.window.keyframe >= 0:
        pk = r.peak_frames[len(r.peak_frames) // 2]
        kf = r.window.keyframe
        box = _region_box(clip, r, session)
        rest_src = _frame_img(cache, kf, r.keyframe_points_px, None, box)
        arrows = _rest_peak_arrows(r, clip, session, pk)
        peak_src = _frame_img(cache, pk, r.peak_points_px, arrows, box)
        t = clip.track.t
        parts.append(
            '<div class="frames">'
            f'<figure><img src="{rest_src}" alt="{_esc(step.name)} rest frame">'
            f"<figcaption>{_esc(step.name)} · rest, frame {r.window.keyframe} "
            f"({t[r.window.keyframe]:.2f} s)</figcaption></figure>"
            f'<figure><img src="{peak_src}" alt="{_esc(step.name)} peak frame">'
            f"<figcaption>{_esc(step.name)} · peak, frame {pk} ({t[pk]:.2f} s); "
            f"arrows: measured movement ×{ARROW_GAIN:g}</figcaption></figure></div>"
        )
    if cache is not None and r.lines:
        parts.append(_lines_figures(r, clip, cache, step.name))
    if r.drift_mm:
        parts.append(
            '<p class="drift">Midline drift at the peak: '
            + ", ".join(
                f"{_esc(name)} {abs(v):.2f} mm toward the patient's {'left' if v > 0 else 'right'}"
                for name, v in r.drift_mm.items()
                if np.isfinite(v)
            )
            + ".</p>"
        )
    for g in step.groups:
        if g.note:
            parts.append(f'<p class="note">{_esc(_nice(g.name))}: {_esc(g.note)}</p>')
    return f'<div class="step" id="step-{k}">' + "\n".join(parts) + "</div>"


# --------------------------------------------------------------------------- quality


def _recording(clip: ClipResult, step: str) -> object | None:
    """The clip's recording-quality verdict for ``step`` (movement.analysis.quality), if any."""
    for q in getattr(clip, "quality", None) or []:
        if getattr(q, "step", None) == step:
            return q
    return None


def _recording_cell(q: object | None) -> str:
    if q is None:
        return '<td class="l note">–</td>'
    verdict = getattr(q, "verdict", "ok")
    reasons = "; ".join(getattr(q, "reasons", ()) or ())
    text = f'<span class="q q-{_esc(verdict)}">{_esc(QUALITY_TEXT.get(verdict, verdict))}</span>'
    if reasons and verdict != "ok":
        text += f'<span class="reason" style="text-align:left">{_esc(reasons)}</span>'
    return f'<td class="l">{text}</td>'


def _quality(session: Session) -> str:
    rows = []
    for c in session.clips:
        yaw = yaw_degrees(c.traj.yaw_index)
        rows.append(
            f'<tr><td class="l">{_esc(Path(c.info.path).name)}</td>'
            f"<td>{c.info.width}×{c.info.height}</td><td>{c.info.fps:.2f}</td>"
            f"<td>{len(c.track)}</td><td>{c.track.valid.mean():.0%}</td>"
            f"<td>{c.scale.mm_per_px:.4f}</td>"
            f"<td>{c.scale.iris_px:.1f} (±{c.scale.spread:.0%})</td>"
            f"<td>{np.nanmin(c.traj.roll_deg):.1f} … {np.nanmax(c.traj.roll_deg):.1f}</td>"
            f"<td>{np.nanmin(yaw):.0f} … {np.nanmax(yaw):.0f}</td></tr>"
        )
    step_rows = []
    for c in session.clips:
        t = c.track.t
        for r in c.results:
            w = r.window
            rq = _recording(c, w.name)
            rec = _recording_cell(rq)
            if not w.found:
                step_rows.append(
                    f'<tr class="row-missing"><td class="l">{_esc(w.name)}</td>'
                    f'<td class="l">not found</td><td colspan="5"></td>{rec}</tr>'
                )
                continue
            span = f"{t[w.start]:.2f} – {t[w.end]:.2f}" if 0 <= w.start <= w.end < len(t) else "–"
            verdict = getattr(rq, "verdict", "ok")
            cls = f' class="row-{_esc(verdict)}"' if verdict in ("low", "unusable") else ""
            step_rows.append(
                f'<tr{cls}><td class="l">{_esc(w.name)}</td><td class="l">{_esc(w.source)}</td>'
                f"<td>{span}</td><td>{_fmt(r.peak_t)}</td><td>{len(w.rest)} (key {w.keyframe})"
                f"</td><td>{r.head_inliers:.1f}</td><td>{r.lost_fraction:.0%}</td>{rec}</tr>"
            )
    return (
        '<section id="quality"><h2>Tracking quality</h2>'
        '<table><tr><th class="l">video</th><th>size</th><th>fps</th><th>frames</th>'
        "<th>face tracked</th><th>mm/px</th><th>iris px (IQR)</th><th>roll °</th><th>yaw °</th>"
        "</tr>" + "".join(rows) + "</table>"
        '<table><tr><th class="l">step</th><th class="l">found by</th><th>window s</th>'
        "<th>peak s</th><th>rest frames</th><th>head-fit inliers</th><th>points lost</th>"
        '<th class="l">recording</th></tr>'
        + "".join(step_rows)
        + "</table>"
        '<p class="note">Head-fit inliers: anchor points agreeing with the head-motion fit at '
        "the peak (under 4 = head motion could not be removed). Points lost: measured points "
        "the image tracker lost at the peak. The eee step's platysma value is the pull on the "
        "mouth corners; the neck bands themselves lie outside the face mesh and are not "
        "measured.</p></section>"
    )


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
    title = "Facial movement report"
    who = " · ".join(x for x in (o.patient and f"patient {o.patient}", o.label, o.date) if x)
    items = "".join(f"<li>{_esc(f)}</li>" for f in findings(session)) or (
        "<li>No usable value to report.</li>"
    )
    scale = _bar_scale(_moving(session))
    frame_data: list[dict] = []
    steps_html = []
    k = 0
    for ci, clip in enumerate(session.clips):
        cache = caches[ci] if ci < len(caches) else None
        for r in clip.results:
            steps_html.append(_step_section(k, r, clip, cache, session, scale, frame_data))
            k += 1
    no_img = (
        ""
        if caches
        else '<p class="note">Face images are left out of this report (--no-images).</p>'
    )
    data_json = json.dumps(frame_data, separators=(",", ":")).replace("</", "<\\/")
    videos = ", ".join(Path(c.info.path).name for c in session.clips)

    def field(label: str, value: str) -> str:
        return f"<div><b>{label}</b><span>{_esc(value) if value else '—'}</span></div>"

    pbar = "".join(
        [
            field("Patient", o.patient),
            field("Visit", o.label),
            field("Date", o.date),
            field("Protocol", o.protocol.name),
            field("Video", videos + (" (mirrored)" if o.mirrored else "")),
            field("Analysed", f"{session.created} · movement {__version__}"),
        ]
    )
    if comparison_href:
        pbar += (
            f'<div><b>History</b><span><a class="cmp-link" href="{_esc(comparison_href)}">'
            "compare with this patient's other sessions</a></span></div>"
        )
    pairs_link = '<a href="#pairs">Pairs</a>' if o.protocol.pairs else ""
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}{" — " + _esc(who) if who else ""}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<header><h1>{title}</h1><div class="pbar">{pbar}</div></header>
<nav class="noprint"><a href="#summary">Summary</a><a href="#movement">Movement</a>
<a href="#midline">Midline</a><a href="#rest">At rest</a>{pairs_link}<a href="#steps">Steps</a>
<a href="#quality">Quality</a></nav>
<main>
{_checks(session)}
<section id="summary"><h2>Summary — which side pulls harder, where, by how much</h2>
<div class="legend">Seen facing the patient: <b>the patient's right is on your left</b>.
<span><i class="sw" style="background:{RIGHT_COLOUR}"></i>right dominant</span>
<span><i class="sw" style="background:{LEFT_COLOUR}"></i>left dominant</span>
<span><i class="sw" style="background:{_rgba(NEUTRAL_COLOUR, 0.5)}"></i>not dominant /
balanced</span><span><i class="sw" style="border:1px dotted {NEUTRAL_COLOUR}"></i>not usable
</span> Deeper colour = bigger difference.</div>
{_face_map(session)}
<h3>Findings</h3><ul class="findings" id="findings">{items}</ul>
<p class="note">Left and right are the patient's own sides. Values are peak minus rest, per side.
A side is dominant when it moves at least {th.min_diff_mm:g} mm more than the other and the
difference is at least {th.min_ratio:.0%} of the larger side; otherwise the step is balanced.
A call that would change were these thresholds {th.near_threshold:.0%} looser or tighter is marked
near the threshold: a repeat recording may call it the other way.
Index = (R−L)/(R+L), positive when the right pulls harder.</p></section>
<section id="movement"><h2>Movement asymmetry (peak minus rest)</h2>
{_table(_moving(session), scale, th)}
<p class="note">Bars: right side to the left of the centre line, left side to the right (as seen
facing the patient), on a common scale of {scale:.1f} mm. Rows marked low confidence or unusable
give the reason; unusable values are never listed as findings.</p></section>
{_midline_section(session)}
{_rest_section(session)}
{_pairs_section(session)}
<section id="steps"{"" if caches else ' class="noimg"'}><h2>Steps</h2>{no_img or STEPS_NOTE}
{"".join(steps_html)}</section>
{_quality(session)}
</main>
<footer>movement {__version__} · rendered from the session's records; numbers also in
asymmetry.csv, metrics.csv, midline.csv and rest.csv next to this file.</footer>
<script type="application/json" id="frame-data">{data_json}</script>
<script>{JS}</script>
</body></html>"""
    Path(path).write_text(doc, encoding="utf-8")
