"""A held-out view of the training data next to what fitted NeRFs render there, as one PNG:

    python -m resfields.benchmarks.novel_view RUN_OR_ID [RUN_OR_ID ...] --out view.png [--view 5] [--scale 2]

Panels, left to right: the ground truth (white background, as in evaluation), then each target's
render of the same camera and frame, each labelled with its PSNR on that view. ``--view`` indexes the
data's held-out images (camera-major: view ``c * T + f`` is held-out camera ``c`` at frame ``f``);
``--scale`` enlarges the pixels (nearest neighbour) so the detail stays visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from resfields.backends import INFERENCE_BACKENDS
from resfields.tasks.common.fit import load_run
from resfields.tasks.common.media import write_image
from resfields.tasks.common.metrics import psnr
from resfields.tasks.nerf.fitted import load_nerf
from resfields.tasks.nerf.task import NerfTask
from resfields.zoo.pretrained import resolve


def novel_view_panels(targets: list[str], view: int, backend: str = "torch") -> tuple[np.ndarray, list[float]]:
    """``(H, W * (1 + len(targets)), 3)`` float image [truth | render ...] and each render's PSNR."""
    run, _ = load_run(resolve(targets[0]))
    video = NerfTask(run.data, run.model).video
    held_out = video.images_of("test")
    image = int(held_out[view])
    truth = video.on_white(np.array([image]))[0]
    panels, scores = [truth], []
    for target in targets:
        scene = load_nerf(resolve(target), backend=backend)
        rgb = scene.render(video.cameras[image], frame=int(video.frame_ids[image]))["rgb"]
        panels.append(rgb)
        scores.append(psnr(rgb, truth))
    return np.concatenate(panels, axis=1), scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--view", type=int, default=5)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--backend", default="torch", choices=INFERENCE_BACKENDS)
    args = parser.parse_args(argv)
    panel, scores = novel_view_panels(args.targets, args.view, args.backend)
    if args.scale > 1:
        panel = panel.repeat(args.scale, axis=0).repeat(args.scale, axis=1)
    write_image(Path(args.out), panel)
    for target, score in zip(args.targets, scores, strict=True):
        print(f"{target}: PSNR {score:.2f} dB on held-out view {args.view}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
