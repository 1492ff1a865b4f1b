"""The torch layer in a researcher's own model: every strategy exact (to float64 rounding, against
the reference), gradients of any order, one plan per forward, no value read back when asked, a
compiled graph that never recompiles, GEMM launches that do not grow with the frames on the GPU
strategy, and saving through huggingface_hub's PyTorchModelHubMixin."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from resfields.errors import FrameError, SpecError  # noqa: E402
from resfields.reference.layer import resfield_linear  # noqa: E402
from resfields.torch import STRATEGIES, Field, ResFieldLinear, choose, forced, plan_frames  # noqa: E402

EXACT = STRATEGIES[1:]
COMPRESSIONS = ("vm", "none", "cp", "tucker")


def _layer(compression="vm", mode="lookup", capacity=7, i=5, o=4, dtype=torch.float64, seed=0) -> ResFieldLinear:
    torch.manual_seed(seed)
    layer = ResFieldLinear(
        i, o, rank=None if compression == "none" else 3, capacity=capacity, mode=mode, compression=compression
    ).to(dtype)
    with torch.no_grad():  # residuals as large as the weight, so that a wrong frame shows
        for p in layer.parameters():
            p.normal_()
    return layer


def _keys(mode: str, shape: tuple[int, ...], capacity: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    if mode == "lookup":
        return {"frame_ids": torch.randint(0, capacity, shape, generator=g)}
    return {"times": torch.rand(shape, generator=g, dtype=torch.float64) * 2.4 - 1.2}


def _applies(strategy: str, compression: str, rows: int) -> bool:
    return not (strategy == "single" and rows != 1) and not (strategy == "lowrank" and compression == "none")


@settings(max_examples=60, deadline=None)
@given(
    compression=st.sampled_from(COMPRESSIONS),
    mode=st.sampled_from(("lookup", "interpolation")),
    capacity=st.integers(1, 9),
    rows=st.integers(1, 7),
    per_row=st.integers(1, 4),
    per_sample=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_strategy_matches_the_reference(compression, mode, capacity, rows, per_row, per_sample, seed):
    layer = _layer(compression, mode, capacity, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, per_row, 5, generator=g, dtype=torch.float64)
    keys = _keys(mode, (rows, per_row) if per_sample else (rows, 1), capacity, g)
    params = {k: v.detach().numpy() for k, v in layer.named_parameters()}
    expected = resfield_linear(
        layer.spec, params, x.numpy(), **{k: np.broadcast_to(v.numpy(), (rows, per_row)) for k, v in keys.items()}
    )
    key_rows = rows * per_row if per_sample else rows
    for strategy in EXACT:
        if _applies(strategy, compression, key_rows):
            y = layer(x, **keys, strategy=strategy)
            np.testing.assert_allclose(y.detach().numpy(), expected, rtol=0, atol=1e-10, err_msg=strategy)


@pytest.mark.parametrize(("compression", "mode"), list(itertools.product(COMPRESSIONS, ("lookup", "interpolation"))))
def test_gradients_of_every_order_on_every_strategy(compression, mode):
    layer = _layer(compression, mode)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    keys = _keys(mode, (6, 1), 7, g)
    one = {k: v[:1] for k, v in keys.items()}
    for strategy in EXACT:
        if not _applies(strategy, compression, 6 if strategy != "single" else 1):
            continue
        k = one if strategy == "single" else keys
        xs = x[:1] if strategy == "single" else x
        params = [p for p in layer.parameters()]

        def f(x, *ps, k=k, strategy=strategy):
            return layer(x, **k, strategy=strategy)

        assert torch.autograd.gradcheck(f, (xs, *params)), strategy
        assert torch.autograd.gradgradcheck(lambda x, k=k, strategy=strategy: layer(x, **k, strategy=strategy), (xs,))


@pytest.mark.parametrize("mode", ("lookup", "interpolation"))
@pytest.mark.parametrize("order", ("random", "sorted"))
def test_one_pass_backward_equals_the_composed_one(mode, order):
    """A plain backward of the grouped strategy runs the one-pass operator; under create_graph it
    composes the differentiable operators. Both give the same first-order gradients."""
    layer = _layer(mode=mode, capacity=9)
    g = torch.Generator().manual_seed(3)
    keys = _keys(mode, (40, 1), 9, g)
    if mode == "interpolation":  # some rows exactly on knots, so groups with and without the difference
        knots = torch.linspace(-1, 1, 9, dtype=torch.float64)
        keys["times"][::3] = knots[torch.randint(0, 9, (14, 1), generator=g)]
    if order == "sorted":
        name = next(iter(keys))
        keys[name] = keys[name].sort(dim=0).values
    x = torch.randn(40, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    if mode == "interpolation":
        keys["times"].requires_grad_(True)
    inputs = [x, *layer.parameters(), *[k for k in keys.values() if k.requires_grad]]
    y = layer(x, **keys, strategy="grouped")
    weights = torch.randn(y.shape, generator=g, dtype=torch.float64)
    with _CountOps() as ops:
        plain = torch.autograd.grad((y * weights).sum(), inputs, retain_graph=True)
    assert ops.seen.get("grouped_linear_backward", 0) == 1 and "grouped_outer" not in ops.seen
    composed = torch.autograd.grad((y * weights).sum(), inputs, create_graph=True)
    for a, b in zip(plain, composed, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)


def test_eikonal_loss_trains_through_a_field_in_random_frame_order():
    """What NeuS/VolSDF do: the gradient of the SDF w.r.t. the points, differentiated again."""
    from resfields.spec import MLPSpec, ResFieldSpec

    spec = MLPSpec(
        3, 1, hidden_features=16, n_layers=4, activation="softplus", softplus_beta=100.0,
        resfield_layers=(1, 2), resfield=ResFieldSpec(capacity=10, rank=4),
    )  # fmt: skip
    field = Field(spec).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 10, (64,), generator=g)  # per-sample frames, unsorted
    grads = {}
    for strategy in ("grouped", "rows", "lowrank"):
        field.zero_grad()
        with forced(strategy):
            (normal,) = torch.autograd.grad(field(x, frame_ids=ids).sum(), x, create_graph=True)
            ((normal.norm(dim=-1) - 1.0) ** 2).mean().backward()
        # (the output bias does not reach the gradient w.r.t. x: no grad)
        grads[strategy] = {n: p.grad.clone() for n, p in field.named_parameters() if p.grad is not None}
        assert all(torch.isfinite(v).all() for v in grads[strategy].values())
    for strategy in ("rows", "lowrank"):
        for name, value in grads["grouped"].items():
            torch.testing.assert_close(grads[strategy][name], value, rtol=1e-9, atol=1e-12, msg=name)


def test_functorch_jacrev_and_vmap():
    layer = _layer()
    x = torch.randn(8, 5, dtype=torch.float64)
    per_sample = torch.func.vmap(lambda xi: layer(xi, frame_ids=3))(x)
    torch.testing.assert_close(per_sample, layer(x, frame_ids=3))
    jacobian = torch.func.jacrev(lambda xi: layer(xi, frame_ids=3))(x[0])
    torch.testing.assert_close(jacobian, layer.weight + layer.residuals_at(torch.tensor([3]))[0])
    ids = torch.arange(8) % 7  # vmapped over the frame ids too: the value checks need validate=False
    per_key = torch.func.vmap(lambda xi, ii: layer(xi, frame_ids=ii, validate=False))(x, ids)
    torch.testing.assert_close(per_key, layer(x, frame_ids=ids))


class _MLP(torch.nn.Module):
    """A user's own MLP: three ResField layers that share one plan per forward."""

    def __init__(self, width: int = 32, capacity: int = 20) -> None:
        super().__init__()
        self.first = torch.nn.Linear(3, width)
        self.hidden = torch.nn.ModuleList(ResFieldLinear(width, width, rank=4, capacity=capacity) for _ in range(3))
        self.last = torch.nn.Linear(width, 1)

    def forward(self, x: torch.Tensor, frame_ids: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x))
        plan = self.hidden[0].plan(h, frame_ids=frame_ids, validate=False)
        for layer in self.hidden:
            h = torch.relu(layer(h, plan=plan))
        return self.last(h)


