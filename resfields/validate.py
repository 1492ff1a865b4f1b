"""Input checks shared by the reference and every backend, so each bad input gets the same
exception and message everywhere. Backends pass plain Python facts (shapes, min/max, flags);
nothing here imports an array library."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from resfields.errors import CheckpointError, FrameError, ShapeError
from resfields.spec import MLPSpec, ResFieldSpec

__all__ = [
    "broadcast_time_shape",
    "check_frame_range",
    "check_input_features",
    "check_parameters_match",
    "check_time_arguments",
    "check_times",
    "row_split",
]


def check_input_features(x_shape: tuple[int, ...], in_features: int) -> None:
    """``x`` must be ``(..., in_features)``."""
    if len(x_shape) < 1 or x_shape[-1] != in_features:
        raise ShapeError(f"x has shape {tuple(x_shape)}; expected (..., {in_features}) (in_features={in_features})")


def check_time_arguments(rf: ResFieldSpec | None, frame_ids: Any, times: Any) -> str | None:
    """Return "frame_ids", "times" or None (static layer): the argument this layer reads.

    lookup layers need ``frame_ids`` and interpolation layers need ``times``; giving the other one
    is an error rather than a silent ignore.
    """
    if rf is None:
        if frame_ids is not None or times is not None:
            raise FrameError("this layer/field has no ResField layers; it takes no frame_ids or times")
        return None
    wanted, other = ("frame_ids", "times") if rf.mode == "lookup" else ("times", "frame_ids")
    given = {"frame_ids": frame_ids, "times": times}
    if given[other] is not None:
        raise FrameError(f"a ResField layer in mode={rf.mode!r} takes {wanted}, not {other}")
    if given[wanted] is None:
        raise FrameError(f"a ResField layer in mode={rf.mode!r} needs {wanted}=...; got none")
    return wanted


def broadcast_time_shape(ids_shape: tuple[int, ...], lead_shape: tuple[int, ...], name: str) -> None:
    """``frame_ids``/``times`` must broadcast against ``x.shape[:-1]`` without enlarging it."""
    ids_shape, lead_shape = tuple(ids_shape), tuple(lead_shape)
    ok = len(ids_shape) <= len(lead_shape) and all(
        a == 1 or a == b for a, b in zip(reversed(ids_shape), reversed(lead_shape), strict=False)
    )
    if not ok:
        raise ShapeError(f"{name} of shape {ids_shape} does not broadcast against x.shape[:-1] = {lead_shape}")


def row_split(key_shape: tuple[int, ...], lead: tuple[int, ...]) -> int:
    """Where ``lead`` splits into rows and samples-per-row: the key (broadcast against ``lead``) is
    constant over ``lead[split:]``. ``(B, 1)`` against ``(B, S)`` gives 1; a scalar key gives 0."""
    padded = (1,) * (len(lead) - len(key_shape)) + tuple(key_shape)
    split = len(padded)
    while split > 0 and padded[split - 1] == 1:
        split -= 1
    return split


def check_frame_range(is_integer: bool, low: int | None, high: int | None, capacity: int) -> None:
    """Frame ids must be integers in ``[0, capacity)``; ``low``/``high`` are their min and max."""
    if not is_integer:
        raise FrameError("frame_ids must be an integer array (use times=... for continuous time)")
    if low is not None and high is not None and (low < 0 or high >= capacity):
        raise FrameError(f"frame_ids must lie in [0, {capacity}) (capacity={capacity}); got values in [{low}, {high}]")


def check_times(is_floating: bool, has_nan: bool) -> None:
    """Times must be a floating array without NaN (values outside [-1, 1] are clamped)."""
    if not is_floating:
        raise FrameError("times must be a floating-point array in [-1, 1] (use frame_ids=... for integer frames)")
    if has_nan:
        raise FrameError("times contain NaN")


def check_parameters_match(own: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]]) -> None:
    """Strict loading into a model: ``given`` (name -> shape) must have exactly the model's names
    ``own`` with the same shapes; CheckpointError names the first kind of mismatch found."""
    missing, unexpected = sorted(set(own) - set(given)), sorted(set(given) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"parameter names do not match the model: missing {missing}, unexpected {unexpected}")
    for name, shape in own.items():
        if tuple(given[name]) != tuple(shape):
            raise CheckpointError(f"parameter {name!r} has shape {tuple(given[name])}, model expects {tuple(shape)}")


def check_encoding_window(spec: Any, window_shape: tuple[int, ...] | None) -> None:
    """``encoding_window`` needs a PE-MLP with ``n_frequencies`` bands and has shape ``(n_frequencies,)``."""
    if window_shape is None:
        return
    bands = spec.n_frequencies if isinstance(spec, MLPSpec) else 0
    if bands == 0:
        raise ShapeError(
            "encoding_window applies to an MLPSpec field with n_frequencies > 0; this field has no encoding"
        )
    if tuple(window_shape) != (bands,):
        raise ShapeError(
            f"encoding_window must have shape ({bands},) (one weight per frequency band), got {tuple(window_shape)}"
        )
