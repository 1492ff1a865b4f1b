"""Scene flow (the paper's fourth experiment): a Siren maps (t, x, y, z) on the surface at frame t to
its displacement to frame t+1 and to frame t-1 (6 outputs).

Ground truth is exact: a surface point is a face and barycentric coordinates, which locate the same
material point on every frame of a shared-topology sequence. Whole frames can be held out
(``holdout_every``); the default model interpolates its coefficients in time between 3 knots, so
held-out frames get coefficients trained by their neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from resfields.errors import DataError
from resfields.spec import FieldSpec
from resfields.tasks.common.batches import frame_major, samples_per_frame
from resfields.tasks.common.cameras import overview_camera
from resfields.tasks.common.config import (
    ModelConfig,
    TrainConfig,
    siren_spec,
    siren_spec_for_checkpoint,
    time_and_points,
)
from resfields.tasks.common.geometry import points_from_barycentric, sample_surface
from resfields.tasks.common.media import scatter_flow_image, side_by_side, write_video
from resfields.tasks.common.metrics import flow_metrics
from resfields.tasks.common.sequence import MeshSequence, normalise_sequence
from resfields.tasks.common.sources import load_sequence
from resfields.tasks.common.task import Predict

__all__ = ["FlowOptions", "FlowTask"]


@dataclass(frozen=True)
class FlowOptions:
    """Which sequence, which frames are held out, how many surface points each frame gets.

    ``source``: None (the embedded deforming bunny) or a ``.anime`` file / mesh folder with one
    topology for all frames. ``holdout_every`` k > 0 holds out frames k, 2k, ... (never the last).
    """

    source: str | None = None
    n_frames: int | None = 17
    frame_stride: int = 1
    points_per_frame: int = 20_000
    test_points_per_frame: int = 5_000
    holdout_every: int = 4
    sample_seed: int = 0


@dataclass(frozen=True)
class FlowSet:
    """Surface points with their flows: ``points`` ``(N, 3)``, ``frame_ids`` ``(N,)``,
    ``target`` ``(N, 6)`` (forward then backward displacement), ``valid`` ``(N, 6)`` (0 where the
    neighbouring frame does not exist)."""

    points: np.ndarray
    frame_ids: np.ndarray
    target: np.ndarray
    valid: np.ndarray


def _flow_set(seq: MeshSequence, frames: np.ndarray, per_frame: int, rng: np.random.Generator) -> FlowSet:
    points, ids, target, valid = [], [], [], []
    last = seq.n_frames - 1
    for f in frames:
        v, faces = seq.frame(int(f))
        p, face_ids, bary = sample_surface(v, faces, per_frame, rng)
        flows, masks = [], []
        for other in (f + 1, f - 1):
            if 0 <= other <= last:
                flows.append(points_from_barycentric(seq.frame(int(other))[0], faces, face_ids, bary) - p)
                masks.append(np.ones((per_frame, 3)))
            else:
                flows.append(np.zeros((per_frame, 3)))
                masks.append(np.zeros((per_frame, 3)))
        points.append(p)
        ids.append(np.full(per_frame, f, dtype=np.int64))
        target.append(np.concatenate(flows, axis=1))
        valid.append(np.concatenate(masks, axis=1))
    return FlowSet(
        np.concatenate(points).astype(np.float32),
        np.concatenate(ids),
        np.concatenate(target).astype(np.float32),
        np.concatenate(valid).astype(np.float32),
    )


class FlowTask:
    """Learn flow on a deforming surface; metrics: EPE and accuracies on held-out points and frames."""

    name: ClassVar[str] = "flow"
    Data: ClassVar[type] = FlowOptions

    def __init__(self, data: FlowOptions, model: ModelConfig) -> None:
        self.options, self.model = data, model

    @classmethod
    def defaults(cls) -> tuple[ModelConfig, TrainConfig]:
        # 3 knots (frames 0, 8, 16 of the default 17): coarse knots keep the residuals smooth in time,
        # which held-out frames need; 5 and 9 knots did worse on them than the vanilla Siren (README)
        model = ModelConfig(width=128, resfield_layers=(1, 2, 3), rank=10, capacity=3, mode="interpolation")
        return model, TrainConfig(steps=2000, batch_size=8192, lr=5e-4)

    @cached_property
    def sequence(self) -> MeshSequence:
        o = self.options
        seq = normalise_sequence(load_sequence(o.source, n_frames=o.n_frames, frame_stride=o.frame_stride))[0]
        if not seq.shared_topology:
            raise DataError("scene flow needs one mesh topology for every frame (e.g. a .anime file)")
        if seq.n_frames < 2:
            raise DataError("scene flow needs at least 2 frames")
        return seq

    @cached_property
    def frames(self) -> tuple[np.ndarray, np.ndarray]:
        """Training and held-out frame indices."""
        n, k = self.sequence.n_frames, self.options.holdout_every
        held = np.arange(k, n - 1, k) if k > 0 else np.zeros(0, dtype=np.int64)
        return np.setdiff1d(np.arange(n), held), held

    @cached_property
    def sets(self) -> dict[str, FlowSet]:
        """``train`` (training pool), ``test_points`` (new points on training frames), ``test_frames``."""
        o, (train, held) = self.options, self.frames
        rng = np.random.default_rng(o.sample_seed)
        sets = {
            "train": _flow_set(self.sequence, train, o.points_per_frame, rng),
            "test_points": _flow_set(self.sequence, train, o.test_points_per_frame, rng),
        }
        if len(held):
            sets["test_frames"] = _flow_set(self.sequence, held, o.test_points_per_frame, rng)
        return sets

    def prepare(self) -> None:
        _ = self.sets

    def describe(self) -> str:
        """The data the options resolved to, in one line (printed before training)."""
        train, held = self.frames
        o = self.options
        return (
            f"{o.source or 'the embedded deforming bunny'}: {self.sequence.n_frames} frames ({len(train)} for "
            f"training, {len(held)} held out), {o.points_per_frame} points per frame"
        )

    def field_spec(self) -> FieldSpec:
        return siren_spec(self.model, 4, 6, n_frames=self.sequence.n_frames)

    def checkpoint_spec(self, stored: Any, metadata: dict[str, Any], where: str) -> FieldSpec | None:
        """The field this run config builds for a stored one, without reading the data."""
        return siren_spec_for_checkpoint(self.model, stored)

    def _inputs(self, frame_ids: np.ndarray, points: np.ndarray) -> dict[str, np.ndarray]:
        return time_and_points(self.model, frame_ids, points, self.sequence.n_frames)

    def sample(self, rng: np.random.Generator, batch_size: int, step: int = 0) -> dict[str, np.ndarray]:
        pool, n_train = self.sets["train"], len(self.frames[0])
        # the pool holds points_per_frame consecutive rows per training frame
        per_frame, pool_rows = samples_per_frame(batch_size, n_train), self.options.points_per_frame
        rows = (np.arange(n_train)[:, None] * pool_rows + rng.integers(0, pool_rows, (n_train, per_frame))).ravel()
        batch = self._inputs(pool.frame_ids[rows], pool.points[rows])
        return frame_major({**batch, "target": pool.target[rows], "valid": pool.valid[rows]}, n_train)

    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        # squared error over the defined displacements (the first frame has no backward flow, the last no forward)
        return ((pred - batch["target"]).square() * batch["valid"]).sum() / batch["valid"].sum()

    def predict_set(self, predict: Predict, flow_set: FlowSet) -> np.ndarray:
        """The field's ``(N, 6)`` flows at a set's points."""
        return predict(**self._inputs(flow_set.frame_ids, flow_set.points))

    def evaluate(self, predict: Predict) -> dict[str, float]:
        """EPE, strict/relaxed accuracy and outliers on held-out points of training frames and on
        held-out frames (forward and backward flows pooled), and EPE on the training pool."""
        metrics: dict[str, float] = {}
        for name, flow_set in self.sets.items():
            pred = self.predict_set(predict, flow_set)
            defined = flow_set.valid.reshape(-1, 2, 3)[:, :, 0] > 0
            pairs = pred.reshape(-1, 2, 3)[defined], flow_set.target.reshape(-1, 2, 3)[defined]
            result = flow_metrics(*pairs)
            keys = ("epe",) if name == "train" else tuple(result)
            metrics.update({f"{name}_{key}": result[key] for key in keys})
        return metrics

    def write_media(self, predict: Predict, out_dir: Path) -> list[Path]:
        """``flow.gif``: per frame, surface points coloured by ground-truth | predicted forward flow."""
        camera = overview_camera()
        rng = np.random.default_rng(0)
        frames = []
        for f in range(self.sequence.n_frames - 1):
            flow_set = _flow_set(self.sequence, np.array([f]), 4000, rng)
            pred = self.predict_set(predict, flow_set)
            frames.append(
                side_by_side(
                    scatter_flow_image(flow_set.points, flow_set.target[:, :3], camera),
                    scatter_flow_image(flow_set.points, pred[:, :3], camera),
                )
            )
        return [write_video(out_dir / "flow.gif", np.stack(frames), fps=6)]


TASK = FlowTask
