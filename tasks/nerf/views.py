"""``resfields render``: novel views of a fitted dynamic NeRF to a video, a GIF, one PNG or a folder of PNGs.

Cameras: ``orbit`` (circling the scene's up axis), ``dataset:NAME`` (a camera of the training data,
stored in the checkpoint: ``cam00``, ...) or ``path:FILE.json`` (see
:func:`~resfields.tasks.nerf.fitted.cameras_from_json`). Time: ``--frame F``, ``--time T``
(normalised, in [-1, 1]) or ``--time-sweep`` (-1 to 1 across the views).

Every argument, the output path and the rendering budget (:data:`MAX_SIDE`, :data:`MAX_VIEWS`,
:data:`MAX_PIXELS`, raised with ``--max-side``, ``--max-views``, ``--max-pixels``) are checked before
anything is rendered, so a mistake costs no rendering time; files are written atomically
(:mod:`resfields.tasks.common.media`), so a failed write keeps the previous file.
"""

from __future__ import annotations

import argparse
import math
import os
import time as clock
from pathlib import Path
from typing import Any, Literal

import numpy as np

from resfields.backends import INFERENCE_BACKENDS
from resfields.errors import DataError
from resfields.report import report
from resfields.tasks.common.cameras import Camera
from resfields.tasks.common.media import VIDEO_FORMATS, write_array, write_image, write_video

from .fitted import FittedNerf, cameras_from_json, load_nerf

__all__ = [
    "MAX_PIXELS",
    "MAX_SIDE",
    "MAX_VIEWS",
    "add_render_arguments",
    "choose_cameras",
    "colour_outputs",
    "output_target",
    "parse_outputs",
    "render_command",
]

OUTPUT_NAMES = ("rgb", "depth", "normals")
# What a render may cost unless raised on the command line: rendering holds every view in memory, about
# 100 bytes per pixel (float outputs, their panels, the encoded frames), so the defaults stay within a
# few GB (MAX_PIXELS: 6.7 GB at most) and a typo such as --size 60000 fails at once instead of swapping.
MAX_SIDE = 4096  # pixels per image side
MAX_VIEWS = 3600  # views per render (5 minutes of video at 12 fps)
MAX_PIXELS = 2**26  # pixels of all views together (e.g. 256 views of 512 x 512)
_BYTES_PER_PIXEL = 100
_OUTPUT_FORMS = (
    "FILE.mp4 or FILE.gif (a video), FILE.png (one image; needs exactly one view) or a folder (an existing "
    "folder, a path ending in /, or a path with no extension: one PNG per view plus depth.npy)"
)
OutputKind = Literal["video", "image", "folder"]


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``resfields render``."""
    parser.add_argument("run", help="a nerf run folder (`resfields fit nerf`), a zoo id or a Hub repo id")
    parser.add_argument("--revision", default=None, help="pin a Hub revision (branch, tag or commit)")
    parser.add_argument("--backend", choices=INFERENCE_BACKENDS, default="torch")
    parser.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--frame", type=int, default=None, help="the frame to show (default: frame 0)")
    when.add_argument("--time", type=float, default=None, help="a normalised time in [-1, 1]")
    when.add_argument("--time-sweep", action="store_true", help="advance time from -1 to 1 across the views")
    parser.add_argument("--camera", default="orbit", help="orbit (default), dataset:NAME or path:FILE.json")
    parser.add_argument("--views", type=int, default=24, help="number of orbit views")
    parser.add_argument("--size", type=int, nargs="+", default=[96], metavar="H [W]", help="orbit image size")
    parser.add_argument("--elevation", type=float, default=25.0, help="orbit elevation in degrees")
    parser.add_argument("--outputs", default="rgb", help="comma list of rgb, depth, normals (side by side)")
    parser.add_argument("--fps", type=int, default=12, help="frames per second of a video")
    parser.add_argument("--out", default="orbit.mp4", help=f"where to write: {_OUTPUT_FORMS}; anything else is refused")
    parser.add_argument("--mesh", default=None, metavar="FILE.ply", help="also export the frame's mesh (128^3 grid)")
    parser.add_argument("--json", action="store_true", help="print what was written and the timing as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    limits = parser.add_argument_group(
        "limits",
        f"checked before rendering; every view is held in memory, about {_BYTES_PER_PIXEL} bytes per pixel, "
        "so raise a limit only on a machine with the memory for it",
    )
    limits.add_argument(
        "--max-side", type=int, default=MAX_SIDE, metavar="PX", help=f"largest image side (default {MAX_SIDE})"
    )
    limits.add_argument(
        "--max-views", type=int, default=MAX_VIEWS, metavar="N", help=f"most views (default {MAX_VIEWS})"
    )
    limits.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"most pixels of all views together (default {MAX_PIXELS} = 2^26)",
    )


def parse_outputs(text: str) -> list[str]:
    """The panel names of ``--outputs`` (a comma list); DataError for none or an unknown one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise DataError(f"--outputs names no output; give a comma list of {', '.join(OUTPUT_NAMES)}")
    unknown = [name for name in names if name not in OUTPUT_NAMES]
    if unknown:
        raise DataError(f"--outputs: unknown output(s) {unknown}; choose from {', '.join(OUTPUT_NAMES)}")
    return names


