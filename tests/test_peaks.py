"""The movement counter's peak finding agrees with SciPy's ``find_peaks``."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import find_peaks

from movement.analysis.activation import count_movements, local_maxima, prominence

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
