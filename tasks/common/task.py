"""What a task is: the contract between a task and the shared fitting loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from resfields.spec import FieldSpec

from .config import ModelConfig, TrainConfig

__all__ = ["Predict", "Task"]

# predict(x (N, I), frame_ids (N,) | None, times (N,) | None) -> (N, O) float32
Predict = Callable[..., np.ndarray]


class Task(Protocol):
    """A task: data, the field fitted to it, how to train it, how to judge it.

    Tasks hold NumPy data only. ``loss`` is called with framework tensors and must use only what
    torch and tinygrad share (arithmetic operators, ``.abs()``, ``.square()``, ``.sqrt()``,
    ``.mean()``, ``.sum()``), so one definition trains on every backend.
    """

    name: ClassVar[str]
    Data: ClassVar[type]  # the task's data-options dataclass

    def __init__(self, data: Any, model: ModelConfig) -> None: ...

    @classmethod
    def defaults(cls) -> tuple[ModelConfig, TrainConfig]:
        """The task's default model and training recipe (what the CLI starts from)."""

    def prepare(self) -> None:
        """Load the data and build sample pools now (fit calls it before timing the steps)."""

    def checkpoint_spec(self, stored: Any, metadata: dict[str, Any], where: str) -> Any:
        """The spec this run config builds for a checkpoint holding ``stored`` with ``metadata``,
        without the data (None if the checkpoint says too little); how loading tells a tampered or
        mismatched config.json. CheckpointError naming ``where`` for malformed metadata."""

    def field_spec(self) -> FieldSpec:
        """The field this task fits, for ``model``."""

    def sample(self, rng: np.random.Generator, batch_size: int, step: int = 0) -> dict[str, np.ndarray]:
        """The training batch of ``step`` (for schedules such as coarse-to-fine annealing; ``rng``
        already depends on it), of the same shape on every call (compiled steps need fixed shapes):
        ``x`` ``(F, P, I)`` with ``P`` samples of each of ``F`` frames, ``frame_ids`` or ``times``
        ``(F, 1)`` (none for a vanilla field), plus what :meth:`loss` reads (see
        :mod:`resfields.tasks.common.batches`)."""

    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        """A scalar tensor from the field's output ``(N, O)`` and the batch (as tensors)."""

    def evaluate(self, predict: Predict) -> dict[str, float]:
        """The task's metrics for a trained field.

        A task may also define ``Model`` (its model-config dataclass, default
        :class:`~resfields.tasks.common.config.ModelConfig`) and ``make_forward(backend) ->
        forward(model, batch)`` when its model is not called as ``model(x, frame_ids, times)`` (e.g.
        a NeRF that renders rays); then ``predict(batch)`` takes a NumPy batch and returns the
        forward's outputs as a dict of NumPy arrays. ``metadata() -> dict`` (optional) is stored in the
        checkpoint as ``scene``: what using the model needs besides its weights (e.g. a NeRF's box).
        ``bind(predict)`` (optional) is called once before training with the model's no-gradient
        ``predict``, for tasks whose batches depend on the model (a NeRF samples where its SDF has the
        surface); such a ``sample`` must stay a pure function of the model, ``rng`` and ``step``."""

    def write_media(self, predict: Predict, out_dir: Path) -> list[Path]:
        """Images, videos and meshes people would rather look at; returns the files written."""