def output_target(out: str) -> tuple[OutputKind, Path]:
    """What ``--out`` asks for, and where: a video (``.mp4``/``.gif``), one image (``.png``) or a folder (a
    path ending in ``/``, an existing folder or a path with no extension). DataError for anything else,
    or for a path that cannot be written (a file in the way, a folder without write permission)."""
    if not out.strip():
        raise DataError(f"--out is empty; use {_OUTPUT_FORMS}")
    path = Path(out)
    suffix = path.suffix.lower()
    kind: OutputKind
    if out.endswith(("/", os.sep)):
        kind = "folder"
    elif suffix in VIDEO_FORMATS or suffix == ".png":
        kind = "video" if suffix in VIDEO_FORMATS else "image"
        if path.is_dir():
            raise DataError(f"--out {out} is an existing folder; end it with / to write one PNG per view into it")
    elif path.is_dir() or not suffix:
        kind = "folder"
    else:
        raise DataError(f"--out {out}: {path.suffix!r} is not an output this writes; use {_OUTPUT_FORMS}")
    _check_writable(path if kind == "folder" else path.parent, f"--out {out}")
    return kind, path


def _check_writable(folder: Path, what: str) -> None:
    """DataError unless ``folder`` is, or can be created as, a folder this process can write into."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"{what}: {existing} is a file, not a folder, so nothing can be written under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{what}: no permission to write in {existing}")


def _check_request(args: Any) -> tuple[int, int]:
    """Every plain number of the command, before any work; returns the orbit's (H, W)."""
    for name in ("max_side", "max_views", "max_pixels", "fps"):
        if getattr(args, name) < 1:
            raise DataError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if len(args.size) not in (1, 2) or min(args.size) < 1:
        raise DataError(f"--size takes H or H W, positive integers, got {' '.join(map(str, args.size))}")
    if args.views < 1:
        raise DataError(f"--views must be a positive integer, got {args.views}")
    if not math.isfinite(args.elevation):
        raise DataError(f"--elevation must be a finite number of degrees, got {args.elevation}")
    if args.mesh is not None:
        from resfields.tasks.common.meshio import MESH_SUFFIXES

        if Path(args.mesh).suffix.lower() not in MESH_SUFFIXES:
            raise DataError(f"--mesh {args.mesh}: the mesh file must end in {' or '.join(MESH_SUFFIXES)}")
        if args.time_sweep:
            raise DataError("--mesh exports one frame: give --frame F or --time T, not --time-sweep")
        _check_writable(Path(args.mesh).parent, f"--mesh {args.mesh}")
    return args.size[0], args.size[-1]


def _check_budget(count: int, largest: tuple[int, int], pixels: int, args: Any, kind: OutputKind, source: str) -> None:
    """DataError if ``count`` views, the ``largest`` (H, W) of them and their ``pixels`` in all break a
    limit, or if a .png output would get more than one view."""
    if count > args.max_views:
        raise DataError(
            f"{source}: {count} views is more than the limit of {args.max_views} (raise it with --max-views)"
        )
    h, w = largest
    if max(h, w) > args.max_side:
        raise DataError(
            f"{source}: a {h}x{w} view is larger than the limit of {args.max_side} pixels per side (it needs about "
            f"{_BYTES_PER_PIXEL * h * w / 1e9:.1f} GB); raise it with --max-side if this machine has the memory"
        )
    if pixels > args.max_pixels:
        raise DataError(
            f"{source}: {count} views of {pixels} pixels in all is more than the limit of {args.max_pixels} "
            f"(about {_BYTES_PER_PIXEL * pixels / 1e9:.1f} GB); use fewer or smaller views, or raise --max-pixels"
        )
    if kind == "image" and count != 1:
        raise DataError(
            f"--out {args.out} writes one image, but {source} gives {count} views; use --views 1, "
            "or a folder (--out DIR/), FILE.mp4 or FILE.gif for several"
        )


