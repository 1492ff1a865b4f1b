"""Canonical parameters <-> tinygrad models (NumPy arrays in, NumPy arrays out).

Names come from ``tinygrad.nn.state.get_state_dict``, which walks the model's attributes, so they
are the canonical names of :func:`resfields.spec.parameter_shapes` (``weight``, ``layers.0.bias``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_state_dict

from resfields.validate import check_parameters_match

__all__ = ["load_parameters", "parameters_to_numpy"]


def load_parameters(model: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Copy canonical arrays into ``model`` strictly: every name must match, with its shape.

    Raises CheckpointError (naming the offending parameters) before anything is copied. The
    parameter Tensors keep their identity (their data is replaced), so an optimizer built earlier
    still updates them.
    """
    own = get_state_dict(model)
    values = {name: np.asarray(value) for name, value in arrays.items()}
    check_parameters_match({k: tuple(p.shape) for k, p in own.items()}, {k: v.shape for k, v in values.items()})
    for name, param in own.items():
        param.replace(Tensor(np.ascontiguousarray(values[name], dtype=np.float32), device=param.device))
    # replace() drops any pending gradient relation; realise once so later graphs start from buffers
    Tensor.realize(*own.values())
    return model


def parameters_to_numpy(model: Any) -> dict[str, np.ndarray]:
    """``{canonical name: float32 array}`` of a model's parameters."""
    return {name: p.cast(dtypes.float32).numpy() for name, p in get_state_dict(model).items()}
