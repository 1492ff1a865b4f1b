"""Pictures the tasks write: images, videos (mp4 / gif), loss curves, shaded mesh renders and scene-flow
scatter images. Float images are in [0, 1]; colour arrays are channel-last."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from resfields.errors import DataError, ShapeError
from resfields.tasks.common.cameras import Camera, generate_rays, project

__all__ = [
    "plot_curves",
    "render_mesh",
    "scatter_flow_image",
    "shade_normals",
    "side_by_side",
    "to_uint8",
    "write_image",
    "write_video",
]

_VIDEO_SUFFIXES = (".mp4", ".gif")
# Toward the light, in the OpenCV camera frame (x right, y down, z forward): upper left, from the viewer's side.
_DEFAULT_LIGHT = (-0.4, -0.6, -1.0)


def to_uint8(images: Any) -> np.ndarray:
    """Any-shape float images in [0, 1] (clipped, then rounded) -> uint8 in [0, 255]; uint8 passes through."""
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"images must be float in [0, 1] or uint8; got dtype {arr.dtype}")
    if np.isnan(arr).any():
        raise DataError("images contain NaN")
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def _rgb_frames(frames: Any) -> np.ndarray:
    """(T, H, W) or (T, H, W, 3) -> uint8 (T, H, W, 3)."""
    arr = to_uint8(frames)
    if arr.ndim == 3:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ShapeError(f"frames must have shape (T, H, W, 3) or (T, H, W); got {arr.shape}")
    if 0 in arr.shape:
        raise ShapeError(f"frames must be non-empty; got shape {arr.shape}")
    return arr


def write_video(path: str | Path, frames: Any, fps: float = 10) -> Path:
    """Write ``frames`` (T, H, W, 3) or (T, H, W), float in [0, 1] or uint8, as an RGB video.

    ``.mp4``: H.264 (libx264, yuv420p); odd heights/widths are padded by one repeated edge row/column
    because yuv420p needs even sizes. ``.gif``: looping forever; colours are quantised to a palette and
    Pillow merges identical consecutive frames (keeping the timing). Parent folders are created.
    Returns the path.
    """
    import imageio.v2 as imageio_v2
    import imageio.v3 as iio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _VIDEO_SUFFIXES:
        raise ValueError(f"write_video: unsupported suffix {path.suffix!r} in {path}; use one of {_VIDEO_SUFFIXES}")
    if not (np.isfinite(fps) and fps > 0):
        raise DataError(f"fps must be positive and finite; got {fps!r}")
    video = _rgb_frames(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        iio.imwrite(path, video, plugin="pillow", extension=".gif", duration=1000.0 / fps, loop=0)
        return path
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    writer = imageio_v2.get_writer(
        path,
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        pixelformat="yuv420p",
        macro_block_size=1,  # we already made the sizes even; imageio would otherwise resize to multiples of 16
        ffmpeg_log_level="error",
    )
    try:
        for frame in video:
            writer.append_data(frame)
    finally:
        writer.close()
    return path


def write_image(path: str | Path, image: Any) -> Path:
    """Write ``image`` (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), float in [0, 1] or uint8, as a PNG.
    Parent folders are created; returns the path."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"write_image writes PNG; the path must end in .png, got {path}")
    arr = to_uint8(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))) or 0 in arr.shape:
        raise ShapeError(f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {arr.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, arr, extension=".png")
    return path


def side_by_side(*images_or_videos: Any, gap: int = 2) -> np.ndarray:
    """Concatenate images (H, W, C) or (H, W), or videos (T, H, W, C), along the width with ``gap`` white
    columns between them.

    All inputs need the same shape except the width; a 1-channel input is repeated to the others'
    channel count. The result is uint8 when every input is uint8, else float in [0, 1].
    """
    if not images_or_videos:
        raise ShapeError("side_by_side needs at least one image or video")
    if isinstance(gap, bool) or not isinstance(gap, int | np.integer) or gap < 0:
        raise DataError(f"gap must be a non-negative integer; got {gap!r}")
    arrays = [np.asarray(x) for x in images_or_videos]
    all_uint8 = all(a.dtype == np.uint8 for a in arrays)
    for a in arrays:
        if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
            raise DataError(f"side_by_side takes float or uint8 arrays; got dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
            raise DataError("side_by_side input contains NaN")
    arrays = [a[..., None] if a.ndim == 2 else a for a in arrays]
    if not all_uint8:
        arrays = [a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64) for a in arrays]
    channels = max(a.shape[-1] for a in arrays)
    arrays = [np.repeat(a, channels, axis=-1) if a.shape[-1] == 1 else a for a in arrays]
    lead = arrays[0].shape[:-2]
    for a in arrays:
        if a.ndim not in (3, 4) or a.shape[:-2] != lead or a.shape[-1] != channels:
            shapes = [tuple(x.shape) for x in arrays]
            raise ShapeError(f"side_by_side inputs must share every dimension but the width; got shapes {shapes}")
    white = 255 if all_uint8 else 1.0
    spacer = np.full((*lead, gap, channels), white, dtype=arrays[0].dtype)
    pieces: list[np.ndarray] = []
    for i, a in enumerate(arrays):
        if i:
            pieces.append(spacer)
        pieces.append(a)
    return np.concatenate(pieces, axis=-2)


def plot_curves(
    path: str | Path,
    curves: Mapping[str, tuple[Any, Any]],
    *,
    ylabel: str,
    title: str | None = None,
    logy: bool = True,
) -> Path:
    """Plot named curves ``{name: (steps (N,), values (N,))}`` against the step into a PNG at ``path``.

    Uses a standalone Figure and Agg canvas (no pyplot global state, safe in threads and headless).
    With ``logy`` every value must be positive. Non-finite values raise DataError naming the curve.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plot_curves writes PNG; the path must end in .png, got {path}")
    if not curves:
        raise DataError("plot_curves needs at least one curve")
    figure = Figure(figsize=(6.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for name, (steps, values) in curves.items():
        x, y = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
            raise ShapeError(f"curve {name!r}: steps {x.shape} and values {y.shape} must be equal non-empty (N,)")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise DataError(f"curve {name!r} contains NaN or inf")
        if logy and np.any(y <= 0):
            raise DataError(f"curve {name!r} has values <= 0, which a log y axis cannot show (pass logy=False)")
        axes.plot(x, y, label=str(name))
    if logy:
        axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    if title is not None:
        axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def shade_normals(normals: Any, mask: Any, light: Any = _DEFAULT_LIGHT, ambient: float = 0.25) -> np.ndarray:
    """Grey Lambertian + ambient shading of a normal map: (H, W, 3) float image in [0, 1].

    ``normals`` (H, W, 3) (normalised here where ``mask`` is True), ``mask`` (H, W) bool, ``light``
    (3,) the direction toward the light in the same frame as the normals (the default suits OpenCV
    camera-frame normals: light from the upper left, on the viewer's side). Shade =
    ``ambient + (1 - ambient) max(0, n . l)``; white where ``mask`` is False.
    """
    n = np.asarray(normals, dtype=np.float64)
    m = np.asarray(mask)
    if n.ndim != 3 or n.shape[-1] != 3:
        raise ShapeError(f"normals must have shape (H, W, 3); got {n.shape}")
    if m.shape != n.shape[:2]:
        raise ShapeError(f"mask must have shape {n.shape[:2]} (the normals' H, W); got {m.shape}")
    if m.dtype != np.bool_:
        raise DataError(f"mask must be a boolean array; got dtype {m.dtype}")
    l = np.asarray(light, dtype=np.float64)  # noqa: E741
    if l.shape != (3,) or not np.all(np.isfinite(l)) or not np.any(l):
        raise DataError(f"light must be a finite non-zero (3,) direction; got {l.tolist()}")
    if not 0.0 <= ambient <= 1.0:
        raise DataError(f"ambient must lie in [0, 1]; got {ambient!r}")
    inside = n[m]
    if not np.all(np.isfinite(inside)):
        raise DataError("normals contain NaN or inf inside the mask")
    lengths = np.linalg.norm(inside, axis=-1, keepdims=True)
    if np.any(lengths == 0):
        raise DataError("normals contain zero vectors inside the mask")
    diffuse = np.clip((inside / lengths) @ (l / np.linalg.norm(l)), 0.0, None)
    image = np.ones(n.shape)
    image[m] = (ambient + (1.0 - ambient) * diffuse)[:, None]
    return image


def _mesh_arrays(vertices: Any, faces: Any) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if f.size == 0:
        f = f.reshape(0, 3).astype(np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ShapeError(f"vertices must have shape (V, 3); got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ShapeError(f"faces must have shape (F, 3); got {f.shape}")
    if not np.all(np.isfinite(v)):
        raise DataError("vertices contain NaN or inf")
    if not np.issubdtype(f.dtype, np.integer):
        raise DataError(f"faces must be integer vertex indices; got dtype {f.dtype}")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise DataError(f"faces index vertices in [{f.min()}, {f.max()}] but there are {len(v)} vertices")
    return v, f.astype(np.int32)


def _refine_hits(
    corners: np.ndarray, origin: np.ndarray, directions: np.ndarray, ray_t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per hit: the hit face's ``corners`` (K, 3, 3), the ray ``origin`` (3,), unit ``directions`` (K, 3)
    and the intersector's distances ``ray_t`` (K,). Returns float64 distances (K,) and unit face normals
    (K, 3) turned toward the camera."""
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    lengths = np.linalg.norm(cross, axis=1)
    usable = lengths > 0
    # A zero-area face has no normal; facing it straight at the camera keeps the shading defined.
    normals = -directions.copy()
    normals[usable] = cross[usable] / lengths[usable, None]
    along = np.sum(normals * directions, axis=1)
    # The intersector works in float32; intersecting the hit face's plane again in float64 gives exact
    # depths (e.g. for ground-truth depth maps). Degenerate or grazing hits keep the intersector's distance.
    exact = usable & (along != 0)
    t = ray_t.copy()
    t[exact] = np.sum(normals[exact] * (corners[exact, 0] - origin), axis=1) / along[exact]
    normals[along > 0] *= -1.0
    return t, normals


def render_mesh(vertices: Any, faces: Any, camera: Camera, background: float = 1.0) -> dict[str, np.ndarray]:
    """Render a triangle mesh by exact ray casting, one ray per pixel centre.

    vertices (V, 3), faces (F, 3) integer indices. Returns (H, W = the camera's image size):

    - ``mask`` (H, W) bool: the pixel's ray hits the mesh;
    - ``depth`` (H, W): z-depth of the nearest hit, i.e. its camera-frame z (distance along the viewing
      axis, OpenCV convention), not the distance along the ray; 0 where ``mask`` is False;
    - ``normals`` (H, W, 3): unit world-space normal of the hit face, flipped to face the camera (so
      the winding does not matter); 0 where ``mask`` is False;
    - ``rgb`` (H, W, 3): :func:`shade_normals` of the camera-frame normals (a headlight-style light that
      turns with the camera), ``background`` where ``mask`` is False.
    """
    import point_cloud_utils as pcu

    v, f = _mesh_arrays(vertices, faces)
    origins, directions = generate_rays(camera)
    shape = (camera.height, camera.width)
    depth, normals, mask = np.zeros(shape), np.zeros((*shape, 3)), np.zeros(shape, dtype=bool)
    if len(f):
        face_ids, _, ray_t = pcu.ray_mesh_intersection(v, f, origins.reshape(-1, 3), directions.reshape(-1, 3))
        face_ids = np.asarray(face_ids).reshape(shape)
        mask = face_ids >= 0  # point_cloud_utils marks a miss with face id -1 (and t = inf)
        ray_t = np.asarray(ray_t, dtype=np.float64).reshape(shape)[mask]
        t, normals[mask] = _refine_hits(v[f[face_ids[mask]]], camera.center, directions[mask], ray_t)
        depth[mask] = t * (directions[mask] @ camera.rotation[:, 2])
    rgb = shade_normals(normals @ camera.rotation, mask)
    rgb[~mask] = background
    return {"rgb": rgb, "depth": depth, "mask": mask, "normals": normals}


def scatter_flow_image(points: Any, flow: Any, camera: Camera, background: float = 1.0, radius: int = 1) -> np.ndarray:
    """Splat ``points`` (N, 3) into an (H, W, 3) float image coloured by their ``flow`` (N, 3).

    Colour ``0.5 + 0.5 * flow / max_i |flow_i|``: the direction picks the hue (x -> red, y -> green,
    z -> blue) and the magnitude, relative to the largest, how far it is from mid grey. Each point
    covers the pixels within ``radius`` of its projection; where points overlap the nearest wins
    (painter's order). Points behind the camera or outside the image are skipped.
    """
    pts = np.asarray(points, dtype=np.float64)
    fl = np.asarray(flow, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ShapeError(f"points must have shape (N, 3); got {pts.shape}")
    if fl.shape != pts.shape:
        raise ShapeError(f"flow has shape {fl.shape}; it must match points {pts.shape}")
    if not np.all(np.isfinite(fl)):
        raise DataError("flow contains NaN or inf")
    if isinstance(radius, bool) or not isinstance(radius, int | np.integer) or radius < 0:
        raise DataError(f"radius must be a non-negative integer; got {radius!r}")
    image = np.full((camera.height, camera.width, 3), float(background))
    if len(pts) == 0:
        return image
    pixels, depth = project(camera, pts)
    biggest = np.linalg.norm(fl, axis=1).max()
    colours = 0.5 + 0.5 * (fl / biggest if biggest > 0 else fl)
    front = depth > 0
    centre = np.floor(pixels[front]).astype(np.int64)
    ids = np.flatnonzero(front)
    span = range(-radius, radius + 1)
    offsets = [(dy, dx) for dy in span for dx in span if dy * dy + dx * dx <= radius * radius]
    rows = np.concatenate([centre[:, 1] + dy for dy, _ in offsets])
    cols = np.concatenate([centre[:, 0] + dx for _, dx in offsets])
    owner = np.tile(ids, len(offsets))
    inside = (rows >= 0) & (rows < camera.height) & (cols >= 0) & (cols < camera.width)
    rows, cols, owner = rows[inside], cols[inside], owner[inside]
    # Nearest first, then the first occurrence of each pixel is its nearest point: a z-buffer, deterministic.
    order = np.argsort(depth[owner], kind="stable")
    flat = rows[order] * camera.width + cols[order]
    _, first = np.unique(flat, return_index=True)
    winners = order[first]
    image[rows[winners], cols[winners]] = colours[owner[winners]]
    return image