def test_compiled_user_model_never_recompiles_when_frames_change():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = _MLP()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 16, 3, generator=g)
    for _ in range(10):
        ids = torch.randint(0, 20, (64, 1), generator=g)  # different frames, order and counts every step
        y = compiled(x, ids)
        y.square().mean().backward()
        torch.testing.assert_close(y, model(x, ids), rtol=1e-5, atol=1e-6)
    assert counter.frame_count == 1  # one graph for ten steps: no guard on frame values


class _CountMatmuls(TorchDispatchMode):
    NAMES = ("mm", "bmm", "addmm", "baddbmm", "matmul")

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.NAMES:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _matmuls(layer, x, ids, strategy) -> int:
    with _CountMatmuls() as counter, forced(strategy):
        layer(x, frame_ids=ids).sum().backward()
    return counter.count


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_gpu_strategy_launches_a_constant_number_of_gemms(compression):
    layer = _layer(compression, capacity=100, i=16, o=16, dtype=torch.float32)
    x = torch.randn(512, 4, 16, requires_grad=True)
    counts = {}
    for present in (1, 10, 100):
        ids = torch.arange(512).remainder(present).view(512, 1)
        plan = plan_frames(layer.spec.resfield, (512, 4), ids, None, x.device)
        strategy = choose(layer, plan, "cuda")
        assert strategy in ("rows", "lowrank")
        counts[present] = _matmuls(layer, x, ids, strategy)
    assert counts[1] == counts[10] == counts[100], counts


