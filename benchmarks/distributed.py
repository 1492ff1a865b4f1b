"""Steps per second of a task's fit on 1 and more processes (torch DDP), measured in one run:

    python -m resfields.benchmarks.distributed [--task video] [--nproc 1,2] [--steps 100] [--rounds 2]
        [--batch-size N] [--device cpu|cuda] [--json FILE]

Every process count trains the task's default model for ``--steps`` steps of the same global batch
through :func:`~resfields.tasks.common.distributed.launch` (so one process pays the same start-up as
several), in interleaved rounds (1, 2, 1, 2, ...). The time is the training loop's own (``step_time_ms``
of the run's ``metrics.json``: no start-up, no evaluation). Each process gets ``cores / N`` torch
threads. On CPU the ranks share the machine's cores, so expect no speed-up there; on several GPUs
(``--device cuda``, NCCL) each rank has its own.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from resfields.tasks import get_task
from resfields.tasks.common.config import RunConfig
from resfields.tasks.common.distributed import Ranks, launch
from resfields.tasks.common.fit import fit

__all__ = ["main"]


def _fit_rank(ranks: Ranks, run: RunConfig, out: str, device: str | None) -> None:
    fit(run, out, device=device, ranks=ranks, progress=False, media=False, save_interval_s=None)


def _step_ms(run: RunConfig, nproc: int, device: str | None, folder: Path) -> float:
    out = folder / f"n{nproc}"
    if out.exists():
        shutil.rmtree(out)
    launch(nproc, _fit_rank, (run, str(out), device))
    return float(json.loads((out / "metrics.json").read_text())["step_time_ms"])


def _shareable_batch(run: RunConfig, counts: list[int]) -> int:
    """The largest batch size up to ``run``'s whose samples per frame every count in ``counts`` divides."""
    import numpy as np

    task = get_task(run.task)(run.data, run.model)
    task.prepare()
    frames, per_frame = task.sample(np.random.default_rng(0), run.train.batch_size)["x"].shape[:2]
    multiple = math.lcm(*counts)
    return frames * max(per_frame - per_frame % multiple, multiple)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resfields.benchmarks.distributed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--task", default="video", choices=["video", "sdf", "flow"])
    parser.add_argument("--nproc", default="1,2", help="comma-separated process counts (default 1,2)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="global batch (default: the task's, rounded to share equally)"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.nproc.split(",")]
    task = get_task(args.task)
    model, train = task.defaults()
    train = replace(
        train, steps=args.steps, eval_every=0, **({} if args.batch_size is None else {"batch_size": args.batch_size})
    )
    run = RunConfig(args.task, task.Data(), model, train)
    if args.batch_size is None:  # the task's batch, rounded down so that every process count shares it equally
        run = replace(run, train=replace(train, batch_size=_shareable_batch(run, counts)))
        train = run.train
    times: dict[int, list[float]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for n in counts:
                times[n].append(_step_ms(run, n, args.device, Path(tmp)))
                print(f"  {n} process(es): {times[n][-1]:.1f} ms a step", file=sys.stderr, flush=True)
    base = statistics.median(times[counts[0]])
    rows = []
    print(
        f"| {args.task}, global batch {train.batch_size}, {args.steps} steps, {args.device or 'cpu'} | ms a step "
        f"(median of {args.rounds}) | steps/s | vs {counts[0]} process(es) |"
    )
    print("|---|---|---|---|")
    for n in counts:
        ms = statistics.median(times[n])
        rows.append({"nproc": n, "step_ms": ms, "steps_per_s": 1000 / ms, "speedup": base / ms, "runs_ms": times[n]})
        print(f"| {n} | {ms:.1f} | {1000 / ms:.1f} | {base / ms:.2f}× |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"task": args.task, "batch_size": train.batch_size, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
