"""What every backend's fields share, written once (the einops pattern: a mixin owns the logic, each
framework's file supplies a handful of primitives).

:class:`FieldLoop` is the forward of a Siren or PE-MLP after the keys are planned: encoding, layers,
skip connections and activations. A backend's field class mixes it in and defines the primitives
``_sin``, ``_relu``, ``_softplus``, ``_concat``, ``_encode`` and ``_apply_layer``; the framework keeps
parameter creation, the time plan and the layer's kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from resfields.spec import FieldSpec, MLPSpec, ModelSpec, SirenSpec

__all__ = ["FieldLoop", "ModelFields"]


class FieldLoop:
    """The layer loop of a field; ``spec`` and ``layers`` are the backend's."""

    spec: FieldSpec
    layers: Sequence[Any]

    def _sin(self, z: Any) -> Any:
        raise NotImplementedError

    def _relu(self, z: Any) -> Any:
        raise NotImplementedError

    def _softplus(self, z: Any, beta: float) -> Any:
        raise NotImplementedError

    def _concat(self, a: Any, b: Any) -> Any:
        """``a`` and ``b`` joined along the last axis."""
        raise NotImplementedError

    def _encode(self, x: Any, window: Any) -> Any:
        """The positional encoding of a PE-MLP's input, bands weighed by ``window`` (None: all ones)."""
        raise NotImplementedError

    def _apply_layer(self, layer: Any, h: Any, plan: Any) -> Any:
        """Layer ``layer`` on ``h`` with the call's time ``plan``."""
        raise NotImplementedError

    def _activation(self, i: int, z: Any) -> Any:
        """The activation after layer ``i``: a Siren's scaled sine, or the MLP's relu / softplus."""
        spec = self.spec
        if isinstance(spec, SirenSpec):
            return self._sin((spec.omega0 if i == 0 else spec.hidden_omega0) * z)
        if spec.activation == "relu":
            return self._relu(z)
        return self._softplus(z, spec.softplus_beta)

    def _run_layers(self, x: Any, plan: Any, window: Any = None) -> Any:
        """``(..., in_features) -> (..., out_features)`` once the keys are planned: the encoding of a
        PE-MLP, then every layer, its input joined with the encoding at the skips (scaled by 1/sqrt 2)
        and an activation after every layer but the last."""
        spec = self.spec
        h = encoded = x
        if isinstance(spec, MLPSpec):
            encoded = h = self._encode(h, window)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if isinstance(spec, MLPSpec) and i in spec.skips:
                h = self._concat(h, encoded) / math.sqrt(2.0)
            h = self._apply_layer(layer, h, plan)
            if i != last:
                h = self._activation(i, h)
        return h


class ModelFields:
    """A :class:`~resfields.spec.ModelSpec` model's fields by name (each backend stores them as
    attributes named after the fields, so parameters get the canonical names)."""

    spec: ModelSpec

    def field(self, name: str) -> Any:
        """The model of field ``name``."""
        self.spec.field(name)  # SpecError naming the fields if there is no such field
        return getattr(self, name)
