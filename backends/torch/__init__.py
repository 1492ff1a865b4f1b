"""PyTorch backend: ``ResFieldLinear`` (drop-in for ``torch.nn.Linear``) and the fields.

from resfields.backends.torch import ResFieldLinear
"""

from .fields import Field, Model, build_field, positional_encoding
from .grouped import grouped_linear, grouped_outer
from .layer import ResFieldLinear, init_parameter_
from .plan import FramePlan, plan_frames
from .state import load_parameters, parameters_to_numpy
from .strategy import STRATEGIES, choose

__all__ = [
    "STRATEGIES",
    "Field",
    "FramePlan",
    "Model",
    "ResFieldLinear",
    "build_field",
    "choose",
    "grouped_linear",
    "grouped_outer",
    "init_parameter_",
    "load_parameters",
    "parameters_to_numpy",
    "plan_frames",
    "positional_encoding",
]
