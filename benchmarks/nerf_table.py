"""Vanilla vs ResFields dynamic NeRFs (TNeRF, DyNeRF, DNeRF) over seeds: the README's dynamic-NeRF table.

    python -m resfields.benchmarks.nerf_table [--methods tnerf,dynerf,dnerf] [--seeds tnerf=0,1,2 --seeds 0]
        [--steps N] [--backend torch] [--device cpu|cuda] [--out runs/nerf_table] [--json FILE]
        [--markdown FILE] [--render-size 256] [--resume-existing] [--reuse FOLDER ...]
        [--records FILE ...] [--set nerf.SECTION.KEY=VALUE ...] [--no-progress]

Every run is the zoo recipe ``resfields/nerf-bunny`` (``RECIPES["nerf-bunny"].run``) with its method
and seed replaced, once with the recipe's ResField layers and once vanilla (no ResField layers),
fitted into ``OUT/METHOD/vanilla/seedS`` and ``OUT/METHOD/resfields/seedS``. Then a
``--render-size`` square view of each run folder is timed (:func:`resfields.benchmarks.render.time_renders`,
two orbit views, the second one's time: the occupancy grid is built by the first).

Seeds: ``--seeds METHOD=0,1,2`` sets one method's seeds, ``--seeds 0,1`` those of every method not
named; without any ``--seeds`` it is TNeRF on seeds 0, 1, 2 and the other methods on seed 0.
The runs are interleaved (for each seed, for each method, vanilla then ResFields), so a table cut
short still has paired rows. ``--json`` is rewritten after every finished run.

``--resume-existing`` keeps a run folder that already holds the finished run asked for (its
``metrics.json`` is there and its stored run config, steps included, equals the requested one) and
reads its metrics instead of training; otherwise a folder is overwritten. ``--reuse FOLDER`` offers
more finished run folders to take runs from in the same way, e.g. the zoo's own training runs::

    python -m resfields.benchmarks.nerf_table --reuse runs/zoo/nerf-bunny --reuse runs/zoo/nerf-bunny-vanilla

``--records FILE`` offers the runs of an earlier ``--json`` file: a run whose stored run config
(``"run"``) equals the requested one, steps included, is taken with its metrics and its render timing
as recorded, and marked ``"recorded"`` in the new JSON, so a table can grow by a method or a seed
without retraining what an earlier session trained (folders come first, then records, then
training). ``benchmarks/records/nerf_table.json`` holds the runs behind the README's table.

Each table cell is ``mean ± std`` over seeds (sample std) when there are two or more, else the value;
the "ResFields − vanilla" line gives the mean ± std of the paired (same seed) differences.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from resfields.benchmarks.render import time_renders
from resfields.benchmarks.tasks import COLUMNS, SCALE, _apply_overrides
from resfields.errors import ResFieldsError
from resfields.tasks.common.config import RunConfig, config_to_dict
from resfields.tasks.common.fit import METRICS, finite_or_none, fit, load_run, run_differences, run_from_dict
from resfields.zoo.recipes import RECIPES

__all__ = ["DEFAULT_SEEDS", "Job", "finished_summary", "jobs", "main", "markdown", "parse_seeds", "recorded_run"]

RECIPE = "nerf-bunny"
DEFAULT_METHODS = "tnerf,dynerf,dnerf"
DEFAULT_SEEDS: dict[str, tuple[int, ...]] = {"tnerf": (0, 1, 2), "*": (0,)}  # "*": every method not named
VARIANTS = ("vanilla", "resfields")
# the table's metric columns: COLUMNS["nerf"] less the training-time render (the table times its own renders)
METRIC_COLUMNS = [c for c in COLUMNS["nerf"] if c[0] != "render_ms_per_view"]


@dataclass(frozen=True)
class Job:
    """One run of the table: ``method``, ``variant`` ("vanilla" or "resfields"), ``seed``, its run config
    and its run folder."""

    method: str
    variant: str
    seed: int
    run: RunConfig
    folder: Path


def parse_seeds(specs: Sequence[str] | None, methods: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``{method: seeds}`` from ``--seeds`` values (``METHOD=0,1,2`` or ``0,1`` for every method not named).

    None (no ``--seeds``) gives :data:`DEFAULT_SEEDS`; given values replace those defaults entirely,
    with seed 0 for a method that none of them covers."""
    table: dict[str, tuple[int, ...]] = dict(DEFAULT_SEEDS) if specs is None else {"*": (0,)}
    for spec in specs or ():
        name, sep, text = spec.rpartition("=")
        if sep and name not in methods:
            raise SystemExit(f"--seeds {spec!r}: {name!r} is not one of --methods {','.join(methods)}")
        try:
            seeds = tuple(int(s) for s in text.split(","))
        except ValueError:
            raise SystemExit(f"--seeds expects [METHOD=]SEED,SEED,..., got {spec!r}") from None
        if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
            raise SystemExit(f"--seeds {spec!r}: seeds must be distinct non-negative integers")
        table[name if sep else "*"] = seeds
    return {m: table.get(m, table["*"]) for m in methods}