def choose_cameras(scene: FittedNerf, spec: str, views: int, size: tuple[int, int], elevation: float) -> list[Camera]:
    """The cameras named by ``--camera``."""
    if spec == "orbit":
        return scene.orbit(views, size, elevation)
    kind, _, value = spec.partition(":")
    if kind == "dataset":
        cameras = scene.dataset_cameras or {}
        if value not in cameras:
            raise DataError(f"--camera dataset:{value}: the checkpoint's cameras are {sorted(cameras)}")
        return [cameras[value]]
    if kind == "path":
        return cameras_from_json(value)
    raise DataError(f"--camera must be orbit, dataset:NAME or path:FILE.json, got {spec!r}")


def colour_outputs(views: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Side-by-side panels (V, H, W * len(names), 3) in [0, 1]: rgb as is, depth as grey (near =
    bright, normalised over the foreground of all views; the background, NaN depth, black), normals
    as ``(n + 1) / 2`` over white."""
    if not names:
        raise DataError(f"colour_outputs needs at least one of {OUTPUT_NAMES}")
    opacity = views["opacity"][..., None]
    panels = []
    for name in names:
        if name == "rgb":
            panels.append(views["rgb"])
        elif name == "depth":  # NaN marks the background: black there
            depth = views["depth"]
            fg = np.isfinite(depth) & (views["opacity"] > 0.5)
            lo, hi = np.percentile(depth[fg], [1, 99]) if fg.any() else (0.0, 1.0)
            grey = 1.0 - np.clip((np.nan_to_num(depth, nan=hi) - lo) / max(hi - lo, 1e-6), 0, 1)
            panels.append(np.repeat((grey * views["opacity"])[..., None], 3, -1))
        elif name == "normals":
            normals = views["normals"] / np.maximum(np.linalg.norm(views["normals"], axis=-1, keepdims=True), 1e-6)
            panels.append((normals + 1) / 2 * opacity + (1 - opacity))
        else:
            raise DataError(f"--outputs: unknown output {name!r}; choose from {OUTPUT_NAMES}")
    return np.concatenate(panels, axis=2)


def render_command(args: Any) -> int:
    """Run ``resfields render`` from parsed arguments (:func:`add_render_arguments`); prints what it
    wrote and the render time. Checks everything it can before loading the model, the cameras before
    rendering."""
    names = parse_outputs(args.outputs)
    size = _check_request(args)
    kind, out = output_target(args.out)
    if args.camera == "orbit":  # before the model loads, and before a billion cameras are built
        source = f"--views {args.views} --size {size[0]} {size[1]}"
        _check_budget(args.views, size, args.views * size[0] * size[1], args, kind, source)
    scene = load_nerf(args.resolve(), backend=args.backend, device=args.device)  # folder of a run, zoo or Hub id
    frame = 0 if args.frame is None and args.time is None and not args.time_sweep else args.frame
    if not args.time_sweep:
        scene.check_time(time=args.time, frame=frame)
    cameras = choose_cameras(scene, args.camera, args.views, size, args.elevation)
    sizes = [(c.height, c.width) for c in cameras]
    _check_budget(len(sizes), max(sizes, key=max), sum(h * w for h, w in sizes), args, kind, f"--camera {args.camera}")
    mesh = None
    if args.mesh is not None:
        mesh_frame = frame if frame is not None else scene.nearest_frame(args.time)
        mesh = scene.export_mesh(mesh_frame, args.mesh)
    start = clock.perf_counter()
    views = scene.render_sequence(cameras, time=args.time, frame=frame, sweep=args.time_sweep, progress=not args.quiet)
    seconds = clock.perf_counter() - start
    images = colour_outputs(views, names)
    if kind == "video":
        written = [write_video(out, images, fps=args.fps)]
    elif kind == "image":
        written = [write_image(out, images[0])]
    else:
        written = [write_image(out / f"view_{i:03d}.png", image) for i, image in enumerate(images)]
        write_array(out / "depth.npy", views["depth"].astype(np.float32))
    h, w = images.shape[1:3]
    summary = {
        "views": len(cameras),
        "size": [h, w // len(names)],
        "ms_per_view": round(1000 * seconds / len(cameras), 1),
        "outputs": names,
        "written": [str(p) for p in written],
        "mesh": None if mesh is None else str(mesh),
    }
    lines = [
        f"rendered {len(cameras)} view(s) of {h}x{w // len(names)} ({', '.join(names)}) on {args.backend}, "
        f"{summary['ms_per_view']:.0f} ms per view",
        f"wrote {written[0]}" + (f" (+{len(written) - 1} more)" if len(written) > 1 else ""),
    ]
    if mesh is not None:
        lines.append(f"wrote {mesh}")
    report(summary, lines, as_json=args.json)
    return 0
