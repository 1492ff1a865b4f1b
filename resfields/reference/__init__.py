"""The NumPy float64 reference: the oracle every backend is compared with.

Plain, equation-by-equation code written against the Python array API standard; it shares no code
with the backends. See :mod:`resfields.reference.layer` and :mod:`resfields.reference.fields`.
"""

from resfields.reference.fields import field_forward, field_vjp, positional_encoding, softplus
from resfields.reference.layer import (
    per_sample_weights,
    resfield_linear,
    resfield_linear_vjp,
    residual_basis,
    time_matrix,
)

__all__ = [
    "field_forward",
    "field_vjp",
    "per_sample_weights",
    "positional_encoding",
    "resfield_linear",
    "resfield_linear_vjp",
    "residual_basis",
    "softplus",
    "time_matrix",
]
