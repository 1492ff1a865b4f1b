"""The embedded dynamic-NeRF scene v2: cameras, the photographic texture, masks / depth, supersampling."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import pytest

from resfields.errors import DataError
from resfields.tasks.common.cameras import generate_rays, project
from resfields.tasks.common.geometry import points_from_barycentric, sample_surface
from resfields.tasks.nerf import scene as ns
from resfields.tasks.nerf.neus import read_neus
from resfields.tasks.nerf.video import MultiViewVideo


def _azimuth(point: np.ndarray) -> float:
    """Azimuth in degrees [0, 360) of a world point about world z."""
    return math.degrees(math.atan2(point[1], point[0])) % 360.0


def _v1_albedo(rest_points: np.ndarray) -> np.ndarray:
    """The smooth procedural pattern of scene v1 (three sinusoids, ~2 periods across the object), (n, 3)."""
    directions = np.array([[1.0, 0.35, 0.2], [-0.25, 1.0, 0.45], [0.3, -0.4, 1.0]])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wave = np.sin(2.0 * math.pi * 1.5 * rest_points @ directions.T + np.array([0.0, 2.1, 4.2]))
    return 0.15 + 0.7 * (0.5 + 0.5 * wave)


def _interior(mask: np.ndarray) -> np.ndarray:
    """(H, W) pixels whose 3 x 3 neighbourhood is all foreground (no silhouette pixel)."""
    out = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out &= np.roll(mask, (dy, dx), axis=(0, 1))
    return out


def _laplacian_energy(video: MultiViewVideo) -> float:
    """Mean |4-neighbour Laplacian| of rgb over interior foreground pixels: energy at the pixel scale."""
    energies = []
    for rgb, mask in zip(video.rgb, video.mask, strict=True):
        neighbours = sum(np.roll(rgb, shift, axis=axis) for shift in (-1, 1) for axis in (0, 1))
        energies.append(np.abs(4.0 * rgb - neighbours)[_interior(mask)].mean())
    return float(np.mean(energies))


def _pixel_points(video: MultiViewVideo, i: int, pixels: np.ndarray) -> np.ndarray:
    """World points (K, 3) of image i's pixels (K, 2) as (row, column), back-projected with their depth."""
    camera = video.cameras[i]
    v, u = pixels[:, 0], pixels[:, 1]
    homog = np.stack([u + 0.5, v + 0.5, np.ones(len(u))], axis=1)
    cam = homog @ np.linalg.inv(camera.intrinsics).T * video.depth[i][v, u][:, None]
    return cam @ camera.rotation.T + camera.center


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> MultiViewVideo:
    """The default cameras (4 train + 4 test) at 48 px, 2 frames (the first and last pose)."""
    return read_neus(ns.make_scene(tmp_path_factory.mktemp("scene") / "small", n_frames=2, size=48))


# ----------------------------------------------------------------------------- cameras


def test_default_cameras_surround_and_see_the_object() -> None:
    defaults = {k: p.default for k, p in inspect.signature(ns.make_scene).parameters.items()}
    assert (defaults["n_frames"], defaults["size"]) == (16, 192)
    n_train, n_test, size = defaults["n_train_cameras"], defaults["n_test_cameras"], defaults["size"]
    assert (n_train, n_test) == (4, 4) and ns.SCENE_NAME == "bunny-v2"
    cameras = ns.scene_cameras(n_train, n_test, size)
    assert len(cameras) == 8 and all((c.height, c.width) == (192, 192) for c in cameras)
    for camera in cameras:  # looks at the origin: it projects to the image centre, in front
        pixel, depth = project(camera, np.zeros((1, 3)))
        np.testing.assert_allclose(pixel[0], [96.0, 96.0], atol=1e-9)
        assert depth[0] > 0
    azimuths = np.array([_azimuth(c.center) for c in cameras])
    gaps = np.abs((azimuths[:, None] - azimuths[None, :] + 180.0) % 360.0 - 180.0)
    assert gaps[~np.eye(8, dtype=bool)].min() > 30.0  # distinct, well spread
    # Every gap between neighbouring training cameras holds exactly one test camera, well inside it.
    train = np.sort(azimuths[:n_train])
    for k in range(n_train):
        start, width = train[k], (train[(k + 1) % n_train] - train[k]) % 360.0
        offsets = (azimuths[n_train:] - start) % 360.0
        inside = (offsets > 0) & (offsets < width)
        assert inside.sum() == 1 and width / 4 < offsets[inside][0] < 3 * width / 4
    elevations = [math.degrees(math.asin(c.center[2] / np.linalg.norm(c.center))) for c in cameras[n_train:]]
    assert len(set(np.round(elevations, 3))) == n_test  # the held-out cameras also test new heights
    # The whole object, in every frame, projects inside every image (vertices span its convex hull).
    seq, _ = ns.bunny_sequence(defaults["n_frames"])
    everything = np.concatenate(seq.vertices)
    for camera in cameras:
        pixels, depth = project(camera, everything)
        assert np.all(depth > 0) and pixels.min() > 0.05 * size and pixels.max() < 0.95 * size


