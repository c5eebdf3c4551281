"""The analysis, top to bottom: video -> landmarks -> stabilised mm trajectories ->
protocol steps -> muscle-group activations -> asymmetry -> (outputs, report).

:func:`analyze` is a pure function of its inputs (the video files and the
options): it writes nothing but a temporary frame cache, so a batch or a
cluster can run it on many videos at once. :mod:`movement.report.folder` writes the
result.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from movement import MEASUREMENT_VERSION, __version__
from movement.analysis import pose as _pose
from movement.analysis.activation import StepResult, measure_all
from movement.analysis.asymmetry import rest_rows, resting_asymmetry, tables
from movement.analysis.imagetrack import StreamTracker, track_window
from movement.analysis.landmarks import (
    KEYFRAME_CUTS,
    FrameCache,
    LandmarkTrack,
    keyframe_landmarks,
    track_landmarks,
)
from movement.analysis.pose import pose_record
from movement.analysis.quality import StepQuality, assess
from movement.analysis.restface import face_on_rest, facing_scale
from movement.analysis.stabilise import Scale, Trajectories, estimate_scale, stabilise, yaw_degrees
from movement.analysis.steps import ImageTrack, StepWindow, find_steps, steps_from_cues
from movement.analysis.video import VideoInfo, probe
from movement.protocol import Protocol


@dataclass(frozen=True)
class Options:
    protocol: Protocol
    mirrored: bool = False
    cues: dict[str, tuple[float, float]] | None = None
    face: str = "largest"
    patient: str = ""
    label: str = ""
    date: str = ""


@dataclass
class ClipResult:
    """One video file and what was measured in it."""

    info: VideoInfo
    sha256: str
    track: LandmarkTrack
    scale: Scale
    traj: Trajectories
    windows: list[StepWindow]
    results: list[StepResult]
    rest_table: pd.DataFrame
    quality: list[StepQuality] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Keyframe -> (478, 2) image px where its cut detections put the points the
    # steps tracked from it (landmarks.keyframe_landmarks).
    keyframe_xy: dict[int, np.ndarray] = field(default_factory=dict)
    # Stage -> {"wall": s, "cpu": s}, in pipeline order (benchmarks/speed.py's profile).
    timing_s: dict[str, dict[str, float]] = field(default_factory=dict)
    # The head's (yaw, pitch) in degrees at rest, as the resting measures read it
    # (pose.face_on_rest; NaN without depth).
    rest_pose: tuple[float, float] = (float("nan"), float("nan"))


@dataclass
class Session:
    """The whole analysis of one consult (one video, or one clip per step)."""

    options: Options
    clips: list[ClipResult]
    asymmetry: pd.DataFrame
    metrics: pd.DataFrame
    midline: pd.DataFrame
    rest: pd.DataFrame
    warnings: list[str]
    created: str

    @property
    def results(self) -> list[StepResult]:
        return [r for c in self.clips for r in c.results]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def analyze_clip(
    path: str | Path,
    opts: Options,
    protocol: Protocol,
    progress: Callable[[int], None] | None = None,
    keep_cache: bool = False,
    sha256: str | None = None,
) -> tuple[ClipResult, FrameCache | None]:
    """Analyse one video file for the steps of ``protocol``; ``sha256``: the file's
    hash when the caller has read it already (a long video takes seconds to hash)."""
    with opencv_threads(1):
        return _analyze_clip(path, opts, protocol, progress, keep_cache, sha256)


@contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's own worker threads set to ``n`` for the duration (then restored).

    The analysis keeps both cores busy with threads of its own (decoding, the face
    mesh, cutting crops, following points, two Lucas-Kanade chunks); OpenCV
    splitting each resize and colour conversion over the cores as well made them
    wait for each other: the landmark pass took about a fifth more CPU and wall time
    on two cores. The results are the same either way."""
    was = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(was)


