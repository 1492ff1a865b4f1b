"""The NeuS / Owlii folder layout: :func:`read_neus` and :func:`write_neus`, to and from a
:class:`~resfields.tasks.nerf.video.MultiViewVideo`.

The layout (this library's choice for multi-view video)::

    folder/cameras_sphere.npz     world_mat_{c}: (3, 4) or (4, 4) projection K [R | t] of camera c
                                  (world -> homogeneous pixel, any non-zero scale and sign);
                                  scale_mat_{c}: (4, 4) similarity, world = scale_mat @ normalised,
                                  mapping the unit sphere onto the object's region (same for every c)
    folder/cam{c:02d}/rgb/{f:04d}.png     colour of frame f seen by camera c
    folder/cam{c:02d}/mask/{f:04d}.png    foreground mask (grey level > 0.5 = foreground)
    folder/cam{c:02d}/depth/{f:04d}.npy   optional (H, W) float32 z-depth in world units, 0 = unknown
    folder/points/{f:04d}.ply             optional ground-truth surface points of frame f, world units
    folder/split.json                     optional {"train": [camera ids], "test": [camera ids]}

As in NeuS, everything is returned in the NORMALISED frame: each camera is the decomposition of
``world_mat @ scale_mat``, points are mapped by ``scale_mat^-1`` and depths divided by the scale of
``scale_mat``, so the object lies in the unit sphere and ``bounds`` is ``[-1, 1]^3``. Images are
ordered camera-major (all frames of the first camera id, then the next). Without ``split.json``
every camera is for training; a ``split.json`` without "train" trains on the cameras it does not list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from resfields.errors import DataError, FrameError, ShapeError
from resfields.tasks.common.cameras import Camera, decompose_projection
from resfields.tasks.common.values import check_downscale, is_int

from .files import (
    as_grey,
    as_rgb,
    check_same_size,
    downscaled_size,
    read_depth,
    read_image,
    read_json,
    read_points,
    resize_depth,
    resize_image,
)
from .video import MultiViewVideo

__all__ = ["NEUS_CAMERAS", "NEUS_SPLIT", "read_neus", "write_neus"]

NEUS_CAMERAS = "cameras_sphere.npz"
NEUS_SPLIT = "split.json"

_UNIT_BOUNDS = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
_SIMILARITY_TOL = 1e-6
_FRAME_FILE = re.compile(r"(\d+)\.png")
_WORLD_MAT = re.compile(r"world_mat_(\d+)")


# ----------------------------------------------------------------------------- camera file


def _similarity_scale(path: Path, key: str, scale_mat: np.ndarray) -> float:
    """The scale ``s`` of a similarity ``[[s Q, o], [0, 0, 0, 1]]`` (Q a rotation); DataError otherwise."""
    if not np.allclose(scale_mat[3], (0.0, 0.0, 0.0, 1.0), atol=1e-12):
        raise DataError(f"{path}: {key} last row must be [0, 0, 0, 1], got {scale_mat[3].tolist()}")
    linear = scale_mat[:3, :3]
    det = np.linalg.det(linear)
    if not det > 0:
        raise DataError(f"{path}: {key} must be a similarity with positive scale (det = {det:.3g})")
    s = float(np.cbrt(det))
    error = np.abs(linear.T @ linear / s**2 - np.eye(3)).max()
    if error > _SIMILARITY_TOL:
        raise DataError(f"{path}: {key} is not a similarity (uniform scale, rotation and offset)")
    return s


def _read_neus_cameras(path: Path) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """``{camera id: world_mat (3, 4)}`` and the shared ``scale_mat`` (4, 4) of a cameras_sphere.npz."""
    if not path.is_file():
        raise DataError(f"{path}: camera file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except Exception as exc:  # zipfile, pickle and format errors vary with the damage
        raise DataError(f"{path}: cannot read camera file ({type(exc).__name__}: {exc})") from exc
    ids = sorted(int(m.group(1)) for key in arrays if (m := _WORLD_MAT.fullmatch(key)))
    if not ids:
        raise DataError(f"{path}: no world_mat_<camera> arrays in the camera file")
    world_mats: dict[int, np.ndarray] = {}
    scale_mat: np.ndarray | None = None
    for c in ids:
        world, key = arrays[f"world_mat_{c}"], f"scale_mat_{c}"
        if world.shape not in ((3, 4), (4, 4)) or world.dtype.kind not in "fiu" or not np.isfinite(world).all():
            raise DataError(f"{path}: world_mat_{c} must be a finite (3, 4) or (4, 4) matrix, got {world.shape}")
        if key not in arrays:
            raise DataError(f"{path}: {key} is missing (every world_mat_<c> needs a scale_mat_<c>)")
        scale = arrays[key]
        if scale.shape != (4, 4) or scale.dtype.kind not in "fiu" or not np.isfinite(scale).all():
            raise DataError(f"{path}: {key} must be a finite (4, 4) matrix, got {scale.shape}")
        scale = scale.astype(np.float64)
        if scale_mat is None:
            scale_mat = scale
        elif not np.allclose(scale, scale_mat, rtol=1e-9, atol=1e-12):
            raise DataError(f"{path}: {key} differs from scale_mat_{ids[0]}; all cameras must share one normalisation")
        world_mats[c] = world[:3].astype(np.float64)
    assert scale_mat is not None
    return world_mats, scale_mat


# ----------------------------------------------------------------------------- reader


def _count_frames(folder: Path) -> int:
    """1 + the largest ``{f:04d}.png`` index in ``folder``."""
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    ids = [int(m.group(1)) for p in folder.iterdir() if (m := _FRAME_FILE.fullmatch(p.name))]
    if not ids:
        raise DataError(f"{folder}: no frame images named like 0000.png")
    return max(ids) + 1


def _read_neus_split(path: Path, camera_ids: Sequence[int]) -> dict[str, list[int]]:
    """``{split name: camera ids}`` from split.json (default: every camera trains, no test cameras)."""
    if not path.exists():
        return {"train": list(camera_ids), "test": []}
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: split must be a JSON object {{name: [camera ids]}}")
    split: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for name, ids in raw.items():
        if not isinstance(ids, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in ids):
            raise DataError(f"{path}: split {name!r} must be a list of integer camera ids")
        for c in ids:
            if c not in camera_ids:
                raise DataError(f"{path}: split {name!r} names camera {c}, which has no world_mat_{c}")
            if c in owner:
                raise DataError(f"{path}: camera {c} is listed in both {owner[c]!r} and {name!r}")
            owner[c] = name
        split[name] = list(ids)
    split.setdefault("train", [c for c in camera_ids if c not in owner])
    split.setdefault("test", [])
    return split


def read_neus(folder: str | Path, *, n_frames: int | None = None, scale: float = 1.0) -> MultiViewVideo:
    """Read a multi-view video in the NeuS / Owlii layout (module docstring), in the normalised frame.

    Args:
        folder: the scene folder.
        n_frames: read frames ``0 .. n_frames - 1`` (None: all frames of the first camera's rgb folder).
        scale: downscale factor in (0, 1]: images of ``round(H scale) x round(W scale)`` (antialiased
            rgb; masks thresholded after the same resize; depth sampled at the nearest source pixel)
            and ``K`` scaled to match.

    Returns:
        A :class:`MultiViewVideo` with ``N = cameras x n_frames`` images, camera-major,
        ``bounds = [-1, 1]^3``, depth when the first camera has a depth folder, points when
        ``folder/points`` exists, splits from split.json.

    Raises:
        DataError (naming the path): a missing folder, camera file, image, depth map or point file;
            unreadable or corrupt files; images of different sizes; bad camera matrices or split.
        FrameError: ``n_frames`` not a positive integer or more than the folder holds.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: NeuS scene folder not found")
    scale = check_downscale(folder, scale)
    if n_frames is not None and (not is_int(n_frames) or n_frames < 1):
        raise FrameError(f"{folder}: n_frames must be a positive integer or None, got {n_frames!r}")
    cameras_path = folder / NEUS_CAMERAS
    world_mats, scale_mat = _read_neus_cameras(cameras_path)
    ids = sorted(world_mats)
    depth_scale = _similarity_scale(cameras_path, f"scale_mat_{ids[0]}", scale_mat)
    available = _count_frames(folder / f"cam{ids[0]:02d}" / "rgb")
    if n_frames is not None and n_frames > available:
        raise FrameError(f"{folder}: asked for {n_frames} frames but cam{ids[0]:02d}/rgb holds {available}")
    total = available if n_frames is None else int(n_frames)
    with_depth = (folder / f"cam{ids[0]:02d}" / "depth").is_dir()

    rgbs, masks, depths, cameras, frame_ids, camera_ids = [], [], [], [], [], []
    first: Path | None = None
    size = out_size = (0, 0)
    for c in ids:
        cam_dir = folder / f"cam{c:02d}"
        camera: Camera | None = None
        for f in range(total):
            rgb_path = cam_dir / "rgb" / f"{f:04d}.png"
            image = read_image(rgb_path)
            if first is None:
                first, size = rgb_path, image.shape[:2]
                out_size = downscaled_size(*size, scale)
            check_same_size(rgb_path, image, size, first)
            mask_path = cam_dir / "mask" / f"{f:04d}.png"
            mask_image = read_image(mask_path)
            check_same_size(mask_path, mask_image, size, first)
            rgbs.append(resize_image(as_rgb(image), out_size))
            masks.append(resize_image(as_grey(mask_image), out_size) > 0.5)
            if with_depth:
                depth = read_depth(cam_dir / "depth" / f"{f:04d}.npy", size, first)
                depths.append(resize_depth(depth, out_size) / depth_scale)
            if camera is None:
                camera = _neus_camera(cameras_path, c, world_mats[c] @ scale_mat, size, out_size)
            cameras.append(camera)
            frame_ids.append(f)
            camera_ids.append(c)

    split_cameras = _read_neus_split(folder / NEUS_SPLIT, ids)
    camera_array = np.asarray(camera_ids, dtype=np.int64)
    split = {name: np.flatnonzero(np.isin(camera_array, cams)) for name, cams in split_cameras.items()}
    points = None
    if (folder / "points").is_dir():
        to_normalised = np.linalg.inv(scale_mat)
        clouds = [read_points(folder / "points" / f"{f:04d}.ply") for f in range(total)]
        points = tuple(p @ to_normalised[:3, :3].T + to_normalised[:3, 3] for p in clouds)
    return MultiViewVideo(
        rgb=np.stack(rgbs),
        mask=np.stack(masks),
        depth=np.stack(depths).astype(np.float32) if with_depth else None,
        cameras=tuple(cameras),
        frame_ids=np.asarray(frame_ids, dtype=np.int64),
        camera_ids=camera_array,
        n_frames=total,
        split=split,
        bounds=_UNIT_BOUNDS,
        points=points,
        name=folder.name,
    )


def _neus_camera(
    path: Path, c: int, projection: np.ndarray, size: tuple[int, int], out_size: tuple[int, int]
) -> Camera:
    try:
        K, pose = decompose_projection(projection)
        camera = Camera(K, pose, *size)
    except (DataError, ShapeError) as exc:
        raise DataError(f"{path}: camera {c} (world_mat_{c} @ scale_mat_{c}): {exc}") from exc
    return camera.resized(*out_size) if out_size != size else camera


# ----------------------------------------------------------------------------- writer


def _camera_plan(video: MultiViewVideo) -> dict[int, np.ndarray]:
    """``{camera id: (T,) image indices ordered by frame}``; DataError unless every camera sees every frame once."""
    plan = {}
    for c in np.unique(video.camera_ids):
        images = np.flatnonzero(video.camera_ids == c)
        images = images[np.argsort(video.frame_ids[images], kind="stable")]
        if not np.array_equal(video.frame_ids[images], np.arange(video.n_frames)):
            raise DataError(
                f"write_neus: camera {c} shows frames {video.frame_ids[images].tolist()}; the NeuS layout needs "
                f"every camera to show each of the {video.n_frames} frames exactly once"
            )
        if any(video.cameras[i] != video.cameras[images[0]] for i in images[1:]):
            raise DataError(
                f"write_neus: camera {c} moves or changes intrinsics between frames; NeuS cameras are fixed"
            )
        plan[int(c)] = images
    return plan


def _split_cameras(video: MultiViewVideo, plan: Mapping[int, np.ndarray]) -> dict[str, list[int]]:
    out = {}
    for name, images in video.split.items():
        chosen = set(images.tolist())
        cams = []
        for c, own in plan.items():
            inside = [int(i) in chosen for i in own]
            if any(inside) and not all(inside):
                raise DataError(f"write_neus: split {name!r} holds some but not all images of camera {c}")
            if all(inside):
                cams.append(c)
        out[name] = cams
    return out


def write_neus(folder: str | Path, video: MultiViewVideo) -> Path:
    """Write ``video`` in the NeuS / Owlii layout (module docstring) so that :func:`read_neus` loads it.

    The video's coordinates are the stored world frame; ``scale_mat`` is the similarity taking
    ``[-1, 1]^3`` onto the cube around ``video.bounds`` (centre of the box, half its largest side), so
    a video whose bounds are ``[-1, 1]^3`` reads back unchanged (up to 8-bit colour quantisation and
    float32 depth). Every camera must show every frame exactly once from a fixed pose, and every split
    must hold whole cameras. ``folder`` must be new or empty. Returns ``folder``.
    """
    import point_cloud_utils as pcu

    from resfields.tasks.common.media import write_image

    folder = Path(folder)
    if not isinstance(video, MultiViewVideo):
        raise DataError(f"write_neus: video must be a MultiViewVideo, got {type(video).__name__}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder}: write_neus needs a new or empty folder")
    plan = _camera_plan(video)
    split = _split_cameras(video, plan)
    lo, hi = video.bounds
    scale_mat = np.eye(4)
    scale_mat[:3, :3] *= float(np.max(hi - lo)) / 2.0
    scale_mat[:3, 3] = (lo + hi) / 2.0
    arrays = {}
    for c, images in plan.items():
        world_mat = np.eye(4)
        world_mat[:3] = video.cameras[images[0]].projection
        arrays[f"world_mat_{c}"], arrays[f"scale_mat_{c}"] = world_mat, scale_mat
    try:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / NEUS_CAMERAS, **arrays)
        for c, images in plan.items():
            cam_dir = folder / f"cam{c:02d}"
            for f, i in enumerate(images):
                write_image(cam_dir / "rgb" / f"{f:04d}.png", video.rgb[i])
                write_image(cam_dir / "mask" / f"{f:04d}.png", video.mask[i].astype(np.uint8) * np.uint8(255))
                if video.depth is not None:
                    (cam_dir / "depth").mkdir(exist_ok=True)
                    np.save(cam_dir / "depth" / f"{f:04d}.npy", video.depth[i].astype(np.float32))
        if video.points is not None:
            (folder / "points").mkdir()
            for f, cloud in enumerate(video.points):
                pcu.save_mesh_v(str(folder / "points" / f"{f:04d}.ply"), np.ascontiguousarray(cloud, np.float32))
        (folder / NEUS_SPLIT).write_text(json.dumps(split, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{folder}: cannot write the NeuS scene ({exc})") from exc
    return folder
