"""Dynamic NeRF from a few calibrated views (the paper's headline experiment), as a task of the shared
fitting loop: ``resfields fit nerf`` trains on the embedded deforming-bunny scene by default.

Training renders balanced foreground/background rays of all frames through the training cameras on a
black background; evaluation renders the held-out cameras of every frame on white (as upstream) and
reports PSNR, foreground-masked PSNR and SSIM.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from resfields.errors import DataError
from resfields.spec import ModelSpec, frame_to_time
from resfields.tasks.common.batches import samples_per_frame
from resfields.tasks.common.config import TrainConfig
from resfields.tasks.common.media import side_by_side, write_image, write_video
from resfields.tasks.common.meshes import extract_mesh, grid_points
from resfields.tasks.common.metrics import chamfer_l1, mean_ssim, psnr, sample_mesh_surface

from .data import MultiViewVideo, read_dnerf, read_neus
from .model import NerfModelConfig, difference_offsets, nerf_loss, nerf_spec, render_batch, sdf_and_feature
from .rays import RaySampler
from .render import ray_box_intersection, rays_from_camera, sample_points, stratified_samples
from .scene import embedded_scene

__all__ = ["NerfOptions", "NerfTask"]


@dataclass(frozen=True)
class NerfOptions:
    """``source``: None (the embedded scene, generated once into the cache), a NeuS/Owlii folder
    (``cameras_sphere.npz``) or a D-NeRF folder (``transforms_train.json``)."""

    source: str | None = None
    scale: float = 1.0
    n_samples: int = 32
    eval_chunk: int = 1024  # rays per rendering chunk (fixed shapes for compiled backends)
    mesh_resolution: int = 48  # marching-cubes grid for the Chamfer distance (0: skip it)


class NerfTask:
    """TNeRF / DyNeRF / DNeRF with or without ResField layers in the SDF network."""

    name: ClassVar[str] = "nerf"
    Data: ClassVar[type] = NerfOptions
    Model: ClassVar[type] = NerfModelConfig

    def __init__(self, data: NerfOptions, model: NerfModelConfig) -> None:
        self.options, self.model = data, model

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
        return RaySampler(self.video, n_samples=self.options.n_samples, fd_step=self.model.fd_step)

    def prepare(self) -> None:
        _ = self.sampler._pixels, self.sampler._rays

    def field_spec(self) -> ModelSpec:
        return nerf_spec(self.model, self.video.n_frames)

    def make_forward(self, backend: Any) -> Any:
        """Render a ray batch; a batch without ``t_starts`` is an SDF query (``{"sdf": (F, P, S, 1)}``)."""
        config, concat = self.model, backend.concat

        def forward(model: Any, batch: dict[str, Any]) -> Any:
            if "t_starts" not in batch:
                return {"sdf": sdf_and_feature(model, config, batch["points"], batch, concat)[..., :1]}
            return render_batch(model, batch, config, concat)

        return forward

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        return self.sampler.sample(rng, samples_per_frame(batch_size, self.video.n_frames))

    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        return nerf_loss(pred, batch)

    def render(self, predict: Any, camera: Any, frame: int, background: float = 1.0) -> dict[str, np.ndarray]:
        """Render one view at one frame: ``rgb`` (H, W, 3) on ``background``, ``opacity``/``depth`` (H, W)."""
        origins, dirs = rays_from_camera(camera)
        n, chunk, s = len(origins), self.options.eval_chunk, self.options.n_samples
        time = np.float32(frame_to_time(float(frame), self.video.n_frames))
        parts: dict[str, list[np.ndarray]] = {"rgb": [], "opacity": [], "depth": []}
        for start in range(0, n, chunk):
            o, d = origins[start : start + chunk], dirs[start : start + chunk]
            filled = len(o)
            if filled < chunk:  # pad: compiled backends see one shape
                o = np.concatenate([o, np.repeat(o[-1:], chunk - filled, 0)])
                d = np.concatenate([d, np.repeat(d[-1:], chunk - filled, 0)])
            near, far, _ = ray_box_intersection(o, d, self.video.bounds)
            t0, t1 = stratified_samples(near, far, s, None)
            batch = {
                "points": sample_points(o, d, t0, t1)[None],
                "dirs": np.broadcast_to(d[None, :, None, :], (1, chunk, s, 3)).astype(np.float32),
                "t_starts": t0[None],
                "t_ends": t1[None],
                "time": np.full((1, 1, 1, 1), time, np.float32),
                "frame": np.full((1, 1, 1), frame, np.int64),
                "offsets": difference_offsets(self.model.fd_step),
            }
            out = predict(batch)
            for key in parts:
                parts[key].append(out[key][0, :filled])
        h, w = camera.height, camera.width
        rgb, opacity = np.concatenate(parts["rgb"]), np.concatenate(parts["opacity"])
        return {
            "rgb": np.clip(rgb + (1.0 - opacity) * background, 0, 1).reshape(h, w, 3),
            "opacity": opacity.reshape(h, w),
            "depth": np.concatenate(parts["depth"]).reshape(h, w),
        }

    def _test_views(self, predict: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v = self.video
        images = v.images_of("test") if len(v.split.get("test", ())) else v.images_of("train")
        pred = np.stack([self.render(predict, v.cameras[i], int(v.frame_ids[i]))["rgb"] for i in images])
        mask = v.mask[images]
        truth = v.rgb[images] * mask[..., None] + (1.0 - mask[..., None])  # white background
        return pred, truth, mask

    def mesh(self, predict: Any, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Marching cubes of the SDF at ``frame`` on a ``mesh_resolution``^3 grid over [-1, 1]^3."""
        r, chunk = self.options.mesh_resolution, 16384
        points = grid_points(r)
        time = np.float32(frame_to_time(float(frame), self.video.n_frames))
        values = []
        for start in range(0, len(points), chunk):
            part = points[start : start + chunk]
            filled = len(part)
            part = np.concatenate([part, np.zeros((chunk - filled, 3), np.float32)])
            batch = {
                "points": part.reshape(1, chunk, 1, 3),
                "time": np.full((1, 1, 1, 1), time, np.float32),
                "frame": np.full((1, 1, 1), frame, np.int64),
            }
            values.append(predict(batch)["sdf"].reshape(-1)[:filled])
        return extract_mesh(np.concatenate(values).reshape(r, r, r))

    def evaluate(self, predict: Any) -> dict[str, float]:
        """Novel-view PSNR (white background), foreground-masked PSNR and SSIM over all held-out views;
        L1 Chamfer of each frame's marching-cubes mesh against the ground-truth points, when the data
        has them (20k mesh samples each), averaged over frames."""
        pred, truth, mask = self._test_views(predict)
        metrics = {
            "psnr": psnr(pred, truth),
            "masked_psnr": psnr(pred[mask], truth[mask]),
            "ssim": mean_ssim(pred, truth),
        }
        if self.video.points is not None and self.options.mesh_resolution > 0:
            rng = np.random.default_rng(0)
            chamfers = []
            for frame in range(self.video.n_frames):
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


