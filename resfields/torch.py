"""The PyTorch layer in a short import path, as ``einops.layers.torch``::

    from resfields.torch import ResFieldLinear

Everything here lives in :mod:`resfields.backends.torch`; see the README's "Use it in your own model".
"""

from resfields.backends.torch import (
    STRATEGIES,
    Field,
    FramePlan,
    ResFieldLinear,
    build_field,
    choose,
    grouped_linear,
    grouped_outer,
    load_parameters,
    parameters_to_numpy,
    plan_frames,
)
from resfields.backends.torch.strategy import forced

__all__ = [
    "STRATEGIES",
    "Field",
    "FramePlan",
    "ResFieldLinear",
    "build_field",
    "choose",
    "forced",
    "grouped_linear",
    "grouped_outer",
    "load_parameters",
    "parameters_to_numpy",
    "plan_frames",
]
