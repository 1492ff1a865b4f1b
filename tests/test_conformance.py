"""The conformance suite under pytest: every backend against the NumPy float64 reference on the
full grid, plus hypothesis-generated layer cases. Backends are never skipped silently: a missing
framework is a failure here (it is a dev dependency)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resfields.backends import BACKENDS, get_backend
from resfields.cli import main as cli_main
from resfields.conformance import grid, random_case, run_case, run_suite, strategy_cases, suite_cases
from resfields.errors import SpecError

GRID = list(grid())


def _grid_params() -> list:
    """Every (backend, case) of the grid. On tinygrad, whose CPU kernels take seconds to build, a
    field case with a compression other than vm is marked slow: the layer cases prove every
    compression and mode there, and the vm field cases every field loop (activations, encoding,
    skips, window) in both modes. ``-m slow`` runs the rest; torch runs the whole grid by default."""
    params = []
    for backend in BACKENDS:
        for case in GRID:
            kind, compression = case.name.split("/")[:2]
            slow = backend == "tinygrad" and kind != "layer" and compression != "vm"
            marks = [pytest.mark.slow] if slow else []
            params.append(pytest.param(backend, case, id=f"{backend}-{case.name}", marks=marks))
    return params


@pytest.mark.parametrize(("backend", "case"), _grid_params())
def test_grid_case(backend, case):
    result = run_case(get_backend(backend), case)
    assert result.passed, result


TORCH_STRATEGY_CASES = strategy_cases(GRID, ("single", "rows", "grouped", "lowrank"))


@pytest.mark.parametrize("case", TORCH_STRATEGY_CASES, ids=[c.name for c in TORCH_STRATEGY_CASES])
def test_torch_strategy_case(case):
    """Every exact strategy of the torch layer, forced on every case it applies to."""
    result = run_case(get_backend("torch"), case)
    assert result.passed, result


@pytest.mark.parametrize(("backend", "examples"), [("torch", 40), ("tinygrad", 10)])
def test_hypothesis_layer_cases(backend, examples):
    impl = get_backend(backend)

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.integers(0, 2**31 - 1))
    def check(seed):
        case = random_case(np.random.default_rng(seed), 0)
        result = run_case(impl, case)
        assert result.passed, result

    check()


class _Broken:
    """A torch backend whose gradient of one tensor is off by 1%: the suite must catch it."""

    name = "broken"

    def __init__(self, tensor: str):
        self.inner, self.tensor = get_backend("torch"), tensor

    def build(self, spec, arrays=None, device=None):
        return self.inner.build(spec, arrays, device)

    def value_and_grad(self, model, x, cotangent, frame_ids=None, times=None, dtype="float32", **kw):
        y, gx, grads = self.inner.value_and_grad(model, x, cotangent, frame_ids, times, dtype, **kw)
        grads[self.tensor] = grads[self.tensor] * 1.01
        return y, gx, grads


@pytest.mark.parametrize("tensor", ["layers.1.coefficients", "layers.2.matrices", "layers.0.bias"])
def test_suite_catches_a_wrong_gradient(tensor):
    case = next(c for c in GRID if c.name == "siren/vm/interpolation/between")
    result = run_case(_Broken(tensor), case)
    assert not result.passed and result.worst_tensor == tensor


def test_suite_catches_a_wrong_time_convention():
    case = next(c for c in GRID if c.name == "layer/vm/lookup/R3C7/repeated")
    torch_backend = get_backend("torch")

    class OffByOne:
        name = "off-by-one"
        build = staticmethod(torch_backend.build)

        def value_and_grad(self, model, x, cotangent, frame_ids=None, times=None, dtype="float32"):
            return torch_backend.value_and_grad(model, x, cotangent, (frame_ids + 1) % 7, times, dtype)

    result = run_case(OffByOne(), case)
    assert not result.passed and result.message == ""  # a wrong answer, not a crash


def test_cli_prints_table_and_exit_code(capsys):
    assert cli_main(["conformance", "--backend", "torch", "--random", "3"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "0 failed" in out and "tolerances" in out


def test_an_unavailable_device_is_a_spec_error():
    """One error of the library's family (still a ValueError), before any case runs."""
    ran = []
    with pytest.raises(SpecError, match=r"backend 'torch' cannot run on device 'tpu9' here \(has "):
        run_suite(("torch",), device="tpu9", progress=lambda cases: ran.extend(cases) or iter(()))
    assert ran == []


@pytest.mark.cuda
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_conformance(backend):
    impl = get_backend(backend)
    if "cuda" not in impl.devices():
        pytest.fail(f"{backend} has no CUDA device although torch sees a GPU")
    failures = []
    for case in suite_cases("cuda", n_random=4, dtypes=impl.dtypes):
        result = run_case(impl, case, device="cuda")
        if not result.passed:
            failures.append(result)
    assert not failures, failures[:5]
