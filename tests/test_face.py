import numpy as np
import pytest

from movement.analysis.face import face_axes, iris_diameter_px, measure_series


def _face(angle_deg=0.0):
    lm = np.zeros((478, 2))
    lm[33] = (100, 200)  # patient's right outer corner: image left
    lm[263] = (300, 200)
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    for c, ring in (
        ((130, 200), (468, 469, 470, 471, 472)),
        ((270, 200), (473, 474, 475, 476, 477)),
    ):
        lm[ring[0]] = c
        lm[ring[1]] = (c[0] + 10, c[1])
        lm[ring[2]] = (c[0], c[1] - 10)
        lm[ring[3]] = (c[0] - 10, c[1])
        lm[ring[4]] = (c[0], c[1] + 10)
    return lm @ rot.T


def test_iris_diameter_is_rotation_invariant():
    assert iris_diameter_px(_face()) == pytest.approx(20.0)
    assert iris_diameter_px(_face(17)) == pytest.approx(20.0)


@pytest.mark.parametrize("roll", [0.0, 17.0])
def test_iris_diameter_is_the_horizontal_axis(roll):
    """11.7 mm is the horizontal visible iris diameter: a ring FaceMesh draws 0.8 as tall
    as wide (lids) reads its width, along the eye's own axis whatever the head's roll."""
    lm = _face(roll)
    for ring in ((468, 469, 470, 471, 472), (473, 474, 475, 476, 477)):
        c = lm[ring[0]]
        lm[[ring[2], ring[4]]] = c + (lm[[ring[2], ring[4]]] - c) * 0.8
    assert iris_diameter_px(lm) == pytest.approx(20.0)


def test_face_axes_point_to_patient_left_and_forehead():
    lat, up = face_axes(_face())
    assert lat == pytest.approx([1, 0])
    assert up == pytest.approx([0, -1])  # image y grows downward


def test_measure_kinds():
    rest = np.zeros((4, 2))
    pos = np.zeros((3, 4, 2))
    pos[1, :2] = (3, 4)  # columns 0,1 move (3, 4): length 5, up 4
    pos[2, 2, 1] = -1.0  # upper lid down by 1
    pos[2, 3, 1] = 0.5  # lower lid up by 0.5
    cols = np.array([0, 1])
    assert measure_series(pos, rest, "length", cols) == pytest.approx([0, 5, 0])
    assert measure_series(pos, rest, "up", cols) == pytest.approx([0, 4, 0])
    assert measure_series(pos, rest, "down", cols) == pytest.approx([0, -4, 0])
    ap = measure_series(pos, rest, "aperture", np.array([2]), np.array([3]))
    assert ap == pytest.approx([0, 0, 1.5])
    with pytest.raises(ValueError):
        measure_series(pos, rest, "aperture", cols)


def _with_iris(lm, diameter):
    """``lm`` with both iris rings redrawn at ``diameter`` px about their centres."""
    out = lm.copy()
    for ring in ((468, 469, 470, 471, 472), (473, 474, 475, 476, 477)):
        c = out[ring[0]]
        out[list(ring[1:])] = c + (out[list(ring[1:])] - c) * diameter / 20.0
    return out


