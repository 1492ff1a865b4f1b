"""Input checks shared by the reference and every backend, so each bad input gets the same
exception and message everywhere. Backends pass plain Python facts (shapes, min/max, flags);
nothing here imports an array library."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from resfields.errors import CheckpointError, DTypeError, FrameError, ShapeError, SpecError, short_repr
from resfields.spec import MLPSpec, ResFieldSpec

__all__ = [
    "broadcast_time_shape",
    "check_batch_layout",
    "check_device",
    "check_frame_range",
    "check_input_dtype",
    "check_input_features",
    "check_parameters_match",
    "check_predict_inputs",
    "check_time_arguments",
    "check_times",
    "row_split",
    "short_names",
]


def short_names(names: Iterable[str], limit: int = 8) -> str:
    """``names`` as a list for a message, cut to the first ``limit`` with a count of the rest: a
    config that names a million layers must not make a megabyte error."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    rest = len(names) - limit
    return f"[{shown}, ... and {rest} more]" if rest > 0 else f"[{shown}]"


def check_input_features(x_shape: tuple[int, ...], in_features: int) -> None:
    """``x`` must be ``(..., in_features)``."""
    if len(x_shape) < 1 or x_shape[-1] != in_features:
        raise ShapeError(f"x has shape {tuple(x_shape)}; expected (..., {in_features}) (in_features={in_features})")


def check_input_dtype(x_dtype: str, parameter_dtype: str) -> None:
    """``x`` must have the parameters' dtype (names such as "float32"), as for ``torch.nn.Linear``;
    a silent cast would hide a float64 pipeline running in float32, or the reverse."""
    if x_dtype != parameter_dtype:
        raise DTypeError(
            f"x has dtype {x_dtype} but the parameters are {parameter_dtype}; "
            f"convert the input (x.to({parameter_dtype})) or the module (.to({x_dtype}))"
        )


def check_predict_inputs(
    x_shape: tuple[int, ...], in_features: int, key_shapes: Mapping[str, tuple[int, ...] | None]
) -> None:
    """Batched prediction takes ``x`` ``(N, in_features)`` and each key (``frame_ids``/``times``;
    its shape, None when absent) of shape ``(N,)``; checked up front so that a compiled backend never
    sees a shape it was not compiled for. ``N = 0`` is allowed (the output is ``(0, O)``)."""
    x_shape = tuple(x_shape)
    if len(x_shape) != 2 or x_shape[1] != in_features:
        raise ShapeError(f"x has shape {x_shape}; predict expects (N, {in_features}) (in_features={in_features})")
    for name, shape in key_shapes.items():
        if shape is None:
            continue
        shape = tuple(shape)
        if shape != (x_shape[0],):
            raise ShapeError(f"{name} has shape {shape}; predict expects ({x_shape[0]},), one per row of x")


def check_batch_layout(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]]) -> None:
    """A batch for a step compiled for fixed shapes must have exactly the compiled keys and shapes."""
    if set(given) != set(expected):
        missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
        raise ShapeError(
            f"batch keys differ from the compiled step's: missing {short_names(missing)}, "
            f"unexpected {short_names(unexpected)}"
        )
    for name, shape in expected.items():
        if tuple(given[name]) != tuple(shape):
            raise ShapeError(
                f"batch {name!r} has shape {tuple(given[name])}, but the compiled step expects {tuple(shape)}; "
                "every training batch must keep the first batch's shapes"
            )


def check_device(backend: str, device: Any, available: Sequence[str], why: str = "") -> None:
    """``device`` (None: the default) must be one of ``available`` (``["cpu", "cuda", "cuda:0"]``,
    say), checked when a model is built rather than at its first use; ``why`` adds the backend's
    reason when a device is missing (no GPU, say)."""
    if device is None or str(device) in available:
        return
    reason = f" ({why})" if why else ""
    raise SpecError(
        f"device {short_repr(device)} is not available to the {backend} backend{reason}; "
        f"valid devices here: {list(available)}"
    )


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
        raise CheckpointError(
            f"parameter names do not match the model: missing {short_names(missing)}, "
            f"unexpected {short_names(unexpected)}"
        )
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
