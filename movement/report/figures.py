"""The session report's plotly figures: the face map, the midline drift bars and
each step's left/right traces.

Each function returns a ``to_html(full_html=False, include_plotlyjs=False)``
fragment (its own ``<div>``); the page inlines plotly.js once, so the report
opens offline. The colours are the house's: the patient's right blue, left
orange, balanced green, not dominant grey.
"""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.spatial import ConvexHull, QhullError

from movement.analysis.activation import StepResult
from movement.analysis.pipeline import Session

RIGHT_COLOUR = "#1f6fb4"  # patient's right
LEFT_COLOUR = "#d9541e"  # patient's left
NEUTRAL_COLOUR = "#9aa5b1"  # not dominant / balanced
UNCERTAIN_COLOUR = "#8a6d00"  # which side dominates is uncertain: hatched, never a side's colour
SIDE_COLOUR = {"right": RIGHT_COLOUR, "left": LEFT_COLOUR, "balanced": "#4d8f4d"}
DRIFT_GAIN = 10.0
"""Midline drift arrows on the summary faces are drawn 10x: a few tenths of a
millimetre of sideways pull would otherwise not show on a whole face."""
MAP_TOP_PX, MAP_BOTTOM_PX, MAP_GAP_PX = 44, 26, 76
"""Face map: room for each face's title (above) and values (below), in pixels."""
STRONG_DIFF = 3.0
"""R-L difference (in units of the protocol's min_diff_mm) drawn at full colour
on the face map; smaller dominant differences are drawn paler."""

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


def fmt(v: float | None, nd: int = 2) -> str:
    """A value for a table or a label; an en dash for none."""
    return "–" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def nice(name: str) -> str:
    return name.replace("_", " ")


def _esc(s: object) -> str:
    # Plotly renders its annotation text as HTML: free text is escaped here.
    return html.escape(str(s))


def rgba(hex_colour: str, alpha: float) -> str:
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


def fig_html(fig: go.Figure, div_id: str, modebar: bool = False) -> str:
    return fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config=_config(modebar)
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
    """(fill, line colour, line dash) of one side's region; an uncertain call's regions
    are outlined dashed and hatched, so they read neither as a side nor as balanced."""
    q, dom = row["quality"], row["dominant_side"]
    if q in ("unusable", "missing") or dom == "undetermined":
        return "rgba(255,255,255,0)", NEUTRAL_COLOUR, "dot"
    if dom == "uncertain":
        return "rgba(255,255,255,0)", UNCERTAIN_COLOUR, "dash"
    if dom == side:
        diff = abs(row["right_mm"] - row["left_mm"])
        strength = float(np.clip(diff / (STRONG_DIFF * min_diff), 0, 1))
        colour = SIDE_COLOUR[side]
        return rgba(colour, 0.35 + 0.55 * strength), colour, "solid"
    alpha = 0.2 if dom in ("right", "left") else 0.35
    return rgba(NEUTRAL_COLOUR, alpha), NEUTRAL_COLOUR, "solid"


def _value_label(row: pd.Series) -> str:
    if row["quality"] == "missing":
        return '<span style="color:#a11">not found</span>'
    if row["quality"] == "unusable":
        return '<span style="color:#a11">unusable</span>'
    parts = []
    for side, key in (("right", "right_mm"), ("left", "left_mm")):
        txt = f"{side[0].upper()} {fmt(row[key], 1)}"
        if row["dominant_side"] == side:
            txt = f'<b><span style="color:{SIDE_COLOUR[side]}">{txt}</span></b>'
        parts.append(txt)
    label = " · ".join(parts) + " mm"
    if row["dominant_side"] == "uncertain":
        label += f' <span style="color:{UNCERTAIN_COLOUR}">(uncertain)</span>'
    if row["quality"] == "low":
        label += ' <span style="color:#8a5a00">(low)</span>'
    return label


@dataclass(frozen=True)
class FaceMap:
    """The face map's figure and what the page's script needs to keep its aspect."""

    html: str
    ratio: str  # height per width of the faces
    extra: str  # px of titles and values on top of that


