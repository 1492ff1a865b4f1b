"""The ResField linear layer for PyTorch: a drop-in for ``torch.nn.Linear``.

Hot path: a :class:`~resfields.backends.torch.frames.FramePlan` lists the frames present and how
many consecutive samples each owns. The layer builds ``W + dW`` only for those frames and runs one
matmul per frame (:class:`GroupedLinear`). In interpolation mode the weight is linear in the
coefficients, so each group also gets the difference to its upper knot, stacked under the lower
knot's weight: still one matmul per group, and none at all for the difference when every time
sits on a knot.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resfields.spec import Init, LinearSpec, ResFieldSpec, init_rules, parameter_shapes
from resfields.validate import check_input_features

from .frames import FramePlan, plan_frames

__all__ = ["GroupedLinear", "ResFieldLinear", "init_parameter_"]


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


class GroupedLinear(torch.autograd.Function):
    """``out[g] = x[g] @ weights[f]^T (+ bias)`` for consecutive groups ``g`` of ``counts``.

    x: ``(N, I)``, weights: ``(F, O, I)``, bias: ``(O,)`` or None -> ``(N, O)``. One GEMM per group
    forward and two backward, written straight into preallocated slices (no concat, no scatter).

    With ``blend`` ``(N, 1)`` the weights are stacked pairs ``(F, 2O, I)`` = [lower knot; upper minus
    lower] and ``out[g] = x W_lo^T + b + blend * (x D^T)``: still one GEMM per group, and the
    ``(n, 2O)`` intermediate lives only per group, so memory stays that of one output.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weights: torch.Tensor,
        bias: torch.Tensor | None,
        counts: list[int],
        blend: torch.Tensor | None = None,
    ):
        out_features = weights.shape[1] // (1 if blend is None else 2)
        out = x.new_empty(x.shape[0], out_features)
        start = 0
        for f, n in enumerate(counts):
            stop = start + n
            rows = slice(start, stop)
            if blend is None:
                if bias is None:
                    torch.mm(x[rows], weights[f].t(), out=out[rows])
                else:
                    torch.addmm(bias, x[rows], weights[f].t(), out=out[rows])
            else:
                both = x[rows] @ weights[f].t()
                low = both[:, :out_features] if bias is None else both[:, :out_features] + bias
                torch.addcmul(low, blend[rows], both[:, out_features:], out=out[rows])
            start = stop
        ctx.save_for_backward(x, weights, blend)
        ctx.counts, ctx.has_bias = counts, bias is not None
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        x, weights, blend = ctx.saved_tensors
        grad = grad.contiguous()
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.empty_like(weights) if need_w else None
        start = 0
        for f, n in enumerate(ctx.counts):
            stop = start + n
            g = grad[start:stop]
            if blend is not None:  # d out / d [x W_lo^T, x D^T] = [1, blend]
                g = torch.cat([g, blend[start:stop] * g], dim=1)
            if need_x:
                torch.mm(g, weights[f], out=grad_x[start:stop])
            if need_w:
                torch.mm(g.t(), x[start:stop], out=grad_w[f])
            start = stop
        grad_b = grad.sum(0) if (ctx.has_bias and need_b) else None
        return grad_x, grad_w, grad_b, None, None


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

    def frame_residuals(self, frames: torch.Tensor) -> torch.Tensor:
        """``dW`` at integer coefficient indices ``frames`` ``(F,)`` -> ``(F, O, I)``."""
        rf = self.spec.resfield
        if rf.compression == "none":
            return self.residuals.index_select(0, frames)
        coefficients = self.coefficients.index_select(0, frames)  # (F, R)
        basis = self.residual_basis()
        return (coefficients @ basis.reshape(basis.shape[0], -1)).reshape(-1, self.out_features, self.in_features)

    def forward_planned(self, x: torch.Tensor, plan: FramePlan | None) -> torch.Tensor:
        """The layer on a batch already sorted by ``plan``: ``(N, I) -> (N, O)``."""
        if self.spec.resfield is None:
            return nn.functional.linear(x, self.weight, self.bias)
        dtype = _compute_dtype(x)
        lower_residuals = self.frame_residuals(plan.frames)  # (F, O, I)
        lower = self.weight + lower_residuals
        x, bias = x.to(dtype), None if self.bias is None else self.bias.to(dtype)
        if plan.blend is None:
            return _grouped(x, lower.to(dtype), bias, plan.counts)
        upper_minus_lower = self.frame_residuals(plan.next_frames) - lower_residuals
        stacked = torch.cat([lower, upper_minus_lower], dim=1).to(dtype)  # (F, 2O, I): one GEMM per group
        return _grouped(x, stacked, bias, plan.counts, plan.blend.to(dtype))

    def forward(
        self,
        x: torch.Tensor,
        frame_ids: torch.Tensor | int | None = None,
        times: torch.Tensor | float | None = None,
        *,
        validate: bool = True,
    ) -> torch.Tensor:
        """``(..., I) -> (..., O)``; see the class docstring for ``frame_ids``/``times``.
        ``validate`` is accepted for parity with tinygrad; torch always checks the keys."""
        check_input_features(tuple(x.shape), self.in_features)
        lead = tuple(x.shape[:-1])
        plan = plan_frames(self.spec.resfield, lead, frame_ids, times, x.device)
        if plan is None:
            return nn.functional.linear(x, self.weight, self.bias)
        return plan.unsort(self.forward_planned(plan.sort(x), plan), lead)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _grouped(
    x: torch.Tensor,
    weights: torch.Tensor,
    bias: torch.Tensor | None,
    counts: list[int],
    blend: torch.Tensor | None = None,
) -> torch.Tensor:
    # casts were done by the caller; autocast must not re-cast inside the out= matmuls
    with torch.autocast(x.device.type, enabled=False):
        if blend is None and len(counts) > 1 and min(counts) == max(counts):
            # equal groups (the frame-major batches the tasks emit): one batched GEMM, not one
            # launch per frame, which on a GPU costs more than the arithmetic
            out = torch.bmm(x.reshape(len(counts), counts[0], -1), weights.transpose(1, 2))
            return (out if bias is None else out + bias).reshape(x.shape[0], -1)
        return GroupedLinear.apply(x.contiguous(), weights.contiguous(), bias, counts, blend)
