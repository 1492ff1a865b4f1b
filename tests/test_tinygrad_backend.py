"""The tinygrad backend against the float64 NumPy reference: forward, gradients, errors, state, training.

tinygrad on CPU compiles every new kernel with clang, so the shapes here are few and small.
"""

from __future__ import annotations

import numpy as np
import pytest

tinygrad = pytest.importorskip("tinygrad")

from tinygrad import Context, Tensor, TinyJit  # noqa: E402
from tinygrad.nn.optim import Adam  # noqa: E402
from tinygrad.nn.state import get_parameters, get_state_dict  # noqa: E402

from resfields.backends.tinygrad import (  # noqa: E402
    Field,
    ResFieldLinear,
    build_field,
    load_parameters,
    parameters_to_numpy,
    positional_encoding,
)
from resfields.errors import CheckpointError, FrameError, ShapeError  # noqa: E402
from resfields.init import random_parameters  # noqa: E402
from resfields.reference import field_forward, field_vjp  # noqa: E402
from resfields.reference import positional_encoding as ref_positional_encoding  # noqa: E402
from resfields.spec import (  # noqa: E402
    COMPRESSIONS,
    MODES,
    FieldSpec,
    LinearSpec,
    MLPSpec,
    ResFieldSpec,
    SirenSpec,
    frame_to_time,
    parameter_shapes,
)

CAPACITY = 4
COMBOS = [(c, m) for c in COMPRESSIONS for m in MODES]


def _rf(compression: str, mode: str) -> ResFieldSpec:
    return ResFieldSpec(
        capacity=CAPACITY, rank=None if compression == "none" else 3, mode=mode, compression=compression
    )


def _assert_close(actual: np.ndarray, expected: np.ndarray, what: str, tol: float = 1e-4) -> None:
    # normalised max error: fp32 against a float64 oracle
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    bound = tol * (1.0 + float(np.abs(expected).max(initial=0.0)))
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


def _key_kwargs(mode: str, key: np.ndarray | float | int) -> dict:
    return {"frame_ids": key} if mode == "lookup" else {"times": key}


