"""Canonical parameters <-> torch modules (NumPy arrays in, NumPy arrays out)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from resfields.validate import check_parameters_match

__all__ = ["load_parameters", "parameters_to_numpy"]


def load_parameters(module: nn.Module, arrays: Mapping[str, np.ndarray]) -> nn.Module:
    """Copy canonical arrays into ``module`` strictly: every name must match, with its shape."""
    own = dict(module.named_parameters())
    values = {name: np.asarray(value) for name, value in arrays.items()}
    check_parameters_match({k: tuple(p.shape) for k, p in own.items()}, {k: v.shape for k, v in values.items()})
    with torch.no_grad():
        for name, param in own.items():
            param.copy_(torch.as_tensor(values[name]).to(param.dtype))
    return module


def parameters_to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    """``{canonical name: float32 array}`` of a module's parameters."""
    return {name: p.detach().float().cpu().numpy() for name, p in module.named_parameters()}
