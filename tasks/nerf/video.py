"""The dynamic-NeRF task's in-memory data: :class:`MultiViewVideo`, posed images of a multi-frame scene.

:class:`MultiViewVideo` holds ``N`` posed images, each showing one frame of a ``T``-frame sequence from
one camera: rgb (N, H, W, 3), mask (N, H, W), optional depth (N, H, W), N cameras, frame_ids (N,),
camera_ids (N,), named splits of image indices, a (2, 3) scene box and optional per-frame points.
Cameras follow :mod:`resfields.tasks.common.cameras` (OpenCV: x right, y down, z forward; pixel
``(u, v)`` centred at ``(u + 0.5, v + 0.5)``). Frame ``f`` sits at time ``-1 + 2 f / (T - 1)``
(:func:`resfields.spec.frame_to_time`). Depth is z-depth (camera-frame z), 0 where unknown.

Read from disk by :func:`resfields.tasks.nerf.neus.read_neus` and
:func:`resfields.tasks.nerf.dnerf.read_dnerf`; written by :func:`resfields.tasks.nerf.neus.write_neus`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from resfields.errors import DataError, FrameError, ShapeError
from resfields.spec import frame_to_time
from resfields.tasks.common.cameras import Camera
from resfields.tasks.common.values import frozen, is_int

__all__ = ["MultiViewVideo"]


def _index_array(value: object, name: str, where: str, error: type[Exception]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ShapeError(f"{where}: {name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise error(f"{where}: {name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


@dataclass(frozen=True, eq=False)  # eq=False: == on arrays is ambiguous, so compare by identity
class MultiViewVideo:
    """``N`` posed images of a ``T``-frame dynamic scene, all ``H x W``.

    Attributes:
        rgb: (N, H, W, 3) float32 in [0, 1].
        mask: (N, H, W) bool, True = foreground.
        depth: (N, H, W) float32 z-depth (camera-frame z) in world units, 0 where unknown; or None.
        cameras: N cameras (OpenCV convention), each with image size H x W.
        frame_ids: (N,) int64 in [0, n_frames): the frame each image shows.
        camera_ids: (N,) int64 >= 0: the physical camera that took each image.
        n_frames: T.
        split: {name: (K,) int64 image indices}, e.g. "train" and "test"; no duplicates within a split.
        bounds: (2, 3) float64 ``[lo, hi]``, an axis-aligned box containing the scene (world coordinates).
        points: optional ground-truth surface points per frame, T arrays (P_f, 3) float64.
        name: a label.

    Inputs are validated, copied and made read-only. ShapeError for wrong shapes, FrameError for bad
    frame ids / n_frames, DataError for bad values (NaN, out-of-range colours, negative depth, ...).
    """

    rgb: np.ndarray
    mask: np.ndarray
    depth: np.ndarray | None
    cameras: tuple[Camera, ...]
    frame_ids: np.ndarray
    camera_ids: np.ndarray
    n_frames: int
    split: dict[str, np.ndarray]
    bounds: np.ndarray
    points: tuple[np.ndarray, ...] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise DataError(f"MultiViewVideo: name must be a string, got {type(self.name).__name__}")
        where = f"MultiViewVideo {self.name!r}"
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or 0 in rgb.shape:
            raise ShapeError(f"{where}: rgb must have shape (N, H, W, 3) with N, H, W > 0, got {rgb.shape}")
        if rgb.dtype.kind != "f":
            raise DataError(f"{where}: rgb must be float in [0, 1], got dtype {rgb.dtype}")
        if not np.isfinite(rgb).all() or rgb.min() < 0.0 or rgb.max() > 1.0:
            raise DataError(f"{where}: rgb must be finite and lie in [0, 1]")
        n, height, width = rgb.shape[:3]
        mask = np.asarray(self.mask)
        if mask.shape != (n, height, width):
            raise ShapeError(f"{where}: mask must have shape {(n, height, width)}, got {mask.shape}")
        if mask.dtype != np.bool_:
            raise DataError(f"{where}: mask must be bool, got dtype {mask.dtype}")
        depth = None if self.depth is None else self._checked_depth(where, (n, height, width))
        cameras = self._checked_cameras(where, n, height, width)
        if not is_int(self.n_frames) or self.n_frames < 1:
            raise FrameError(f"{where}: n_frames must be a positive integer, got {self.n_frames!r}")
        frame_ids = _index_array(self.frame_ids, "frame_ids", where, FrameError)
        if frame_ids.shape != (n,):
            raise ShapeError(f"{where}: frame_ids must have shape ({n},), got {frame_ids.shape}")
        if n and (frame_ids.min() < 0 or frame_ids.max() >= self.n_frames):
            found = f"[{frame_ids.min()}, {frame_ids.max()}]"
            raise FrameError(f"{where}: frame_ids must lie in [0, {self.n_frames}), found {found}")
        camera_ids = _index_array(self.camera_ids, "camera_ids", where, DataError)
        if camera_ids.shape != (n,):
            raise ShapeError(f"{where}: camera_ids must have shape ({n},), got {camera_ids.shape}")
        if camera_ids.min() < 0:
            raise DataError(f"{where}: camera_ids must be non-negative")
        bounds = np.asarray(self.bounds, dtype=np.float64)
        if bounds.shape != (2, 3):
            raise ShapeError(f"{where}: bounds must have shape (2, 3) ([lo, hi]), got {bounds.shape}")
        if not np.isfinite(bounds).all() or np.any(bounds[0] >= bounds[1]):
            raise DataError(f"{where}: bounds must be finite with lo < hi on every axis, got {bounds.tolist()}")
        object.__setattr__(self, "rgb", frozen(rgb, np.float32))
        object.__setattr__(self, "mask", frozen(mask, np.bool_))
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "cameras", cameras)
        object.__setattr__(self, "n_frames", int(self.n_frames))
        object.__setattr__(self, "frame_ids", frozen(frame_ids, np.int64))
        object.__setattr__(self, "camera_ids", frozen(camera_ids, np.int64))
        object.__setattr__(self, "split", self._checked_split(where, n))
        object.__setattr__(self, "bounds", frozen(bounds, np.float64))
        object.__setattr__(self, "points", self._checked_points(where))

    def _checked_depth(self, where: str, shape: tuple[int, int, int]) -> np.ndarray:
        depth = np.asarray(self.depth)
        if depth.shape != shape:
            raise ShapeError(f"{where}: depth must have shape {shape}, got {depth.shape}")
        if depth.dtype.kind not in "fiu":
            raise DataError(f"{where}: depth must be real numbers, got dtype {depth.dtype}")
        if not np.isfinite(depth).all() or depth.min() < 0:
            raise DataError(f"{where}: depth must be finite and non-negative (0 = unknown)")
        return frozen(depth, np.float32)

    def _checked_cameras(self, where: str, n: int, height: int, width: int) -> tuple[Camera, ...]:
        try:
            cameras = tuple(self.cameras)
        except TypeError as exc:
            raise DataError(f"{where}: cameras must be a sequence of Camera") from exc
        if len(cameras) != n:
            raise ShapeError(f"{where}: {len(cameras)} cameras for {n} images")
        for i, camera in enumerate(cameras):
            if not isinstance(camera, Camera):
                raise DataError(f"{where}: cameras[{i}] is a {type(camera).__name__}, not a Camera")
            if (camera.height, camera.width) != (height, width):
                raise ShapeError(
                    f"{where}: cameras[{i}] renders {camera.height} x {camera.width} but images are {height} x {width}"
                )
        return cameras

    def _checked_split(self, where: str, n: int) -> dict[str, np.ndarray]:
        if not isinstance(self.split, Mapping):
            raise DataError(f"{where}: split must be a mapping of names to image indices")
        split = {}
        for key, value in self.split.items():
            if not isinstance(key, str):
                raise DataError(f"{where}: split names must be strings, got {key!r}")
            ids = _index_array(value, f"split[{key!r}]", where, DataError)
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                raise DataError(f"{where}: split[{key!r}] holds image indices outside [0, {n})")
            if len(np.unique(ids)) != len(ids):
                raise DataError(f"{where}: split[{key!r}] lists an image twice")
            split[key] = frozen(ids, np.int64)
        return split

    def _checked_points(self, where: str) -> tuple[np.ndarray, ...] | None:
        if self.points is None:
            return None
        try:
            clouds = tuple(self.points)
        except TypeError as exc:
            raise DataError(f"{where}: points must be a sequence of (P, 3) arrays, one per frame") from exc
        if len(clouds) != self.n_frames:
            raise ShapeError(f"{where}: {len(clouds)} point clouds for {self.n_frames} frames")
        out = []
        for f, cloud in enumerate(clouds):
            arr = np.asarray(cloud)
            if arr.ndim != 2 or arr.shape[1] != 3:
                raise ShapeError(f"{where}: points of frame {f} must have shape (P, 3), got {arr.shape}")
            if arr.dtype.kind not in "fiu" or not np.isfinite(arr).all():
                raise DataError(f"{where}: points of frame {f} must be finite real numbers")
            out.append(frozen(arr, np.float64))
        return tuple(out)

    @property
    def n_images(self) -> int:
        """Number of images N."""
        return self.rgb.shape[0]

    @property
    def height(self) -> int:
        """Image height H."""
        return self.rgb.shape[1]

    @property
    def width(self) -> int:
        """Image width W."""
        return self.rgb.shape[2]

    @property
    def times(self) -> np.ndarray:
        """(N,) float64 normalised time of each image: ``frame_to_time(frame_ids, n_frames)``."""
        times = frame_to_time(self.frame_ids.astype(np.float64), self.n_frames)
        return np.broadcast_to(np.asarray(times, dtype=np.float64), self.frame_ids.shape).copy()

    def images_of(self, split: str) -> np.ndarray:
        """(K,) int64 image indices of ``split`` (e.g. "train"); DataError naming the known splits otherwise."""
        if split not in self.split:
            raise DataError(f"MultiViewVideo {self.name!r}: unknown split {split!r}; known: {sorted(self.split)}")
        return self.split[split]

    def on_white(self, images: np.ndarray) -> np.ndarray:
        """(K,) image indices -> (K, H, W, 3) their colours over a white background (as evaluation
        renders): the rgb (stored on black) where the mask is set, white elsewhere."""
        mask = self.mask[images][..., None]
        return self.rgb[images] * mask + (1.0 - mask)
