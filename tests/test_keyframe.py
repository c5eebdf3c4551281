"""Where a step's points are placed on its keyframe (landmarks.keyframe_landmarks).

One still-image detection puts a brow point 0.3-0.6 mm away from where another cut
of the same frame puts it, and the tracking pass's points lay 0.7-1.0 mm from the
generator's (the median of 64 cuts of its photo) on the brows; the median of the
keyframe's cut detections 0.2-0.3 mm (docs/METHOD.md §7.2)."""

from __future__ import annotations

import numpy as np
import pytest

from movement import synth
from movement.analysis.landmarks import keyframe_landmarks, track_landmarks
from movement.analysis.video import probe, read_frames, rgb_for_mesh

BROWS = [107, 66, 55, 65, 336, 296, 285, 295, 70, 63, 105, 300, 293, 334]
KEYS = [4, 13]


@pytest.fixture(scope="module")
def still(tmp_path_factory):
    d = tmp_path_factory.mktemp("keyframe")
    spec = synth.SynthSpec(steps=(), duration_s=2.0, fps=10.0, frame_size=(960, 540),
                           roll_deg=2.0, shift_px=8.0, zoom=0.02, noise_sigma=1.0, seed=5)
    synth.make_video(spec, d / "still.mp4")
    info = probe(d / "still.mp4")
    track, cache = track_landmarks(info, cache_dir=d)
    yield spec, info, track, cache
    cache.close()


def _mm_from_generator(spec, pts: np.ndarray, k: int) -> float:
    ren = synth.Renderer(spec)
    truth = ren.base_to_frame(k / spec.fps, ren.face.landmarks[BROWS])
    return float(np.median(np.linalg.norm(pts[BROWS] - truth, axis=1)) * ren.frame_mm_per_px)


def test_keyframe_points_lie_where_the_generator_put_them(still):
    spec, info, track, cache = still
    found = keyframe_landmarks(info, track, cache, KEYS)
    assert sorted(found) == KEYS
    for k in KEYS:
        detected = _mm_from_generator(spec, found[k], k)
        tracked = _mm_from_generator(spec, track.xy[k], k)
        assert detected < 0.45, (k, detected, tracked)
        assert detected < tracked, (k, detected, tracked)


def test_a_frame_that_is_not_the_cached_one_is_never_used(still, monkeypatch):
    """A container that seeks to the wrong frame: the crop check sends the reader back
    to decoding in order; if that is wrong too, the keyframe keeps the tracking points."""
    spec, info, track, cache = still
    import movement.analysis.landmarks as lm

    want = keyframe_landmarks(info, track, cache, KEYS)

    def off_by_three(info, indices, seek=True):
        if not seek:
            yield from read_frames(info, indices, seek=False)
            return
        for i in indices:
            yield i, dict(read_frames(info, [i + 3]))[i + 3]

    monkeypatch.setattr(lm, "read_frames", off_by_three)
    got = keyframe_landmarks(info, track, cache, KEYS)
    for k in KEYS:
        np.testing.assert_allclose(got[k], want[k])

    def always_wrong(info, indices, seek=True):
        for i in indices:
            yield i, np.zeros((info.height, info.width, 3), np.uint8)

    monkeypatch.setattr(lm, "read_frames", always_wrong)
    assert keyframe_landmarks(info, track, cache, KEYS) == {}


def test_reading_by_seeking_and_in_order_agree(still):
    _, info, _, _ = still
    a = dict(read_frames(info, [0, 7, 19]))
    b = dict(read_frames(info, [19, 7, 0], seek=False))
    assert sorted(a) == sorted(b) == [0, 7, 19]
    for i in a:
        assert np.array_equal(a[i], b[i])


def test_a_reduced_frame_is_detected_in_frame_pixels(still):
    """A 4K frame reaches the mesh at 1920 px: its detections must come back in the
    frame's pixels (before, the fresh detections of such a video were all refused)."""
    import mediapipe as mp

    from movement.analysis.landmarks import _fresh

    _, info, track, _ = still
    img = dict(read_frames(info, [4]))[4]
    rgb = rgb_for_mesh(img, max_side=480)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         max_num_faces=2) as mesh:
        pts = _fresh(mesh, rgb, track.xy[4].astype(float), (0, 0), img.shape[1] / rgb.shape[1])
    assert pts is not None
    assert np.median(np.linalg.norm(pts - track.xy[4], axis=1)) < 3.0