def _make_key(mode: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Keys covering the edges: ids 0 and C-1; times exactly on knots and outside [-1, 1]."""
    n = int(np.prod(shape))
    if mode == "lookup":
        values = np.concatenate([[0, CAPACITY - 1], rng.integers(0, CAPACITY, size=n)])[:n]
        return values.reshape(shape).astype(np.int64)
    special = [-1.5, 1.5, *(frame_to_time(f, CAPACITY) for f in range(CAPACITY))]
    values = np.concatenate([special, rng.uniform(-1.0, 1.0, size=n)])[:n]
    return values.reshape(shape)


def _check_against_reference(spec: FieldSpec, x: np.ndarray, key: np.ndarray | float | int | None, mode: str | None):
    params = random_parameters(spec, seed=3)
    model = build_field(spec)
    load_parameters(model, params)
    rng = np.random.default_rng(7)
    kwargs = {} if mode is None else _key_kwargs(mode, key)
    expected = field_forward(spec, params, x, **kwargs)
    grad_out = rng.normal(size=expected.shape)
    expected_gx, expected_grads = field_vjp(spec, params, x, grad_out, **kwargs)

    xt = Tensor(x.astype(np.float32))
    y = model(xt, **kwargs)
    state = get_state_dict(model)
    names = sorted(params)
    loss = (y * Tensor(grad_out.astype(np.float32))).sum()
    grads = loss.gradient(xt, *(state[n] for n in names))
    Tensor.realize(y, *grads)  # one schedule for the forward and every gradient

    _assert_close(y.numpy(), expected, "forward")
    _assert_close(grads[0].numpy(), expected_gx, "grad x")
    for name, grad in zip(names, grads[1:], strict=True):
        _assert_close(grad.numpy(), expected_grads[name], f"grad {name}")


# ----------------------------------------------------------------------------- numerics vs reference


# Layer and field numerics for every compression and mode are the conformance grid's
# (tests/test_conformance.py, tinygrad against the float64 reference, forward and gradients);
# here only what the grid does not cover: softplus on both sides of its threshold, static fields.


def test_softplus_mlp_with_encoding_matches_reference() -> None:
    # beta = 100 puts beta z on both sides of the threshold 20: both softplus branches are exercised
    spec = MLPSpec(
        2,
        1,
        hidden_features=6,
        n_layers=2,
        activation="softplus",
        softplus_beta=100.0,
        n_frequencies=1,
        include_input=False,
        skips=(1,),
        resfield_layers=(0,),
        resfield=_rf("vm", "interpolation"),
    )
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, size=(6, 2))
    _check_against_reference(spec, x, _make_key("interpolation", (6,), rng), "interpolation")


def test_static_fields_and_encoding_match_reference() -> None:
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, size=(5, 2))
    relu = MLPSpec(2, 2, hidden_features=6, n_layers=2, activation="relu", skips=(1,))
    _check_against_reference(relu, x, None, None)
    _check_against_reference(LinearSpec(2, 3, bias=False), x, None, None)
    xe = np.linspace(-2, 2, 6).reshape(3, 2)
    _assert_close(
        positional_encoding(Tensor(xe.astype(np.float32)), 2, True).numpy(),
        ref_positional_encoding(xe, 2, True),
        "positional encoding",
    )


# ----------------------------------------------------------------------------- API, keys and errors


def test_layer_constructor_and_state_names() -> None:
    layer = ResFieldLinear(4, 3, rank=2, capacity=5, mode="interpolation", compression="tucker")
    spec = LinearSpec(4, 3, True, ResFieldSpec(5, 2, "interpolation", "tucker"))
    assert {k: tuple(v.shape) for k, v in get_state_dict(layer).items()} == parameter_shapes(spec)
    assert len(get_parameters(layer)) == len(parameter_shapes(spec))
    field = Field(SirenSpec(2, 1, hidden_features=4, n_layers=3, resfield_layers=(1,), resfield=ResFieldSpec(3, 2)))
    assert {k: tuple(v.shape) for k, v in get_state_dict(field).items()} == parameter_shapes(field.spec)
    static = ResFieldLinear.from_spec(LinearSpec(3, 2, bias=False))
    assert set(get_state_dict(static)) == {"weight"}
    with pytest.raises(TypeError):
        Field(LinearSpec(2, 2))


def test_init_follows_rules() -> None:
    Tensor.manual_seed(0)
    spec = MLPSpec(
        2,
        1,
        hidden_features=8,
        n_layers=4,
        n_frequencies=1,
        skips=(2,),
        init="geometric",
        resfield_layers=(1,),
        resfield=ResFieldSpec(3, 2, compression="vm"),
    )
    arrays = parameters_to_numpy(build_field(spec))
    assert set(arrays) == set(parameter_shapes(spec))
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert np.all(arrays["layers.1.matrices"] == 0.0)  # residuals start at zero
    assert np.std(arrays["layers.1.coefficients"]) > 0.0
    assert np.all(arrays["layers.0.weight"][:, 2:] == 0.0) and np.any(arrays["layers.0.weight"][:, :2] != 0.0)
    assert np.all(arrays["layers.2.weight"][:, 8 + 2 :] == 0.0) and np.any(arrays["layers.2.weight"][:, :10] != 0.0)
    assert np.allclose(arrays["layers.3.bias"], -0.5)
    siren = parameters_to_numpy(Field(SirenSpec(2, 1, hidden_features=16, n_layers=3, hidden_omega0=30.0)))
    first, hidden = np.abs(siren["layers.0.weight"]).max(), np.abs(siren["layers.1.weight"]).max()
    assert 0.25 < first <= 0.5  # U(-1/fan_in, 1/fan_in)
    assert 0.5 * np.sqrt(6 / 16) / 30 < hidden <= np.sqrt(6 / 16) / 30  # U(+-sqrt(6/fan_in)/omega)
    linear = parameters_to_numpy(ResFieldLinear.from_spec(LinearSpec(16, 8)))
    assert 0.125 < np.abs(linear["weight"]).max() <= 0.25  # torch.nn.Linear's U(+-1/sqrt(fan_in))


def test_tensor_keys_and_numpy_inputs_agree() -> None:
    spec = LinearSpec(3, 2, True, _rf("vm", "lookup"))
    layer = build_field(spec)
    load_parameters(layer, random_parameters(spec, seed=1))
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    ids = np.array([3, 0, 1, 3])
    a = layer(x, frame_ids=ids).numpy()
    b = layer(Tensor(x), frame_ids=Tensor(ids.astype(np.int32)), validate=False).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("model_kind", ["layer", "field"])
def test_bad_inputs_raise(model_kind: str) -> None:
    lookup, interp = _rf("cp", "lookup"), _rf("cp", "interpolation")
    if model_kind == "layer":
        make = lambda rf: ResFieldLinear.from_spec(LinearSpec(3, 2, True, rf))  # noqa: E731
    else:
        make = lambda rf: Field(SirenSpec(3, 2, hidden_features=4, n_layers=2, resfield_layers=(1,), resfield=rf))  # noqa: E731
    by_frame, by_time = make(lookup), make(interp)
    x = Tensor.zeros(4, 3)
    with pytest.raises(ShapeError, match="expected"):
        by_frame(Tensor.zeros(4, 2), frame_ids=0)
    # messages come from resfields.validate; match only the argument they name
    with pytest.raises(FrameError, match="needs frame_ids"):
        by_frame(x)
    with pytest.raises(FrameError, match="frame_ids"):
        by_frame(x, frame_ids=0, times=0.0)
    with pytest.raises(FrameError, match="times"):
        by_time(x, frame_ids=0)
    with pytest.raises(FrameError, match=r"\[0, 4\)"):
        by_frame(x, frame_ids=np.array([0, 1, 2, 4]))
    with pytest.raises(FrameError, match=r"\[0, 4\)"):
        by_frame(x, frame_ids=Tensor([0, -1, 2, 3]))
    with pytest.raises(FrameError, match="integer"):
        by_frame(x, frame_ids=np.array([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(FrameError, match="integer"):
        by_frame(x, frame_ids=np.array([True, False, True, True]))
    with pytest.raises(FrameError, match="NaN"):
        by_time(x, times=Tensor([0.0, float("nan"), 0.0, 0.0]))
    with pytest.raises(FrameError, match="floating"):
        by_time(x, times=np.array([0, 1, 0, 1]))
    with pytest.raises(ShapeError, match="broadcast"):
        by_frame(x, frame_ids=np.array([0, 1, 2]))
    with pytest.raises(ShapeError, match="broadcast"):
        by_frame(x, frame_ids=np.zeros((2, 4), dtype=np.int64))
    static = ResFieldLinear.from_spec(LinearSpec(3, 2))
    with pytest.raises(FrameError, match="no ResField layers"):
        static(x, frame_ids=0)


def test_load_parameters_is_strict() -> None:
    spec = LinearSpec(3, 2, True, _rf("vm", "lookup"))
    layer = build_field(spec)
    params = {k: v.astype(np.float32) for k, v in random_parameters(spec, seed=0).items()}
    with pytest.raises(CheckpointError, match="missing \\['matrices'\\]"):
        load_parameters(layer, {k: v for k, v in params.items() if k != "matrices"})
    with pytest.raises(CheckpointError, match="unexpected \\['extra'\\]"):
        load_parameters(layer, {**params, "extra": np.zeros(1)})
    with pytest.raises(CheckpointError, match="'bias'"):
        load_parameters(layer, {**params, "bias": np.zeros(3)})
    load_parameters(layer, params)
    out = parameters_to_numpy(layer)
    assert set(out) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(out[name], value)


# ----------------------------------------------------------------------------- training


def test_jitted_training_step_reduces_loss() -> None:
    Tensor.manual_seed(0)
    # a relu MLP (cheap kernels to compile) fitting a different curve per frame from its random init
    spec = MLPSpec(
        1,
        1,
        hidden_features=16,
        n_layers=3,
        activation="relu",
        resfield_layers=(1,),
        resfield=ResFieldSpec(capacity=4, rank=2, mode="lookup"),
    )
    model = Field(spec)
    params = get_parameters(model)
    Tensor.realize(*params)
    opt = Adam(params, lr=1e-2)

    grid = np.linspace(-1, 1, 16, dtype=np.float32)
    x_np = np.broadcast_to(grid[None, :, None], (4, 16, 1)).copy()
    target_np = np.stack([np.sin(3 * grid + f) for f in range(4)])[:, :, None].astype(np.float32)
    x, target = Tensor(x_np).realize(), Tensor(target_np).realize()
    ids = Tensor(np.arange(4, dtype=np.int32).reshape(4, 1)).realize()

    @TinyJit
    def step(x: Tensor, ids: Tensor, target: Tensor) -> Tensor:
        opt.zero_grad()
        loss = ((model(x, frame_ids=ids, validate=False) - target) ** 2).mean()
        loss.backward()
        return loss.realize(*opt.schedule_step())

    with Context(TRAINING=1):
        losses = [step(x, ids, target).item() for _ in range(30)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses


def test_training_takes_the_keys_inference_takes() -> None:
    # one key check for the layer, the field, training and prediction: infinite times clamp, NaN is refused
    from resfields.backends.tinygrad.training import TinygradTrainer

    layer = ResFieldLinear.from_spec(LinearSpec(2, 1, True, _rf("vm", "interpolation")))
    times = np.array([-np.inf, -0.5, 0.5, np.inf], dtype=np.float32)
    batch = {"x": np.ones((4, 2), np.float32), "times": times, "y": np.zeros((4, 1), np.float32)}
    trainer = TinygradTrainer(layer, lambda pred, b: (pred - b["y"]).square().mean(), 1e-2)
    assert np.isfinite(trainer.step(batch))
    assert np.isfinite(trainer.predict(batch["x"], times=times)).all()
    nan = np.array([0.0, np.nan, 0.0, 0.0], dtype=np.float32)
    for call in (lambda: layer(batch["x"], times=nan), lambda: trainer.step({**batch, "times": nan})):
        with pytest.raises(FrameError, match="times contain NaN"):
            call()
    assert trainer.optimizer_state()["adam.step"].tolist() == [1]


def test_sine_matches_numpy_over_siren_range():
    from resfields.backends.tinygrad.fields import sine

    z = np.linspace(-3000.0, 3000.0, 100001).astype(np.float32)
    err = np.abs(sine(Tensor(z)).numpy() - np.sin(z.astype(np.float64)))
    assert err.max() < 5e-7


def test_sine_cosine_match_numpy_over_encoding_range():
    # the positional encoding's bands (2^k x for the NeRF's k < 6 and |x| of a few scene units)
    from resfields.backends.tinygrad.fields import sine_cosine

    z = np.linspace(-200.0, 200.0, 40001).astype(np.float32)
    sin, cos = sine_cosine(Tensor(z))
    assert np.abs(sin.numpy() - np.sin(z.astype(np.float64))).max() < 5e-7
    assert np.abs(cos.numpy() - np.cos(z.astype(np.float64))).max() < 5e-7
