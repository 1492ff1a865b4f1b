"""Render time per view of fitted NeRF checkpoints, and how far the fast render is from a dense one:

    python -m resfields.benchmarks.render RUN_OR_ID [RUN_OR_ID ...] [--backend torch] [--size 256] [--views 3]
        [--dense 512]

Each checkpoint renders ``--views`` orbit views at ``--size`` x ``--size`` at its middle frame through
:meth:`FittedNerf.render` (the surface sampler, rays through empty space skipped by the occupancy
grid). The first view's time includes building that frame's grid (``first_ms``); the others reuse it
(``median_ms``, ``min_ms``). With ``--dense N`` the same views are rendered again with ``N`` equal
intervals over the scene box per ray (the many-sample reference; slow) and ``psnr_vs_dense_db`` is
the PSNR of the fast renders against them. With ``--heldout K`` (and ``--dense N``), the first ``K``
held-out views of the checkpoint's training data are rendered both ways and compared with their ground
truth (white background, as in evaluation): ``heldout_psnr_fast_db`` and ``heldout_psnr_dense_db``.
Prints a markdown table and JSON. Run it on a quiet machine: torch's threads spin when other jobs
share the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import numpy as np

from resfields.backends import INFERENCE_BACKENDS
from resfields.tasks.common.metrics import psnr
from resfields.tasks.nerf.fitted import FittedNerf, load_nerf
from resfields.zoo.pretrained import resolve


def heldout_psnr(folder: str, scene: FittedNerf, dense: FittedNerf, k: int) -> dict[str, float]:
    """PSNR against the ground truth of the first ``k`` held-out views of the data ``folder`` was
    trained on, rendered by ``scene`` (fast) and ``dense``."""
    from resfields.tasks.common.fit import load_run
    from resfields.tasks.nerf.task import NerfTask

    run, _ = load_run(folder)
    video = NerfTask(run.data, run.model).video
    images = video.images_of("test")[:k]
    truth = video.on_white(images)
    out = {}
    for name, model in (("fast", scene), ("dense", dense)):
        pred = np.stack([model.render(video.cameras[i], frame=int(video.frame_ids[i]))["rgb"] for i in images])
        out[f"heldout_psnr_{name}_db"] = psnr(pred, truth)
    return out


def time_renders(
    target: str, backend: str, size: int, views: int, dense: int = 0, heldout: int = 0
) -> dict[str, float]:
    """``{"first_ms", "median_ms", "min_ms"}`` per view of ``target`` (a run folder, zoo id or Hub id),
    plus ``psnr_vs_dense_db`` and ``dense_ms`` when ``dense`` > 0, and the held-out PSNRs of
    :func:`heldout_psnr` when ``heldout`` > 0 too."""
    folder = resolve(target)
    scene = load_nerf(folder, backend=backend)
    cameras = scene.orbit(views, size)
    frame = scene.n_frames // 2
    seconds, images = [], []
    for camera in cameras:
        start = time.perf_counter()
        images.append(scene.render(camera, frame=frame)["rgb"])
        seconds.append(time.perf_counter() - start)
    later = seconds[1:] or seconds
    result = {"first_ms": 1000 * seconds[0], "median_ms": 1000 * statistics.median(later), "min_ms": 1000 * min(later)}
    if dense > 0:
        reference = replace(scene, sampler="stratified", n_samples=dense)
        start = time.perf_counter()
        truth = [reference.render(camera, frame=frame)["rgb"] for camera in cameras]
        result["dense_ms"] = 1000 * (time.perf_counter() - start) / len(cameras)
        result["psnr_vs_dense_db"] = psnr(np.stack(images), np.stack(truth))
        if heldout > 0:
            result.update(heldout_psnr(str(folder), scene, reference, heldout))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--backend", default="torch", choices=INFERENCE_BACKENDS)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--dense", type=int, default=0, help="also render N-sample dense references (0: no)")
    parser.add_argument("--heldout", type=int, default=0, help="with --dense: PSNR of K held-out views, both ways")
    args = parser.parse_args(argv)
    results = {t: time_renders(t, args.backend, args.size, args.views, args.dense, args.heldout) for t in args.targets}
    print(f"| checkpoint | {args.size}x{args.size} ms/view (median) | min | first (builds the grid) | PSNR vs dense |")
    print("|---|---|---|---|---|")
    for target, r in results.items():
        dense_psnr = f"{r['psnr_vs_dense_db']:.2f} dB" if "psnr_vs_dense_db" in r else "-"
        print(f"| {target} | {r['median_ms']:.0f} | {r['min_ms']:.0f} | {r['first_ms']:.0f} | {dense_psnr} |")
    for target, r in results.items():
        if "heldout_psnr_fast_db" in r:
            fast, dense = r["heldout_psnr_fast_db"], r["heldout_psnr_dense_db"]
            print(
                f"{target}: held-out PSNR fast {fast:.2f} dB, dense {dense:.2f} dB (fast - dense {fast - dense:+.2f})"
            )
    print(json.dumps({"backend": args.backend, "size": args.size, "dense": args.dense, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
