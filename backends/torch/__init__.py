"""PyTorch backend: ``ResFieldLinear`` (drop-in for ``torch.nn.Linear``) and the fields.

from resfields.backends.torch import ResFieldLinear
"""

from .fields import Field, Model, build_field, positional_encoding
from .frames import FramePlan, plan_frames
from .layer import GroupedLinear, ResFieldLinear, init_parameter_
from .state import load_parameters, parameters_to_numpy

__all__ = [
    "Field",
    "FramePlan",
    "GroupedLinear",
    "Model",
    "ResFieldLinear",
    "build_field",
    "init_parameter_",
    "load_parameters",
    "parameters_to_numpy",
    "plan_frames",
    "positional_encoding",
]
