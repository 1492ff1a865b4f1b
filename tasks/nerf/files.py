"""Reading the files of a multi-view video folder, shared by the NeuS and D-NeRF readers.

Every reader here checks what it reads and raises DataError naming the path: PNG images as (H, W, C)
float32 in [0, 1] (C = 1 to 4), depth maps (H, W) float64 ``.npy``, ground-truth point clouds (P, 3)
float64 ``.ply`` and JSON. Also the readers' ``scale`` argument (a downscale factor in (0, 1]) and
the resizing it asks for: antialiased for images and masks, nearest source pixel for depth.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from resfields.errors import DataError

__all__ = [
    "as_grey",
    "as_rgb",
    "check_same_size",
    "downscaled_size",
    "read_depth",
    "read_image",
    "read_json",
    "read_points",
    "resize_depth",
    "resize_image",
]


def downscaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(round(height scale), round(width scale))``, at least 1 pixel each."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_image(path: Path) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] of a PNG (C = 1, 2, 3 or 4); DataError naming the path when missing or bad."""
    import imageio.v3 as iio

    if not path.is_file():
        raise DataError(f"{path}: image not found")
    try:
        raw = np.asarray(iio.imread(path, plugin="pillow"))
    except Exception as exc:  # imageio / Pillow raise many types for damaged files
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    if raw.ndim == 2:
        raw = raw[:, :, None]
    if raw.ndim != 3 or raw.shape[2] not in (1, 2, 3, 4) or 0 in raw.shape:
        raise DataError(f"{path}: image has shape {raw.shape}; expected (H, W) or (H, W, 1-4)")
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / np.float32(255)
    if raw.dtype == np.uint16:
        return raw.astype(np.float32) / np.float32(65535)
    if raw.dtype == np.bool_:
        return raw.astype(np.float32)
    raise DataError(f"{path}: image has dtype {raw.dtype}; expected 8- or 16-bit")


def check_same_size(path: Path, image: np.ndarray, size: tuple[int, int], first: Path) -> None:
    """DataError unless ``image`` (H, W, ...) is ``size`` (H, W), the size of the ``first`` image read."""
    if image.shape[:2] != size:
        raise DataError(
            f"{path}: image is {image.shape[0]} x {image.shape[1]} but {first} is {size[0]} x {size[1]}; "
            "all images must have the same size"
        )


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W, 3): grey repeated, alpha dropped."""
    channels = image.shape[2]
    if channels in (1, 2):
        return np.repeat(image[:, :, :1], 3, axis=2)
    return image[:, :, :3]


def as_grey(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W): mean of the colour channels, alpha ignored."""
    return as_rgb(image).mean(axis=2)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased resize of (H, W) or (H, W, C) float in [0, 1] to ``size`` (h, w); float32."""
    if image.shape[:2] == size:
        return image.astype(np.float32)
    from skimage.transform import resize

    out = resize(image, size + image.shape[2:], order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)  # interpolation may overshoot by rounding error


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) -> ``size``: the depth at the source pixel under each new pixel centre.

    Nearest, not averaged: an average across a silhouette would invent depths on neither surface.
    """
    if depth.shape == size:
        return depth
    rows = np.minimum(((np.arange(size[0]) + 0.5) * depth.shape[0] / size[0]).astype(np.int64), depth.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * depth.shape[1] / size[1]).astype(np.int64), depth.shape[1] - 1)
    return depth[np.ix_(rows, cols)]


def read_depth(path: Path, size: tuple[int, int], first: Path) -> np.ndarray:
    """(H, W) = ``size`` float64 z-depth of a ``.npy`` file, finite and >= 0 (0 = unknown); DataError otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: depth map not found (other cameras of this folder have depth)")
    try:
        depth = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read depth map ({type(exc).__name__}: {exc})") from exc
    if not isinstance(depth, np.ndarray) or depth.shape != size or depth.dtype.kind not in "fiu":
        shape = getattr(depth, "shape", None)
        raise DataError(f"{path}: depth must be a real (H, W) = {size} array like {first}, got {shape}")
    depth = depth.astype(np.float64)
    if not np.isfinite(depth).all() or depth.min() < 0:
        raise DataError(f"{path}: depth must be finite and non-negative (0 = unknown)")
    return depth


def read_points(path: Path) -> np.ndarray:
    """(P, 3) float64 finite vertices of a point-cloud file (``.ply``); DataError naming the path otherwise."""
    import point_cloud_utils as pcu

    if not path.is_file():
        raise DataError(f"{path}: ground-truth point file not found")
    try:
        points = pcu.load_mesh_v(str(path))
    except Exception as exc:
        raise DataError(f"{path}: cannot read points ({type(exc).__name__}: {exc})") from exc
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(points).all():
        raise DataError(f"{path}: points contain NaN or infinite values")
    return points


def read_json(path: Path) -> Any:
    """The parsed JSON of ``path``; DataError naming the path when missing or unparsable."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot parse JSON ({type(exc).__name__}: {exc})") from exc
