"""Backends: one small package per array framework, behind one interface.

Tasks and the conformance suite never import a framework directly; they ask
:func:`get_backend` for an object with this interface (see :class:`Backend`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from resfields.checkpoint import load_checkpoint, save_checkpoint
from resfields.errors import CheckpointError, SpecError
from resfields.spec import FieldSpec

Keys = np.ndarray | None  # per-row frame ids or times

__all__ = [
    "BACKENDS",
    "INFERENCE_BACKENDS",
    "Backend",
    "Trainer",
    "backend_of",
    "get_backend",
    "load_field",
    "save_field",
]

BACKENDS = ("torch", "tinygrad")  # the trainable backends
INFERENCE_BACKENDS = (*BACKENDS, "numpy")  # and the float64 reference, which only infers


class Backend(Protocol):
    """What every backend offers to tasks and to the conformance suite."""

    name: str
    dtypes: tuple[str, ...]  # compute dtypes the backend supports ("float32", and "bfloat16" via autocast)

    def check_device(self, device: str | None) -> None:
        """SpecError unless ``device`` (None: the default) exists for this backend here."""

    def devices(self) -> list[str]:
        """Devices this machine can run the backend on, e.g. ``["cpu", "cuda"]``."""

    def build(self, spec: FieldSpec, arrays: dict[str, np.ndarray] | None = None, device: str | None = None) -> Any:
        """A model for ``spec`` (freshly initialised, or loaded strictly from canonical arrays)."""

    def to_numpy(self, model: Any) -> dict[str, np.ndarray]:
        """Canonical ``{name: float32 array}`` of the model's parameters."""

    def owns(self, model: Any) -> bool:
        """Whether ``model`` is one of this backend's models (what :meth:`build` returns)."""

    def value_and_grad(
        self,
        model: Any,
        x: np.ndarray,
        cotangent: np.ndarray,
        frame_ids: np.ndarray | None = None,
        times: np.ndarray | None = None,
        dtype: str = "float32",
        encoding_window: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``y = model(x)``, and the gradients of ``sum(cotangent * y)`` w.r.t. ``x`` and every
        parameter, all as float64 NumPy arrays. ``x``: ``(..., I)``; ``y``: ``(..., O)``;
        ``encoding_window`` ``(L,)`` weighs a PE-MLP's bands (coarse-to-fine)."""

    def trainer(self, model: Any, loss: Any, lr: float, forward: Any = None, distributed: bool = False) -> Trainer:
        """An Adam :class:`Trainer` for ``model``; ``loss(pred, batch) -> scalar`` uses only methods
        both frameworks share (``-``, ``*``, ``/``, ``.abs()``, ``.square()``, ``.mean()``, ``.sum()``).
        ``forward(model, batch) -> pred`` replaces the default ``model(batch["x"], frame_ids=...,
        times=...)``, e.g. to combine the fields of a :class:`~resfields.spec.ModelSpec` model.
        ``distributed``: the trainer of one rank of a ``torch.distributed`` run (gradients averaged over
        the ranks; SpecError on a backend without it)."""

    def predict(
        self, model: Any, x: np.ndarray, frame_ids: np.ndarray | None = None, times: np.ndarray | None = None
    ) -> np.ndarray:
        """``model(x)`` in chunks as float32 NumPy: ``x`` ``(N, I)``, keys ``(N,)`` -> ``(N, O)``."""

    def infer(self, model: Any, forward: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``forward(model, batch)`` on a NumPy batch, without gradients, outputs as float32 NumPy
        (a dict of tensors in, a dict of arrays out; tinygrad compiles it once per batch layout)."""

    def concat(self, tensors: list[Any], axis: int) -> Any:
        """Join tensors along ``axis`` (the one array op whose spelling differs between frameworks
        that task code written once needs)."""

    def tensor(self, array: np.ndarray, like: Any) -> Any:
        """``array`` as a float32 tensor on the device of tensor ``like``."""


class Trainer(Protocol):
    """One optimiser per model; what a task's fitting loop drives."""

    def step(self, batch: dict[str, np.ndarray], lr_factor: float = 1.0) -> float:
        """One Adam step at ``lr * lr_factor`` on a batch (keys ``x``, ``frame_ids``/``times``, and
        whatever the loss reads); returns the loss before the step."""

    def predict(self, x: np.ndarray, frame_ids: Keys = None, times: Keys = None) -> np.ndarray:
        """Batched inference with the model being trained."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Adam's state under backend-neutral names, for resuming on either backend."""

    def load_optimizer_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`optimizer_state`'s output."""


def get_backend(name: str) -> Backend:
    """The backend called ``name`` ("torch" or "tinygrad"); ImportError if its framework is missing.

    "numpy" gives the float64 reference as an inference-only backend (``build``, ``infer``,
    ``predict``, ``concat``; no trainer): what renders or evaluates a checkpoint with the oracle."""
    if name == "numpy":
        from resfields.reference.model import BACKEND as REFERENCE

        return REFERENCE  # type: ignore[return-value]
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    return importlib.import_module(f"resfields.backends.{name}.interface").BACKEND


def backend_of(model: Any) -> Backend:
    """The backend whose :meth:`Backend.build` made ``model`` (torch, tinygrad or the reference);
    SpecError for anything else. A framework that is not imported yet cannot own the model, so
    asking never imports one."""
    import sys

    for name in INFERENCE_BACKENDS:  # each backend is named after its framework's module
        if name in sys.modules and get_backend(name).owns(model):
            return get_backend(name)
    raise SpecError(f"{type(model).__name__} is no resfields model of torch, tinygrad or the reference")


def save_field(
    folder: str | Path,
    model: Any,
    *,
    metadata: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> Path:
    """Save a model of any backend (``build_field``, ``get_backend(...).build``) with its ``model.spec``:
    the backend gives its canonical arrays, :func:`resfields.checkpoint.save_checkpoint` writes them
    (``metadata``, ``dtype`` and the errors as there)."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise CheckpointError(f"cannot save {type(model).__name__}: it has no .spec (build it with build_field)")
    arrays = backend_of(model).to_numpy(model)
    return save_checkpoint(folder, spec, arrays, metadata=metadata, dtype=dtype)  # type: ignore[arg-type]


def load_field(folder: str | Path, backend: str = "numpy", device: str | None = None) -> Any:
    """The checkpoint in ``folder`` as a model of ``backend`` ("numpy": the float64 reference, "torch",
    "tinygrad") on ``device``. CheckpointError for any checkpoint problem, SpecError for an unknown
    backend or device."""
    if backend not in INFERENCE_BACKENDS:
        raise SpecError(f"backend must be one of {INFERENCE_BACKENDS}, got {backend!r}")
    ckpt = load_checkpoint(folder)
    return get_backend(backend).build(ckpt.spec, ckpt.arrays, device)
