"""The frame cache keeps its disk budget: crops it let go are decoded again, the same
bytes, when a stage reads them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import analyze

from movement.analysis import landmarks
from movement.analysis.video import frames, probe

N_FRAMES = 60


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A small video whose frames all differ (noise and the frame's number)."""
    path = tmp_path_factory.mktemp("cache") / "frames.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    rng = np.random.default_rng(1)
    for i in range(N_FRAMES):
        img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        cv2.putText(img, str(i), (40, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        out.write(img)
    out.release()
    return path


def _filled(video: Path, folder: Path, budget: int | None) -> landmarks.FrameCache:
    """A cache filled as the landmark pass fills it (a crop around a moving centre;
    the first two frames before any face, blank)."""
    folder.mkdir()
    info = probe(video)
    cache = landmarks.FrameCache(folder, 1.5, 64, source=info, budget_bytes=budget)
    for fr in frames(info):
        if fr.index < 2:
            cache.append_blank()
            continue
        centre = np.array([60.0 + fr.index % 7, 50.0 + fr.index % 5])
        cache.append(*landmarks._crop(fr.image, centre, cache))
    return cache


def test_crops_past_the_budget_are_decoded_again_the_same(video: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    monkeypatch.setattr(landmarks, "RECENT_FRAMES", 8)
    full = _filled(video, tmp_path / "full", None)
    small = _filled(video, tmp_path / "small", (10 + 8) * 64 * 64)
    try:
        assert len(small) == len(full) == N_FRAMES
        # While the video is read: 10 first crops and a ring of the 8 latest.
        assert small.disk_bytes == 18 * 64 * 64
        assert full.disk_bytes == (N_FRAMES - 2) * 64 * 64
        steps = [*range(20, 34), *range(40, 45)]
        # Within its budget a cache keeps every crop: nothing decoded, now or later.
        assert full.ensure(steps) == 0
        assert np.array_equal(full.image(5), full.image(5)) and full.decoded_again == 0
        assert small.ensure(steps) == len(steps)
        assert small.disk_bytes <= 20 * 64 * 64  # the slots of unneeded frames reused
        assert small.ensure(steps) == 0  # already there
        for t in steps:
            assert np.array_equal(small.image(t), full.image(t)), t
        # A frame no stage announced: decoded on demand, the same bytes.
        assert np.array_equal(small.image(5), full.image(5))
        assert np.array_equal(small.image(59), full.image(59))
        assert not small.image(1).any()  # before the first face: blank
    finally:
        small.close()
        full.close()


def test_a_cache_without_a_video_says_which_frame_it_lacks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(landmarks, "RECENT_FRAMES", 2)
    cache = landmarks.FrameCache(tmp_path, 1.0, 8, budget_bytes=4 * 64)
    try:
        for i in range(6):
            cache.append(np.full((8, 8), i, np.uint8), (0, 0))
        assert cache.image(1)[0, 0] == 1 and cache.image(5)[0, 0] == 5
        with pytest.raises(LookupError, match="frame 3"):
            cache.image(3)
    finally:
        cache.close()


def test_a_consult_read_on_a_small_disk_budget_measures_the_same(consult, tmp_path: Path,
                                                                 monkeypatch) -> None:
    """The analysis with a budget of a few hundred crops (the steps' frames decoded
    again) writes the same numbers as with every crop kept."""
    video, _, out = consult
    monkeypatch.setattr(landmarks, "CACHE_BUDGET_BYTES", 300 * 544 * 544)
    decoded: list[int] = []
    ensure = landmarks.FrameCache.ensure

    def counted(self: landmarks.FrameCache, frames) -> int:
        frames = list(frames)
        decoded.append(ensure(self, frames))
        # The budget, or the steps' own frames where they need more.
        assert self.disk_bytes <= max(300, len(frames)) * self.size**2
        return decoded[-1]

    monkeypatch.setattr(landmarks.FrameCache, "ensure", counted)
    again = analyze(video, tmp_path / "small-budget", "--patient", "p1", "--label", "baseline",
                    "--date", "2026-11-27")
    assert decoded and decoded[0] > 100  # the steps' frames were decoded again
    for name in ("asymmetry.csv", "metrics.csv", "rest.csv", "midline.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
