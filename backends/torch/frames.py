"""Frame plans: validate frame ids / times once and arrange samples so that each frame is one
contiguous block.

Samples that share a frame share a weight. A plan sorts the *rows* of a batch (the leading axes
over which ``frame_ids``/``times`` vary) by frame once; a field then runs every layer on the sorted
batch (one matmul per frame present) and unsorts once at the end. Already-sorted input (what the
task samplers produce) skips the permutation entirely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from resfields.spec import ResFieldSpec
from resfields.validate import broadcast_time_shape, check_frame_range, check_time_arguments, check_times, row_split

__all__ = ["FramePlan", "plan_frames"]

_KNOT_SNAP = 1e-5  # in units of coefficient spacing


@dataclass
class FramePlan:
    """How a batch of ``N = rows * per_row`` samples maps onto frames.

    Attributes:
        rows, per_row: the batch viewed as ``(rows, per_row)``; one frame id/time per row.
        order: ``(rows,)`` permutation that sorts rows by frame, or None if already sorted.
        frames: ``(F,)`` long, the coefficient index of each contiguous group (lower knot when
            interpolating).
        next_frames: ``(F,)`` long, the upper knot of each group (interpolation only).
        counts: samples per group, ``sum(counts) == N``.
        blend: ``(N, 1)`` interpolation weight of the upper knot per (sorted) sample, or None when
            every sample sits on a knot.
    """

    rows: int
    per_row: int
    order: torch.Tensor | None
    frames: torch.Tensor
    next_frames: torch.Tensor | None
    counts: list[int]
    blend: torch.Tensor | None

    def sort(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` batch -> ``(N, D)`` with samples of one frame contiguous."""
        x = x.reshape(self.rows, self.per_row, x.shape[-1])
        if self.order is not None:
            x = x.index_select(0, self.order)
        return x.reshape(self.rows * self.per_row, x.shape[-1])

    def unsort(self, y: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        """Inverse of :meth:`sort`: ``(N, D)`` -> ``(*lead, D)``."""
        y = y.reshape(self.rows, self.per_row, y.shape[-1])
        if self.order is not None:
            y = torch.empty_like(y).index_copy(0, self.order, y)
        return y.reshape(*lead, y.shape[-1])


def plan_frames(
    rf: ResFieldSpec | None,
    lead: tuple[int, ...],
    frame_ids: torch.Tensor | int | None,
    times: torch.Tensor | float | None,
    device: torch.device,
) -> FramePlan | None:
    """Validate ``frame_ids``/``times`` against ``x.shape[:-1] == lead`` and build the plan.

    A static layer or field (``rf is None``) has no plan: None, after checking no time was given.
    """
    which = check_time_arguments(rf, frame_ids, times)
    if which is None:
        return None
    key = torch.as_tensor(frame_ids if which == "frame_ids" else times, device=device)
    broadcast_time_shape(tuple(key.shape), lead, which)
    split = row_split(tuple(key.shape), lead)
    row_shape, rows, per_row = lead[:split], math.prod(lead[:split]), math.prod(lead[split:])
    row_key = key.reshape((1,) * (len(lead) - key.ndim) + tuple(key.shape))
    row_key = row_key.reshape(row_key.shape[:split]).expand(row_shape).reshape(-1)

    if which == "frame_ids":
        integer = not row_key.is_floating_point() and not row_key.is_complex() and row_key.dtype != torch.bool
        low = high = None
        if integer and row_key.numel():
            low, high = (int(v) for v in torch.aminmax(row_key))
        check_frame_range(integer, low, high, rf.capacity)
        lower = row_key.long()
        weight = None
    else:
        floating = row_key.is_floating_point()
        check_times(floating, floating and bool(torch.isnan(row_key).any()))
        position = ((row_key.double() + 1.0) * 0.5 * (rf.capacity - 1)).clamp(0.0, rf.capacity - 1)
        # times computed in fp32 from frame_to_time land within ~1e-6 of their knot: treat them as on
        # the knot, so frame-time input takes the single-matmul path (the change is below fp32 noise)
        position = torch.where((position - position.round()).abs() <= _KNOT_SNAP, position.round(), position)
        lower = position.floor()
        weight = position - lower
        lower = lower.long()

    order = None
    if rows > 1 and bool((lower[1:] < lower[:-1]).any()):
        order = torch.argsort(lower, stable=True)
        lower = lower[order]
        weight = weight[order] if weight is not None else None
    frames, group_rows = torch.unique_consecutive(lower, return_counts=True)
    next_frames = None
    blend = None
    if weight is not None:
        next_frames = (frames + 1).clamp(max=rf.capacity - 1)
        if bool((weight > 0).any()):
            blend = weight.repeat_interleave(per_row).unsqueeze(1)
    counts = (group_rows * per_row).tolist()
    return FramePlan(rows, per_row, order, frames, next_frames, counts, blend)
