"""``resfields fit TASK`` and ``resfields eval RUN``: argument parsing over the config dataclasses.

Options come from the dataclasses themselves (a field ``n_frames`` of the task's data options is
``--n-frames``), so a new data option needs no CLI code.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from resfields.backends import BACKENDS, INFERENCE_BACKENDS
from resfields.decode import decode_value
from resfields.errors import CheckpointError, SpecError
from resfields.report import format_metrics, report
from resfields.tasks import TASKS, get_task
from resfields.tasks.common.config import ModelConfig, RunConfig, TrainConfig

__all__ = ["add_eval_parser", "add_fit_parser"]

_MODEL_PREFIX, _TRAIN_PREFIX, _DATA_PREFIX = "model__", "train__", "data__"


def _parse_value(hint: Any, text: str) -> Any:
    """Command-line text -> a value of type ``hint`` (lists are comma-separated; 'none' is None/empty)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none":
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        parts = [] if text.lower() in ("", "none") else text.split(",")
        return tuple(_parse_value(args[0], p.strip()) for p in parts)
    if origin is Literal or hint is str:
        return text
    if hint is bool:
        return text.lower() in ("1", "true", "yes")
    try:
        return hint(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected {hint.__name__}, got {text!r}") from err


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _non_negative(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected a non-negative {kind.__name__}, got {text!r}") from err
        if not value >= 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a non-negative {kind.__name__}, got {text!r}")
        return value

    return parse


def _add_dataclass_options(parser: argparse.ArgumentParser, cls: type, prefix: str, title: str) -> None:
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else None
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=prefix + f.name,
            type=lambda text, hint=hint: _parse_value(hint, text),
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=f.name.upper() if choices is None else None,
        )


def _overrides(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in vars(args).items() if k.startswith(prefix)}


def _run_from_args(args: argparse.Namespace) -> RunConfig:
    task = get_task(args.task)
    model, train = task.defaults()
    data_options = _overrides(args, _DATA_PREFIX)
    if args.data is not None:
        data_options["source"] = args.data
    try:
        data = task.Data(**data_options)
        model = replace(model, **_overrides(args, _MODEL_PREFIX))
        train = replace(train, **_overrides(args, _TRAIN_PREFIX))
    except TypeError as err:
        raise SpecError(str(err)) from err
    # check every value's type once, exactly as a stored run config is checked
    for config in (data, model, train):
        hints = typing.get_type_hints(type(config))
        for f in dataclasses.fields(config):
            decode_value(hints[f.name], getattr(config, f.name), f"--{f.name.replace('_', '-')}")
    return RunConfig(task=args.task, data=data, model=model, train=train)


def _resumed_run(args: argparse.Namespace, stored: RunConfig, out: str) -> RunConfig:
    """The stored run with ``--steps`` (if given); SpecError naming every other option given that differs."""
    given = {
        section: _overrides(args, prefix)
        for section, prefix in (("data", _DATA_PREFIX), ("model", _MODEL_PREFIX), ("train", _TRAIN_PREFIX))
    }
    if args.data is not None:
        given["data"]["source"] = args.data
    steps = given["train"].pop("steps", stored.train.steps)
    differ = []
    for section, options in given.items():
        config = getattr(stored, section)
        for key, value in options.items():
            if not hasattr(config, key):
                continue
            have = getattr(config, key)
            if key == "source" and _same_path(value, have):
                continue
            if value != have:
                flag = "--data" if key == "source" else f"--{key.replace('_', '-')}"
                differ.append(f"{flag} {value!r} (the run has {have!r})")
    if differ:
        raise SpecError(
            f"cannot resume {out}: {', '.join(differ)}; a resumed run keeps its options and only --steps may "
            "change; to train with other options start a new run (--overwrite, or another --out)"
        )
    try:
        return replace(stored, train=replace(stored.train, steps=steps))
    except TypeError as err:
        raise SpecError(str(err)) from err


def _same_path(a: Any, b: Any) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _fit(args: argparse.Namespace) -> int:
    from resfields.tasks.common.distributed import check_backend, launch, ranks_from_environment

    ranks = ranks_from_environment()  # set by torchrun
    if args.nproc == 1:
        return _fit_rank(ranks, args)
    if ranks is not None:
        raise SpecError(
            f"--nproc {args.nproc} starts its own processes; under torchrun leave it out "
            f"(torchrun already started {ranks.world})"
        )
    check_backend(args.backend, args.nproc)
    if not args.resume:
        _run_from_args(args)  # bad options fail here, once, before any process starts
    launch(args.nproc, _fit_rank, (args,))
    return 0


def _fit_rank(ranks: Any, args: argparse.Namespace) -> int:
    """``fit`` as one process (``ranks`` None) or one rank of a distributed run; only rank 0 prints."""
    from resfields.tasks.common.fit import fit, load_run
    from resfields.tasks.common.runfolder import check_not_in_use

    main = ranks is None or ranks.main
    out = args.out or f"runs/{args.task}"
    if args.resume:
        try:
            stored, _ = load_run(out)
        except CheckpointError:
            check_not_in_use(out)  # a run being written has no complete save yet: say that instead
            raise
        if stored.task != args.task:
            raise SpecError(f"cannot resume {out}: it holds a {stored.task} run, not {args.task}")
        run = _resumed_run(args, stored, out)
    else:
        run = _run_from_args(args)
    options = {"backend": args.backend, "device": args.device, "progress": not args.quiet, "media": args.media}
    options |= {"save_every": args.save_every, "save_interval_s": args.save_interval}

    def announce(resolved: dict[str, Any]) -> None:  # before the progress bar: what the options resolved to
        if not args.json:
            ranks_text = "" if ranks is None else f" ({ranks.world} processes)"
            print(f"data: {resolved['data']}", flush=True)
            print(f"model: {resolved['model']}; {resolved['parameters']} parameters{ranks_text}", flush=True)

    summary = fit(run, out, resume=args.resume, overwrite=args.overwrite, announce=announce, ranks=ranks, **options)
    if not main:
        return 0
    lines = [
        f"fitted {run.task} on {summary['backend']} ({summary['device']}): {summary['steps']} steps in "
        f"{summary['train_time_s']:.1f} s "
        f"({summary['step_time_ms']:.1f} ms a step)",
        *format_metrics(summary["metrics"]),
        f"run folder: {out}",
    ]
    report({**summary, "run_folder": str(out)}, lines, as_json=args.json)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from resfields.tasks.common.fit import evaluate_run, load_run

    folder = args.resolve()  # the folder of a run folder, zoo id or Hub id (resfields.cli)
    run, _ = load_run(folder)
    hints = typing.get_type_hints(type(run.data))
    overrides = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or key not in hints:
            raise SpecError(f"--set expects KEY=VALUE with KEY one of {sorted(hints)}, got {item!r}")
        try:
            overrides[key] = _parse_value(hints[key], text)
        except argparse.ArgumentTypeError as err:
            raise SpecError(f"--set {key}: {err}") from err
    if args.data is not None:
        overrides["source"] = args.data
    options = {"backend": args.backend, "device": args.device, "out_dir": args.out, "media": args.media}
    # a checkpoint may come from anyone: the data it was trained on is read only from a path given here
    summary = evaluate_run(folder, data_overrides=overrides, stored_source=False, **options)
    lines = [
        f"evaluated {args.run} ({run.task}) on {summary['backend']} ({summary['device']}) "
        f"in {summary['eval_time_s']:.1f} s",
        *format_metrics(summary["metrics"]),
    ]
    if args.out is not None:
        lines.append(f"wrote {Path(args.out) / 'metrics.json'}")
    report(summary, lines, as_json=args.json)
    return 0


def add_fit_parser(sub: Any) -> None:
    """Register ``fit TASK`` on an argparse sub-parser collection."""
    fit = sub.add_parser("fit", help="fit a task (video, sdf, flow, nerf) on its data")
    tasks = fit.add_subparsers(dest="task", required=True)
    for name in TASKS:
        task = get_task(name)
        model, train = task.defaults()
        parser = tasks.add_parser(
            name,
            help=f"fit the {name} task",
            description=(task.__doc__ or "").strip().splitlines()[0],
        )
        parser.set_defaults(task=name, func=_fit)
        parser.add_argument("--data", default=None, help="data file or folder (default: the embedded data)")
        parser.add_argument("--backend", choices=BACKENDS, default="torch")
        parser.add_argument("--device", default=None, help="cpu (default) or cuda")
        parser.add_argument(
            "--nproc",
            type=_positive_int,
            default=1,
            metavar="N",
            help="train on N processes of this machine with torch DDP (torch only; --batch-size is the global "
            "batch, split across them); under torchrun leave it out",
        )
        parser.add_argument(
            "--out", default=None, help=f"run folder (default: runs/{name}); new or empty unless --resume/--overwrite"
        )
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue the run in --out with its stored options up to --steps (default: its own); "
            "a run stopped and resumed with the same --steps ends exactly as an uninterrupted one; "
            "a larger --steps continues from the current step with the cosine schedule of the new total",
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="replace the run (or other files) already in --out"
        )
        parser.add_argument(
            "--save-every", type=_non_negative(int), default=None, metavar="STEPS", help="also save every STEPS steps"
        )
        parser.add_argument(
            "--save-interval",
            type=_non_negative(float),
            default=120.0,
            metavar="SECONDS",
            help="save the run at least every SECONDS of training (default: 120; 0: only at the end)",
        )
        parser.add_argument("--no-media", dest="media", action="store_false", help="skip videos, images and meshes")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON (and nothing else)")
        _add_dataclass_options(parser, task.Data, _DATA_PREFIX, f"{name} data options")
        _add_dataclass_options(parser, getattr(task, "Model", ModelConfig), _MODEL_PREFIX, f"model (defaults: {model})")
        _add_dataclass_options(parser, TrainConfig, _TRAIN_PREFIX, f"training (defaults: {train})")


def add_eval_parser(sub: Any) -> None:
    """Register ``eval`` on an argparse sub-parser collection."""
    parser = sub.add_parser("eval", help="re-evaluate a run folder's checkpoint on a backend")
    parser.add_argument("run", help="a run folder written by `resfields fit`, a zoo id or a Hub repo id")
    parser.add_argument("--revision", default=None, help="pin a Hub revision (branch, tag or commit)")
    parser.add_argument("--backend", choices=INFERENCE_BACKENDS, default="torch")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None, help="write metrics.json (and media with --media) here")
    parser.add_argument("--media", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (and nothing else)")
    parser.add_argument(
        "--data",
        default=None,
        help="the data to evaluate on; needed when the run was trained on a file "
        "(eval reads no path that a checkpoint names)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="change a data option, e.g. resolution=32"
    )
    parser.set_defaults(func=_eval)