def test_scale_corrects_the_tracked_iris_by_fresh_detections():
    from movement.analysis.landmarks import LandmarkTrack
    from movement.analysis.stabilise import estimate_scale

    n = 20
    t = np.arange(n) / 10
    # Tracking mode reads the iris 20 px (ipd 140); in the frames where the patient
    # squints (every other one here) 16 px.
    tracked = np.stack([_with_iris(_face(), 20.0 if i % 2 else 16.0) for i in range(n)])
    tracked[1] *= 1.1  # the head 10 % nearer in one frame: the ratio takes it out
    # Fresh detections read 0.9 of the tracked iris of the same frame, whatever it is.
    at = np.array([1, 4, 5, 9, 10])
    fresh = np.stack([_with_iris(_face(), 0.9 * (20.0 if i % 2 else 16.0)) for i in at])
    fresh[0] *= 1.1
    track = LandmarkTrack(t, tracked.astype(np.float32), np.ones(n, int), at,
                          fresh.astype(np.float32))
    s = estimate_scale(track)
    assert s.fresh_factor == pytest.approx(0.9, rel=1e-4) and s.fresh_used == 5
    # The median tracked ratio lies between the squint's and the open eye's, at 18 px;
    # corrected: 16.2 px.
    assert s.iris_px == pytest.approx(0.9 * 18.0, rel=1e-3)
    assert s.mm_per_px == pytest.approx(11.7 / (0.9 * 18.0), rel=1e-3)
    assert s.ipd_px == pytest.approx(140.0) and s.frames_used == n
    # Fewer than three fresh detections: no correction.
    few = LandmarkTrack(t, tracked.astype(np.float32), np.ones(n, int), at[:2],
                        fresh[:2].astype(np.float32))
    assert estimate_scale(few).iris_px == pytest.approx(18.0, rel=1e-3)
    assert (estimate_scale(few).fresh_factor, estimate_scale(few).fresh_used) == (1.0, 0)


def test_detection_offsets_spread_over_the_span():
    from movement.analysis.face import detection_offset

    span = 40.0
    cuts = np.array([detection_offset(i, span) for i in range(32)])
    assert cuts.dtype.kind == "i" and (cuts >= 0).all() and (cuts < span).all()
    # Distinct, and each quarter of the span is visited along both axes: a median over
    # them averages the detector's grid dependence rather than sampling one phase.
    assert len({tuple(c) for c in cuts}) == 32
    for axis in (0, 1):
        assert set((cuts[:, axis] // (span / 4)).astype(int)) == {0, 1, 2, 3}
    # Any prefix is spread too (a short video has few fresh detections).
    first = np.array([detection_offset(i, span) for i in range(4)])
    assert first[:, 0].max() - first[:, 0].min() >= span / 2


def test_fresh_detections_are_cut_and_mapped_back(tmp_path):
    from movement import synth
    from movement.analysis.landmarks import FRESH_CUTS, track_landmarks
    from movement.analysis.video import probe

    spec = synth.SynthSpec(steps=(), duration_s=3.0, fps=10.0, frame_size=(480, 360), seed=3)
    synth.make_video(spec, tmp_path / "still.mp4")
    track, cache = track_landmarks(probe(tmp_path / "still.mp4"), cache_dir=tmp_path)
    cache.close()
    # Several cuts of each frame (FRESH_CUTS), every half second.
    frames, counts = np.unique(track.fresh_frames, return_counts=True)
    assert len(frames) >= 4 and (counts == FRESH_CUTS).all()
    # Cut by up to a tenth of the face height (~20 px here) and put back: the fresh
    # landmarks lie on the tracked ones to a pixel or two, not 20 px off.
    d = np.linalg.norm(track.fresh_xy - track.xy[track.fresh_frames], axis=-1)
    assert np.median(d) < 2.0


def test_scale_takes_the_median_of_each_frames_cuts_first():
    from movement.analysis.landmarks import LandmarkTrack
    from movement.analysis.stabilise import estimate_scale

    n = 12
    t = np.arange(n) / 10
    tracked = np.stack([_with_iris(_face(), 20.0) for _ in range(n)]).astype(np.float32)
    # Three frames, three cuts each. Pooled, the median would be 22 px (five of the
    # nine cuts); per frame it is 18, 18 and 22, and their median 18.
    at = np.repeat([2, 6, 10], 3)
    iris = [18.0, 18.0, 22.0, 22.0, 18.0, 18.0, 22.0, 22.0, 22.0]
    fresh = np.stack([_with_iris(_face(), d) for d in iris]).astype(np.float32)
    s = estimate_scale(LandmarkTrack(t, tracked, np.ones(n, int), at, fresh))
    assert s.fresh_factor == pytest.approx(0.9, rel=1e-4)
    assert s.fresh_used == 9
    # Two frames only (six cuts): fewer frames than FRESH_MIN, no correction.
    few = LandmarkTrack(t, tracked, np.ones(n, int), at[:6], fresh[:6])
    assert estimate_scale(few).fresh_factor == 1.0
