"""The embedded default scene of the dynamic-NeRF task: a deforming, textured Stanford bunny seen by a few cameras.

Geometry: :func:`resfields.tasks.common.meshes.deforming_bunny` scaled jointly into ``[-0.7, 0.7]^3``
(world z up), well inside the unit sphere, so the scene is written with ``scale_mat`` = identity and
read back with ``bounds = [-1, 1]^3``.

Appearance: the albedo of a surface point is a smooth procedural pattern (three sinusoids of
different directions, one per colour channel) of its REST-POSE position, found through the hit face
and barycentric coordinates, so the pattern is painted on the material and moves with it. It is
multiplied by Lambertian shading from a fixed world light: view-independent, so at a given frame a
material point has the same colour in every camera (up to pixel sampling and 8-bit quantisation).

Cameras: ``n_train`` cameras 3 units from the origin at azimuths ``45 + 360 k / n_train`` degrees
(about world z; azimuth 0 is +x, the bunny's tail) and elevations spread over 20-35 degrees;
``n_test`` held-out cameras at 27.5 degrees elevation, half-way between spread-out pairs of
neighbouring training cameras. Every image is rendered by exact ray-mesh intersection (one ray
per pixel centre); the background is black in rgb and False in the mask; depth is exact z-depth.
Ground truth: 20k surface points per frame, the same material points in every frame.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from resfields.errors import DataError, FrameError
from resfields.tasks.common.cameras import Camera, generate_rays, intrinsics_from_fov, look_at
from resfields.tasks.common.meshes import (
    MeshSequence,
    deforming_bunny,
    load_bunny,
    normalise_sequence,
    points_from_barycentric,
    sample_surface,
)
from resfields.tasks.nerf.data import MultiViewVideo, write_neus

__all__ = ["SCENE_NAME", "bunny_sequence", "default_cache_dir", "embedded_scene", "make_scene", "scene_cameras"]

SCENE_NAME = "bunny-v1"  # bump when the scene's recipe or defaults change, so stale caches are not reused

_EXTENT = 0.7
_CAMERA_DISTANCE = 3.0
_FOV_Y_DEGREES = 36.0
_FIRST_AZIMUTH = 45.0
_TRAIN_ELEVATIONS = (20.0, 35.0)
_TEST_ELEVATION = 27.5
_N_POINTS = 20_000
_UP = (0.0, 0.0, 1.0)

# Albedo pattern: channel k is 0.5 + 0.5 sin(2 pi FREQ (p . DIR_k) + PHASE_k), mapped into [LOW, HIGH]
# so foreground never looks like the black background. About 2 periods across the object.
_PATTERN_DIRECTIONS = np.array([[1.0, 0.35, 0.2], [-0.25, 1.0, 0.45], [0.3, -0.4, 1.0]])
_PATTERN_DIRECTIONS /= np.linalg.norm(_PATTERN_DIRECTIONS, axis=1, keepdims=True)
_PATTERN_FREQUENCY = 1.5
_PATTERN_PHASES = np.array([0.0, 2.1, 4.2])
_ALBEDO_RANGE = (0.15, 0.85)
_LIGHT = np.array([0.4, -0.3, 0.85]) / np.linalg.norm([0.4, -0.3, 0.85])
_AMBIENT = 0.6


def _check_count(value: object, name: str, minimum: int) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        raise DataError(f"make_scene: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def bunny_sequence(n_frames: int) -> tuple[MeshSequence, np.ndarray]:
    """The scene's geometry: the deforming bunny of ``n_frames`` frames in ``[-0.7, 0.7]^3`` (z up).

    Returns the shared-topology sequence (vertices (V, 3), faces (F, 3) per frame) and the rest-pose
    vertices (V, 3) under the same normalisation (the undeformed bunny the colour pattern is painted on).
    """
    if not isinstance(n_frames, int | np.integer) or isinstance(n_frames, bool) or n_frames < 1:
        raise FrameError(f"bunny_sequence: n_frames must be a positive integer, got {n_frames!r}")
    seq, center, scale = normalise_sequence(deforming_bunny(int(n_frames)), extent=_EXTENT)
    rest, _ = load_bunny()
    return seq, (rest - center) * scale


def scene_cameras(n_train: int, n_test: int, size: int) -> list[Camera]:
    """The scene's ``n_train`` training then ``n_test`` test cameras (module docstring), images ``size`` x ``size``."""
    n_train, n_test = _check_count(n_train, "n_train_cameras", 1), _check_count(n_test, "n_test_cameras", 0)
    size = _check_count(size, "size", 1)
    step = 360.0 / n_train
    placements = [
        (_FIRST_AZIMUTH + k * step, float(np.interp(k, [0, max(n_train - 1, 1)], _TRAIN_ELEVATIONS)))
        for k in range(n_train)
    ]
    # Test camera j sits after training camera round(j n_train / n_test): spread around the orbit.
    placements += [
        (_FIRST_AZIMUTH + (round(j * n_train / n_test) + 0.5) * step, _TEST_ELEVATION) for j in range(n_test)
    ]
    K = intrinsics_from_fov(size, size, _FOV_Y_DEGREES)
    cameras = []
    for azimuth, elevation in placements:
        az, el = math.radians(azimuth), math.radians(elevation)
        eye = _CAMERA_DISTANCE * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        cameras.append(Camera(K, look_at(eye, (0.0, 0.0, 0.0), _UP), size, size))
    return cameras


