"""Between the browser's camera and the library's :class:`~resfields.tasks.common.cameras.Camera`.

viser reports a camera as an orientation quaternion ``wxyz`` in the OpenCV convention (x right,
y down, looking along +z: the library's convention too), a ``position``, a vertical field of view in
radians and the viewport's aspect ratio. The quaternion algebra is viser's (:mod:`viser.transforms`)
and the intrinsics are the library's (:func:`~resfields.tasks.common.cameras.intrinsics_from_fov`),
so no camera maths is written here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from resfields.tasks.common.cameras import Camera, intrinsics_from_fov

__all__ = ["image_size", "pose_of", "viewport_camera"]


def image_size(aspect: float, max_side: int) -> tuple[int, int]:
    """``(height, width)`` of an image of ``aspect`` (width / height) whose longer side is ``max_side``."""
    if aspect >= 1.0:
        return max(1, round(max_side / aspect)), max_side
    return max_side, max(1, round(max_side * aspect))


def viewport_camera(wxyz: Any, position: Any, fov_y: float, aspect: float, max_side: int) -> Camera:
    """The camera of a browser viewport: ``wxyz`` (4,), ``position`` (3,), vertical ``fov_y`` in radians,
    ``aspect`` = width / height, rendering an image whose longer side is ``max_side`` pixels."""
    from viser.transforms import SO3

    height, width = image_size(aspect, max_side)
    pose = np.eye(4)
    pose[:3, :3] = SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()
    pose[:3, 3] = np.asarray(position, dtype=np.float64)
    return Camera(intrinsics_from_fov(height, width, math.degrees(fov_y)), pose, height, width)


def pose_of(camera: Camera) -> tuple[np.ndarray, np.ndarray, float, float]:
    """A library camera as viser draws one: ``wxyz`` (4,), ``position`` (3,), vertical field of view in
    radians (from ``fy``) and aspect ratio width / height."""
    from viser.transforms import SO3

    fov_y = 2.0 * math.atan(0.5 * camera.height / camera.intrinsics[1, 1])
    return SO3.from_matrix(camera.rotation).wxyz, np.array(camera.center), fov_y, camera.width / camera.height
