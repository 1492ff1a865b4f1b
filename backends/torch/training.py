"""Training and batched inference for torch fields: the glue a task's fitting loop needs.

Tasks hand over NumPy batches and a loss written with operators and methods that torch and tinygrad
share (``-``, ``*``, ``.abs()``, ``.square()``, ``.mean()``, ...); everything framework-specific
stays here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from resfields.errors import CheckpointError
from resfields.validate import check_predict_inputs

Keys = np.ndarray | None  # per-row frame ids or times

__all__ = ["TorchTrainer", "infer", "predict"]

LossFn = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
# forward(model, batch) -> prediction; the default calls model(batch["x"], frame_ids=..., times=...)
ForwardFn = Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], Any]

# keys a batch passes to the field itself; every other key is for the loss
_INPUTS = ("x", "frame_ids", "times")


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to_tensors(batch: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        array = np.asarray(value)
        dtype = torch.int64 if np.issubdtype(array.dtype, np.integer) else torch.float32
        out[key] = torch.as_tensor(array, dtype=dtype, device=device)
    return out


def _forward(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["x"], frame_ids=batch.get("frame_ids"), times=batch.get("times"))


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    x: np.ndarray,
    frame_ids: np.ndarray | None = None,
    times: np.ndarray | None = None,
    chunk: int = 65536,
) -> np.ndarray:
    """``model(x)`` in chunks of ``chunk`` rows, as float32 NumPy.

    ``x``: ``(N, I)``; ``frame_ids``/``times``: ``(N,)`` or None. Returns ``(N, O)``; ``N = 0``
    gives an empty ``(0, O)``, as ``nn.Linear`` does.
    """
    spec = getattr(model, "spec", None)
    if hasattr(spec, "in_features"):  # a field or layer (a model of several fields has its own forward)
        keys = {"frame_ids": frame_ids, "times": times}
        check_predict_inputs(
            np.shape(x), spec.in_features, {k: None if v is None else np.shape(v) for k, v in keys.items()}
        )
    device = _device_of(model)
    outputs = []
    for start in range(0, max(len(x), 1), chunk):  # one (empty) chunk for no rows: the output keeps its width
        rows = slice(start, start + chunk)
        batch = {"x": x[rows]}
        if frame_ids is not None:
            batch["frame_ids"] = frame_ids[rows]
        if times is not None:
            batch["times"] = times[rows]
        outputs.append(_forward(model, _to_tensors(batch, device)).float().cpu().numpy())
    return np.concatenate(outputs)


@torch.no_grad()
def infer(model: torch.nn.Module, forward: ForwardFn, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``forward(model, batch)`` without gradients; its dict of outputs as float32 NumPy."""
    out = forward(model, _to_tensors(batch, _device_of(model)))
    return {k: v.float().cpu().numpy() for k, v in out.items()}


class TorchTrainer:
    """Adam on every parameter of ``model``; one :meth:`step` per NumPy batch.

    ``loss(pred, batch)`` receives the field's output ``(N, O)`` and the whole batch as tensors
    (integer arrays as int64, the rest as float32). ``lr_factor`` in :meth:`step` scales ``lr``
    for that step, which is how a schedule (e.g. cosine decay) is applied.
    """

    def __init__(self, model: torch.nn.Module, loss: LossFn, lr: float, forward: ForwardFn | None = None) -> None:
        self.model, self.loss, self.lr = model, loss, lr
        self.forward = forward or _forward
        self.device = _device_of(model)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(self, batch: Mapping[str, np.ndarray], lr_factor: float = 1.0) -> float:
        """One optimiser step on ``batch``; returns the loss before the step."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * lr_factor
        tensors = _to_tensors(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.forward(self.model, tensors), tensors)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Adam's moments under canonical names (``adam.m.<param>``, ``adam.v.<param>``, ``adam.step``)."""
        arrays: dict[str, np.ndarray] = {}
        step = 0
        for name, param in self.model.named_parameters():
            state = self.optimizer.state.get(param)
            if not state:
                continue
            arrays[f"adam.m.{name}"] = state["exp_avg"].detach().cpu().numpy()
            arrays[f"adam.v.{name}"] = state["exp_avg_sq"].detach().cpu().numpy()
            step = int(state["step"])
        arrays["adam.step"] = np.array([step], dtype=np.int64)
        return arrays

    def load_optimizer_state(self, arrays: Mapping[str, Any]) -> None:
        """Restore what :meth:`optimizer_state` wrote (from either backend)."""
        step = int(np.asarray(arrays["adam.step"]).reshape(-1)[0])
        if step == 0:
            return
        for name, param in self.model.named_parameters():
            try:
                m, v = arrays[f"adam.m.{name}"], arrays[f"adam.v.{name}"]
            except KeyError as err:
                raise CheckpointError(f"optimizer state has no moments for parameter {name!r}") from err
            if tuple(np.shape(m)) != tuple(param.shape) or tuple(np.shape(v)) != tuple(param.shape):
                raise CheckpointError(f"optimizer state for {name!r} has shape {np.shape(m)}, expected {param.shape}")
            self.optimizer.state[param] = {
                "step": torch.tensor(float(step)),
                "exp_avg": torch.as_tensor(np.asarray(m), dtype=param.dtype, device=self.device).clone(),
                "exp_avg_sq": torch.as_tensor(np.asarray(v), dtype=param.dtype, device=self.device).clone(),
            }

    def predict(self, x: np.ndarray, frame_ids: Keys = None, times: Keys = None) -> np.ndarray:
        """See :func:`predict`."""
        return predict(self.model, x, frame_ids, times)