def face_map(session: Session) -> FaceMap | None:
    """The patient's own rest face, once per step, each measured region coloured.

    Seen facing the patient (patient's right on the viewer's left). The
    dominant side's region is filled with its colour, stronger for a bigger
    difference; the other side and balanced regions are grey; an uncertain call's
    regions are hatched; unusable or missing values are dotted outlines.
    """
    face = _rest_face(session)
    steps = [r for r in session.results]
    if face is None or not steps:
        return None
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
    # The annotations are added in one go at the end: add_annotation re-validates all
    # those added so far each time (quadratic in their number, ~70 on a full protocol).
    notes: list[dict] = []
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
                hatch = (dict(shape="/", fgcolor=UNCERTAIN_COLOUR, size=6, solidity=0.25)
                         if line == UNCERTAIN_COLOUR else None)
                val = rr["right_mm"] if side == "right" else rr["left_mm"]
                verdict = rr["dominant_side"]
                name = (
                    f"{step.name} · {nice(g.name)} · {side}: {fmt(val)} mm "
                    f"({verdict}{'' if rr['quality'] == 'ok' else ', ' + rr['quality']})"
                )
                fig.add_trace(
                    go.Scatter(
                        x=poly[:, 0], y=poly[:, 1], mode="lines", fill="toself",
                        fillcolor=fill, fillpattern=hatch,
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
            notes.append(dict(
                x=x0 + DRIFT_GAIN * drift, y=y0, ax=x0, ay=y0, xref=xid, yref=yid,
                axref=xid, ayref=yid, showarrow=True, arrowhead=2, arrowsize=1,
                arrowwidth=2, arrowcolor=SIDE_COLOUR["left" if drift > 0 else "right"],
                text="", hovertext=(
                    f"{name} midline drift {abs(drift):.2f} mm toward the patient's "
                    f"{'left' if drift > 0 else 'right'} (arrow x{DRIFT_GAIN:g})"
                ),
            ))  # fmt: skip
        title = f"<b>{_esc(nice(step.name).capitalize())}</b>"
        sub = nice(step.primary.name)
        notes.append(dict(
            x=0, y=y_top, yshift=32, xref=xid, yref=yid, text=title, showarrow=False,
            font=dict(size=14, color="#16324f"),
        ))  # fmt: skip
        notes.append(dict(
            x=0, y=y_top, yshift=15, xref=xid, yref=yid, text=_esc(sub), showarrow=False,
            font=dict(size=11, color="#556"),
        ))  # fmt: skip
        label = _value_label(primary_row) if primary_row is not None else ""
        notes.append(dict(
            x=0, y=y_bot, yshift=-14, xref=xid, yref=yid, text=label, showarrow=False,
            font=dict(size=12, color="#333"),
        ))  # fmt: skip
        for sx, txt in ((-x_half + 2, "R"), (x_half - 2, "L")):
            notes.append(dict(
                x=sx, y=(y_top + y_bot) / 2, xref=xid, yref=yid, text=txt, showarrow=False,
                font=dict(size=11, color="#8a96a3"),
            ))  # fmt: skip
        fig.update_xaxes(
            visible=False, range=[-x_half, x_half], fixedrange=True, row=row_i, col=col_i
        )
        fig.update_yaxes(
            visible=False, range=[y_bot - 2, y_top + 2], fixedrange=True,
            scaleanchor=xid, scaleratio=1, constrain="domain", row=row_i, col=col_i,
        )  # fmt: skip
    fig.update_layout(annotations=[*fig.layout.annotations, *notes])
    fig.update_layout(
        height=height,
        margin=dict(l=12, r=12, t=MAP_TOP_PX, b=MAP_BOTTOM_PX),
        plot_bgcolor="#fff",
        paper_bgcolor="#fff",
        hovermode="closest",
    )
    # Height per width that fits the faces without blank bands (JS keeps it on resize).
    return FaceMap(fig_html(fig, "face-map"), f"{ratio:.4f}", str(extra))


# --------------------------------------------------------------------------- midline


def drift_figure(session: Session) -> str | None:
    """Midline drift per step, as seen facing the patient (toward right = to the left);
    ``None`` when no drift was measured."""
    mid = session.midline
    if mid.empty:
        return None
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
    return fig_html(fig, "midline-drift")


# --------------------------------------------------------------------------- steps


def trace_figure(r: StepResult, session: Session, div_id: str) -> str:
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
                    name=f"{side} · {nice(g.name)}",
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
    return fig_html(fig, div_id, modebar=True)

