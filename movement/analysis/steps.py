"""Stage 4 — step finding: where each protocol step starts, peaks and ends.

Each step has a detection signal (its primary measurement, or the group its
protocol entry names in ``detect_group``, on the image-tracked points and the
stabilised landmark trajectories). Bouts where a signal rises clearly above its own noise
become candidates; the steps are then assigned to candidates in the
protocol's order by dynamic programming (non-overlapping, increasing in time),
maximising the total evidence. A step with no candidate is *missing*: it is
reported as such, never invented. Rest frames before each step are chosen by
stillness and closeness to the session's neutral face.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import median_filter

from movement.analysis.face import measure_series
from movement.analysis.stabilise import Trajectories
from movement.protocol import Detection, MuscleGroup, Protocol, Step

MIN_SIGNAL_MM = 0.35
"""Smallest detection signal (mm) that counts as a step (besides five times the
signal's own noise). A treated muscle may move only half a millimetre and must
still be found and reported, not called missing; the image-tracked signals
rest within about 0.05 mm, so 0.35 mm is well clear of noise."""


class CuesError(ValueError):
    """The cues file is unreadable or names unknown steps."""


@dataclass(frozen=True)
class StepWindow:
    """Where one protocol step happened (frame indices into the video)."""

    name: str
    found: bool
    start: int = -1
    peak: int = -1
    end: int = -1
    rest: tuple[int, ...] = ()
    keyframe: int = -1
    source: str = "auto"  # auto | cues | clip
    score: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def span(self) -> tuple[int, int]:
        """First and last frame a step's measurement reads: its rest frames (the
        keyframe among them; they may come after the step, :func:`choose_rest`) and
        the step itself. Only for a found step with rest frames."""
        return min(min(self.rest), self.start), max(max(self.rest), self.end)


def _side_signal(
    pos: np.ndarray, baseline: np.ndarray, g: MuscleGroup, kind: str, col: dict[int, int]
) -> np.ndarray:
    vals = []
    # A face outline's points (the jaw contour) sit on an edge with smooth skin
    # beside it: along the edge their windows see nothing, and a slight head roll
    # slid one jaw point 1 mm along it and back (a clench then went unfound under
    # mild head motion). With three or more, their median ignores the one that slides.
    for side in ("right", "left"):
        cols = np.array([col[p] for p in g.points(side)])
        lower = np.array([col[p] for p in g.lower_points(side)]) if g.lower_points(side) else None
        if g.outline and len(cols) >= 3:
            each = [measure_series(pos, baseline, kind, cols[i : i + 1], None, side)
                    for i in range(len(cols))]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all lost: NaN, as intended
                vals.append(np.nanmedian(np.stack(each, axis=1), axis=1))
        else:
            vals.append(measure_series(pos, baseline, kind, cols, lower, side))
    # NaN where either side is lost (not the other side's value): a lost moving
    # side must read as a gap to bridge, not as the still side's zero.
    return np.max(np.stack(vals), axis=0)


def _bridge(s: np.ndarray, max_gap: int) -> np.ndarray:
    """Linear interpolation across runs of NaN no longer than ``max_gap`` frames."""
    ok = np.isfinite(s)
    if ok.all() or ok.sum() < 2:
        return s
    idx = np.arange(len(s))
    filled = np.interp(idx, idx[ok], s[ok])
    # Distance to the nearest valid frame on each side decides the gap length.
    last = np.maximum.accumulate(np.where(ok, idx, -1))
    nxt = np.minimum.accumulate(np.where(ok, idx, len(s))[::-1])[::-1]
    short = (last >= 0) & (nxt < len(s)) & (nxt - last - 1 <= max_gap)
    return np.where(ok | short, filled, np.nan)


def _median_face(pos: np.ndarray, max_frames: int = 3000) -> np.ndarray:
    """Median position of each point over the video (a subsample bounds the memory)."""
    step = max(len(pos) // max_frames, 1)
    with warnings.catch_warnings():
        # A point lost in every frame (an untextured chin): NaN, as intended.
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(pos[::step], axis=0)


@dataclass(frozen=True)
class ImageTrack:
    """Image-tracked points over the whole video (head motion removed, mm).

    positions : (T, P, 2) in the face frame; NaN where the tracker lost a point
    points : (P,) landmark numbers
    """

    positions: np.ndarray
    points: np.ndarray


def detection_signals(
    traj: Trajectories, protocol: Protocol, image: ImageTrack | None = None
) -> dict[str, np.ndarray]:
    """Per step, the larger side's detection signal in mm, relative to neutral.

    Neutral is the median face of the video: most of a protocol video is rest
    and any one step covers a minority of it. Where an image track is given
    its points are used (the landmark model under-reads skin movement, a frown
    by half); frames where it lost a point fall back to the landmarks.
    """
    baseline = _median_face(traj.mm)
    every = {i: i for i in range(traj.mm.shape[1])}
    img_col: dict[int, int] = {}
    if image is not None:
        img_col = {int(p): i for i, p in enumerate(image.points)}
        img_base = _median_face(image.positions)
    out = {}
    for step in protocol.steps:
        g = step.detecting
        s = _side_signal(traj.mm, baseline, g, step.detect_kind, every)
        if image is not None and all(p in img_col for p in g.all_points):
            si = _side_signal(image.positions, img_base, g, step.detect_kind, img_col)
            # Short losses are bridged; only long ones fall back to the landmark
            # model, whose gain differs (alternating sensors frame by frame made
            # spikes that hid a frown).
            si = _bridge(si, max_gap=int(round(0.5 * len(s) / max(traj.t[-1] - traj.t[0], 1e-9))))
            s = np.where(np.isfinite(si), si, s)
        ok = np.isfinite(s)
        if ok.sum() > 5:
            s[ok] = median_filter(s[ok], size=5, mode="nearest")
        out[step.name] = s
    return out


def _noise(s: np.ndarray) -> float:
    v = s[np.isfinite(s)]
    if len(v) == 0:
        return np.inf
    med = np.median(v)
    return float(1.4826 * np.median(np.abs(v - med)))


def _bouts(active: np.ndarray, min_len: int, merge: int) -> list[tuple[int, int]]:
    idx = np.flatnonzero(np.diff(np.r_[0, active.astype(int), 0]))
    runs = list(zip(idx[::2], idx[1::2] - 1, strict=True))
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] - 1 <= merge:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged if b - a + 1 >= min_len]


@dataclass(frozen=True)
class _Candidate:
    k: int
    start: int
    end: int
    peak: int
    score: float


def _candidates(signals: dict[str, np.ndarray], protocol: Protocol, fps: float) -> list[_Candidate]:
    """Bouts of each step's signal, with their extent and a height/threshold score.

    The threshold is 5 times the signal's noise *at rest* (and at least
    MIN_SIGNAL_MM): the noise is measured on the frames where no step's signal
    rises above MIN_SIGNAL_MM. With many steps (the extended protocol moves the
    face for half the video) the spread of the whole signal counts other steps'
    spill-over as noise: a 2 mm clench stayed under a 2.1 mm threshold.
    """
    det = protocol.detection
    min_len = max(int(round(det.min_bout_s * fps)), 1)
    clean = {name: np.nan_to_num(s, nan=0.0) for name, s in signals.items()}
    n = len(next(iter(clean.values()))) if clean else 0
    moving = np.zeros(n, bool)
    for step in protocol.steps:
        s = clean[step.name]
        for c in _step_bouts(s, 0, step, det, min_len, fps, 0.0):
            moving[c.start : c.end + 1] = True
    quiet = ~moving
    cands = []
    for k, step in enumerate(protocol.steps):
        s = clean[step.name]
        noise = _noise(s[quiet]) if quiet.sum() >= max(3 * fps, 10) else _noise(s)
        cands += _step_bouts(s, k, step, det, min_len, fps, noise)
    return cands


def _step_bouts(
    s: np.ndarray, k: int, step: Step, det: Detection, min_len: int, fps: float, noise: float
) -> list[_Candidate]:
    gap_s = step.merge_gap_s if step.merge_gap_s is not None else det.merge_gap_s
    merge = int(round(gap_s * fps))
    if step.min_bout_s is not None:
        min_len = max(int(round(step.min_bout_s * fps)), 1)
    base = float(np.median(s))
    thr = base + max(MIN_SIGNAL_MM, 5 * noise)
    out = []
    for a, b in _bouts(s > thr, min_len, merge):
        p = a + int(np.argmax(s[a : b + 1]))
        height = s[p] - base
        # Extend to where the movement starts and ends (20 % of its height).
        lo = s > base + 0.2 * height
        a2, b2 = a, b
        while a2 > 0 and lo[a2 - 1]:
            a2 -= 1
        while b2 < len(s) - 1 and lo[b2 + 1]:
            b2 += 1
        out.append(_Candidate(k, a2, b2, p, float(height / (thr - base))))
    return out


def _assign(cands: list[_Candidate], n_steps: int) -> list[_Candidate | None]:
    """Pick at most one candidate per step, in protocol order, not overlapping."""
    cands = sorted(cands, key=lambda c: (c.start, c.k))
    best = [c.score for c in cands]
    prev: list[int | None] = [None] * len(cands)
    for i, ci in enumerate(cands):
        for j in range(i):
            cj = cands[j]
            # Peaks in order; windows may touch (smooth transitions) but a
            # step's peak must lie outside the previous step's window.
            if cj.k < ci.k and cj.peak < ci.start + 1 and ci.peak > cj.end - 1:
                if best[j] + ci.score > best[i]:
                    best[i] = best[j] + ci.score
                    prev[i] = j
    out: list[_Candidate | None] = [None] * n_steps
    if not cands:
        return out
    i: int | None = int(np.argmax(best))
    while i is not None:
        out[cands[i].k] = cands[i]
        i = prev[i]
    return out


def choose_rest(
    signals: dict[str, np.ndarray],
    valid: np.ndarray,
    before: int,
    after: int,
    fps: float,
    window_s: float,
    end: int,
) -> tuple[tuple[int, ...], int]:
    """Rest frames for a step (``before``..``end``): still, neutral frames just before it.

    Notes
    -----
    Patients blink, hold the previous expression or close their eyes before
    the next instruction; a fixed "second before the step" catches those. A
    frame qualifies when every step's signal is near neutral (so eyes open,
    brows and mouth at rest) and the face barely moves; the frames nearest
    the step win. The keyframe is the most neutral of them. Never a frame of
    the step itself: where no face precedes it (a step at the very start of the
    video, or the face entering during it) the rest comes from after its end,
    and the step's notes say so (:func:`rest_notes`).
    """
    stack = np.stack([np.nan_to_num(s, nan=np.inf) for s in signals.values()])
    neutral = np.max(np.clip(stack, 0, None), axis=0)
    motion = np.r_[0.0, np.abs(np.diff(neutral))]
    want = max(int(round(window_s * fps)), 1)
    gap = int(round(0.25 * fps))  # the detected start lags the true onset
    lo = max(after, 0)
    hi = max(before - gap, lo)
    ok = valid.copy()
    ok[:lo] = False
    ok[hi:] = False
    for limit in (0.3 * MIN_SIGNAL_MM, 0.6 * MIN_SIGNAL_MM, MIN_SIGNAL_MM):
        cand = np.flatnonzero(ok & (neutral < limit) & (motion < 0.1))
        if len(cand) >= min(want, 3):
            break
    else:
        # Nothing qualifies before the step: fall back to the most neutral
        # valid frames of the video before it (before the onset gap if it has
        # any, else up to the start), else after it.
        pool = np.flatnonzero(valid[: min(hi, before)])
        if len(pool) == 0:
            pool = np.flatnonzero(valid[: max(before, 0)])
        if len(pool) == 0:
            pool = end + 1 + np.flatnonzero(valid[end + 1 :])
        cand = pool[np.argsort(neutral[pool])[:want]] if len(pool) else np.array([], int)
    rest = np.sort(cand)[-want:]
    if len(rest) == 0:
        return (), -1
    key = int(rest[np.argmin(neutral[rest])])
    return tuple(int(r) for r in rest), key


def neutral_frame(traj: Trajectories, protocol: Protocol) -> int:
    """The most neutral tracked frame (smallest movement of any step)."""
    signals = detection_signals(traj, protocol)
    stack = np.stack([np.abs(s) for s in signals.values()])
    score = np.where(traj.valid, np.nanmax(stack, axis=0), np.inf)
    return int(np.argmin(score))


def find_steps(
    traj: Trajectories, protocol: Protocol, fps: float, image: ImageTrack | None = None
) -> list[StepWindow]:
    """Find each protocol step in one continuous video."""
    signals = detection_signals(traj, protocol, image)
    chosen = _assign(_candidates(signals, protocol, fps), len(protocol.steps))
    return _windows(
        protocol.steps, chosen, signals, traj.valid, fps, protocol.detection.rest_window_s
    )


def _windows(
    steps: tuple[Step, ...],
    chosen: list,
    signals: dict[str, np.ndarray],
    valid: np.ndarray,
    fps: float,
    window_s: float,
    source: str = "auto",
    missing: dict[str, tuple[str, ...]] | None = None,
) -> list[StepWindow]:
    """``missing`` gives the notes of steps not found (why a cue window was not measured)."""
    missing = missing or {}
    # The rest of a step is looked for after the step before it in time. Found
    # steps are in protocol order; cue windows may come in any order (a patient
    # who frowned last), and their protocol predecessor may lie after them.
    prev_end: dict[int, int] = {}
    end = 0
    for i in sorted((i for i, c in enumerate(chosen) if c is not None),
                    key=lambda i: (chosen[i].start, i)):
        prev_end[i] = end
        end = chosen[i].end + 1
    out: list[StepWindow] = []
    for i, (step, c) in enumerate(zip(steps, chosen, strict=True)):
        if c is None:
            out.append(StepWindow(step.name, False, source=source,
                                  notes=tuple(missing.get(step.name, ()))))
            continue
        rest, key = choose_rest(signals, valid, c.start, prev_end[i], fps, window_s, c.end)
        notes = rest_notes(rest, c.start, c.end, prev_end[i])
        out.append(
            StepWindow(step.name, True, c.start, c.peak, c.end, rest, key, source, c.score, notes)
        )
    return out


REST_AFTER = "rest frames taken from after the step (no face at rest before it)"
NO_REST = "no frame of the face at rest outside the step to measure it from"


def rest_notes(rest: tuple[int, ...], start: int, end: int, after: int) -> tuple[str, ...]:
    """What a step's notes say about where its rest frames came from."""
    if not rest:
        return (NO_REST,)
    if max(rest) > end:
        return (REST_AFTER,)
    if min(rest) < after:
        return ("rest frames taken from earlier in the video",)
    return ()