def test_held_out_cameras_never_repeat_an_azimuth() -> None:
    for n_train, n_test in ((1, 1), (2, 1), (2, 5), (3, 7), (4, 2)):
        cameras = ns.scene_cameras(n_train, n_test, 8)
        azimuths = np.round([_azimuth(c.center) for c in cameras], 6)
        assert len(set(azimuths)) == n_train + n_test


def test_ground_truth_points_project_inside_every_image(small: MultiViewVideo) -> None:
    assert small.n_images == 16 and small.images_of("test").tolist() == list(range(8, 16))
    assert small.points is not None and [p.shape for p in small.points] == [(20_000, 3)] * 2
    for i in range(small.n_images):
        pixels, depth = project(small.cameras[i], small.points[int(small.frame_ids[i])])
        assert np.all(depth > 0) and pixels.min() > 0 and pixels.max() < 48


# ----------------------------------------------------------------------------- texture


def test_albedo_has_pixel_scale_detail() -> None:
    """A step of ~1 pixel (0.01 units at 192 px) changes the albedo far more than v1's smooth pattern."""
    seq, rest = ns.bunny_sequence(1)
    points, _, _ = sample_surface(rest, seq.faces[0], 20_000, np.random.default_rng(1))
    step = np.random.default_rng(2).normal(size=points.shape)
    step *= 0.01 / np.linalg.norm(step, axis=1, keepdims=True)
    albedo = ns._albedo(points)
    assert albedo.shape == (20_000, 3) and albedo.min() >= 0.15 and albedo.max() <= 0.95  # never black
    assert albedo.std(axis=0).min() > 0.08  # a real range of colours, not a flat tint
    local = np.abs(ns._albedo(points + step) - albedo).mean() / albedo.std()
    smooth = _v1_albedo(points)
    smooth_local = np.abs(_v1_albedo(points + step) - smooth).mean() / smooth.std()
    assert local > 2.0 * smooth_local