def render_novel_views(
    folder: str | Path,
    *,
    backend: str = "torch",
    device: str | None = None,
    frame: int | None = None,
    n_views: int = 24,
    size: int = 96,
    elevation: float = 25.0,
) -> np.ndarray:
    """An orbit of ``n_views`` novel views of a trained NeRF run folder at ``frame`` (None: a time sweep,
    frame ``i`` at view ``i``): ``(n_views, size, size, 3)`` images on white.

    The cameras circle the scene's up axis (world z, as the embedded scene) at radius 3.
    """
    from resfields.backends import get_backend
    from resfields.tasks.common.cameras import orbit_cameras
    from resfields.tasks.common.fit import load_run

    run, ckpt = load_run(folder)
    if run.task != "nerf":
        raise DataError(f"{folder}: render needs a nerf run, this one is {run.task!r}")
    task = NerfTask(run.data, run.model)
    impl = get_backend(backend)
    model = impl.build(ckpt.spec, ckpt.arrays, device)
    forward = task.make_forward(impl)
    predict = lambda batch: impl.infer(model, forward, batch)  # noqa: E731
    n_frames = task.video.n_frames
    if frame is not None and not 0 <= frame < n_frames:
        raise DataError(f"frame {frame} is outside [0, {n_frames})")
    cameras = orbit_cameras(n_views, 3.0, elevation, size, size, fov_y_degrees=36.0, up=(0.0, 0.0, 1.0))
    frames = [frame if frame is not None else round(i * (n_frames - 1) / max(n_views - 1, 1)) for i in range(n_views)]
    return np.stack([task.render(predict, cam, f)["rgb"] for cam, f in zip(cameras, frames, strict=True)])


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
    from dataclasses import replace

    from resfields.backends import get_backend
    from resfields.tasks.common.fit import load_run
    from resfields.tasks.common.meshes import write_mesh

    run, ckpt = load_run(folder)
    if run.task != "nerf":
        raise DataError(f"{folder}: mesh export needs a nerf run, this one is {run.task!r}")
    task = NerfTask(replace(run.data, mesh_resolution=resolution), run.model)
    if not 0 <= frame < task.video.n_frames:
        raise DataError(f"frame {frame} is outside [0, {task.video.n_frames})")
    impl = get_backend(backend)
    model = impl.build(ckpt.spec, ckpt.arrays, device)
    forward = task.make_forward(impl)
    vertices, faces = task.mesh(lambda batch: impl.infer(model, forward, batch), frame)
    if len(faces) == 0:
        raise DataError(f"frame {frame}: the SDF has no zero crossing in the scene box, so there is no mesh")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_mesh(path, vertices, faces)
    return Path(path)
