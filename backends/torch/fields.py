"""Siren and PE-MLP fields as ``torch.nn.Module``s, built from a spec.

A field plans frames once per call (key checks, the frames present, the grouping of rows by frame)
and hands the plan to every ResField layer, so that work is done once per forward, not once per layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from resfields.spec import AnySpec, FieldSpec, LinearSpec, MLPSpec, ModelSpec, SirenSpec, init_rules, layer_specs
from resfields.validate import check_encoding_window, check_input_features

from .layer import ResFieldLinear, check_dtype, init_parameter_
from .plan import plan_frames

__all__ = ["Field", "build_field", "positional_encoding"]


def positional_encoding(
    x: torch.Tensor, n_frequencies: int, include_input: bool, window: torch.Tensor | None = None
) -> torch.Tensor:
    """``(..., D) -> (..., D (include_input + 2L))``: ``[x, w_0 sin(2^0 x), w_0 cos(2^0 x), ...]``;
    ``window`` ``(L,)`` weighs the bands (None: all ones)."""
    parts = [x] if include_input else []
    if n_frequencies > 0:
        # all bands in one sin and one cos: (..., L, 1, D) angles -> (..., L, 2, D) -> (..., 2 L D)
        scales = torch.tensor([2.0**k for k in range(n_frequencies)], dtype=x.dtype, device=x.device)
        angles = x.unsqueeze(-2).unsqueeze(-2) * scales.view(-1, 1, 1)
        bands = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-2)
        if window is not None:
            bands = bands * window.view(-1, 1, 1)
        parts.append(bands.flatten(-3))
    return torch.cat(parts, dim=-1)


class Field(nn.Module):
    """A Siren or PE-MLP field (or a lone layer): ``field(x, frame_ids=None, times=None)``.

    ``x`` is ``(..., in_features)``; ``frame_ids``/``times`` broadcast against ``x.shape[:-1]`` and
    reach the ResField layers. Returns ``(..., out_features)``. Parameters are ``layers.{i}.*``.
    """

    def __init__(self, spec: FieldSpec, device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if isinstance(spec, LinearSpec):
            raise TypeError("a LinearSpec is a layer, not a field: use ResFieldLinear.from_spec(spec)")
        self.spec = spec
        self.layers = nn.ModuleList(ResFieldLinear.from_spec(s, device, dtype) for s in layer_specs(spec))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Redraw every parameter from the field's init rules (Siren, geometric, ...), which
        override the plain-linear rules each layer drew for itself."""
        params = dict(self.named_parameters())
        for name, rule in init_rules(self.spec).items():
            init_parameter_(params[name], rule)

    def _activation(self, i: int, z: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if isinstance(spec, SirenSpec):
            return torch.sin((spec.omega0 if i == 0 else spec.hidden_omega0) * z)
        if spec.activation == "relu":
            return torch.relu(z)
        return nn.functional.softplus(z, beta=spec.softplus_beta)

    def forward(
        self,
        x: torch.Tensor,
        frame_ids: torch.Tensor | int | None = None,
        times: torch.Tensor | float | None = None,
        *,
        encoding_window: torch.Tensor | None = None,
        validate: bool = True,
    ) -> torch.Tensor:
        """``(..., in_features) -> (..., out_features)``.

        ``encoding_window`` ``(n_frequencies,)`` weighs the encoding bands of a PE-MLP (coarse-to-fine).
        ``validate=False`` skips the value checks of the keys (frame range, NaN times), which read
        values back to the host, on both backends.
        """
        spec = self.spec
        check_input_features(tuple(x.shape), spec.in_features)
        check_dtype(x, self.layers[0].weight)
        check_encoding_window(spec, None if encoding_window is None else tuple(encoding_window.shape))
        plan = plan_frames(spec.resfield, tuple(x.shape[:-1]), frame_ids, times, x.device, validate=validate)
        h = encoded = x
        if isinstance(spec, MLPSpec):
            window = (
                None if encoding_window is None else torch.as_tensor(encoding_window, dtype=h.dtype, device=h.device)
            )
            encoded = h = positional_encoding(h, spec.n_frequencies, spec.include_input, window)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if isinstance(spec, MLPSpec) and i in spec.skips:
                h = torch.cat([h, encoded], dim=-1) / math.sqrt(2.0)
            h = layer(h, plan=plan if layer.resfield is not None else None)
            if i != last:
                h = self._activation(i, h)
        return h


class Model(nn.Module):
    """A :class:`~resfields.spec.ModelSpec`: each field a submodule and each array a parameter,
    under its own name, so ``named_parameters`` yields the canonical names (``sdf.layers.0.weight``,
    ``beta``). The task decides how the fields are combined."""

    def __init__(self, spec: ModelSpec, device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.spec = spec
        for name, field_spec in spec.fields:
            self.add_module(name, build_field(field_spec, device, dtype))
        for name, array in spec.arrays:
            param = nn.Parameter(torch.empty(array.shape, device=device, dtype=dtype))
            self.register_parameter(name, param)
            init_parameter_(param, array.init)

    def field(self, name: str) -> nn.Module:
        """The module of field ``name``."""
        self.spec.field(name)  # SpecError naming the fields if there is no such field
        return getattr(self, name)


def build_field(spec: AnySpec, device: Any = None, dtype: torch.dtype | None = None) -> nn.Module:
    """The torch module for any spec: ResFieldLinear for a LinearSpec, Model for a ModelSpec,
    Field otherwise."""
    if isinstance(spec, ModelSpec):
        return Model(spec, device, dtype)
    if isinstance(spec, LinearSpec):
        return ResFieldLinear.from_spec(spec, device, dtype)
    return Field(spec, device, dtype)