def jobs(base: RunConfig, seeds: dict[str, tuple[int, ...]], out: Path) -> list[Job]:
    """Every run, interleaved: for each seed, for each method that has it, vanilla then ResFields."""
    order: list[int] = []
    for method_seeds in seeds.values():
        order += [s for s in method_seeds if s not in order]
    result = []
    for seed in order:
        for method, method_seeds in seeds.items():
            if seed not in method_seeds:
                continue
            for variant in VARIANTS:
                layers = base.model.resfield_layers if variant == "resfields" else ()
                model = replace(base.model, method=method, resfield_layers=layers)
                run = replace(base, model=model, train=replace(base.train, seed=seed))
                result.append(Job(method, variant, seed, run, out / method / variant / f"seed{seed}"))
    return result


def _same_finished_run(stored: RunConfig, run: RunConfig, steps_done: Any) -> bool:
    """Whether a stored run trained for ``steps_done`` steps is the finished run ``run``: the same
    options, the same step count, and trained to its last step."""
    return not run_differences(stored, run) and stored.train.steps == run.train.steps == steps_done


def finished_summary(folder: Path, run: RunConfig) -> dict[str, Any] | None:
    """The ``metrics.json`` summary of ``folder`` when it holds the finished run ``run`` (same stored run
    config, steps included, trained to the last step); None otherwise."""
    if not (folder / METRICS).is_file():
        return None
    try:
        stored, ckpt = load_run(folder)
        summary = json.loads((folder / METRICS).read_text())
    except (ResFieldsError, OSError, ValueError):
        return None
    if not _same_finished_run(stored, run, ckpt.metadata.get("step")) or summary.get("steps") != run.train.steps:
        return None
    return summary if isinstance(summary, dict) and isinstance(summary.get("metrics"), dict) else None


def recorded_run(records: Iterable[dict[str, Any]], run: RunConfig) -> dict[str, Any] | None:
    """The first record (a run of an earlier ``--json`` file) of the finished run ``run``: same stored run
    config, steps included, and trained to the last step; None if there is none. Records without a
    run config, or with one this version cannot read, never match."""
    for record in records:
        try:
            stored = run_from_dict(record["run"])
            steps = record["summary"]["steps"]
            has_metrics = isinstance(record["summary"]["metrics"], dict)
        except (ResFieldsError, KeyError, TypeError):
            continue
        if has_metrics and _same_finished_run(stored, run, steps):
            return record
    return None


def _read_records(paths: Sequence[str]) -> list[dict[str, Any]]:
    """The runs of earlier ``--json`` files, each tagged with the file it came from."""
    out = []
    for path in paths:
        try:
            runs = json.loads(Path(path).read_text())["runs"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"--records {path}: not a table JSON written by --json ({e})") from None
        out += [dict(r, recorded=r.get("recorded") or str(path)) for r in runs if isinstance(r, dict)]
    return out


