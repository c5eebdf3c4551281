"""Tests of the ground-truth generator: the truth must be exactly what the pixels show.

The truth is recomputed here independently of the module (SciPy's root finder for the
forward solve, the protocol's measurement kinds written out again), so a bug in the
generator's solver or measurement cannot hide behind itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.optimize import fsolve

from movement import synth as S
from movement.analysis.face import face_axes

SIDES = ("right", "left")
NOSE_TIP = 1

# Asymmetric requests per step (right_mm, left_mm), both sides moving at once.
REQUESTS = {
    "frown": (3.0, 1.6),
    "raise": (4.2, 2.3),
    "squint": (2.6, 1.3),
    "eee": (2.0, 3.4),
    "smile": (6.0, 4.0),
}


@pytest.fixture(scope="module")
def face() -> S.BaseFace:
    return S.base_face()


def independent_forward(fld: S.DisplacementField, p: np.ndarray) -> np.ndarray:
    """q with q - f(q) = p, by SciPy's hybrid root finder, one point at a time."""
    return np.array(
        [fsolve(lambda q, pi=pi: q - fld(q) - pi, pi + fld(pi), xtol=1e-12) for pi in p]
    )


def independent_truth(step: str, fld: S.DisplacementField, face: S.BaseFace) -> dict:
    """The protocol measurement of MEASUREMENTS.md section 2, written out again."""
    grp = S.protocol().step(step).primary
    _, up = face_axes(face.landmarks)
    out = {}
    for side in SIDES:
        p = face.landmarks[list(grp.points(side))]
        q = independent_forward(fld, p)
        if grp.kind == "aperture":
            pl = face.landmarks[list(grp.lower_points(side))]
            ql = independent_forward(fld, pl)
            rest = np.mean(p @ up) - np.mean(pl @ up)
            peak = np.mean(q @ up) - np.mean(ql @ up)
            out[side] = (rest - peak) * face.mm_per_px
        elif grp.kind == "length":
            out[side] = np.linalg.norm(np.mean(q - p, axis=0)) * face.mm_per_px
        elif grp.kind == "up":
            out[side] = np.mean((q - p) @ up) * face.mm_per_px
        else:
            raise AssertionError(f"unexpected kind {grp.kind}")
    return out


# --------------------------------------------------------------------------- base photo


def test_base_photo_is_a_large_face_with_iris_scale(face: S.BaseFace) -> None:
    img = S.load_face_photo()
    assert img.dtype == np.uint8 and img.shape[0] == 720 and img.shape[2] == 3
    # Face height ~0.55 of the crop, as the placement in every video assumes.
    assert 0.5 < face.height_px / img.shape[0] < 0.62
    # An adult iris is 11.7 mm; a 720 px crop of this photo gives ~0.4 mm/px.
    assert 0.3 < face.mm_per_px < 0.5
    # Patient's right eye (33) is on the image left of the base photo.
    assert face.landmarks[33, 0] < face.landmarks[263, 0]
    # The crop is an exact window of the canvas frames are rendered from.
    ox, oy = face.offset
    np.testing.assert_array_equal(face.canvas[oy : oy + 720, ox : ox + img.shape[1]], img)
    # Callers get a copy: drawing on it must not corrupt the cached photo.
    img[:] = 0
    assert S.load_face_photo().any()


# --------------------------------------------------------------------------- forward solve


def test_forward_solve_inverts_the_backward_warp(face: S.BaseFace) -> None:
    # A sizeable pull (15 px, sigma 20 px) centred on the commissure itself.
    c = face.landmarks[61]
    bump = S.Bump(tuple(c), (-12.0, -9.0), 20.0, 20.0, (1.0, 0.0), (0.0, -1.0))
    fld = S.DisplacementField((bump,)) + S.calibrate_step("smile", 6.0, 4.0).field
    p = face.landmarks[[61, 291, 78, 308, 0, 17]]
    q = S.solve_forward(p, fld)
    # q is the pixel whose backward-warp source is p.
    assert np.abs(q - fld(q) - p).max() < 1e-3
    # ... and not the naive reading p + f(p): the commissure has left the bump's peak,
    # so it really moves ~12 px, not 15 + the smile's pull.
    naive = p + fld(p)
    assert np.linalg.norm(q[0] - naive[0]) > 2.0


