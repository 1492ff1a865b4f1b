"""What every backend's layers and fields share, written once (the einops pattern: a mixin owns the
logic, each framework's file supplies a handful of primitives).

:class:`ResFieldLayer` is the ResField linear layer without its kernel: construction from arguments
or a spec, the canonical parameters and their init rules, the repr text and the residual algebra
(``dW = sum_r c_r M_r``). A backend's layer mixes it in and defines ``_new_parameter``,
``_draw_parameter``, ``_no_parameter`` and ``_einsum``.

:class:`FieldLoop` is the forward of a Siren or PE-MLP after the keys are planned: encoding, layers,
skip connections and activations. A backend's field class mixes it in and defines the primitives
``_sin``, ``_relu``, ``_softplus``, ``_concat``, ``_encode`` and ``_apply_layer``.

Each framework keeps parameter creation, the time plan and the layer's kernel.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from resfields import spec as specs
from resfields.spec import FieldSpec, Init, LinearSpec, MLPSpec, ModelSpec, ResFieldSpec, SirenSpec

__all__ = ["FieldLoop", "ModelFields", "ResFieldLayer"]


class ResFieldLayer:
    """``y = x (W + dW(t))^T + b`` without the kernel: what both backends' ``ResFieldLinear`` share.

    Args:
        in_features, out_features, bias: as ``torch.nn.Linear``.
        rank: number of residual bases R (omit for ``compression="none"``).
        capacity: number of time coefficients C (usually the number of frames).
        mode: "lookup" (call with integer ``frame_ids`` in [0, C)) or "interpolation" (call with
            ``times`` in [-1, 1]; see :mod:`resfields.spec` for the time convention).
        compression: "vm" (default), "none", "cp" or "tucker".
        **options: the backend's own (torch: ``device``, ``dtype``), passed to ``_setup``.

    Parameters are attributes with the canonical names of :func:`resfields.spec.parameter_shapes`,
    created in that order (the order of a torch ``state_dict``).
    """

    spec: LinearSpec
    in_features: int
    out_features: int
    # the parameters a compression has (see parameter_shapes); the framework's tensors
    coefficients: Any
    residuals: Any
    matrices: Any
    core: Any
    out_factors: Any
    in_factors: Any

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rank: int | None = None,
        capacity: int,
        mode: str = "lookup",
        compression: str = "vm",
        **options: Any,
    ) -> None:
        rf = ResFieldSpec(capacity=capacity, rank=rank, mode=mode, compression=compression)  # type: ignore[arg-type]
        self._setup(LinearSpec(in_features, out_features, bias, rf), **options)

    @classmethod
    def from_spec(cls, spec: LinearSpec, *args: Any, **options: Any) -> Any:
        """Build from a :class:`~resfields.spec.LinearSpec` (``resfield=None`` gives a static layer);
        the other arguments are the backend's ``_setup``'s."""
        layer = cls.__new__(cls)
        layer._setup(spec, *args, **options)
        return layer

    def _setup(self, spec: LinearSpec, rules: Mapping[str, Init] | None = None, **options: Any) -> None:
        """Create every parameter of ``spec`` (``options`` go to ``_new_parameter``), then draw them
        from ``rules`` (bare names; None: ``init_rules(spec)``)."""
        self.spec = spec
        self.in_features, self.out_features = spec.in_features, spec.out_features
        for name, shape in specs.parameter_shapes(spec).items():
            self._new_parameter(name, shape, **options)
        if not spec.bias:
            self._no_parameter("bias")
        self.reset_parameters(rules)

    def reset_parameters(self, rules: Mapping[str, Init] | None = None) -> None:
        """Redraw every parameter from ``rules`` (bare names; None: the spec's plain-layer rules),
        in the rules' order, which fixes what a seeded RNG gives."""
        for name, rule in (specs.init_rules(self.spec) if rules is None else rules).items():
            self._draw_parameter(name, rule)

    # the primitives of each framework
    def _new_parameter(self, name: str, shape: tuple[int, ...], **options: Any) -> None:
        """Attach an (undrawn) parameter ``name`` of ``shape``."""
        raise NotImplementedError

    def _draw_parameter(self, name: str, rule: Init) -> None:
        """Fill parameter ``name`` from ``rule`` with the framework's RNG."""
        raise NotImplementedError

    def _no_parameter(self, name: str) -> None:
        """Mark the optional parameter ``name`` (the bias) absent."""
        raise NotImplementedError

    def _einsum(self, equation: str, *operands: Any) -> Any:
        """``einsum(equation, *operands)`` in the framework (the tucker basis)."""
        raise NotImplementedError

    @property
    def resfield(self) -> ResFieldSpec | None:
        """The layer's :class:`~resfields.spec.ResFieldSpec`, or None for a static layer."""
        return self.spec.resfield

    def extra_repr(self) -> str:
        """The layer's arguments as text (what ``repr`` shows inside the parentheses)."""
        rf = self.spec.resfield
        text = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.spec.bias}"
        if rf is not None:
            text += f", rank={rf.rank}, capacity={rf.capacity}, mode={rf.mode}, compression={rf.compression}"
        return text

    # ------------------------------------------------------------------ math

    def time_table(self) -> Any:
        """What the time key selects rows of: the ``(C, R)`` coefficients, or the ``(C, O, I)``
        residuals for compression "none"."""
        rf = typing.cast(ResFieldSpec, self.spec.resfield)
        return self.residuals if rf.compression == "none" else self.coefficients

    def residual_basis(self) -> Any:
        """``(R, O, I)`` matrices with ``dW(t) = sum_r c_r(t) M_r`` (vm, cp, tucker)."""
        rf = typing.cast(ResFieldSpec, self.spec.resfield)
        if rf.compression == "vm":
            return self.matrices
        u, v = self.out_factors, self.in_factors  # (R, O), (R, I)
        if rf.compression == "cp":
            return u.reshape(-1, self.out_features, 1) * v.reshape(-1, 1, self.in_features)
        return self._einsum("abd,bo,di->aoi", self.core, u, v)

    def residuals_from(self, rows: Any) -> Any:
        """``dW`` from rows of :meth:`time_table` (or blends of them), ``(K, R)`` coefficients or
        ``(K, O, I)`` residuals -> ``(K, O, I)``."""
        o, i = self.out_features, self.in_features
        if typing.cast(ResFieldSpec, self.spec.resfield).compression == "none":
            return rows.reshape(-1, o, i)
        basis = self.residual_basis()
        return (rows @ basis.reshape(basis.shape[0], o * i)).reshape(-1, o, i)


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
