"""How a ResField layer computes ``y = x (W + dW(t))^T + b`` for one batch: four exact strategies,
chosen per call from shapes and the device alone (never from tensor values, so the choice costs no
host read-back and a compiled graph never depends on it).

``x`` is viewed as ``(rows, S, I)`` with one key per row (:class:`~resfields.backends.torch.plan.FramePlan`).
Costs are per forward, in multiply-adds, with ``N = rows * S`` samples, ``R`` the rank and ``P`` the
number of distinct frames present (``nn.Linear`` costs ``N O I``):

========  ==========================================================  ==============================
strategy  what it does                                                 extra cost / where it wins
========  ==========================================================  ==============================
single    one key for the whole batch: one ``W(t)``, one GEMM          none
rows      ``W + dW`` per row, one batched GEMM (the authors' layer)    ``rows R O I`` to build the
                                                                       weights and ``rows O I``
                                                                       memory: many samples per row
grouped   rows grouped by frame (custom operator): gather, one GEMM   ``P R O I`` for the weights, a
          per frame present, scatter; interpolation stacks the        gather and a scatter of the
          frame's weight and the difference to the next knot          batch; frames present read back
          (``2 O`` outputs) only for groups with a row off the knot   to the host: the CPU default
lowrank   ``x W^T + sum_r c_r(t) (x M_r^T)`` as one dense GEMM         ``N R O I`` for vm (cheap for
          (vm; cp and tucker contract through their factors)          cp/tucker); no gather, no
                                                                       read-back: GPUs
========  ==========================================================  ==============================

:func:`choose` encodes the rule: one row -> single; at least :data:`ROWS_MIN_SAMPLES` samples per row
-> rows (the per-row weights then cost less than the batch itself); on the CPU -> grouped; on a GPU
-> rows while the per-row weights stay within :data:`ROWS_MAX_WEIGHT_RATIO` of the batch's
activations, else lowrank (rows for compression "none", which has no low-rank form). On a GPU every
strategy but grouped launches a fixed number of kernels, whatever the number of frames present.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from resfields.errors import SpecError

from .grouped import grouped_linear
from .plan import FramePlan, upper_knot

if TYPE_CHECKING:
    from .layer import ResFieldLinear

__all__ = ["ROWS_MAX_WEIGHT_RATIO", "ROWS_MIN_SAMPLES", "STRATEGIES", "choose", "forced", "run"]

STRATEGIES = ("auto", "single", "rows", "grouped", "lowrank")

#: samples per row from which per-row weights (``rows``) beat grouping on any device
ROWS_MIN_SAMPLES = 256
#: on a GPU, ``rows`` while its ``(rows, O, I)`` weights are at most this many times the batch's
#: ``(N, I + O)`` activations; past that, ``lowrank`` (which needs no weight per row)
ROWS_MAX_WEIGHT_RATIO = 2.0


_forced: str | None = None


@contextmanager
def forced(strategy: str) -> Iterator[None]:
    """Within the block, every layer called with ``strategy="auto"`` uses ``strategy`` instead (for
    benchmarks and the conformance grid; e.g. ``forced("lowrank")`` runs the GPU strategy on a CPU)."""
    global _forced
    if strategy not in STRATEGIES:
        raise SpecError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    previous, _forced = _forced, (None if strategy == "auto" else strategy)
    try:
        yield
    finally:
        _forced = previous


def choose(layer: ResFieldLinear, plan: FramePlan, device_type: str) -> str:
    """The strategy for ``layer`` on a batch planned by ``plan`` on ``device_type`` ("cpu", "cuda")."""
    if plan.rows == 1:
        return "single"
    if plan.per_row >= ROWS_MIN_SAMPLES:
        return "rows"
    if device_type == "cpu":
        return "grouped"
    weights = plan.rows * layer.out_features * layer.in_features
    activations = plan.rows * plan.per_row * (layer.in_features + layer.out_features)
    if weights <= ROWS_MAX_WEIGHT_RATIO * activations or layer.spec.resfield.compression == "none":
        return "rows"
    return "lowrank"


def run(strategy: str, layer: ResFieldLinear, x: torch.Tensor, plan: FramePlan) -> torch.Tensor:
    """``x`` ``(rows, S, I)`` -> ``(rows, S, O)`` with ``strategy`` (one of :data:`STRATEGIES`)."""
    if strategy == "auto":
        strategy = _forced or choose(layer, plan, x.device.type)
    if strategy == "single":
        if plan.rows != 1:
            raise SpecError(f"strategy 'single' needs one key for the whole batch; this batch has {plan.rows} rows")
        return _single(layer, x, plan)
    if strategy == "rows":
        return _rows(layer, x, plan)
    if strategy == "grouped":
        return _grouped(layer, x, plan)
    if strategy == "lowrank":
        return _lowrank(layer, x, plan)
    raise SpecError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


# ----------------------------------------------------------------------------- the strategies


def _single(layer: ResFieldLinear, x: torch.Tensor, plan: FramePlan) -> torch.Tensor:
    weight = layer.weight + layer.residuals_at(plan.index, plan.blend)[0]
    return nn.functional.linear(x, weight, layer.bias)


def _rows(layer: ResFieldLinear, x: torch.Tensor, plan: FramePlan) -> torch.Tensor:
    weights = layer.weight + layer.residuals_at(plan.index, plan.blend)  # (rows, O, I)
    if layer.bias is None:
        return torch.bmm(x, weights.transpose(1, 2))
    return torch.baddbmm(layer.bias.to(x.dtype), x, weights.transpose(1, 2))


def _grouped(layer: ResFieldLinear, x: torch.Tensor, plan: FramePlan) -> torch.Tensor:
    groups = plan.groups()
    residuals = layer.residuals_at(groups.frames)  # (P, O, I): the frames present only
    bank = layer.weight + residuals
    blend = plan.blend
    if blend is not None:  # [W_lo; W_hi - W_lo] per frame: one (2 O, I) GEMM for rows off the knot
        bank = torch.cat([bank, layer.residuals_at(upper_knot(groups.frames, plan.capacity)) - residuals], dim=1)
    # a custom operator is outside autocast: it gets the compute dtype explicitly
    dtype = compute_dtype(x)
    bias = None if layer.bias is None else layer.bias.to(dtype)  # added inside the GEMMs (addmm)
    blend = None if blend is None else blend.to(dtype)
    return grouped_linear(x.to(dtype), bank.to(dtype), groups.local, blend, groups.order, groups.counts, bias)


def _lowrank(layer: ResFieldLinear, x: torch.Tensor, plan: FramePlan) -> torch.Tensor:
    rf = layer.spec.resfield
    if rf.compression == "none":
        raise SpecError("strategy 'lowrank' needs a low-rank residual (vm, cp or tucker), not compression 'none'")
    c = layer.coefficients_at(plan.index, plan.blend)  # (rows, R)
    y = nn.functional.linear(x, layer.weight, layer.bias)
    if rf.compression == "vm":  # sum_r c_r (x M_r^T): one (N, I) x (I, R O) GEMM
        rank = layer.matrices.shape[0]
        z = nn.functional.linear(x, layer.matrices.reshape(rank * layer.out_features, layer.in_features))
        return y + torch.einsum("rsko,rk->rso", z.unflatten(-1, (rank, layer.out_features)), c)
    if rf.compression == "cp":  # M_r = u_r v_r^T: (x v_r) c_r u_r
        return y + ((x @ layer.in_factors.t()) * c[:, None, :]) @ layer.out_factors
    # tucker: dW(t) = U (sum_a c_a G_a) V^T, contracted through the factors
    core = torch.einsum("ra,abd->rbd", c, layer.core)  # (rows, B, D)
    return y + (x @ layer.in_factors.t()) @ core.transpose(1, 2) @ layer.out_factors


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls on ``x`` run in: autocast's where it is on and would cast ``x`` (it never
    casts float64), else ``x``'s, exactly as for the strategies that autocast sees."""
    if torch.is_autocast_enabled(x.device.type) and x.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype
