"""Stage 6 — muscle-group activation per side: peak minus rest, in mm.

For each found step, the image tracker follows the step's points from its own
rest keyframe; each muscle group's value per side is then the protocol's
measurement kind, relative to the mean rest position. The step's peak is the
short window where the primary group moves most (mean of both sides, so a
weak side does not move the peak). Skin groups use the image tracker; eyelids
use the landmark model (texture tracking loses a lid when it closes), and each
value is cross-checked against the other sensor and against physiology.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.ndimage import median_filter, uniform_filter1d

from movement.analysis.creases import (
    CreaseChange,
    CreaseReading,
    LineFrame,
    line_flags,
    read_region,
    step_lines,
)
from movement.analysis.face import (
    IRIS_DIAMETER_MM,
    iris_diameter_px,
    measure_series,
    outline_tangents,
)
from movement.analysis.imagetrack import FIT_MAX_ERROR_MM, WindowTrack, track_window
from movement.analysis.landmarks import FrameCache, LandmarkTrack
from movement.analysis.pose import StepPose, correct_window, group_factors
from movement.analysis.stabilise import Scale
from movement.analysis.steps import StepWindow
from movement.analysis.uncertainty import (
    POSE_DOUBT,
    Spread,
    value_interval,
    value_spread,
)
from movement.protocol import CreaseRegion, MuscleGroup, Protocol, Step

SIDES = ("right", "left")
PEAK_FRACTION = 0.9
PEAK_HALF_WIDTH_S = 0.15
PRIMARY_LOST_OWN_HOLDS = 0.1
"""Fraction of a step's frames with the primary lost (on either side) beyond which
the step's other groups are read at their own holds (see group_holds)."""
PRIMARY_TRACKED_MIN = 0.25
"""Fraction of a step's frames below which a primary tracked in them is not read at
all ("points lost through the step", unusable): read where it was tracked, its value
came from a frame or two, and which ones was decided by codec noise (the real clip's
crying frown, tracked in 4-10 % of its window, read 3.03 / 5.18 mm as recorded and
4.55 / 2.46 re-encoded)."""
CLOSED_FRACTION = 0.35
"""A hybrid eyelid reading uses the landmark model once the landmark aperture at
the peak falls below this fraction of rest: the lid then covers the texture the
image tracker follows (a real wink read "balanced" by texture tracking)."""


@dataclass(frozen=True)
class GroupMeasure:
    """One muscle group on one side in one step."""

    step: str
    muscle_group: str
    measure: str
    kind: str
    sensor: str
    primary: bool
    side: str
    activation_mm: float  # peak minus rest (positive: the muscle pulls)
    rest_mm: float  # level at rest (aperture, height above the iris line, or 0)
    peak_mm: float  # level at the peak
    check_mm: float  # the same activation read by the other sensor
    flags: tuple[str, ...] = ()
    # Frames the value was averaged over: the step's peak, or the group's own hold
    # (see group_holds); empty for range measures and counts (the whole step).
    peak_frames: tuple[int, ...] = ()
    # The parts of the value's uncertainty (movement.analysis.uncertainty); None for
    # counts, which are not read with an interval.
    spread: Spread | None = None
    # The value's 95 % interval (NaN without one: counts, a value not read).
    lo: float = float("nan")
    hi: float = float("nan")


@dataclass(frozen=True, eq=False)
class LineReading:
    """A step's dynamic lines in one region on one side, with what the report draws."""

    region: str
    side: str
    change: CreaseChange  # value = fold contrast the step adds (%), see movement.analysis.creases
    peak_frame: int  # the middle peak frame, whose response is drawn
    peak: CreaseReading
    rest_frame: int  # the rest keyframe, drawn beside it
    rest: CreaseReading
    # The index's 95 % interval from the rest and peak frames' spread, and those
    # frames' standard errors (movement.analysis.uncertainty.crease_interval).
    lo: float = float("nan")
    hi: float = float("nan")
    rest_se: float = float("nan")
    peak_se: float = float("nan")


@dataclass
class StepResult:
    """Everything measured in one step, for the outputs and the report."""

    window: StepWindow
    peak_frames: tuple[int, ...] = ()
    t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    series: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    measures: list[GroupMeasure] = field(default_factory=list)
    drift_mm: dict[str, float] = field(default_factory=dict)  # + = toward patient's left
    # Mean displacement at the peak of each "group:side" (and "group:side:lower"
    # for the lower lid), in mm in the face frame (x toward the patient's left,
    # y up), from the sensor the value was read with: the direction of pull.
    displacement_mm: dict[str, np.ndarray] = field(default_factory=dict)
    keyframe_points_px: dict[str, np.ndarray] = field(default_factory=dict)
    peak_points_px: dict[str, np.ndarray] = field(default_factory=dict)
    head_inliers: float = 0.0
    lost_fraction: float = 0.0
    lines: list[LineReading] = field(default_factory=list)
    # The head's pose over the step and the face-on correction (movement.analysis.pose);
    # None when the landmarks hold no depth or the correction is off.
    pose: StepPose | None = None

    @property
    def peak_t(self) -> float:
        return self.time_of(self.peak_frames)

    def time_of(self, frames: tuple[int, ...]) -> float:
        """Mean time (s) of ``frames`` (NaN when there are none)."""
        if not frames:
            return float("nan")
        pos = np.searchsorted(self.frames, frames)
        return float(np.mean(self.t[pos]))


def _level(pos: np.ndarray, g: MuscleGroup, side: str, cols: dict[int, int]) -> np.ndarray:
    """The group's level (not relative to rest) over time."""
    up = np.array([cols[i] for i in g.points(side)])
    if g.kind in ("aperture", "opening"):
        low = np.array([cols[i] for i in g.lower_points(side)])
        return pos[:, up, 1].mean(1) - pos[:, low, 1].mean(1)
    if g.kind in ("up", "down"):
        return pos[:, up, 1].mean(1)
    if g.kind in ("medial", "lateral"):
        # Distance from the midline between the irises (x = 0 in the face frame).
        return np.abs(pos[:, up, 0].mean(1))
    return np.zeros(len(pos))


def _series(pos: np.ndarray, rest: np.ndarray, g: MuscleGroup, side: str, cols: dict[int, int]):
    c = np.array([cols[i] for i in g.points(side)])
    low = np.array([cols[i] for i in g.lower_points(side)]) if g.lower_points(side) else None
    return measure_series(pos, rest, g.kind, c, low, side)


