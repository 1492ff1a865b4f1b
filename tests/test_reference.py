"""The reference is the oracle, so it is checked against finite differences and hand-computed
values, and shown to run unchanged on other array-API namespaces."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace

from resfields.errors import FrameError, ShapeError
from resfields.init import random_parameters, sample_parameters
from resfields.reference import field_forward, field_vjp, resfield_linear, time_matrix
from resfields.spec import COMPRESSIONS, MODES, LinearSpec, MLPSpec, ResFieldSpec, SirenSpec, frame_to_time


def _rf(compression: str, mode: str, capacity: int = 5) -> ResFieldSpec:
    return ResFieldSpec(
        capacity=capacity, rank=None if compression == "none" else 3, mode=mode, compression=compression
    )


def _key(mode: str, rng: np.random.Generator, shape=(4, 1), capacity: int = 5):
    if mode == "lookup":
        return {"frame_ids": rng.integers(0, capacity, size=shape)}
    return {"times": rng.uniform(-1.3, 1.3, size=shape)}


SPECS = {
    "layer": lambda rf: LinearSpec(6, 7, True, rf),
    "siren": lambda rf: SirenSpec(
        2, 3, hidden_features=8, n_layers=4, omega0=3.0, hidden_omega0=3.0, resfield_layers=(1, 2), resfield=rf
    ),
    "mlp": lambda rf: MLPSpec(
        3,
        2,
        hidden_features=8,
        n_layers=4,
        n_frequencies=2,
        skips=(2,),
        activation="softplus",
        softplus_beta=3.0,
        resfield_layers=(0, 1, 2, 3),
        resfield=rf,
    ),
}


@pytest.mark.parametrize("kind", SPECS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_vjp_matches_finite_differences(kind, mode, compression, rng):
    spec = SPECS[kind](_rf(compression, mode))
    params = random_parameters(spec, seed=1)
    x = rng.normal(size=(4, 3, spec.in_features))
    kw = _key(mode, rng)
    cot = rng.normal(size=(4, 3, spec.out_features))
    grad_x, grads = field_vjp(spec, params, x, cot, **kw)
    assert set(grads) == set(params)

    def loss(p, xx):
        return float(np.sum(cot * field_forward(spec, p, xx, **kw)))

    eps = 1e-6
    for name in [*params, "x"]:
        direction = rng.normal(size=x.shape if name == "x" else params[name].shape)
        if name == "x":
            fd = (loss(params, x + eps * direction) - loss(params, x - eps * direction)) / (2 * eps)
            analytic = np.sum(grad_x * direction)
        else:
            plus, minus = dict(params), dict(params)
            plus[name], minus[name] = params[name] + eps * direction, params[name] - eps * direction
            fd = (loss(plus, x) - loss(minus, x)) / (2 * eps)
            analytic = np.sum(grads[name] * direction)
        assert analytic == pytest.approx(fd, rel=1e-5, abs=1e-7), name


def test_time_matrix_by_hand():
    rf = ResFieldSpec(capacity=5, rank=1, mode="interpolation")
    # t = 0 -> p = 2 (a knot); t = -0.75 -> p = 0.5; t = 5 -> clamped to p = 4; t = -1 -> p = 0
    times = np.array([0.0, -0.75, 5.0, -1.0])
    a = time_matrix(rf, times, array_namespace(times))
    expected = np.zeros((4, 5))
    expected[0, 2] = 1.0
    expected[1, 0] = expected[1, 1] = 0.5
    expected[2, 4] = 1.0
    expected[3, 0] = 1.0
    np.testing.assert_allclose(a, expected)


def test_layer_by_hand():
    rf = ResFieldSpec(capacity=2, rank=1)
    spec = LinearSpec(2, 1, True, rf)
    params = {
        "weight": np.array([[1.0, 2.0]]),
        "bias": np.array([0.5]),
        "coefficients": np.array([[0.0], [2.0]]),
        "matrices": np.array([[[1.0, -1.0]]]),
    }
    x = np.array([[1.0, 1.0], [3.0, 1.0]])
    # frame 0: W = [1, 2]; frame 1: W = [1, 2] + 2 [1, -1] = [3, 0]
    y = resfield_linear(spec, params, x, frame_ids=np.array([0, 1]))
    np.testing.assert_allclose(y, [[3.5], [9.5]])
    rf_i = ResFieldSpec(capacity=2, rank=1, mode="interpolation")
    y_mid = resfield_linear(LinearSpec(2, 1, True, rf_i), params, x[:1], times=np.array([0.0]))
    np.testing.assert_allclose(y_mid, [[0.5 * 3.5 + 0.5 * (3.0 + 0.5)]])


def test_interpolation_on_knots_equals_lookup(rng):
    for compression in COMPRESSIONS:
        look = LinearSpec(4, 3, True, _rf(compression, "lookup", 6))
        interp = LinearSpec(4, 3, True, _rf(compression, "interpolation", 6))
        params = random_parameters(look, seed=2)
        x = rng.normal(size=(6, 4))
        frames = np.arange(6)
        np.testing.assert_allclose(
            resfield_linear(look, params, x, frame_ids=frames),
            resfield_linear(interp, params, x, times=-1 + 2 * frames / 5.0),
            atol=1e-12,
        )


def test_fresh_resfield_equals_vanilla(rng):
    rf = ResFieldSpec(capacity=4, rank=2)
    spec = SirenSpec(2, 1, hidden_features=8, n_layers=4, resfield_layers=(1, 2), resfield=rf)
    vanilla = SirenSpec(2, 1, hidden_features=8, n_layers=4)
    params = sample_parameters(spec, seed=0, dtype=np.float64)
    vanilla_params = {k: v for k, v in params.items() if k.rsplit(".", 1)[1] in ("weight", "bias")}
    x = rng.normal(size=(5, 2))
    np.testing.assert_allclose(
        field_forward(spec, params, x, frame_ids=np.arange(5) % 4), field_forward(vanilla, vanilla_params, x)
    )


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"frame_ids": np.array([0, 4])}, FrameError, r"\[0, 4\)"),
        ({"frame_ids": np.array([-1, 0])}, FrameError, r"\[0, 4\)"),
        ({"frame_ids": np.array([0.0, 1.0])}, FrameError, "integer"),
        ({"frame_ids": np.zeros((3,), dtype=int)}, ShapeError, "broadcast"),
        ({"times": np.array([0.0, 0.1])}, FrameError, "takes frame_ids, not times"),
        ({}, FrameError, "needs frame_ids"),
    ],
)
def test_bad_time_input(kw, error, message):
    spec = LinearSpec(3, 2, True, ResFieldSpec(capacity=4, rank=1))
    params = random_parameters(spec)
    with pytest.raises(error, match=message):
        resfield_linear(spec, params, np.zeros((2, 3)), **kw)


def test_bad_times_and_shapes():
    spec = LinearSpec(3, 2, True, ResFieldSpec(capacity=4, rank=1, mode="interpolation"))
    params = random_parameters(spec)
    with pytest.raises(FrameError, match="NaN"):
        resfield_linear(spec, params, np.zeros((2, 3)), times=np.array([0.0, np.nan]))
    with pytest.raises(ShapeError, match="in_features=3"):
        resfield_linear(spec, params, np.zeros((2, 4)), times=0.0)
    with pytest.raises(FrameError, match="no ResField layers"):
        field_forward(SirenSpec(3, 1), random_parameters(SirenSpec(3, 1)), np.zeros((2, 3)), frame_ids=0)


def test_runs_on_array_api_strict(rng):
    xps = pytest.importorskip("array_api_strict")
    spec = SPECS["mlp"](_rf("tucker", "interpolation"))
    params = random_parameters(spec, seed=3)
    x = rng.normal(size=(4, 3, 3))
    times = rng.uniform(-1, 1, size=(4, 1))
    expected = field_forward(spec, params, x, times=times)
    strict = field_forward(
        spec, {k: xps.asarray(v) for k, v in params.items()}, xps.asarray(x), times=xps.asarray(times)
    )
    np.testing.assert_allclose(np.asarray(strict), expected, rtol=1e-12, atol=1e-12)


def test_runs_on_torch_tensors(rng):
    torch = pytest.importorskip("torch")
    spec = SPECS["siren"](_rf("cp", "lookup"))
    params = random_parameters(spec, seed=4)
    x = rng.normal(size=(4, 3, 2))
    ids = rng.integers(0, 5, size=(4, 1))
    expected = field_forward(spec, params, x, frame_ids=ids)
    got = field_forward(
        spec, {k: torch.from_numpy(v) for k, v in params.items()}, torch.from_numpy(x), frame_ids=torch.from_numpy(ids)
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch", "tinygrad"])
def test_float32_frame_times_land_on_one_knot_on_every_backend(backend):
    """The spec's time convention: a time within its dtype's rounding of a knot is that knot, so the
    float32 time of frame f picks coefficient f alone (no (1 - 1e-7, 1e-7) blend) on every backend;
    a time just outside that rounding still blends."""
    capacity = 100
    rf = ResFieldSpec(capacity=capacity, rank=2, mode="interpolation")
    knots = np.array([frame_to_time(f, capacity) for f in range(capacity)], dtype=np.float32)
    off = np.float32(frame_to_time(40.01, capacity))  # 1e-2 of a spacing: far outside any rounding
    times = np.concatenate([knots, [off]])
    if backend == "numpy":
        matrix = np.asarray(time_matrix(rf, times, array_namespace(times)))
    elif backend == "torch":
        torch = pytest.importorskip("torch")
        from resfields.backends.torch.plan import plan_frames

        plan = plan_frames(rf, (len(times),), None, torch.as_tensor(times), torch.device("cpu"))
        blend, index = plan.blend.double().numpy(), plan.index.numpy()
        matrix = np.zeros((len(times), capacity))
        matrix[np.arange(len(times)), index] += 1 - blend
        matrix[np.arange(len(times)), np.minimum(index + 1, capacity - 1)] += blend
    else:
        pytest.importorskip("tinygrad")
        from tinygrad import Tensor

        from resfields.backends.tinygrad.frames import time_matrix as tiny_time_matrix

        matrix = tiny_time_matrix(rf, Tensor(times)).numpy()
    np.testing.assert_array_equal(matrix[:capacity], np.eye(capacity))
    assert np.count_nonzero(matrix[capacity]) == 2
    np.testing.assert_allclose(matrix[capacity, 40:42], [0.99, 0.01], atol=1e-4)
