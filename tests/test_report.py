"""The HTML report, without a browser: a small constructed session, rendered in memory.

The session is built from hand-made step results (no video, no tracking), so these
checks run in well under a second: findings wording, quality shown with the reason,
--no-images leaving every face image out, the print stylesheet, plotly.js inlined once.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from movement.analysis.activation import GroupMeasure, StepResult
from movement.analysis.asymmetry import resting_asymmetry, tables
from movement.analysis.landmarks import LandmarkTrack
from movement.analysis.pipeline import ClipResult, Options, Session
from movement.analysis.quality import StepQuality
from movement.analysis.stabilise import Scale, Trajectories
from movement.analysis.steps import StepWindow
from movement.analysis.uncertainty import Spread, value_interval
from movement.analysis.video import VideoInfo
from movement.protocol import load_protocol
from movement.report.figures import UNCERTAIN_COLOUR, face_map
from movement.report.session_page import _table, findings, render_report

FPS = 30.0
N = 300  # frames
# step: (right_mm, left_mm, flags per side) -- None: the step is missing.
CASE = {
    "frown": None,
    "raise": (2.0, 4.5, ()),
    "squint": (1.8, 1.7, ()),
    "eee": (3.0, 1.2, ("image and landmark sensors disagree by 2.7 mm",)),
    "smile": (16.2, 4.0, ("implausible: 16.2 mm exceeds 15 mm",)),
}
SPREAD = Spread(hold=0.08, fit=0.05)  # every value: 95 % interval +- 0.18 mm

RECORDING = {"squint": ("low", ("head turned 22° to the patient's left",))}


class FakeCache:
    """The part of FrameCache the report uses: grey crops and the crop transform."""

    scale = 1.0
    size = 240

    def __len__(self) -> int:
        return N

    def image(self, t: int) -> np.ndarray:
        y, x = np.mgrid[0 : self.size, 0 : self.size]
        return ((x + y + 3 * t) % 256).astype(np.uint8)

    def to_crop(self, pts: np.ndarray, t: int) -> np.ndarray:
        return np.asarray(pts, np.float32)


def _face(rng: np.random.Generator) -> np.ndarray:
    """478 points in mm (x toward the patient's left, y up) inside a face-sized ellipse."""
    a = rng.uniform(0, 2 * np.pi, 478)
    r = np.sqrt(rng.uniform(0, 1, 478))
    return np.stack([60 * r * np.cos(a), -30 + 85 * r * np.sin(a)], axis=1)


def make_session() -> tuple[Session, FakeCache]:
    proto = load_protocol("standard")
    rng = np.random.default_rng(0)
    face = _face(rng)
    t = np.arange(N) / FPS
    mm = np.repeat(face[None], N, axis=0) + rng.normal(0, 0.05, (N, 478, 2))
    traj = Trajectories(t, mm, np.zeros(N), np.zeros(N), np.ones(N))
    px = 120 + 2.0 * np.stack([face[:, 0], -face[:, 1]], axis=1)  # image px, y down
    track = LandmarkTrack(t, np.repeat(px[None], N, axis=0), np.ones(N, int))
    scale = Scale(mm_per_px=0.5, spread=0.03, iris_px=23.4, ipd_px=124.0, ipd_mm=62.0,
                  frames_used=N)  # fmt: skip
    windows, results = [], []
    for k, step in enumerate(proto.steps):
        case = CASE[step.name]
        if case is None:
            w = StepWindow(step.name, found=False)
            windows.append(w)
            results.append(StepResult(w))
            continue
        s0 = 20 + 55 * k
        w = StepWindow(step.name, True, start=s0 + 15, peak=s0 + 30, end=s0 + 45,
                       rest=tuple(range(s0, s0 + 10)), keyframe=s0 + 5)  # fmt: skip
        frames = np.arange(s0, s0 + 46)
        bump = np.clip(1 - np.abs(frames - (s0 + 30)) / 15, 0, 1)
        right, left, flags = case
        g = step.primary
        res = StepResult(
            w, peak_frames=tuple(range(s0 + 28, s0 + 33)), t=t[frames], frames=frames,
            series={(g.name, "right"): right * bump, (g.name, "left"): left * bump},
            drift_mm={"mouth": 0.2 * (k - 2), "chin": -0.1}, head_inliers=20.0,
        )  # fmt: skip
        for side, v in (("right", right), ("left", left)):
            res.measures.append(
                GroupMeasure(step.name, g.name, g.measure, g.kind, g.sensor, True, side,
                             v, 0.0, v, v, flags, (), SPREAD,
                             *value_interval(v, SPREAD))  # fmt: skip
            )
            pts = list(g.points(side) + g.lower_points(side))
            res.keyframe_points_px[f"{g.name}:{side}"] = px[pts]
            res.peak_points_px[f"{g.name}:{side}"] = px[pts] + 2.0
        windows.append(w)
        results.append(res)
    rest = resting_asymmetry(traj, proto, np.arange(0, 20))
    info = VideoInfo("consult.mp4", 640, 480, FPS, N, 0, "h264", False)
    quality = [
        StepQuality(
            step=w.name, verdict=RECORDING.get(w.name, ("ok", ()))[0],
            reasons=RECORDING.get(w.name, ("ok", ()))[1],
            instruction=f"re-record '{w.name}': head turned 22° to the patient's left; face the "
            "camera" if w.name in RECORDING else "",
            face_tracked=1.0, yaw_deg=(0.0, 22.0), roll_deg=(0.0, 0.0), px_per_mm=2.0,
            brightness=120.0, sharpness_ratio=1.0, rest_before=True,
        )
        for w in windows
    ]  # fmt: skip
    warnings = ["step 'frown' not found in consult.mp4"]
    warnings += [q.instruction for q in quality if q.verdict in ("low", "unusable")]
    clip = ClipResult(
        info=info, sha256="0" * 64, track=track, scale=scale, traj=traj, windows=windows,
        results=results, rest_table=rest, quality=quality, warnings=warnings,
    )  # fmt: skip
    recording = {q.step: (q.verdict, q.reason) for q in quality}
    asym, metr, mid = tables(results, proto, recording)
    session = Session(
        options=Options(protocol=proto, patient="p<1>", label="2-week", date="2026-12-11"),
        clips=[clip], asymmetry=asym, metrics=metr, midline=mid, rest=rest,
        warnings=list(clip.warnings), created="2026-12-11T10:00:00+00:00",
    )  # fmt: skip
    return session, FakeCache()


@pytest.fixture(scope="module")
def built():
    return make_session()


@pytest.fixture(scope="module")
def page(built, tmp_path_factory) -> str:
    session, cache = built
    path = tmp_path_factory.mktemp("report") / "report.html"
    render_report(session, path, caches=[cache])
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def page_no_images(built, tmp_path_factory) -> str:
    session, cache = built
    path = tmp_path_factory.mktemp("report") / "report.html"
    render_report(session, path, caches=[cache], images=False)
    return path.read_text(encoding="utf-8")


def _without_plotly(doc: str) -> str:
    js = get_plotlyjs()
    assert doc.count(js) == 1
    return doc.replace(js, "")


def test_findings_name_side_group_and_millimetres(built):
    f = findings(built[0])
    text = "\n".join(f)
    assert "Left frontalis pulls 2.5 mm more than the right in the raise" in text
    # The difference's 95 % interval, then the sides (SPREAD: +- 0.18 mm per side).
    assert "(2.2–2.8 mm at 95 %; right 2.0 mm, left 4.5 mm, index -0.38)" in text
    assert ("Orbicularis oculi is balanced in the squint (right 1.8 mm, left 1.7 mm; "
            "right − left -0.2 to 0.4 mm at 95 %).") in text
    assert "Low confidence: head turned 22° to the patient&#x27;s left" not in text  # plain
    assert "Low confidence: head turned 22° to the patient's left." in text
    eee = next(x for x in f if "platysma" in x)
    assert eee.startswith("Right platysma pulls 1.8 mm more than the left in the eee")
    assert "Low confidence: image and landmark sensors disagree by 2.7 mm." in eee
    # Unusable and missing values are never findings, only said to be absent.
    assert not any("zygomaticus pulls" in x for x in f)
    assert "The smile value is not usable: implausible: 16.2 mm exceeds 15 mm." in f
    assert "The frown step was not found in the video; nothing is reported for it." in f


def test_face_map_annotations_as_added_one_at_a_time(built, monkeypatch):
    """The map sets its annotations in one go (add_annotation is quadratic in their
    number); the figure is the one that adding them one at a time builds."""
    import plotly.graph_objects as go

    from movement.report import figures

    made: list[go.Figure] = []
    real = figures.fig_html
    monkeypatch.setattr(figures, "fig_html", lambda fig, *a, **k: (made.append(fig),
                                                                   real(fig, *a, **k))[1])
    face_map(built[0])
    fig = made[0]
    notes = [a.to_plotly_json() for a in fig.layout.annotations]
    assert len(notes) > 20 and any(n.get("showarrow") for n in notes)
    one_by_one = go.Figure(fig)
    one_by_one.layout.annotations = ()
    for n in notes:
        one_by_one.add_annotation(**n)
    assert one_by_one.to_plotly_json() == fig.to_plotly_json()


def test_an_uncertain_call_says_why_with_its_interval(built):
    session = built[0]
    a = session.asymmetry.copy()
    sq = (a["step"] == "squint") & a["primary"]
    a.loc[sq, ["right_mm", "left_mm", "diff_mm", "diff_lo", "diff_hi"]] = [
        1.566, 0.569, 0.997, 0.6, 1.4]
    a.loc[sq, ["right_lo", "right_hi", "left_lo", "left_hi"]] = [1.3, 1.8, 0.3, 0.8]
    a.loc[sq, "dominant_side"] = "uncertain"
    a.loc[sq, "call_reason"] = ("right - left +0.6 to +1.4 mm: only part of it meets the rule; "
                                "the interval is widest from the left orbicularis oculi "
                                "followed on 3 of 4 points")
    unsure = dataclasses.replace(session, asymmetry=a)
    text = next(x for x in findings(unsure) if "orbicularis oculi" in x.lower())
    assert text.startswith(
        "Orbicularis oculi in the squint: which side dominates is uncertain (the right reads "
        "1.0 mm more, 0.6–1.4 mm at 95 %; a side dominates from 1 mm and 20%; right 1.6 mm, "
        "left 0.6 mm); most of the doubt comes from the left orbicularis oculi followed on 3 "
        "of 4 points.")
    th = session.options.protocol.thresholds
    table = _table(a[sq], 5.0, th)
    assert "dom-uncertain" in table and "1.3–1.8" in table and "0.3–0.8" in table
    # Clear calls carry their interval and no doubt.
    assert not any("uncertain" in x for x in findings(session))
    # The summary faces hatch an uncertain call's regions (neither a side's colour nor
    # balanced grey) and say so under the face; the clear calls keep their fills.
    unsure_map = face_map(unsure).html
    assert "(uncertain)" in unsure_map and "(uncertain)" not in face_map(session).html
    hatched = [tr for tr in re.findall(r'"fillpattern":\{[^}]*\}', unsure_map)
               if UNCERTAIN_COLOUR in tr]
    assert len(hatched) == 2, hatched  # the squint's primary group, right and left


def test_bars_carry_each_sides_interval_as_an_error_bar(built):
    session = built[0]
    table = _table(session.asymmetry, 5.0, session.options.protocol.thresholds)
    r = session.asymmetry[(session.asymmetry["step"] == "raise")
                          & session.asymmetry["primary"]].iloc[0]
    lo = 100 * r["right_lo"] / 5.0
    width = 100 * (r["right_hi"] - r["right_lo"]) / 5.0
    assert f'class="eb" style="right:{lo:.1f}%;width:{width:.1f}%"' in table


def test_findings_list_is_in_the_summary(page):
    m = re.search(r'<ul class="findings" id="findings">(.*?)</ul>', page, re.S)
    assert m, "findings list missing"
    items = re.findall(r"<li>(.*?)</li>", m.group(1), re.S)
    assert len(items) == len(findings(make_session()[0]))
    assert any(x.startswith("Left frontalis pulls") for x in items)
    assert page.index('id="summary"') < page.index('id="findings"') < page.index('id="steps"')


def test_quality_and_warnings_shown_near_the_top_with_reasons(page):
    checks = re.search(r'<div class="checks" id="checks">(.*?)</div>\s*<section', page, re.S)
    assert checks, "checks block missing"
    block = checks.group(1)
    assert page.index('id="checks"') < page.index('id="summary"')
    assert "step &#x27;frown&#x27; not found" not in block  # said once, as missing, below
    assert "frown: missing" in block
    assert "eee · platysma: low confidence" in block
    assert "image and landmark sensors disagree by 2.7 mm" in block
    assert "smile · zygomaticus: unusable" in block and "16.2 mm exceeds 15 mm" in block
    assert "re-record &#x27;squint&#x27;: head turned 22°" in block  # recording instruction
    card = page[page.index('id="step-2"') : page.index('id="step-3"')]
    assert "Recording low confidence" in card and "face the camera" in card
    # ... and in the tables, row by row.
    assert page.count('class="row-unusable"') >= 1 and page.count('class="row-low"') >= 1
    assert page.count('class="row-missing"') >= 1


def test_patient_text_is_escaped(page):
    assert "p&lt;1&gt;" in page and "p<1>" not in page


def test_no_images_leaves_every_face_image_out(page, page_no_images):
    assert "data:image/jpeg" in _without_plotly(page)  # frames and thumbnails when asked
    rest = _without_plotly(page_no_images)
    assert "data:image" not in rest
    assert "<img" not in rest
    assert 'id="face-map"' in rest  # the landmark drawing stays
    assert "Face images are left out" in rest


def test_plotly_inlined_once_and_no_network_reference(page):
    head = get_plotlyjs()[:40]
    assert page.count(head) == 1
    rest = _without_plotly(page)
    assert not re.search(r"<script[^>]+src=", rest)
    assert "<link" not in rest
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", rest)


def test_every_plot_is_a_fragment_with_its_own_div(page):
    ids = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', page)
    assert ids[:2] == ["face-map", "midline-drift"]
    assert [i for i in ids if i.startswith("trace-")] == ["trace-1", "trace-2", "trace-3",
                                                          "trace-4"]  # fmt: skip


def test_frame_viewer_data_matches_the_traces(page):
    m = re.search(r'<script type="application/json" id="frame-data">(.*?)</script>', page, re.S)
    import json

    data = json.loads(m.group(1))
    assert [d["plot"] for d in data] == ["trace-1", "trace-2", "trace-3", "trace-4"]
    for d in data:
        assert len(d["frames"]) == len(d["t"]) == len(d["src"]) > 5
        assert all(s.startswith("data:image/jpeg;base64,") for s in d["src"])
        assert np.all(np.diff(d["t"]) > 0)
        assert f'id="{d["img"]}"' in page
    assert "plotly_hover" in page and "plotly_click" in page


def test_print_stylesheet(page):
    m = re.search(r"@media print\{(.*)\n\}", page, re.S)
    assert m, "no print stylesheet"
    css = m.group(1)
    assert "@page" in css
    for hidden in (".noprint", ".viewer", ".trace-row", ".modebar-container"):
        assert hidden in css.split("display:none")[0], hidden
    assert "break-before:page" in css
    assert "beforeprint" in page  # plots are fitted to the paper width


def test_a_resting_row_marked_for_the_pose_says_so_beside_it(built):
    """The resting table shows a row's quality and reason when the head at rest was
    turned (asymmetry.rest_rows), and nothing for rows read facing the camera."""
    import dataclasses

    import pandas as pd

    from movement.analysis.asymmetry import rest_rows
    from movement.report.session_page import _rest_rows

    session = built[0]
    proto = session.options.protocol
    facing = dataclasses.replace(session, asymmetry=pd.concat(
        [rest_rows(session.rest, proto, 2.0), session.asymmetry], ignore_index=True))
    assert all(r["mark"] == "" for r in _rest_rows(facing))
    turned = dataclasses.replace(session, asymmetry=pd.concat(
        [rest_rows(session.rest, proto, -14.0), session.asymmetry], ignore_index=True))
    marks = {r["measure"]: r["mark"] for r in _rest_rows(turned)}
    assert all(m.startswith("low: head turned 14° at rest") for m in marks.values())
    assert any("right jaw contour is the face's outline" in m for m in marks.values())
