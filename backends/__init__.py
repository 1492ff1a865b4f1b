"""Backends: one small package per array framework, behind one interface.

Tasks and the conformance suite never import a framework directly; they ask
:func:`get_backend` for an object with this interface (see :class:`Backend`).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from resfields.spec import FieldSpec

__all__ = ["BACKENDS", "Backend", "get_backend"]

BACKENDS = ("torch", "tinygrad")


class Backend(Protocol):
    """What every backend offers to tasks and to the conformance suite."""

    name: str

    def devices(self) -> list[str]:
        """Devices this machine can run the backend on, e.g. ``["cpu", "cuda"]``."""

    def build(self, spec: FieldSpec, arrays: dict[str, np.ndarray] | None = None, device: str | None = None) -> Any:
        """A model for ``spec`` (freshly initialised, or loaded strictly from canonical arrays)."""

    def to_numpy(self, model: Any) -> dict[str, np.ndarray]:
        """Canonical ``{name: float32 array}`` of the model's parameters."""

    def value_and_grad(
        self,
        model: Any,
        x: np.ndarray,
        cotangent: np.ndarray,
        frame_ids: np.ndarray | None = None,
        times: np.ndarray | None = None,
        dtype: str = "float32",
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``y = model(x)``, and the gradients of ``sum(cotangent * y)`` w.r.t. ``x`` and every
        parameter, all as float64 NumPy arrays. ``x``: ``(..., I)``; ``y``: ``(..., O)``."""


def get_backend(name: str) -> Backend:
    """The backend called ``name`` ("torch" or "tinygrad"); ImportError if its framework is missing."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    return importlib.import_module(f"resfields.backends.{name}.interface").BACKEND
