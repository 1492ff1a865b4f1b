"""tinygrad backend: ``ResFieldLinear`` (``tinygrad.nn.Linear`` with a time-dependent weight) and the fields.

from resfields.backends.tinygrad import ResFieldLinear
"""

from .fields import Field, Model, build_field, positional_encoding, softplus
from .frames import TimePlan, plan_times, time_matrix
from .layer import ResFieldLinear, init_tensor
from .state import load_parameters, parameters_to_numpy

__all__ = [
    "Field",
    "Model",
    "ResFieldLinear",
    "TimePlan",
    "build_field",
    "init_tensor",
    "load_parameters",
    "parameters_to_numpy",
    "plan_times",
    "positional_encoding",
    "softplus",
    "time_matrix",
]
