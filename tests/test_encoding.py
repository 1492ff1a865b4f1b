"""Coarse-to-fine annealing of the positional encoding: the schedule and the fields' ``encoding_window``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resfields.encoding import annealing_alpha, coarse_to_fine_window
from resfields.errors import ShapeError, SpecError
from resfields.init import sample_parameters
from resfields.reference import field_forward
from resfields.spec import MLPSpec, SirenSpec


@given(st.floats(-2.0, 10.0), st.integers(1, 8))
def test_window_opens_band_by_band(alpha, bands):
    w = coarse_to_fine_window(alpha, bands)
    assert w.shape == (bands,) and w.dtype == np.float32
    assert np.all((w >= 0) & (w <= 1)) and np.all(np.diff(w) <= 0)  # low bands open first
    k = np.arange(bands)
    assert np.all(w[k <= alpha - 1] == 1) and np.all(w[k >= alpha] == 0)


def test_schedule_ends_with_the_plain_encoding():
    assert annealing_alpha(0, 100, 6) == 0 and annealing_alpha(50, 100, 6) == 3 and annealing_alpha(500, 100, 6) == 6
    assert annealing_alpha(0, 0, 6) == 6  # no annealing
    spec = MLPSpec(3, 2, hidden_features=8, n_layers=3, n_frequencies=4, skips=(1,))
    params = sample_parameters(spec, seed=0)
    x = np.random.default_rng(0).normal(size=(7, 3))
    full = coarse_to_fine_window(annealing_alpha(10, 10, 4), 4)
    np.testing.assert_array_equal(field_forward(spec, params, x, encoding_window=full), field_forward(spec, params, x))
    # a closed band is invisible: the field cannot see high frequencies of x yet
    low = coarse_to_fine_window(1.0, 4)
    shifted = x + np.pi  # sin/cos(2^k x) for k >= 1 are unchanged by a shift of pi; band 0 flips sign
    a = field_forward(spec, params, x, encoding_window=low)
    assert not np.allclose(a, field_forward(spec, params, shifted, encoding_window=low))


def test_window_errors():
    spec = MLPSpec(3, 2, hidden_features=8, n_layers=3, n_frequencies=4)
    params = sample_parameters(spec, seed=0)
    with pytest.raises(ShapeError, match=r"shape \(4,\)"):
        field_forward(spec, params, np.zeros((2, 3)), encoding_window=np.ones(3))
    siren = SirenSpec(3, 1, hidden_features=8, n_layers=2)
    with pytest.raises(ShapeError, match="no encoding"):
        field_forward(siren, sample_parameters(siren, seed=0), np.zeros((2, 3)), encoding_window=np.ones(1))
    with pytest.raises(SpecError, match="finite"):
        coarse_to_fine_window(float("nan"), 3)
