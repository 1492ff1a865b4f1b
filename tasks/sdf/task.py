"""Temporal SDF (the paper's second experiment): a Siren maps (t, x, y, z) to signed distance.

Sign convention: positive outside, negative inside. All frames are normalised jointly into
[-0.9, 0.9]^3. Training samples follow the paper: points on the surface, the same jittered by
sigma = 0.01, and uniform points in [-1, 1]^3, with targets from point-cloud-utils; the loss is the
paper's MAPE, |pred - gt| / (|gt| + 0.01).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm import tqdm

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
from resfields.tasks.common.geometry import extract_mesh, grid_points, sdf_samples
from resfields.tasks.common.media import render_mesh, side_by_side, write_video
from resfields.tasks.common.meshio import write_mesh
from resfields.tasks.common.metrics import mesh_metrics
from resfields.tasks.common.sequence import MeshSequence, normalise_sequence
from resfields.tasks.common.sources import load_sequence
from resfields.tasks.common.task import Predict

__all__ = ["SDFOptions", "SDFTask"]


@dataclass(frozen=True)
class SDFOptions:
    """Which shapes, and how densely they are sampled and evaluated.

    ``source``: None (the embedded deforming bunny), a folder of meshes or a ``.anime`` file.
    ``points_per_frame``: size of each frame's pool of training samples (40 % on the surface,
    40 % near it, 20 % uniform). ``resolution``: marching-cubes grid for evaluation.
    """

    source: str | None = None
    n_frames: int | None = 16
    frame_stride: int = 1
    points_per_frame: int = 50_000
    sigma: float = 0.01
    resolution: int = 64
    eval_samples: int = 100_000
    sample_seed: int = 0


class SDFTask:
    """Fit shapes over time; metrics per frame: L1 Chamfer distance and normal consistency."""

    name: ClassVar[str] = "sdf"
    Data: ClassVar[type] = SDFOptions

    def __init__(self, data: SDFOptions, model: ModelConfig) -> None:
        self.options, self.model = data, model

    @classmethod
    def defaults(cls) -> tuple[ModelConfig, TrainConfig]:
        return ModelConfig(width=128, resfield_layers=(1, 2, 3), rank=10), TrainConfig(
            steps=2000, batch_size=8192, lr=5e-4
        )

    @cached_property
    def sequence(self) -> MeshSequence:
        """The shapes, normalised jointly into [-0.9, 0.9]^3."""
        raw = load_sequence(self.options.source, n_frames=self.options.n_frames, frame_stride=self.options.frame_stride)
        return normalise_sequence(raw)[0]

    @cached_property
    def pools(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame training samples: points ``(T, P, 3)`` and signed distances ``(T, P)``."""
        o, seq = self.options, self.sequence
        rng = np.random.default_rng(o.sample_seed)
        n_surface = n_near = int(0.4 * o.points_per_frame)
        n_uniform = o.points_per_frame - n_surface - n_near
        points, sdf = [], []
        for f in tqdm(range(seq.n_frames), desc="sdf samples", leave=False):
            v, faces = seq.frame(f)
            p, s = sdf_samples(v, faces, rng, n_surface, n_near, n_uniform, sigma=o.sigma)
            points.append(p)
            sdf.append(s)
        return np.stack(points), np.stack(sdf)

    def prepare(self) -> None:
        _ = self.pools

    def describe(self) -> str:
        """The data the options resolved to, in one line (printed before training)."""
        seq, o = self.sequence, self.options
        return (
            f"{o.source or 'the embedded deforming bunny'}: {seq.n_frames} frames (every {o.frame_stride}), "
            f"{o.points_per_frame} SDF samples per frame"
        )

    def field_spec(self) -> FieldSpec:
        return siren_spec(self.model, 4, 1, n_frames=self.sequence.n_frames)

    def checkpoint_spec(self, stored: Any, metadata: dict[str, Any], where: str) -> FieldSpec | None:
        """The field this run config builds for a stored one, without reading the data."""
        return siren_spec_for_checkpoint(self.model, stored)

    def _inputs(self, frame_ids: np.ndarray, points: np.ndarray) -> dict[str, np.ndarray]:
        return time_and_points(self.model, frame_ids, points, self.sequence.n_frames)

    def sample(self, rng: np.random.Generator, batch_size: int, step: int = 0) -> dict[str, np.ndarray]:
        points, sdf = self.pools
        n_frames, pool = sdf.shape
        frame_ids = np.repeat(np.arange(n_frames), samples_per_frame(batch_size, n_frames))
        rows = rng.integers(0, pool, len(frame_ids))
        batch = {**self._inputs(frame_ids, points[frame_ids, rows]), "target": sdf[frame_ids, rows][:, None]}
        return frame_major(batch, n_frames)

    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        target = batch["target"]
        return ((pred - target).abs() / (target.abs() + 0.01)).mean()

    def sdf_grid(self, predict: Predict, frame: int) -> np.ndarray:
        """The field's SDF on the evaluation grid of ``frame``: ``(R, R, R)``."""
        r = self.options.resolution
        points = grid_points(r)
        ids = np.full(len(points), frame, dtype=np.int64)
        return predict(**self._inputs(ids, points))[:, 0].reshape(r, r, r)

    def meshes(self, predict: Predict) -> list[tuple[np.ndarray, np.ndarray]]:
        """Marching-cubes meshes of every frame."""
        frames = tqdm(range(self.sequence.n_frames), desc="marching cubes", leave=False, disable=None)
        return [extract_mesh(self.sdf_grid(predict, f)) for f in frames]

    def evaluate(self, predict: Predict) -> dict[str, float]:
        """Chamfer L1 and normal consistency per frame (``eval_samples`` points each way), averaged."""
        per_frame = []
        for f, (v, faces) in enumerate(self.meshes(predict)):
            gt_v, gt_f = self.sequence.frame(f)
            per_frame.append(mesh_metrics(v, faces, gt_v, gt_f, n_samples=self.options.eval_samples, seed=f))
        metrics = {key: float(np.mean([m[key] for m in per_frame])) for key in per_frame[0]}
        metrics.update({f"{key}_per_frame": [m[key] for m in per_frame] for key in per_frame[0]})  # type: ignore[misc]
        return metrics

    def write_media(self, predict: Predict, out_dir: Path) -> list[Path]:
        """Every frame's mesh as ``meshes/frame_XXX.ply`` and ``time_sweep.gif`` (ground truth | fit)."""
        camera = overview_camera()
        (out_dir / "meshes").mkdir(parents=True, exist_ok=True)
        written, frames = [], []
        for f, (v, faces) in enumerate(self.meshes(predict)):
            path = out_dir / "meshes" / f"frame_{f:03d}.ply"
            write_mesh(path, v, faces)
            written.append(path)
            gt = render_mesh(*self.sequence.frame(f), camera)["rgb"]
            fit = render_mesh(v, faces, camera)["rgb"] if len(faces) else np.ones_like(gt)
            frames.append(side_by_side(gt, fit))
        written.append(write_video(out_dir / "time_sweep.gif", np.stack(frames), fps=8))
        return written


TASK = SDFTask
