"""Run configuration shared by every task: the model, the training recipe, and their JSON form.

A run is ``RunConfig(task, data, model, train)``; ``data`` is the task's own dataclass. The whole
run is stored in the checkpoint's metadata, so ``resfields eval`` and ``--resume`` rebuild exactly
the data and model a checkpoint was trained with.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from resfields.errors import SpecError, short_repr
from resfields.spec import ResFieldSpec, SirenSpec, check_limit, frame_to_time

__all__ = [
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "config_to_dict",
    "field_keys",
    "siren_spec",
    "time_and_points",
]


def _check(config: Any, names: tuple[str, ...], ok: Any, what: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not ok(value):
            raise SpecError(f"{type(config).__name__}.{name} must be {what}, got {short_repr(value)}")


@dataclass(frozen=True)
class ModelConfig:
    """A Siren field, optionally with ResField layers.

    ``resfield_layers`` are linear-layer indices (the paper uses 1, 2, 3 of 5); empty means the
    vanilla Siren. ``capacity`` None means one coefficient vector per frame of the data. ``rank`` is
    ignored by ``compression="none"``, which stores one full residual per frame and has no rank
    (so the CLI's default rank does not block ``--compression none``).
    """

    width: int = 128
    n_layers: int = 5
    omega0: float = 30.0
    hidden_omega0: float = 30.0
    resfield_layers: tuple[int, ...] = (1, 2, 3)
    rank: int = 10
    capacity: int | None = None
    mode: Literal["lookup", "interpolation"] = "lookup"
    compression: Literal["vm", "none", "cp", "tucker"] = "vm"

    def __post_init__(self) -> None:
        _check(self, ("width", "n_layers", "rank"), lambda v: isinstance(v, int) and v >= 1, "a positive integer")
        _check(self, ("omega0", "hidden_omega0"), lambda v: v > 0, "positive")
        _check(self, ("capacity",), lambda v: v is None or (isinstance(v, int) and v >= 1), "None or >= 1")
        object.__setattr__(self, "resfield_layers", tuple(self.resfield_layers))


@dataclass(frozen=True)
class TrainConfig:
    """Adam with cosine decay from ``lr`` to ``lr * lr_final``; ``steps`` batches of ``batch_size``."""

    steps: int = 2000
    batch_size: int = 8192
    lr: float = 5e-4
    lr_final: float = 0.1
    seed: int = 0
    eval_every: int = 0  # evaluate (and record a metric curve) every N steps; 0 = only at the end

    def __post_init__(self) -> None:
        _check(self, ("steps", "batch_size"), lambda v: isinstance(v, int) and v >= 1, "a positive integer")
        check_limit("TrainConfig", "batch_size", self.batch_size, "max_batch_size")
        _check(self, ("lr",), lambda v: 0 < v < 1, "in (0, 1)")
        _check(self, ("lr_final",), lambda v: 0 <= v <= 1, "in [0, 1]")
        _check(self, ("seed", "eval_every"), lambda v: isinstance(v, int) and v >= 0, "a non-negative integer")

    def lr_factor(self, step: int) -> float:
        """The cosine schedule's multiplier of ``lr`` at ``step`` (0-based)."""
        progress = min(step / max(self.steps - 1, 1), 1.0)
        return self.lr_final + (1.0 - self.lr_final) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: the task's name, its data options, the model and the recipe."""

    task: str
    data: Any
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def siren_spec_for_checkpoint(model: ModelConfig, stored: Any) -> SirenSpec | None:
    """The Siren ``model`` describes for a stored field, without its data: the stored capacity stands in
    for the frame count (it is the frame count unless the recipe fixed a capacity, which
    :func:`siren_spec` then uses). None when ``stored`` is no field of in/out features."""
    if not hasattr(stored, "in_features") or not hasattr(model, "width"):
        return None
    frames = stored.resfield.capacity if getattr(stored, "resfield", None) is not None else 1
    return siren_spec(model, stored.in_features, stored.out_features, frames)


def siren_spec(model: ModelConfig, in_features: int, out_features: int, n_frames: int) -> SirenSpec:
    """The Siren ``in_features -> out_features`` that ``model`` describes for data of ``n_frames`` frames."""
    resfield = None
    if model.resfield_layers:
        capacity = n_frames if model.capacity is None else model.capacity
        rank = None if model.compression == "none" else model.rank
        resfield = ResFieldSpec(capacity=capacity, rank=rank, mode=model.mode, compression=model.compression)
    return SirenSpec(
        in_features,
        out_features,
        hidden_features=model.width,
        n_layers=model.n_layers,
        omega0=model.omega0,
        hidden_omega0=model.hidden_omega0,
        resfield_layers=tuple(model.resfield_layers),
        resfield=resfield,
    )


# ----------------------------------------------------------------------------- JSON round trip


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json_ready(dataclasses.asdict(config))


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def field_keys(model: ModelConfig, frame_ids: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
    """How rows of frames ``frame_ids`` ``(N,)`` address the field: ``{"frame_ids": ...}`` in lookup
    mode, ``{"times": ...}`` (the library's normalised time of each frame) in interpolation mode,
    nothing for a vanilla field (it has no time-dependent layers, and refuses keys)."""
    if not model.resfield_layers:
        return {}
    if model.mode == "interpolation":
        times = frame_to_time(np.asarray(frame_ids, dtype=np.float64), n_frames)  # type: ignore[arg-type]
        return {"times": np.broadcast_to(np.asarray(times, dtype=np.float32), np.shape(frame_ids)).copy()}
    return {"frame_ids": np.asarray(frame_ids, dtype=np.int64)}


def time_and_points(
    model: ModelConfig, frame_ids: np.ndarray, points: np.ndarray, n_frames: int
) -> dict[str, np.ndarray]:
    """Field inputs for points of given frames: ``x`` ``(N, 4)`` = (t, x, y, z) with t the frame's
    normalised time, plus the keys of :func:`field_keys`. ``frame_ids`` ``(N,)``, ``points`` ``(N, 3)``."""
    t = np.asarray(frame_to_time(frame_ids.astype(np.float64), n_frames), np.float32)  # type: ignore[arg-type]
    x = np.concatenate([np.broadcast_to(t, frame_ids.shape)[:, None], points], axis=1)
    return {"x": x.astype(np.float32), **field_keys(model, frame_ids, n_frames)}
