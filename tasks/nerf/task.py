"""Dynamic NeRF from a few calibrated views (the paper's headline experiment), as a task of the shared
fitting loop: ``resfields fit nerf`` trains on the embedded deforming-bunny scene by default.

Training renders balanced foreground/background rays of all frames through the training cameras on a
black background; evaluation renders the held-out cameras of every frame on white (as upstream) and
reports PSNR, foreground-masked PSNR and SSIM.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm import tqdm

from resfields.encoding import annealing_alpha, coarse_to_fine_window
from resfields.errors import CheckpointError, DataError, SpecError, short_repr
from resfields.spec import ModelSpec, check_limit
from resfields.tasks.common.batches import samples_per_frame
from resfields.tasks.common.config import TrainConfig
from resfields.tasks.common.media import side_by_side, write_image, write_video
from resfields.tasks.common.metrics import chamfer_l1, mean_ssim, psnr, sample_mesh_surface

from .dnerf import read_dnerf
from .fitted import FittedNerf, camera_to_dict, load_nerf, scene_from_metadata
from .model import NerfModelConfig, nerf_forward, nerf_loss, nerf_spec
from .neus import read_neus
from .rays import RaySampler
from .scene import embedded_scene
from .video import MultiViewVideo

__all__ = ["NerfOptions", "NerfTask"]


@dataclass(frozen=True)
class NerfOptions:
    """``source``: None (the embedded scene, generated once into the cache), a NeuS/Owlii folder
    (``cameras_sphere.npz``) or a D-NeRF folder (``transforms_train.json``)."""

    source: str | None = None
    scale: float = 1.0
    n_samples: int = 16  # intervals per ray in the band at the surface (what the network sees with gradients)
    n_coarse: int = 32  # SDF queries per ray that find the surface (no gradients)
    # rendering a fitted scene: its queries cover only occupied cells and its band is already sharp,
    # so fewer of both reach the dense render's image (benchmarks/render.py --dense measures how close)
    render_samples: int = 8
    render_coarse: int = 16
    eval_chunk: int = 1024  # rays per rendering chunk (fixed shapes for compiled backends)
    mesh_resolution: int = 48  # marching-cubes grid for the Chamfer distance (0: skip it)

    def __post_init__(self) -> None:
        # sizes checked before any ray is sampled: n_samples=1e7 would first allocate terabytes
        for name, limit in (
            ("n_samples", "max_samples_per_ray"),
            ("n_coarse", "max_samples_per_ray"),
            ("render_samples", "max_samples_per_ray"),
            ("render_coarse", "max_samples_per_ray"),
            ("eval_chunk", "max_chunk"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"NerfOptions.{name} must be a positive integer, got {short_repr(value)}")
            check_limit("NerfOptions", name, value, limit)


class NerfTask:
    """TNeRF / DyNeRF / DNeRF with or without ResField layers in the SDF network."""

    name: ClassVar[str] = "nerf"
    Data: ClassVar[type] = NerfOptions
    Model: ClassVar[type] = NerfModelConfig
    shard_key: ClassVar[str] = "points"  # the (F, P, ...) array of a batch that ranks share (distributed)

    def __init__(self, data: NerfOptions, model: NerfModelConfig) -> None:
        self.options, self.model = data, model
        self._query: Any = None

    def bind(self, predict: Any) -> None:
        """Give the sampler the model being trained: ``predict(batch)`` without gradients (the SDF
        queries that find the surface, :mod:`~resfields.tasks.nerf.sampling`)."""
        self._query = predict

    @classmethod
    def defaults(cls) -> tuple[NerfModelConfig, TrainConfig]:
        return NerfModelConfig(), TrainConfig(steps=2000, batch_size=1024, lr=5e-4, lr_final=0.05)

    @cached_property
    def video(self) -> MultiViewVideo:
        o = self.options
        folder = Path(o.source) if o.source is not None else embedded_scene()
        if (folder / "transforms_train.json").is_file():
            return read_dnerf(folder, scale=o.scale)
        if (folder / "cameras_sphere.npz").is_file():
            return read_neus(folder, scale=o.scale)
        raise DataError(f"{folder}: neither a NeuS folder (cameras_sphere.npz) nor a D-NeRF folder")

    @cached_property
    def sampler(self) -> RaySampler:
        depth = self.model.depth_weight > 0
        o = self.options
        return RaySampler(
            self.video, n_samples=o.n_samples, n_coarse=o.n_coarse, fd_step=self.model.fd_step, depth=depth
        )

    def prepare(self) -> None:
        _ = self.sampler._pixels, self.sampler._rays

    def describe(self) -> str:
        """The data the options resolved to, in one line (printed before training)."""
        v = self.video
        train, test = v.images_of("train"), v.images_of("test")
        sizes = sorted({(c.height, c.width) for c in v.cameras})
        shown = ", ".join(f"{h}x{w}" for h, w in sizes)
        cams = len({int(v.camera_ids[i]) for i in train})
        held = len({int(v.camera_ids[i]) for i in test})
        return (
            f"{self.options.source or 'the embedded bunny scene'}: {v.n_frames} frames from {cams} training "
            f"cameras ({held} held out) at {shown}; {len(train)} training images"
        )

    def field_spec(self) -> ModelSpec:
        return nerf_spec(self.model, self.video.n_frames)

    def checkpoint_spec(self, stored: Any, metadata: dict[str, Any], where: str) -> ModelSpec | None:
        """The model this run config builds for a checkpoint with ``metadata.scene`` (its frame count),
        without reading the data; None without a scene. CheckpointError for a malformed scene or a
        frame count no model can be built for."""
        scene = metadata.get("scene")
        if not isinstance(scene, dict) or "n_frames" not in scene:
            return None
        n_frames = scene_from_metadata(scene, where).n_frames
        try:
            return nerf_spec(self.model, n_frames)
        except SpecError as err:  # e.g. a frame count beyond the capacity limit
            raise CheckpointError(
                f"{where} metadata.scene.n_frames is {short_repr(n_frames)}, for which the run config builds "
                f"no valid model ({err})"
            ) from err

    def make_forward(self, backend: Any) -> Any:
        """The model's forward (:func:`~resfields.tasks.nerf.model.nerf_forward`)."""
        return nerf_forward(self.model, backend.concat)

    def sample(self, rng: np.random.Generator, batch_size: int, step: int = 0) -> dict[str, np.ndarray]:
        """A ray batch (see :meth:`RaySampler.sample`) plus the coarse-to-fine ``window`` at ``step``.
        Needs :meth:`bind` first: the surface is found with the current model."""
        if self._query is None:
            raise DataError("NerfTask.sample needs the model being trained: call bind(predict) first")
        batch = self.sampler.sample(rng, samples_per_frame(batch_size, self.video.n_frames), self._query)
        m = self.model
        if m.n_frequencies > 0:
            alpha = annealing_alpha(step, m.anneal_steps, m.n_frequencies)
            batch["window"] = coarse_to_fine_window(alpha, m.n_frequencies)
        return batch

    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        return nerf_loss(pred, batch, self.model)

    def render(self, predict: Any, camera: Any, frame: int, background: float = 1.0) -> dict[str, np.ndarray]:
        """Render one view at one frame: ``rgb`` (H, W, 3) on ``background``, ``opacity``/``depth`` (H, W),
        ``normals`` (H, W, 3)."""
        return self.fitted(predict).render(camera, frame=int(frame), background=background)

    def metadata(self) -> dict[str, Any]:
        """What rendering needs besides the model, stored in the checkpoint: frame count, scene box
        and one camera per physical camera of the data (``cam00``, ... with its split)."""
        v = self.video
        cameras, splits = {}, {}
        for split, images in v.split.items():
            for i in images:
                splits.setdefault(int(v.camera_ids[i]), split)
        for i, camera_id in enumerate(v.camera_ids):
            name = f"cam{int(camera_id):02d}"
            if name not in cameras:
                cameras[name] = camera_to_dict(v.cameras[i])
        return {
            "n_frames": v.n_frames,
            "bounds": v.bounds.tolist(),
            "cameras": cameras,
            "camera_splits": {f"cam{k:02d}": split for k, split in sorted(splits.items())},
        }

    def _test_views(self, predict: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v = self.video
        images = v.images_of("test") if len(v.split.get("test", ())) else v.images_of("train")
        shown = tqdm(images, desc="render held-out views", leave=False, disable=None)  # a bar on a terminal only
        pred = np.stack([self.render(predict, v.cameras[i], int(v.frame_ids[i]))["rgb"] for i in shown])
        return pred, v.on_white(images), v.mask[images]

    def mesh(self, predict: Any, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Marching cubes of the SDF at ``frame`` on a ``mesh_resolution``^3 grid over [-1, 1]^3."""
        return self.fitted(predict).mesh(frame, self.options.mesh_resolution)

    def fitted(self, predict: Any) -> FittedNerf:
        """A :class:`FittedNerf` view of this task's scene around a ``predict(batch)``."""
        o, v = self.options, self.video
        return FittedNerf(
            self.model, v.n_frames, v.bounds, o.render_samples, predict, o.eval_chunk, n_coarse=o.render_coarse
        )

    def evaluate(self, predict: Any) -> dict[str, float]:
        """Novel-view PSNR (white background), foreground-masked PSNR and SSIM over all held-out views;
        L1 Chamfer of each frame's marching-cubes mesh against the ground-truth points, when the data
        has them (20k mesh samples each), averaged over frames."""
        start = time.perf_counter()
        pred, truth, mask = self._test_views(predict)
        render_ms = 1000 * (time.perf_counter() - start) / len(pred)
        metrics = {
            "psnr": psnr(pred, truth),
            "masked_psnr": psnr(pred[mask], truth[mask]),
            "ssim": mean_ssim(pred, truth),
            "render_ms_per_view": render_ms,  # H x W of the data, chunked, on this run's backend and device
        }
        if self.video.points is not None and self.options.mesh_resolution > 0:
            rng = np.random.default_rng(0)
            chamfers = []
            for frame in tqdm(range(self.video.n_frames), desc="meshes for Chamfer", leave=False, disable=None):
                v, f = self.mesh(predict, frame)
                if len(f) == 0:
                    chamfers.append(float("inf"))
                    continue
                samples, _ = sample_mesh_surface(v, f, 20000, rng)
                chamfers.append(chamfer_l1(samples, self.video.points[frame]))
            metrics["chamfer_l1"] = float(np.mean(chamfers))
        return metrics

    def write_media(self, predict: Any, out_dir: Path) -> list[Path]:
        """``test_views.gif`` (truth | render) over the held-out views, and its first frame as PNG."""
        pred, truth, _ = self._test_views(predict)
        panel = side_by_side(truth, pred)
        gif = write_video(out_dir / "test_views.gif", panel, fps=4)
        return [gif, write_image(out_dir / "test_view.png", panel[0])]


TASK = NerfTask


def export_mesh(
    folder: str | Path,
    frame: int,
    path: str | Path,
    *,
    backend: str = "torch",
    device: str | None = None,
    resolution: int = 128,
) -> Path:
    """Write the marching-cubes mesh of frame ``frame`` of a trained NeRF run folder to ``path``
    (.ply or .obj), from a ``resolution``^3 grid over the scene box [-1, 1]^3. Returns the path."""
    return load_nerf(folder, backend=backend, device=device).export_mesh(frame, path, resolution)
