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

from .. import Keys
from ..trainer import AdamStateMixin, Moments, host_batch, predict_chunks, predict_columns

__all__ = ["TorchTrainer", "infer", "predict"]

LossFn = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
# forward(model, batch) -> prediction; the default calls model(batch["x"], frame_ids=..., times=...)
ForwardFn = Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], Any]


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to_tensors(batch: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in host_batch(batch, np.int64).items()}


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
    columns = predict_columns(model, x, frame_ids, times)
    device = _device_of(model)
    return predict_chunks(columns, chunk, lambda rows: _forward(model, _to_tensors(rows, device)).float().cpu().numpy())


@torch.no_grad()
def infer(model: torch.nn.Module, forward: ForwardFn, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``forward(model, batch)`` without gradients; its dict of outputs as float32 NumPy."""
    out = forward(model, _to_tensors(batch, _device_of(model)))
    return {k: v.float().cpu().numpy() for k, v in out.items()}


class TorchTrainer(AdamStateMixin):
    """Adam on every parameter of ``model``; one :meth:`step` per NumPy batch.

    ``loss(pred, batch)`` receives the field's output ``(N, O)`` and the whole batch as tensors
    (integer arrays as int64, the rest as float32). ``lr_factor`` in :meth:`step` scales ``lr``
    for that step, which is how a schedule (e.g. cosine decay) is applied. ``optimizer_state`` /
    ``load_optimizer_state`` follow the contract of :mod:`resfields.backends.trainer`.
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

    # the primitives of the shared Adam-state contract (resfields.backends.trainer.AdamStateMixin)
    def _named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self.model.named_parameters())

    def _get_adam(self) -> tuple[list[Moments | None], int]:
        moments: list[Moments | None] = []
        step = 0
        for _, param in self._named_parameters():
            state = self.optimizer.state.get(param)
            if not state:  # no gradient has reached it yet
                moments.append(None)
                continue
            moments.append((state["exp_avg"].detach().cpu().numpy(), state["exp_avg_sq"].detach().cpu().numpy()))
            step = int(state["step"])
        return moments, step

    def _set_adam(self, moments: list[Moments], step: int) -> None:
        for (_, param), (m, v) in zip(self._named_parameters(), moments, strict=True):
            self.optimizer.state[param] = {
                "step": torch.tensor(float(step)),
                "exp_avg": torch.as_tensor(m, dtype=param.dtype, device=self.device).clone(),
                "exp_avg_sq": torch.as_tensor(v, dtype=param.dtype, device=self.device).clone(),
            }

    def predict(self, x: np.ndarray, frame_ids: Keys = None, times: Keys = None) -> np.ndarray:
        """See :func:`predict`."""
        return predict(self.model, x, frame_ids, times)