def test_forward_solve_handles_the_steep_eyelid_squeeze(face: S.BaseFace) -> None:
    fld = S.calibrate_step("squint", 3.5, 3.0).field
    grp = S.protocol().step("squint").primary
    p = face.landmarks[list(grp.all_points)]
    # The squeeze is steeper than 1 px/px near the eye centre, where plain
    # fixed-point iteration diverges; the solver must still find the inverse.
    centre = face.landmarks[list(grp.right + grp.right_lower)].mean(0, keepdims=True)
    assert np.abs(fld.jacobian(centre)).max() > 1.0
    q = S.solve_forward(np.vstack([p, centre]), fld)
    assert np.abs(q - fld(q) - np.vstack([p, centre])).max() < 1e-3


def test_fold_check_rejects_a_field_that_duplicates_skin() -> None:
    # Gradient of a Gaussian bump peaks at A / sigma * e^-0.5 = 1.8 > 1: the warp folds.
    bump = S.Bump((100.0, 100.0), (30.0, 0.0), 10.0, 10.0, (1.0, 0.0), (0.0, -1.0))
    with pytest.raises(ValueError, match="folds"):
        S.check_no_fold(S.DisplacementField((bump,)))
    gentle = S.DisplacementField((bump.scaled(0.2),))
    assert S.check_no_fold(gentle) > 0.5


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("step", list(REQUESTS))
def test_calibrated_truth_equals_request(step: str, face: S.BaseFace) -> None:
    right, left = REQUESTS[step]
    cal = S.calibrate_step(step, right, left)
    truth = independent_truth(step, cal.field, face)
    assert truth["right"] == pytest.approx(right, rel=0.02)
    assert truth["left"] == pytest.approx(left, rel=0.02)
    # The module's own figure agrees with the independent one (both are "the truth").
    for side in SIDES:
        assert cal.truth[side] == pytest.approx(truth[side], abs=1e-3)


def test_squint_sample_stays_physiological(face: S.BaseFace) -> None:
    grp = S.protocol().step("squint").primary
    lm, up = face.landmarks, face.up
    for side, req in zip(SIDES, S.SAMPLE_AMPLITUDES["squint"], strict=True):
        upper, lower = lm[list(grp.points(side))], lm[list(grp.lower_points(side))]
        rest = (upper @ up).mean() - (lower @ up).mean()
        # An eye narrows; it must not be asked to close by more than 60 % of its opening.
        assert 0 < req < 0.6 * rest * face.mm_per_px


def test_out_of_range_request_is_refused() -> None:
    with pytest.raises(ValueError, match="folding|folds"):
        S.calibrate_step("squint", 6.0, 0.0)


@pytest.mark.parametrize("step", list(REQUESTS))
def test_one_side_field_leaves_other_side_and_nose_still(step: str, face: S.BaseFace) -> None:
    amp = max(REQUESTS[step])
    cal = S.calibrate_step(step, amp, 0.0)
    q = S.warped_landmarks(cal.field)
    moved_mm = np.linalg.norm(q - face.landmarks, axis=1) * face.mm_per_px
    grp = S.protocol().step(step).primary
    mine = list(grp.points("right") + grp.lower_points("right"))
    other = list(grp.points("left") + grp.lower_points("left"))
    assert moved_mm[mine].max() > 0.5 * amp  # the right side really moves ...
    assert moved_mm[other].max() < 0.05 * amp  # ... the left side does not
    assert moved_mm[NOSE_TIP] < 0.05 * amp
    assert abs(cal.truth["left"]) < 0.05 * amp


# (outward, up) sign of the mean movement per step; outward = away from the midline.
EXPECTED_PULL = {
    "frown": (-1, -1),  # medial and down
    "raise": (0, 1),
    "eee": (1, -1),
    "smile": (1, 1),
}


