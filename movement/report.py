"""The HTML report: one self-contained file rendered from a finished session.

The report never recomputes the analysis; it renders the session's records.
plotly.js is inlined once; every figure is a ``to_html(full_html=False,
include_plotlyjs=False)`` fragment, so the file opens offline from a USB stick.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from movement import __version__
from movement.activation import StepResult
from movement.landmarks import FrameCache
from movement.pipeline import ClipResult, Session

RIGHT_COLOUR = "#1f6fb4"  # patient's right
LEFT_COLOUR = "#d9541e"  # patient's left
SIDE_COLOUR = {"right": RIGHT_COLOUR, "left": LEFT_COLOUR, "balanced": "#4d8f4d"}
ARROW_GAIN = 3.0
"""Displacement arrows are drawn this many times longer than the movement so
that 1-2 mm is visible on a face a few hundred pixels tall."""

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2733;
background:#f4f6f8}
header{background:#16324f;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px;font-weight:600}
header .meta{opacity:.85;font-size:13px;margin-top:4px}
main{max-width:1180px;margin:0 auto;padding:16px 32px 48px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);
padding:16px 22px;margin:16px 0}
h2{font-size:18px;margin:4px 0 12px;color:#16324f}
h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid #e3e7eb;text-align:right}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
th{background:#eef2f6;font-weight:600}
.dom-right{color:#fff;background:#1f6fb4;border-radius:4px;padding:1px 6px}
.dom-left{color:#fff;background:#d9541e;border-radius:4px;padding:1px 6px}
.dom-balanced{color:#2d5e2d;background:#dcefdc;border-radius:4px;padding:1px 6px}
.q-low{color:#8a5a00}.q-unusable,.q-missing{color:#a11}
.warn{background:#fff4e0;border-left:4px solid #e69a00;padding:8px 12px;margin:6px 0;font-size:14px}
.findings li{margin:4px 0;font-size:15px}
.frames{display:flex;gap:12px;flex-wrap:wrap}
.frames figure{margin:0}.frames img{height:260px;border-radius:6px}
.frames figcaption{font-size:12px;color:#556;text-align:center}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin-right:4px}
.note{font-size:12px;color:#556}
@media print{body{background:#fff}section{box-shadow:none;break-inside:avoid;padding:6px 0}
header{background:#fff;color:#000;border-bottom:2px solid #000}.noprint{display:none}
.frames img{height:170px}}
"""


def _fmt(v: float, nd: int = 2) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def _dom(d: str) -> str:
    if d in ("right", "left", "balanced"):
        return f'<span class="dom-{d}">{d}</span>'
    return html.escape(d)


def _nice(name: str) -> str:
    return name.replace("_", " ")


def findings(session: Session) -> list[str]:
    """Plain-language findings for the primary and secondary rows that are usable."""
    out = []
    for _, r in session.asymmetry.iterrows():
        if r["quality"] in ("unusable", "missing"):
            continue
        grp, step = _nice(r["muscle_group"]), r["step"]
        diff = abs(r["right_mm"] - r["left_mm"])
        if r["dominant_side"] in ("right", "left"):
            side = r["dominant_side"].capitalize()
            out.append(
                f"{side} {grp} pulls {diff:.1f} mm more than the other side in the {step} "
                f"(right {r['right_mm']:.1f} mm, left {r['left_mm']:.1f} mm, index "
                f"{r['asymmetry_index']:+.2f})."
            )
        elif r["primary"]:
            out.append(
                f"{grp.capitalize()} is balanced in the {step} (right {r['right_mm']:.1f} mm, "
                f"left {r['left_mm']:.1f} mm)."
            )
    for _, r in session.asymmetry.iterrows():
        if r["quality"] == "missing" and r["primary"]:
            out.append(
                f"The {r['step']} step was not found in the video; nothing is reported for it."
            )
        elif r["quality"] == "unusable" and r["primary"]:
            out.append(f"The {r['step']} value is not usable: {r['reason']}.")
    return out


