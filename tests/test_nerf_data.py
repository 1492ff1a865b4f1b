"""Dynamic-NeRF data: NeuS and D-NeRF readers, camera conventions, errors, the embedded bunny scene."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from resfields.errors import DataError, FrameError
from resfields.tasks.common.cameras import decompose_projection, project
from resfields.tasks.nerf import scene as ns
from resfields.tasks.nerf.dnerf import read_dnerf
from resfields.tasks.nerf.neus import read_neus, write_neus
from resfields.tasks.nerf.video import MultiViewVideo

# ----------------------------------------------------------------------------- a hand-made NeuS folder

H, W, T = 24, 32, 2
K0 = np.array([[40.0, 0.3, 17.5], [0.0, 42.0, 11.0], [0.0, 0.0, 1.0]])
POSES = [  # (world -> camera rotation R, translation t): x_cam = R x_world + t
    (Rotation.from_euler("xyz", [0.3, -0.5, 0.2]).as_matrix(), np.array([0.2, -0.1, 4.0])),
    (Rotation.from_euler("xyz", [-0.2, 0.9, -0.1]).as_matrix(), np.array([0.1, 0.3, 5.0])),
]
SCALE, OFFSET = 2.0, np.array([0.3, -0.2, 0.5])
WORLD_DEPTH = 4.0


def _scale_mat() -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] *= SCALE
    out[:3, 3] = OFFSET
    return out


def _images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8), rng.random((H, W)) > 0.5


@pytest.fixture
def neus(tmp_path: Path) -> Path:
    """2 cameras x 2 frames; camera 1's world_mat is a 3 x 4 matrix times -2.5 (sign and scale freedom)."""
    folder = tmp_path / "neus"
    arrays = {}
    for c, (R, t) in enumerate(POSES):
        P = K0 @ np.hstack([R, t[:, None]])
        arrays[f"world_mat_{c}"] = np.vstack([P, [0, 0, 0, 1]]) if c == 0 else -2.5 * P
        arrays[f"scale_mat_{c}"] = _scale_mat()
        for f in range(T):
            rgb, mask = _images(10 * c + f)
            for kind, image in (("rgb", rgb), ("mask", mask.astype(np.uint8) * 255)):
                (folder / f"cam{c:02d}" / kind).mkdir(parents=True, exist_ok=True)
                iio.imwrite(folder / f"cam{c:02d}" / kind / f"{f:04d}.png", image)
            (folder / f"cam{c:02d}" / "depth").mkdir(exist_ok=True)
            np.save(folder / f"cam{c:02d}" / "depth" / f"{f:04d}.npy", np.full((H, W), WORLD_DEPTH, np.float32))
    np.savez(folder / "cameras_sphere.npz", **arrays)
    return folder


def test_neus_cameras_are_in_the_normalised_frame(neus: Path) -> None:
    video = read_neus(neus)
    assert video.n_images == 4 and video.n_frames == T and (video.height, video.width) == (H, W)
    assert video.frame_ids.tolist() == [0, 1, 0, 1] and video.camera_ids.tolist() == [0, 0, 1, 1]
    assert video.times.tolist() == [-1.0, 1.0, -1.0, 1.0]
    assert video.images_of("train").tolist() == [0, 1, 2, 3] and video.images_of("test").size == 0
    np.testing.assert_array_equal(video.bounds, [[-1, -1, -1], [1, 1, 1]])
    for c, (R, t) in enumerate(POSES):
        camera = video.cameras[2 * c]
        np.testing.assert_allclose(camera.intrinsics, K0, atol=1e-9)  # also camera 1: positive diagonal
        np.testing.assert_allclose(camera.rotation, R.T, atol=1e-12)
        np.testing.assert_allclose(camera.center, (-R.T @ t - OFFSET) / SCALE, atol=1e-12)
        # A world point in front of the camera: normalise it, project it, compare with K (R x + t).
        x_world = -R.T @ t + R.T @ np.array([0.3, -0.2, 1.0]) * 3.5
        hand = K0 @ (R @ x_world + t)
        pixels, depth = project(camera, ((x_world - OFFSET) / SCALE)[None])
        np.testing.assert_allclose(pixels[0], hand[:2] / hand[2], atol=1e-9)
        np.testing.assert_allclose(depth[0], hand[2] / SCALE, atol=1e-12)
    np.testing.assert_allclose(video.depth, WORLD_DEPTH / SCALE)
    rgb, mask = _images(11)
    np.testing.assert_allclose(video.rgb[3], rgb / 255.0, atol=1e-6)
    np.testing.assert_array_equal(video.mask[3], mask)