@pytest.mark.parametrize("step", list(EXPECTED_PULL))
def test_pull_directions_follow_the_anatomy(step: str, face: S.BaseFace) -> None:
    cal = S.calibrate_step(step, *REQUESTS[step])
    q = S.warped_landmarks(cal.field)
    grp = S.protocol().step(step).primary
    for side in SIDES:
        idx = list(grp.points(side))
        d = np.mean(q[idx] - face.landmarks[idx], axis=0)
        # Patient's right is on the image left: outward is -lateral there.
        outward = (d @ face.lateral) * (-1 if side == "right" else 1)
        along_up = d @ face.up
        want_out, want_up = EXPECTED_PULL[step]
        norm = np.hypot(outward, along_up)
        for got, want in ((outward, want_out), (along_up, want_up)):
            if want:
                assert np.sign(got) == want and abs(got) > 0.3 * norm
            else:
                assert abs(got) < 0.05 * norm


def test_squint_closes_both_lids(face: S.BaseFace) -> None:
    cal = S.calibrate_step("squint", *REQUESTS["squint"])
    q = S.warped_landmarks(cal.field)
    grp = S.protocol().step("squint").primary
    for side in SIDES:
        upper, lower = list(grp.points(side)), list(grp.lower_points(side))
        up_move = np.mean((q[upper] - face.landmarks[upper]) @ face.up)
        low_move = np.mean((q[lower] - face.landmarks[lower]) @ face.up)
        # Upper lid comes down, lower lid comes up, the upper doing more of the work.
        assert up_move < 0 < low_move
        assert -up_move > low_move


# --------------------------------------------------------------------------- time course


def test_envelope_rests_rises_holds_and_falls() -> None:
    st = S.StepMotion("frown", 1.0, 2.5, 4.0, 3.0, 1.0)
    t = np.array([0.0, 0.99, 1.0, 2.5 - S.HOLD_S, 2.5, 2.5 + S.HOLD_S, 4.0, 4.01, 9.0])
    np.testing.assert_allclose(S.envelope(st, t), [0, 0, 0, 1, 1, 1, 0, 0, 0], atol=1e-12)
    rise = S.envelope(st, np.linspace(1.0, 2.5 - S.HOLD_S, 50))
    fall = S.envelope(st, np.linspace(2.5 + S.HOLD_S, 4.0, 50))
    assert np.all(np.diff(rise) > 0) and np.all(np.diff(fall) < 0)
    assert S.envelope(st, 1.0 + (1.5 - S.HOLD_S) / 2) == pytest.approx(0.5)


def test_overlapping_steps_are_rejected() -> None:
    a = S.StepMotion("frown", 0.5, 1.5, 2.5, 1.0, 1.0)
    b = S.StepMotion("raise", 2.0, 3.0, 4.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="overlap"):
        S.SynthSpec(steps=(a, b), duration_s=5.0)


def test_standard_steps_follow_protocol_order_and_keep_skipped_slots() -> None:
    steps = S.standard_steps(S.SAMPLE_AMPLITUDES)
    assert [s.name for s in steps] == ["frown", "raise", "squint", "eee", "smile"]
    gaps = [b.start_s - a.end_s for a, b in zip(steps, steps[1:], strict=False)]
    assert gaps == pytest.approx([2.0] * 4)
    amps = {k: v for k, v in S.SAMPLE_AMPLITUDES.items() if k != "squint"}
    skipped = S.standard_steps(amps, skip=["squint"])
    assert [s.name for s in skipped] == ["frown", "raise", "eee", "smile"]
    # The skipped step's slot stays as rest: later steps keep their times.
    assert skipped[2].start_s == steps[3].start_s
    with pytest.raises(ValueError, match="squint"):
        S.standard_steps(amps)


# --------------------------------------------------------------------------- rendering


def bilinear(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    x, y = pts[:, 0], pts[:, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x0 + 1] * fx * (1 - fy)
        + img[y0 + 1, x0] * (1 - fx) * fy
        + img[y0 + 1, x0 + 1] * fx * fy
    )