def _table(df: pd.DataFrame) -> str:
    rows = []
    for _, r in df.iterrows():
        q = r["quality"]
        reason = ": " + html.escape(r["reason"]) if r["reason"] else ""
        rows.append(
            "<tr>"
            f"<td>{html.escape(r['step'])}</td><td>{html.escape(_nice(r['muscle_group']))}"
            f"{'' if r['primary'] else ' <span class=note>(secondary)</span>'}</td>"
            f"<td>{html.escape(r['measure'])}</td>"
            f"<td>{_fmt(r['right_mm'])}</td><td>{_fmt(r['left_mm'])}</td>"
            f"<td>{_fmt(r['diff_mm'])}</td><td>{_fmt(r['asymmetry_index'])}</td>"
            f"<td>{_dom(r['dominant_side'])}</td>"
            f"<td class='q-{q}'>{html.escape(q)}{reason}</td>"
            "</tr>"
        )
    return (
        "<table><tr><th>step</th><th>muscle group</th><th>measure</th><th>right mm</th>"
        "<th>left mm</th><th>R−L mm</th><th>index</th><th>dominant</th><th>quality</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _face_diagram(session: Session) -> str:
    """The patient's own neutral face (landmarks) with measured regions coloured."""
    clip = session.clips[0]
    rest = sorted({f for w in clip.windows for f in w.rest}) or list(
        np.flatnonzero(clip.traj.valid)
    )
    face = np.nanmean(clip.traj.mm[rest], axis=0)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=face[:468, 0],
            y=face[:468, 1],
            mode="markers",
            marker=dict(size=3, color="#b8c2cc"),
            hoverinfo="skip",
            showlegend=False,
        )
    )
    a = session.asymmetry
    for r in session.results:
        step = session.options.protocol.step(r.window.name)
        for g in step.groups:
            row = a[(a["step"] == step.name) & (a["muscle_group"] == g.name)]
            if row.empty:
                continue
            row = row.iloc[0]
            for side in ("right", "left"):
                pts = face[list(g.points(side) + g.lower_points(side))]
                val = row["right_mm"] if side == "right" else row["left_mm"]
                dom = row["dominant_side"]
                colour = SIDE_COLOUR[side] if dom == side else "#9aa5b1"
                size = 8 + 3 * min(abs(val), 6) if np.isfinite(val) else 6
                fig.add_trace(
                    go.Scatter(
                        x=pts[:, 0],
                        y=pts[:, 1],
                        mode="markers",
                        marker=dict(
                            size=size, color=colour, opacity=0.75, line=dict(width=1, color="#fff")
                        ),
                        name=f"{step.name}: {_nice(g.name)} {side}",
                        hovertemplate=f"{step.name} · {_nice(g.name)} · {side}: {_fmt(val)} mm"
                        f" ({dom})<extra></extra>",
                        showlegend=False,
                    )
                )
    fig.update_layout(
        height=430,
        width=380,
        margin=dict(l=10, r=10, t=30, b=10),
        plot_bgcolor="#fff",
        title=dict(text="Patient's right ◀ ▶ patient's left", font=dict(size=12), x=0.5),
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _trace_figure(r: StepResult, session: Session) -> str:
    step = session.options.protocol.step(r.window.name)
    fig = go.Figure()
    dash = {True: "solid", False: "dot"}
    for g in step.groups:
        for side in ("right", "left"):
            y = r.series[(g.name, side)]
            fig.add_trace(
                go.Scatter(
                    x=r.t,
                    y=y,
                    mode="lines",
                    line=dict(color=SIDE_COLOUR[side], dash=dash[g.primary]),
                    name=f"{_nice(g.name)} {side}",
                    customdata=r.frames,
                    hovertemplate="t %{x:.2f} s · frame %{customdata} · %{y:.2f} mm"
                    "<extra>%{fullData.name}</extra>",
                )
            )
    t = r.t
    pos = {int(f): i for i, f in enumerate(r.frames)}
    s0, s1 = t[pos[r.window.start]], t[pos[r.window.end]]
    fig.add_vrect(
        x0=s0,
        x1=s1,
        fillcolor="#16324f",
        opacity=0.07,
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
            opacity=0.10,
            line_width=0,
            annotation_text="rest",
            annotation_position="bottom left",
        )
    if np.isfinite(r.peak_t):
        fig.add_vline(x=r.peak_t, line=dict(color="#333", dash="dash", width=1))
    fig.update_layout(
        height=280,
        margin=dict(l=50, r=10, t=20, b=40),
        plot_bgcolor="#fff",
        xaxis_title="time (s)",
        yaxis_title="mm (peak minus rest)",
        legend=dict(orientation="h", y=-0.3),
        hovermode="x unified",
    )
    fig.update_xaxes(gridcolor="#eee")
    fig.update_yaxes(gridcolor="#eee", zeroline=True, zerolinecolor="#bbb")
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _frame_img(
    cache: FrameCache,
    frame: int,
    points: dict[str, np.ndarray],
    arrows_to: dict[str, np.ndarray] | None,
) -> str:
    img = cv2.cvtColor(cache.image(frame), cv2.COLOR_GRAY2BGR)
    for key, pts in points.items():
        side = key.split(":")[1]
        bgr = tuple(int(SIDE_COLOUR[side][i : i + 2], 16) for i in (5, 3, 1))
        c = cache.to_crop(pts, frame)
        for j, p in enumerate(c):
            if not np.isfinite(p).all():
                continue
            cv2.circle(img, (int(round(p[0])), int(round(p[1]))), 3, bgr, -1, cv2.LINE_AA)
            if arrows_to is not None:
                q = cache.to_crop(arrows_to[key], frame)[j]
                if np.isfinite(q).all():
                    end = p + ARROW_GAIN * (q - p)
                    cv2.arrowedLine(
                        img,
                        (int(p[0]), int(p[1])),
                        (int(end[0]), int(end[1])),
                        bgr,
                        1,
                        cv2.LINE_AA,
                        tipLength=0.3,
                    )
    h = img.shape[0]
    if h > 360:
        img = cv2.resize(img, None, fx=360 / h, fy=360 / h, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


def _step_section(
    r: StepResult, clip: ClipResult, cache: FrameCache | None, session: Session
) -> str:
    step = session.options.protocol.step(r.window.name)
    head = f"<h3>{html.escape(step.name)} — {html.escape(step.instruction)}</h3>"
    if not r.window.found:
        return (
            head + '<p class="q-missing">Not found in the video: the patient may have skipped '
            "this step, or it was too small to tell from rest. Use --cues to give its times.</p>"
        )
    a = session.asymmetry
    parts = [head, _table(a[a["step"] == step.name]), _trace_figure(r, session)]
    if r.drift_mm:
        parts.append(
            "<p>Midline drift at the peak: "
            + ", ".join(
                f"{html.escape(k)} {abs(v):.1f} mm toward the patient's "
                f"{'left' if v > 0 else 'right'}"
                for k, v in r.drift_mm.items()
            )
            + ".</p>"
        )
    if cache is not None and r.peak_frames:
        pk = r.peak_frames[len(r.peak_frames) // 2]
        rest_src = _frame_img(cache, r.window.keyframe, r.keyframe_points_px, None)
        peak_src = _frame_img(cache, pk, r.keyframe_points_px, r.peak_points_px)
        t = clip.track.t
        parts.append(
            '<div class="frames">'
            f'<figure><img src="{rest_src}" alt="rest frame"><figcaption>rest (frame '
            f"{r.window.keyframe}, {t[r.window.keyframe]:.2f} s)</figcaption></figure>"
            f'<figure><img src="{peak_src}" alt="peak frame"><figcaption>peak (frame {pk}, '
            f"{t[pk]:.2f} s); arrows ×{ARROW_GAIN:g}</figcaption></figure></div>"
        )
    for g in step.groups:
        if g.note:
            parts.append(f'<p class="note">{html.escape(_nice(g.name))}: {html.escape(g.note)}</p>')
    return "\n".join(parts)


def _quality(session: Session) -> str:
    rows = []
    for c in session.clips:
        yaw = np.degrees(np.arcsin(np.clip(c.traj.yaw_index * 1.6, -1, 1)))
        rows.append(
            f"<tr><td>{html.escape(Path(c.info.path).name)}</td><td>{c.info.width}×{c.info.height}"
            f"</td><td>{c.info.fps:.2f}</td><td>{len(c.track)}</td>"
            f"<td>{c.track.valid.mean():.0%}</td><td>{c.scale.mm_per_px:.4f}</td>"
            f"<td>{c.scale.iris_px:.1f} (±{c.scale.spread:.0%})</td>"
            f"<td>{np.nanmin(c.traj.roll_deg):.1f} … {np.nanmax(c.traj.roll_deg):.1f}</td>"
            f"<td>{np.nanmin(yaw):.0f} … {np.nanmax(yaw):.0f}</td></tr>"
        )
    return (
        "<table><tr><th>video</th><th>size</th><th>fps</th><th>frames</th><th>face tracked</th>"
        "<th>mm/px</th><th>iris px (IQR)</th><th>roll °</th><th>yaw °</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _rest_table(df: pd.DataFrame) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(_nice(r['measure']))}</td><td>{_fmt(r['right_mm'])}</td>"
        f"<td>{_fmt(r['left_mm'])}</td><td>{_fmt(r['diff_mm'])}</td>"
        f"<td>{html.escape(r['larger_side'])}</td></tr>"
        for _, r in df.iterrows()
    )
    return (
        "<table><tr><th>measure (at rest)</th><th>right mm</th><th>left mm</th><th>R−L mm</th>"
        f"<th>larger side</th></tr>{rows}</table>"
        '<p class="note">Heights are above the line through the iris centres, along the face\'s '
        "up axis; apertures are upper minus lower lid.</p>"
    )


def render_report(
    session: Session,
    path: str | Path,
    caches: list[FrameCache] | None = None,
    images: bool = True,
) -> None:
    """Write the report of ``session`` to ``path`` (one self-contained HTML file)."""
    o = session.options
    caches = caches if images and caches else []
    title = "Facial movement report"
    who = " · ".join(x for x in (o.patient and f"patient {o.patient}", o.label, o.date) if x)
    items = "".join(f"<li>{html.escape(f)}</li>" for f in findings(session))
    warns = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in session.warnings)
    steps_html = []
    for ci, clip in enumerate(session.clips):
        cache = caches[ci] if ci < len(caches) else None
        for r in clip.results:
            steps_html.append(_step_section(r, clip, cache, session))
    mid = session.midline
    mid_rows = "".join(
        f"<tr><td>{html.escape(r['step'])}</td><td>{html.escape(r['points'])}</td>"
        f"<td>{_fmt(r['drift_mm'])}</td><td>{html.escape(r['toward'])}</td></tr>"
        for _, r in mid.iterrows()
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}{" — " + html.escape(who) if who else ""}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<header><h1>{title}</h1>
<div class="meta">{html.escape(who) or "no patient given"} · protocol {html.escape(o.protocol.name)}
 · {html.escape(", ".join(Path(c.info.path).name for c in session.clips))}
 · movement {__version__} · {html.escape(session.created)}</div></header>
<main>
<section id="summary"><h2>Summary</h2>
<div style="display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start">
<div>{_face_diagram(session)}
<div class="legend"><span><i class="sw" style="background:{RIGHT_COLOUR}"></i>right dominant</span>
<span><i class="sw" style="background:{LEFT_COLOUR}"></i>left dominant</span>
<span><i class="sw" style="background:#9aa5b1"></i>not dominant</span></div></div>
<div style="flex:1;min-width:320px"><h3>Findings</h3><ul class="findings" id="findings">{items}</ul>
<p class="note">Left and right are the patient's own sides. A side is dominant when it moves
at least {o.protocol.thresholds.min_diff_mm:g} mm more than the other and the difference is at
least {o.protocol.thresholds.min_ratio:.0%} of the larger side. Index = (R−L)/(R+L).</p>
{warns}</div></div></section>
<section id="movement"><h2>Movement asymmetry (peak minus rest)</h2>
{_table(session.asymmetry)}</section>
<section id="rest"><h2>Resting asymmetry</h2>{_rest_table(session.rest)}</section>
<section id="midline"><h2>Side-to-side pull: midline drift at each step's peak</h2>
<table><tr><th>step</th><th>points</th><th>drift mm</th><th>toward patient's</th></tr>
{mid_rows}</table>
</section>
<section id="steps"><h2>Steps</h2>{"".join(steps_html)}</section>
<section id="quality"><h2>Tracking quality</h2>{_quality(session)}
<p class="note">The eee step's platysma value is the pull on the mouth corners; the neck bands
themselves lie outside the face mesh and are not measured.</p></section>
</main></body></html>"""
    Path(path).write_text(doc, encoding="utf-8")
