"""Siren and PE-MLP fields for tinygrad, built from a spec.

A field validates ``frame_ids``/``times`` and builds the time matrix once per call; every ResField
layer reuses it (a field has one ResFieldSpec, so all its ResField layers share capacity and mode).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tinygrad import Tensor

from resfields.spec import AnySpec, FieldSpec, Init, LinearSpec, MLPSpec, ModelSpec, init_rules, layer_specs
from resfields.validate import check_encoding_window, check_input_features

from ..common import FieldLoop, ModelFields
from .frames import Key, plan_times
from .layer import ResFieldLinear, as_input, init_tensor

__all__ = ["Field", "build_field", "positional_encoding", "softplus"]

_SOFTPLUS_THRESHOLD = 20.0


def positional_encoding(x: Tensor, n_frequencies: int, include_input: bool, window: Tensor | None = None) -> Tensor:
    """``(..., D) -> (..., D (include_input + 2L))``: ``[x, w_0 sin(2^0 x), w_0 cos(2^0 x), ...]``;
    ``window`` ``(L,)`` weighs the bands (None: all ones).

    The bands use :func:`sine_cosine` (tinygrad's own ``sin``/``cos`` carry a Payne-Hanek
    reduction that made the NeRF's first-layer kernels take ~35 s each to compile with clang)."""
    parts = [x] if include_input else []
    for k in range(n_frequencies):
        band = list(sine_cosine(2.0**k * x))
        parts += band if window is None else [window[k] * b for b in band]
    return parts[0].cat(*parts[1:], dim=-1) if len(parts) > 1 else parts[0]


# 2*pi split in two (Cody-Waite) so that k * _TWO_PI_HIGH is exact for the |k| < 2**16 a Siren meets
_TWO_PI_HIGH = 6.28125
_TWO_PI_LOW = 2.0 * math.pi - 6.28125


_PARTS: dict[str, tuple[Tensor, Tensor]] = {}


def _two_pi_parts(device: str) -> tuple[Tensor, Tensor]:
    # held in buffers: as Python constants tinygrad folds the two parts back into one rounded 2*pi
    if device not in _PARTS:
        _PARTS[device] = (
            Tensor([_TWO_PI_HIGH], device=device).realize(),
            Tensor([_TWO_PI_LOW], device=device).realize(),
        )
    return _PARTS[device]


def _reduce(z: Tensor) -> Tensor:
    """``z - 2 pi k`` in [-pi, pi] (same shape), two-step so that it stays exact for |z| < 2**16."""
    k = (z * (1.0 / (2.0 * math.pi))).round()
    high, low = _two_pi_parts(z.device)
    return (z - k * high) - k * low


def _sin_poly(r: Tensor) -> Tensor:
    """``sin(r)`` for ``r`` in [-pi/2, pi/2]: a degree-11 odd polynomial (error ~1e-7)."""
    r2 = r * r
    return r * (1.0 + r2 * (-1 / 6 + r2 * (1 / 120 + r2 * (-1 / 5040 + r2 * (1 / 362880 + r2 * (-1 / 39916800))))))


def sine(z: Tensor) -> Tensor:
    """``sin(z)`` to ~1e-7 absolute, elementwise; same shape as ``z``.

    tinygrad's own ``sin`` carries a Payne-Hanek reduction for huge arguments that its CPU backend
    evaluates for every element, making a Siren step ~20x slower. Siren arguments stay far below
    2**16, so a two-step reduction to [-pi/2, pi/2] and a degree-11 odd polynomial suffice.
    """
    r = _reduce(z)
    half_pi = math.pi / 2.0
    return _sin_poly((r > half_pi).where(math.pi - r, (r < -half_pi).where(-math.pi - r, r)))  # sin(pi - r) = sin(r)


def sine_cosine(z: Tensor) -> tuple[Tensor, Tensor]:
    """``(sin(z), cos(z))`` to ~1e-7 absolute for |z| < 2**16, sharing one reduction; shapes of ``z``."""
    r = _reduce(z)
    half_pi = math.pi / 2.0
    sin = _sin_poly((r > half_pi).where(math.pi - r, (r < -half_pi).where(-math.pi - r, r)))
    return sin, _sin_poly(half_pi - r.abs())  # cos(r) = sin(pi/2 - |r|), and pi/2 - |r| is in [-pi/2, pi/2]


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


class Field(FieldLoop):
    """A Siren or PE-MLP field: ``field(x, frame_ids=None, times=None, validate=True)``.

    ``x`` is ``(..., in_features)``; ``frame_ids``/``times`` broadcast against ``x.shape[:-1]`` and
    reach the ResField layers. Returns ``(..., out_features)``. Parameters are ``layers.{i}.*``.
    ``validate=False`` skips the value checks that read the key back from the device (use it
    inside ``TinyJit``). ``device`` (a tinygrad device name; None: the default) holds the parameters.
    """

    def __init__(self, spec: FieldSpec, device: str | None = None) -> None:
        if isinstance(spec, LinearSpec):
            raise TypeError("a LinearSpec is a layer, not a field: use ResFieldLinear.from_spec(spec)")
        self.spec = spec
        rules = init_rules(spec)
        self.layers = [
            ResFieldLinear.from_spec(s, _layer_rules(rules, i), device=device) for i, s in enumerate(layer_specs(spec))
        ]

    # the primitives of the shared field loop (resfields.backends.common.FieldLoop)
    def _sin(self, z: Tensor) -> Tensor:
        return sine(z)

    def _relu(self, z: Tensor) -> Tensor:
        return z.relu()

    def _softplus(self, z: Tensor, beta: float) -> Tensor:
        return softplus(z, beta)

    def _concat(self, a: Tensor, b: Tensor) -> Tensor:
        return a.cat(b, dim=-1)

    def _encode(self, x: Tensor, window: Tensor | None) -> Tensor:
        spec = self.spec
        assert isinstance(spec, MLPSpec)
        # realised once: left lazy, tinygrad recomputes the encoding inside the first layer's matmul
        # for every output feature (and compiles that into one huge kernel per distinct shape)
        return positional_encoding(x, spec.n_frequencies, spec.include_input, window).contiguous()

    def _apply_layer(self, layer: ResFieldLinear, h: Tensor, plan: Any) -> Tensor:
        return layer.forward_planned(h, plan)

    def __call__(
        self,
        x: Tensor | np.ndarray,
        frame_ids: Key | None = None,
        times: Key | None = None,
        *,
        encoding_window: Tensor | np.ndarray | None = None,
        validate: bool = True,
    ) -> Tensor:
        """``(..., in_features) -> (..., out_features)``; ``encoding_window`` ``(n_frequencies,)``
        weighs the encoding bands of a PE-MLP (coarse-to-fine annealing)."""
        spec = self.spec
        x = as_input(x, self.layers[0].weight.device)
        check_input_features(tuple(x.shape), spec.in_features)
        check_encoding_window(spec, None if encoding_window is None else tuple(encoding_window.shape))
        lead = tuple(x.shape[:-1])
        plan = plan_times(spec.resfield, lead, frame_ids, times, validate, x.device)
        window = None if encoding_window is None else as_input(encoding_window, x.device)
        h = self._run_layers(x.reshape(math.prod(lead), spec.in_features), plan, window)
        return h.reshape(*lead, h.shape[-1])


class Model(ModelFields):
    """A :class:`~resfields.spec.ModelSpec`: each field and each array an attribute under its own
    name, so ``get_state_dict`` yields the canonical names (``sdf.layers.0.weight``, ``beta``). The
    task decides how the fields are combined. ``device``: as for :class:`Field`."""

    def __init__(self, spec: ModelSpec, device: str | None = None) -> None:
        self.spec = spec
        for name, field_spec in spec.fields:
            setattr(self, name, build_field(field_spec, device))
        for name, array in spec.arrays:
            setattr(self, name, init_tensor(array.shape, array.init, device))


def build_field(spec: AnySpec, device: str | None = None) -> ResFieldLinear | Field | Model:
    """The tinygrad model for any spec: ResFieldLinear for a LinearSpec, Model for a ModelSpec,
    Field otherwise, with its parameters created on ``device`` (None: tinygrad's default)."""
    if isinstance(spec, ModelSpec):
        return Model(spec, device)
    if isinstance(spec, LinearSpec):
        return ResFieldLinear.from_spec(spec, device=device)
    return Field(spec, device)
