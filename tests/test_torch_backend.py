"""The torch backend as users meet it: a drop-in for nn.Linear, broadcasting rules, the grouped
hot path, autocast, bad input, and a short fit whose loss falls."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402

from resfields.backends.torch import Field, ResFieldLinear, grouped_linear, plan_frames  # noqa: E402
from resfields.backends.torch.training import TorchTrainer  # noqa: E402
from resfields.errors import CheckpointError, FrameError, ShapeError  # noqa: E402
from resfields.spec import ResFieldSpec, SirenSpec, frame_to_time, parameter_shapes  # noqa: E402


def _layer(**kw) -> ResFieldLinear:
    torch.manual_seed(0)
    layer = ResFieldLinear(6, 5, rank=3, capacity=10, **kw)
    with torch.no_grad():  # non-zero residuals so that frames differ
        for name, p in layer.named_parameters():
            if name not in ("weight", "bias"):
                p.normal_(0.0, 0.3)
    return layer


def _per_frame(layer: ResFieldLinear, x: torch.Tensor, frame: int) -> torch.Tensor:
    w = layer.weight + layer.residuals_at(torch.tensor([frame]))[0]
    return torch.nn.functional.linear(x, w, layer.bias)


def test_is_a_drop_in_linear():
    layer = ResFieldLinear(6, 5, rank=3, capacity=10)
    assert isinstance(layer, torch.nn.Module)
    assert dict(layer.named_parameters()).keys() == {"weight", "bias", "coefficients", "matrices"}
    assert layer.weight.shape == (5, 6) and layer.in_features == 6 and layer.out_features == 5
    x = torch.randn(4, 6)
    # a fresh layer has zero residuals: it computes exactly what nn.Linear computes
    torch.testing.assert_close(layer(x, frame_ids=3), torch.nn.functional.linear(x, layer.weight, layer.bias))
    assert "rank=3, capacity=10" in repr(layer)


def test_parameters_register_in_canonical_order():
    # state_dict keys and order are what checkpoints and PyTorchModelHubMixin store
    layer = ResFieldLinear(6, 5, bias=False, rank=3, capacity=10, compression="tucker", dtype=torch.float64)
    assert list(layer.state_dict()) == list(parameter_shapes(layer.spec))
    assert layer.bias is None and layer.weight.dtype == torch.float64
    assert layer.extra_repr() == (
        "in_features=6, out_features=5, bias=False, rank=3, capacity=10, mode=lookup, compression=tucker"
    )
    assert ResFieldLinear.from_spec(layer.spec).extra_repr() == layer.extra_repr()


def test_optimizer_state_round_trips_and_a_bad_one_changes_nothing():
    torch.manual_seed(0)
    spec = SirenSpec(2, 1, hidden_features=8, n_layers=3, resfield_layers=(1,), resfield=ResFieldSpec(4, 2))
    batch = {"x": np.random.default_rng(0).normal(size=(8, 2)), "frame_ids": np.arange(8) % 4, "y": np.ones((8, 1))}
    trainer = TorchTrainer(Field(spec), lambda pred, b: (pred - b["y"]).square().mean(), 1e-2)
    for _ in range(2):
        trainer.step(batch)
    state = trainer.optimizer_state()
    assert state["adam.step"].tolist() == [2] and state["adam.m.layers.1.matrices"].shape == (2, 8, 8)
    fresh = TorchTrainer(Field(spec), trainer.loss, 1e-2)
    bad = dict(state, **{"adam.v.layers.2.weight": np.zeros((3, 3))})
    with pytest.raises(CheckpointError, match=r"'layers\.2\.weight' has shape \(3, 3\), expected \(1, 8\)"):
        fresh.load_optimizer_state(bad)
    assert not fresh.optimizer.state  # every moment is checked before any is installed
    fresh.load_optimizer_state(state)
    assert all(np.array_equal(v, state[k]) for k, v in fresh.optimizer_state().items())


@pytest.mark.parametrize("compression", ["vm", "none", "cp", "tucker"])
def test_broadcasting_layouts_agree(compression):
    layer = _layer(compression=compression) if compression != "none" else None
    if layer is None:
        torch.manual_seed(0)
        layer = ResFieldLinear(6, 5, capacity=10, compression="none")
        with torch.no_grad():
            layer.residuals.normal_(0.0, 0.3)
    x = torch.randn(4, 3, 6)
    ids = torch.tensor([[7], [2], [7], [0]])  # one frame per row, unsorted, repeated
    y = layer(x, frame_ids=ids)
    for b in range(4):
        torch.testing.assert_close(y[b], _per_frame(layer, x[b], int(ids[b, 0])))
    per_sample = ids.expand(4, 3)
    torch.testing.assert_close(layer(x.reshape(12, 6), frame_ids=per_sample.reshape(12)), y.reshape(12, 5))
    torch.testing.assert_close(layer(x, frame_ids=4), _per_frame(layer, x, 4))  # a scalar: one frame for all
    torch.testing.assert_close(layer(x, frame_ids=torch.tensor(4)), _per_frame(layer, x, 4))


def test_plan_builds_weights_only_for_present_frames():
    rf = ResFieldSpec(capacity=1000, rank=2)
    plan = plan_frames(rf, (5, 8), torch.tensor([[900], [3], [900], [3], [42]]), None, torch.device("cpu"))
    groups = plan.groups()
    assert groups.frames.tolist() == [3, 42, 900]
    assert groups.counts.tolist() == [2, 1, 2]  # rows of each frame present
    assert groups.order.tolist() == [1, 3, 4, 0, 2]  # unsorted rows are grouped once per plan
    assert plan.groups() is groups
    sorted_plan = plan_frames(rf, (5, 8), torch.tensor([[3], [3], [42], [900], [900]]), None, torch.device("cpu"))
    assert sorted_plan.groups().order.numel() == 0  # presorted input (what samplers produce) stays in place


def test_interpolation_blends_neighbouring_frames():
    layer = _layer(mode="interpolation")
    x = torch.randn(5, 6)
    p = 3.25  # between knots 3 and 4 of capacity 10
    t = torch.full((5,), -1 + 2 * p / 9)
    expected = 0.75 * _per_frame(layer, x, 3) + 0.25 * _per_frame(layer, x, 4)
    torch.testing.assert_close(layer(x, times=t), expected)
    # frame times land on their knots; outside [-1, 1] clamps to the end knots
    knots = torch.tensor([frame_to_time(f, 10) for f in range(10)], dtype=torch.float32)
    y = layer(x[:1].expand(10, 6), times=knots)
    for f in range(10):
        torch.testing.assert_close(y[f], _per_frame(layer, x[0], f))
    torch.testing.assert_close(layer(x, times=torch.full((5,), 7.0)), _per_frame(layer, x, 9))
    torch.testing.assert_close(layer(x, times=torch.full((5,), -7.0)), _per_frame(layer, x, 0))


def test_grouped_linear_gradcheck():
    x = torch.randn(7, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([2, 0, 2, 1, 1, 2, 0])
    order, counts = torch.argsort(index, stable=True), torch.bincount(index, minlength=3)
    f = lambda x, w: grouped_linear(x, w, index, None, order, counts)  # noqa: E731
    torch.testing.assert_close(f(x, w), torch.einsum("rsi,roi->rso", x, w[index]))
    assert torch.autograd.gradcheck(f, (x, w))
    assert torch.autograd.gradgradcheck(f, (x, w))  # eikonal losses differentiate the gradient


def test_bf16_autocast_close_to_fp32():
    layer = _layer()
    x = torch.randn(8, 4, 6)
    ids = torch.randint(0, 10, (8, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = layer(x, frame_ids=ids)
    assert y16.dtype == torch.bfloat16
    y32 = layer(x, frame_ids=ids)
    assert (y16.float() - y32).abs().max() <= 3e-2 * max(1.0, y32.abs().max().item())
    y16.float().sum().backward()
    assert layer.matrices.grad is not None and layer.matrices.grad.dtype == torch.float32


def test_float64_and_device_follow_parameters():
    layer = ResFieldLinear(3, 2, rank=1, capacity=4, dtype=torch.float64)
    y = layer(torch.randn(5, 3, dtype=torch.float64), frame_ids=torch.arange(5) % 4)
    assert y.dtype == torch.float64


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m, x: m(x, frame_ids=torch.tensor([[10]])), FrameError, r"\[0, 10\)"),
        (lambda m, x: m(x, frame_ids=torch.tensor([[-1]])), FrameError, r"\[0, 10\)"),
        (lambda m, x: m(x, frame_ids=torch.tensor([[1.0]])), FrameError, "integer"),
        (lambda m, x: m(x, frame_ids=torch.zeros(3, dtype=torch.long)), ShapeError, "broadcast"),
        (lambda m, x: m(x, times=0.0), FrameError, "not times"),
        (lambda m, x: m(x), FrameError, "needs frame_ids"),
        (lambda m, x: m(x[..., :5], frame_ids=0), ShapeError, "in_features=6"),
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call(_layer(), torch.randn(2, 4, 6))


def test_nan_times_rejected():
    with pytest.raises(FrameError, match="NaN"):
        _layer(mode="interpolation")(torch.randn(2, 6), times=torch.tensor([0.0, float("nan")]))


def test_siren_resfield_fit_loss_falls():
    torch.manual_seed(0)
    frames, pixels = 8, 64
    spec = SirenSpec(
        2, 1, hidden_features=32, n_layers=4, resfield_layers=(1, 2), resfield=ResFieldSpec(capacity=frames, rank=4)
    )
    field = Field(spec)
    coords = torch.rand(frames, pixels, 2) * 2 - 1
    target = torch.sin(3 * coords[..., :1] + torch.arange(frames).view(frames, 1, 1) * 0.7)
    opt = torch.optim.Adam(field.parameters(), lr=1e-3)
    ids = torch.arange(frames).view(frames, 1)
    losses = []
    for _ in range(60):
        loss = ((field(coords, frame_ids=ids) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_field_uses_the_field_init_rules():
    torch.manual_seed(0)
    spec = SirenSpec(2, 1, hidden_features=64, n_layers=3, hidden_omega0=30.0)
    field = Field(spec)
    bound = (6.0 / 64) ** 0.5 / 30.0  # Siren hidden-layer bound, far below nn.Linear's 1/8
    assert field.layers[1].weight.abs().max() <= bound
    assert field.layers[1].weight.abs().max() > 0.8 * bound
    assert field.layers[0].weight.abs().max() <= 1.0 / 2  # first layer: U(-1/in, 1/in)


def test_grouped_linear_blend_gradcheck():
    x = torch.randn(6, 1, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)  # [lower knot; difference], 2 outputs each
    blend = torch.rand(6, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 0, 0, 0, 1, 1])
    empty, counts = index.new_empty(0), torch.tensor([4, 2])
    f = lambda x, w, blend: grouped_linear(x, w, index, blend, empty, counts)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, blend))
    assert torch.autograd.gradgradcheck(f, (x, w, blend))
    y = f(x, w, blend)
    expected = x[:4] @ w[0, :2].t() + blend[:4, None, None] * (x[:4] @ w[0, 2:].t())
    torch.testing.assert_close(y[:4], expected)