def _peak_window(v: np.ndarray, lo: int, hi: int, fps: float) -> np.ndarray:
    """Frames (positions in v) of the peak.

    The peak is the run of frames around the maximum that stay within 90 % of
    it (relative to rest, 0) after smoothing. Its time is the middle of the
    movement at half height (kept within the run), and the value is averaged
    over +-0.15 s around it within the run, so a held expression is read in
    the middle of the hold rather than at a noise spike on its edge.
    """
    seg = v[lo : hi + 1]
    ok = np.isfinite(seg)
    if not ok.any():
        return np.array([], int)
    # A tracking spike must not decide where the hold is.
    seg = np.where(ok, _smooth(seg, fps, 0.2), -np.inf)
    p = int(np.argmax(seg))
    top = seg[p]
    a, b = _run_around(seg, p, PEAK_FRACTION * top if top > 0 else top)
    # The hold's middle is where the movement's half-height flanks centre: they are
    # steep, so noise or a slow drift moves them little, while on the flat top
    # a drift of a tenth of a millimetre decides where the maximum is.
    if top > 0:
        lo_half, hi_half = _run_around(seg, p, 0.5 * top)
        centre = int(np.clip((lo_half + hi_half) // 2, a, b))
    else:
        centre = (a + b) // 2
    half = max(int(round(PEAK_HALF_WIDTH_S * fps)), 0)
    return np.arange(max(a, centre - half), min(b, centre + half) + 1) + lo


def primary_lost(
    step: Step, series: dict[tuple[str, str], np.ndarray], lo: int, hi: int
) -> float:
    """Fraction of the frames ``lo..hi`` in which the primary is lost on either side."""
    span = np.stack([series[(step.primary.name, s)][lo : hi + 1] for s in SIDES])
    return float(np.mean(~np.isfinite(span).all(axis=0)))


def group_holds(
    step: Step,
    series: dict[tuple[str, str], np.ndarray],
    lo: int,
    hi: int,
    fps: float,
    own: bool,
) -> dict[str, np.ndarray]:
    """The frames (positions in the series) each group of ``step`` is read at.

    The step's hold is the primary's (:func:`_peak_window` on the mean of its sides
    between ``lo`` and ``hi``), and every group is read there -- unless the primary's
    points are lost (on either side) in more than PRIMARY_LOST_OWN_HOLDS of those
    frames (``own``; :func:`primary_lost`). Its hold is then found among the frames
    it still has, which need not be the expression's (measured: a pout's untextured
    chin lost from the top of its ramp; the mouth corners read at the chin's last
    frames gave 1.54 of 3.07 mm), and the other groups are read at their own holds.
    Not otherwise: a group that barely moves has no hold of its own, and the maximum
    of its noise would read high (measured +0.1-0.3 mm on the benchmark's small
    secondary groups).
    """

    def hold(name: str) -> np.ndarray:
        both = _mean(np.stack([series[(name, s)] for s in SIDES]), axis=0)
        return _peak_window(both, lo, hi, fps)

    prim = step.primary.name
    peak = hold(prim)
    holds = {}
    for g in step.groups:
        h = hold(g.name) if own and g.name != prim else peak
        holds[g.name] = h if len(h) else peak
    return holds


def step_hold(
    step: Step,
    series: dict[tuple[str, str], np.ndarray],
    holds: dict[str, np.ndarray],
    own: bool,
) -> np.ndarray:
    """The step's peak frames (its time, the frames drawn and the lines' peak).

    The primary's hold; but where the primary was lost in more than
    PRIMARY_LOST_OWN_HOLDS of the step (``own``, as for :func:`group_holds`) its hold
    is where it was still tracked, and the expression's moment is better told by the
    other group that moves most, at its own hold (measured: a pout timed by its
    untextured chin 0.65 s early, by its mouth corners within 0.1 s). The primary's
    value stays read at its own frames (see group_holds).
    """
    prim = step.primary.name
    if not own:
        return holds[prim]
    sizes = {}
    for g in step.groups:
        if g.name != prim:
            # _mean, not np.nanmean: a group lost on both sides is NaN without a
            # numpy warning on the clinician's terminal.
            v = float(_mean(np.array([_mean(series[(g.name, s)][holds[g.name]]) for s in SIDES])))
            sizes[g.name] = v if np.isfinite(v) else -np.inf
    best = max(sizes, key=sizes.__getitem__, default=None)
    if best is None or not sizes[best] > 0:
        return holds[prim]
    return holds[best]


def _run_around(seg: np.ndarray, p: int, level: float) -> tuple[int, int]:
    """First and last index of the run of ``seg`` around ``p`` that stays >= ``level``."""
    a = b = p
    while a > 0 and seg[a - 1] >= level:
        a -= 1
    while b < len(seg) - 1 and seg[b + 1] >= level:
        b += 1
    return a, b


def _hybrid_choice(
    image_series: np.ndarray, landmark_aperture: np.ndarray, rest: np.ndarray, step: np.ndarray
) -> str:
    """Image tracker for a lid that stays open; landmarks once it closes or is lost."""
    ap_rest = _mean(landmark_aperture[rest])
    ap_min = (
        np.nanmin(landmark_aperture[step]) if np.isfinite(landmark_aperture[step]).any() else np.nan
    )
    if not np.isfinite(ap_rest) or ap_rest <= 0:
        return "landmarks"
    if np.isfinite(ap_min) and ap_min < CLOSED_FRACTION * ap_rest:
        return "landmarks"
    if np.isnan(image_series[step]).mean() > 0.2:
        return "landmarks"
    return "image"


def _outward(step: Step, key_xy: np.ndarray) -> dict[int, np.ndarray]:
    """Skin-side directions for the points of groups with ``half_ring`` set.

    Eyelid margins and mouth corners border an opening whose contents (the
    eyeball, the teeth) do not move with them; they are followed by the
    half-ring of sub-points on the skin side. For an eyelid that is the
    vertical away from the eye's centre; for a one-point-per-side group (a
    mouth corner), away from the midpoint between the two sides.
    """
    out: dict[int, np.ndarray] = {}
    for g in step.groups:
        if not g.half_ring or g.sensor == "landmarks":
            continue
        for side in SIDES:
            pts = list(g.points(side) + g.lower_points(side))
            if g.kind == "aperture":
                centre = key_xy[pts].mean(axis=0)
                for p in pts:
                    out[p] = np.array([0.0, np.sign(key_xy[p, 1] - centre[1]) or 1.0])
            elif g.kind == "opening":
                # A lip: its inner margin borders the mouth, the lip lies toward
                # the outer border; the outer border has skin on both sides.
                lower = key_xy[list(g.lower_points(side))].mean(axis=0)
                for p in g.points(side):
                    v = lower - key_xy[p]
                    out[p] = v / (np.linalg.norm(v) or 1.0)
            elif len(pts) == 1:
                centre = key_xy[list(g.right + g.left)].mean(axis=0)
                v = key_xy[pts[0]] - centre
                out[pts[0]] = v / (np.linalg.norm(v) or 1.0)
            elif g.kind in ("medial", "lateral"):
                # A face contour: the skin lies toward the midline, the
                # background (which does not move with it) away from it.
                centre = key_xy[list(g.right + g.left)].mean(axis=0)
                for p in pts:
                    v = centre - key_xy[p]
                    out[p] = v / (np.linalg.norm(v) or 1.0)
    return out


COUNT_MIN_RANGE_MM = 1.0
"""Below this dynamic range, tracking noise (~0.05-0.1 mm on smooth skin) is a
sizeable part of each excursion and counts went wrong by half in the benchmark;
such a count is marked unusable rather than reported."""

RANGE_PERCENTILE = 95
"""A repeated movement (speech) is read as the 95th percentile of the side's
displacement over the whole step: its dynamic range, robust to one spike."""


def count_movements(x: np.ndarray, top: float, min_mm: float = 0.3) -> int:
    """Distinct excursions in a repeated movement: peaks reaching half of ``top``
    that stand out from their neighbours by 40 % of it (prominence), so a slow
    drift or noise on a plateau does not count. A side moving less than
    ``min_mm`` makes none."""
    if not np.isfinite(top) or top < min_mm:
        return 0
    v = x[np.isfinite(x)]
    return sum(1 for i in local_maxima(v)
               if v[i] >= 0.5 * top and prominence(v, i) >= 0.4 * top)


def local_maxima(v: np.ndarray) -> list[int]:
    """Indices of the local maxima of ``v``; a flat top counts once, at its middle
    (rounded down), and neither end of ``v`` is a maximum -- SciPy's ``find_peaks``
    convention, without importing ``scipy.signal`` (1-2 s at start-up)."""
    out: list[int] = []
    i, n = 1, len(v)
    while i < n - 1:
        if v[i - 1] < v[i]:
            j = i
            while j + 1 < n - 1 and v[j + 1] == v[i]:
                j += 1
            if v[j + 1] < v[i]:
                out.append((i + j) // 2)
            i = j
        i += 1
    return out


def prominence(v: np.ndarray, i: int) -> float:
    """How far peak ``i`` stands above the higher of the lowest points between it and
    the nearest higher sample (or the end) on either side."""
    left = i
    while left > 0 and v[left - 1] <= v[i]:
        left -= 1
    right = i
    while right < len(v) - 1 and v[right + 1] <= v[i]:
        right += 1
    return float(v[i] - max(v[left : i + 1].min(), v[i : right + 1].min()))


def measure_step(
    step: Step,
    win: StepWindow,
    protocol: Protocol,
    track: LandmarkTrack,
    cache: FrameCache,
    scale: Scale,
    fps: float,
    key_xy: np.ndarray | None = None,
) -> StepResult:
    """Measure every muscle group of one found step.

    ``key_xy`` (478, 2) places the image-tracked points on the keyframe
    (``landmarks.keyframe_landmarks``); the tracking pass's landmarks when None.
    """
    if not win.found or win.keyframe < 0:
        return StepResult(win)
    if key_xy is None:
        key_xy = track.xy[win.keyframe]
    midline = tuple(p for pts in protocol.midline.values() for p in pts)
    image_pts = tuple(
        dict.fromkeys(p for g in step.groups if g.sensor != "landmarks" for p in g.all_points)
    )
    # The rest frames (and the keyframe among them) may come from after the step
    # (steps.choose_rest): the tracked span holds them wherever they are.
    first, last = win.span
    outward = _outward(step, key_xy)
    wt: WindowTrack = track_window(
        cache,
        track,
        scale,
        first,
        last,
        win.keyframe,
        image_pts + midline,
        protocol.anchor_points(step),
        outward=outward,
        affine=tuple(
            p for g in step.groups if g.affine and g.sensor != "landmarks" for p in g.all_points
        ),
        # Not the lids: their motion changes steeply across the margin, which one
        # local affine motion does not describe (measured: the squint's bias went
        # from -0.05 to -0.10 mm with them fitted).
        fit=tuple(
            p for g in step.groups if g.kind != "aperture" for p in g.all_points if p in outward
        ),
        outline=outline_tangents(
            [g.points(s) for g in step.groups if g.outline and g.sensor != "landmarks"
             for s in SIDES],
            key_xy,
        ),
        key_xy=key_xy,
    )
    # Face-on positions: what the head's pose did to the image reading is undone
    # (movement.analysis.pose); wt's positions are replaced in place.
    # (Outline groups are read as the outline's widening: their points are edge-on
    # by nature, and are read as imaged.)
    step_pose = correct_window(wt, track, win.rest, protocol.anchor_points(step),
                               tuple(p for g in step.groups if not g.outline
                                     for p in g.all_points), first, key_xy)
    # Frames whose head fit is too uncertain are left unmeasured only now: the pose
    # stage fits a turning head's anchors with the turn modelled, which the
    # tracker's flat similarity cannot (pose.turn_fit_errors).
    wt.drop_unfit(FIT_MAX_ERROR_MM)
    rest_pos = np.asarray(win.rest) - first
    img_cols = {int(p): i for i, p in enumerate(wt.points)}
    lm_cols = {i: i for i in range(478)}
    img_rest = _mean(wt.image_mm[rest_pos], axis=0)
    lm_rest = _mean(wt.landmarks_mm[rest_pos], axis=0)

    def sensor_series(g: MuscleGroup, side: str, sensor: str) -> np.ndarray:
        if sensor == "image":
            return _series(wt.image_mm, img_rest, g, side, img_cols)
        return _series(wt.landmarks_mm, lm_rest, g, side, lm_cols)

    series = {}
    used: dict[tuple[str, str], str] = {}
    for g in step.groups:
        for side in SIDES:
            sensor = g.sensor
            if sensor == "hybrid":
                sensor = _hybrid_choice(
                    sensor_series(g, side, "image"),
                    _level(wt.landmarks_mm, g, side, lm_cols),
                    rest_pos,
                    np.arange(win.start - first, win.end - first + 1),
                )
            used[(g.name, side)] = sensor
            series[(g.name, side)] = sensor_series(g, side, sensor)
    lost_prim = primary_lost(step, series, win.start - first, win.end - first)
    own = lost_prim > PRIMARY_LOST_OWN_HOLDS
    holds = group_holds(step, series, win.start - first, win.end - first, fps, own)
    peak = step_hold(step, series, holds, own)
    res = StepResult(
        win,
        tuple(int(wt.frames[i]) for i in peak),
        track.t[wt.frames],
        wt.frames,
        series,
        head_inliers=float(np.mean(wt.inliers[peak])) if len(peak) else 0.0,
        pose=step_pose,
    )
    if len(peak) == 0:
        return res
    pl = protocol.plausibility
    seg = slice(win.start - first, win.end - first + 1)
    lost = np.isnan(wt.image_mm[peak]).any(axis=2).mean() if image_pts else 0.0
    res.lost_fraction = float(lost)
    for g in step.groups:
        gpk = holds[g.name]
        for side in SIDES:
            sensor = used[(g.name, side)]
            other = "landmarks" if sensor == "image" else "image"
            check = float("nan")
            has_check = other == "landmarks" or all(p in img_cols for p in g.all_points)
            if step.mode == "range":
                act = _range(series[(g.name, side)][seg])
                if has_check:
                    check = _range(sensor_series(g, side, other)[seg])
            else:
                act = _mean(series[(g.name, side)][gpk])
                if has_check:
                    check = _mean(sensor_series(g, side, other)[gpk])
            pos, cols = (wt.image_mm, img_cols) if sensor == "image" else (wt.landmarks_mm, lm_cols)
            lvl = _level(pos, g, side, cols)
            flags = []
            if not np.isfinite(act):
                flags.append("points lost at the peak")
            elif g.primary and 1 - lost_prim < PRIMARY_TRACKED_MIN:
                flags.append(f"points lost through the step (tracked in only "
                             f"{1 - lost_prim:.0%} of it)")
            elif g.kind == "aperture" and act < pl.min_aperture_change_mm:
                flags.append(f"implausible: eye opened {-act:.1f} mm wider instead of narrowing")
            elif g.kind not in ("length", "aperture") and act < pl.min_aperture_change_mm:
                flags.append(f"implausible: moved {-act:.1f} mm the wrong way")
            elif abs(act) > pl.max_displacement_mm:
                flags.append(f"implausible: {act:.1f} mm exceeds {pl.max_displacement_mm:g} mm")
            limit = pl.max_sensor_disagreement_mm if g.cross_check_mm is None else g.cross_check_mm
            if np.isfinite(check) and np.isfinite(act) and abs(act - check) > limit:
                flags.append(f"image and landmark sensors disagree by {abs(act - check):.1f} mm")
            if own and g.primary:
                # Not "points lost ...", which makes the value unusable: it is
                # read, but where the points were, which may be before the hold.
                where = ("its range is read over those frames" if step.mode == "range"
                         else "read where it was tracked, which may miss its hold")
                flags.append(f"tracked in only {1 - lost_prim:.0%} of the step: {where}")
            elif own and step.mode != "range":
                # The step's own region was lost, and so, often, is the skin
                # beside it: the second face's lower lip read 1.98 of 0.59 mm at
                # its own hold in the pout whose chin was lost.
                flags.append(f"read at its own hold: the step's {step.primary.name} was "
                             f"tracked in only {1 - lost_prim:.0%} of it")
            if res.head_inliers < 4:
                flags.append("head motion could not be removed")
            if g.reliability:
                flags.append(f"reliability: {g.reliability}")
            spread = value_spread(
                series[(g.name, side)], pos, img_rest if sensor == "image" else lm_rest, g,
                side, cols, gpk if step.mode != "range" else np.arange(seg.start, seg.stop),
                rest_pos, act, scale, wt.fit_error_mm, range_mode=step.mode == "range")
            res.measures.append(
                GroupMeasure(
                    step=step.name,
                    muscle_group=g.name,
                    measure=g.measure,
                    kind=g.kind,
                    sensor=sensor if g.sensor != "hybrid" else f"hybrid:{sensor}",
                    primary=g.primary,
                    side=side,
                    activation_mm=act,
                    rest_mm=_mean(lvl[rest_pos]),
                    peak_mm=_mean(lvl[gpk]),
                    check_mm=check,
                    flags=tuple(flags),
                    peak_frames=()
                    if step.mode == "range"
                    else tuple(int(wt.frames[i]) for i in gpk),
                    spread=spread,
                )
            )
            if step.mode == "range":
                n = count_movements(_smooth(series[(g.name, side)][seg], fps, 0.1), act)
                count_flags = tuple(flags)
                if not act >= COUNT_MIN_RANGE_MM:
                    count_flags += (
                        f"count unreliable: this side moved under {COUNT_MIN_RANGE_MM:g} mm",
                    )
                res.measures.append(
                    GroupMeasure(
                        step.name, g.name, "movements", g.kind, res.measures[-1].sensor,
                        False, side, float(n), 0.0, float(n), float("nan"), count_flags,
                    )
                )
    for g in step.groups:
        for side in SIDES:
            sensor = used[(g.name, side)]
            pos, rest, cols = (
                (wt.image_mm, img_rest, img_cols)
                if sensor == "image"
                else (wt.landmarks_mm, lm_rest, lm_cols)
            )
            for key, pts in ((f"{g.name}:{side}", g.points(side)),
                             (f"{g.name}:{side}:lower", g.lower_points(side))):
                if pts:
                    c = np.array([cols[p] for p in pts])
                    d = _mean(pos[holds[g.name]][:, c], axis=(0, 1)) - _mean(rest[c], axis=0)
                    res.displacement_mm[key] = d
    for name, pts in protocol.midline.items():
        c = np.array([img_cols[p] for p in pts])
        d = _mean(wt.image_mm[peak][:, c, 0]) - _mean(img_rest[c, 0])
        res.drift_mm[name] = float(d)
    for lr in _measure_lines(step, win, res.peak_frames, track, cache):
        res.lines.append(lr)
        c = lr.change
        res.measures.append(
            GroupMeasure(
                step.name, lr.region, "crease", "crease", "image", False, lr.side, c.value,
                c.rest, c.peak, float("nan"), line_flags(c),
                spread=Spread(hold=lr.peak_se, rest=lr.rest_se),
            )
        )
    group_factors(step_pose, list(step.groups), res.measures)
    _intervals(step, step_pose, res)
    # Pixel positions of the measured points for drawing rest and peak frames.
    pk = res.peak_frames[len(peak) // 2]
    for g in step.groups:
        for side in SIDES:
            pts = np.array(g.points(side) + g.lower_points(side))
            res.keyframe_points_px[f"{g.name}:{side}"] = key_xy[pts]
            res.peak_points_px[f"{g.name}:{side}"] = track.xy[pk, pts]
    return res


def _intervals(step: Step, sp: StepPose | None, res: StepResult) -> None:
    """Each measure's 95 % interval, in place: the pose correction's doubt (a share,
    POSE_DOUBT, of what it changed) joins the parts first; crease indices take the
    interval their frames gave (:func:`_measure_lines`)."""
    groups = {g.name: g for g in step.groups}
    lines = {(lr.region, lr.side): lr for lr in res.lines}
    for i, m in enumerate(res.measures):
        if m.spread is None:
            continue
        if m.measure == "crease":
            lr = lines[(m.muscle_group, m.side)]
            res.measures[i] = replace(m, lo=lr.lo, hi=lr.hi)
            continue
        spread = m.spread
        f = sp.factors.get((m.muscle_group, m.side), float("nan")) if sp else float("nan")
        if np.isfinite(f) and f > 0 and np.isfinite(m.activation_mm):
            spread = replace(spread, pose=POSE_DOUBT * abs(m.activation_mm) * abs(1.0 - 1.0 / f))
        g = groups[m.muscle_group]
        lo, hi = value_interval(m.activation_mm, spread, g.reads, g.interval_scale)
        res.measures[i] = replace(m, spread=spread, lo=lo, hi=hi)


MAX_REST_LINE_FRAMES = 10
"""Rest frames read for lines (evenly spread over the rest window): the rest
strength is an RMS, stable after a few frames, and the filters cost ~2 ms each."""


def _measure_lines(
    step: Step, win: StepWindow, peak_frames: tuple[int, ...], track: LandmarkTrack,
    cache: FrameCache,
) -> list[LineReading]:
    """Each crease region of the step, per side: rest frames vs the peak window.

    Only these frames are read (never the whole video). Regions are placed by the
    frame's own landmarks in the cached face crop, so head motion does not move
    them; the crop's scale comes from the iris. The value compares the same skin at
    rest and at the peak (:func:`movement.analysis.creases.step_lines`).
    """
    if not step.creases or not peak_frames:
        return []
    rest = np.asarray(win.rest)
    if len(rest) > MAX_REST_LINE_FRAMES:
        rest = rest[np.linspace(0, len(rest) - 1, MAX_REST_LINE_FRAMES).round().astype(int)]
    frames: dict[int, LineFrame] = {}
    # The keyframe is read too: it is the rest picture the report draws.
    for f in (*rest.tolist(), win.keyframe, *peak_frames):
        if f in frames:
            continue
        # The crop may upsample a small face; what the camera resolved is the
        # original image's pixels per mm.
        camera_px_per_mm = float(iris_diameter_px(track.xy[int(f)]) / IRIS_DIAMETER_MM)
        frames[f] = LineFrame(cache.image(int(f)),
                              cache.to_crop(track.xy[int(f)], int(f)).astype(np.float64),
                              camera_px_per_mm)
    mid = peak_frames[len(peak_frames) // 2]
    out = []
    for reg in step.creases:
        for side in SIDES:
            def read(f: int, reg: CreaseRegion = reg, side: str = side) -> CreaseReading:
                fr = frames[f]
                return read_region(fr.gray, fr.pts, reg, side,
                                   resolved_px_per_mm=fr.resolved_px_per_mm)

            change = step_lines([frames[f] for f in rest.tolist()],
                                [frames[f] for f in peak_frames], reg, side)
            out.append(LineReading(reg.name, side, change, int(mid), read(mid),
                                   win.keyframe, read(win.keyframe), change.lo, change.hi,
                                   change.rest_se, change.peak_se))
    return out


def _mean(x: np.ndarray, axis: int | tuple[int, ...] | None = None) -> float | np.ndarray:
    """Mean of the finite values (over ``axis``); NaN (without numpy's warning on the
    clinician's terminal) where a point or side was lost in every frame, which the
    flags report."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(ok, x, 0.0).sum(axis=axis) / ok.sum(axis=axis)
    return float(m) if axis is None else m


def _smooth(x: np.ndarray, fps: float, seconds: float) -> np.ndarray:
    """Tracking noise removed from a series (its finite values): a median of 3
    frames, then a mean over ``seconds`` (0.2 s for a held peak; 0.1 s before
    counting movements, since a syllable lasts about 0.3 s and jitter a frame)."""
    out = x.copy()
    ok = np.isfinite(out)
    if ok.sum() >= 3:
        out[ok] = median_filter(out[ok], size=3, mode="nearest")
        k = max(int(round(seconds * fps)), 1)
        out[ok] = uniform_filter1d(out[ok], size=k, mode="nearest")
    return out


def _range(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, RANGE_PERCENTILE)) if len(x) else float("nan")


STEP_WORKERS = 2
"""Steps measured at once (threads: OpenCV's work runs without the interpreter's lock)."""


def measure_all(
    protocol: Protocol,
    windows: list[StepWindow],
    track: LandmarkTrack,
    cache: FrameCache,
    scale: Scale,
    fps: float,
    keyframe_xy: dict[int, np.ndarray] | None = None,
) -> list[StepResult]:
    """Every step; ``keyframe_xy`` maps keyframes to their detected points.

    Two steps are measured at a time: a step alone kept 1.2 of two cores busy, its
    lines, pose and patch matches waiting on one another's Python. Each step reads
    only its own frames, so the results do not depend on the order."""
    keyframe_xy = keyframe_xy or {}

    def one(w: StepWindow) -> StepResult:
        return measure_step(protocol.step(w.name), w, protocol, track, cache, scale, fps,
                            keyframe_xy.get(w.keyframe))

    with ThreadPoolExecutor(max_workers=STEP_WORKERS) as pool:
        return list(pool.map(one, windows))
