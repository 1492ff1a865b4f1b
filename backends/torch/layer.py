"""The ResField linear layer for PyTorch: a drop-in for ``torch.nn.Linear``.

Each call views the batch as rows of samples that share a key (a
:class:`~resfields.backends.torch.plan.FramePlan`, made by the call or handed in by the caller so that
every layer of one forward shares it) and picks one of four exact strategies from shapes and the
device alone (:mod:`resfields.backends.torch.strategy` has the cost model).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resfields.errors import SpecError
from resfields.spec import Init, LinearSpec, ResFieldSpec, init_rules, parameter_shapes
from resfields.validate import check_input_dtype, check_input_features

from .plan import FramePlan, plan_frames, upper_knot
from .strategy import STRATEGIES, run

__all__ = ["ResFieldLinear", "check_dtype", "init_parameter_"]


def init_parameter_(tensor: torch.Tensor, rule: Init) -> torch.Tensor:
    """Fill ``tensor`` in place from a spec :class:`~resfields.spec.Init` rule (torch's RNG)."""
    with torch.no_grad():
        if rule.kind == "uniform":
            tensor.uniform_(rule.a, rule.b)
        elif rule.kind == "normal":
            tensor.normal_(rule.a, rule.b)
        else:
            tensor.fill_(rule.a)
        for start, stop in rule.zero_columns:
            tensor[:, start:stop] = 0.0
    return tensor


class ResFieldLinear(nn.Module):
    """``y = x (W + dW(t))^T + b``, a drop-in for ``torch.nn.Linear`` whose weight depends on time.

    Args:
        in_features, out_features, bias: as ``torch.nn.Linear``.
        rank: number of residual bases R (omit for ``compression="none"``).
        capacity: number of time coefficients C (usually the number of frames).
        mode: "lookup" (call with integer ``frame_ids`` in [0, C)) or "interpolation" (call with
            ``times`` in [-1, 1]; see :mod:`resfields.spec` for the time convention).
        compression: "vm" (default), "none", "cp" or "tucker".

    Call: ``layer(x, frame_ids=None, times=None)`` with ``x`` of shape ``(..., in_features)`` and
    ``frame_ids``/``times`` broadcasting against ``x.shape[:-1]`` (``(B, 1)`` with ``(B, S, F)``
    is one frame per row, ``(N,)`` with ``(N, F)`` one per sample, a scalar one for all).
    Returns ``(..., out_features)``. Parameter names follow :func:`resfields.spec.parameter_shapes`.
    """

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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        rf = ResFieldSpec(capacity=capacity, rank=rank, mode=mode, compression=compression)  # type: ignore[arg-type]
        self._setup(LinearSpec(in_features, out_features, bias, rf), device, dtype)

    @classmethod
    def from_spec(cls, spec: LinearSpec, device: Any = None, dtype: torch.dtype | None = None) -> ResFieldLinear:
        """Build from a :class:`~resfields.spec.LinearSpec` (``resfield=None`` gives a static layer)."""
        layer = cls.__new__(cls)
        layer._setup(spec, device, dtype)
        return layer

    def _setup(self, spec: LinearSpec, device: Any, dtype: torch.dtype | None) -> None:
        nn.Module.__init__(self)
        self.spec = spec
        self.in_features, self.out_features = spec.in_features, spec.out_features
        for name, shape in parameter_shapes(spec).items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
        if not spec.bias:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Redraw every parameter from the spec's init rules."""
        for name, rule in init_rules(self.spec).items():
            init_parameter_(getattr(self, name), rule)

    @property
    def resfield(self) -> ResFieldSpec | None:
        return self.spec.resfield

    def extra_repr(self) -> str:
        rf = self.spec.resfield
        text = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.spec.bias}"
        if rf is not None:
            text += f", rank={rf.rank}, capacity={rf.capacity}, mode={rf.mode}, compression={rf.compression}"
        return text

    # ------------------------------------------------------------------ math

    def residual_basis(self) -> torch.Tensor:
        """``(R, O, I)`` matrices with ``dW(t) = sum_r c_r(t) M_r`` (vm, cp, tucker)."""
        rf = self.spec.resfield
        if rf.compression == "vm":
            return self.matrices
        if rf.compression == "cp":
            return self.out_factors[:, :, None] * self.in_factors[:, None, :]
        return torch.einsum("abd,bo,di->aoi", self.core, self.out_factors, self.in_factors)

    def coefficients_at(self, index: torch.Tensor, blend: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of the time table at coefficient indices ``index`` ``(K,)``: ``(K, R)`` coefficients, or
        ``(K, O, I)`` residuals for compression "none"; with ``blend`` ``(K,)``, at ``index + blend``
        (a linear blend with the upper knot, which ``dW`` is linear in)."""
        rf = self.spec.resfield
        table = self.residuals if rf.compression == "none" else self.coefficients
        picked = table.index_select(0, index)
        if blend is None:
            return picked
        upper = table.index_select(0, upper_knot(index, rf.capacity))
        return torch.lerp(picked, upper, blend.to(picked.dtype).reshape((-1,) + (1,) * (picked.ndim - 1)))

    def residuals_at(self, index: torch.Tensor, blend: torch.Tensor | None = None) -> torch.Tensor:
        """``dW`` at coefficient indices ``index`` ``(K,)`` (and ``blend``, see :meth:`coefficients_at`)
        -> ``(K, O, I)``."""
        picked = self.coefficients_at(index, blend)
        if self.spec.resfield.compression == "none":
            return picked
        basis = self.residual_basis()
        return (picked @ basis.reshape(basis.shape[0], -1)).reshape(-1, self.out_features, self.in_features)

    def plan(
        self,
        x: torch.Tensor,
        frame_ids: torch.Tensor | int | None = None,
        times: torch.Tensor | float | None = None,
        *,
        validate: bool = True,
    ) -> FramePlan | None:
        """Check the keys of batch ``x`` ``(..., I)`` once and prepare them for every layer of the same
        capacity and mode: ``plan = first.plan(x, frame_ids=ids)``, then ``layer(h, plan=plan)`` for
        each ResField layer of the model (the frames present and any sort order are computed once).
        ``validate=False`` skips the checks that read values back to the host (see :func:`plan_frames`)."""
        return plan_frames(self.spec.resfield, tuple(x.shape[:-1]), frame_ids, times, x.device, validate=validate)

    def forward(
        self,
        x: torch.Tensor,
        frame_ids: torch.Tensor | int | None = None,
        times: torch.Tensor | float | None = None,
        *,
        plan: FramePlan | None = None,
        validate: bool = True,
        strategy: str = "auto",
    ) -> torch.Tensor:
        """``(..., I) -> (..., O)``; see the class docstring for ``frame_ids``/``times``.

        ``plan`` (from :meth:`plan`) replaces ``frame_ids``/``times`` when several layers share one
        batch. ``validate=False`` skips the value checks of the keys (no host read-back; out-of-range
        ids are then the caller's). ``strategy`` forces one of "single", "rows", "grouped", "lowrank"
        (default "auto", chosen from shapes; all are exact). ``x`` must have the parameters' dtype
        (as for ``nn.Linear``) unless autocast is on.
        """
        check_input_features(tuple(x.shape), self.in_features)
        check_dtype(x, self.weight)
        if strategy not in STRATEGIES:
            raise SpecError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
        lead = tuple(x.shape[:-1])
        if plan is None:
            plan = plan_frames(self.spec.resfield, lead, frame_ids, times, x.device, validate=validate)
        elif frame_ids is not None or times is not None:
            raise SpecError("pass either plan= or frame_ids=/times=, not both")
        elif self.spec.resfield is None:
            raise SpecError("this layer has no ResField residual; it takes no plan")
        else:
            plan.check(self.spec.resfield, lead)
        if plan is None:
            return nn.functional.linear(x, self.weight, self.bias)
        y = run(strategy, self, x.reshape(plan.rows, plan.per_row, self.in_features), plan)
        return y.reshape(*lead, self.out_features)


def check_dtype(x: torch.Tensor, parameter: torch.Tensor) -> None:
    """DTypeError unless ``x`` has ``parameter``'s dtype; under autocast the compute dtype is
    autocast's, so any floating input is fine there (as for ``nn.Linear``)."""
    if x.dtype != parameter.dtype and not (x.is_floating_point() and torch.is_autocast_enabled(x.device.type)):
        check_input_dtype(str(x.dtype).removeprefix("torch."), str(parameter.dtype).removeprefix("torch."))
