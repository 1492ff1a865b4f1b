"""Media: videos and images read back from disk, curve plots, normal shading, exact mesh renders and flow splats."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.cameras import Camera, intrinsics_from_fov, look_at, project
from resfields.tasks.common.media import (
    plot_curves,
    render_mesh,
    scatter_flow_image,
    shade_normals,
    side_by_side,
    to_uint8,
    write_image,
    write_video,
)

CUBE_VERTICES = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
# Outward winding except the face z = -0.5, wound inward: render_mesh must not care.
CUBE_FACES = np.array(
    [
        [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
        [2, 3, 7], [2, 7, 6], [0, 6, 2], [0, 4, 6], [1, 5, 7], [1, 7, 3],
    ]
)  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _colour_frames(n_frames: int = 4, height: int = 16, width: int = 24) -> np.ndarray:
    """Flat frames of distinct primary-ish colours (exact in a GIF palette)."""
    colours = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    return np.broadcast_to(colours[:n_frames, None, None, :], (n_frames, height, width, 3)).copy()


# ----------------------------------------------------------------------------- conversion and files


def test_to_uint8_clips_rounds_and_passes_uint8_through():
    np.testing.assert_array_equal(to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])), [0, 0, 128, 255, 255])
    raw = np.array([1, 2, 3], dtype=np.uint8)
    assert to_uint8(raw) is raw
    with pytest.raises(DataError, match="NaN"):
        to_uint8(np.array([np.nan]))
    with pytest.raises(DataError, match="dtype"):
        to_uint8(np.array([1, 2], dtype=np.int64))


def test_write_gif_reads_back_with_colours_and_frames(tmp_path):
    frames = _colour_frames()
    path = write_video(tmp_path / "nested" / "clip.gif", frames, fps=5)
    assert path == tmp_path / "nested" / "clip.gif" and path.exists()
    back = iio.imread(path, index=None)
    assert back.shape[:3] == (4, 16, 24)
    np.testing.assert_allclose(back[..., :3].astype(float), frames * 255.0, atol=2.0)
    meta = iio.immeta(path)
    assert meta["loop"] == 0  # loop forever
    assert meta["duration"] == pytest.approx(200, abs=10)  # ms per frame at 5 fps


def test_write_mp4_reads_back_padded_to_even_size(tmp_path):
    frames = np.linspace(0.0, 1.0, 5)[:, None, None, None] * np.ones((5, 15, 21, 3))
    path = write_video(tmp_path / "clip.mp4", frames, fps=10)
    back = iio.imread(path)
    assert back.shape == (5, 16, 22, 3)  # odd sizes grow by one edge row and column for yuv420p
    # Lossy H.264 on flat grey frames: the mean brightness survives closely.
    np.testing.assert_allclose(back.mean(axis=(1, 2, 3)), frames.mean(axis=(1, 2, 3)) * 255.0, atol=4.0)


def test_write_video_grayscale_and_uint8(tmp_path):
    frames = (np.arange(3)[:, None, None] * 100 * np.ones((3, 12, 12))).astype(np.uint8)
    back = iio.imread(write_video(tmp_path / "gray.gif", frames), index=None)
    assert back.shape[0] == 3
    np.testing.assert_allclose(back[..., :3].astype(float), np.repeat(frames[..., None], 3, axis=-1), atol=2.0)


def test_write_video_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.mp4"):
        write_video(tmp_path / "clip.avi", _colour_frames())
    with pytest.raises(ShapeError):
        write_video(tmp_path / "clip.gif", np.zeros((2, 8, 8, 4)))
    with pytest.raises(ShapeError):
        write_video(tmp_path / "clip.gif", np.zeros((0, 8, 8, 3)))
    with pytest.raises(DataError, match="NaN"):
        write_video(tmp_path / "clip.gif", np.full((2, 8, 8, 3), np.nan))


def test_write_image_png_round_trip(tmp_path):
    image = np.random.default_rng(0).random((9, 7, 3))
    path = write_image(tmp_path / "a" / "img.png", image)
    np.testing.assert_array_equal(iio.imread(path), to_uint8(image))
    gray = write_image(tmp_path / "gray.png", np.full((4, 5), 0.5))
    np.testing.assert_array_equal(iio.imread(gray), np.full((4, 5), 128))
    with pytest.raises(ValueError, match="png"):
        write_image(tmp_path / "img.jpg", image)


def test_side_by_side_images_and_videos():
    a, b = np.zeros((4, 3, 3)), np.full((4, 5, 1), 0.5)
    out = side_by_side(a, b, gap=2)
    assert out.shape == (4, 3 + 2 + 5, 3)
    np.testing.assert_array_equal(out[:, 3:5], 1.0)  # white gap
    np.testing.assert_array_equal(out[:, 5:], 0.5)
    videos = side_by_side(np.zeros((2, 4, 3, 3), np.uint8), np.zeros((2, 4, 6, 3), np.uint8), gap=1)
    assert videos.shape == (2, 4, 10, 3) and videos.dtype == np.uint8
    np.testing.assert_array_equal(videos[:, :, 3], 255)
    mixed = side_by_side(np.full((2, 2, 3), 255, np.uint8), np.zeros((2, 2, 3)), gap=0)
    np.testing.assert_array_equal(mixed[:, :2], 1.0)
    with pytest.raises(ShapeError, match="width"):
        side_by_side(np.zeros((4, 3, 3)), np.zeros((5, 3, 3)))


def test_plot_curves_writes_a_png(tmp_path):
    steps = np.arange(1, 51)
    path = plot_curves(
        tmp_path / "plots" / "loss.png",
        {"train": (steps, 1.0 / steps), "val": (steps, 2.0 / steps)},
        ylabel="loss",
        title="toy",
    )
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = iio.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0  # something was drawn
    with pytest.raises(DataError, match="log"):
        plot_curves(tmp_path / "bad.png", {"x": ([0, 1], [1.0, 0.0])}, ylabel="loss")
    with pytest.raises(DataError, match="NaN"):
        plot_curves(tmp_path / "bad.png", {"x": ([0, 1], [1.0, np.nan])}, ylabel="loss", logy=False)
    with pytest.raises(ShapeError, match="'x'"):
        plot_curves(tmp_path / "bad.png", {"x": ([0, 1, 2], [1.0, 2.0])}, ylabel="loss")


# ----------------------------------------------------------------------------- shading and rendering


def test_shade_normals_lambert_by_hand():
    normals = np.array([[[0.0, 0.0, -2.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    mask = np.array([[True, True], [True, False]])
    image = shade_normals(normals, mask, light=(0.0, 0.0, -1.0), ambient=0.2)
    assert image.shape == (2, 2, 3)
    np.testing.assert_allclose(image[0, 0], 1.0)  # facing the light: 0.2 + 0.8 * 1
    np.testing.assert_allclose(image[0, 1], 0.2)  # perpendicular: ambient only
    np.testing.assert_allclose(image[1, 0], 0.2)  # facing away: clamped to ambient
    np.testing.assert_allclose(image[1, 1], 1.0)  # background stays white
    with pytest.raises(DataError, match="zero"):
        shade_normals(np.zeros((1, 1, 3)), np.ones((1, 1), bool))
    with pytest.raises(ShapeError, match="mask"):
        shade_normals(normals, np.ones((3, 2), bool))


def _front_camera(size: int, eye=(0.0, 0.0, -3.0)) -> Camera:
    return Camera(intrinsics_from_fov(size, size, 40.0), look_at(eye, (0.0, 0.0, 0.0)), size, size)


def test_render_cube_depth_mask_and_normals():
    camera = _front_camera(65)
    out = render_mesh(CUBE_VERTICES, CUBE_FACES, camera)
    assert out["rgb"].shape == (65, 65, 3) and out["depth"].shape == (65, 65) and out["normals"].shape == (65, 65, 3)
    # The central ray runs along the optical axis and hits the face z = -0.5 at distance 3 - 0.5 = 2.5.
    assert out["depth"][32, 32] == pytest.approx(2.5, abs=1e-12)
    np.testing.assert_allclose(out["normals"][32, 32], [0.0, 0.0, -1.0], atol=1e-12)
    # Seen head-on, the silhouette is the front face: pixel centres within 0.5 / 2.5 * f of the centre.
    f = camera.intrinsics[0, 0]
    centres = np.arange(65) + 0.5
    inside = np.abs(centres - 32.5) < 0.5 / 2.5 * f
    np.testing.assert_array_equal(out["mask"], inside[:, None] & inside[None, :])
    # The fronto-parallel face has the same z-depth everywhere, although ray lengths grow off-axis.
    np.testing.assert_allclose(out["depth"][out["mask"]], 2.5, atol=1e-12)
    assert np.all(out["depth"][~out["mask"]] == 0) and np.all(out["normals"][~out["mask"]] == 0)
    np.testing.assert_array_equal(out["rgb"][~out["mask"]], 1.0)
    shaded = out["rgb"][out["mask"]]
    assert np.all(shaded < 1.0) and np.allclose(shaded, shaded[0])  # one flat face, one shade


def test_render_cube_from_a_corner_angle():
    # From (2, 1.5, -3) the faces x = 0.5, y = 0.5 and z = -0.5 are visible. Lifting every pixel centre to
    # its z-depth must land on one of them, and the normal there must be that face's outward normal.
    camera = Camera(intrinsics_from_fov(48, 64, 45.0), look_at((2.0, 1.5, -3.0), (0.0, 0.0, 0.0)), 48, 64)
    out = render_mesh(CUBE_VERTICES, CUBE_FACES, camera, background=0.0)
    mask = out["mask"]
    assert 0.05 < mask.mean() < 0.9
    v, u = np.nonzero(mask)
    cam_points = np.linalg.inv(camera.intrinsics) @ np.stack([u + 0.5, v + 0.5, np.ones_like(u, float)])
    world = (camera.rotation @ (cam_points * out["depth"][mask])).T + camera.center
    assert np.all(np.abs(world) <= 0.5 + 1e-9)
    on_face = np.abs(world - [0.5, 0.5, -0.5]) < 1e-9
    assert np.all(on_face.any(axis=1))
    normals = out["normals"][mask]
    for axis, sign in enumerate([1.0, 1.0, -1.0]):
        np.testing.assert_allclose(normals[on_face[:, axis], axis], sign, atol=1e-12)
    assert all(on_face[:, axis].any() for axis in range(3))
    pixels, _ = project(camera, world)
    np.testing.assert_allclose(pixels, np.stack([u + 0.5, v + 0.5], axis=1), atol=1e-9)
    np.testing.assert_array_equal(out["rgb"][~mask], 0.0)


def test_render_empty_mesh_is_all_background():
    out = render_mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), _front_camera(9), background=0.5)
    assert not out["mask"].any()
    np.testing.assert_array_equal(out["rgb"], 0.5)


def test_render_mesh_errors():
    with pytest.raises(DataError, match="face indices"):
        render_mesh(CUBE_VERTICES, CUBE_FACES + 8, _front_camera(9))
    with pytest.raises(ShapeError, match="vertices"):
        render_mesh(CUBE_VERTICES[:, :2], CUBE_FACES, _front_camera(9))


# ----------------------------------------------------------------------------- flow splats


def test_scatter_flow_image_colours_and_occlusion():
    camera = _front_camera(33)  # looks along +z from z = -3
    points = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [100.0, 0.0, 0.0]])
    flow = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    image = scatter_flow_image(points, flow, camera, background=1.0, radius=1)
    assert image.shape == (33, 33, 3)
    # Both visible points project to the centre pixel (16, 16); the nearer one (z = -1, flow +x, the largest
    # flow) wins: 0.5 + 0.5 * (1, 0, 0).
    np.testing.assert_allclose(image[16, 16], [1.0, 0.5, 0.5])
    # radius 1 covers the 4-neighbourhood but not the diagonals.
    np.testing.assert_allclose(image[15, 16], [1.0, 0.5, 0.5])
    np.testing.assert_array_equal(image[15, 15], 1.0)
    assert np.count_nonzero(np.any(image != 1.0, axis=-1)) == 5  # the far-off point is outside the image
    # Swap the depths: now the zero-flow point is in front and shows mid grey.
    image = scatter_flow_image(points[[1, 0, 2]], flow, camera, radius=0)
    np.testing.assert_allclose(image[16, 16], [0.5, 0.5, 0.5])
    assert np.count_nonzero(np.any(image != 1.0, axis=-1)) == 1
    with pytest.raises(ShapeError, match="flow"):
        scatter_flow_image(points, flow[:2], camera)


def test_scatter_flow_image_skips_points_behind_the_camera():
    image = scatter_flow_image([[0.0, 0.0, -10.0]], [[1.0, 0.0, 0.0]], _front_camera(9), radius=2)
    np.testing.assert_array_equal(image, 1.0)
