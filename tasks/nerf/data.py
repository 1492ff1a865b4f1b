"""Multi-view video data for the dynamic-NeRF task: one in-memory representation, two readers, one writer.

:class:`MultiViewVideo` holds ``N`` posed images, each showing one frame of a ``T``-frame sequence from
one camera. Cameras follow :mod:`resfields.tasks.common.cameras` (OpenCV: x right, y down, z forward;
pixel ``(u, v)`` centred at ``(u + 0.5, v + 0.5)``). Frame ``f`` sits at time ``-1 + 2 f / (T - 1)``
(:func:`resfields.spec.frame_to_time`). Depth is z-depth (camera-frame z), 0 where unknown.

NeuS / Owlii layout (this library's choice for multi-view video; read by :func:`read_neus`, written
by :func:`write_neus`)::

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

D-NeRF / Blender layout (read by :func:`read_dnerf`)::

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

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resfields.errors import DataError, FrameError, ShapeError
from resfields.spec import frame_to_time
from resfields.tasks.common.cameras import Camera

__all__ = [
    "DNERF_BOUND",
    "NEUS_CAMERAS",
    "NEUS_SPLIT",
    "MultiViewVideo",
    "decompose_projection",
    "read_dnerf",
    "read_neus",
    "write_neus",
]

NEUS_CAMERAS = "cameras_sphere.npz"
NEUS_SPLIT = "split.json"
DNERF_BOUND = 1.5  # half-size of the default D-NeRF box
DNERF_SPLITS = ("train", "val", "test")

_UNIT_BOUNDS = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
# Right-multiplying an OpenGL camera-to-world by this flips the camera's y and z axes: OpenCV axes.
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
_SIMILARITY_TOL = 1e-6
_FRAME_FILE = re.compile(r"(\d+)\.png")
_WORLD_MAT = re.compile(r"world_mat_(\d+)")


# ----------------------------------------------------------------------------- small checks


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _frozen(arr: np.ndarray, dtype: Any) -> np.ndarray:
    # A frozen dataclass should not hand out arrays that can be edited behind its back.
    out = np.array(arr, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


def _index_array(value: object, name: str, where: str, error: type[Exception]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ShapeError(f"{where}: {name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise error(f"{where}: {name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_scale(path: Path, scale: object) -> float:
    if not _is_real(scale) or not 0.0 < float(scale) <= 1.0:  # also rejects NaN
        raise DataError(f"{path}: scale must be a downscale factor in (0, 1], got {scale!r}")
    return float(scale)


def _scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


# ----------------------------------------------------------------------------- the representation


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
        if not _is_int(self.n_frames) or self.n_frames < 1:
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
        object.__setattr__(self, "rgb", _frozen(rgb, np.float32))
        object.__setattr__(self, "mask", _frozen(mask, np.bool_))
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "cameras", cameras)
        object.__setattr__(self, "n_frames", int(self.n_frames))
        object.__setattr__(self, "frame_ids", _frozen(frame_ids, np.int64))
        object.__setattr__(self, "camera_ids", _frozen(camera_ids, np.int64))
        object.__setattr__(self, "split", self._checked_split(where, n))
        object.__setattr__(self, "bounds", _frozen(bounds, np.float64))
        object.__setattr__(self, "points", self._checked_points(where))

    def _checked_depth(self, where: str, shape: tuple[int, int, int]) -> np.ndarray:
        depth = np.asarray(self.depth)
        if depth.shape != shape:
            raise ShapeError(f"{where}: depth must have shape {shape}, got {depth.shape}")
        if depth.dtype.kind not in "fiu":
            raise DataError(f"{where}: depth must be real numbers, got dtype {depth.dtype}")
        if not np.isfinite(depth).all() or depth.min() < 0:
            raise DataError(f"{where}: depth must be finite and non-negative (0 = unknown)")
        return _frozen(depth, np.float32)

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
            split[key] = _frozen(ids, np.int64)
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
            out.append(_frozen(arr, np.float64))
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


# ----------------------------------------------------------------------------- projection matrices


def decompose_projection(projection: Any) -> tuple[np.ndarray, np.ndarray]:
    """Split a projection matrix (3, 4) or (4, 4) (rows beyond 3 ignored) into ``K`` (3, 3) and ``cam_to_world`` (4, 4).

    ``projection ~ K [R | t]`` up to any non-zero scale, including a negative one. An RQ decomposition
    of the left 3 x 3 block gives an upper-triangular factor and a rotation; signs are fixed so that
    ``K`` has a positive diagonal and the rotation has determinant +1 (flipping the sign of the whole
    matrix when needed, which does not change the projection), then ``K`` is divided by ``K[2, 2]``.
    The camera is OpenCV-style (looks along +z), as in NeuS. DataError for non-finite or singular input.
    """
    from scipy.linalg import rq

    P = np.asarray(projection, dtype=np.float64)
    if P.shape not in ((3, 4), (4, 4)):
        raise ShapeError(f"decompose_projection: projection must have shape (3, 4) or (4, 4), got {P.shape}")
    if not np.isfinite(P).all():
        raise DataError("decompose_projection: projection contains NaN or infinite values")
    P = P[:3]
    M = P[:, :3]
    det = np.linalg.det(M)
    if not abs(det) > 1e-12 * np.linalg.norm(M) ** 3:
        raise DataError("decompose_projection: the left 3 x 3 block is singular; not a pinhole projection")
    if det < 0:
        P = -P  # -P projects every point to the same pixel; this keeps det(R) = +1 below
    upper, ortho = rq(P[:, :3])
    signs = np.sign(np.diag(upper))
    upper = upper * signs  # scales columns: upper @ D
    rotation = signs[:, None] * ortho  # D @ ortho, so upper @ rotation is unchanged (D @ D = I)
    translation = np.linalg.solve(upper, P[:, 3])
    K = np.triu(upper / upper[2, 2])
    K[2] = (0.0, 0.0, 1.0)
    pose = np.eye(4)
    pose[:3, :3] = rotation.T
    pose[:3, 3] = -rotation.T @ translation
    return K, pose


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


# ----------------------------------------------------------------------------- image files


def _read_image(path: Path) -> np.ndarray:
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


def _check_size(path: Path, image: np.ndarray, size: tuple[int, int], first: Path) -> None:
    if image.shape[:2] != size:
        raise DataError(
            f"{path}: image is {image.shape[0]} x {image.shape[1]} but {first} is {size[0]} x {size[1]}; "
            "all images must have the same size"
        )


def _colour(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W, 3): grey repeated, alpha dropped."""
    channels = image.shape[2]
    if channels in (1, 2):
        return np.repeat(image[:, :, :1], 3, axis=2)
    return image[:, :, :3]


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W): mean of the colour channels, alpha ignored."""
    return _colour(image).mean(axis=2)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased resize of (H, W) or (H, W, C) float in [0, 1] to ``size`` (h, w); float32."""
    if image.shape[:2] == size:
        return image.astype(np.float32)
    from skimage.transform import resize

    out = resize(image, size + image.shape[2:], order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)  # interpolation may overshoot by rounding error


