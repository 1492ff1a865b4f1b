"""``resfields render``: novel views of a fitted dynamic NeRF to a video, a GIF or a folder of PNGs.

Cameras: ``orbit`` (circling the scene's up axis), ``dataset:NAME`` (a camera of the training data,
stored in the checkpoint: ``cam00``, ...) or ``path:FILE.json`` (see
:func:`~resfields.tasks.nerf.fitted.cameras_from_json`). Time: ``--frame F``, ``--time T``
(normalised, in [-1, 1]) or ``--time-sweep`` (-1 to 1 across the views).
"""

from __future__ import annotations

import argparse
import json
import time as clock
from pathlib import Path
from typing import Any

import numpy as np

from resfields.errors import DataError
from resfields.tasks.common.cameras import Camera

from .fitted import FittedNerf, cameras_from_json, load_nerf

__all__ = ["add_render_arguments", "choose_cameras", "colour_outputs", "render_command"]

OUTPUT_NAMES = ("rgb", "depth", "normals")


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``resfields render``."""
    parser.add_argument("run", help="a nerf run folder (`resfields fit nerf`), a zoo id or a Hub repo id")
    parser.add_argument("--revision", default=None, help="pin a Hub revision (branch, tag or commit)")
    parser.add_argument("--backend", choices=("torch", "tinygrad", "numpy"), default="torch")
    parser.add_argument("--device", default=None)
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--frame", type=int, default=None, help="the frame to show (default: frame 0)")
    when.add_argument("--time", type=float, default=None, help="a normalised time in [-1, 1]")
    when.add_argument("--time-sweep", action="store_true", help="advance time from -1 to 1 across the views")
    parser.add_argument("--camera", default="orbit", help="orbit (default), dataset:NAME or path:FILE.json")
    parser.add_argument("--views", type=int, default=24, help="number of orbit views")
    parser.add_argument("--size", type=int, nargs="+", default=[96], metavar="H [W]", help="orbit image size")
    parser.add_argument("--elevation", type=float, default=25.0, help="orbit elevation in degrees")
    parser.add_argument("--outputs", default="rgb", help="comma list of rgb, depth, normals (side by side)")
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--out", default="orbit.mp4", help="FILE.mp4, FILE.gif or a folder (one PNG per view)")
    parser.add_argument("--mesh", default=None, metavar="FILE.ply", help="also export the frame's mesh (128^3 grid)")


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
    bright, normalised over the foreground of all views), normals as ``(n + 1) / 2`` over white."""
    opacity = views["opacity"][..., None]
    panels = []
    for name in names:
        if name == "rgb":
            panels.append(views["rgb"])
        elif name == "depth":
            depth, fg = views["depth"], views["opacity"] > 0.5
            lo, hi = np.percentile(depth[fg], [1, 99]) if fg.any() else (0.0, 1.0)
            grey = 1.0 - np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
            panels.append(np.repeat((grey * views["opacity"])[..., None], 3, -1))
        elif name == "normals":
            normals = views["normals"] / np.maximum(np.linalg.norm(views["normals"], axis=-1, keepdims=True), 1e-6)
            panels.append((normals + 1) / 2 * opacity + (1 - opacity))
        else:
            raise DataError(f"--outputs: unknown output {name!r}; choose from {OUTPUT_NAMES}")
    return np.concatenate(panels, axis=2)


def render_command(args: Any) -> int:
    """Run ``resfields render`` from parsed arguments; prints what it wrote and the render time."""
    from resfields.tasks.common.media import write_image, write_video
    from resfields.zoo.pretrained import resolve

    names = [n.strip() for n in args.outputs.split(",") if n.strip()]
    if len(args.size) not in (1, 2):
        raise DataError(f"--size takes H or H W, got {args.size}")
    size = (args.size[0], args.size[-1])
    scene = load_nerf(resolve(args.run, revision=args.revision), backend=args.backend, device=args.device)
    frame = 0 if args.frame is None and args.time is None and not args.time_sweep else args.frame
    if args.mesh is not None:
        mesh_frame = frame if frame is not None else scene.nearest_frame(args.time)
        print(f"wrote {scene.export_mesh(mesh_frame, args.mesh)}")
    cameras = choose_cameras(scene, args.camera, args.views, size, args.elevation)
    start = clock.perf_counter()
    views = scene.render_sequence(cameras, time=args.time, frame=frame, sweep=args.time_sweep)
    seconds = clock.perf_counter() - start
    images = colour_outputs(views, names)
    out = Path(args.out)
    if out.suffix.lower() in (".mp4", ".gif"):
        written = [write_video(out, images, fps=args.fps)]
    else:
        out.mkdir(parents=True, exist_ok=True)
        written = [write_image(out / f"view_{i:03d}.png", image) for i, image in enumerate(images)]
        np.save(out / "depth.npy", views["depth"].astype(np.float32))
    h, w = images.shape[1:3]
    timing = {
        "views": len(cameras),
        "size": [h, w // len(names)],
        "ms_per_view": round(1000 * seconds / len(cameras), 1),
    }
    print(json.dumps(timing))
    print(f"wrote {written[0]}" + (f" (+{len(written) - 1} more)" if len(written) > 1 else ""))
    return 0
