"""Siren and PE-MLP fields for tinygrad, built from a spec.

A field validates ``frame_ids``/``times`` and builds the time matrix once per call; every ResField
layer reuses it (a field has one ResFieldSpec, so all its ResField layers share capacity and mode).
"""

from __future__ import annotations

import math

import numpy as np
from tinygrad import Tensor

from resfields.spec import FieldSpec, Init, LinearSpec, MLPSpec, SirenSpec, init_rules, layer_specs
from resfields.validate import check_input_features, check_time_arguments

from .frames import Key, plan_times
from .layer import ResFieldLinear, as_input

__all__ = ["Field", "build_field", "positional_encoding", "softplus"]

_SOFTPLUS_THRESHOLD = 20.0


def positional_encoding(x: Tensor, n_frequencies: int, include_input: bool) -> Tensor:
    """``(..., D) -> (..., D (include_input + 2L))``: ``[x, sin(2^0 x), cos(2^0 x), ...]``."""
    parts = [x] if include_input else []
    for k in range(n_frequencies):
        parts += [(2.0**k * x).sin(), (2.0**k * x).cos()]
    return parts[0].cat(*parts[1:], dim=-1) if len(parts) > 1 else parts[0]


def softplus(z: Tensor, beta: float) -> Tensor:
    """``log(1 + exp(beta z)) / beta``, and ``z`` itself where ``beta z > 20`` (torch's threshold).

    The exponent is clamped so that the unused branch stays finite: a ``where`` still multiplies
    that branch's gradient by zero, and ``0 * inf`` would be NaN.
    """
    bz = beta * z
    smooth = (bz.minimum(_SOFTPLUS_THRESHOLD).exp() + 1.0).log() / beta
    return (bz > _SOFTPLUS_THRESHOLD).where(z, smooth)


def _layer_rules(rules: dict[str, Init], i: int) -> dict[str, Init]:
    """The init rules of layer ``i`` of a field, with the ``layers.{i}.`` prefix removed."""
    prefix = f"layers.{i}."
    return {name[len(prefix) :]: rule for name, rule in rules.items() if name.startswith(prefix)}


class Field:
    """A Siren or PE-MLP field: ``field(x, frame_ids=None, times=None, validate=True)``.

    ``x`` is ``(..., in_features)``; ``frame_ids``/``times`` broadcast against ``x.shape[:-1]`` and
    reach the ResField layers. Returns ``(..., out_features)``. Parameters are ``layers.{i}.*``.
    ``validate=False`` skips the value checks that read the key back from the device (use it
    inside ``TinyJit``).
    """

    def __init__(self, spec: FieldSpec) -> None:
        if isinstance(spec, LinearSpec):
            raise TypeError("a LinearSpec is a layer, not a field: use ResFieldLinear.from_spec(spec)")
        self.spec = spec
        rules = init_rules(spec)
        self.layers = [ResFieldLinear.from_spec(s, _layer_rules(rules, i)) for i, s in enumerate(layer_specs(spec))]

    def _activation(self, i: int, z: Tensor) -> Tensor:
        spec = self.spec
        if isinstance(spec, SirenSpec):
            return ((spec.omega0 if i == 0 else spec.hidden_omega0) * z).sin()
        if spec.activation == "relu":
            return z.relu()
        return softplus(z, spec.softplus_beta)

    def __call__(
        self,
        x: Tensor | np.ndarray,
        frame_ids: Key | None = None,
        times: Key | None = None,
        *,
        validate: bool = True,
    ) -> Tensor:
        """``(..., in_features) -> (..., out_features)``."""
        spec = self.spec
        x = as_input(x)
        check_input_features(tuple(x.shape), spec.in_features)
        lead = tuple(x.shape[:-1])
        plan = None
        if spec.resfield is None:
            check_time_arguments(None, frame_ids, times)
        else:
            plan = plan_times(spec.resfield, lead, frame_ids, times, validate)
        h = x.reshape(math.prod(lead), spec.in_features)
        encoded = h
        if isinstance(spec, MLPSpec):
            encoded = h = positional_encoding(h, spec.n_frequencies, spec.include_input)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if isinstance(spec, MLPSpec) and i in spec.skips:
                h = h.cat(encoded, dim=-1) / math.sqrt(2.0)
            h = layer.forward_planned(h, plan)
            if i != last:
                h = self._activation(i, h)
        return h.reshape(*lead, h.shape[-1])


def build_field(spec: FieldSpec) -> ResFieldLinear | Field:
    """The tinygrad model for any spec: ResFieldLinear for a LinearSpec, Field otherwise."""
    if isinstance(spec, LinearSpec):
        return ResFieldLinear.from_spec(spec)
    return Field(spec)
