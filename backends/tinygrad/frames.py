"""Time keys for the tinygrad backend: validate ``frame_ids`` / ``times`` and turn them into a
time matrix.

A batch ``x`` of shape ``(*lead, I)`` is viewed as ``(rows, per_row, I)``: ``per_row`` is the product
of the trailing axes of ``lead`` over which the key is constant (size 1 or absent), ``rows`` the rest.
The key becomes a time matrix ``A`` of shape ``(rows, C)`` with ``c(t_row) = A[row] @ coefficients``:
one-hot in lookup mode, two linear-blend weights per row in interpolation mode. Because ``c(t)`` is
linear in the coefficients, every compression and both modes share one code path, and ``A`` has
fixed shapes (no data-dependent Python control flow), which keeps the layers TinyJit-friendly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from tinygrad import Tensor, dtypes

from resfields.spec import ResFieldSpec, knot_tolerance
from resfields.validate import broadcast_time_shape, check_frame_range, check_time_arguments, check_times, row_split

__all__ = ["TimePlan", "check_key_values", "device_tensor", "plan_times", "time_matrix"]

Key = Tensor | np.ndarray | int | float | Any


@dataclass
class TimePlan:
    """How a batch of ``N = rows * per_row`` samples maps onto time coefficients.

    Attributes:
        rows, per_row: the batch viewed as ``(rows, per_row)``; one frame id/time per row.
        matrix: ``(rows, C)`` float32 time matrix, ``c(t_row) = matrix[row] @ coefficients``.
    """

    rows: int
    per_row: int
    matrix: Tensor


def time_matrix(rf: ResFieldSpec, key: Tensor) -> Tensor:
    """``(N,)`` frame ids (lookup) or times (interpolation) -> ``(N, C)`` float32 time matrix.

    Interpolation uses ``p = (clip(t, -1, 1) + 1) / 2 (C - 1)`` and puts ``1 - w`` on ``floor(p)``
    and ``w = p - floor(p)`` on the next knot (clamped), as the reference does.
    """
    capacity = rf.capacity
    # a device-less constant in tinygrad 0.14 (no buffer): it takes the key's device
    knots = Tensor.arange(capacity).reshape(1, capacity)
    if rf.mode == "lookup":
        return (key.reshape(-1, 1).cast(dtypes.int32) == knots).cast(dtypes.float32)
    # the time is clamped, not the position: inf * (C - 1) is NaN when C == 1
    position = (key.cast(dtypes.float32).clip(-1.0, 1.0) + 1.0) * (0.5 * (capacity - 1))
    knot = position.round()  # within the key's rounding of a knot is on the knot (the spec's time convention)
    tolerance = knot_tolerance(float(np.finfo(np.float32).eps), capacity)
    position = ((knot - position).abs() <= tolerance).where(knot, position)
    low = position.floor()
    weight = (position - low).reshape(-1, 1)
    high = (low + 1.0).clip(0.0, float(capacity - 1))
    knots = knots.cast(dtypes.float32)
    below = (low.reshape(-1, 1) == knots).cast(dtypes.float32)
    above = (high.reshape(-1, 1) == knots).cast(dtypes.float32)
    return (1.0 - weight) * below + weight * above


def check_key_values(rf: ResFieldSpec, which: str, key: Tensor | np.ndarray, validate: bool = True) -> None:
    """FrameError unless ``key`` (any shape) is a valid ``which`` ("frame_ids" or "times") of ``rf``:
    the one check of keys for the layer, the field, training and prediction alike. Dtype checks
    always (free); value checks (range, NaN; infinite times clamp) only when ``validate``, since for a
    Tensor key they read data back from the device, which a jitted step must not do."""
    if isinstance(key, Tensor):
        integer, floating = dtypes.is_int(key.dtype), dtypes.is_float(key.dtype)
    else:
        integer = bool(np.issubdtype(key.dtype, np.integer))
        floating = bool(np.issubdtype(key.dtype, np.floating))
    empty = math.prod(key.shape) == 0
    if which == "frame_ids":
        low = high = None
        if integer and validate and not empty:
            if isinstance(key, Tensor):
                low, high = (int(v) for v in Tensor.stack(key.min(), key.max()).tolist())
            else:
                low, high = int(key.min()), int(key.max())
        check_frame_range(integer, low, high, rf.capacity)
    else:
        has_nan = False
        if floating and validate and not empty:
            has_nan = bool(key.isnan().any().item()) if isinstance(key, Tensor) else bool(np.isnan(key).any())
        check_times(floating, has_nan)


def device_tensor(array: np.ndarray, device: str | None = None) -> Tensor:
    """A NumPy array (any shape, 0-d included) as a Tensor on ``device``, same dtype and shape."""
    array = np.ascontiguousarray(array)
    return Tensor(array.reshape(-1), device=device).reshape(array.shape)


def plan_times(
    rf: ResFieldSpec | None,
    lead: tuple[int, ...],
    frame_ids: Key | None,
    times: Key | None,
    validate: bool = True,
    device: str | None = None,
) -> TimePlan | None:
    """Validate the key against ``x.shape[:-1] == lead`` and build its :class:`TimePlan`.

    A static layer or field (``rf is None``) has no plan: None, after checking no time was given.

    ``frame_ids``/``times`` may be a tinygrad Tensor, a NumPy array or a Python scalar. Non-Tensor
    keys are copied to ``device`` (the input's; tinygrad's default if None); inside ``TinyJit`` pass
    Tensors (a copied constant would be frozen into the captured graph) and ``validate=False``.
    """
    which = check_time_arguments(rf, frame_ids, times)
    if which is None:
        return None
    raw = frame_ids if which == "frame_ids" else times
    key = raw if isinstance(raw, Tensor) else np.asarray(raw)
    broadcast_time_shape(tuple(key.shape), lead, which)
    check_key_values(rf, which, key, validate)
    if not isinstance(key, Tensor):
        # 32-bit on device: frame ids are small, and times are compared with float32 activations anyway
        key = device_tensor(key.astype(np.int32 if which == "frame_ids" else np.float32), device)
    split = row_split(tuple(key.shape), lead)
    row_shape, rows, per_row = lead[:split], math.prod(lead[:split]), math.prod(lead[split:])
    padded = (1,) * (len(lead) - key.ndim) + tuple(key.shape)
    row_key = key.reshape(padded).reshape(padded[:split]).expand(row_shape).reshape(rows)
    return TimePlan(rows, per_row, time_matrix(rf, row_key))
