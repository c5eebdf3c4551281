"""Measurement kinds and repeated-movement reading on arrays with known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from movement import synth
from movement.analysis.activation import (
    PRIMARY_LOST_OWN_HOLDS,
    _mean,
    _peak_window,
    count_movements,
    group_holds,
    primary_lost,
    step_hold,
)
from movement.analysis.asymmetry import rest_rows, resting_asymmetry
from movement.analysis.dominance import dominant_for
from movement.analysis.face import measure_series
from movement.analysis.stabilise import Trajectories
from movement.protocol import Thresholds, load_protocol


def _pos(dx: float, dy: float, x0: float) -> tuple[np.ndarray, np.ndarray]:
    rest = np.array([[x0, 0.0]])
    pos = np.array([[[x0, 0.0]], [[x0 + dx, dy]]])
    return pos, rest


@pytest.mark.parametrize("side, x0, dx", [("right", -20.0, 1.5), ("left", 20.0, -1.5)])
def test_medial_is_toward_the_midline_on_either_side(side, x0, dx):
    pos, rest = _pos(dx, 0.0, x0)
    col = np.array([0])
    assert measure_series(pos, rest, "medial", col, side=side)[1] == pytest.approx(1.5)
    assert measure_series(pos, rest, "lateral", col, side=side)[1] == pytest.approx(-1.5)


def test_opening_grows_when_the_lower_points_move_down():
    rest = np.array([[0.0, -30.0], [0.0, -34.0]])  # inner lip margin, outer lip border
    pos = np.stack([rest, rest + np.array([[0.0, 0.2], [0.0, -0.8]])])
    v = measure_series(pos, rest, "opening", np.array([0]), np.array([1]))
    assert v[1] == pytest.approx(1.0)
    ap = measure_series(pos, rest, "aperture", np.array([0]), np.array([1]))
    assert ap[1] == pytest.approx(-1.0)


def test_movements_are_counted_once_per_excursion():
    t = np.arange(0, 5, 1 / 30)
    x = 2.0 * (0.5 - 0.5 * np.cos(2 * np.pi * 2.0 * t))  # 10 syllables
    noisy = x + np.random.default_rng(0).normal(0, 0.05, len(t))
    assert count_movements(x, 2.0) == 10
    assert count_movements(noisy, 2.0) == 10
    assert count_movements(np.full(50, 0.1), 0.1) == 0  # a still side makes none


def test_counts_and_creases_use_relative_dominance_rules():
    th = Thresholds()
    assert dominant_for("movements", 10, 9, th) == "balanced"
    assert dominant_for("movements", 4, 12, th) == "left"
    assert dominant_for("crease", 3.0, 1.5, th) == "right"
    assert dominant_for("crease", 2.2, 2.0, th) == "balanced"
    assert dominant_for("crease", 1.5, 0.2, th) == "balanced"  # below the noise floor
    assert dominant_for("displacement_mm", 3.0, 1.0, th) == "right"
    assert dominant_for("displacement_mm", np.nan, 1.0, th) == "undetermined"


def test_resting_widths_are_distances_from_the_midline():
    proto = load_protocol("standard")
    face = np.zeros((478, 2))
    face[:, 1] = 5.0
    m = next(m for m in proto.rest_measures if m.name == "nostril_width")
    face[list(m.right), 0] = -16.0  # patient's right: negative x
    face[list(m.left), 0] = 17.5
    traj = Trajectories(np.zeros(1), face[None], np.zeros(1), np.zeros(1), np.ones(1))
    rest = resting_asymmetry(traj, proto, np.array([0]))
    row = rest.set_index("measure").loc["nostril_width"]
    assert row["right_mm"] == pytest.approx(16.0) and row["left_mm"] == pytest.approx(17.5)
    rows = rest_rows(rest, proto).set_index("muscle_group")
    assert (rows["step"] == "rest").all()
    assert rows.loc["nostril_width", "measure"] == "width_mm"
    assert rows.loc["nostril_width", "dominant_side"] == "left"
    assert rows.loc["brow_lateral", "dominant_side"] == "balanced"
    assert isinstance(rows, pd.DataFrame)


def test_peak_time_is_the_middle_of_the_movement_not_of_its_noisy_top():
    """A 1.5 mm step shaped as the generator's (raised-cosine rise and fall, a 0.3 s
    hold) with slow tracking noise of 0.1 mm: the flat top's 90 % run wanders with the
    noise and its middle was the peak time (p90 0.13 s from the truth, up to 0.23 s
    over these noises). The half-height middle sits on the steep flanks."""
    fps = 30.0
    t = np.arange(0.0, 6.0, 1 / fps)
    motion = synth.StepMotion("clench", 1.5, 3.0, 4.5, 1.5, 1.5)
    clean = 1.5 * synth.envelope(motion, t)
    errors = []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        # Slow noise (about 0.25 s correlation), like a tracker's drift on smooth skin.
        noise = np.convolve(rng.normal(0.0, 1.0, len(t) + 48), np.hanning(49), "valid")
        v = clean + 0.1 * noise / noise.std()
        frames = _peak_window(v, 0, len(v) - 1, fps)
        errors.append(abs(float(t[frames].mean()) - motion.peak_s))
    assert np.percentile(errors, 90) < 0.1, np.round(sorted(errors)[-8:], 3)
    assert max(errors) <= 0.2, np.round(sorted(errors)[-8:], 3)


def test_a_point_lost_in_every_frame_reads_nan_without_a_numpy_warning():
    # A lid or corner lost in all rest frames must not print "Mean of empty slice" on
    # the clinician's terminal; its NaN is reported by the flags instead.
    x = np.array([[1.0, np.nan, 2.0], [3.0, np.nan, np.nan], [np.nan, np.nan, 4.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cols = _mean(x, axis=0)
        whole = _mean(x)
        empty = _mean(x[:, 1])
    np.testing.assert_allclose(cols, [2.0, np.nan, 3.0])
    assert whole == pytest.approx(2.5)
    assert np.isnan(empty)
    np.testing.assert_allclose(_mean(np.ones((2, 3, 2)), axis=(0, 1)), [1.0, 1.0])


def _pout_series(lost_from_s: float | None, seed: int = 0) -> tuple[dict, np.ndarray, float]:
    """A pout as the generator moves it (chin 2.4 mm, corners 3.0 mm, lower lip
    0.3 mm), with 0.1 mm tracking noise; the chin's points lost from ``lost_from_s``
    (its untextured skin) when given."""
    fps = 30.0
    t = np.arange(0.0, 6.0, 1 / fps)
    env = synth.envelope(synth.StepMotion("pout", 1.5, 3.0, 4.5, 1.0, 1.0), t)
    rng = np.random.default_rng(seed)
    series = {}
    for name, mm in (("mentalis", 2.4), ("orbicularis_oris", 3.0), ("mentalis_lip", 0.3)):
        for side in ("right", "left"):
            v = mm * env + rng.normal(0.0, 0.1, len(t))
            if name == "mentalis" and lost_from_s is not None:
                v[t >= lost_from_s] = np.nan
            series[(name, side)] = v
    return series, t, fps


def test_groups_are_read_at_their_own_hold_only_when_the_primary_is_lost():
    """The pout's chin lost from the top of its ramp: its hold is found among the
    frames it still has (before the expression's), and the mouth corners read there
    fell to half their movement. They are read at their own hold then -- and only
    then: with the chin tracked every group is read at the chin's hold, so a group
    that barely moves does not read the maximum of its noise."""
    step = load_protocol("extended").step("pout")
    series, t, fps = _pout_series(lost_from_s=2.5)
    lo, hi = int(1.5 * fps), int(4.5 * fps)
    # The chin lost from 2.5 s of the 1.5-4.5 s step: two thirds of its frames.
    lost = primary_lost(step, series, lo, hi)
    assert lost == pytest.approx(2 / 3, abs=0.02)
    own = lost > PRIMARY_LOST_OWN_HOLDS
    holds = group_holds(step, series, lo, hi, fps, own)
    chin = t[holds["mentalis"]].mean()
    assert chin < 2.6  # the chin's last frames, not the expression's hold
    corners = holds["orbicularis_oris"]
    assert abs(t[corners].mean() - 3.0) < 0.1
    read = np.mean(series[("orbicularis_oris", "right")][corners])
    assert read == pytest.approx(3.0, abs=0.15)
    assert np.mean(series[("orbicularis_oris", "right")][holds["mentalis"]]) < 2.5
    # The step is timed by the group that moves most (the corners), not the chin.
    assert np.array_equal(step_hold(step, series, holds, own), corners)

    noise_high = []
    for seed in range(20):
        series, t, fps = _pout_series(lost_from_s=None, seed=seed)
        own = primary_lost(step, series, lo, hi) > PRIMARY_LOST_OWN_HOLDS
        holds = group_holds(step, series, lo, hi, fps, own)
        assert all(np.array_equal(h, holds["mentalis"]) for h in holds.values())
        assert np.array_equal(step_hold(step, series, holds, own), holds["mentalis"])
        noise_high.append(np.mean(series[("mentalis_lip", "left")][holds["mentalis_lip"]]))
    assert abs(np.mean(noise_high) - 0.3) < 0.05


def test_an_outline_width_is_marked_when_the_head_is_turned_at_rest():
    """The lower-face width is read on the jaw contour: turned, the far side's contour
    is the face's outline, another line of skin, and the row says so; widths on the
    skin (the nostrils) and heights are not marked."""
    proto = load_protocol("standard")
    rest = pd.DataFrame([dict(measure=m.name, right_mm=10.0, left_mm=10.0, diff_mm=0.0,
                              larger_side="left") for m in proto.rest_measures])
    straight = rest_rows(rest, proto, 3.0).set_index("muscle_group")
    assert (straight["quality"] == "ok").all()
    turned = rest_rows(rest, proto, -10.0).set_index("muscle_group")
    assert turned.loc["lower_face_width", "quality"] == "low"
    assert "right jaw contour is the face's outline" in turned.loc["lower_face_width", "reason"]
    assert (turned.drop(index="lower_face_width")["quality"] == "ok").all()
    assert (rest_rows(rest, proto)["quality"] == "ok").all()  # no pose: not marked
    # Turned further, every row: FaceMesh places the far side less surely.
    far = rest_rows(rest, proto, 14.0).set_index("muscle_group")
    assert (far["quality"] == "low").all()
    assert "left side's landmarks are placed less surely" in far.loc["brow_lateral", "reason"]
    assert "jaw contour" in far.loc["lower_face_width", "reason"]


def test_every_resting_row_is_marked_when_the_head_is_tilted_at_rest():
    """Chin up or down beyond REST_PITCH_LOW_DEG at rest: every row is low, with the
    tilt's direction in words; a slight tilt marks nothing."""
    from movement.analysis.restface import REST_PITCH_LOW_DEG

    proto = load_protocol("standard")
    rest = pd.DataFrame([dict(measure=m.name, right_mm=10.0, left_mm=10.0, diff_mm=0.0,
                              larger_side="left") for m in proto.rest_measures])
    level = rest_rows(rest, proto, 0.0, REST_PITCH_LOW_DEG - 2)
    assert (level["quality"] == "ok").all()
    down = rest_rows(rest, proto, 0.0, -(REST_PITCH_LOW_DEG + 2)).set_index("muscle_group")
    assert (down["quality"] == "low").all()
    assert "chin-down" in down.loc["brow_lateral", "reason"]
    up = rest_rows(rest, proto, 0.0, REST_PITCH_LOW_DEG + 2)
    assert up["reason"].str.contains("chin-up").all()
