"""The float64 reference as an inference backend (``get_backend("numpy")``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resfields.backends import get_backend
from resfields.errors import FrameError, ShapeError
from resfields.init import sample_parameters
from resfields.reference import field_forward
from resfields.reference.model import ReferenceField, ref
from resfields.spec import ArraySpec, Init, MLPSpec, ModelSpec, ResFieldSpec, SirenSpec

MODES = ("lookup", "interpolation")


def _spec(mode: str, compression: str = "vm") -> MLPSpec:
    rf = ResFieldSpec(capacity=4, rank=None if compression == "none" else 2, mode=mode, compression=compression)
    return MLPSpec(
        3, 2, hidden_features=8, n_layers=4, n_frequencies=2, skips=(2,), resfield_layers=(1, 2), resfield=rf
    )


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(MODES), st.sampled_from(("vm", "none", "cp", "tucker")), st.integers(0, 1000))
def test_grouped_rows_equal_per_row_weights(mode, compression, seed):
    spec = _spec(mode, compression)
    params = sample_parameters(spec, seed=seed)
    rng = np.random.default_rng(seed)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in params.items()}  # residuals away from zero
    x = rng.normal(size=(5, 3, 3))
    key = rng.integers(0, 4, size=(5, 1)) if mode == "lookup" else rng.choice([-1.0, -0.2, 0.4], size=(5, 1))
    which = "frame_ids" if mode == "lookup" else "times"
    expected = field_forward(spec, params, x, **{which: key})
    np.testing.assert_allclose(ReferenceField(spec, params)(x, **{which: key}), expected, rtol=1e-12, atol=1e-12)


def test_bad_keys_are_reported_like_the_reference():
    spec = _spec("lookup")
    field = ReferenceField(spec, sample_parameters(spec, seed=0))
    with pytest.raises(FrameError):
        field(np.zeros((2, 3)), frame_ids=np.array([0, 7]))
    with pytest.raises(ShapeError):
        field(np.zeros((2, 3)), frame_ids=np.array([0, 1, 2]))


def test_backend_builds_models_and_arrays_have_tensor_methods():
    impl = get_backend("numpy")
    spec = ModelSpec(
        (("f", SirenSpec(2, 1, hidden_features=8, n_layers=2)),), (("beta", ArraySpec((1,), Init("constant", 0.5))),)
    )
    arrays = sample_parameters(spec, seed=0)
    model = impl.build(spec, arrays)
    out = impl.infer(
        model, lambda m, b: {"y": m.f(b["x"]).sigmoid() * m.beta.abs().unsqueeze(0)}, {"x": np.ones((3, 2))}
    )
    expected = 0.5 / (
        1
        + np.exp(
            -field_forward(
                spec.field("f"), {k[2:]: v for k, v in arrays.items() if k.startswith("f.")}, np.ones((3, 2))
            )
        )
    )
    np.testing.assert_allclose(out["y"], expected, rtol=1e-12)
    a = ref(np.array([-2.0, 4.0]))
    assert a.abs().tolist() == [2, 4] and a.square().sqrt().tolist() == [2, 4] and a.sign().tolist() == [-1, 1]
    assert float(ref(np.array([800.0])).sigmoid()[0]) == 1.0  # no overflow
