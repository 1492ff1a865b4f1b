"""The D-NeRF / Blender folder layout: :func:`read_dnerf` reads it as a
:class:`~resfields.tasks.nerf.video.MultiViewVideo`.

The layout::

    folder/transforms_{train,val,test}.json   {"camera_angle_x": horizontal field of view (radians),
                                               "frames": [{"file_path": "./train/r_000" (".png" added
                                               when there is no suffix), "transform_matrix": 4x4
                                               camera-to-world, OpenGL axes (x right, y up, z backward),
                                               "time": in [0, 1]}, ...]}
    RGBA PNGs: mask = alpha > 0.5, rgb composited on black (or white); an RGB PNG is all foreground.

Conversions: the OpenGL camera becomes an OpenCV one by flipping its y and z axes; the principal point
is the image centre ``(W / 2, H / 2)`` (Blender's; the original NeRF code's rays are half a pixel off);
square pixels. D-NeRF times become frame ids: the distinct time values of all loaded splits, sorted,
are frames ``0 .. T - 1`` and each image shows the frame of its time, so ``T`` = number of distinct
times and the resfields time is uniform in that rank (equal to D-NeRF's time only when its times are
evenly spaced). Every image is its own camera (``camera_ids`` = image index; D-NeRF is monocular).
``bounds`` is ``[-s, s]^3`` for an optional top-level ``"scene_scale": s`` (this library's key; the
same in every json), else ``[-1.5, 1.5]^3``, which holds the D-NeRF synthetic scenes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.cameras import Camera
from resfields.tasks.common.values import check_downscale, is_real

from .files import as_rgb, check_same_size, downscaled_size, read_image, read_json, resize_image
from .video import MultiViewVideo

__all__ = ["DNERF_BOUND", "DNERF_SPLITS", "read_dnerf"]

DNERF_BOUND = 1.5  # half-size of the default D-NeRF box
DNERF_SPLITS = ("train", "val", "test")

# Right-multiplying an OpenGL camera-to-world by this flips the camera's y and z axes: OpenCV axes.
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def _dnerf_meta(path: Path) -> tuple[float, float | None, list[dict[str, Any]]]:
    """camera_angle_x, the optional scene_scale and the frame records of one transforms json."""
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object with camera_angle_x and frames")
    angle = meta.get("camera_angle_x")
    if not is_real(angle) or not 0.0 < angle < math.pi:
        raise DataError(f"{path}: camera_angle_x must be a number in (0, pi) radians, got {angle!r}")
    scene_scale = meta.get("scene_scale")
    if scene_scale is not None and (not is_real(scene_scale) or not 0.0 < scene_scale < math.inf):
        raise DataError(f"{path}: scene_scale must be a positive number, got {scene_scale!r}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{path}: frames must be a non-empty list")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise DataError(f"{path}: frames[{i}] needs a file_path string")
        time = frame.get("time")
        if not is_real(time) or not 0.0 <= time <= 1.0:
            raise DataError(f"{path}: frames[{i}] time must be a number in [0, 1], got {time!r}")
        matrix = frame.get("transform_matrix")
        try:
            matrix = np.asarray(matrix, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: frames[{i}] transform_matrix must be a 4 x 4 matrix of numbers") from exc
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise DataError(f"{path}: frames[{i}] transform_matrix must be a finite 4 x 4 matrix")
    return float(angle), None if scene_scale is None else float(scene_scale), frames


def _dnerf_image(path: Path, white_background: bool) -> tuple[np.ndarray, np.ndarray]:
    """Composited rgb (H, W, 3) and alpha (H, W) of one D-NeRF PNG."""
    image = read_image(path)
    has_alpha = image.shape[2] in (2, 4)
    alpha = image[:, :, -1] if has_alpha else np.ones(image.shape[:2], dtype=np.float32)
    rgb = as_rgb(image) * alpha[:, :, None]
    if white_background:
        rgb = rgb + (1.0 - alpha[:, :, None])
    return rgb, alpha


def read_dnerf(
    folder: str | Path,
    *,
    split: Sequence[str] = ("train", "test"),
    scale: float = 1.0,
    white_background: bool = False,
) -> MultiViewVideo:
    """Read a D-NeRF / Blender scene (module docstring) as a :class:`MultiViewVideo`.

    Args:
        folder: the scene folder holding ``transforms_{name}.json`` for each name in ``split``.
        split: which of "train", "val", "test" to load; images are ordered by split, then as listed.
        scale: downscale factor in (0, 1]: antialiased rgb and alpha, ``K`` scaled to match.
        white_background: composite rgb on white instead of black.

    Returns:
        N = all listed images; frame ids from the sorted distinct times; ``camera_ids`` = image index;
        ``depth`` and ``points`` None; ``split`` maps each loaded name to its image indices.

    Raises:
        DataError (naming the path): a missing or unparsable json, missing fields, a missing, corrupt
            or differently sized image, a bad camera matrix, inconsistent camera_angle_x / scene_scale,
            or an unknown split name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: D-NeRF scene folder not found")
    scale = check_downscale(folder, scale)
    names = (split,) if isinstance(split, str) else tuple(split)
    if not names or len(set(names)) != len(names) or any(name not in DNERF_SPLITS for name in names):
        raise DataError(f"{folder}: split must be distinct names from {DNERF_SPLITS}, got {split!r}")

    angle: float | None = None
    scene_scale: float | None = None
    records: list[tuple[Path, int, dict[str, Any]]] = []
    split_ids: dict[str, np.ndarray] = {}
    for name in names:
        path = folder / f"transforms_{name}.json"
        this_angle, this_scale, frames = _dnerf_meta(path)
        if angle is not None and not math.isclose(this_angle, angle, rel_tol=1e-9):
            raise DataError(f"{path}: camera_angle_x {this_angle} differs from the other splits' {angle}")
        if scene_scale is not None and this_scale is not None and this_scale != scene_scale:
            raise DataError(f"{path}: scene_scale {this_scale} differs from the other splits' {scene_scale}")
        angle, scene_scale = this_angle, scene_scale if this_scale is None else this_scale
        split_ids[name] = np.arange(len(records), len(records) + len(frames))
        records.extend((path, i, frame) for i, frame in enumerate(frames))
    assert angle is not None

    times = np.array([float(frame["time"]) for _, _, frame in records])
    distinct = np.unique(times)
    frame_ids = np.searchsorted(distinct, times).astype(np.int64)

    rgbs, masks, cameras = [], [], []
    first: Path | None = None
    size = out_size = (0, 0)
    K = np.eye(3)
    for json_path, i, frame in records:
        image_path = folder / frame["file_path"]
        if not image_path.suffix:
            image_path = image_path.with_name(image_path.name + ".png")
        rgb, alpha = _dnerf_image(image_path, white_background)
        if first is None:
            first, size = image_path, rgb.shape[:2]
            out_size = downscaled_size(*size, scale)
            focal = 0.5 * size[1] / math.tan(0.5 * angle)
            K = np.array([[focal, 0.0, size[1] / 2.0], [0.0, focal, size[0] / 2.0], [0.0, 0.0, 1.0]])
        check_same_size(image_path, rgb, size, first)
        pose = np.asarray(frame["transform_matrix"], dtype=np.float64) @ _OPENGL_TO_OPENCV
        try:
            camera = Camera(K, pose, *size)
        except (DataError, ShapeError) as exc:
            raise DataError(f"{json_path}: frames[{i}] transform_matrix: {exc}") from exc
        cameras.append(camera.resized(*out_size) if out_size != size else camera)
        rgbs.append(resize_image(rgb, out_size))
        masks.append(resize_image(alpha, out_size) > 0.5)

    bound = DNERF_BOUND if scene_scale is None else scene_scale
    return MultiViewVideo(
        rgb=np.stack(rgbs),
        mask=np.stack(masks),
        depth=None,
        cameras=tuple(cameras),
        frame_ids=frame_ids,
        camera_ids=np.arange(len(records), dtype=np.int64),
        n_frames=len(distinct),
        split=split_ids,
        bounds=np.array([[-bound] * 3, [bound] * 3]),
        points=None,
        name=folder.name,
    )
