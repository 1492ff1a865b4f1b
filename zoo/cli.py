"""``resfields zoo list | pull | publish | train``."""

from __future__ import annotations

import argparse
from typing import Any

from resfields.backends import BACKENDS
from resfields.report import format_metrics, report

__all__ = ["add_zoo_parser"]


def _list(args: argparse.Namespace) -> int:
    from .registry import load_registry

    rows, lines = [], []
    for entry in load_registry().values():
        shipped = entry.local_folder().is_dir()
        size = sum(p.stat().st_size for p in entry.local_folder().rglob("*") if p.is_file()) if shipped else 0
        metrics = next(iter(entry.metrics.values()), {})  # the first measurement listed (end of training)
        rows.append(
            {
                "id": entry.id,
                "task": entry.task,
                "shipped": shipped,
                "size_bytes": size,
                "check_passed": bool(entry.check.get("passed")),
                "metrics": entry.metrics,
                "description": entry.description,
            }
        )
        check = "check passed" if entry.check.get("passed") else "check not passed"
        where = f"shipped, {size / 1e6:.2f} MB" if shipped else "Hub only"
        shown = ", ".join([f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float) and "ms" not in k][:5])
        lines += [f"{entry.id:32s} {entry.task:5s} {where}, {check}", f"    {entry.description}"]
        lines += [f"    {shown}"] if shown else []
    report(rows, lines, as_json=args.json)
    return 0


def _pull(args: argparse.Namespace) -> int:
    from resfields.checkpoint import load_checkpoint

    from .pretrained import resolve

    folder = resolve(args.id, revision=args.revision, cache_dir=args.cache_dir, local_files_only=args.offline)
    load_checkpoint(folder)  # a local folder was only checked for its two files; print only what loads
    print(folder)
    return 0


def _publish(args: argparse.Namespace) -> int:
    from .hub import push_to_hub

    commit = push_to_hub(args.folder, args.repo_id, revision=args.revision, private=args.private)
    done = {"repo_id": args.repo_id, "revision": args.revision or "main", "commit": commit}
    report(done, [f"pushed {args.folder} to {args.repo_id}@{done['revision']} (commit {commit})"], as_json=args.json)
    return 0


def _train(args: argparse.Namespace) -> int:
    from .recipes import train_recipe

    entry = train_recipe(
        args.name, backend=args.backend, device=args.device, retrain=not args.reuse, progress=not args.quiet
    )
    done = {"id": entry.id, "folder": entry.folder, "metrics": entry.metrics, "check": entry.check}
    verdict = "passed" if entry.check.get("passed") else "FAILED"
    lines = [f"trained {entry.id} into {entry.folder}; cross-backend check {verdict}"]
    for backend, metrics in entry.metrics.items():
        lines += [f"  {backend}:", *format_metrics(metrics, "    ")]
    report(done, lines, as_json=args.json)
    return 0 if entry.check.get("passed") else 1


def add_zoo_parser(sub: Any) -> None:
    """Register ``zoo`` and its sub-commands on an argparse sub-parser collection."""
    from .recipes import RECIPES

    zoo = sub.add_parser("zoo", help="pretrained checkpoints: list, pull, publish, train")
    commands = zoo.add_subparsers(dest="zoo_command", required=True)
    listing = commands.add_parser("list", help="the zoo's checkpoints, with their metrics")
    listing.add_argument("--json", action="store_true", help="as JSON (ids, files, metrics, checks)")
    listing.set_defaults(func=_list)
    pull = commands.add_parser("pull", help="download a zoo or Hub checkpoint into the cache; prints its folder")
    pull.add_argument("id", help="a zoo id (resfields/NAME), a Hub repo id or a folder")
    pull.add_argument("--revision", default=None, help="a branch, tag or commit to pin")
    pull.add_argument("--cache-dir", default=None)
    pull.add_argument("--offline", action="store_true", help="use the cache only, never the network")
    pull.set_defaults(func=_pull)
    publish = commands.add_parser("publish", help="upload a checkpoint folder to a Hub repo")
    publish.add_argument("folder")
    publish.add_argument("--repo-id", required=True, metavar="ORG/NAME")
    publish.add_argument("--revision", default=None, help="a branch to push to (created if missing)")
    publish.add_argument("--private", action="store_true")
    publish.add_argument("--json", action="store_true")
    publish.set_defaults(func=_publish)
    train = commands.add_parser("train", help="re-create a zoo checkpoint from its recipe (fit, export, eval, check)")
    train.add_argument("name", choices=sorted(RECIPES))
    train.add_argument("--backend", choices=BACKENDS, default="torch")
    train.add_argument("--device", default=None)
    train.add_argument("--reuse", action="store_true", help="reuse runs/zoo/NAME if it was trained already")
    train.add_argument("--quiet", action="store_true")
    train.add_argument("--json", action="store_true")
    train.set_defaults(func=_train)
