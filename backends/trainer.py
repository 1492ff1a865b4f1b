"""What both backends' trainers share, written once: the Adam-state contract, the NumPy batch's
dtypes and the checks and chunking of batched prediction. Each framework keeps its optimiser, its
step (torch eagerly, tinygrad under TinyJit) and how arrays reach its device.

The Adam-state contract, the same on every backend so that a run resumes on either: the first and
second moments of parameter ``<name>`` (canonical names, see :func:`resfields.spec.parameter_shapes`)
are ``adam.m.<name>`` and ``adam.v.<name>``, shaped like the parameter, and ``adam.step`` ``(1,)``
int64 counts the steps taken (0: no state; the moments are then absent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from resfields.errors import CheckpointError, ShapeError
from resfields.validate import check_predict_inputs

__all__ = ["AdamStateMixin", "host_batch", "predict_chunks", "predict_columns"]

Moments = tuple[np.ndarray, np.ndarray]  # Adam's (m, v) of one parameter


def host_batch(batch: Mapping[str, Any], integer_dtype: type[np.integer]) -> dict[str, np.ndarray]:
    """A NumPy batch in the dtypes a backend trains in: integer arrays (frame ids, pixel indices) as
    ``integer_dtype``, every other array as float32; shapes unchanged."""
    out = {}
    for key, value in batch.items():
        array = np.asarray(value)
        dtype = integer_dtype if np.issubdtype(array.dtype, np.integer) else np.float32
        out[key] = array.astype(dtype, copy=False)
    return out


def predict_columns(
    model: Any, x: np.ndarray, frame_ids: np.ndarray | None, times: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The inputs of batched prediction, checked: ``x`` ``(N, I)`` and the keys given, each
    ``(N,)``, as a dict of NumPy columns (``x``, ``frame_ids``, ``times``). ShapeError for a bad shape,
    before anything is compiled or copied to a device."""
    columns = {"x": np.asarray(x)}
    for name, key in (("frame_ids", frame_ids), ("times", times)):
        if key is not None:
            columns[name] = np.asarray(key)
    spec = getattr(model, "spec", None)
    if hasattr(spec, "in_features"):  # a field or layer (a model of several fields has its own forward)
        shapes = {k: v.shape for k, v in columns.items() if k != "x"}
        check_predict_inputs(columns["x"].shape, spec.in_features, shapes)
    n = len(columns["x"])
    for name, column in columns.items():
        if len(column) != n:
            raise ShapeError(f"{name} has {len(column)} rows but x has {n}")
    return columns


def predict_chunks(
    columns: Mapping[str, np.ndarray],
    chunk: int,
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    *,
    pad: bool = False,
) -> np.ndarray:
    """``run`` over chunks of at most ``chunk`` rows of ``columns`` (each ``(N, ...)``), outputs
    ``(rows, O)`` joined into ``(N, O)``. ``N = 0`` is one empty chunk, so the output keeps its width.
    ``pad`` fills a short last chunk with copies of its first row (a compiled forward sees one shape
    only) and drops their outputs."""
    n = len(columns["x"])
    outputs = []
    for start in range(0, max(n, 1), chunk):
        rows = {k: v[start : start + chunk] for k, v in columns.items()}
        filled = len(rows["x"])
        if pad and 0 < filled < chunk:
            rows = {k: np.concatenate([v, np.repeat(v[:1], chunk - filled, axis=0)]) for k, v in rows.items()}
        outputs.append(run(rows)[:filled])
    return np.concatenate(outputs)


class AdamStateMixin:
    """:meth:`optimizer_state` and :meth:`load_optimizer_state` of a trainer under the contract in
    this module's docstring. A backend supplies ``_named_parameters``, ``_get_adam`` and
    ``_set_adam``."""

    def _named_parameters(self) -> Iterable[tuple[str, Any]]:
        """``(canonical name, parameter)`` of every trained parameter, in the optimiser's order (a
        wrapper such as DistributedDataParallel overrides this to drop its own name prefix)."""
        raise NotImplementedError

    def _get_adam(self) -> tuple[list[Moments | None], int]:
        """Adam's moments as NumPy, one entry per :meth:`_named_parameters` (None: no state yet), and
        the number of steps taken."""
        raise NotImplementedError

    def _set_adam(self, moments: list[Moments], step: int) -> None:
        """Install checked moments, one per :meth:`_named_parameters`, as the state after ``step`` steps."""
        raise NotImplementedError

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Adam's moments under canonical names (``adam.m.<param>``, ``adam.v.<param>``, ``adam.step``)."""
        moments, step = self._get_adam()
        arrays: dict[str, np.ndarray] = {}
        for (name, _), pair in zip(self._named_parameters(), moments, strict=True):
            if pair is not None:
                arrays[f"adam.m.{name}"], arrays[f"adam.v.{name}"] = pair
        arrays["adam.step"] = np.array([step], dtype=np.int64)
        return arrays

    def load_optimizer_state(self, arrays: Mapping[str, Any]) -> None:
        """Restore what :meth:`optimizer_state` wrote (from either backend). Every parameter's moments
        are checked before any is installed, so a CheckpointError leaves the optimiser as it was."""
        step = int(np.asarray(arrays["adam.step"]).reshape(-1)[0])
        if step == 0:
            return
        moments = []
        for name, param in self._named_parameters():
            try:
                m, v = np.asarray(arrays[f"adam.m.{name}"]), np.asarray(arrays[f"adam.v.{name}"])
            except KeyError as err:
                raise CheckpointError(f"optimizer state has no moments for parameter {name!r}") from err
            shape = tuple(param.shape)
            if m.shape != shape or v.shape != shape:
                bad = m.shape if m.shape != shape else v.shape
                raise CheckpointError(f"optimizer state for {name!r} has shape {bad}, expected {shape}")
            moments.append((m, v))
        self._set_adam(moments, step)