def test_decompose_projection_ignores_scale_and_sign() -> None:
    R, t = POSES[0]
    P = K0 @ np.hstack([R, t[:, None]])
    for factor in (1.0, -1.0, 0.01, -7.0):
        K, pose = decompose_projection(factor * P)
        assert np.all(np.diag(K) > 0) and np.linalg.det(pose[:3, :3]) > 0
        np.testing.assert_allclose(K, K0, atol=1e-9)
        np.testing.assert_allclose(pose[:3, :3], R.T, atol=1e-12)
        np.testing.assert_allclose(pose[:3, 3], -R.T @ t, atol=1e-12)
    with pytest.raises(DataError, match="singular"):
        decompose_projection(np.zeros((3, 4)))


def test_neus_scale_and_n_frames(neus: Path) -> None:
    video = read_neus(neus, n_frames=1, scale=0.5)
    assert video.rgb.shape == (2, H // 2, W // 2, 3) and video.frame_ids.tolist() == [0, 0]
    np.testing.assert_allclose(video.cameras[0].intrinsics[:2], K0[:2] / 2, atol=1e-9)
    np.testing.assert_allclose(video.depth, WORLD_DEPTH / SCALE)
    with pytest.raises(FrameError, match="holds 2"):
        read_neus(neus, n_frames=3)


def test_neus_split_json(neus: Path) -> None:
    (neus / "split.json").write_text(json.dumps({"test": [1]}))
    video = read_neus(neus)
    assert video.images_of("train").tolist() == [0, 1] and video.images_of("test").tolist() == [2, 3]


# ----------------------------------------------------------------------------- errors


def _raises_naming(path: Path, call) -> None:
    with pytest.raises(DataError, match=re.escape(str(path))):
        call()


def test_neus_errors_name_the_path(neus: Path) -> None:
    image = neus / "cam01" / "rgb" / "0001.png"
    image.unlink()
    _raises_naming(image, lambda: read_neus(neus))
    image.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _raises_naming(image, lambda: read_neus(neus))
    iio.imwrite(image, np.zeros((H + 1, W, 3), np.uint8))
    _raises_naming(image, lambda: read_neus(neus))
    iio.imwrite(image, np.zeros((H, W, 3), np.uint8))
    read_neus(neus)  # repaired
    split = neus / "split.json"
    split.write_text("{oops")
    _raises_naming(split, lambda: read_neus(neus))
    split.unlink()
    cameras = neus / "cameras_sphere.npz"
    cameras.unlink()
    _raises_naming(cameras, lambda: read_neus(neus))


# ----------------------------------------------------------------------------- D-NeRF

DW, DH = 16, 12
ANGLE_X = 2.0 * math.atan(0.5)  # focal = 0.5 W / tan(angle / 2) = 16
# Blender camera at (0, -4, 0) looking along world +y, world z up: OpenGL axes x right = world x,
# y up = world z, z backward = world -y.
GL_POSE = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, -4.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]


def _seed(split: str, i: int) -> int:
    return 100 * ("train", "val", "test").index(split) + i