def _values(records: Iterable[dict[str, Any]], key: str) -> dict[int, float]:
    """``{seed: value}`` of a metric (``render_s``, ``train_min`` or a metrics key), null values left out."""
    out = {}
    for r in records:
        if key == "train_min":
            value = r["summary"].get("train_time_s")
            value = None if value is None else value / 60
        elif key == "render_s":
            value = None if r.get("render") is None else r["render"]["median_ms"] / 1000
        else:
            value = r["summary"]["metrics"].get(key)
            value = None if value is None else value * SCALE.get(key, 1)
        if value is not None:
            out[r["seed"]] = float(value)
    return out


def _cell(values: Sequence[float], n: int, digits: int) -> str:
    if not values:
        return "-"
    if len(values) >= 2:
        text = f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    else:
        text = f"{values[0]:.{digits}f}"
    return text if len(values) == n else f"{text} ({len(values)} of {n})"


def _digits(key: str) -> int:
    return {"ssim": 3, "train_min": 1, "render_s": 2}.get(key, 2)


def markdown(method: str, records: list[dict[str, Any]], render_size: int) -> str:
    """The table of one method: rows vanilla / ResFields, and the paired ResFields − vanilla differences."""
    columns = [(key, label) for key, label, _ in METRIC_COLUMNS]
    columns += [("train_min", "train min"), ("render_s", f"render s per {render_size}² view")]
    head = ["model", "seeds", *[label for _, label in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_variant = {v: [r for r in records if r["method"] == method and r["variant"] == v] for v in VARIANTS}
    for variant, rows in by_variant.items():
        if not rows:
            continue
        label = "vanilla" if variant == "vanilla" else rows[0]["label"]
        cells = [label, ",".join(str(r["seed"]) for r in rows)]
        cells += [_cell(list(_values(rows, key).values()), len(rows), _digits(key)) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    pairs = {r["seed"] for r in by_variant["vanilla"]} & {r["seed"] for r in by_variant["resfields"]}
    if pairs:
        differences = []
        for key, label, unit in (("psnr", "novel-view PSNR", " dB"), ("chamfer_l1", "Chamfer L1 x1e3", "")):
            vanilla, resfields = _values(by_variant["vanilla"], key), _values(by_variant["resfields"], key)
            paired = [resfields[s] - vanilla[s] for s in sorted(pairs) if s in vanilla and s in resfields]
            differences.append(f"{label} {_signed(paired, 2)}{unit}" if paired else f"{label} -")
        n = len(pairs)
        lines += ["", f"ResFields − vanilla ({n} paired seed{'s' if n != 1 else ''}): " + "; ".join(differences)]
    return "\n".join(lines)


def _signed(values: Sequence[float], digits: int) -> str:
    text = f"{statistics.mean(values):+.{digits}f}"
    return f"{text} ± {statistics.stdev(values):.{digits}f}" if len(values) >= 2 else text


def _label(run: RunConfig) -> str:
    layers = run.model.resfield_layers
    contiguous = len(layers) > 1 and layers == tuple(range(layers[0], layers[-1] + 1))
    listed = f"{layers[0]}-{layers[-1]}" if contiguous else ",".join(map(str, layers))
    return f"ResFields (layers {listed}, rank {run.model.rank})"


def _document(command: str, base: RunConfig, args: argparse.Namespace, records: list[dict[str, Any]]) -> str:
    parts = [f"    {command}", ""]
    parts.append(
        f"Recipe {RECIPE}: {base.train.steps} steps, batch {base.train.batch_size}, {args.backend}"
        f" on {args.device or 'cpu'}; renders {args.render_size}x{args.render_size}."
    )
    for method in args.methods.split(","):
        if any(r["method"] == method for r in records):
            parts += ["", f"### {method}", "", markdown(method, records, args.render_size)]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run (or reuse) every run of the table, print its markdown; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    parser.add_argument(
        "--seeds", action="append", default=None, help="[METHOD=]SEED,SEED,... (default tnerf=0,1,2, the others 0)"
    )
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="runs/nerf_table")
    parser.add_argument("--json", default=None, help="write every run's summary here after each run")
    parser.add_argument("--markdown", default=None, help="also write the markdown here after each run")
    parser.add_argument("--render-size", type=int, default=256, help="timed render size (0: do not time)")
    parser.add_argument(
        "--render-views", type=int, default=2, help="orbit views per timed render; the first builds the grid"
    )
    parser.add_argument("--resume-existing", action="store_true", help="keep finished runs already in OUT")
    parser.add_argument("--reuse", action="append", default=[], help="a finished run folder to take a run from")
    parser.add_argument(
        "--records", action="append", default=[], help="an earlier --json file whose finished runs may be taken"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--set", action="append", default=[], help="nerf.SECTION.KEY=VALUE, e.g. nerf.model.width=64")
    raw = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(raw)
    command = "python -m resfields.benchmarks.nerf_table" + (" " + shlex.join(raw) if raw else "")
    methods = args.methods.split(",")
    base = RECIPES[RECIPE].run
    if args.steps is not None:
        base = replace(base, train=replace(base.train, steps=args.steps))
    base = _apply_overrides(base, "nerf", args.set)
    if not base.model.resfield_layers:
        raise SystemExit(
            "the ResFields variant needs ResField layers: --set nerf.model.resfield_layers cannot be empty"
        )
    seeds = parse_seeds(args.seeds, methods)
    records: list[dict[str, Any]] = []
    candidates = [Path(p) for p in args.reuse]
    earlier = _read_records(args.records)
    for job in jobs(base, seeds, Path(args.out)):
        look = ([job.folder] if args.resume_existing else []) + candidates
        found = next(((f, s) for f in look if (s := finished_summary(f, job.run)) is not None), None)
        old = None if found is not None else recorded_run(earlier, job.run)
        if found is not None:
            folder, summary = found
        elif old is not None:
            folder, summary = Path(old["folder"]), old["summary"]
        else:
            folder = job.folder
            options = {"backend": args.backend, "device": args.device, "progress": args.progress}
            summary = fit(job.run, folder, overwrite=True, media=False, **options)
        render = None
        if old is not None:  # the folder may not be here to render again: the recorded timing, at this size only
            render = old.get("render") if old.get("render_size") == args.render_size else None
        elif args.render_size > 0:
            render = time_renders(str(folder), args.backend, args.render_size, args.render_views)
        record = {
            "method": job.method,
            "variant": job.variant,
            "label": "vanilla" if job.variant == "vanilla" else _label(job.run),
            "seed": job.seed,
            "folder": str(folder),
            "reused": found is not None or old is not None,
            "recorded": None if old is None else old["recorded"],
            "run": config_to_dict(job.run),
            "summary": finite_or_none(summary),
            "render": render,
            "render_size": args.render_size if render is not None else None,
        }
        records.append(record)
        m = record["summary"]["metrics"]
        chamfer = m.get("chamfer_l1")
        print(
            f"{job.method} {job.variant} seed {job.seed}: PSNR {_fmt(m.get('psnr'))} dB, Chamfer x1e3 "
            f"{_fmt(None if chamfer is None else chamfer * 1e3)}, {summary['train_time_s'] / 60:.1f} min"
            + (" (reused " + str(folder) + ")" if found is not None else "")
            + (" (recorded in " + old["recorded"] + ")" if old is not None else ""),
            file=sys.stderr,
            flush=True,
        )
        document = _document(command, base, args, records)
        if args.json:
            payload = {"command": command, "recipe": RECIPE, "render_size": args.render_size, "runs": records}
            Path(args.json).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        if args.markdown:
            Path(args.markdown).write_text(document)
    print(_document(command, base, args, records), end="", flush=True)
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
