"""The comparison page (``comparison.html``): a patient's sessions side by side.

:mod:`movement.clinic.compare` decides what the page says (the sessions, the
changes, the statements, the treatments) and hands over a
:class:`ComparisonPage` of plain records; this module renders it with the
``comparison.html`` template. Like the session report the page is
self-contained: plotly.js is inlined once and every figure is a
``to_html(full_html=False, include_plotlyjs=False)`` fragment, so it opens
offline and makes no network request.
"""

from __future__ import annotations

import datetime as _dt
import html
from dataclasses import dataclass, field
from typing import Any

from movement import __version__
from movement.report.htmlkit import macro, render, safe

# Same colours as the session report: blue = patient's right, orange = left.
RIGHT_COLOUR = "#1f6fb4"
LEFT_COLOUR = "#d9541e"
TREAT_COLOUR = "#6a3d9a"
CYCLE_DAYS = 120
"""A treatment cycle: toxin given longer before the first compared session than
this is not drawn on the time axis (it is still listed)."""


@dataclass(frozen=True)
class TimelineRow:
    """A session or a treatment visit on the timeline, in date order."""

    date: str
    what: str  # "session #3 (baseline)", "treatment"
    baseline: bool = False
    treatment: bool = False
    label: str = ""
    protocol: str = ""
    days: str = ""  # days since treatment
    report_href: str = ""  # the session's report, relative to the page; "" when missing
    treated: str = ""  # a treatment visit: "Botox: frontalis 6 U right / 4 U left"


@dataclass(frozen=True)
class Change:
    """One side's change from the baseline in a group table; ``text`` "" when unknown."""

    text: str = ""
    cls: str = ""  # "down", "up", "" (no change) or "same" (within the variation)
    tip: str = ""  # the rule that judged the change: within (≈) or beyond the variation


@dataclass(frozen=True)
class GroupRow:
    """One session's row of a muscle group's table."""

    date: str
    label: str
    days: str
    right: str
    left: str
    index: str
    dominant: str
    quality: str  # the quality and its reason, as shown
    cls: str  # "base", or "q-<quality>"
    changes: list[Change] | None  # None: the baseline row
    treatment: str


@dataclass(frozen=True)
class GroupTable:
    group: str  # the muscle group, as written in the "last ... treatment" column
    rows: list[GroupRow]


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class AxisSession:
    """A compared session on the figures' time axis."""

    id: int
    date: str
    label: str
    days_since_treatment: int | None


@dataclass(frozen=True)
class Injection:
    """One treatment row, drawn as a mark on the figures' time axis."""

    date: str
    muscle_group: str
    side: str
    units: float
    product: str


@dataclass(frozen=True)
class Series:
    """A muscle group's values across the compared sessions (``None``: not measured)."""

    title: str
    muscle_group: str
    measure: str
    unit: str  # what the values count, as a suffix (" mm")
    primary: bool
    right: list[float | None]
    left: list[float | None]
    quality: list[str]
    index: list[float | None]  # the asymmetry index


@dataclass(frozen=True)
class TimeAxis:
    sessions: list[AxisSession]  # by date
    treatments: list[Injection]  # all of the patient's


def _esc(x: object) -> str:
    # Plotly renders hover and tick text as HTML: free text is escaped here.
    return html.escape("" if x is None else str(x), quote=True)


def _config() -> dict[str, Any]:
    return {
        "displaylogo": False,
        "responsive": True,
        "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
    }


def fig_html(fig: Any, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=_config())


def _plotted_treatments(axis: TimeAxis) -> list[Injection]:
    """Treatments near the compared sessions: from one cycle (~4 months) before the first to
    the last. An injection years earlier would squeeze the sessions into a corner of the axis.
    """
    first = _dt.date.fromisoformat(axis.sessions[0].date) - _dt.timedelta(days=CYCLE_DAYS)
    last = axis.sessions[-1].date
    return [t for t in axis.treatments if first.isoformat() <= t.date <= last]


def _date_range(axis: TimeAxis) -> list[str]:
    dates = [_dt.date.fromisoformat(s.date) for s in axis.sessions]
    dates += [_dt.date.fromisoformat(t.date) for t in _plotted_treatments(axis)]
    lo, hi = min(dates), max(dates)
    pad = _dt.timedelta(days=max(4, (hi - lo).days * 0.06))
    return [(lo - pad).isoformat(), (hi + pad).isoformat()]


def _tick_text(s: AxisSession) -> str:
    days = "" if s.days_since_treatment is None else f"<br>day {s.days_since_treatment}"
    label = _esc(s.label) if s.label else f"#{s.id}"
    return f"{label}<br>{s.date}{days}"


