"""Canonical parameters <-> torch modules (NumPy arrays in, NumPy arrays out)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from resfields.errors import CheckpointError

__all__ = ["load_parameters", "parameters_to_numpy"]


def load_parameters(module: nn.Module, arrays: Mapping[str, np.ndarray]) -> nn.Module:
    """Copy canonical arrays into ``module`` strictly: every name must match, with its shape."""
    own = dict(module.named_parameters())
    missing, unexpected = sorted(set(own) - set(arrays)), sorted(set(arrays) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"parameter names do not match the model: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for name, param in own.items():
            value = torch.as_tensor(np.asarray(arrays[name]))
            if tuple(value.shape) != tuple(param.shape):
                raise CheckpointError(
                    f"parameter {name!r} has shape {tuple(value.shape)}, model expects {tuple(param.shape)}"
                )
            param.copy_(value.to(param.dtype))
    return module


def parameters_to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    """``{canonical name: float32 array}`` of a module's parameters."""
    return {name: p.detach().float().cpu().numpy() for name, p in module.named_parameters()}
