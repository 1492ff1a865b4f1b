"""Cameras in the OpenCV convention: projection by hand, ray round trips, look_at orientation, orbits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.cameras import (
    Camera,
    generate_rays,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
    project,
)

K_SIMPLE = np.array([[100.0, 0.0, 32.0], [0.0, 200.0, 24.0], [0.0, 0.0, 1.0]])


def _identity_camera(height: int = 48, width: int = 64) -> Camera:
    return Camera(K_SIMPLE, np.eye(4), height, width)


def test_project_known_point_by_hand():
    # Camera at (1, 2, 3) with identity rotation: the point (1.5, 1, 5) is (0.5, -1, 2) in the camera frame,
    # so u = 100 * 0.5 / 2 + 32 = 57, v = 200 * (-1) / 2 + 24 = -76, depth 2.
    pose = np.eye(4)
    pose[:3, 3] = (1.0, 2.0, 3.0)
    camera = Camera(K_SIMPLE, pose, 48, 64)
    pixels, depth = project(camera, [[1.5, 1.0, 5.0]])
    np.testing.assert_allclose(pixels, [[57.0, -76.0]])
    np.testing.assert_allclose(depth, [2.0])


def test_project_rotated_camera_by_hand():
    # Rotation of 90 degrees about world y: camera x -> world -z, camera z -> world +x. A point at world (4, 0, 0)
    # seen from the origin lies on the optical axis at depth 4; world (4, 0, -1) is 1 to the camera's right.
    pose = np.eye(4)
    pose[:3, :3] = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]
    camera = Camera(K_SIMPLE, pose, 48, 64)
    pixels, depth = project(camera, [[4.0, 0.0, 0.0], [4.0, 0.0, -1.0]])
    np.testing.assert_allclose(pixels, [[32.0, 24.0], [57.0, 24.0]])
    np.testing.assert_allclose(depth, [4.0, 4.0])


def test_project_behind_camera_gives_nan_pixels_and_negative_depth():
    pixels, depth = project(_identity_camera(), [[0.0, 0.0, -2.0], [0.0, 0.0, 0.0]])
    assert np.isnan(pixels).all()
    np.testing.assert_array_equal(depth, [-2.0, 0.0])


def test_projection_matrix_matches_project():
    camera = Camera(K_SIMPLE, look_at((1.0, 2.0, -4.0), (0.2, 0.1, 0.3)), 48, 64)
    points = np.array([[0.1, 0.2, 0.3], [-0.5, 0.4, 0.0]])
    homog = np.concatenate([points, np.ones((2, 1))], axis=1) @ camera.projection.T
    pixels, depth = project(camera, points)
    np.testing.assert_allclose(homog[:, :2] / homog[:, 2:], pixels)
    np.testing.assert_allclose(homog[:, 2], depth)
    np.testing.assert_allclose(camera.world_to_cam @ camera.cam_to_world, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(camera.center, (1.0, 2.0, -4.0))


def test_generate_rays_shapes_and_pixel_centres():
    camera = _identity_camera(height=3, width=5)
    origins, directions = generate_rays(camera)
    assert origins.shape == directions.shape == (3, 5, 3)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0)
    # Pixel (u=0, v=0) has its centre at (0.5, 0.5): camera direction ((0.5 - 32) / 100, (0.5 - 24) / 200, 1).
    expected = np.array([-31.5 / 100.0, -23.5 / 200.0, 1.0])
    np.testing.assert_allclose(directions[0, 0], expected / np.linalg.norm(expected))


@settings(max_examples=40, deadline=None)
@given(
    eye=st.tuples(*[st.floats(-5, 5) for _ in range(3)]),
    fov=st.floats(10, 120),
    u=st.integers(0, 30),
    v=st.integers(0, 20),
    distance=st.floats(0.1, 50),
)
def test_ray_then_project_round_trip(eye, fov, u, v, distance):
    eye = np.array(eye) + np.array([0.0, 0.0, 7.0])  # never at the target
    camera = Camera(intrinsics_from_fov(21, 31, fov), look_at(eye, (0.0, 0.3, 0.0)), 21, 31)
    origins, directions = generate_rays(camera)
    point = origins[v, u] + distance * directions[v, u]
    pixels, depth = project(camera, point[None])
    np.testing.assert_allclose(pixels[0], (u + 0.5, v + 0.5), atol=1e-6)
    # z-depth is the distance times the cosine between the ray and the optical axis.
    np.testing.assert_allclose(depth[0], distance * directions[v, u] @ camera.rotation[:, 2], rtol=1e-9)


def test_look_at_centres_target_and_keeps_world_up_up():
    K = intrinsics_from_fov(48, 64, 50.0)
    for eye in [(0.0, 0.0, 5.0), (3.0, 1.0, -2.0), (-2.0, 4.0, 1.0)]:
        camera = Camera(K, look_at(eye, (0.5, 0.2, -0.1)), 48, 64)
        pixels, depth = project(camera, [[0.5, 0.2, -0.1], [0.5, 0.7, -0.1]])
        np.testing.assert_allclose(pixels[0], (32.0, 24.0), atol=1e-9)
        assert depth[0] > 0
        assert pixels[1, 1] < pixels[0, 1]  # a point above the target is higher in the image (smaller v)


def test_look_at_from_front_has_world_x_to_the_right():
    # From +z looking at the origin with y up, world +x appears on the right (larger u) and camera x is world +x.
    pose = look_at((0.0, 0.0, 5.0), (0.0, 0.0, 0.0))
    np.testing.assert_allclose(pose[:3, :3], [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]], atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(pose[:3, :3]), 1.0)


def test_look_at_with_other_up_axis():
    pose = look_at((5.0, 0.0, 0.0), (0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0))
    camera = Camera(intrinsics_from_fov(32, 32, 40.0), pose, 32, 32)
    pixels, _ = project(camera, [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert pixels[1, 1] < pixels[0, 1]
    np.testing.assert_allclose(pixels[1, 0], pixels[0, 0])


def test_look_at_degenerate_inputs():
    with pytest.raises(DataError, match="parallel"):
        look_at((0.0, 5.0, 0.0), (0.0, 0.0, 0.0))
    with pytest.raises(DataError, match="coincide"):
        look_at((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    with pytest.raises(ShapeError):
        look_at((1.0, 1.0), (0.0, 0.0, 0.0))


def test_intrinsics_from_fov_by_hand():
    # fov 90: tan(45) = 1, so f = H / 2.
    np.testing.assert_allclose(intrinsics_from_fov(40, 60, 90.0), [[20.0, 0.0, 30.0], [0.0, 20.0, 20.0], [0, 0, 1]])
    with pytest.raises(DataError):
        intrinsics_from_fov(40, 60, 180.0)


def test_orbit_cameras_on_sphere_looking_at_target():
    target = np.array([0.3, -0.2, 0.1])
    cameras = orbit_cameras(8, 2.5, 30.0, 24, 32, target=target)
    assert len(cameras) == 8
    centres = np.array([c.center for c in cameras])
    np.testing.assert_allclose(np.linalg.norm(centres - target, axis=1), 2.5)
    # Elevation 30 degrees above the horizontal plane through the target.
    np.testing.assert_allclose(centres[:, 1] - target[1], 2.5 * math.sin(math.radians(30.0)))
    for camera in cameras:
        pixels, depth = project(camera, target[None])
        np.testing.assert_allclose(pixels[0], (16.0, 12.0), atol=1e-9)
        np.testing.assert_allclose(depth[0], 2.5)
    # Evenly spaced: consecutive azimuths differ by 45 degrees.
    horizontal = (centres - target)[:, [0, 2]]
    angles = np.degrees(np.arctan2(horizontal[:, 0], horizontal[:, 1]))
    np.testing.assert_allclose(np.diff(np.unwrap(angles, period=360.0)), 45.0, atol=1e-9)
    np.testing.assert_allclose(centres[0], target + 2.5 * np.array([0.0, 0.5, math.cos(math.radians(30.0))]))


def test_resized_scales_intrinsics_and_keeps_pixels_consistent():
    camera = Camera(intrinsics_from_fov(48, 64, 40.0), look_at((1.0, 1.0, 4.0), (0.0, 0.0, 0.0)), 48, 64)
    half = camera.resized(24, 32)
    assert (half.height, half.width) == (24, 32)
    point = np.array([[0.2, -0.3, 0.1]])
    np.testing.assert_allclose(project(half, point)[0], project(camera, point)[0] / 2.0)
    np.testing.assert_array_equal(half.cam_to_world, camera.cam_to_world)


def test_camera_validation():
    with pytest.raises(ShapeError, match="intrinsics"):
        Camera(np.eye(4), np.eye(4), 8, 8)
    with pytest.raises(ShapeError, match="cam_to_world"):
        Camera(K_SIMPLE, np.eye(3), 8, 8)
    bad = np.eye(4)
    bad[0, 0] = 1.01
    with pytest.raises(DataError, match="orthonormal"):
        Camera(K_SIMPLE, bad, 8, 8)
    mirrored = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(DataError, match="reflection"):
        Camera(K_SIMPLE, mirrored, 8, 8)
    with pytest.raises(DataError, match="NaN"):
        Camera(K_SIMPLE * np.nan, np.eye(4), 8, 8)
    with pytest.raises(DataError, match="height"):
        Camera(K_SIMPLE, np.eye(4), 0, 8)
    # Orthonormal within 1e-4 is accepted.
    nearly = np.eye(4)
    nearly[0, 0] = 1.0 + 2e-5
    Camera(K_SIMPLE, nearly, 8, 8)


def test_camera_is_immutable_and_compares_by_value():
    camera = _identity_camera()
    with pytest.raises(ValueError, match="read-only"):
        camera.intrinsics[0, 0] = 5.0
    assert camera == _identity_camera()
    assert camera != camera.resized(24, 32)


def test_overview_camera_centres_the_box_upright():
    from resfields.tasks.common.cameras import overview_camera

    cam = overview_camera(64)
    (centre, top), depth = project(cam, np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]))
    np.testing.assert_allclose(centre, [32.0, 32.0], atol=1e-9)
    assert top[1] < centre[1] and depth.min() > 0  # world up is image up, in front of the camera
    assert np.linalg.norm(cam.center) == pytest.approx(3.2)