def _analyze_clip(
    path: str | Path,
    opts: Options,
    protocol: Protocol,
    progress: Callable[[int], None] | None,
    keep_cache: bool,
    sha256: str | None,
) -> tuple[ClipResult, FrameCache | None]:
    clock = _Clock()
    info = probe(path, mirrored=opts.mirrored)
    points, anchors = detection_points(protocol)
    streamer = StreamTracker(points, anchors)
    try:
        track, cache = track_landmarks(info, face=opts.face, progress=progress, on_frame=streamer)
    except BaseException:
        streamer.finish(0)
        raise
    clock.lap("landmarks (decode + face mesh)")
    try:
        warnings = _tracking_warnings(track)
        scale = facing_scale(estimate_scale(track), track)
        traj = stabilise(track, scale)
        fps = _effective_fps(track.t, info.fps)
        clock.lap("scale + stabilise")
        tracked, key = streamer.finish(len(track))
        image = whole_video_track(track, cache, scale, protocol, tracked, key)
        clock.lap("whole-video image track")
        if opts.cues:
            windows = steps_from_cues(traj, protocol, fps, opts.cues, image)
        else:
            windows = find_steps(traj, protocol, fps, image)
        clock.lap("steps")
        # From here on only the steps' frames are read: those the cache's disk budget
        # let go are decoded again (none for a video of a couple of minutes).
        cache.ensure(step_frames(windows))
        clock.lap("frames decoded again")
        key_xy = keyframe_landmarks(info, track, cache, [w.keyframe for w in windows if w.found])
        clock.lap("keyframe detections")
        results = measure_all(protocol, windows, track, cache, scale, fps, key_xy)
        clock.lap("activation (image tracking + pose)")
        neutral = _neutral_frames(windows, traj)
        rest_face = face_on_rest(track, traj, neutral)
        rest_table = resting_asymmetry(traj, protocol, neutral,
                                       rest_face.xy if rest_face else None)
        rest_pose = ((rest_face.yaw_deg, rest_face.pitch_deg) if rest_face
                     else (float("nan"), float("nan")))
        clock.lap("resting measures")
        quality = assess(results, track, traj, scale, cache)
    except BaseException:
        cache.close()
        raise
    for w in windows:
        if not w.found and not w.notes:
            warnings.append(f"step '{w.name}' not found in {Path(info.path).name}")
        warnings.extend(f"step '{w.name}': {n}" for n in w.notes)
    warnings.extend(q.instruction for q in quality if q.verdict in ("low", "unusable"))
    sha = sha256 or file_sha256(path)
    clock.lap("quality + file hash")
    clip = ClipResult(
        info, sha, track, scale, traj, windows, results, rest_table, quality,
        warnings, key_xy, clock.seconds, rest_pose,
    )
    if keep_cache:
        return clip, cache
    cache.close()
    return clip, None


class _Clock:
    """Seconds per stage, wall-clock and CPU (all threads): what an analysis spent its
    time on. CPU time is what the stage costs on a busy machine too."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {}
        self._t = (time.perf_counter(), time.process_time())

    def lap(self, stage: str) -> None:
        now = (time.perf_counter(), time.process_time())
        was = self.seconds.setdefault(stage, {"wall": 0.0, "cpu": 0.0})
        was["wall"] = round(was["wall"] + now[0] - self._t[0], 3)
        was["cpu"] = round(was["cpu"] + now[1] - self._t[1], 3)
        self._t = now


def detection_points(protocol: Protocol) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The points that find every step (each step's detecting group), and every
    anchor region, for finding steps."""
    points = tuple(dict.fromkeys(p for s in protocol.steps for p in s.detecting.all_points))
    anchors = tuple(dict.fromkeys(p for v in protocol.anchors.values() for p in v))
    return points, anchors


def whole_video_track(
    track: LandmarkTrack,
    cache: FrameCache,
    scale: Scale,
    protocol: Protocol,
    tracked: np.ndarray,
    keyframe: int,
) -> ImageTrack | None:
    """Head motion removed from the points tracked during the landmark pass.

    One keyframe (the first face) for the whole video is enough here: the
    values only need to rise clearly during each step; the measurement itself
    re-anchors at each step's own rest.
    """
    if keyframe < 0:
        return None
    points, anchors = detection_points(protocol)
    wt = track_window(cache, track, scale, 0, len(track) - 1, keyframe, points, anchors,
                      ring=False, tracked=tracked, with_landmarks=False)
    return ImageTrack(wt.image_mm, wt.points)


def step_frames(windows: list[StepWindow]) -> list[int]:
    """Every frame the measurement of the found steps reads (StepWindow.span)."""
    out: set[int] = set()
    for w in windows:
        if w.found and w.rest:
            first, last = w.span
            out.update(range(first, last + 1))
    return sorted(out)


