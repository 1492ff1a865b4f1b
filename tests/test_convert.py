"""Upstream ResFields state dicts -> canonical parameters: exact W + dW for every frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from resfields.checkpoint import load_checkpoint, save_checkpoint
from resfields.convert import convert_upstream_state_dict, detect_upstream_layers
from resfields.errors import CheckpointError
from resfields.reference import per_sample_weights, time_matrix
from resfields.spec import LinearSpec, ResFieldSpec, SirenSpec, layer_specs, parameter_shapes

C, R, N_OUT, N_IN = 6, 3, 5, 4
RNG_SEED = 0


def upstream_layer(
    compression: str, rng: np.random.Generator, o: int = N_OUT, i: int = N_IN
) -> tuple[dict, np.ndarray]:
    """A fake upstream ResFieldLinear state dict (bare keys) and its ``W + dW`` for every frame ``(C, O, I)``."""
    state = {"weight": rng.normal(size=(o, i)), "bias": rng.normal(size=o)}
    if compression == "vm":
        state["weights_t"] = rng.normal(size=(C, R))
        state["matrix_t"] = rng.normal(size=(R, o * i))
        delta = (state["weights_t"] @ state["matrix_t"]).reshape(C, o, i)
    elif compression == "none":
        state["matrix_t"] = rng.normal(size=(C, o * i))
        delta = state["matrix_t"].reshape(C, o, i)
    elif compression == "cp":
        w, f1, f2, f3 = rng.normal(size=R), rng.normal(size=(C, R)), rng.normal(size=(o, R)), rng.normal(size=(i, R))
        state.update({"lin_w": w, "lin_f1": f1, "lin_f2": f2, "lin_f3": f3})
        delta = np.einsum("r,cr,or,ir->coi", w, f1, f2, f3)
    else:
        core = rng.normal(size=(R, R, R))
        f0, f1, f2 = rng.normal(size=(C, R)), rng.normal(size=(o, R)), rng.normal(size=(i, R))
        state.update({"core": core, "factors.0": f0, "factors.1": f1, "factors.2": f2})
        delta = np.einsum("abd,ca,ob,id->coi", core, f0, f1, f2)
    return state, state["weight"][None] + delta


def rf_spec(compression: str, mode: str = "lookup") -> ResFieldSpec:
    return ResFieldSpec(capacity=C, rank=None if compression == "none" else R, mode=mode, compression=compression)


def canonical_weights(layer: LinearSpec, params: dict) -> np.ndarray:
    """``W + dW`` of every frame ``(C, O, I)`` from canonical parameters, via the reference."""
    rf = layer.resfield
    a = time_matrix(rf, np.arange(rf.capacity), np)
    return per_sample_weights(layer, params, a, np)


@pytest.mark.parametrize("compression", ["vm", "none", "cp", "tucker"])
def test_lone_layer_exact(compression: str) -> None:
    rng = np.random.default_rng(RNG_SEED)
    state, expected = upstream_layer(compression, rng)
    spec = LinearSpec(N_IN, N_OUT, resfield=rf_spec(compression))
    params = convert_upstream_state_dict(state, spec, dtype=np.float64)
    assert {k: v.shape for k, v in params.items()} == parameter_shapes(spec)
    np.testing.assert_allclose(canonical_weights(spec, params), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(params["bias"], state["bias"])


def test_interpolation_between_frames_matches_upstream_blend() -> None:
    # upstream interpolates W + dW linearly between knots (grid_sample, align_corners=True)
    rng = np.random.default_rng(1)
    state, per_frame = upstream_layer("cp", rng)
    spec = LinearSpec(N_IN, N_OUT, resfield=rf_spec("cp", mode="interpolation"))
    params = convert_upstream_state_dict(state, spec, dtype=np.float64)
    t = np.array([-1.0, -0.9, 0.13, 1.0])
    pos = (t + 1) / 2 * (C - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, C - 1)
    w = (pos - lo)[:, None, None]
    expected = (1 - w) * per_frame[lo] + w * per_frame[hi]
    got = per_sample_weights(spec, params, time_matrix(spec.resfield, t, np), np)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("compression", ["vm", "none", "cp", "tucker"])
def test_siren_with_upstream_prefixes(compression: str) -> None:
    torch = pytest.importorskip("torch")
    spec = SirenSpec(
        in_features=2,
        out_features=3,
        hidden_features=N_OUT,
        n_layers=4,
        resfield_layers=(1, 2),
        resfield=rf_spec(compression),
    )
    rng = np.random.default_rng(2)
    state: dict = {}
    expected: dict[int, np.ndarray] = {}
    for index, layer in enumerate(layer_specs(spec)):
        prefix = f"net.{index}.linear."
        if layer.resfield is None:
            state[prefix + "weight"] = rng.normal(size=(layer.out_features, layer.in_features))
            state[prefix + "bias"] = rng.normal(size=layer.out_features)
        else:
            layer_state, expected[index] = upstream_layer(compression, rng, layer.out_features, layer.in_features)
            state.update({prefix + k: v for k, v in layer_state.items()})
    assert detect_upstream_layers(state) == [f"net.{i}.linear." for i in range(4)]
    torch_state = {k: torch.as_tensor(v) for k, v in state.items()}  # as torch's state_dict() would give
    params = convert_upstream_state_dict(torch_state, spec)
    assert {k: v.shape for k, v in params.items()} == parameter_shapes(spec)
    assert {v.dtype for v in params.values()} == {np.dtype(np.float32)}
    params64 = convert_upstream_state_dict(state, spec, dtype=np.float64)
    for index, layer in enumerate(layer_specs(spec)):
        mine = {k.split(".", 2)[2]: v for k, v in params64.items() if k.startswith(f"layers.{index}.")}
        if layer.resfield is None:
            np.testing.assert_array_equal(mine["weight"], state[f"net.{index}.linear.weight"])
        else:
            np.testing.assert_allclose(canonical_weights(layer, mine), expected[index], rtol=1e-12, atol=1e-12)


def test_explicit_layer_names_and_round_trip_through_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    spec = SirenSpec(
        in_features=N_IN,
        out_features=N_OUT,
        hidden_features=N_OUT,
        n_layers=2,
        resfield_layers=(0,),
        resfield=rf_spec("vm"),
    )
    layer0, _ = upstream_layer("vm", rng)
    state = {f"model.first.{k}": v for k, v in layer0.items()}
    state.update({"model.last.weight": rng.normal(size=(N_OUT, N_OUT)), "model.last.bias": rng.normal(size=N_OUT)})
    # keys appear in reverse order: auto-detection would swap the layers, explicit names do not
    state = dict(reversed(list(state.items())))
    with pytest.raises(CheckpointError):
        convert_upstream_state_dict(state, spec)
    params = convert_upstream_state_dict(state, spec, layer_names=["model.first", "model.last."])
    save_checkpoint(tmp_path, spec, params)
    ckpt = load_checkpoint(tmp_path)
    np.testing.assert_array_equal(ckpt.arrays["layers.0.matrices"], params["layers.0.matrices"])


def test_errors() -> None:
    rng = np.random.default_rng(4)
    state, _ = upstream_layer("vm", rng)
    spec = LinearSpec(N_IN, N_OUT, resfield=rf_spec("vm"))
    # wrong number of layers
    with pytest.raises(CheckpointError, match="layer"):
        convert_upstream_state_dict(state, spec, layer_names=["a", "b"])
    # missing tensor
    with pytest.raises(CheckpointError, match="weights_t"):
        convert_upstream_state_dict({k: v for k, v in state.items() if k != "weights_t"}, spec)
    # misshaped tensor
    with pytest.raises(CheckpointError, match=r"matrix_t.*shape"):
        convert_upstream_state_dict({**state, "matrix_t": state["matrix_t"][:, :-1]}, spec)
    # wrong compression in the spec: the cp factors are missing, the vm ones unused
    with pytest.raises(CheckpointError, match="lin_"):
        convert_upstream_state_dict(state, LinearSpec(N_IN, N_OUT, resfield=rf_spec("cp")))
    # extra keys are an error unless strict=False
    with pytest.raises(CheckpointError, match="extra"):
        convert_upstream_state_dict({**state, "extra": np.zeros(2)}, spec)
    assert set(convert_upstream_state_dict({**state, "extra": np.zeros(2)}, spec, strict=False)) == set(
        parameter_shapes(spec)
    )
    # static spec given a ResField state dict: the residual keys are left over
    with pytest.raises(CheckpointError, match="not used"):
        convert_upstream_state_dict(state, LinearSpec(N_IN, N_OUT))
    # non-float values
    with pytest.raises(CheckpointError, match="non-float"):
        convert_upstream_state_dict({**state, "bias": np.arange(N_OUT)}, spec)


def test_none_compression_with_weights_t_is_folded() -> None:
    rng = np.random.default_rng(5)
    state, _ = upstream_layer("none", rng)
    state["weights_t"] = rng.normal(size=(C, C))
    expected = state["weight"][None] + (state["weights_t"] @ state["matrix_t"]).reshape(C, N_OUT, N_IN)
    spec = LinearSpec(N_IN, N_OUT, resfield=rf_spec("none"))
    params = convert_upstream_state_dict(state, spec, dtype=np.float64)
    np.testing.assert_allclose(canonical_weights(spec, params), expected, rtol=1e-12, atol=1e-12)