def _rgba(seed: int) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 256, (DH, DW, 4), dtype=np.uint8)
    image[:, : DW // 2, 3] = 255
    image[:, DW // 2 :, 3] = 0
    image[0, -2:, 3] = (127, 128)  # straddling the 0.5 threshold
    return image


@pytest.fixture
def dnerf(tmp_path: Path) -> Path:
    """train: r_000 at time 1, r_001 at time 0; test: r_000 at time 1 -> 3 images at 2 times."""
    folder = tmp_path / "dnerf"
    for name, times in (("train", (1.0, 0.0)), ("test", (1.0,))):
        (folder / name).mkdir(parents=True)
        frames = []
        for i, time in enumerate(times):
            iio.imwrite(folder / name / f"r_{i:03d}.png", _rgba(_seed(name, i)))
            frames.append({"file_path": f"./{name}/r_{i:03d}", "transform_matrix": GL_POSE, "time": time})
        meta = {"camera_angle_x": ANGLE_X, "frames": frames}
        (folder / f"transforms_{name}.json").write_text(json.dumps(meta))
    return folder


def test_dnerf_frames_masks_and_cameras(dnerf: Path) -> None:
    video = read_dnerf(dnerf)
    assert video.n_frames == 2 and video.frame_ids.tolist() == [1, 0, 1]
    assert video.camera_ids.tolist() == [0, 1, 2] and video.depth is None and video.points is None
    assert video.images_of("train").tolist() == [0, 1] and video.images_of("test").tolist() == [2]
    np.testing.assert_array_equal(video.bounds, [[-1.5] * 3, [1.5] * 3])
    raw = _rgba(_seed("train", 1))
    np.testing.assert_array_equal(video.mask[1], raw[..., 3] / 255.0 > 0.5)
    assert video.mask[1, 0, -1] and not video.mask[1, 0, -2]
    np.testing.assert_allclose(video.rgb[1], raw[..., :3] / 255.0 * (raw[..., 3:] / 255.0), atol=1e-6)
    camera = video.cameras[0]
    np.testing.assert_allclose(camera.intrinsics, [[16, 0, 8], [0, 16, 6], [0, 0, 1]], atol=1e-12)
    pixels, depth = project(camera, np.array([[0.5, 0.0, 0.25]]))
    assert depth[0] == pytest.approx(4.0)  # in front of the Blender camera: positive OpenCV depth
    np.testing.assert_allclose(pixels[0], [8 + 16 * 0.5 / 4, 6 - 16 * 0.25 / 4], atol=1e-12)  # up is -v

    white = read_dnerf(dnerf, split=("train",), white_background=True, scale=0.5)
    assert white.rgb.shape == (2, DH // 2, DW // 2, 3) and white.n_frames == 2
    np.testing.assert_allclose(white.rgb[:, 2:, -2:], 1.0, atol=1e-4)  # transparent (away from row 0)
    np.testing.assert_allclose(white.cameras[0].intrinsics[:2], [[8, 0, 4], [0, 8, 3]], atol=1e-12)


def test_dnerf_errors_name_the_path(dnerf: Path) -> None:
    image = dnerf / "test" / "r_000.png"
    image.write_bytes(b"corrupt")
    _raises_naming(image, lambda: read_dnerf(dnerf))
    iio.imwrite(image, np.zeros((DH, DW + 2, 4), np.uint8))
    _raises_naming(image, lambda: read_dnerf(dnerf))
    image.unlink()
    _raises_naming(image, lambda: read_dnerf(dnerf))
    meta = dnerf / "transforms_train.json"
    meta.write_text('{"camera_angle_x": 0.5, "frames": [')
    _raises_naming(meta, lambda: read_dnerf(dnerf))
    _raises_naming(dnerf / "transforms_val.json", lambda: read_dnerf(dnerf, split=("val",)))


# ----------------------------------------------------------------------------- the embedded scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> MultiViewVideo:
    folder = tmp_path_factory.mktemp("scene") / "bunny"
    assert ns.make_scene(folder, n_frames=2, size=32, n_train_cameras=2, n_test_cameras=1) == folder
    return read_neus(folder)


def _pixel_points(video: MultiViewVideo, i: int) -> np.ndarray:
    """World points (K, 3) of image i's foreground pixels, back-projected with their depth."""
    camera = video.cameras[i]
    v, u = np.nonzero(video.mask[i])
    pixels = np.stack([u + 0.5, v + 0.5, np.ones(len(u))], axis=1)
    cam = pixels @ np.linalg.inv(camera.intrinsics).T * video.depth[i][v, u][:, None]
    return cam @ camera.rotation.T + camera.center


def test_scene_layout_and_images(scene: MultiViewVideo) -> None:
    assert scene.n_images == 6 and scene.n_frames == 2 and scene.rgb.shape[1:] == (32, 32, 3)
    assert scene.images_of("train").tolist() == [0, 1, 2, 3] and scene.images_of("test").tolist() == [4, 5]
    assert scene.points is not None and [p.shape for p in scene.points] == [(20_000, 3)] * 2
    for i in range(scene.n_images):
        mask = scene.mask[i]
        assert 0.1 < mask.mean() < 0.6
        assert np.all(scene.rgb[i][mask].max(axis=1) > 0)
        # Supersampled pixels: background is black except on the silhouette, where a pixel is under half
        # covered, so it is dimmer than half the brightest albedo (0.95).
        background = scene.rgb[i][~mask]
        assert np.mean(np.all(background == 0, axis=1)) > 0.9 and background.max() < 0.5 * 0.95
        assert np.all((scene.depth[i] > 0) == mask)
    # The test view (frame 0) differs from both training views of the same frame.
    for train in (0, 2):
        assert np.abs(scene.rgb[4] - scene.rgb[train]).mean() > 0.05


def test_scene_depth_lies_on_the_surface(scene: MultiViewVideo) -> None:
    import point_cloud_utils as pcu

    seq, _ = ns.bunny_sequence(2)
    for i in range(scene.n_images):
        v, f = seq.frame(int(scene.frame_ids[i]))
        distance, _, _ = pcu.closest_points_on_mesh(_pixel_points(scene, i), v, f)
        # Exact where the pixel's centre ray hits; a masked pixel whose centre ray misses (silhouette only)
        # takes the nearest hit sub-ray's depth: off the surface by under half a pixel's footprint.
        footprint = scene.depth[i][scene.mask[i]] / scene.cameras[i].intrinsics[0, 0]
        assert np.mean(distance < 1e-3) > 0.95 and np.all(distance < 0.5 * footprint)
    for frame, cloud in enumerate(scene.points):
        distance, _, _ = pcu.closest_points_on_mesh(cloud, *seq.frame(frame))
        assert distance.max() < 1e-5


def test_scene_colour_is_painted_on_the_surface(scene: MultiViewVideo) -> None:
    """A material point visible from a training and the test camera has nearly one colour in both."""
    points = scene.points[0]
    colours, seen = [], np.ones(len(points), dtype=bool)
    for i in (0, 4):  # camera 0 and the test camera, frame 0: 90 degrees apart
        pixels, depth = project(scene.cameras[i], points)
        col, row = np.floor(pixels[:, 0]).astype(int), np.floor(pixels[:, 1]).astype(int)
        # Interior pixels only: a 3x3 foreground neighbourhood and depth agreeing with the map (visible).
        interior = np.ones_like(scene.mask[i])
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                interior &= np.roll(scene.mask[i], (dy, dx), axis=(0, 1))
        col, row = np.clip(col, 0, 31), np.clip(row, 0, 31)
        seen &= interior[row, col] & (np.abs(scene.depth[i][row, col] - depth) < 0.02)
        colours.append(scene.rgb[i][row, col])
    assert seen.sum() > 50
    same = np.abs(colours[0][seen] - colours[1][seen]).mean()
    shuffled = np.abs(colours[0][seen] - np.random.default_rng(0).permutation(colours[1][seen])).mean()
    assert same < 0.06 and same < shuffled / 3


def test_write_neus_round_trip(scene: MultiViewVideo, tmp_path: Path) -> None:
    folder = write_neus(tmp_path / "copy", scene)
    copy = read_neus(folder)
    np.testing.assert_array_equal(copy.rgb, scene.rgb)
    np.testing.assert_array_equal(copy.depth, scene.depth)
    for a, b in zip(copy.cameras, scene.cameras, strict=True):
        np.testing.assert_allclose(a.intrinsics, b.intrinsics, atol=1e-9)
        np.testing.assert_allclose(a.cam_to_world, b.cam_to_world, atol=1e-12)
    with pytest.raises(DataError, match="new or empty"):
        write_neus(folder, scene)


def test_embedded_scene_is_cached_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(folder: Path) -> Path:
        calls.append(folder)
        (folder / "cameras_sphere.npz").write_bytes(b"x")
        return folder

    def crash(folder: Path) -> Path:
        (folder / "half").write_bytes(b"x")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(ns, "make_scene", crash)
    with pytest.raises(RuntimeError):
        ns.embedded_scene(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
    monkeypatch.setattr(ns, "make_scene", fake)
    path = ns.embedded_scene(tmp_path)
    assert path == tmp_path / ns.SCENE_NAME and (path / "cameras_sphere.npz").is_file()
    assert ns.embedded_scene(tmp_path) == path and len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [ns.SCENE_NAME]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ns.default_cache_dir() == tmp_path / "xdg" / "resfields" / "scenes"