def _resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) -> ``size``: the depth at the source pixel under each new pixel centre.

    Nearest, not averaged: an average across a silhouette would invent depths on neither surface.
    """
    if depth.shape == size:
        return depth
    rows = np.minimum(((np.arange(size[0]) + 0.5) * depth.shape[0] / size[0]).astype(np.int64), depth.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * depth.shape[1] / size[1]).astype(np.int64), depth.shape[1] - 1)
    return depth[np.ix_(rows, cols)]


def _read_depth(path: Path, size: tuple[int, int], first: Path) -> np.ndarray:
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


def _read_points(path: Path) -> np.ndarray:
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


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot parse JSON ({type(exc).__name__}: {exc})") from exc


# ----------------------------------------------------------------------------- NeuS reader


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
    raw = _read_json(path)
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
    scale = _check_scale(folder, scale)
    if n_frames is not None and (not _is_int(n_frames) or n_frames < 1):
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
            image = _read_image(rgb_path)
            if first is None:
                first, size = rgb_path, image.shape[:2]
                out_size = _scaled_size(*size, scale)
            _check_size(rgb_path, image, size, first)
            mask_path = cam_dir / "mask" / f"{f:04d}.png"
            mask_image = _read_image(mask_path)
            _check_size(mask_path, mask_image, size, first)
            rgbs.append(_resize(_colour(image), out_size))
            masks.append(_resize(_grey(mask_image), out_size) > 0.5)
            if with_depth:
                depth = _read_depth(cam_dir / "depth" / f"{f:04d}.npy", size, first)
                depths.append(_resize_depth(depth, out_size) / depth_scale)
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
        clouds = [_read_points(folder / "points" / f"{f:04d}.ply") for f in range(total)]
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


# ----------------------------------------------------------------------------- D-NeRF reader


def _dnerf_meta(path: Path) -> tuple[float, float | None, list[dict[str, Any]]]:
    """camera_angle_x, the optional scene_scale and the frame records of one transforms json."""
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object with camera_angle_x and frames")
    angle = meta.get("camera_angle_x")
    if not _is_real(angle) or not 0.0 < angle < math.pi:
        raise DataError(f"{path}: camera_angle_x must be a number in (0, pi) radians, got {angle!r}")
    scene_scale = meta.get("scene_scale")
    if scene_scale is not None and (not _is_real(scene_scale) or not 0.0 < scene_scale < math.inf):
        raise DataError(f"{path}: scene_scale must be a positive number, got {scene_scale!r}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{path}: frames must be a non-empty list")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise DataError(f"{path}: frames[{i}] needs a file_path string")
        time = frame.get("time")
        if not _is_real(time) or not 0.0 <= time <= 1.0:
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
    image = _read_image(path)
    has_alpha = image.shape[2] in (2, 4)
    alpha = image[:, :, -1] if has_alpha else np.ones(image.shape[:2], dtype=np.float32)
    rgb = _colour(image) * alpha[:, :, None]
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
    scale = _check_scale(folder, scale)
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
            out_size = _scaled_size(*size, scale)
            focal = 0.5 * size[1] / math.tan(0.5 * angle)
            K = np.array([[focal, 0.0, size[1] / 2.0], [0.0, focal, size[0] / 2.0], [0.0, 0.0, 1.0]])
        _check_size(image_path, rgb, size, first)
        pose = np.asarray(frame["transform_matrix"], dtype=np.float64) @ _OPENGL_TO_OPENCV
        try:
            camera = Camera(K, pose, *size)
        except (DataError, ShapeError) as exc:
            raise DataError(f"{json_path}: frames[{i}] transform_matrix: {exc}") from exc
        cameras.append(camera.resized(*out_size) if out_size != size else camera)
        rgbs.append(_resize(rgb, out_size))
        masks.append(_resize(alpha, out_size) > 0.5)

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


# ----------------------------------------------------------------------------- NeuS writer


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
