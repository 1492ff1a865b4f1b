"""Vanilla Siren vs ResField Siren on every task, same data, steps and seed: the README's results table.

    python -m resfields.benchmarks.tasks [--tasks video,sdf,flow] [--steps N] [--device cpu|cuda]
                                         [--out runs/results] [--json FILE] [--set task.key=value ...]

Each variant is a normal `resfields fit` run (its folder holds the checkpoint, metrics and media).
"Vanilla, equal parameters" widens the vanilla Siren until it has at least as many parameters as
the ResField Siren (the paper's other comparison).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from resfields.spec import parameter_shapes
from resfields.tasks import get_task
from resfields.tasks.common.cli import _parse_value  # one parser for command-line values
from resfields.tasks.common.config import ModelConfig, RunConfig, siren_spec
from resfields.tasks.common.fit import fit

# the metrics each task's row shows, and whether lower is better
COLUMNS = {
    "video": [("test_psnr", "test PSNR dB", False), ("train_psnr", "train PSNR dB", False), ("ssim", "SSIM", False)],
    "sdf": [("chamfer_l1", "Chamfer L1 x1e3", True), ("normal_consistency", "normal consistency", False)],
    # flows here are ~2 % of the object per frame, so FlowNet3D's absolute accuracy thresholds
    # (0.05, 0.1) are always met; the relative outlier rate (error > 10 % of the flow) tells more
    "flow": [
        ("test_points_epe", "EPE held-out points x1e3", True),
        ("test_points_outliers", "outliers held-out points", True),
        ("test_frames_epe", "EPE held-out frames x1e3", True),
        ("test_frames_outliers", "outliers held-out frames", True),
    ],
}
COLUMNS["nerf"] = [
    ("psnr", "novel-view PSNR dB", False),
    ("masked_psnr", "masked PSNR dB", False),
    ("ssim", "SSIM", False),
    ("chamfer_l1", "Chamfer L1 x1e3", True),
    ("render_ms_per_view", "render ms/view", True),
]
SCALE = {"chamfer_l1": 1e3, "test_points_epe": 1e3, "test_frames_epe": 1e3}


def _n_params(model: ModelConfig, in_f: int, out_f: int, n_frames: int) -> int:
    return sum(math.prod(s) for s in parameter_shapes(siren_spec(model, in_f, out_f, n_frames)).values())


def equal_parameter_width(model: ModelConfig, in_f: int, out_f: int, n_frames: int) -> int:
    """The smallest vanilla width with at least as many parameters as ``model``."""
    target = _n_params(model, in_f, out_f, n_frames)
    vanilla = replace(model, resfield_layers=())
    width = model.width
    while _n_params(replace(vanilla, width=width), in_f, out_f, n_frames) < target:
        width += 8
    return width


def variants(task_name: str, run: RunConfig, equal_params: bool) -> dict[str, RunConfig]:
    """``{label: run}``: vanilla, ResFields, and (optionally) vanilla at equal parameter count."""
    out = {
        "vanilla": replace(run, model=replace(run.model, resfield_layers=())),
        f"ResFields (layers {','.join(map(str, run.model.resfield_layers))}, rank {run.model.rank})": run,
    }
    if equal_params:
        spec = get_task(task_name)(run.data, run.model).field_spec()
        # the ResField capacity stands in for the frame count: siren_spec gives the same spec with it
        width = equal_parameter_width(run.model, spec.in_features, spec.out_features, spec.resfield.capacity)
        out[f"vanilla, width {width} (equal parameters)"] = replace(
            run, model=replace(run.model, resfield_layers=(), width=width)
        )
    return out


def markdown(task_name: str, rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A markdown table of one task's variants."""
    cols = COLUMNS[task_name]
    head = ["model", "parameters", *[c[1] for c in cols], "train s", "ms/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, summary in rows:
        m = summary["metrics"]
        values = [f"{m[key] * SCALE.get(key, 1):.4g}" for key, _, _ in cols]
        cells = [label, f"{summary['parameters']:,}", *values, f"{summary['train_time_s']:.0f}"]
        lines.append("| " + " | ".join([*cells, f"{summary['step_time_ms']:.0f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="video,sdf,flow")
    parser.add_argument("--steps", type=int, default=None, help="override every task's default step count")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="runs/results")
    parser.add_argument("--json", default=None, help="also write all summaries to this file")
    parser.add_argument("--no-equal-params", dest="equal_params", action="store_false")
    parser.add_argument("--no-media", dest="media", action="store_false")
    parser.add_argument(
        "--set", action="append", default=[], help="TASK.SECTION.KEY=VALUE, e.g. video.data.n_frames=60"
    )
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for task_name in args.tasks.split(","):
        task = get_task(task_name)
        model, train = task.defaults()
        if args.steps is not None:
            train = replace(train, steps=args.steps)
        run = RunConfig(task_name, task.Data(), model, train)
        run = _apply_overrides(run, task_name, args.set)
        rows = []
        for label, variant in variants(task_name, run, args.equal_params).items():
            folder = Path(args.out) / task_name / label.split(" (")[0].replace(" ", "_").replace(",", "")
            # a benchmark re-run replaces its earlier results
            summary = fit(variant, folder, backend=args.backend, device=args.device, media=args.media, overwrite=True)
            rows.append((label, summary))
            print(f"{task_name} / {label}: {json.dumps(summary['metrics'])[:300]}", file=sys.stderr)
        results[task_name] = rows
        print(f"\n### {task_name} ({run.train.steps} steps, batch {run.train.batch_size}, {args.backend})\n")
        print(markdown(task_name, rows), flush=True)
        if args.json:  # after every task, so a run cut short keeps what it finished
            Path(args.json).write_text(json.dumps({k: dict(v) for k, v in results.items()}, indent=2) + "\n")
    return 0


def _apply_overrides(run: RunConfig, task_name: str, overrides: list[str]) -> RunConfig:
    import typing

    for item in overrides:
        target, _, text = item.partition("=")
        parts = target.split(".")
        if len(parts) != 3 or parts[1] not in ("data", "model", "train"):
            raise SystemExit(f"--set expects TASK.(data|model|train).KEY=VALUE, got {item!r}")
        if parts[0] != task_name:
            continue
        section = getattr(run, parts[1])
        hint = typing.get_type_hints(type(section))[parts[2]]
        run = replace(run, **{parts[1]: replace(section, **{parts[2]: _parse_value(hint, text)})})
    return run


if __name__ == "__main__":
    sys.exit(main())
