"""Fast replacements of NumPy/SciPy routines on the analysis's path give the same numbers:
the movement counter's peak finding (SciPy's ``find_peaks``), the trackers' row medians
(``np.nanmedian``) and the pose's Euler angles (SciPy's ``Rotation``)."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import find_peaks

from movement.analysis import pose
from movement.analysis.activation import count_movements, local_maxima, prominence
from movement.analysis.imagetrack import nanmedian_rows

signals = st.lists(st.integers(-4, 4), min_size=0, max_size=40).map(
    lambda v: np.array(v, float) / 2)


@settings(max_examples=400, deadline=None)
@given(signals)
def test_maxima_and_prominences_match_scipy(v: np.ndarray) -> None:
    ref, props = find_peaks(v, prominence=(None, None))
    assert local_maxima(v) == list(ref)
    assert [prominence(v, i) for i in ref] == list(props["prominences"])


@settings(max_examples=200, deadline=None)
@given(signals, st.floats(0.3, 3.0))
def test_count_matches_scipy(v: np.ndarray, top: float) -> None:
    ref, _ = find_peaks(v, height=0.5 * top, prominence=0.4 * top)
    assert count_movements(v, top) == len(ref)


def test_a_plateau_and_the_ends() -> None:
    v = np.array([3.0, 1, 2, 2, 2, 1, 0, 1, 3])
    assert local_maxima(v) == [3]  # the ends are never peaks; the flat top once


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.integers(1, 9), st.booleans(), st.integers(0, 2**32 - 1))
def test_row_medians_match_numpy(rows: int, cols: int, pairs: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (rows, cols, 2) if pairs else (rows, cols)
    a = rng.normal(size=shape)
    a[rng.random(shape) < 0.4] = np.nan
    a[0] = np.nan  # a row with nothing left
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmedian(a, axis=1)
    np.testing.assert_array_equal(nanmedian_rows(a), ref)


@settings(max_examples=200, deadline=None)
@given(st.floats(-85, 85), st.floats(-85, 85), st.floats(-85, 85))
def test_angles_invert_rotation(yaw: float, pitch: float, roll: float) -> None:
    from scipy.spatial.transform import Rotation

    rot = pose.rotation(yaw, pitch, roll)
    assert pose.angles(rot) == pytest.approx((yaw, pitch, roll), abs=1e-9)
    y, p, r = Rotation.from_matrix(rot).as_euler("yxz", degrees=True)
    assert pose.angles(rot) == pytest.approx((y, -p, r), abs=1e-9)


def test_importing_movement_keeps_blas_to_one_thread_unless_the_user_chose():
    """OpenBLAS's worker threads only contend with the analysis's own (pose.smooth_normals
    waited seconds on them on a busy machine): ``import movement`` asks for one, before
    NumPy loads it, and leaves a user's own setting alone."""
    import os
    import subprocess
    import sys

    code = "import movement, numpy, os; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "1"
    env["OPENBLAS_NUM_THREADS"] = "3"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "3"