def _albedo(rest_points: np.ndarray) -> np.ndarray:
    """(n, 3) colours in ``_ALBEDO_RANGE`` of rest-pose points (n, 3)."""
    wave = np.sin(2.0 * math.pi * _PATTERN_FREQUENCY * rest_points @ _PATTERN_DIRECTIONS.T + _PATTERN_PHASES)
    low, high = _ALBEDO_RANGE
    return low + (high - low) * (0.5 + 0.5 * wave)


def _render_frame(
    vertices: np.ndarray, faces: np.ndarray, rest: np.ndarray, cameras: list[Camera]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rgb (C, H, W, 3), mask (C, H, W) and z-depth (C, H, W) of one frame from every camera."""
    import point_cloud_utils as pcu

    rays = [generate_rays(camera) for camera in cameras]
    shape = (len(cameras), cameras[0].height, cameras[0].width)
    origins = np.concatenate([o.reshape(-1, 3) for o, _ in rays])
    directions = np.concatenate([d.reshape(-1, 3) for _, d in rays])
    optical_axes = np.repeat([camera.rotation[:, 2] for camera in cameras], shape[1] * shape[2], axis=0)
    # One intersector call per frame for all cameras: building the BVH dominates the cost of small images.
    face_ids, bary, ray_t = pcu.ray_mesh_intersection(vertices, faces.astype(np.int32), origins, directions)
    face_ids = np.asarray(face_ids).astype(np.int64)
    hit = face_ids >= 0  # pcu marks a miss with face id -1
    tri = faces[face_ids[hit]]
    corners = vertices[tri]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    o, d = origins[hit], directions[hit]
    along = np.sum(cross * d, axis=1)
    # The intersector's distances are float32; re-intersecting the hit face's plane in float64 makes the
    # depth maps exact ground truth. Degenerate faces keep the intersector's distance.
    t = np.asarray(ray_t, dtype=np.float64)[hit]
    exact = np.abs(along) > 1e-300
    t[exact] = np.sum(cross[exact] * (corners[exact, 0] - o[exact]), axis=1) / along[exact]
    lengths = np.linalg.norm(cross, axis=1, keepdims=True)
    normals = np.divide(cross, lengths, out=np.zeros_like(cross), where=lengths > 0)  # outward (load_bunny)
    rest_points = np.einsum("nk,nkd->nd", np.asarray(bary, dtype=np.float64)[hit], rest[tri])
    shading = _AMBIENT + (1.0 - _AMBIENT) * np.clip(normals @ _LIGHT, 0.0, None)
    rgb = np.zeros((hit.size, 3))
    rgb[hit] = _albedo(rest_points) * shading[:, None]
    depth = np.zeros(hit.size)
    depth[hit] = t * np.sum(d * optical_axes[hit], axis=1)
    return rgb.reshape(*shape, 3), hit.reshape(shape), depth.reshape(shape)


def make_scene(
    folder: str | Path,
    *,
    n_frames: int = 8,
    size: int = 96,
    n_train_cameras: int = 4,
    n_test_cameras: int = 2,
    seed: int = 0,
) -> Path:
    """Render the deforming textured bunny (module docstring) and write it to ``folder`` in the NeuS layout.

    ``n_frames`` frames from ``n_train_cameras + n_test_cameras`` cameras of ``size`` x ``size`` pixels;
    ``split.json`` lists the test cameras (ids ``n_train_cameras ..``); ``seed`` picks the ground-truth
    surface samples. ``folder`` must be new or empty. Returns ``folder`` (read it with
    :func:`resfields.tasks.nerf.data.read_neus`).
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder}: make_scene needs a new or empty folder")
    if not isinstance(n_frames, int | np.integer) or isinstance(n_frames, bool) or n_frames < 1:
        raise FrameError(f"make_scene: n_frames must be a positive integer, got {n_frames!r}")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise DataError(f"make_scene: seed must be an integer, got {seed!r}")
    cameras = scene_cameras(n_train_cameras, n_test_cameras, size)
    seq, rest = bunny_sequence(int(n_frames))
    faces = seq.faces[0]
    _, sample_faces, sample_bary = sample_surface(rest, faces, _N_POINTS, np.random.default_rng(seed))
    renders = [_render_frame(v, faces, rest, cameras) for v in seq.vertices]
    points = tuple(points_from_barycentric(v, faces, sample_faces, sample_bary) for v in seq.vertices)
    # Camera-major image order, as read_neus returns it: image c * T + f is camera c at frame f.
    rgb, mask, depth = (
        np.stack([r[k] for r in renders], axis=1).reshape(-1, *renders[0][k].shape[1:]) for k in range(3)
    )
    n_cameras, n_frames = len(cameras), int(n_frames)
    camera_ids = np.repeat(np.arange(n_cameras), n_frames)
    video = MultiViewVideo(
        rgb=rgb.astype(np.float32),
        mask=mask,
        depth=depth.astype(np.float32),
        cameras=tuple(cameras[c] for c in camera_ids),
        frame_ids=np.tile(np.arange(n_frames), n_cameras),
        camera_ids=camera_ids,
        n_frames=n_frames,
        split={
            "train": np.flatnonzero(camera_ids < n_train_cameras),
            "test": np.flatnonzero(camera_ids >= n_train_cameras),
        },
        bounds=np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]),
        points=points,
        name="bunny",
    )
    return write_neus(folder, video)


def default_cache_dir() -> Path:
    """Folder holding generated scenes: ``$XDG_CACHE_HOME/resfields/scenes`` (default ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "resfields" / "scenes"


def embedded_scene(cache_dir: str | Path | None = None) -> Path:
    """Path of the default scene (:func:`make_scene` with its defaults), generated on first use.

    The scene lives in ``cache_dir / SCENE_NAME`` (``cache_dir`` defaults to :func:`default_cache_dir`).
    It is rendered into a temporary sibling folder and renamed into place, so a crashed run never
    leaves a half-written scene and concurrent first calls agree on one complete copy.
    """
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    target = root / SCENE_NAME
    if target.is_dir():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{SCENE_NAME}-", dir=root))
    except OSError as exc:
        raise DataError(f"{root}: cannot create the scene cache folder ({exc})") from exc
    try:
        make_scene(staging)
        try:
            staging.rename(target)
        except OSError as exc:
            if not target.is_dir():  # otherwise another process finished first: use its copy
                raise DataError(f"{target}: cannot move the generated scene into place ({exc})") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
