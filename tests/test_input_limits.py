"""Layer inputs at their edges, resource limits and backend errors (issue 11).

Infinite and huge times clamp like any time outside [-1, 1]; sizes that would exhaust memory are
refused by the spec and the run configs before anything is allocated, with a short SpecError that
says how to lift the limit; dtype, device, shape and empty-input handling agree across the numpy
reference, torch and tinygrad. tinygrad compiles every new kernel with clang, so shapes stay tiny.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resfields.backends import get_backend
from resfields.errors import CheckpointError, DTypeError, FrameError, ResFieldsError, ShapeError, SpecError
from resfields.init import random_parameters
from resfields.reference import resfield_linear
from resfields.spec import (
    LIMITS,
    ArraySpec,
    Init,
    LinearSpec,
    MLPSpec,
    ModelSpec,
    ResFieldSpec,
    SirenSpec,
    parameter_shapes,
    spec_from_dict,
    time_to_position,
)
from resfields.validate import check_parameters_match

BACKENDS = ["numpy", "torch", "tinygrad"]
SHORT = 400  # characters: an error message a person reads in one glance

# ----------------------------------------------------------------------------- 1. infinite times clamp

EDGE_TIMES = [-np.inf, np.inf, -1.0, 1.0, -1e30, 1e30, 1e300, -1e300, 0.0]
times_strategy = st.one_of(st.sampled_from(EDGE_TIMES), st.floats(-3.0, 3.0, allow_nan=False))


def _layer_spec(capacity: int) -> LinearSpec:
    return LinearSpec(2, 3, True, ResFieldSpec(capacity, 2, "interpolation"))


@functools.cache
def _layer(backend: str, capacity: int):
    """``run(x (N, 2) float32, times (N,) float64) -> (N, 3)`` on ``backend``, random parameters."""
    spec = _layer_spec(capacity)
    params = random_parameters(spec, seed=capacity)
    if backend == "numpy":
        return lambda x, t: resfield_linear(spec, params, x.astype(np.float64), times=t)
    arrays = {k: v.astype(np.float32) for k, v in params.items()}
    if backend == "torch":
        import torch

        from resfields.backends.torch import ResFieldLinear, load_parameters

        layer = load_parameters(ResFieldLinear.from_spec(spec), arrays)
        return lambda x, t: layer(torch.from_numpy(x), times=torch.from_numpy(t.astype(np.float32))).detach().numpy()
    from resfields.backends.tinygrad import ResFieldLinear as TinyLinear
    from resfields.backends.tinygrad import load_parameters

    layer = load_parameters(TinyLinear.from_spec(spec), arrays)
    return lambda x, t: layer(x, times=t.astype(np.float32)).numpy()


def _clamped_reference(capacity: int, x: np.ndarray, times: np.ndarray) -> np.ndarray:
    # in-range times are the reference's home ground; the float32 rounding of a backend's times is kept
    t = np.clip(times.astype(np.float32).astype(np.float64), -1.0, 1.0)
    return _layer("numpy", capacity)(x, t)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 1e300 as float32 is inf, on purpose
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=12, deadline=None)
@given(capacity=st.sampled_from([1, 2, 5]), times=st.lists(times_strategy, min_size=4, max_size=4))
def test_infinite_and_huge_times_clamp_like_the_spec_says(backend, capacity, times):
    t = np.asarray(times, dtype=np.float64)
    x = np.linspace(-1.0, 1.0, 8, dtype=np.float32).reshape(4, 2)
    out = np.asarray(_layer(backend, capacity)(x, t))
    expected = _clamped_reference(capacity, x, t)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("capacity", [1, 3])
def test_predict_clamps_infinite_times(backend, capacity):
    spec = SirenSpec(
        2, 2, hidden_features=4, n_layers=2, resfield_layers=(0,), resfield=ResFieldSpec(capacity, 2, "interpolation")
    )
    arrays = {k: v.astype(np.float32) for k, v in random_parameters(spec).items()}
    impl = get_backend(backend)
    model = impl.build(spec, arrays)
    x = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(6, 2)
    times = np.array([-np.inf, np.inf, 1e30, -1.0, 1.0, 0.25], dtype=np.float32)
    expected = get_backend("numpy").predict(get_backend("numpy").build(spec, arrays), x, times=np.clip(times, -1, 1))
    np.testing.assert_allclose(impl.predict(model, x, times=times), expected, atol=1e-4)


def test_time_to_position_clamps_infinity():
    assert time_to_position(float("inf"), 1) == 0.0
    assert time_to_position(float("-inf"), 1) == 0.0
    assert time_to_position(float("inf"), 5) == 4.0
    assert time_to_position(-1e308, 5) == 0.0


# ----------------------------------------------------------------------------- 2. resource limits


def _fast_short_spec_error(build, *needles: str) -> str:
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        build()
    assert time.perf_counter() - start < 2.0  # generous: the machine is shared
    message = str(info.value)
    assert len(message) < SHORT, message[:SHORT]
    for needle in needles:
        assert needle in message
    return message


@pytest.mark.parametrize(
    "build, limit",
    [
        (lambda: SirenSpec(2, 1, n_layers=10**6), "max_layers"),
        (lambda: SirenSpec(2, 1, n_layers=10**7), "max_layers"),
        (lambda: MLPSpec(2, 1, n_layers=10**6), "max_layers"),
        (lambda: SirenSpec(2, 1, hidden_features=2**20), "max_features"),
        (lambda: MLPSpec(2**30, 1), "max_features"),
        (lambda: MLPSpec(2**10, 1, n_frequencies=64), "max_features"),
        (lambda: LinearSpec(2**40, 2), "max_features"),
        (lambda: ResFieldSpec(capacity=2**62, rank=1), "max_capacity"),
        (lambda: ResFieldSpec(capacity=8, rank=10**6), "max_rank"),
        # each size within its own limit, the product far beyond memory
        (lambda: SirenSpec(2, 1, hidden_features=40000, n_layers=4), "max_parameters"),
        (lambda: LinearSpec(4096, 4096, resfield=ResFieldSpec(capacity=2**20, compression="none")), "max_parameters"),
        (lambda: ArraySpec((2**20, 2**20), Init("constant")), "max_parameters"),
    ],
)
def test_specs_refuse_sizes_beyond_the_limits(build, limit):
    message = _fast_short_spec_error(build, f"LIMITS.{limit}", f"RESFIELDS_{limit.upper()}")
    assert "got" in message or "exceeds" in message


def test_positional_encoding_frequencies_stay_representable():
    # 2**k overflows float32 beyond k = 127 and a Python float beyond 1023 (OverflowError at forward)
    _fast_short_spec_error(lambda: MLPSpec(1, 1, n_frequencies=1024), "n_frequencies")
    assert MLPSpec(1, 1, n_frequencies=127).encoded_features == 255


def test_a_model_counts_all_its_fields_and_arrays():
    big = MLPSpec(3, 3, hidden_features=2**15, n_layers=3)  # just over 2**30 parameters: fine alone
    assert ModelSpec((("a", big),)).fields[0][1] == big
    codes = (("codes", ArraySpec((2**15, 2**15), Init("constant"))),)  # 2**30 parameters: fine alone
    _fast_short_spec_error(lambda: ModelSpec((("a", big),), codes), "LIMITS.max_parameters")
    _fast_short_spec_error(lambda: ModelSpec((("a", big), ("b", big))), "LIMITS.max_parameters")


def test_limits_can_be_lifted_in_python(monkeypatch):
    with pytest.raises(SpecError):
        SirenSpec(2, 1, hidden_features=4, n_layers=LIMITS.max_layers + 1)
    monkeypatch.setattr(LIMITS, "max_layers", LIMITS.max_layers + 10)
    assert SirenSpec(2, 1, hidden_features=4, n_layers=LIMITS.max_layers).n_layers == LIMITS.max_layers


def test_limits_can_be_lifted_by_environment_variable():
    code = (
        "from resfields.spec import LIMITS, ResFieldSpec; print(LIMITS.max_capacity, ResFieldSpec(2**30, 1).capacity)"
    )
    env = {**os.environ, "RESFIELDS_MAX_CAPACITY": str(2**31)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(2**31), str(2**30)]
    env["RESFIELDS_MAX_CAPACITY"] = "lots"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "RESFIELDS_MAX_CAPACITY" in bad.stderr


def test_checkpoint_with_a_million_layers_fails_fast_and_short(tmp_path):
    # the 45.8 MB error: a 1 KB config.json naming n_layers=1e6 against a 3-layer safetensors file
    from resfields.checkpoint import load_checkpoint, save_checkpoint

    spec = SirenSpec(2, 1, hidden_features=4, n_layers=3)
    save_checkpoint(tmp_path, spec, {k: np.zeros(s, np.float32) for k, s in parameter_shapes(spec).items()})
    config = json.loads((tmp_path / "config.json").read_text())
    config["field"]["n_layers"] = 10**6
    (tmp_path / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert time.perf_counter() - start < 2.0
    assert len(str(info.value)) < SHORT + 200 and "max_layers" in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        {"type": "siren", "in_features": 2, "out_features": 1, "n_layers": list(range(10**5))},
        {"type": "siren", "in_features": 2, "out_features": 1, "resfield_layers": [1] * 10**5},
        {"type": "siren", "in_features": 2, "out_features": 1, "hidden_features": "x" * 10**6},
        {"type": "siren", "in_features": 2, "out_features": 1, **{f"k{i}": 0 for i in range(10**5)}},
    ],
)
def test_spec_errors_never_echo_huge_values(data):
    _fast_short_spec_error(lambda: spec_from_dict(data))


def test_parameter_mismatch_message_is_truncated():
    own = {f"layers.{i}.weight": (2, 2) for i in range(10**5)}
    with pytest.raises(CheckpointError) as info:
        check_parameters_match(own, {})
    assert len(str(info.value)) < SHORT and "more" in str(info.value)


def test_run_config_errors_never_echo_huge_values():
    from resfields.decode import decode_dataclass
    from resfields.tasks.common.config import TrainConfig

    _fast_short_spec_error(lambda: decode_dataclass(TrainConfig, {"batch_size": list(range(10**5))}), "batch_size")
    _fast_short_spec_error(lambda: decode_dataclass(TrainConfig, {f"k{i}": 0 for i in range(10**5)}), "unknown")


def test_train_config_refuses_huge_batches():
    from resfields.decode import decode_dataclass
    from resfields.tasks.common.config import TrainConfig

    _fast_short_spec_error(lambda: TrainConfig(batch_size=10**12), "batch_size", "LIMITS.max_batch_size")
    _fast_short_spec_error(lambda: decode_dataclass(TrainConfig, {"batch_size": 10**12}), "max_batch_size")
    assert TrainConfig(batch_size=LIMITS.max_batch_size).batch_size == LIMITS.max_batch_size


def test_cli_batch_size_beyond_the_limit_is_one_spec_error():
    from resfields.cli import build_parser
    from resfields.tasks.common.cli import _run_from_args

    args = build_parser().parse_args(["fit", "video", "--batch-size", str(10**12)])
    _fast_short_spec_error(lambda: _run_from_args(args), "max_batch_size")


def test_nerf_options_refuse_huge_sample_counts_and_chunks():
    from resfields.tasks.nerf.task import NerfOptions

    _fast_short_spec_error(lambda: NerfOptions(n_samples=10**7), "n_samples", "LIMITS.max_samples_per_ray")
    _fast_short_spec_error(lambda: NerfOptions(n_samples=0), "n_samples")
    _fast_short_spec_error(lambda: NerfOptions(eval_chunk=10**9), "eval_chunk", "LIMITS.max_chunk")
    for name in ("n_coarse", "render_samples", "render_coarse"):  # every per-ray count is bounded the same way
        _fast_short_spec_error(lambda n=name: NerfOptions(**{n: 10**7}), name, "LIMITS.max_samples_per_ray")
    assert NerfOptions().n_samples == 16


@pytest.mark.parametrize("backend", ["torch", "tinygrad"])
def test_layer_with_capacity_2_62_is_refused_at_once(backend):
    module = pytest.importorskip(f"resfields.backends.{backend}")
    _fast_short_spec_error(lambda: module.ResFieldLinear(2, 2, rank=1, capacity=2**62), "max_capacity")


# ----------------------------------------------------------------------------- 3. torch input dtype


@pytest.mark.parametrize("dtype_name", ["float64", "float16", "int64"])
@pytest.mark.parametrize("kind", ["field", "static field", "layer", "static layer"])
def test_torch_input_dtype_must_match_the_parameters(kind, dtype_name):
    torch = pytest.importorskip("torch")
    from resfields.backends.torch import Field, ResFieldLinear

    rf = ResFieldSpec(3, 2)
    module, keys = {
        "field": (Field(SirenSpec(2, 1, hidden_features=4, n_layers=2, resfield_layers=(0,), resfield=rf)), True),
        "static field": (Field(SirenSpec(2, 1, hidden_features=4, n_layers=2)), False),
        "layer": (ResFieldLinear.from_spec(LinearSpec(2, 1, True, rf)), True),
        "static layer": (ResFieldLinear.from_spec(LinearSpec(2, 1)), False),
    }[kind]
    x = torch.zeros(4, 2, dtype=getattr(torch, dtype_name))
    kwargs = {"frame_ids": torch.zeros(4, dtype=torch.long)} if keys else {}
    with pytest.raises(DTypeError, match=f"{dtype_name}.*float32") as info:
        module(x, **kwargs)
    assert isinstance(info.value, TypeError)
    # matching dtypes work, and autocast still runs fp32 parameters on another compute dtype
    assert module(x.float(), **kwargs).dtype == torch.float32
    if dtype_name == "float64":
        assert module.double()(x, **kwargs).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module.float()(x.float(), **kwargs).shape == (4, 1)


# ----------------------------------------------------------------------------- 4. shapes before the jit


def _siren(capacity: int = 3, mode: str = "lookup") -> SirenSpec:
    return SirenSpec(
        2, 1, hidden_features=4, n_layers=2, resfield_layers=(0,), resfield=ResFieldSpec(capacity, 2, mode)
    )


@pytest.mark.slow  # ~20 s compiling a TinyJit step; the suite's budget
def test_tinygrad_trainer_names_a_changed_batch_shape():
    pytest.importorskip("tinygrad")
    impl = get_backend("tinygrad")
    trainer = impl.trainer(impl.build(_siren()), lambda pred, batch: (pred - batch["y"]).square().mean(), 1e-3)

    def batch(n: int, features: int = 2) -> dict[str, np.ndarray]:
        return {
            "x": np.zeros((n, features), np.float32),
            "frame_ids": np.zeros(n, np.int64),
            "y": np.zeros((n, 1), np.float32),
        }

    trainer.step(batch(8))  # the first batch fixes the layout; the check runs on the host before the jit
    with pytest.raises(ShapeError, match=r"\(4, 2\).*\(8, 2\)"):
        trainer.step(batch(4))
    with pytest.raises(ShapeError, match=r"\(8, 3\)"):
        trainer.step(batch(8, 3))
    with pytest.raises(ShapeError, match="'y'"):
        trainer.step({k: v for k, v in batch(8).items() if k != "y"})


@pytest.mark.parametrize("backend", ["torch", "tinygrad"])
def test_training_clamps_infinite_times_as_inference_does(backend):
    pytest.importorskip(backend)
    impl = get_backend(backend)
    spec = _siren(mode="interpolation")
    losses = []
    for times in ([-np.inf, np.inf, 0.5, -0.25], [-1.0, 1.0, 0.5, -0.25]):
        arrays = random_parameters(spec, seed=0)
        trainer = impl.trainer(impl.build(spec, arrays), lambda pred, batch: (pred - batch["y"]).square().mean(), 1e-2)
        batch = {
            "x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2),
            "times": np.asarray(times, np.float32),
            "y": np.ones((4, 1), np.float32),
        }
        losses.append([trainer.step(batch) for _ in range(3)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_checks_shapes_before_running(backend):
    spec = _siren()
    impl = get_backend(backend)
    model = impl.build(spec, {k: v.astype(np.float32) for k, v in random_parameters(spec).items()})
    ids = np.zeros(3, np.int64)
    for _ in range(3):  # compile and replay where there is a compiler
        assert impl.predict(model, np.zeros((3, 2), np.float32), ids).shape == (3, 1)
    with pytest.raises(ShapeError, match=r"\(3, 5\).*\(N, 2\)"):
        impl.predict(model, np.zeros((3, 5), np.float32), ids)
    with pytest.raises(ShapeError, match=r"\(3, 1, 2\)"):
        impl.predict(model, np.zeros((3, 1, 2), np.float32), ids)
    with pytest.raises(ShapeError, match=r"frame_ids.*\(3, 1\)"):
        impl.predict(model, np.zeros((3, 2), np.float32), ids.reshape(3, 1))
    with pytest.raises(ShapeError, match=r"frame_ids.*\(4,\)"):
        impl.predict(model, np.zeros((3, 2), np.float32), np.zeros(4, np.int64))


# ----------------------------------------------------------------------------- 5. empty input


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["lookup", "interpolation", None])
def test_predict_of_zero_rows_is_empty(backend, mode):
    rf = None if mode is None else ResFieldSpec(3, 2, mode)
    spec = SirenSpec(2, 3, hidden_features=4, n_layers=2, resfield_layers=() if rf is None else (0,), resfield=rf)
    impl = get_backend(backend)
    model = impl.build(spec, {k: v.astype(np.float32) for k, v in random_parameters(spec).items()})
    keys = (
        {}
        if mode is None
        else {"frame_ids": np.zeros(0, np.int64)}
        if mode == "lookup"
        else {"times": np.zeros(0, np.float32)}
    )
    out = impl.predict(model, np.zeros((0, 2), np.float32), **keys)
    assert out.shape == (0, 3)
    # empty is not a licence for a wrong shape
    with pytest.raises(ShapeError):
        impl.predict(model, np.zeros((0, 5), np.float32), **keys)


# ----------------------------------------------------------------------------- 6. --compression none


def test_cli_compression_none_builds_a_field():
    from resfields.cli import build_parser
    from resfields.tasks.common.cli import _run_from_args
    from resfields.tasks.common.config import ModelConfig, siren_spec

    run = _run_from_args(build_parser().parse_args(["fit", "video", "--compression", "none"]))
    spec = siren_spec(run.model, 3, 3, n_frames=4)
    assert spec.resfield == ResFieldSpec(capacity=4, rank=None, compression="none")
    assert siren_spec(ModelConfig(compression="none", rank=7), 3, 3, n_frames=2).resfield.rank is None
    assert siren_spec(ModelConfig(rank=7), 3, 3, n_frames=2).resfield.rank == 7


# ----------------------------------------------------------------------------- 7. devices


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", ["nonsense", "NONSENSE", "cuda:x"])
def test_build_rejects_unknown_devices(backend, device):
    impl = get_backend(backend)
    spec = SirenSpec(2, 1, hidden_features=4, n_layers=2)
    arrays = {k: v.astype(np.float32) for k, v in random_parameters(spec).items()}
    with pytest.raises(SpecError, match="'cpu'") as info:
        impl.build(spec, arrays, device=device)
    assert repr(device) in str(info.value) and len(str(info.value)) < SHORT


@pytest.mark.parametrize("backend", ["torch", "tinygrad"])
def test_build_on_cuda_without_a_gpu_is_one_spec_error(backend):
    impl = get_backend(backend)
    if "cuda" in impl.devices():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SpecError, match="CUDA"):
        impl.build(SirenSpec(2, 1, hidden_features=4, n_layers=2), device="cuda")


def test_every_new_error_is_a_library_error():
    assert issubclass(DTypeError, ResFieldsError) and issubclass(DTypeError, TypeError)
    assert issubclass(FrameError, ResFieldsError)
