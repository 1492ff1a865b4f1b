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
from resfields.spec import Init, LinearSpec
from resfields.validate import check_input_dtype, check_input_features

from ..common import ResFieldLayer
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


class ResFieldLinear(ResFieldLayer, nn.Module):
    """``y = x (W + dW(t))^T + b``, a drop-in for ``torch.nn.Linear`` whose weight depends on time.

    Arguments: ``in_features``, ``out_features``, ``bias`` as ``torch.nn.Linear``, then keywords
    ``rank``, ``capacity``, ``mode`` ("lookup"/"interpolation") and ``compression`` (see
    :class:`~resfields.backends.common.ResFieldLayer`), and ``device``, ``dtype`` of the parameters.

    Call: ``layer(x, frame_ids=None, times=None)`` with ``x`` of shape ``(..., in_features)`` and
    ``frame_ids``/``times`` broadcasting against ``x.shape[:-1]`` (``(B, 1)`` with ``(B, S, F)``
    is one frame per row, ``(N,)`` with ``(N, F)`` one per sample, a scalar one for all).
    Returns ``(..., out_features)``. Parameter names follow :func:`resfields.spec.parameter_shapes`.
    """

    @classmethod
    def from_spec(cls, spec: LinearSpec, device: Any = None, dtype: torch.dtype | None = None) -> ResFieldLinear:
        """Build from a :class:`~resfields.spec.LinearSpec` (``resfield=None`` gives a static layer)."""
        return super().from_spec(spec, device=device, dtype=dtype)

    def _setup(self, spec: LinearSpec, device: Any = None, dtype: torch.dtype | None = None) -> None:
        nn.Module.__init__(self)
        super()._setup(spec, device=device, dtype=dtype)

    # the primitives of the shared layer (resfields.backends.common.ResFieldLayer)
    def _new_parameter(self, name: str, shape: tuple[int, ...], device: Any = None, dtype: Any = None) -> None:
        self.register_parameter(name, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))

    def _draw_parameter(self, name: str, rule: Init) -> None:
        init_parameter_(getattr(self, name), rule)

    def _no_parameter(self, name: str) -> None:
        self.register_parameter(name, None)

    def _einsum(self, equation: str, *operands: torch.Tensor) -> torch.Tensor:
        return torch.einsum(equation, *operands)

    # ------------------------------------------------------------------ the time plan's rows

    def coefficients_at(self, index: torch.Tensor, blend: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of the time table at coefficient indices ``index`` ``(K,)``: ``(K, R)`` coefficients, or
        ``(K, O, I)`` residuals for compression "none"; with ``blend`` ``(K,)``, at ``index + blend``
        (a linear blend with the upper knot, which ``dW`` is linear in)."""
        table = self.time_table()
        picked = table.index_select(0, index)
        if blend is None:
            return picked
        upper = table.index_select(0, upper_knot(index, self.spec.resfield.capacity))
        return torch.lerp(picked, upper, blend.to(picked.dtype).reshape((-1,) + (1,) * (picked.ndim - 1)))

    def residuals_at(self, index: torch.Tensor, blend: torch.Tensor | None = None) -> torch.Tensor:
        """``dW`` at coefficient indices ``index`` ``(K,)`` (and ``blend``, see :meth:`coefficients_at`)
        -> ``(K, O, I)``."""
        return self.residuals_from(self.coefficients_at(index, blend))

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
