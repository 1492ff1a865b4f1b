"""``resfields zoo list | pull | publish | train``."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_zoo_parser"]


def _list(args: argparse.Namespace) -> int:
    from .registry import load_registry

    for entry in load_registry().values():
        present = "shipped" if entry.local_folder().is_dir() else "Hub only"
        size = (
            sum(p.stat().st_size for p in entry.local_folder().rglob("*") if p.is_file()) if present == "shipped" else 0
        )
        check = "check passed" if entry.check.get("passed") else "check not passed"
        print(f"{entry.id:32s} {entry.task:5s} {present}, {size / 1e6:.2f} MB, {check}")
        print(f"    {entry.description}")
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
    print(json.dumps({"repo_id": args.repo_id, "revision": args.revision or "main", "commit": commit}))
    return 0


def _train(args: argparse.Namespace) -> int:
    from .recipes import train_recipe

    entry = train_recipe(
        args.name, backend=args.backend, device=args.device, retrain=not args.reuse, progress=not args.quiet
    )
    print(
        json.dumps({"id": entry.id, "folder": entry.folder, "metrics": entry.metrics, "check": entry.check}, indent=2)
    )
    return 0 if entry.check.get("passed") else 1


def add_zoo_parser(sub: Any) -> None:
    """Register ``zoo`` and its sub-commands on an argparse sub-parser collection."""
    from .recipes import RECIPES

    zoo = sub.add_parser("zoo", help="pretrained checkpoints: list, pull, publish, train")
    commands = zoo.add_subparsers(dest="zoo_command", required=True)
    commands.add_parser("list", help="the zoo's checkpoints").set_defaults(func=_list)
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
    publish.set_defaults(func=_publish)
    train = commands.add_parser("train", help="re-create a zoo checkpoint from its recipe (fit, export, eval, check)")
    train.add_argument("name", choices=sorted(RECIPES))
    train.add_argument("--backend", choices=("torch", "tinygrad"), default="torch")
    train.add_argument("--device", default=None)
    train.add_argument("--reuse", action="store_true", help="reuse runs/zoo/NAME if it was trained already")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=_train)
