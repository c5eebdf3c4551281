"""What real recordings do, drawn at random: every case ends in a result or in one of
the documented exit codes with one clear line -- never in an internal error.

Cue windows anywhere in the video (at its first and last frame, touching, overlapping,
shorter than a frame, longer than the video), the face lost for any stretch (at the
start, in the middle, at the end, several times), frame-rate changes, clips of one to a
few hundred frames.

The quick part replays one recorded landmark pass of a small generated consult (the
face mesh is most of an analysis's time) with the recording edited as the recording
would have been: frames with the face lost, timestamps changed. Everything after the
landmark pass runs as in a real analysis, through the command line. The slow part
(``-m slow``) analyses real edited videos end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from movement import consult, synth
from movement.analysis import pipeline
from movement.analysis.landmarks import FrameCache, LandmarkTrack, NoFaceError, track_landmarks
from movement.analysis.steps import REST_AFTER
from movement.analysis.video import probe
from movement.cli import main

FPS = 30.0
DURATION_S = 2.4
SIZE = (320, 240)
STEPS = ("frown", "raise", "squint", "eee", "smile")
DOCUMENTED = {0, 3, 4, 5}
"""Exit codes an analysis of these inputs may end with (README: unreadable video, no
face, cues invalid); 1 is "internal error", which these tests exist to rule out."""

QUICK = settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)


def _consult(path: Path, duration_s: float) -> Path:
    """A small consult: a frown then a smile (the standard protocol's others missing)."""
    steps = (
        synth.StepMotion("frown", 0.3, 0.7, 1.1, 1.5, 2.5),
        synth.StepMotion("smile", 1.3, 1.7, 2.1, 4.0, 3.0),
    )
    spec = synth.SynthSpec(steps=steps, duration_s=duration_s, frame_size=SIZE,
                           face_height_frac=0.8, noise_sigma=1.0, seed=5)
    synth.make_video(spec, path)
    return path


# -- the recorded landmark pass and its replay ------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One landmark pass: its track, its frame cache's crops and what it streamed."""

    video: Path
    track: LandmarkTrack
    crops: list[np.ndarray]
    offsets: list[tuple[int, int]]
    scale: float
    size: int

    def __repr__(self) -> str:  # the arrays would fill a failure's report
        return f"Recorded({self.video.name}, {len(self.track)} frames)"


def record(video: Path) -> Recorded:
    track, cache = track_landmarks(probe(video))
    try:
        crops = [cache.image(i).copy() for i in range(len(cache))]
        return Recorded(video, track, crops, list(cache.offsets), cache.scale, cache.size)
    finally:
        cache.close()


@contextmanager
def replayed(rec: Recorded, lost: frozenset[int] = frozenset(),
             t: np.ndarray | None = None) -> Iterator[LandmarkTrack]:
    """The analysis sees ``rec``'s landmark pass with the face lost in ``lost`` frames
    (grey crops, no landmarks, as a covered or departed face gives) and timestamps ``t``."""
    tr = rec.track
    xy = tr.xy.copy()
    nf = tr.n_faces.copy()
    idx = np.array(sorted(lost), int)
    xy[idx] = np.nan
    nf[idx] = 0
    # The depth goes with the landmarks: the pose correction reads it.
    z = None if tr.z is None else tr.z.copy()
    if z is not None:
        z[idx] = np.nan
    keep = ~np.isin(tr.fresh_frames, idx)
    edited = LandmarkTrack(tr.t.copy() if t is None else t, xy, nf, tr.fresh_frames[keep],
                           tr.fresh_xy[keep], z)

    def fake(info, face="largest", cache_dir=None, progress=None, on_frame=None):
        valid = np.isfinite(xy[:, 0, 0])
        if not valid.any():
            raise NoFaceError(f"{info.path}: no face found in any of {len(xy)} frames")
        first = int(np.argmax(valid))
        folder = Path(tempfile.mkdtemp(prefix="movement-frames-", dir=cache_dir))
        cache = FrameCache(folder, rec.scale, rec.size)
        grey = np.full((rec.size, rec.size), 90, np.uint8)
        for i in range(len(xy)):
            if i < first:  # as the landmark pass caches frames before the first face
                cache.append(np.zeros_like(grey), (0, 0))
                continue
            cache.append(grey if i in lost else rec.crops[i], rec.offsets[i])
            if on_frame is not None:
                on_frame(i, xy[i].astype(np.float64), cache)
            if progress is not None:
                progress(1)
        return edited, cache

    with mock.patch.object(pipeline, "track_landmarks", fake):
        yield edited


# -- running and checking ---------------------------------------------------------------


def analyse(video: Path, out: Path, cues: list[tuple[str, float, float]] | None = None,
            *extra: str):
    args = ["analyze", str(video), "--out", str(out), "-q", *extra]
    if cues is not None:
        f = out.parent / "cues.csv"
        f.write_text("step,start_s,end_s\n" + "".join(f"{n},{a:.4f},{b:.4f}\n"
                                                     for n, a, b in cues))
        args += ["--cues", str(f)]
    # The traceback of an internal error, for the failure message.
    with mock.patch.dict(os.environ, {"MOVEMENT_DEBUG": "1"}):
        return CliRunner().invoke(main, args)


def check(res, out: Path, t: np.ndarray | None = None,
          cues: list[tuple[str, float, float]] | None = None) -> dict | None:
    """A result, or a documented exit code with one clear line; the session if any."""
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        pytest.fail("internal error:\n" + "".join(traceback.format_exception(*res.exc_info)))
    assert res.exit_code in DOCUMENTED, res.output
    if res.exit_code != 0:
        lines = [x for x in res.output.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("movement: error:"), res.output
        assert not out.exists()
        return None
    s = json.loads((out / "session.json").read_text())
    assert (out / "asymmetry.csv").exists() and (out / "report.html").exists()
    cued = {n for n, _, _ in cues or ()}
    for step in s["steps"]:
        q = step["quality"]
        if not step["found"]:
            assert q["verdict"] == "missing"
            if step["name"] in cued:
                # Named, not silently "not found": the cue's own reason.
                assert q["reasons"][0].startswith("cue window"), q
            continue
        assert step["rest_frames"] or q["verdict"] == "unusable", step
        if t is not None and step["rest_frames"] and t[max(step["rest_frames"])] > step["end_s"]:
            assert REST_AFTER in q["reasons"], step
    return s


# -- strategies -------------------------------------------------------------------------


def windows(duration: float, frame: float) -> st.SearchStrategy:
    """A cue window (start, end) anywhere, of any length, with the edges real cues hit."""
    edge = st.sampled_from([0.0, frame, duration - frame, duration, duration - 0.5 * frame])
    start = st.one_of(edge, st.floats(-0.5, duration + 0.5))
    long = max(duration, 0.2)
    length = st.one_of(
        st.floats(0.001, frame),  # shorter than a frame
        st.floats(frame, 3 * frame),
        st.floats(0.2, long),
        st.floats(long, 3 * long),  # longer than the video
    )
    return st.tuples(start, length).map(lambda p: (p[0], p[0] + p[1]))


def cue_sets(duration: float, frame: float) -> st.SearchStrategy:
    """Cues for one to five steps: independent windows, or a run of touching or
    0.1 s-apart windows in any protocol order."""
    free = st.lists(st.tuples(st.sampled_from(STEPS), windows(duration, frame)),
                    min_size=1, max_size=5, unique_by=lambda c: c[0])
    run = st.tuples(
        st.permutations(STEPS).map(lambda p: p[:3]),
        st.floats(0.0, duration), st.floats(frame / 2, 1.2),
        st.sampled_from([0.0, 0.1, -0.1]),  # touching, apart, overlapping
    ).map(lambda r: [(n, (r[1] + i * (r[2] + r[3]), r[1] + i * (r[2] + r[3]) + r[2]))
                     for i, n in enumerate(r[0])])
    return st.one_of(free, run).map(lambda cs: [(n, a, b) for n, (a, b) in cs])


def stretches(n: int) -> st.SearchStrategy:
    """Frames with the face lost: one to three stretches, at the start, the end or
    anywhere, of one frame to all of them."""
    one = st.tuples(st.one_of(st.just(0), st.integers(0, n - 1), st.just(n - 1)),
                    st.integers(1, n))
    return st.lists(one, min_size=1, max_size=3).map(
        lambda ss: frozenset(i for a, k in ss for i in range(a, min(a + k, n))))


# -- the quick part: one recorded landmark pass, edited ---------------------------------

N_FRAMES = int(round(DURATION_S * FPS))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Recorded:
    d = tmp_path_factory.mktemp("props")
    rec = record(_consult(d / "consult.mp4", DURATION_S))
    assert len(rec.track) == N_FRAMES
    return rec


@contextmanager
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="movement-props-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def page_not_drawn() -> Iterator[None]:
    """The report page stands in as an empty file: drawing it is a third of a small
    analysis's time, and the slow part and the end-to-end tests draw it."""
    with mock.patch.object(consult, "render_report",
                           lambda s, p, **kw: Path(p).write_text("")):
        yield


@pytest.mark.slow
def test_replay_reproduces_the_analysis(recorded, tmp_path):
    """The replay is the analysis: unedited, it gives the real pass's numbers."""
    real = analyse(recorded.video, tmp_path / "real")
    assert real.exit_code == 0, real.output
    with replayed(recorded):
        again = analyse(recorded.video, tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert ((tmp_path / "real" / "asymmetry.csv").read_text()
            == (tmp_path / "again" / "asymmetry.csv").read_text())


@QUICK
@given(cues=cue_sets(DURATION_S, 1 / FPS))
# The cases: a window 0.15 s into the video; three steps 0.1 s apart, in an
# order other than the protocol's; windows at the first and past the last frame.
@example(cues=[("smile", 0.15, 0.85)])
@example(cues=[("squint", 0.3, 1.05), ("raise", 1.15, 1.6), ("frown", 1.7, 2.3)])
@example(cues=[("frown", 0.0, 0.01), ("smile", DURATION_S - 0.02, DURATION_S + 5)])
def test_cue_windows_anywhere(recorded, cues):
    cues = [(n, a, b) for n, a, b in cues if b > a]
    with scratch() as d, replayed(recorded), page_not_drawn():
        check(analyse(recorded.video, d / "o", cues, "--no-images"), d / "o",
              recorded.track.t, cues)


@QUICK
@given(lost=stretches(N_FRAMES), cues=st.none() | cue_sets(DURATION_S, 1 / FPS))
# The face absent while the first step starts (it enters mid-frown), and gone at the end.
@example(lost=frozenset(range(0, 20)), cues=None)
@example(lost=frozenset(range(50, N_FRAMES)), cues=None)
def test_face_lost_for_any_stretch(recorded, lost, cues):
    with scratch() as d, replayed(recorded, lost=lost) as tr, page_not_drawn():
        res = analyse(recorded.video, d / "o", cues, "--no-images")
        s = check(res, d / "o", tr.t, cues)
        if len(lost) == N_FRAMES:
            assert res.exit_code == 4 and "no face" in res.output
        else:
            assert s is not None


@QUICK
@given(k=st.integers(0, N_FRAMES - 1), change=st.sampled_from([0.5, 2.0, 3.0, "pause"]),
       pause=st.floats(0.1, 2.0), cues=st.none() | cue_sets(DURATION_S, 1 / FPS))
def test_frame_rate_changes(recorded, k, change, pause, cues):
    """From frame ``k`` on, frames come at another rate (a phone dropping frames, or
    catching up), or the recording pauses there."""
    dt = np.full(N_FRAMES - 1, 1 / FPS)
    if change == "pause":
        dt[min(k, N_FRAMES - 2)] += pause
    else:
        dt[k:] *= change
    t = np.r_[0.0, np.cumsum(dt)]
    with scratch() as d, replayed(recorded, t=t), page_not_drawn():
        res = analyse(recorded.video, d / "o", cues, "--no-images")
        assert check(res, d / "o", t, cues) is not None


# -- the slow part: real edited videos, end to end ---------------------------------------


SLOW = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                print_blob=True)


class Frames(list):
    """Decoded frames (a short repr: a failing example prints its arguments)."""

    def __repr__(self) -> str:
        return f"Frames({len(self)})"


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Frames:
    """The consult's frames played forth, back and forth: a continuous recording of a few
    hundred frames."""
    d = tmp_path_factory.mktemp("frames")
    cap = cv2.VideoCapture(str(_consult(d / "consult.mp4", DURATION_S)))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    return Frames(out + out[::-1] + out)


def _write(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        out.write(f)
    out.release()
    return path


def _leave(img: np.ndarray, how: str, amount: float) -> np.ndarray:
    """The face covered, or slid ``amount`` of the frame width out of view."""
    if how == "cover":
        return np.full_like(img, 90)
    dx = int(round(amount * img.shape[1]))
    out = np.roll(img, dx, axis=1)
    out[:, :dx] = 90
    return out


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_clips_of_any_length(frames, data):
    n = len(frames)
    a = data.draw(st.integers(0, n - 1))
    k = data.draw(st.one_of(st.integers(1, 5), st.integers(1, n - a)))
    clip = frames[a : a + k]
    cues = data.draw(st.none() | cue_sets(k / FPS, 1 / FPS))
    with scratch() as d:
        video = _write(d / "clip.mp4", clip)
        check(analyse(video, d / "o", cues), d / "o", None, cues)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_face_leaves_the_frame_and_comes_back(frames, data):
    clip = frames[: len(frames) // 2]
    n = len(clip)
    lost = data.draw(stretches(n))
    how = data.draw(st.sampled_from(["cover", "slide"]))
    amount = data.draw(st.floats(0.5, 1.0))
    edited = [_leave(f, how, amount) if i in lost else f for i, f in enumerate(clip)]
    with scratch() as d:
        video = _write(d / "left.mp4", edited)
        check(analyse(video, d / "o"), d / "o")


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_dropped_frames_and_other_rates(frames, data):
    """Frames dropped from some point on (the file then plays faster), at any rate."""
    n = len(frames)
    k = data.draw(st.integers(0, n - 1))
    every = data.draw(st.integers(2, 4))
    fps = data.draw(st.sampled_from([12.0, 24.0, 30.0, 60.0]))
    clip = frames[:k] + frames[k::every]
    with scratch() as d:
        video = _write(d / "rate.mp4", clip, fps)
        cues = data.draw(st.none() | cue_sets(len(clip) / fps, 1 / fps))
        check(analyse(video, d / "o", cues), d / "o", None, cues)


def test_strategies_reach_the_edges():
    """The window strategy does produce the edge cases the suite is about."""
    from hypothesis import find

    w = windows(3.0, 1 / FPS)
    assert find(w, lambda ab: ab[1] - ab[0] < 1 / FPS)
    assert find(w, lambda ab: ab[1] - ab[0] > 3.0)
    assert find(w, lambda ab: ab[0] == 0.0)
