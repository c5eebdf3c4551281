"""A 10-minute video: frames are streamed, so memory stays flat in the video's length,
and the frame cache keeps to its disk budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from movement import synth
from movement.analysis import landmarks
from movement.protocol import load_protocol

# The benchmark's own measurement: a fresh `movement analyze` process and its peak RSS.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from speed import full_analysis  # noqa: E402

pytestmark = pytest.mark.slow  # ten minutes of video




def test_ten_minute_video_memory_stays_flat(tmp_path):
    ffmpeg = pytest.importorskip("imageio_ffmpeg").get_ffmpeg_exe()
    steps = synth.standard_steps(synth.SAMPLE_AMPLITUDES)
    spec = synth.SynthSpec(steps=steps, duration_s=30.0, frame_size=(480, 270), noise_sigma=1.0)
    short = tmp_path / "short.mp4"
    synth.make_video(spec, short)
    long = tmp_path / "long.mp4"
    # 20 repeats of the 30 s consult: a 10-minute video, 18,000 frames.
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-stream_loop", "19", "-i", str(short),
                    "-c", "copy", str(long)], check=True)
    # The yardstick: a 1-minute video (two repeats) against a 10-minute one.
    minute = tmp_path / "minute.mp4"
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-stream_loop", "1", "-i", str(short),
                    "-c", "copy", str(minute)], check=True)
    _, small, _ = full_analysis(minute, tmp_path / "s")
    _, big, disk = full_analysis(long, tmp_path / "l")
    frames = 20 * 900
    # Allowed growth: the per-frame landmark arrays (478 landmarks in image px
    # and in stabilised mm, float32; the ~100 points tracked for finding steps,
    # as tracked, aligned and in mm, float64) and nothing else that scales with
    # the video's length.
    points = len(dict.fromkeys(p for s in load_protocol("standard").steps
                               for p in s.primary.all_points))
    points += len({p for v in load_protocol("standard").anchors.values() for p in v})
    per_frame_mb = (2 * 478 * 4 + 3 * points * 8) * 2 * frames / 2**20
    print(f"peak memory: 1 min {small:.0f} MB, 10 min {big:.0f} MB "
          f"(landmark arrays {per_frame_mb:.0f} MB)")
    assert big <= 1.5 * small + per_frame_mb
    # Every crop kept would be 5 GB: the cache stays within its budget (the steps'
    # frames decoded again fit in it).
    print(f"temporary files of the 10-minute video: at most {disk:.0f} MB")
    assert disk <= landmarks.CACHE_BUDGET_BYTES / 2**20 + 50
