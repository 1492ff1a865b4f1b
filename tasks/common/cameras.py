"""Pinhole cameras in the OpenCV / NeuS convention, shared by the tasks.

Camera frame: x points right, y points down, the camera looks along +z. Pixel ``(u, v)`` (column, row)
covers ``[u, u + 1) x [v, v + 1)`` in continuous pixel coordinates, so its centre is ``(u + 0.5, v + 0.5)``
and the image spans ``[0, width] x [0, height]``. ``cam_to_world`` maps camera-frame points to world points.
A projection matrix (3, 4) is ``K [R^T | -R^T c]`` (:attr:`Camera.projection`); :func:`decompose_projection`
splits one back into ``K`` and ``cam_to_world``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.values import frozen, is_int

__all__ = [
    "Camera",
    "decompose_projection",
    "generate_rays",
    "intrinsics_from_fov",
    "look_at",
    "orbit_cameras",
    "overview_camera",
    "project",
]

_ORTHONORMAL_TOL = 1e-4


def _vector3(name: str, value: Any) -> np.ndarray:
    """A finite float64 (3,) vector, or ShapeError / DataError naming ``name``."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (3,):
        raise ShapeError(f"{name} must have shape (3,); got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} must be finite; got {arr.tolist()}")
    return arr


def _positive_int(name: str, value: Any) -> int:
    if not is_int(value) or value <= 0:
        raise DataError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera: intrinsics ``K`` (3, 3), pose ``cam_to_world`` (4, 4), image ``height`` x ``width``.

    ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixel units (see the module docstring for the pixel
    convention). ``cam_to_world = [[R, c], [0, 0, 0, 1]]`` with ``R`` a rotation (orthonormal within 1e-4,
    determinant +1) whose columns are the camera's x, y, z axes in world coordinates and ``c`` its centre.
    Arrays are stored as read-only float64 copies. Bad shapes raise ShapeError; non-finite values, a
    non-rotation, a bad last row or non-positive focal lengths / sizes raise DataError.
    """

    intrinsics: np.ndarray
    cam_to_world: np.ndarray
    height: int
    width: int

    def __post_init__(self) -> None:
        K = np.asarray(self.intrinsics, dtype=np.float64)
        pose = np.asarray(self.cam_to_world, dtype=np.float64)
        if K.shape != (3, 3):
            raise ShapeError(f"Camera intrinsics must have shape (3, 3); got {K.shape}")
        if pose.shape != (4, 4):
            raise ShapeError(f"Camera cam_to_world must have shape (4, 4); got {pose.shape}")
        if not np.all(np.isfinite(K)):
            raise DataError("Camera intrinsics contain NaN or inf")
        if not np.all(np.isfinite(pose)):
            raise DataError("Camera cam_to_world contains NaN or inf")
        if not np.array_equal(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0.0:
            raise DataError(f"Camera intrinsics must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]]; got {K.tolist()}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise DataError(f"Camera focal lengths must be positive; got fx={K[0, 0]}, fy={K[1, 1]}")
        if not np.array_equal(pose[3], [0.0, 0.0, 0.0, 1.0]):
            raise DataError(f"Camera cam_to_world last row must be [0, 0, 0, 1]; got {pose[3].tolist()}")
        R = pose[:3, :3]
        error = np.abs(R.T @ R - np.eye(3)).max()
        if error > _ORTHONORMAL_TOL:
            raise DataError(f"Camera cam_to_world rotation is not orthonormal (max |R^T R - I| = {error:.3g} > 1e-4)")
        if np.linalg.det(R) < 0:
            raise DataError("Camera cam_to_world rotation is a reflection (det < 0); camera frames are right-handed")
        object.__setattr__(self, "intrinsics", frozen(K, np.float64))
        object.__setattr__(self, "cam_to_world", frozen(pose, np.float64))
        object.__setattr__(self, "height", _positive_int("Camera height", self.height))
        object.__setattr__(self, "width", _positive_int("Camera width", self.width))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Camera):
            return NotImplemented
        return (
            self.height == other.height
            and self.width == other.width
            and np.array_equal(self.intrinsics, other.intrinsics)
            and np.array_equal(self.cam_to_world, other.cam_to_world)
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays: equal cameras need not hash equal

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) camera-to-world rotation; its columns are the camera axes in world coordinates."""
        return self.cam_to_world[:3, :3]

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates."""
        return self.cam_to_world[:3, 3]

    @property
    def world_to_cam(self) -> np.ndarray:
        """(4, 4) inverse of ``cam_to_world``: ``[[R^T, -R^T c], [0, 0, 0, 1]]``."""
        out = np.eye(4)
        out[:3, :3] = self.rotation.T
        out[:3, 3] = -self.rotation.T @ self.center
        return out

    @property
    def projection(self) -> np.ndarray:
        """(3, 4) projection matrix ``K [R^T | -R^T c]``: world homogeneous point -> homogeneous pixel."""
        return self.intrinsics @ self.world_to_cam[:3]

    def resized(self, height: int, width: int) -> Camera:
        """The same camera rendering a ``height`` x ``width`` image: rows of K scaled by the size ratios.

        Exact for this pixel convention, since the image always spans ``[0, width] x [0, height]``.
        """
        height, width = _positive_int("height", height), _positive_int("width", width)
        K = self.intrinsics.copy()
        K[0] *= width / self.width
        K[1] *= height / self.height
        K[2] = (0.0, 0.0, 1.0)
        return Camera(K, self.cam_to_world, height, width)


def look_at(eye: Any, target: Any, up: Any = (0.0, 1.0, 0.0)) -> np.ndarray:
    """(4, 4) OpenCV ``cam_to_world`` for a camera at ``eye`` (3,) looking at ``target`` (3,).

    ``up`` (3,) is the world's up direction: the camera's y axis (image down) is the part of ``-up``
    perpendicular to the viewing direction, so images come out upright. DataError when ``eye == target``
    or ``up`` is parallel to the viewing direction (the roll would be undefined).
    """
    eye, target, up = _vector3("eye", eye), _vector3("target", target), _vector3("up", up)
    forward = target - eye
    distance = np.linalg.norm(forward)
    if distance == 0:
        raise DataError("look_at: eye and target coincide; the viewing direction is undefined")
    z = forward / distance
    up_norm = np.linalg.norm(up)
    if up_norm == 0:
        raise DataError("look_at: up must be a non-zero vector")
    x = np.cross(z, up / up_norm)
    norm_x = np.linalg.norm(x)
    if norm_x < 1e-9:
        raise DataError(f"look_at: up {up.tolist()} is parallel to the viewing direction {z.tolist()}")
    x /= norm_x
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def intrinsics_from_fov(height: int, width: int, fov_y_degrees: float) -> np.ndarray:
    """(3, 3) K with square pixels, vertical field of view ``fov_y_degrees`` and the principal point at
    the image centre ``(width / 2, height / 2)``."""
    height, width = _positive_int("height", height), _positive_int("width", width)
    fov = float(fov_y_degrees)
    if not 0.0 < fov < 180.0:
        raise DataError(f"fov_y_degrees must lie in (0, 180); got {fov_y_degrees!r}")
    focal = 0.5 * height / math.tan(math.radians(fov) / 2.0)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def orbit_cameras(
    n: int,
    radius: float,
    elevation_degrees: float,
    height: int,
    width: int,
    fov_y_degrees: float = 40.0,
    target: Any = (0.0, 0.0, 0.0),
    up: Any = (0.0, 1.0, 0.0),
) -> list[Camera]:
    """``n`` cameras at distance ``radius`` from ``target``, evenly spaced around the ``up`` axis, all
    looking at ``target`` with the given elevation above the plane perpendicular to ``up``.

    Camera i sits at azimuth ``2 pi i / n``, turning right-handedly about ``up``; azimuth 0 is the
    direction of world +z projected onto that plane (world +x if ``up`` is along z).
    """
    n = _positive_int("n", n)
    radius = float(radius)
    if not (math.isfinite(radius) and radius > 0):
        raise DataError(f"radius must be positive and finite; got {radius!r}")
    elevation = float(elevation_degrees)
    if not -90.0 < elevation < 90.0:
        raise DataError(f"elevation_degrees must lie in (-90, 90); got {elevation_degrees!r}")
    target, up = _vector3("target", target), _vector3("up", up)
    up_norm = np.linalg.norm(up)
    if up_norm == 0:
        raise DataError("up must be a non-zero vector")
    up = up / up_norm
    e1 = np.array([0.0, 0.0, 1.0])
    e1 = e1 - (e1 @ up) * up
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.array([1.0, 0.0, 0.0]) - up[0] * up
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    K = intrinsics_from_fov(height, width, fov_y_degrees)
    el = math.radians(elevation)
    cameras = []
    for i in range(n):
        az = 2.0 * math.pi * i / n
        offset = math.cos(el) * (math.cos(az) * e1 + math.sin(az) * e2) + math.sin(el) * up
        cameras.append(Camera(K, look_at(target + radius * offset, target, up), height, width))
    return cameras


def overview_camera(size: int = 192, azimuth_degrees: float = 225.0, elevation_degrees: float = 25.0) -> Camera:
    """A ``size`` x ``size`` three-quarter view of the box [-1, 1]^3 with world z up, from 3.2 units away.

    For shapes normalised into the box (``sequence.normalise_sequence``); the defaults look at the
    embedded bunny (z up, head towards -x) from the front left.
    """
    az, el = math.radians(azimuth_degrees), math.radians(elevation_degrees)
    eye = 3.2 * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return Camera(intrinsics_from_fov(size, size, 40.0), look_at(eye, np.zeros(3), up=(0.0, 0.0, 1.0)), size, size)


def generate_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """One world-space ray per pixel centre: ``origins`` (H, W, 3) (the camera centre) and unit
    ``directions`` (H, W, 3); ``[v, u]`` is the ray through pixel ``(u + 0.5, v + 0.5)``."""
    v, u = np.meshgrid(np.arange(camera.height) + 0.5, np.arange(camera.width) + 0.5, indexing="ij")
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1)
    directions = pixels @ np.linalg.inv(camera.intrinsics).T @ camera.rotation.T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    origins = np.broadcast_to(camera.center, directions.shape).copy()
    return origins, directions


def project(camera: Camera, points: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project world ``points`` (N, 3): ``pixels`` (N, 2) as continuous ``(u, v)`` and ``depth`` (N,),
    the camera-frame z (distance along the viewing axis).

    Points with ``depth <= 0`` (on or behind the camera plane) have no image: their pixels are NaN, so
    callers must mask with ``depth > 0``.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ShapeError(f"points must have shape (N, 3); got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise DataError("points contain NaN or inf")
    cam = (pts - camera.center) @ camera.rotation
    depth = cam[:, 2]
    pixels = np.full((len(pts), 2), np.nan)
    front = depth > 0
    homog = cam[front] @ camera.intrinsics.T
    pixels[front] = homog[:, :2] / homog[:, 2:3]
    return pixels, depth


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