def _treatment_marks(fig: Any, axis: TimeAxis, group: str | None) -> None:
    """Vertical lines at treatment dates; labelled with this group's units when it was treated."""
    shown = _plotted_treatments(axis)
    for d in sorted({t.date for t in shown}):
        # Drawn at midday: a same-day session was filmed before injecting, and
        # the marker must not hide that session's points.
        x = f"{d} 12:00"
        rows = [
            t for t in shown if t.date == d and group in (None, t.muscle_group)
        ]  # fmt: skip
        mine = bool(rows)
        fig.add_shape(
            type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1,
            line=dict(color=TREAT_COLOUR, width=2 if mine else 1, dash="dot"),
            opacity=0.9 if mine else 0.35,
        )  # fmt: skip
        if group is None:
            text = f"treated {d}"
        elif mine:
            u: dict[str, float] = {}
            for t in rows:
                u[t.side] = u.get(t.side, 0.0) + t.units
            short = {"right": "R", "left": "L", "midline": "mid"}
            text = " / ".join(f"{u[s]:g} U {short[s]}" for s in short if s in u)
            text = f"{_esc(text)}<br>{_esc(', '.join(dict.fromkeys(t.product for t in rows)))}"
        else:
            text = "other groups"
        fig.add_annotation(
            x=x, y=1.0, xref="x", yref="paper", text=text, showarrow=False, yanchor="bottom",
            font=dict(size=11, color=TREAT_COLOUR), opacity=1.0 if mine else 0.6,
        )  # fmt: skip


def _axis(fig: Any, axis: TimeAxis, ytitle: str) -> None:
    fig.update_layout(
        # A tall top margin: the treatment labels sit above the plot, below the modebar.
        height=350, margin=dict(l=60, r=20, t=72, b=70), plot_bgcolor="#fff",
        legend=dict(orientation="h", x=0, y=-0.32), hovermode="closest",
        yaxis=dict(title=ytitle, gridcolor="#e6eaee", zerolinecolor="#9aa5b1"),
        xaxis=dict(
            type="date", range=_date_range(axis), gridcolor="#eef1f4",
            tickvals=[s.date for s in axis.sessions],
            ticktext=[_tick_text(s) for s in axis.sessions],
        ),
    )  # fmt: skip


def group_figure(axis: TimeAxis, g: Series) -> Any:
    """Right and left over the session dates, treatments as vertical markers."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for side, colour, values in (("right", RIGHT_COLOUR, g.right), ("left", LEFT_COLOUR, g.left)):
        symbols, hover = [], []
        for s, v, q in zip(axis.sessions, values, g.quality, strict=True):
            symbols.append("circle-open" if q == "low" else "circle")
            days = (
                "" if s.days_since_treatment is None
                else f"<br>day {s.days_since_treatment} after treatment"
            )  # fmt: skip
            val = "not measured" if v is None else f"{v:.2f}{g.unit}"
            hover.append(f"{_esc(s.label)} {s.date}{days}<br>{side}: {val} ({_esc(q)})")
        fig.add_trace(
            go.Scatter(
                x=[s.date for s in axis.sessions], y=list(values), name=f"patient's {side}",
                mode="lines+markers", line=dict(color=colour, width=2.5),
                marker=dict(size=10, symbol=symbols, line=dict(width=2, color=colour)),
                text=hover, hovertemplate="%{text}<extra></extra>", connectgaps=False,
            )
        )  # fmt: skip
    _treatment_marks(fig, axis, g.muscle_group)
    _axis(fig, axis, "movement (mm)" if g.measure.endswith("_mm") else g.unit.strip(" ()"))
    fig.update_yaxes(rangemode="tozero")
    return fig


def index_figure(axis: TimeAxis, groups: list[Series]) -> Any:
    """Every primary group's asymmetry index over time: the whole face's balance at a glance."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for g in groups:
        if not g.primary:
            continue
        fig.add_trace(
            go.Scatter(
                x=[s.date for s in axis.sessions], y=list(g.index), name=_esc(g.title),
                mode="lines+markers", hovertemplate=f"{_esc(g.title)}: %{{y:.2f}}<extra></extra>",
            )
        )  # fmt: skip
    _treatment_marks(fig, axis, None)
    _axis(fig, axis, "asymmetry index (R−L)/(R+L)")
    fig.update_yaxes(range=[-1, 1], zeroline=True, zerolinewidth=2)
    return fig


# --------------------------------------------------------------------------- the page


@dataclass(frozen=True)
class GroupSection:
    """One measured muscle group: its statement, its values (drawn) and its table."""

    title: str
    step: str
    measure: str
    primary: bool
    statement: str
    series: Series
    table: GroupTable


@dataclass
class ComparisonPage:
    patient: str
    fields: list[tuple[str, str]]  # the patient bar
    base_date: str
    latest_date: str
    statements: list[str]
    timeline: list[TimelineRow]
    axis: TimeAxis
    groups: list[GroupSection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def group_table(table: GroupTable) -> str:
    """One group's table, as the page writes it."""
    return macro("macros.html", "group_table")(table)


def render_comparison(page: ComparisonPage, plotlyjs: str) -> str:
    """The self-contained comparison page (``plotlyjs`` inlined once, no network)."""
    return render(
        "comparison.html",
        title="Treatment comparison",
        title_suffix=f" — {page.patient}",
        fields=page.fields,
        plotlyjs=safe(plotlyjs),
        page=page,
        index_figure=fig_html(
            index_figure(page.axis, [g.series for g in page.groups]), "fig-index"
        ),
        figures=[
            fig_html(group_figure(page.axis, g.series), f"fig-g{i}")
            for i, g in enumerate(page.groups)
        ],
        version=__version__,
    )
