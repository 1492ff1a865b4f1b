"""Pictures the tasks write: images, videos (mp4 / gif), loss curves, shaded mesh renders and scene-flow
scatter images. Float images are in [0, 1]; colour arrays are channel-last.

Every file written here (:func:`write_video`, :func:`write_image`, :func:`write_array`,
:func:`plot_curves`) is written atomically: the encoder writes a hidden temporary sibling in the same
folder, which is flushed to disk and then renamed over the target. A failure (a full disk, a crashed
encoder, Ctrl-C) leaves the previous file byte for byte and no temporary file behind; an ``OSError``
names the target file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from resfields.checkpoint import fsync_path, shared_mode
from resfields.errors import DataError, ShapeError
from resfields.tasks.common.cameras import Camera, generate_rays, project
from resfields.tasks.common.geometry import cast_rays
from resfields.tasks.common.values import is_int

__all__ = [
    "VIDEO_FORMATS",
    "plot_curves",
    "render_mesh",
    "replacing",
    "scatter_flow_image",
    "shade_normals",
    "side_by_side",
    "to_uint8",
    "write_array",
    "write_image",
    "write_video",
]

VIDEO_FORMATS = (".mp4", ".gif")  # what write_video writes
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


def _write_bytes(path: Path, data: bytes) -> None:
    # Encoders write to memory and only this handle touches the disk: an encoder that fails while writing
    # a file of its own keeps that file open until it is garbage-collected (holding the disk, and
    # printing a second error from its finaliser).
    with open(path, "wb", buffering=0) as handle:
        view = memoryview(data)
        while view:
            view = view[handle.write(view) :]


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Write ``path`` atomically: yields a temporary sibling (same folder, same suffix, so encoders that
    pick the format from the name still do) for the caller to write; on success it gets the mode an
    ordinary new file would have, is flushed to disk and renamed over ``path``. On any failure the
    temporary file is removed and ``path`` keeps its previous content; an ``OSError`` that names no file
    (or the temporary one) is re-raised naming ``path``. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as err:  # e.g. a read-only folder: name the file the user asked for, not our temporary
        raise OSError(err.errno, err.strerror, str(path)) from err
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, shared_mode(0o666))  # mkstemp makes 0600 files; media files are shared like any file
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and (err.filename is None or str(err.filename) == tmp):
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    with contextlib.suppress(OSError):  # the rename is durable once the folder is; not every OS can open one
        fsync_path(path.parent, directory=True)


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
    Pillow merges identical consecutive frames (keeping the timing). Parent folders are created; the
    file is replaced atomically (see the module docstring). Returns the path.
    """
    import imageio.v3 as iio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise DataError(f"write_video: unsupported suffix {path.suffix!r} in {path}; use one of {VIDEO_FORMATS}")
    if not (np.isfinite(fps) and fps > 0):
        raise DataError(f"fps must be positive and finite; got {fps!r}")
    video = _rgb_frames(frames)
    if suffix == ".gif":
        with replacing(path) as tmp:
            _write_bytes(
                tmp, iio.imwrite("<bytes>", video, plugin="pillow", extension=".gif", duration=1000.0 / fps, loop=0)
            )
        return path
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with replacing(path) as tmp:
        _encode_mp4(tmp, video, fps, path)
    return path


def _encode_mp4(tmp: Path, video: np.ndarray, fps: float, path: Path) -> None:
    """H.264 of uint8 ``video`` (T, H, W, 3), even H and W, into ``tmp`` with imageio-ffmpeg's ffmpeg and
    its default quality (CRF 25). ffmpeg is run directly, not through imageio's writer: that writer ignores
    ffmpeg's exit status, so a full disk would pass for a finished (empty) video."""
    import imageio_ffmpeg

    height, width = video.shape[1:3]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24"]
    command += ["-s", f"{width}x{height}", "-r", str(Fraction(fps).limit_denominator()), "-i", "-", "-an"]
    command += ["-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", "25", str(tmp)]
    done = subprocess.run(command, input=np.ascontiguousarray(video).tobytes(), capture_output=True, check=False)
    if done.returncode != 0:
        report = done.stderr.decode(errors="replace").strip().splitlines()
        full = any(os.strerror(errno.ENOSPC) in line for line in report)
        reason = os.strerror(errno.ENOSPC) if full else f"ffmpeg failed ({report[0] if report else done.returncode})"
        raise OSError(errno.ENOSPC if full else errno.EIO, reason, str(path))


def write_image(path: str | Path, image: Any) -> Path:
    """Write ``image`` (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), float in [0, 1] or uint8, as a PNG.
    Parent folders are created; the file is replaced atomically. Returns the path."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"write_image writes PNG; the path must end in .png, got {path}")
    arr = to_uint8(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))) or 0 in arr.shape:
        raise ShapeError(f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {arr.shape}")
    with replacing(path) as tmp:
        _write_bytes(tmp, iio.imwrite("<bytes>", arr, extension=".png"))
    return path


def write_array(path: str | Path, array: Any) -> Path:
    """Write ``array`` as a NumPy ``.npy`` file (e.g. a depth map next to rendered views). Parent folders
    are created; the file is replaced atomically. Returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise DataError(f"write_array writes .npy; the path must end in .npy, got {path}")
    arr = np.asarray(array)
    if arr.dtype == object:
        raise DataError(f"write_array writes numeric arrays, got dtype object for {path}")
    with replacing(path) as tmp:
        buffer = io.BytesIO()
        np.save(buffer, arr, allow_pickle=False)
        _write_bytes(tmp, buffer.getvalue())
    return path


def side_by_side(*images_or_videos: Any, gap: int = 2) -> np.ndarray:
    """Concatenate images (H, W, C) or (H, W), or videos (T, H, W, C), along the width with ``gap`` white
    columns between them.

    All inputs need the same shape except the width; a 1-channel input is repeated to the others'
    channel count. The result is uint8 when every input is uint8, else float in [0, 1].
    """
    if not images_or_videos:
        raise ShapeError("side_by_side needs at least one image or video")
    if not is_int(gap) or gap < 0:
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
    The file is replaced atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"plot_curves writes PNG; the path must end in .png, got {path}")
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
    with replacing(path) as tmp:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        _write_bytes(tmp, buffer.getvalue())
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
    origins, directions = generate_rays(camera)
    shape = (camera.height, camera.width)
    hits = cast_rays(vertices, faces, origins.reshape(-1, 3), directions.reshape(-1, 3), where="render_mesh")
    mask = hits.hit.reshape(shape)
    facing = hits.normals
    d = directions[mask]
    # A zero-area face has no normal; facing it straight at the camera keeps the shading defined.
    degenerate = ~facing.any(axis=1)
    facing[degenerate] = -d[degenerate]
    facing[np.sum(facing * d, axis=1) > 0] *= -1.0
    depth, normals = np.zeros(shape), np.zeros((*shape, 3))
    normals[mask] = facing
    depth[mask] = hits.t * (d @ camera.rotation[:, 2])
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
    if not is_int(radius) or radius < 0:
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