def test_rendered_texture_has_high_frequency_energy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Albedo only (no directional shading): the foreground's pixel-scale energy is well above v1's."""
    monkeypatch.setattr(ns, "_AMBIENT", 1.0)
    options = {"n_frames": 1, "size": 96, "n_train_cameras": 2, "n_test_cameras": 0}
    textured = read_neus(ns.make_scene(tmp_path / "textured", **options))
    monkeypatch.setattr(ns, "_albedo", _v1_albedo)
    smooth = read_neus(ns.make_scene(tmp_path / "smooth", **options))
    assert _laplacian_energy(textured) > 2.0 * _laplacian_energy(smooth)


def test_texture_moves_with_the_material(small: MultiViewVideo) -> None:
    """The pixel under a material point has the hue of the texture at its REST-POSE position in both
    frames, not of the texture at its current position (a texture fixed in space)."""
    seq, rest = ns.bunny_sequence(2)
    faces = seq.faces[0]
    _, face_ids, bary = sample_surface(rest, faces, 20_000, np.random.default_rng(0))  # make_scene's seed
    np.testing.assert_allclose(points_from_barycentric(seq.vertices[1], faces, face_ids, bary), small.points[1])
    rest_albedo = ns._albedo(points_from_barycentric(rest, faces, face_ids, bary))

    def hue(rgb: np.ndarray) -> np.ndarray:  # chromaticity: Lambertian shading is a scalar, so it cancels
        return rgb / rgb.sum(axis=1, keepdims=True)

    errors, fixed_errors = [], []
    for i in range(small.n_images):
        frame = int(small.frame_ids[i])
        pixels, depth = project(small.cameras[i], small.points[frame])
        col, row = np.floor(pixels[:, 0]).astype(int), np.floor(pixels[:, 1]).astype(int)
        visible = _interior(small.mask[i])[row, col] & (np.abs(small.depth[i][row, col] - depth) < 0.01)
        colour = hue(small.rgb[i][row[visible], col[visible]].astype(np.float64))
        errors.append(np.abs(colour - hue(rest_albedo[visible])).mean())
        fixed_errors.append(np.abs(colour - hue(ns._albedo(small.points[frame][visible]))).mean())
    errors, fixed_errors = np.array(errors), np.array(fixed_errors)
    assert errors.max() < 0.008  # hue differences from 8-bit quantisation and averaging over a pixel
    # Frame 1 is the last pose, far from rest: there a texture fixed in space would be clearly wrong.
    last = small.frame_ids == 1
    assert np.all(fixed_errors[last] > 1.5 * errors[last])


# ----------------------------------------------------------------------------- masks and depth


def test_depth_is_positive_exactly_on_the_mask_and_lies_on_the_surface(small: MultiViewVideo) -> None:
    import point_cloud_utils as pcu

    seq, _ = ns.bunny_sequence(2)
    for i in range(small.n_images):
        mask, depth = small.mask[i], small.depth[i]
        assert np.array_equal(depth > 0, mask) and 0.1 < mask.mean() < 0.6
        assert np.all(small.rgb[i][mask].min(axis=1) > 0)  # foreground never black
        vertices, faces = seq.frame(int(small.frame_ids[i]))
        interior = np.argwhere(_interior(mask))
        distance, _, _ = pcu.closest_points_on_mesh(_pixel_points(small, i, interior), vertices, faces)
        assert distance.max() < 1e-4  # interior pixels: the exact depth of the centre ray
        # Silhouette pixels may take a nearby sub-ray's depth: under half a pixel's footprint off.
        everywhere = np.argwhere(mask)
        distance, _, _ = pcu.closest_points_on_mesh(_pixel_points(small, i, everywhere), vertices, faces)
        footprint = depth[mask] / small.cameras[i].intrinsics[0, 0]
        assert np.all(distance < 0.5 * footprint)


def test_depth_matches_an_independent_ray_cast(small: MultiViewVideo) -> None:
    import point_cloud_utils as pcu

    seq, _ = ns.bunny_sequence(2)
    rng = np.random.default_rng(3)
    for i in (0, 9, 15):
        camera = small.cameras[i]
        _, directions = generate_rays(camera)
        picks = rng.choice(np.argwhere(small.mask[i]), size=12, replace=False)
        d = directions[picks[:, 0], picks[:, 1]]
        vertices, faces = seq.frame(int(small.frame_ids[i]))
        face_ids, _, t = pcu.ray_mesh_intersection(
            vertices, faces.astype(np.int32), np.broadcast_to(camera.center, d.shape).copy(), d
        )
        centre_hit = np.asarray(face_ids) >= 0
        z = np.asarray(t, dtype=np.float64) * (d @ camera.rotation[:, 2])
        got = small.depth[i][picks[:, 0], picks[:, 1]]
        np.testing.assert_allclose(got[centre_hit], z[centre_hit], atol=1e-4)  # float32 intersector


# ----------------------------------------------------------------------------- supersampling


def test_supersampling_averages_the_subpixel_grid(tmp_path: Path) -> None:
    """A 3 x 3 supersampled image is exactly the 3x finer one-ray-per-pixel image, block-averaged:
    rgb the block mean, mask coverage >= 1/2, and silhouette pixels get intermediate values."""
    options = {"n_frames": 1, "n_train_cameras": 2, "n_test_cameras": 1}
    coarse = read_neus(ns.make_scene(tmp_path / "coarse", size=24, **options))
    fine = read_neus(ns.make_scene(tmp_path / "fine", size=72, supersampling=1, **options))

    def blocks(images: np.ndarray) -> np.ndarray:  # (N, 72, 72, ...) -> (N, 24, 24, 9, ...)
        grid = images.reshape(len(images), 24, 3, 24, 3, *images.shape[3:])
        return np.moveaxis(grid, 2, 3).reshape(len(images), 24, 24, 9, *images.shape[3:])

    coverage = blocks(fine.mask).mean(axis=3)
    assert np.array_equal(coarse.mask, coverage >= 0.5)
    np.testing.assert_allclose(coarse.rgb, blocks(fine.rgb).mean(axis=3), atol=1.5 / 255)  # 8-bit images
    centre = blocks(fine.depth)[..., 4]
    hit = blocks(fine.mask)[..., 4] & coarse.mask
    np.testing.assert_allclose(coarse.depth[hit], centre[hit], rtol=1e-6)
    # Antialiased silhouettes: partly covered pixels, some masked and some not, with in-between colours.
    partial = (coverage > 0) & (coverage < 1)
    assert partial.sum() > 100 and np.any(partial & coarse.mask) and np.any(partial & ~coarse.mask)
    edge = coarse.rgb[partial & ~coarse.mask].max(axis=1)
    assert np.all(edge > 0) and np.all(edge < 0.5)
    # One ray per pixel has no such pixels: colour is either black background or fully lit surface.
    assert np.all(fine.rgb[~fine.mask] == 0)


def test_supersampling_must_be_odd(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="odd"):
        ns.make_scene(tmp_path / "even", n_frames=1, size=8, supersampling=2)
    with pytest.raises(DataError, match="supersampling"):
        ns.make_scene(tmp_path / "zero", n_frames=1, size=8, supersampling=0)
