"""The embedded default scene of the dynamic-NeRF task: a deforming, textured Stanford bunny seen by a few cameras.

Geometry: :func:`resfields.tasks.common.bunny.deforming_bunny` scaled jointly into ``[-0.7, 0.7]^3``
(world z up), well inside the unit sphere, so the scene is written with ``scale_mat`` = identity and
read back with ``bounds = [-1, 1]^3``.

Appearance: the albedo is a photograph wrapped around the REST-POSE bunny, so it is painted on the
material and moves with it: a surface point (found through the hit face and barycentric coordinates)
takes the colour at the spherical coordinates (azimuth about world z, polar angle from +z) of its
rest-pose position about the origin (the object's centre), looked up bilinearly. The photograph is
scikit-image's :func:`skimage.data.chelsea`, Chelsea the cat, shipped inside the scikit-image wheel; its
docstring says "No copyright restrictions. CC0 by the photographer (Stefan van der Walt)" (the wheel's
``skimage/data/README.txt`` names no other terms), so it puts no licence on the scene. Why this image:
tabby fur is a natural coat for an animal and looks right wrapped around one; it has detail at every
scale (stripes, hairs, whiskers, an eye) that a NeRF must really resolve; and it is warm mid-tones
without large black, white or out-of-focus areas (unlike ``coffee``, ``rocket`` or ``astronaut``), so
the coat looks evenly lit and foreground never looks like the black background. A square crop with fur
at its edges is box-downsampled 2x to about one texel per pixel of a 192-pixel image, mirrored side by
side so the wrap in azimuth has no seam, box-filtered along each row by ``1 / sin(polar)`` texels so the
poles stay band-limited too (a smooth cap, not a pinched star), and mapped into albedo ``[0.15, 0.95]``.
Shading is Lambertian from a fixed world light plus ambient: view-independent, so at a given frame a
material point has the same colour in every camera.

Cameras: ``n_train`` cameras 3 units from the origin at azimuths ``45 + 360 k / n_train`` degrees
(about world z; azimuth 0 is +x, the bunny's tail) and elevations spread over 20-35 degrees;
``n_test`` held-out cameras, each strictly between two neighbouring training cameras in azimuth (a
gap gets at most one when ``n_test <= n_train``, spread around the orbit), at elevations spread over
12.5-42.5 degrees, so they test both new azimuths and new heights. With the defaults (4 + 4) the test
cameras sit at azimuths 90, 180, 270 and 0 degrees. Every camera sees the whole object.

Rendering: exact ray-mesh intersection with ``3 x 3`` rays per pixel (a regular sub-pixel grid); rgb is
their mean on a black background, the mask is coverage >= 1/2 (at least 5 of the 9 rays hit) and depth
is the exact z-depth of the centre ray, or of the hit ray nearest the centre where the centre misses a
masked pixel (silhouette only: under half a pixel's footprint off the surface); depth is 0 where the
mask is False. Supersampling plus the prefiltered texture make the ground truth band-limited: no jagged
silhouettes or texture sparkle, which a smooth field could not fit.
Ground truth: 20k surface points per frame, the same material points in every frame.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from resfields.errors import DataError, FrameError
from resfields.tasks.common.bunny import deforming_bunny, load_bunny
from resfields.tasks.common.cameras import Camera, generate_rays, intrinsics_from_fov, look_at
from resfields.tasks.common.geometry import cast_rays, points_from_barycentric, sample_surface
from resfields.tasks.common.sequence import MeshSequence, normalise_sequence
from resfields.tasks.common.values import frozen, is_int
from resfields.tasks.nerf.neus import write_neus
from resfields.tasks.nerf.video import MultiViewVideo

__all__ = ["SCENE_NAME", "bunny_sequence", "default_cache_dir", "embedded_scene", "make_scene", "scene_cameras"]

SCENE_NAME = "bunny-v2"  # bump when the scene's recipe or defaults change, so stale caches are not reused

_EXTENT = 0.7
_CAMERA_DISTANCE = 3.0
_FOV_Y_DEGREES = 36.0
_FIRST_AZIMUTH = 45.0
_TRAIN_ELEVATIONS = (20.0, 35.0)
_TEST_ELEVATIONS = (12.5, 42.5)
_N_POINTS = 20_000
_UP = (0.0, 0.0, 1.0)
_SUPERSAMPLING = 3  # rays per pixel side; odd, so the centre ray is one of them

# Texture: chelsea() is (300, 451, 3). The square crop (rows 15-285, columns 20-290) keeps texels square
# at the equator (the mirrored copy spans 2 pi in azimuth with twice the columns that span pi in polar
# angle); its edges, where the mirror copies meet, are fur, and it holds one eye, which lands on each
# flank. Downsampling: the bunny's mean radius (0.56) covers about 55 pixels per radian in a 192-pixel
# image; 270 rows / 2 over pi radians are 43 texels per radian, about one per pixel.
_TEXTURE_ROWS = slice(15, 285)
_TEXTURE_COLUMNS = slice(20, 290)
_TEXTURE_DOWNSAMPLE = 2
_ALBEDO_RANGE = (0.15, 0.95)  # away from 0, so foreground never looks like the black background
_LIGHT = np.array([0.4, -0.3, 0.85]) / np.linalg.norm([0.4, -0.3, 0.85])
_AMBIENT = 0.6


def _check_count(value: object, name: str, minimum: int) -> int:
    if not is_int(value) or value < minimum:
        raise DataError(f"make_scene: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def bunny_sequence(n_frames: int) -> tuple[MeshSequence, np.ndarray]:
    """The scene's geometry: the deforming bunny of ``n_frames`` frames in ``[-0.7, 0.7]^3`` (z up).

    Returns the shared-topology sequence (vertices (V, 3), faces (F, 3) per frame) and the rest-pose
    vertices (V, 3) under the same normalisation (the undeformed bunny the texture is painted on).
    """
    if not is_int(n_frames) or n_frames < 1:
        raise FrameError(f"bunny_sequence: n_frames must be a positive integer, got {n_frames!r}")
    seq, center, scale = normalise_sequence(deforming_bunny(int(n_frames)), extent=_EXTENT)
    rest, _ = load_bunny()
    return seq, (rest - center) * scale


def _spread(k: int, n: int, span: tuple[float, float]) -> float:
    """Value ``k`` of ``n`` evenly spread over ``span`` (its start when ``n == 1``)."""
    return float(np.interp(k, [0, max(n - 1, 1)], span))


def scene_cameras(n_train: int, n_test: int, size: int) -> list[Camera]:
    """The scene's ``n_train`` training then ``n_test`` test cameras (module docstring), images ``size`` x ``size``."""
    n_train, n_test = _check_count(n_train, "n_train_cameras", 1), _check_count(n_test, "n_test_cameras", 0)
    size = _check_count(size, "size", 1)
    step = 360.0 / n_train
    placements = [(_FIRST_AZIMUTH + k * step, _spread(k, n_train, _TRAIN_ELEVATIONS)) for k in range(n_train)]
    # Test camera j goes into the gap after training camera floor(j n_train / n_test): spread around the
    # orbit; a gap holding m of them splits evenly into m + 1 parts, so azimuths never repeat.
    gaps = [j * n_train // n_test for j in range(n_test)]
    for j, gap in enumerate(gaps):
        fraction = (gaps[:j].count(gap) + 1) / (gaps.count(gap) + 1)
        azimuth = (_FIRST_AZIMUTH + (gap + fraction) * step) % 360.0
        placements.append((azimuth, _spread(j, n_test, _TEST_ELEVATIONS)))
    K = intrinsics_from_fov(size, size, _FOV_Y_DEGREES)
    cameras = []
    for azimuth, elevation in placements:
        az, el = math.radians(azimuth), math.radians(elevation)
        eye = _CAMERA_DISTANCE * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        cameras.append(Camera(K, look_at(eye, (0.0, 0.0, 0.0), _UP), size, size))
    return cameras


@functools.lru_cache(maxsize=1)
def _texture() -> np.ndarray:
    """The albedo map (rows, columns, 3) float64 in ``_ALBEDO_RANGE`` (module docstring), read-only.

    Column 0 is azimuth 0 (+x), columns grow with azimuth; row 0 is the +z pole.
    """
    from skimage import data

    image = data.chelsea()[_TEXTURE_ROWS, _TEXTURE_COLUMNS].astype(np.float64) / 255.0
    k = _TEXTURE_DOWNSAMPLE
    rows, columns = image.shape[0] // k, image.shape[1] // k
    # Box filter: each texel is the mean of a k x k block, the prefilter for ~1 texel per pixel.
    image = image[: rows * k, : columns * k].reshape(rows, k, columns, k, 3).mean(axis=(1, 3))
    # The mirrored copy makes both ends of the azimuth range the same column: no seam at the wrap.
    image = np.concatenate([image, image[:, ::-1]], axis=1)
    # Towards the poles a row's circle shrinks as sin(polar): box-filter row r over about 1 / sin(polar)
    # texels (circularly) so texels stay at least the equator's size there too. Without it the poles
    # show a pinched star of texture squeezed into a few pixels; with it they are a smooth cap.
    columns = image.shape[1]
    for r in range(rows):
        width = 1.0 / math.sin(math.pi * (r + 0.5) / rows)
        half = min(round((width - 1.0) / 2.0), (columns - 1) // 2)
        if half > 0:
            padded = np.concatenate([image[r, -half:], image[r], image[r, :half]])
            sums = np.cumsum(np.concatenate([np.zeros((1, 3)), padded]), axis=0)
            image[r] = (sums[2 * half + 1 :] - sums[:columns]) / (2 * half + 1)
    low, high = _ALBEDO_RANGE
    return frozen(low + (high - low) * image)


def _albedo(rest_points: np.ndarray) -> np.ndarray:
    """(n, 3) colours in ``_ALBEDO_RANGE`` of rest-pose points (n, 3): bilinear texture lookup at their
    spherical coordinates about the origin (module docstring)."""
    texture = _texture()
    rows, columns = texture.shape[:2]
    p = np.asarray(rest_points, dtype=np.float64)
    azimuth = np.arctan2(p[:, 1], p[:, 0])
    polar = np.arctan2(np.hypot(p[:, 0], p[:, 1]), p[:, 2])  # 0 at +z, pi at -z
    # Continuous texel coordinates: texel i covers [i, i + 1) of the range, so its centre is at i + 0.5.
    x = (azimuth / (2.0 * math.pi)) % 1.0 * columns - 0.5
    y = polar / math.pi * rows - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    c0 = x0.astype(np.int64) % columns  # azimuth wraps around
    c1 = (c0 + 1) % columns
    r0 = np.clip(y0.astype(np.int64), 0, rows - 1)  # the poles clamp to the first / last row
    r1 = np.clip(y0.astype(np.int64) + 1, 0, rows - 1)
    top = texture[r0, c0] * (1.0 - fx) + texture[r0, c1] * fx
    bottom = texture[r1, c0] * (1.0 - fx) + texture[r1, c1] * fx
    return top * (1.0 - fy) + bottom * fy


def _render_frame(
    vertices: np.ndarray, faces: np.ndarray, rest: np.ndarray, cameras: list[Camera], supersampling: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rgb (C, H, W, 3), mask (C, H, W) and z-depth (C, H, W) of one frame from every camera.

    Each pixel is rendered with ``supersampling``^2 rays (module docstring); ``supersampling`` is odd.
    """
    s = supersampling
    n_cameras, height, width = len(cameras), cameras[0].height, cameras[0].width
    # The ``s``-times finer image's pixel centres are the sub-pixel grid: fine pixel (a, b) lies in pixel
    # (a // s, b // s) at offsets ((a % s + 0.5) / s, (b % s + 0.5) / s).
    rays = [generate_rays(camera.resized(height * s, width * s)) for camera in cameras]
    origins = np.concatenate([o.reshape(-1, 3) for o, _ in rays])
    directions = np.concatenate([d.reshape(-1, 3) for _, d in rays])
    n_fine = height * s * width * s
    # One call for all cameras of the frame: the intersector's BVH is built once.
    hits = cast_rays(vertices, faces, origins, directions, where="make_scene")
    hit = hits.hit
    rest_points = np.einsum("nk,nkd->nd", hits.barycentric, rest[faces[hits.face_ids]])
    # The winding normals are outward: load_bunny orients the bunny so.
    shading = _AMBIENT + (1.0 - _AMBIENT) * np.clip(hits.normals @ _LIGHT, 0.0, None)
    optical_axes = np.repeat([camera.rotation[:, 2] for camera in cameras], n_fine, axis=0)[hit]
    fine_rgb = np.zeros((hit.size, 3))
    fine_rgb[hit] = _albedo(rest_points) * shading[:, None]
    fine_depth = np.zeros(hit.size)
    fine_depth[hit] = hits.t * np.sum(directions[hit] * optical_axes, axis=1)

    def blocks(fine: np.ndarray) -> np.ndarray:
        """(C, H, W, s * s, ...) sub-rays of each pixel from per-fine-ray values (C * H * s * W * s, ...)."""
        grid = fine.reshape(n_cameras, height, s, width, s, *fine.shape[1:])
        return np.moveaxis(grid, 2, 3).reshape(n_cameras, height, width, s * s, *fine.shape[1:])

    sub_hit, sub_depth = blocks(hit), blocks(fine_depth)
    rgb = blocks(fine_rgb).mean(axis=3)  # black background: misses add 0
    mask = 2 * sub_hit.sum(axis=3) >= s * s
    # Depth of the hit sub-ray nearest the pixel centre (the centre ray itself when it hits).
    offsets = (np.arange(s) - (s - 1) / 2.0) ** 2
    centre_distance = (offsets[:, None] + offsets[None, :]).reshape(-1)
    nearest = np.argmin(np.where(sub_hit, centre_distance, np.inf), axis=3)
    depth = np.take_along_axis(sub_depth, nearest[..., None], axis=3)[..., 0]
    return rgb, mask, np.where(mask, depth, 0.0)


def make_scene(
    folder: str | Path,
    *,
    n_frames: int = 16,
    size: int = 192,
    n_train_cameras: int = 4,
    n_test_cameras: int = 4,
    seed: int = 0,
    supersampling: int = _SUPERSAMPLING,
) -> Path:
    """Render the deforming textured bunny (module docstring) and write it to ``folder`` in the NeuS layout.

    ``n_frames`` frames from ``n_train_cameras + n_test_cameras`` cameras of ``size`` x ``size`` pixels,
    each pixel from ``supersampling`` x ``supersampling`` rays (odd; 1 is one ray per pixel centre);
    ``split.json`` lists the test cameras (ids ``n_train_cameras ..``); ``seed`` picks the ground-truth
    surface samples. ``folder`` must be new or empty. Returns ``folder`` (read it with
    :func:`resfields.tasks.nerf.neus.read_neus`).
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder}: make_scene needs a new or empty folder")
    if not is_int(n_frames) or n_frames < 1:
        raise FrameError(f"make_scene: n_frames must be a positive integer, got {n_frames!r}")
    if not is_int(seed):
        raise DataError(f"make_scene: seed must be an integer, got {seed!r}")
    supersampling = _check_count(supersampling, "supersampling", 1)
    if supersampling % 2 == 0:
        raise DataError(f"make_scene: supersampling must be odd (the centre ray gives depth), got {supersampling}")
    cameras = scene_cameras(n_train_cameras, n_test_cameras, size)
    seq, rest = bunny_sequence(int(n_frames))
    faces = seq.faces[0]
    _, sample_faces, sample_bary = sample_surface(rest, faces, _N_POINTS, np.random.default_rng(seed))
    renders = [_render_frame(v, faces, rest, cameras, supersampling) for v in seq.vertices]
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