@pytest.mark.parametrize("step", ["smile", "raise", "squint"])
def test_rendered_pixel_at_truth_shows_the_base_point(step: str, face: S.BaseFace) -> None:
    """The frame pixel where the truth puts a landmark samples that landmark's skin."""
    right, left = REQUESTS[step]
    st = S.StepMotion(step, 0.2, 1.0, 1.8, right, left)
    spec = S.SynthSpec(
        steps=(st,), duration_s=2.0, frame_size=(1280, 720), roll_deg=3.0, shift_px=6.0,
        zoom=0.04,
    )
    r = S.Renderer(spec)
    t = st.peak_s
    src = r.source_map(t)  # canvas position each frame pixel shows
    grp = S.protocol().step(step).primary
    p = face.landmarks[list(grp.all_points)]
    q = S.solve_forward(p, r.steps[(step, right, left)].field)
    at_truth = bilinear(src, r.base_to_frame(t, q)) - face.offset
    assert np.abs(at_truth - p).max() < 0.05  # base px
    # The naive reading p + f(p) would point at different skin.
    naive = p + r.steps[(step, right, left)].field(p)
    at_naive = bilinear(src, r.base_to_frame(t, naive)) - face.offset
    assert np.abs(at_naive - p).max() > 0.3


def test_frames_are_reproducible_across_threads() -> None:
    st = S.StepMotion("eee", 0.2, 0.5, 0.8, 2.0, 3.0)
    spec = S.SynthSpec(
        steps=(st,), duration_s=1.0, fps=10, frame_size=(160, 120), noise_sigma=4.0,
        light_drift=0.2, roll_deg=2.0, seed=3,
    )
    r = S.Renderer(spec)
    threaded = list(r.frames(workers=2))
    serial = [r.frame(i) for i in range(spec.n_frames)]
    assert len(threaded) == spec.n_frames == 10
    for a, b in zip(threaded, serial, strict=True):
        np.testing.assert_array_equal(a, b)
    # Noise is fresh per frame, not one pattern repeated.
    assert not np.array_equal(threaded[0], threaded[1])


# --------------------------------------------------------------------------- video files


