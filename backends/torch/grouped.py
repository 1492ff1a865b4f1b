"""Grouped linear maps as two torch custom operators: rows of a batch grouped by frame, one GEMM per group.

``grouped_linear(x, bank, index, blend, order, counts, bias)`` computes, for every row ``r`` of ``x``::

    y[r] = x[r] @ bank[index[r]].T + bias                                   (blend is None)
    y[r] = x[r] @ bank[index[r], :O].T + bias + blend[r] * x[r] @ bank[index[r], O:].T   (bank stacks [A; D])

with ``x`` ``(rows, S, I)``, ``bank`` ``(C, O, I)`` or ``(C, 2O, I)``, ``index`` ``(rows,)`` long,
``blend`` ``(rows,)`` and ``bias`` ``(O,)`` or None. ``order`` ``(rows,)`` lists the rows sorted by
``index`` (or is empty when the rows already are) and ``counts`` ``(C,)`` holds the rows of each bank
entry. Each group of rows that shares a bank entry costs one GEMM (the bias inside it): contiguous
groups are read and written in place, scattered ones gathered and scattered back per group, so no
``(rows, O, I)`` weight and no sorted copy of the batch is ever built.

``grouped_outer(g, x, index, blend, order, counts, C)`` is the matching weight gradient,
``(C, O, I)`` or ``(C, 2O, I)``: ``sum_r g[r].T @ x[r]`` per bank entry (and the ``blend``-weighted
sum under it). Each operator's backward is written with the two operators themselves, so
gradients of any order (eikonal losses: ``create_graph=True``) work. A plain backward (no graph of
the gradient being built) runs ``grouped_linear_backward`` instead, which computes the input,
bank and blend gradients in one pass over the groups, gathering each group's rows once.

Why custom operators: the group sizes are data, so a Python loop over groups would make
``torch.compile`` graph-break (or guard on values and recompile every step). As opaque operators
with fixed output shapes (a registered fake), they compile into one graph that never recompiles
when frame ids change. They read group sizes back to the host, which costs nothing on a CPU; on
CUDA the layer picks strategies that need no read-back (see :mod:`resfields.backends.torch.strategy`).
"""

from __future__ import annotations

import torch

__all__ = ["grouped_linear", "grouped_linear_backward", "grouped_outer"]


def _groups(order: torch.Tensor, counts: torch.Tensor):
    """Yield ``(bank entry, rows or slice)`` for each non-empty group (host loop; counts read back once)."""
    start = 0
    for entry, n in enumerate(counts.tolist()):
        if n == 0:
            continue
        stop = start + n
        yield entry, (slice(start, stop) if order.numel() == 0 else order[start:stop])
        start = stop


def _take(t: torch.Tensor, rows) -> torch.Tensor:
    if isinstance(rows, slice):
        return t[rows]
    # gathering rows of a 2-D view: torch's index_select on a 3-D tensor was ~100x slower on the CPU
    return t.reshape(t.shape[0], -1).index_select(0, rows).view((-1, *t.shape[1:]))


def _put(out: torch.Tensor, rows: torch.Tensor, value: torch.Tensor) -> None:
    """``out[rows] = value`` along dim 0, through 2-D views: torch's index_copy_ on a 3-D tensor took
    about twice as long on the CPU (per group of 11 rows of 64 x 128)."""
    out.view(out.shape[0], -1).index_copy_(0, rows, value.reshape(rows.numel(), -1))


