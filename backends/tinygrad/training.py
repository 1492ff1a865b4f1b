"""Training and batched inference for tinygrad fields, compiled with TinyJit.

An eager tinygrad step spends ~300 ms scheduling on CPU, so both the optimiser step and inference
run as TinyJit functions over fixed shapes: training batches must keep one shape (the task samplers
guarantee it) and inference pads its last chunk. Keys are validated on the host before they enter a
jitted function, because the field's own checks (``validate=True``) would read the device back.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tinygrad import Context, Tensor, TinyJit, dtypes
from tinygrad.nn.optim import Adam
from tinygrad.nn.state import get_state_dict

from resfields.validate import check_batch_layout

from .. import Keys
from ..trainer import AdamStateMixin, Moments, host_batch, predict_chunks, predict_columns
from .frames import check_key_values, device_tensor

__all__ = ["TinygradTrainer", "infer", "predict"]

LossFn = Callable[[Tensor, Mapping[str, Tensor]], Tensor]
# forward(model, batch) -> prediction; the default calls model(batch["x"], frame_ids=..., times=..., validate=False)
ForwardFn = Callable[[Any, Mapping[str, Tensor]], Any]


def _device_of(model: Any) -> str:
    return next(iter(get_state_dict(model).values())).device


def _to_tensors(batch: Mapping[str, np.ndarray], device: str) -> dict[str, Tensor]:
    return {k: device_tensor(v, device).realize() for k, v in host_batch(batch, np.int32).items()}


def _check_keys(model: Any, frame_ids: np.ndarray | None, times: np.ndarray | None) -> None:
    # the checks validate=True would do inside the field, done on the host copy instead (the same
    # function, so training and inference accept the same keys)
    rf = getattr(getattr(model, "spec", None), "resfield", None)
    if rf is None:
        return
    for which, key in (("frame_ids", frame_ids), ("times", times)):
        if key is not None:
            check_key_values(rf, which, np.asarray(key))


def _forward(model: Any, batch: Mapping[str, Tensor]) -> Tensor:
    return model(batch["x"], frame_ids=batch.get("frame_ids"), times=batch.get("times"), validate=False)


class _Predictor:
    """A jitted forward over chunks of a fixed number of rows (the last chunk is padded)."""

    def __init__(self, model: Any, chunk: int) -> None:
        self.model, self.chunk = model, chunk
        self.device = _device_of(model)
        self._jits: dict[tuple[str, ...], TinyJit] = {}

    def _jit(self, keys: tuple[str, ...]) -> TinyJit:
        if keys not in self._jits:
            self._jits[keys] = TinyJit(lambda **batch: _forward(self.model, batch).realize())
        return self._jits[keys]

    def __call__(self, x: np.ndarray, frame_ids: np.ndarray | None, times: np.ndarray | None) -> np.ndarray:
        # checked before the jit, which would see only the padded chunk's shape
        columns = predict_columns(self.model, x, frame_ids, times)
        _check_keys(self.model, frame_ids, times)
        forward = self._jit(tuple(sorted(columns)))

        def run(rows: dict[str, np.ndarray]) -> np.ndarray:
            if len(rows["x"]) == 0:  # nothing to compile for: the eager forward gives the empty (0, O) output
                return _forward(self.model, _to_tensors(rows, self.device)).numpy()
            return forward(**_to_tensors(rows, self.device)).numpy()

        return predict_chunks(columns, self.chunk, run, pad=True)


# one compiled predictor per model, so evaluating several point sets compiles once
_PREDICTORS: weakref.WeakKeyDictionary[Any, _Predictor] = weakref.WeakKeyDictionary()
PREDICT_CHUNK = 16384


def predict(
    model: Any,
    x: np.ndarray,
    frame_ids: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> np.ndarray:
    """``model(x)`` in chunks of ``PREDICT_CHUNK`` rows (the last one padded), as float32 NumPy.

    ``x``: ``(N, I)``; ``frame_ids``/``times``: ``(N,)`` or None. Returns ``(N, O)``. The compiled
    forward is kept per model, so later calls with any N reuse it.
    """
    if model not in _PREDICTORS:
        _PREDICTORS[model] = _Predictor(model, PREDICT_CHUNK)
    return _PREDICTORS[model](x, frame_ids, times)


_INFER_JITS: weakref.WeakKeyDictionary[Any, dict[Any, TinyJit]] = weakref.WeakKeyDictionary()


def infer(model: Any, forward: ForwardFn, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``forward(model, batch)`` as float32 NumPy outputs, compiled once per model, forward and batch
    layout (calls with the same shapes reuse it; keep chunk shapes fixed)."""
    jits = _INFER_JITS.setdefault(model, {})
    # integer-ness too: _to_tensors casts by it, and a jit replayed with another dtype raises JitError
    key = (
        forward,
        tuple((k, np.shape(v), np.issubdtype(np.asarray(v).dtype, np.integer)) for k, v in sorted(batch.items())),
    )
    if key not in jits:
        jits[key] = TinyJit(lambda **tensors: {k: v.realize() for k, v in forward(model, tensors).items()})
    out = jits[key](**_to_tensors(batch, _device_of(model)))
    return {k: v.numpy() for k, v in out.items()}


class TinygradTrainer(AdamStateMixin):
    """Adam on every parameter of ``model``, one TinyJit-compiled :meth:`step` per NumPy batch.

    ``loss(pred, batch)`` receives the field's output ``(N, O)`` and the whole batch as tensors
    (integer arrays as int32, the rest as float32); every batch must have the same keys and shapes.
    ``lr_factor`` in :meth:`step` scales ``lr`` for that step (a schedule), passed into the jit as
    a tensor so that changing it does not recompile. ``optimizer_state`` / ``load_optimizer_state``
    follow the contract of :mod:`resfields.backends.trainer`.
    """

    def __init__(self, model: Any, loss: LossFn, lr: float, forward: ForwardFn | None = None) -> None:
        self.model, self.loss, self.lr = model, loss, lr
        self.forward = forward or _forward
        self.device = _device_of(model)
        self.params = get_state_dict(model)
        for p in self.params.values():
            p.requires_grad = True
        self.optimizer = Adam(list(self.params.values()), lr=lr)
        self._step = TinyJit(self._train_step)
        self._steps_done = 0
        self._layout: dict[str, tuple[int, ...]] | None = None  # batch shapes the step is compiled for

    def _train_step(self, lr: Tensor, **batch: Tensor) -> Tensor:
        self.optimizer.lr.assign(lr)
        self.optimizer.zero_grad()
        loss = self.loss(self.forward(self.model, batch), batch)
        loss.backward()
        for param in self.params.values():
            if param.grad is None:  # unused by this forward (e.g. another field of a model): no update
                param.grad = param.zeros_like()
        return loss.realize(*self.optimizer.schedule_step())

    def step(self, batch: Mapping[str, np.ndarray], lr_factor: float = 1.0) -> float:
        """One optimiser step on ``batch``; returns the loss before the step. Every batch must have
        the keys and shapes of the first (the step is compiled for them): ShapeError otherwise."""
        layout = {k: np.shape(v) for k, v in batch.items()}
        if self._layout is not None:
            check_batch_layout(self._layout, layout)
        _check_keys(self.model, batch.get("frame_ids"), batch.get("times"))
        lr = Tensor([self.lr * lr_factor], dtype=dtypes.float32, device=self.device).realize()
        with Context(TRAINING=1):
            loss = self._step(lr, **_to_tensors(batch, self.device))
        self._steps_done += 1
        self._layout = layout  # only once a step succeeded: a failed first batch fixes nothing
        return float(loss.item())

    # the primitives of the shared Adam-state contract (resfields.backends.trainer.AdamStateMixin)
    def _named_parameters(self) -> list[tuple[str, Tensor]]:
        return list(self.params.items())

    def _get_adam(self) -> tuple[list[Moments | None], int]:
        opt = self.optimizer
        moments: list[Moments | None] = [(m.numpy(), v.numpy()) for m, v in zip(opt.m, opt.v, strict=True)]
        # counted here: b1_t = b1**step underflows float32 after ~900 steps, so it cannot be read back
        return moments, self._steps_done

    def _set_adam(self, moments: list[Moments], step: int) -> None:
        opt = self.optimizer
        for m, v, (new_m, new_v) in zip(opt.m, opt.v, moments, strict=True):
            m.assign(Tensor(new_m.astype(np.float32), device=m.device)).realize()
            v.assign(Tensor(new_v.astype(np.float32), device=v.device)).realize()
        opt.b1_t.assign(Tensor([opt.b1**step], dtype=dtypes.float32, device=opt.b1_t.device)).realize()
        opt.b2_t.assign(Tensor([opt.b2**step], dtype=dtypes.float32, device=opt.b2_t.device)).realize()
        self._steps_done = step

    def predict(self, x: np.ndarray, frame_ids: Keys = None, times: Keys = None) -> np.ndarray:
        """Chunked jitted inference; see :func:`predict`."""
        return predict(self.model, x, frame_ids, times)
