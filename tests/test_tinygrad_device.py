"""The tinygrad backend keeps every buffer on the model's device (the CPU-side stand-in for CUDA).

How it is checked: tinygrad allocates the memory of every realised tensor, kernel output, copy
target and staging area through ``tinygrad.device.Buffer.allocate``, and a kernel runs on the device
of the buffer it writes. Recording the device of each allocation while a model is built, run,
trained and queried therefore shows every device the work touched, with no reliance on the
scheduler's internals. Two host-side sources are allowed: ``NPY`` (a NumPy array wrapped in place)
and ``PYTHON`` (a Python list's bytes). They hold host memory on its way to the device and never
compile or run a kernel. Buffers allocated with ``BufferSpec(host=True)`` are not counted: they are
tinygrad's own timeline signals (one uint64 each), which its HCQ runtime keeps in the host ``CPU``
device's memory for every CPU-family device (``CPU:1`` included), whatever the model does.

The model lives on a device that is *not* ``Device.DEFAULT``: ``"CPU:1"`` (a second instance of the
CPU device, as tinygrad's own multi-device tests use) with the default left at ``"CPU"``, or, for
the backend's ``build(device="cpu")``, ``"CPU"`` with the default switched to the ``NULL`` device.
A path that forgets its device lands on the default and is listed in the failure. Before the fix,
``build`` drew the parameters with tinygrad's RNG on the default device and copied them over, and
``build(device="cpu")`` left the model on whatever the default was (the GPU on a CUDA machine).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

tinygrad = pytest.importorskip("tinygrad")

from tinygrad import Context, Device, Tensor  # noqa: E402
from tinygrad.device import Buffer  # noqa: E402
from tinygrad.nn.state import get_state_dict  # noqa: E402

from resfields.backends.tinygrad import build_field, load_parameters, parameters_to_numpy  # noqa: E402
from resfields.backends.tinygrad.interface import BACKEND, tinygrad_device  # noqa: E402
from resfields.init import random_parameters  # noqa: E402
from resfields.spec import ArraySpec, Init, LinearSpec, MLPSpec, ModelSpec, ResFieldSpec, SirenSpec  # noqa: E402

OTHER = "CPU:1"
HOST = ("NPY", "PYTHON")


@contextmanager
def allocations(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter]:
    """Count ``Buffer.allocate`` calls by device (canonical tinygrad names) inside the block."""
    seen: collections.Counter = collections.Counter()
    original = Buffer.allocate

    def allocate(self: Buffer, *args, **kwargs) -> Buffer:
        # host=True buffers are the runtime's own synchronisation signals (one uint64 each), not data
        if self.options is None or not self.options.host:
            seen[self.device] += 1
        return original(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Buffer, "allocate", allocate)
        yield seen


def _assert_only(seen: collections.Counter, device: str, what: str) -> None:
    stray = {d: n for d, n in seen.items() if d != device and d not in HOST}
    assert not stray, f"{what}: buffers outside {device}: {stray}"
    assert seen[device] > 0, f"{what}: nothing was allocated on {device} (the hook saw {dict(seen)})"


def _rf(mode: str, compression: str = "vm") -> ResFieldSpec:
    return ResFieldSpec(capacity=3, rank=None if compression == "none" else 2, mode=mode, compression=compression)


def _keys(mode: str) -> list[tuple[str, object]]:
    """Every key shape for x of shape (3, 4, I): one frame per row, a scalar, a 0-d array, one per sample."""
    if mode == "lookup":
        return [
            ("per row", np.array([[0], [2], [1]])),
            ("python scalar", 1),
            ("0-d array", np.asarray(2)),
            ("per sample", np.arange(12).reshape(3, 4) % 3),
        ]
    return [
        ("per row", np.array([[-1.0], [0.3], [np.inf]])),
        ("python scalar", 0.25),
        ("0-d array", np.asarray(-0.5)),
        ("per sample", np.linspace(-1.2, 1.2, 12).reshape(3, 4)),
    ]


def _key_kwargs(mode: str, key: object) -> dict:
    return {"frame_ids": key} if mode == "lookup" else {"times": key}


def test_the_default_device_is_not_the_models() -> None:
    # the premise of the tests below: a forgotten device would land somewhere else
    assert Device.canonicalize(None) != OTHER
    assert tinygrad_device("cpu") == "CPU" and tinygrad_device(None) == "CPU"
    assert tinygrad_device("cuda") == "CUDA" and tinygrad_device("cuda:1") == "CUDA:1"


@pytest.mark.parametrize("mode", ["lookup", "interpolation"])
def test_siren_forward_and_gradients_stay_on_the_model_device(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SirenSpec(2, 1, hidden_features=8, n_layers=3, resfield_layers=(0, 1), resfield=_rf(mode))
    x = np.random.default_rng(0).uniform(-1, 1, size=(3, 4, 2)).astype(np.float32)
    with allocations(monkeypatch) as seen:
        model = build_field(spec, device=OTHER)
        load_parameters(model, random_parameters(spec, seed=1))
    _assert_only(seen, OTHER, "build + load")
    assert {p.device for p in get_state_dict(model).values()} == {OTHER}
    for name, key in _keys(mode):
        with allocations(monkeypatch) as seen:
            y = model(x, **_key_kwargs(mode, key)).numpy()  # validate=True: the key checks run too
        assert y.shape == (3, 4, 1) and np.isfinite(y).all()
        _assert_only(seen, OTHER, f"{mode} forward, key {name}")
    # a Tensor key already on the device, then the backward through the one-frame-per-row path
    rows = np.array([[0], [1], [2]], np.int32) if mode == "lookup" else np.array([[0.1], [0.2], [-0.7]], np.float32)
    with allocations(monkeypatch) as seen:
        y = model(x, **_key_kwargs(mode, Tensor(rows, device=OTHER))).numpy()
        _, _, grads = BACKEND.value_and_grad(model, x, np.ones((3, 4, 1)), **_key_kwargs(mode, rows))
    _assert_only(seen, OTHER, f"{mode} Tensor key and value_and_grad")
    assert set(grads) == set(get_state_dict(model))


@pytest.mark.slow  # the suite's budget: the Siren cases above cover forward, keys and training
def test_layers_and_pe_mlp_stay_on_the_model_device(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(1).uniform(-1, 1, size=(3, 4, 2)).astype(np.float32)
    rf = _rf("interpolation")
    pe = MLPSpec(2, 2, hidden_features=8, n_layers=2, n_frequencies=2, skips=(1,), resfield_layers=(0,), resfield=rf)
    cases = [
        ("pe-mlp", pe, {"times": 0.5, "encoding_window": np.array([1.0, 0.5], np.float32)}),
        ("static layer", LinearSpec(2, 3, bias=False), {}),
        ("layer none", LinearSpec(2, 3, True, _rf("lookup", "none")), {"frame_ids": np.arange(12).reshape(3, 4) % 3}),
        ("layer tucker", LinearSpec(2, 3, True, _rf("lookup", "tucker")), {"frame_ids": 2}),
    ]
    for name, spec, kwargs in cases:
        with allocations(monkeypatch) as seen:
            model = build_field(spec, device=OTHER)
            y = model(x, **kwargs).numpy()
            arrays = parameters_to_numpy(model)
        assert np.isfinite(y).all() and set(arrays) == set(get_state_dict(model))
        _assert_only(seen, OTHER, name)


def _loss(pred: Tensor, batch: dict) -> Tensor:
    return (pred - batch["y"]).square().mean()


@pytest.mark.parametrize("mode", ["lookup", pytest.param("interpolation", marks=pytest.mark.slow)])
def test_training_and_prediction_stay_on_the_model_device(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SirenSpec(2, 1, hidden_features=8, n_layers=3, resfield_layers=(1,), resfield=_rf(mode))
    keys = np.array([[0], [1], [2]]) if mode == "lookup" else np.array([[-1.0], [0.0], [1.0]])
    batch = {"x": np.zeros((3, 4, 2), np.float32), "y": np.ones((3, 4, 1), np.float32), **_key_kwargs(mode, keys)}
    with allocations(monkeypatch) as seen:
        model = build_field(spec, device=OTHER)
        trainer = BACKEND.trainer(model, _loss, 1e-3)
        losses = [trainer.step(batch, lr_factor=f) for f in (1.0, 0.5)]
        state = trainer.optimizer_state()
        trainer.load_optimizer_state(state)  # the moments and bias corrections are written back
        samples = np.repeat(keys.reshape(-1), 4)  # the same keys, one per sample
        flat = {"frame_ids": samples, "times": None} if mode == "lookup" else {"frame_ids": None, "times": samples}
        pred = trainer.predict(batch["x"].reshape(12, 2), **flat)
    assert np.isfinite(losses).all() and pred.shape == (12, 1)
    _assert_only(seen, OTHER, f"{mode} training and prediction")


@pytest.mark.slow  # the suite's budget: the Siren cases above cover forward, keys and training
def test_model_spec_inference_and_training_stay_on_the_model_device(monkeypatch: pytest.MonkeyPatch) -> None:
    field = MLPSpec(3, 2, hidden_features=8, n_layers=2, resfield_layers=(0,), resfield=_rf("interpolation"))
    spec = ModelSpec((("sdf", field),), (("latents", ArraySpec((3, 1), Init("normal", 0.0, 0.01))),))

    def forward(model, batch):
        # a task-style forward: a gathered per-frame code joins the points (as the NeRF's DyNeRF does)
        code = model.latents[batch["frame"]] * (batch["points"][..., :1] * 0 + 1)
        out = model.sdf(batch["points"].cat(code, dim=-1)[..., :3], times=batch["time"], validate=False)
        return {"sdf": out}

    batch = {
        "points": np.zeros((3, 4, 3), np.float32),
        "frame": np.array([[0], [1], [2]], np.int32),
        "time": np.array([[-1.0], [0.0], [1.0]], np.float32),
    }
    with allocations(monkeypatch) as seen:
        model = build_field(spec, device=OTHER)
        out = BACKEND.infer(model, forward, batch)
        trainer = BACKEND.trainer(model, lambda pred, b: pred["sdf"].square().mean(), 1e-3, forward=forward)
        loss = trainer.step(batch)
    assert out["sdf"].shape == (3, 4, 2) and np.isfinite(loss)
    _assert_only(seen, OTHER, "model spec")


def test_backend_build_puts_a_cpu_model_on_the_cpu_whatever_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # the default switched to tinygrad's NULL device: anything built or run there would be listed
    spec = SirenSpec(2, 1, hidden_features=8, n_layers=3, resfield_layers=(1,), resfield=_rf("lookup"))
    x = np.zeros((3, 4, 2), np.float32)
    with Context(DEV="NULL"), allocations(monkeypatch) as seen:
        assert Device.DEFAULT == "NULL"
        model = BACKEND.build(spec, random_parameters(spec, seed=0), device="cpu")
        fresh = BACKEND.build(spec, device="cpu")  # drawn, not loaded
        y = model(x, frame_ids=1).numpy()
        y_fresh = fresh(x, frame_ids=np.asarray(0)).numpy()
    assert np.isfinite(y).all() and np.isfinite(y_fresh).all()
    _assert_only(seen, "CPU", "build(device='cpu') with DEV=NULL")