def read_cues(path: str | Path, protocol: Protocol) -> dict[str, tuple[float, float]]:
    """Manual step times: CSV with columns step,start_s,end_s."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CuesError(f"cues file {path}: {exc}") from None
    names = {s.name for s in protocol.steps}
    cues: dict[str, tuple[float, float]] = {}
    for i, r in enumerate(rows, start=2):
        try:
            name, a, b = r["step"].strip(), float(r["start_s"]), float(r["end_s"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CuesError(f"cues file {path}, line {i}: need step,start_s,end_s") from None
        if name not in names:
            raise CuesError(f"cues file {path}, line {i}: unknown step '{name}'")
        if not b > a:
            raise CuesError(f"cues file {path}, line {i}: end_s must be after start_s")
        cues[name] = (a, b)
    return cues


def steps_from_cues(
    traj: Trajectories,
    protocol: Protocol,
    fps: float,
    cues: dict[str, tuple[float, float]],
    image: ImageTrack | None = None,
) -> list[StepWindow]:
    """Step windows from manual times; peaks still come from the movement."""
    signals = detection_signals(traj, protocol, image)
    chosen: list[_Candidate | None] = []
    missing: dict[str, tuple[str, ...]] = {}
    t = traj.t
    for k, step in enumerate(protocol.steps):
        if step.name not in cues:
            chosen.append(None)
            continue
        a_s, b_s = cues[step.name]
        a = int(np.searchsorted(t, a_s))
        b = int(min(np.searchsorted(t, b_s, side="right") - 1, len(t) - 1))
        if b <= a:
            missing[step.name] = (cue_window_reason(a_s, b_s, t),)
            chosen.append(None)
            continue
        s = np.nan_to_num(signals[step.name][a : b + 1], nan=-np.inf)
        chosen.append(_Candidate(k, a, b, a + int(np.argmax(s)), 0.0))
    return _windows(
        protocol.steps, chosen, signals, traj.valid, fps, protocol.detection.rest_window_s, "cues",
        missing,
    )


def cue_window_reason(a_s: float, b_s: float, t: np.ndarray) -> str:
    """Why the cue window ``a_s``..``b_s`` (s) could not be measured in frames at ``t``."""
    span = f"cue window {a_s:g}-{b_s:g} s"
    if len(t) == 0 or a_s > t[-1] or b_s < t[0]:
        end = float(t[-1]) if len(t) else 0.0
        return f"{span} lies outside the video (0-{end:.2f} s)"
    return f"{span} holds fewer than two frames: too short to measure"
