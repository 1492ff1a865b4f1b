"""Siren and PE-MLP fields as ``torch.nn.Module``s, built from a spec.

A field plans frames once per call (key checks, the frames present, the grouping of rows by frame)
and hands the plan to every ResField layer, so that work is done once per forward, not once per layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resfields.spec import AnySpec, FieldSpec, LinearSpec, MLPSpec, ModelSpec, init_rules, layer_specs
from resfields.validate import check_encoding_window, check_input_features

from ..common import FieldLoop, ModelFields
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


class Field(FieldLoop, nn.Module):
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

    # the primitives of the shared field loop (resfields.backends.common.FieldLoop)
    def _sin(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z)

    def _relu(self, z: torch.Tensor) -> torch.Tensor:
        return torch.relu(z)

    def _softplus(self, z: torch.Tensor, beta: float) -> torch.Tensor:
        return nn.functional.softplus(z, beta=beta)

    def _concat(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b], dim=-1)

    def _encode(self, x: torch.Tensor, window: torch.Tensor | None) -> torch.Tensor:
        spec = self.spec
        assert isinstance(spec, MLPSpec)
        w = None if window is None else torch.as_tensor(window, dtype=x.dtype, device=x.device)
        return positional_encoding(x, spec.n_frequencies, spec.include_input, w)

    def _apply_layer(self, layer: ResFieldLinear, h: torch.Tensor, plan: Any) -> torch.Tensor:
        return layer(h, plan=plan if layer.resfield is not None else None)

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
        return self._run_layers(x, plan, encoding_window)


class Model(ModelFields, nn.Module):
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


def build_field(spec: AnySpec, device: Any = None, dtype: torch.dtype | None = None) -> nn.Module:
    """The torch module for any spec: ResFieldLinear for a LinearSpec, Model for a ModelSpec,
    Field otherwise."""
    if isinstance(spec, ModelSpec):
        return Model(spec, device, dtype)
    if isinstance(spec, LinearSpec):
        return ResFieldLinear.from_spec(spec, device, dtype)
    return Field(spec, device, dtype)
