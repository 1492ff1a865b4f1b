"""A torch trainer for one rank of a ``torch.distributed`` run: the model wrapped in
``DistributedDataParallel``, which all-reduces the gradients; the rest is :class:`TorchTrainer`.

The process group must exist (see :mod:`resfields.tasks.common.distributed`). Parameters are broadcast
from rank 0 when the wrapper is built, so every rank starts from the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .training import ForwardFn, LossFn, TorchTrainer

__all__ = ["DistributedTrainer"]


class _Forward(nn.Module):
    """``forward(model, batch)`` as a module, so that DDP sees every call that needs its gradients
    reduced (a NeRF's forward calls the model's fields, never ``model.__call__``)."""

    def __init__(self, model: nn.Module, forward: ForwardFn) -> None:
        super().__init__()
        self.model, self._forward = model, forward

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        return self._forward(self.model, batch)


class DistributedTrainer(TorchTrainer):
    """:class:`TorchTrainer` for one rank: each step runs the rank's shard of the global batch through
    DDP (gradients averaged over the ranks) and returns the loss averaged over the ranks, i.e. the
    global batch's loss when the shards are equal (every rank gets the same value)."""

    def __init__(self, model: nn.Module, loss: LossFn, lr: float, forward: ForwardFn | None = None) -> None:
        if not dist.is_initialized():
            raise RuntimeError("DistributedTrainer needs a torch.distributed process group")
        super().__init__(model, loss, lr, forward)
        device = self.device
        ids = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else None
        )
        # every parameter takes part in every step (a ResField table row of a frame absent from the
        # batch gets a zero gradient through its gather), so DDP need not search for unused ones
        self.wrapped = DistributedDataParallel(_Forward(model, self.forward), device_ids=ids)
        self.forward = lambda _model, batch: self.wrapped(batch)

    def step(self, batch: Mapping[str, Any], lr_factor: float = 1.0) -> float:
        """One optimiser step on this rank's shard; returns the ranks' mean loss before the step."""
        local = super().step(batch, lr_factor)
        value = torch.tensor([local], dtype=torch.float64, device=self.device)
        dist.all_reduce(value)  # the loss curve of the run, not of one shard
        return float(value) / dist.get_world_size()