def read_frame(path: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, img = cap.read()
    cap.release()
    assert ok, f"cannot read frame {index} of {path}"
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("synth")
    st = S.StepMotion("smile", 0.3, 1.0, 1.7, 5.0, 3.0)
    kw = dict(
        steps=(st,), duration_s=2.0, fps=10.0, frame_size=(320, 240), noise_sigma=2.0,
        roll_deg=1.0, shift_px=3.0, zoom=0.02, seed=5,
    )
    plain = S.make_video(S.SynthSpec(**kw), out / "plain.mp4")
    mirrored = S.make_video(S.SynthSpec(mirrored=True, **kw), out / "mirrored.mp4",
                            truth_path=out / "elsewhere" / "m.json")
    return {"dir": out, "plain": plain, "mirrored": mirrored}


def test_video_has_expected_frames_size_and_fps(tiny_videos: dict) -> None:
    path = Path(tiny_videos["plain"]["video"])
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = cap.get(cv2.CAP_PROP_FPS)
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    assert (n, decoded, size) == (20, 20, (320, 240))
    assert fps == pytest.approx(10.0)


def test_truth_json_structure(tiny_videos: dict) -> None:
    path = tiny_videos["dir"] / "plain.truth.json"
    truth = json.loads(path.read_text())
    assert truth["fps"] == 10.0 and truth["frame_size"] == [320, 240]
    assert truth["mirrored"] is False
    assert 0.3 < truth["mm_per_px_base"] < 0.5
    assert truth["degradations"]["noise_sigma"] == 2.0
    (step,) = truth["steps"]
    assert (step["name"], step["start_s"], step["peak_s"], step["end_s"]) == (
        "smile", 0.3, 1.0, 1.7,
    )
    primary = step["groups"][0]
    assert primary["primary"] is True
    assert (primary["muscle_group"], primary["measure"]) == ("zygomaticus", "displacement_mm")
    assert primary["right_mm"] == pytest.approx(5.0, rel=0.02)
    assert primary["left_mm"] == pytest.approx(3.0, rel=0.02)
    # The returned dict is the same truth as the file.
    assert tiny_videos["plain"]["steps"] == truth["steps"]


def test_mirrored_video_is_the_flip_with_anatomical_truth(tiny_videos: dict) -> None:
    m = tiny_videos["mirrored"]
    assert Path(m["truth_path"]).exists()
    truth = json.loads(Path(m["truth_path"]).read_text())
    assert truth["mirrored"] is True
    # Sides stay anatomical: the same right/left numbers as the unmirrored video.
    assert truth["steps"][0]["groups"] == tiny_videos["plain"]["steps"][0]["groups"]
    k = 10  # the smile's peak
    plain = read_frame(Path(tiny_videos["plain"]["video"]), k)
    mirrored = read_frame(Path(m["video"]), k)
    flipped_diff = np.abs(cv2.flip(plain, 1) - mirrored).mean()
    unflipped_diff = np.abs(plain - mirrored).mean()
    assert flipped_diff < 3.0  # codec noise only
    assert unflipped_diff > 5 * flipped_diff


def test_video_path_must_be_mp4(tmp_path: Path) -> None:
    st = S.StepMotion("smile", 0.3, 1.0, 1.7, 5.0, 3.0)
    with pytest.raises(ValueError, match=".mp4"):
        S.make_video(S.SynthSpec(steps=(st,), duration_s=2.0), tmp_path / "x.avi")


# --------------------------------------------------------------------------- another face
# Last in this file: switching the face drops the generator's caches.


def test_another_face_keeps_the_truth_exact(tmp_path: Path, face: S.BaseFace) -> None:
    # A close-up (the face fills 60 % of the photo's height, more than the base crop's
    # 55 %), so the canvas must be padded around it.
    from skimage import data

    photo = cv2.cvtColor(data.astronaut()[40:220, 150:300], cv2.COLOR_RGB2BGR)
    path = tmp_path / "close-up.png"
    cv2.imwrite(str(path), cv2.resize(photo, None, fx=2.0, fy=2.0))
    try:
        S.use_face(str(path))
        other = S.base_face()
        assert other.image.shape[0] == 720 and 0.5 < other.height_px / 720 < 0.62
        ox, oy = other.offset
        np.testing.assert_array_equal(
            other.canvas[oy : oy + 720, ox : ox + other.image.shape[1]], other.image)
        # Padded by replicating the photo's edge: no mirror copy of the face.
        assert (other.canvas[:, 0] == other.canvas[:, 1]).all()
        assert (other.canvas[0] == other.canvas[1]).all()
        assert not np.array_equal(other.landmarks, face.landmarks)
        cal = S.calibrate_step("raise", 4.2, 2.3)
        truth = independent_truth("raise", cal.field, other)
        assert truth["right"] == pytest.approx(4.2, abs=0.01)
        assert truth["left"] == pytest.approx(2.3, abs=0.01)
        spec = S.standard_spec(REQUESTS, face=str(path), frame_size=(320, 180))
        assert S.Renderer(spec).face is other
    finally:
        S.use_face(S.ASTRONAUT)
    # Back to the astronaut: the caches hold nothing of the other face.
    np.testing.assert_allclose(S.base_face().landmarks, face.landmarks)
    assert S.Renderer(S.standard_spec(REQUESTS)).face.mm_per_px == face.mm_per_px


def test_sample_regeneration_takes_one_folder_and_nothing_else(tmp_path, monkeypatch, capsys):
    """``python -m movement.synth --help`` prints its usage rather than filling a folder
    named ``--help`` with videos; other extra arguments are a usage error."""
    from movement.synth.render import main

    monkeypatch.chdir(tmp_path)
    for argv, code in ((["--help"], 0), (["-x"], 2), (["a", "b"], 2)):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == code
        assert "usage: python -m movement.synth" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