@torch.library.custom_op("resfields::grouped_linear", mutates_args=())
def grouped_linear(
    x: torch.Tensor,
    bank: torch.Tensor,
    index: torch.Tensor,
    blend: torch.Tensor | None,
    order: torch.Tensor,
    counts: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    rows, samples, in_features = x.shape
    out_features = bank.shape[1] // (1 if blend is None else 2)
    out = x.new_empty(rows, samples, out_features)
    for entry, group in _groups(order, counts):
        xs = _take(x, group).reshape(-1, in_features)
        weight = bank[entry]
        # contiguous groups are written straight into the output, scattered ones once per group
        target = out[group].view(-1, out_features) if isinstance(group, slice) else None
        w = None if blend is None else _take(blend, group)
        if w is None or not bool(w.any()):  # lookup, or every row of the group on the lower knot
            low = weight[:out_features].t()
            if bias is None:
                y = torch.mm(xs, low, out=target) if target is not None else xs @ low
            else:
                y = torch.addmm(bias, xs, low, out=target) if target is not None else torch.addmm(bias, xs, low)
        else:
            both = xs @ weight.t()
            low = both[:, :out_features] if bias is None else both[:, :out_features] + bias
            w = w.repeat_interleave(samples).unsqueeze(1)
            y = torch.addcmul(low, w, both[:, out_features:], out=target) if target is not None else None
            if y is None:
                y = torch.addcmul(low, w, both[:, out_features:])
        if target is None:
            _put(out, group, y)
    return out


@grouped_linear.register_fake
def _(x, bank, index, blend, order, counts, bias=None):
    return x.new_empty(x.shape[0], x.shape[1], bank.shape[1] // (1 if blend is None else 2))


@torch.library.custom_op("resfields::grouped_outer", mutates_args=())
def grouped_outer(
    g: torch.Tensor,
    x: torch.Tensor,
    index: torch.Tensor,
    blend: torch.Tensor | None,
    order: torch.Tensor,
    counts: torch.Tensor,
    capacity: int,
) -> torch.Tensor:
    out_features, in_features = g.shape[-1], x.shape[-1]
    halves = 1 if blend is None else 2
    out = x.new_zeros(capacity, halves * out_features, in_features)
    for entry, group in _groups(order, counts):
        gs = _take(g, group).reshape(-1, out_features)
        xs = _take(x, group).reshape(-1, in_features)
        torch.mm(gs.t(), xs, out=out[entry, :out_features])
        w = None if blend is None else _take(blend, group)
        if w is not None and bool(w.any()):  # rows all on the lower knot leave the difference's gradient 0
            w = w.repeat_interleave(g.shape[1]).unsqueeze(1)
            torch.mm((w * gs).t(), xs, out=out[entry, out_features:])
    return out


@grouped_outer.register_fake
def _(g, x, index, blend, order, counts, capacity):
    return x.new_empty(capacity, (1 if blend is None else 2) * g.shape[-1], x.shape[-1])


@torch.library.custom_op("resfields::grouped_linear_backward", mutates_args=())
def grouped_linear_backward(
    g: torch.Tensor,
    x: torch.Tensor,
    bank: torch.Tensor,
    index: torch.Tensor,
    blend: torch.Tensor | None,
    order: torch.Tensor,
    counts: torch.Tensor,
    need_x: bool,
    need_bank: bool,
    need_blend: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first-order gradients of :func:`grouped_linear` in one pass over the groups: ``(grad_x,
    grad_bank, grad_blend)``, each empty when not asked for.

    Each group's ``g`` and ``x`` rows are gathered once for all three (the composed backward
    gathers ``g`` twice and ``x`` up to twice), and ``d/d blend`` reuses ``g D``, the product the
    input gradient computes anyway (``g . (x D^T) = (g D) . x``). Not differentiable itself: the
    backward uses it only when no graph of the gradient is being built."""
    rows, samples, in_features = x.shape
    out_features = g.shape[-1]
    grad_x = x.new_empty(rows, samples, in_features) if need_x else x.new_empty(0)
    grad_bank = x.new_zeros(bank.shape) if need_bank else x.new_empty(0)
    grad_blend = x.new_zeros(rows) if need_blend and blend is not None else x.new_empty(0)
    for entry, group in _groups(order, counts):
        gs = _take(g, group).reshape(-1, out_features)
        xs = _take(x, group).reshape(-1, in_features) if need_bank or grad_blend.numel() else None
        w = None if blend is None else _take(blend, group)
        upper = w is not None and bool(w.any())  # rows all on the lower knot need nothing of the difference
        gd = gs @ bank[entry, out_features:] if upper and (need_x or grad_blend.numel()) else None
        if need_x:
            contiguous = isinstance(group, slice)
            target = grad_x[group].view(-1, in_features) if contiguous else None
            low = bank[entry, :out_features]
            if gd is None:
                dx = torch.mm(gs, low, out=target) if contiguous else gs @ low
            else:
                wide = w.repeat_interleave(samples).unsqueeze(1)
                dx = torch.addcmul(gs @ low, wide, gd, out=target) if contiguous else torch.addcmul(gs @ low, wide, gd)
            if not contiguous:
                _put(grad_x, group, dx)
        if need_bank:
            torch.mm(gs.t(), xs, out=grad_bank[entry, :out_features])
            if upper:
                wide = w.repeat_interleave(samples).unsqueeze(1)
                torch.mm((wide * gs).t(), xs, out=grad_bank[entry, out_features:])
        if gd is not None and grad_blend.numel():
            per_row = (gd * xs).sum(dim=1).view(-1, samples).sum(dim=1)
            if isinstance(group, slice):
                grad_blend[group] = per_row
            else:
                grad_blend.index_copy_(0, group, per_row)
    return grad_x, grad_bank, grad_blend


@grouped_linear_backward.register_fake
def _(g, x, bank, index, blend, order, counts, need_x, need_bank, need_blend):
    empty = x.new_empty(0)
    return (
        x.new_empty(x.shape) if need_x else empty,
        x.new_empty(bank.shape) if need_bank else empty,
        x.new_empty(x.shape[0]) if need_blend and blend is not None else empty,
    )


def _transpose_bank(bank: torch.Tensor, halves: int) -> torch.Tensor:
    """``(C, k O, I)`` stacked halves -> ``(C, k I, O)`` with each half transposed."""
    parts = bank.chunk(halves, dim=1)
    return torch.cat([p.transpose(1, 2) for p in parts], dim=1).contiguous()


def _blend_grad(g: torch.Tensor, x: torch.Tensor, bank: torch.Tensor, index, order, counts) -> torch.Tensor:
    """``d/d blend[r] = sum_s g[r, s] . (x[r, s] @ D[index[r]].T)`` with D the upper half of ``bank``."""
    difference = bank[:, bank.shape[1] // 2 :].contiguous()
    return (g * grouped_linear(x, difference, index, None, order, counts)).sum(dim=(1, 2))


def _linear_setup(ctx, inputs, output):
    x, bank, index, blend, order, counts, *rest = inputs
    bias = rest[0] if rest else None
    ctx.save_for_backward(x, bank, index, blend, order, counts)
    ctx.has_bias = bias is not None


def _linear_backward(ctx, grad):
    x, bank, index, blend, order, counts = ctx.saved_tensors
    need_x, need_bank, _, need_blend = ctx.needs_input_grad[:4]
    need_bias = ctx.has_bias and ctx.needs_input_grad[6]
    halves = 1 if blend is None else 2
    grad_x = grad_bank = grad_blend = grad_bias = None
    if need_bias:
        grad_bias = grad.sum(dim=(0, 1))
    if not torch.is_grad_enabled():  # a plain backward (no create_graph): one pass over the groups
        need_blend = need_blend and blend is not None
        gx, gb, gw = grouped_linear_backward(grad, x, bank, index, blend, order, counts, need_x, need_bank, need_blend)
        grad_x, grad_bank = (gx if need_x else None), (gb if need_bank else None)
        return grad_x, grad_bank, None, (gw if need_blend else None), None, None, grad_bias
    if need_x:
        grad_x = grouped_linear(grad, _transpose_bank(bank, halves), index, blend, order, counts)
    if need_bank:
        grad_bank = grouped_outer(grad, x, index, blend, order, counts, bank.shape[0])
    if need_blend and blend is not None:
        grad_blend = _blend_grad(grad, x, bank, index, order, counts)
    return grad_x, grad_bank, None, grad_blend, None, None, grad_bias


grouped_linear.register_autograd(_linear_backward, setup_context=_linear_setup)


def _outer_setup(ctx, inputs, output):
    g, x, index, blend, order, counts, _ = inputs
    ctx.save_for_backward(g, x, index, blend, order, counts)


def _outer_backward(ctx, grad):
    # L = sum_r <grad[index[r]], [g_r^T x_r ; blend_r g_r^T x_r]>
    g, x, index, blend, order, counts = ctx.saved_tensors
    need_g, need_x, _, need_blend = ctx.needs_input_grad[:4]
    halves = 1 if blend is None else 2
    grad_g = grad_x = grad_blend = None
    if need_g:
        grad_g = grouped_linear(x, grad, index, blend, order, counts)
    if need_x:
        grad_x = grouped_linear(g, _transpose_bank(grad, halves), index, blend, order, counts)
    if need_blend and blend is not None:
        grad_blend = _blend_grad(g, x, grad, index, order, counts)
    return grad_g, grad_x, None, grad_blend, None, None, None


grouped_outer.register_autograd(_outer_backward, setup_context=_outer_setup)