def test_choice_reads_shapes_not_values():
    layer = _layer(capacity=100, i=16, o=16, dtype=torch.float32)
    dev = torch.device("cpu")
    rf = layer.spec.resfield
    a = plan_frames(rf, (512, 4), torch.zeros(512, 1, dtype=torch.long), None, dev)
    b = plan_frames(rf, (512, 4), torch.arange(512).remainder(100).view(512, 1), None, dev)
    for device_type in ("cpu", "cuda"):
        assert choose(layer, a, device_type) == choose(layer, b, device_type)
    assert choose(layer, plan_frames(rf, (1, 64), torch.tensor([[3]]), None, dev), "cpu") == "single"
    assert choose(layer, plan_frames(rf, (4, 512), torch.arange(4).view(4, 1), None, dev), "cpu") == "rows"
    assert choose(layer, a, "cpu") == "grouped"


def test_validate_false_reads_no_value_back(monkeypatch):
    layer = _layer(dtype=torch.float32)
    x = torch.randn(32, 3, 5, requires_grad=True)
    ids = torch.randint(0, 7, (32, 1))
    with pytest.raises(FrameError):
        layer(x, frame_ids=ids + 7)  # validated by default

    def no_read_back(*args, **kwargs):
        raise AssertionError("a tensor value was read back to the host")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, no_read_back)
    for strategy in ("rows", "lowrank"):  # the strategies a GPU uses
        layer(x, frame_ids=ids, validate=False, strategy=strategy).sum().backward()
        layer(x[:1], frame_ids=ids[:1], validate=False).sum().backward()  # single
    interp = _layer(mode="interpolation", dtype=torch.float32)
    interp(x, times=torch.rand(32, 1) * 2 - 1, validate=False, strategy="lowrank").sum().backward()


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.seen[name] = self.seen.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def test_one_plan_groups_rows_once_per_forward():
    model = _MLP()
    x = torch.rand(64, 8, 3)
    ids = torch.randint(0, 20, (64, 1))
    with _CountOps() as ops:
        model(x, ids)
    grouping = sum(ops.seen.get(n, 0) for n in ("_unique2", "unique_dim", "unique_consecutive", "sort", "argsort"))
    assert grouping == 2, ops.seen  # one unique and one sort for the three layers together


def test_plan_misuse_is_one_clear_error():
    layer = _layer()
    x = torch.randn(4, 5, dtype=torch.float64)
    ids = torch.tensor([0, 1, 2, 3])
    plan = layer.plan(x, frame_ids=ids)
    with pytest.raises(SpecError, match="either plan"):
        layer(x, frame_ids=ids, plan=plan)
    with pytest.raises(SpecError, match="capacity"):
        _layer(capacity=9)(x, plan=plan)
    with pytest.raises(SpecError, match="shape"):
        layer(torch.randn(5, 5, dtype=torch.float64), plan=plan)
    with pytest.raises(SpecError, match="unknown strategy"):
        layer(x, frame_ids=ids, strategy="fastest")
    with pytest.raises(SpecError, match="one key"):
        layer(x, frame_ids=ids, strategy="single")
    with pytest.raises(SpecError, match="low-rank"):
        _layer("none")(x, frame_ids=ids, strategy="lowrank")
    with pytest.raises(SpecError, match="no ResField"):
        ResFieldLinear.from_spec(_layer().spec.__class__(5, 4, True, None)).double()(x, plan=plan)


@pytest.mark.parametrize("strategy", ("rows", "grouped", "lowrank"))
def test_zero_rows_give_an_empty_output(strategy):
    layer = _layer(dtype=torch.float32)
    y = layer(torch.empty(0, 5), frame_ids=torch.empty(0, dtype=torch.long), strategy=strategy)
    assert y.shape == (0, 4)


def test_pytorch_model_hub_mixin_round_trip(tmp_path):
    from huggingface_hub import PyTorchModelHubMixin

    class MyField(_MLP, PyTorchModelHubMixin):
        pass

    model = MyField(width=16, capacity=5)
    model.save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine" / "model.safetensors").is_file()  # safetensors: loading runs no code
    loaded = MyField.from_pretrained(tmp_path / "mine")
    x, ids = torch.rand(6, 4, 3), torch.randint(0, 5, (6, 1))
    torch.testing.assert_close(loaded(x, ids), model(x, ids))


def test_autocast_leaves_float64_alone_on_every_strategy():
    """Autocast never casts float64, so no strategy may (nn.Linear keeps float64 too)."""
    layer = _layer()
    x = torch.randn(16, 3, 5, dtype=torch.float64)
    ids = torch.randint(0, 7, (16, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for strategy in ("rows", "grouped", "lowrank", "auto"):
            assert layer(x, frame_ids=ids, strategy=strategy).dtype == torch.float64, strategy
        assert layer(x[:1], frame_ids=ids[:1]).dtype == torch.float64


def test_times_near_a_knot_stay_exact_and_differentiable():
    """float64 times are never snapped to a knot, and a snap of a float32 time keeps d(output)/d(time)."""
    layer = _layer(mode="interpolation", capacity=3)
    x = torch.randn(1, 5, dtype=torch.float64)
    params = {k: v.detach().numpy() for k, v in layer.named_parameters()}
    t = torch.tensor([5e-6], dtype=torch.float64, requires_grad=True)
    y = layer(x, times=t)
    expected = resfield_linear(layer.spec, params, x.numpy(), times=t.detach().numpy())
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=0, atol=1e-12)
    (dt,) = torch.autograd.grad(y.sum(), t)
    assert dt.abs() > 0
    t32 = torch.tensor([0.0], dtype=torch.float32, requires_grad=True)  # on a knot: snapped, still a gradient
    layer32 = _layer(mode="interpolation", capacity=3, dtype=torch.float32)
    (dt32,) = torch.autograd.grad(layer32(x.float(), times=t32).sum(), t32)
    assert dt32.abs() > 0
