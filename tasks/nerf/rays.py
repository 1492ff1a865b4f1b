"""Frame-major ray batches from a :class:`~resfields.tasks.nerf.video.MultiViewVideo` (host side, NumPy).

Every batch holds ``P`` rays of each of the ``F`` frames, half through foreground pixels and half
through background pixels of the frame's training images (balanced, as upstream), with intervals at
the surface that the model being trained finds (:func:`~resfields.tasks.nerf.pipeline.surface_intervals`).
Everything the forward pass needs is in the batch, so a compiled step sees the same shapes every time.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from resfields.errors import DataError
from resfields.spec import frame_to_time
from resfields.tasks.common.cameras import Camera

from .pipeline import Predict, ray_batch, surface_intervals
from .render import ray_box_intersection, rays_from_camera
from .video import MultiViewVideo

__all__ = ["RaySampler", "ray_distance_from_depth"]


def ray_distance_from_depth(camera: Camera, depth: np.ndarray) -> np.ndarray:
    """Camera z-depth (H, W) -> distance along each pixel's unit ray (H*W,), float32; 0 stays 0 (unknown).

    Depth maps store the camera-frame z; the renderer's depth is the distance along the unit ray,
    longer by ``1 / cos`` of the angle between the ray and the optical axis.
    """
    _, directions = rays_from_camera(camera)
    cosine = directions @ camera.rotation[:, 2]  # camera z axis in world coordinates
    return (depth.reshape(-1) / cosine).astype(np.float32)


class RaySampler:
    """Balanced foreground/background ray batches over all frames of the training images; with
    ``depth=True`` the batches also carry each ray's measured distance (RGB-D training)."""

    def __init__(
        self, video: MultiViewVideo, n_samples: int = 16, n_coarse: int = 32, fd_step: float = 1e-3, depth: bool = False
    ) -> None:
        if depth and video.depth is None:
            raise DataError(f"{video.name or 'the scene'}: RGB-D training needs depth maps and this data has none")
        self.video, self.n_samples, self.n_coarse, self.fd_step, self.depth = video, n_samples, n_coarse, fd_step, depth

    @cached_property
    def _ray_depth(self) -> np.ndarray:
        """(N * H * W,) measured ray distances of every pixel (0 = unknown)."""
        v = self.video
        assert v.depth is not None
        return np.concatenate([ray_distance_from_depth(c, d) for c, d in zip(v.cameras, v.depth, strict=True)])

    @cached_property
    def _rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Origins and directions of every pixel of every image: (N, H*W, 3) each."""
        pairs = [rays_from_camera(camera) for camera in self.video.cameras]
        return np.stack([o for o, _ in pairs]), np.stack([d for _, d in pairs])

    @cached_property
    def _pixels(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame: flat (image * H*W + pixel) indices of training foreground and background pixels."""
        v = self.video
        train = v.images_of("train")
        out = []
        for frame in range(v.n_frames):
            images = train[v.frame_ids[train] == frame]
            flat = v.mask[images].reshape(len(images), -1)
            index = images[:, None] * flat.shape[1] + np.arange(flat.shape[1])[None, :]
            out.append((index[flat], index[~flat]))
        return out

    def sample(self, rng: np.random.Generator, rays_per_frame: int, query: Predict) -> dict[str, np.ndarray]:
        """A batch (NumPy) of the pipeline's ray-batch layout (:func:`~resfields.tasks.nerf.pipeline.ray_batch`):
        ``points``/``dirs`` (F, P, S, 3), ``t_starts``/``t_ends`` (F, P, S) at the surface that ``query``
        (the model being trained, no gradients) finds, ``time`` (F, 1, 1, 1), ``frame`` (F, 1, 1),
        ``offsets``, the targets ``rgb`` (F, P, 3) and ``mask`` (F, P, 1); with depth also ``depth`` and
        ``depth_valid`` (F, P, 1)."""
        v, p = self.video, rays_per_frame
        chosen = []
        for fg, bg in self._pixels:
            n_fg = p // 2 if len(bg) else p
            pick_fg = fg[rng.integers(0, len(fg), n_fg)] if len(fg) else bg[rng.integers(0, len(bg), n_fg)]
            pick_bg = bg[rng.integers(0, len(bg), p - n_fg)] if len(bg) else pick_fg[: p - n_fg]
            chosen.append(np.concatenate([pick_fg, pick_bg]))
        flat = np.stack(chosen)  # (F, P) indices into (N * H * W)
        hw = v.height * v.width
        image, pixel = flat // hw, flat % hw
        origins, dirs = self._rays[0][image, pixel], self._rays[1][image, pixel]  # (F, P, 3)
        near, far, _ = ray_box_intersection(origins.reshape(-1, 3), dirs.reshape(-1, 3), v.bounds)
        f = v.n_frames
        frames = np.arange(f)
        times = np.asarray(frame_to_time(frames.astype(np.float64), f))
        near, far = near.reshape(f, p), far.reshape(f, p)
        t_starts, t_ends = surface_intervals(
            query, origins, dirs, near, far, times, frames, n_coarse=self.n_coarse, n_samples=self.n_samples, rng=rng
        )
        batch = ray_batch(origins, dirs, t_starts, t_ends, times, frames, self.fd_step)
        batch["rgb"] = v.rgb.reshape(-1, 3)[flat.ravel()].reshape(f, p, 3)
        batch["mask"] = v.mask.reshape(-1)[flat.ravel()].reshape(f, p, 1).astype(np.float32)
        if self.depth:
            depth = self._ray_depth[flat.ravel()].reshape(f, p, 1)
            batch["depth"], batch["depth_valid"] = depth, (depth > 0).astype(np.float32)
        return batch
