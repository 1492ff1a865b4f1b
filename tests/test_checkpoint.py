"""Checkpoint I/O: round trips, strict loading, atomic saving, cross-backend loading."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from resfields.backends import get_backend, load_field, save_field
from resfields.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from resfields.errors import CheckpointError, SpecError
from resfields.init import random_parameters
from resfields.reference import field_forward
from resfields.spec import LinearSpec, MLPSpec, ResFieldSpec, SirenSpec, parameter_shapes, spec_to_dict

SIREN = SirenSpec(
    in_features=2,
    out_features=3,
    hidden_features=16,
    n_layers=4,
    resfield_layers=(1, 2),
    resfield=ResFieldSpec(capacity=5, rank=3),
)
MLP = MLPSpec(
    in_features=3,
    out_features=1,
    hidden_features=16,
    n_layers=4,
    n_frequencies=2,
    skips=(2,),
    activation="softplus",
    resfield_layers=(1,),
    resfield=ResFieldSpec(capacity=4, rank=2, mode="interpolation", compression="tucker"),
)
LAYER = LinearSpec(4, 5, resfield=ResFieldSpec(capacity=3, compression="none"))


def params32(spec, seed: int = 0) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float32) for k, v in random_parameters(spec, seed).items()}


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, SIREN, params32(SIREN), metadata={"task": "video", "steps": 10})
    return folder


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("spec", [SIREN, MLP, LAYER], ids=["siren", "mlp", "layer"])
def test_round_trip(tmp_path: Path, spec) -> None:
    arrays = params32(spec, seed=1)
    out = save_checkpoint(tmp_path / "c", spec, arrays, metadata={"note": "hi"})
    assert out == tmp_path / "c"
    ckpt = load_checkpoint(out)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.spec == spec
    assert ckpt.metadata == {"note": "hi"}
    assert list(ckpt.arrays) == list(parameter_shapes(spec))
    for name, value in arrays.items():
        assert ckpt.arrays[name].dtype == np.float32
        np.testing.assert_array_equal(ckpt.arrays[name], value)


def test_config_content_and_layout(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((saved / CONFIG_NAME).read_text())
    assert config == {
        "schema_version": 1,
        "library": "resfields",
        "field": spec_to_dict(SIREN),
        "metadata": {"task": "video", "steps": 10},
    }
    from safetensors import safe_open

    with safe_open(str(saved / WEIGHTS_NAME), framework="np") as f:
        assert f.metadata()["format"] == "resfields"
        assert set(f.keys()) == set(parameter_shapes(SIREN))


def test_float16_storage(tmp_path: Path) -> None:
    arrays = params32(SIREN, seed=2)
    save_checkpoint(tmp_path, SIREN, arrays, dtype="float16")
    from safetensors import safe_open

    with safe_open(str(tmp_path / WEIGHTS_NAME), framework="np") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    ckpt = load_checkpoint(tmp_path)
    for name, value in arrays.items():
        assert ckpt.arrays[name].dtype == np.float32
        np.testing.assert_allclose(ckpt.arrays[name], value, rtol=1e-3, atol=1e-4)


def test_overwrite_existing_checkpoint(saved: Path) -> None:
    new = params32(SIREN, seed=7)
    save_checkpoint(saved, SIREN, new)
    np.testing.assert_array_equal(load_checkpoint(saved).arrays["layers.0.weight"], new["layers.0.weight"])
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no temp files left


# ----------------------------------------------------------------------------- strict saving


def test_save_rejects_mismatched_arrays_and_writes_nothing(tmp_path: Path) -> None:
    arrays = params32(SIREN)
    del arrays["layers.1.matrices"]
    arrays["layers.9.weight"] = np.zeros((2, 2), np.float32)
    arrays["layers.0.bias"] = np.zeros(7, np.float32)
    folder = tmp_path / "new"
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(folder, SIREN, arrays)
    message = str(info.value)
    assert "layers.1.matrices" in message and "missing" in message
    assert "layers.9.weight" in message and "unexpected" in message
    assert "layers.0.bias" in message and "shape" in message
    assert not (folder / WEIGHTS_NAME).exists() and not (folder / CONFIG_NAME).exists()


def test_failed_save_keeps_previous_checkpoint(saved: Path) -> None:
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    bad = params32(SIREN)
    bad["layers.0.weight"][0, 0] = np.nan
    with pytest.raises(CheckpointError, match="NaN"):
        save_checkpoint(saved, SIREN, bad)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


def test_save_rejects_float16_overflow_and_bad_options(tmp_path: Path) -> None:
    arrays = params32(SIREN)
    arrays["layers.0.weight"][0, 0] = 1e6
    with pytest.raises(CheckpointError, match="float16"):
        save_checkpoint(tmp_path / "a", SIREN, arrays, dtype="float16")
    with pytest.raises(SpecError, match="dtype"):
        save_checkpoint(tmp_path / "b", SIREN, params32(SIREN), dtype="bfloat16")  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="metadata"):
        save_checkpoint(tmp_path / "c", SIREN, params32(SIREN), metadata={"f": object()})
    assert not any(tmp_path.rglob(WEIGHTS_NAME))


# ----------------------------------------------------------------------------- strict loading


def _rewrite_config(folder: Path, edit) -> None:
    config = json.loads((folder / CONFIG_NAME).read_text())
    edit(config)
    (folder / CONFIG_NAME).write_text(json.dumps(config))


def _rewrite_weights(folder: Path, edit) -> None:
    ckpt = load_checkpoint(folder)
    arrays = dict(ckpt.arrays)
    edit(arrays)
    save_file(arrays, str(folder / WEIGHTS_NAME))


def test_missing_folder_and_files(tmp_path: Path, saved: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        load_checkpoint(saved)
    (saved / CONFIG_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"missing config\.json"):
        load_checkpoint(saved)


@pytest.mark.parametrize(
    ("payload", "pattern"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"schema_version": 1, "field": NaN}', "not valid JSON"),
    ],
)
def test_invalid_config_json(saved: Path, payload: bytes, pattern: str) -> None:
    (saved / CONFIG_NAME).write_bytes(payload)
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(saved)
    assert CONFIG_NAME in str(info.value)


def test_wrong_schema_version(saved: Path) -> None:
    _rewrite_config(saved, lambda c: c.update(schema_version=2))
    with pytest.raises(CheckpointError, match="schema_version") as info:
        load_checkpoint(saved)
    assert isinstance(info.value.__cause__, SpecError)
    _rewrite_config(saved, lambda c: c.pop("schema_version"))
    with pytest.raises(CheckpointError, match="schema_version"):
        load_checkpoint(saved)


def test_unknown_top_level_key(saved: Path) -> None:
    _rewrite_config(saved, lambda c: c.update(extra=1))
    with pytest.raises(CheckpointError, match=r"unknown top-level key.*extra"):
        load_checkpoint(saved)


def test_wrong_library_and_missing_field(saved: Path) -> None:
    _rewrite_config(saved, lambda c: c.update(library="other"))
    with pytest.raises(CheckpointError, match="library"):
        load_checkpoint(saved)
    _rewrite_config(saved, lambda c: (c.pop("field"), c.update(library="resfields")))
    with pytest.raises(CheckpointError, match="missing 'field'"):
        load_checkpoint(saved)


def test_bad_spec_is_a_checkpoint_error_caused_by_spec_error(saved: Path) -> None:
    _rewrite_config(saved, lambda c: c["field"].update(hidden_features=-1))
    with pytest.raises(CheckpointError, match=r"invalid field spec.*hidden_features") as info:
        load_checkpoint(saved)
    assert isinstance(info.value.__cause__, SpecError)
    _rewrite_config(saved, lambda c: c["field"].update(hidden_features=16, colour="red"))
    with pytest.raises(CheckpointError, match="colour"):
        load_checkpoint(saved)


def test_truncated_safetensors(saved: Path) -> None:
    data = (saved / WEIGHTS_NAME).read_bytes()
    (saved / WEIGHTS_NAME).write_bytes(data[: len(data) - 17])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
        load_checkpoint(saved)
    assert WEIGHTS_NAME in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [b"", b"abc", b"garbage bytes, not a safetensors file at all" * 4, struct.pack("<Q", 12) + b"{not json!!}"],
    ids=["empty", "short", "garbage", "bad-header"],
)
def test_garbage_safetensors(saved: Path, payload: bytes) -> None:
    (saved / WEIGHTS_NAME).write_bytes(payload)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(saved)


def test_missing_tensor(saved: Path) -> None:
    _rewrite_weights(saved, lambda a: a.pop("layers.2.coefficients"))
    with pytest.raises(CheckpointError, match=r"missing tensor.*layers\.2\.coefficients") as info:
        load_checkpoint(saved)
    assert WEIGHTS_NAME in str(info.value)


def test_unexpected_tensor(saved: Path) -> None:
    _rewrite_weights(saved, lambda a: a.update({"layers.0.residuals": np.zeros((5, 16, 2), np.float32)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor.*layers\.0\.residuals"):
        load_checkpoint(saved)


def test_wrong_shape(saved: Path) -> None:
    _rewrite_weights(saved, lambda a: a.update({"layers.1.matrices": np.zeros((3, 16, 15), np.float32)}))
    with pytest.raises(CheckpointError, match=r"layers\.1\.matrices.*shape \(3, 16, 15\)"):
        load_checkpoint(saved)


def test_non_float_dtype(saved: Path) -> None:
    _rewrite_weights(saved, lambda a: a.update({"layers.0.bias": np.zeros(16, np.int32)}))
    with pytest.raises(CheckpointError, match=r"layers\.0\.bias.*dtype I32"):
        load_checkpoint(saved)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(saved: Path, bad: float) -> None:
    def poison(arrays):
        arrays["layers.3.weight"] = arrays["layers.3.weight"].copy()
        arrays["layers.3.weight"][1, 2] = bad

    _rewrite_weights(saved, poison)
    with pytest.raises(CheckpointError, match=r"layers\.3\.weight.*non-finite") as info:
        load_checkpoint(saved)
    assert WEIGHTS_NAME in str(info.value)


def test_float64_tensors_are_accepted_as_float32(saved: Path) -> None:
    _rewrite_weights(saved, lambda a: a.update({k: v.astype(np.float64) for k, v in a.items()}))
    assert {v.dtype for v in load_checkpoint(saved).arrays.values()} == {np.dtype(np.float32)}


def test_every_error_is_a_value_error(saved: Path) -> None:
    (saved / WEIGHTS_NAME).write_bytes(b"")
    with pytest.raises(ValueError):
        load_checkpoint(saved)


def test_load_field_rejects_unknown_backend(saved: Path) -> None:
    with pytest.raises(SpecError, match="backend"):
        load_field(saved, backend="jax")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- backends


def _torch_field(spec, seed: int = 0):
    torch = pytest.importorskip("torch")
    from resfields.backends.torch import build_field, load_parameters

    model = build_field(spec, dtype=torch.float32)
    load_parameters(model, params32(spec, seed))
    return model


@pytest.mark.parametrize("spec", [SIREN, MLP], ids=["siren", "mlp"])
def test_torch_save_then_numpy_reference_matches(tmp_path: Path, spec) -> None:
    torch = pytest.importorskip("torch")
    model = _torch_field(spec, seed=3)
    save_field(tmp_path, model, metadata={"backend": "torch"})
    ckpt = load_checkpoint(tmp_path)
    reference = load_field(tmp_path, backend="numpy")  # the float64 reference model
    assert ckpt.spec == spec and reference.spec == spec
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(6, spec.in_features))
    kwargs_np: dict = {}
    kwargs_torch: dict = {}
    if spec.resfield.mode == "lookup":
        frames = rng.integers(0, spec.resfield.capacity, size=6)
        kwargs_np, kwargs_torch = {"frame_ids": frames}, {"frame_ids": torch.as_tensor(frames)}
    else:
        times = rng.uniform(-1, 1, size=6)
        kwargs_np, kwargs_torch = {"times": times}, {"times": torch.as_tensor(times, dtype=torch.float32)}
    with torch.no_grad():
        expected = model(torch.as_tensor(x, dtype=torch.float32), **kwargs_torch).numpy()
    direct = field_forward(ckpt.spec, ckpt.arrays, x.astype(np.float32), **kwargs_np)
    np.testing.assert_allclose(direct, expected, atol=1e-5, rtol=1e-5)
    # the reference runs in float64: the float32 rounding of torch, amplified by sin(30 .), shows at ~1e-5
    got = get_backend("numpy").predict(reference, x, **kwargs_np)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_torch_round_trip_through_load_field(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from resfields.backends.torch import parameters_to_numpy

    model = _torch_field(SIREN, seed=4)
    save_field(tmp_path, model)
    loaded = load_field(tmp_path, backend="torch")
    assert isinstance(loaded, torch.nn.Module) and loaded.spec == SIREN
    for name, value in parameters_to_numpy(model).items():
        np.testing.assert_array_equal(parameters_to_numpy(loaded)[name], value)


def test_torch_lone_layer_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from resfields.backends.torch import parameters_to_numpy

    model = _torch_field(LAYER, seed=5)
    save_field(tmp_path, model, dtype="float16")
    loaded = load_field(tmp_path, backend="torch")
    for name, value in parameters_to_numpy(model).items():
        np.testing.assert_allclose(parameters_to_numpy(loaded)[name], value, rtol=1e-3, atol=1e-4)


def test_save_field_needs_a_spec(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="spec"):
        save_field(tmp_path, object())


def _tinygrad_backend():
    import resfields.backends.tinygrad as module  # a dev dependency: its absence fails, it never skips

    return module


def test_torch_checkpoint_cross_loads_into_tinygrad(tmp_path: Path) -> None:
    tg = _tinygrad_backend()
    model = _torch_field(SIREN, seed=6)
    save_field(tmp_path / "torch", model)
    field = load_field(tmp_path / "torch", backend="tinygrad")
    arrays = tg.parameters_to_numpy(field)
    expected = load_checkpoint(tmp_path / "torch").arrays
    assert set(arrays) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(np.asarray(arrays[name], dtype=np.float32), value)
    x = np.random.default_rng(1).uniform(-1, 1, size=(4, SIREN.in_features)).astype(np.float32)
    frames = np.array([0, 1, 4, 2])
    out = field(x, frame_ids=frames).numpy()
    # loading is exact (checked above); the forward check only guards against mis-assigned tensors, so the
    # tolerance leaves room for float32 rounding amplified by sin(30 .) with these random parameters
    np.testing.assert_allclose(out, field_forward(SIREN, expected, x, frame_ids=frames), atol=2e-4, rtol=1e-4)
    # and back: a tinygrad field saves to the same checkpoint
    save_field(tmp_path / "tinygrad", field)
    again = load_checkpoint(tmp_path / "tinygrad")
    assert again.spec == SIREN
    for name, value in expected.items():
        np.testing.assert_array_equal(again.arrays[name], value)