def _effective_fps(t: np.ndarray, nominal: float) -> float:
    if len(t) > 2:
        dt = np.median(np.diff(t))
        if dt > 0:
            return float(1.0 / dt)
    return nominal


def _neutral_frames(windows: list[StepWindow], traj: Trajectories) -> np.ndarray:
    rest = sorted({f for w in windows for f in w.rest})
    if rest:
        return np.array(rest)
    return np.flatnonzero(traj.valid)


def _tracking_warnings(track: LandmarkTrack) -> list[str]:
    out = []
    tracked = track.valid.mean() if len(track) else 0.0
    if tracked < 0.95:
        out.append(f"face tracked in only {tracked:.0%} of frames")
    multi = (track.n_faces > 1).mean() if len(track) else 0.0
    if multi > 0:
        out.append(f"more than one face in {multi:.0%} of frames; the largest was measured")
    return out


def analyze(
    videos: list[str | Path],
    opts: Options,
    steps: Sequence[str | Sequence[str]] | None = None,
    progress: Callable[[int], None] | None = None,
    keep_caches: bool = False,
    hashes: Sequence[str] | None = None,
) -> tuple[Session, list[FrameCache]]:
    """Analyse a consult: one continuous video, or one clip per step.

    Parameters
    ----------
    videos : one video for the whole protocol, or one clip per step
    steps : with several clips, the step each clip shows (same order); an entry may
        name several steps, in protocol order, for a clip that shows them all (a
        recording, beside a step recorded again)
    keep_caches : return the frame caches (for drawing the report's frames);
        the caller must ``close()`` them.
    hashes : the videos' sha256, when the caller has them (else they are read here)
    """
    protocol = opts.protocol
    if len(videos) > 1 or steps:
        if not steps or len(steps) != len(videos):
            raise ValueError("give one step name per clip (--steps frown,raise,...)")
        jobs = [(v, protocol.subset([s] if isinstance(s, str) else list(s)))
                for v, s in zip(videos, steps, strict=True)]
    else:
        jobs = [(videos[0], protocol)]
    known = list(hashes) if hashes is not None else [None] * len(jobs)
    clips: list[ClipResult] = []
    caches: list[FrameCache] = []
    try:
        for (v, proto), sha in zip(jobs, known, strict=True):
            clip, cache = analyze_clip(v, opts, proto, progress, keep_caches, sha)
            clips.append(clip)
            if cache is not None:
                caches.append(cache)
    except BaseException:
        for c in caches:
            c.close()
        raise
    results = [r for c in clips for r in c.results]
    recording = {q.step: (q.verdict, q.reason) for c in clips for q in c.quality}
    asym, metr, mid = tables(results, protocol, recording)
    rest = clips[0].rest_table
    # Resting position first, then each step's movement; the step column tells them apart.
    # (an empty frame in a concat turns every column to object dtype)
    parts = [t for t in (rest_rows(rest, protocol, *clips[0].rest_pose), asym)
             if not t.empty]
    if parts:
        asym = pd.concat(parts, ignore_index=True)
    warnings = [w for c in clips for w in c.warnings]
    for c in clips:
        yaw = yaw_degrees(c.traj.yaw_index)
        if np.nanmax(np.abs(yaw), initial=0) > 20:
            warnings.append(
                f"{Path(c.info.path).name}: head turned up to {np.nanmax(np.abs(yaw)):.0f} degrees"
            )
    session = Session(
        options=opts,
        clips=clips,
        asymmetry=asym,
        metrics=metr,
        midline=mid,
        rest=rest,
        warnings=warnings,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    return session, caches


def session_record(session: Session) -> dict:
    """The JSON-ready description of a session (``session.json``)."""
    o = session.options
    clips = []
    for c in session.clips:
        i = c.info
        clips.append(
            dict(
                path=i.path,
                sha256=c.sha256,
                width=i.width,
                height=i.height,
                fps=i.fps,
                frames=len(c.track),
                duration_s=float(c.track.t[-1]) if len(c.track) else 0.0,
                rotation=i.rotation,
                codec=i.codec,
                mirrored=i.mirrored,
                timing_s=c.timing_s,
                scale=dict(
                    mm_per_px=c.scale.mm_per_px,
                    iris_px=c.scale.iris_px,
                    iris_spread=c.scale.spread,
                    ipd_mm=c.scale.ipd_mm,
                    frames_used=c.scale.frames_used,
                    fresh_factor=c.scale.fresh_factor,
                    fresh_used=c.scale.fresh_used,
                    iris_facing=c.scale.iris_facing,
                ),
                rest_pose=dict(yaw_deg=_nan(c.rest_pose[0]), pitch_deg=_nan(c.rest_pose[1])),
                tracking=dict(
                    face_tracked_fraction=float(c.track.valid.mean()),
                    multiple_faces_fraction=float((c.track.n_faces > 1).mean()),
                    roll_range_deg=_range(c.traj.roll_deg),
                    yaw_range_deg=_range(yaw_degrees(c.traj.yaw_index)),
                ),
                steps=[
                    dict(
                        name=r.window.name,
                        found=r.window.found,
                        source=r.window.source,
                        start_s=_t(c.track.t, r.window.start),
                        peak_s=_nan(r.peak_t),
                        end_s=_t(c.track.t, r.window.end),
                        rest_frames=list(r.window.rest),
                        keyframe=r.window.keyframe,
                        # "detected": placed by the keyframe's cut detections;
                        # "tracking": the tracking pass's points (too few detections).
                        keyframe_points="detected" if r.window.keyframe in c.keyframe_xy
                        else "tracking",
                        peak_frames=list(r.peak_frames),
                        head_fit_inliers=r.head_inliers,
                        points_lost_fraction=r.lost_fraction,
                        midline_drift_mm={k: _nan(v) for k, v in r.drift_mm.items()},
                        pose=pose_record(r.pose, r.peak_frames),
                        quality=_quality_record(q),
                    )
                    for r, q in zip(c.results, c.quality, strict=True)
                ],
            )
        )
    p = o.protocol
    return dict(
        software=dict(name="movement", version=__version__),
        # Sessions of different measurement versions are not compared as if alike
        # (movement.clinic.compare); `movement reanalyze` re-runs an older one.
        measurement_version=MEASUREMENT_VERSION,
        created=session.created,
        patient=o.patient,
        label=o.label,
        date=o.date,
        protocol=dict(
            name=p.name,
            version=p.version,
            path=p.path,
            # The steps asked for (a recording of some steps uses a subset), so a
            # re-analysis asks for the same.
            steps=[st.name for st in p.steps],
            thresholds=dict(min_diff_mm=p.thresholds.min_diff_mm, min_ratio=p.thresholds.min_ratio),
        ),
        options=dict(mirrored=o.mirrored, face=o.face, cues=o.cues,
                     pose_correction=_pose.ENABLED),
        clips=clips,
        steps=[s for c in clips for s in c["steps"]],
        warnings=session.warnings,
        stages=[
            dict(
                stage="landmarks", method="MediaPipe FaceMesh 0.10.21, tracking mode, refined iris"
            ),
            dict(stage="scale", method="horizontal visible iris diameter = 11.7 mm relative to the "
                 "inter-iris distance, median over tracked frames, corrected by fresh "
                 "(static-mode) detections every 0.5 s, each on four cuts of the frame"),
            dict(stage="stabilise", method="iris-anchored face frame (coarse, whole video)"),
            dict(stage="steps", method="signal bouts assigned in protocol order (DP)"),
            dict(
                stage="imagetrack",
                method="pyramidal LK from each step's rest keyframe, its points placed by "
                f"the median of {KEYFRAME_CUTS} still-image detections of cuts of the frame; "
                "forward-backward check, RANSAC similarity on the step's anchor regions",
            ),
            dict(stage="activation", method="peak (>=90% window) minus mean rest, per side"),
        ],
    )


def _quality_record(q: StepQuality) -> dict:
    return dict(
        verdict=q.verdict, reasons=list(q.reasons), instruction=q.instruction,
        face_tracked_fraction=q.face_tracked, yaw_deg=list(q.yaw_deg), roll_deg=list(q.roll_deg),
        px_per_mm=q.px_per_mm, brightness=q.brightness, peak_sharpness_ratio=q.sharpness_ratio,
        rest_before=q.rest_before,
    )


def _range(a: np.ndarray) -> list[float]:
    a = a[np.isfinite(a)]
    return [float(a.min()), float(a.max())] if len(a) else [float("nan")] * 2


def _t(t: np.ndarray, i: int) -> float | None:
    return float(t[i]) if 0 <= i < len(t) else None


def _nan(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)
