"""Render time per view of fitted NeRF checkpoints, measured in one process, one after another:

    python -m resfields.benchmarks.render RUN_OR_ID [RUN_OR_ID ...] [--backend torch] [--size 96] [--views 5]

Each checkpoint renders one warm-up view, then ``--views`` orbit views at ``--size`` x ``--size``
(chunked as in evaluation); prints the median and min ms per view as a markdown table and JSON.
Run it on a quiet machine: torch's threads spin when other jobs share the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from resfields.tasks.nerf.fitted import load_nerf
from resfields.zoo.pretrained import resolve


def time_renders(target: str, backend: str, size: int, views: int) -> dict[str, float]:
    """``{"median_ms", "min_ms"}`` per view of ``target`` (a run folder, zoo id or Hub id)."""
    scene = load_nerf(resolve(target), backend=backend)
    cameras = scene.orbit(views + 1, size)
    frame = scene.n_frames // 2
    scene.render(cameras[0], frame=frame)  # warm-up: allocations, tinygrad's compilation
    seconds = []
    for camera in cameras[1:]:
        start = time.perf_counter()
        scene.render(camera, frame=frame)
        seconds.append(time.perf_counter() - start)
    return {"median_ms": 1000 * statistics.median(seconds), "min_ms": 1000 * min(seconds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--backend", default="torch", choices=("torch", "tinygrad", "numpy"))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--views", type=int, default=5)
    args = parser.parse_args(argv)
    results = {t: time_renders(t, args.backend, args.size, args.views) for t in args.targets}
    print(f"| checkpoint | {args.size}x{args.size} ms/view (median) | min |\n|---|---|---|")
    for target, r in results.items():
        print(f"| {target} | {r['median_ms']:.0f} | {r['min_ms']:.0f} |")
    print(json.dumps({"backend": args.backend, "size": args.size, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
