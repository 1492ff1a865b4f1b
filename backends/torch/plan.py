"""Frame plans: the keys of one forward (frame ids or times), checked and prepared once for every
ResField layer that shares them.

A batch ``x`` of shape ``(*lead, I)`` is viewed as ``(rows, per_row, I)``, where the key is constant
over the trailing ``per_row`` samples: ``(B, 1)`` ids with ``(B, S, F)`` input are ``B`` rows of ``S``
samples, ``(N,)`` ids with ``(N, F)`` input are ``N`` rows of one. A plan holds, per row, the index of
its coefficient (the lower knot when interpolating) and the weight of the upper knot. Everything a
layer strategy needs beyond that (the frames present, a sort order, group sizes) is derived lazily
and cached, so a plan shared by every layer of a model groups its rows once per forward.

Building a plan reads no tensor value back to the host unless ``validate=True`` (the default), which
checks frame ids against the capacity and times for NaN. Under ``torch.compile`` the value checks are
skipped, as with ``validate=False``: shape checks still run when the graph is traced.
"""

from __future__ import annotations

import math

import torch

from resfields.errors import SpecError
from resfields.spec import ResFieldSpec, knot_tolerance
from resfields.validate import broadcast_time_shape, check_frame_range, check_time_arguments, check_times, row_split

__all__ = ["FramePlan", "Groups", "plan_frames", "upper_knot"]


def upper_knot(index: torch.Tensor, capacity: int) -> torch.Tensor:
    """The knot above each coefficient index (the last knot is its own upper knot)."""
    return (index + 1).clamp(max=capacity - 1)


class Groups:
    """Rows grouped by coefficient: ``frames`` ``(F,)`` the coefficient of each group, ``local``
    ``(rows,)`` each row's group, ``order`` ``(rows,)`` the rows sorted by group (empty when the
    rows already are) and ``counts`` ``(F,)`` the rows of each group."""

    __slots__ = ("counts", "frames", "local", "order")

    def __init__(self, frames: torch.Tensor, local: torch.Tensor, order: torch.Tensor, counts: torch.Tensor) -> None:
        self.frames, self.local, self.order, self.counts = frames, local, order, counts


class FramePlan:
    """How a batch of ``rows * per_row`` samples maps onto the coefficients of a ResField layer.

    Attributes:
        lead: ``x.shape[:-1]`` of the batch the plan was made for.
        rows, per_row: the batch viewed as ``(rows, per_row)``.
        capacity, mode: of the ResField layers that may use the plan.
        index: ``(rows,)`` long, each row's coefficient (the lower knot when interpolating).
        blend: ``(rows,)`` float, the weight of the upper knot ``index + 1`` (interpolation), or None.
    """

    def __init__(
        self,
        lead: tuple[int, ...],
        rows: int,
        per_row: int,
        capacity: int,
        mode: str,
        index: torch.Tensor,
        blend: torch.Tensor | None,
    ) -> None:
        self.lead, self.rows, self.per_row = lead, rows, per_row
        self.capacity, self.mode = capacity, mode
        self.index, self.blend = index, blend
        self._order: torch.Tensor | None = None
        self._groups: Groups | None = None

    def check(self, rf: ResFieldSpec, lead: tuple[int, ...]) -> None:
        """A layer may use this plan only for its own batch shape, capacity and mode."""
        if (rf.capacity, rf.mode) != (self.capacity, self.mode):
            raise SpecError(
                f"this plan was made for capacity={self.capacity}, mode={self.mode!r}; the layer has "
                f"capacity={rf.capacity}, mode={rf.mode!r}"
            )
        views = {self.lead, (self.rows, self.per_row), (self.rows * self.per_row,) if self.per_row == 1 else self.lead}
        if tuple(lead) not in views:
            raise SpecError(f"this plan was made for a batch of shape {self.lead}, the layer got {tuple(lead)}")

    def order(self) -> torch.Tensor:
        """``(rows,)`` the rows sorted by coefficient (stable); computed once per plan."""
        if self._order is None:
            self._order = torch.argsort(self.index, stable=True)
        return self._order

    def groups(self) -> Groups:
        """The rows grouped by coefficient, computed once per plan.

        Eagerly only the frames present form groups (so a layer builds only their weights) and rows
        already in order are left in place; under ``torch.compile``, where a data-dependent size would
        break the graph, every coefficient is a group (empty ones included).
        """
        if self._groups is None:
            empty = self.index.new_empty(0)
            if torch.compiler.is_compiling():
                frames = torch.arange(self.capacity, device=self.index.device)
                counts = torch.bincount(self.index, minlength=self.capacity)
                self._groups = Groups(frames, self.index, self.order(), counts)
            else:
                frames, local, counts = torch.unique(self.index, sorted=True, return_inverse=True, return_counts=True)
                in_place = self.rows == 1 or bool((self.index[1:] >= self.index[:-1]).all())
                self._groups = Groups(frames, local, empty if in_place else self.order(), counts)
        return self._groups


def plan_frames(
    rf: ResFieldSpec | None,
    lead: tuple[int, ...],
    frame_ids: torch.Tensor | int | None,
    times: torch.Tensor | float | None,
    device: torch.device,
    *,
    validate: bool = True,
) -> FramePlan | None:
    """Check ``frame_ids``/``times`` against ``x.shape[:-1] == lead`` and build the plan.

    A static layer or field (``rf is None``) has no plan: None, after checking no time was given.
    ``validate=False`` skips the checks that read values (frame ids in ``[0, capacity)``, no NaN
    times); out-of-range ids then are the caller's responsibility (indexing fails on the device).
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
    check_values = validate and not torch.compiler.is_compiling()

    if which == "frame_ids":
        integer = not row_key.is_floating_point() and not row_key.is_complex() and row_key.dtype != torch.bool
        low = high = None
        if integer and check_values and row_key.numel():
            low, high = (int(v) for v in torch.aminmax(row_key))
        check_frame_range(integer, low, high, rf.capacity)
        return FramePlan(lead, rows, per_row, rf.capacity, rf.mode, row_key.long(), None)

    floating = row_key.is_floating_point()
    check_times(floating, floating and check_values and bool(torch.isnan(row_key).any()))
    # the time is clamped before scaling: inf * (C - 1) is NaN when C == 1
    position = (row_key.double().clamp(-1.0, 1.0) + 1.0) * (0.5 * (rf.capacity - 1))
    # a time computed in float32 from frame_to_time lands within its own rounding of the knot: treat it
    # as on the knot, so frame-time input needs one weight per row, not two. The tolerance is the key's
    # rounding (float64 keys stay exact) and at most 1e-5 of a knot spacing; the snap moves the value
    # only (straight-through), so d(output)/d(time) is kept.
    tolerance = knot_tolerance(torch.finfo(row_key.dtype).eps, rf.capacity)
    snap = (position.round() - position).detach()
    position = position + torch.where(snap.abs() <= tolerance, snap, torch.zeros_like(snap))
    lower = position.floor()
    blend = (position - lower).to(key.dtype)
    return FramePlan(lead, rows, per_row, rf.capacity, rf.mode, lower.long(), blend)
