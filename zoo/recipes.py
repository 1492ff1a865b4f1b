"""How every zoo checkpoint is made: ``resfields zoo train NAME`` runs its recipe end to end.

A recipe is a complete run config (task, data, model, training recipe and seed). Training it writes a
normal run folder under ``runs/zoo/NAME``; then the checkpoint is exported to ``zoo/checkpoints/NAME``
(float16), evaluated by ``resfields eval`` on that exported file, checked on every backend against the
NumPy reference (``resfields conformance --checkpoint``), given its model card, and registered with
the SHA-256 of its files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from resfields.backends import BACKENDS
from resfields.errors import SpecError
from resfields.tasks import get_task
from resfields.tasks.common.config import RunConfig

from .registry import CHECKPOINTS, ZooEntry, folder_hashes, save_entry

__all__ = ["RECIPES", "Recipe", "train_recipe"]

ORG = "resfields"


@dataclass(frozen=True)
class Recipe:
    """A zoo entry's name, description, run config and storage dtype."""

    name: str
    description: str
    run: RunConfig
    dtype: str = "float16"

    @property
    def id(self) -> str:
        return f"{ORG}/{self.name}"


def _default_run(task_name: str, **changes: Any) -> RunConfig:
    task = get_task(task_name)
    model, train = task.defaults()
    data = task.Data()
    sections = {"model": {}, "train": {}, "data": {}}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        sections[section][name] = value
    return RunConfig(
        task_name,
        replace(data, **sections["data"]),
        replace(model, **sections["model"]),
        replace(train, **sections["train"]),
    )


# The dynamic NeRF on this CPU in about 20 minutes: width 64 (a quarter of the paper's cost per sample),
# 16 surface intervals per ray found by 32 SDF queries, a texture field for the fur's detail.
_NERF = dict(
    model__width=64,
    model__anneal_steps=500,
    model__texture_frequencies=8,
    data__n_samples=16,
    data__n_coarse=32,
    train__batch_size=1024,
    train__steps=4000,
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "video-bikes",
            "ResField Siren (layers 1-3, rank 10) fitted to the first 30 frames of bikes at 68x160.",
            _default_run("video"),
        ),
        Recipe(
            "sdf-bunny",
            "ResField Siren (layers 1-3, rank 10): the temporal SDF of the deforming Stanford bunny, 16 frames.",
            _default_run("sdf"),
        ),
        Recipe(
            "flow-bunny",
            "ResField Siren (layers 1-3, rank 10, 3 knots in time): scene flow of the deforming bunny, 17 frames.",
            _default_run("flow"),
        ),
        Recipe(
            "nerf-bunny",
            "Dynamic NeRF (TNeRF, ResField layers 1-7 of the SDF network, rank 10) of the embedded deforming-bunny "
            "scene v2, 16 frames from 4 cameras at 192x192; renders novel views at any time.",
            _default_run("nerf", **_NERF),
        ),
        Recipe(
            "nerf-bunny-vanilla",
            "The vanilla twin of resfields/nerf-bunny (same TNeRF recipe, no ResField layers), for comparison.",
            _default_run("nerf", model__resfield_layers=(), **_NERF),
        ),
    )
}


def train_recipe(
    name: str,
    *,
    work_dir: str | Path = "runs/zoo",
    target_root: Path = CHECKPOINTS,
    backend: str = "torch",
    device: str | None = None,
    check_backends: tuple[str, ...] = BACKENDS,
    progress: bool = True,
    retrain: bool = True,
) -> ZooEntry:
    """Train (unless ``retrain`` is False and the run folder exists), export, evaluate, check, card, register."""
    from resfields.checkpoint import load_checkpoint
    from resfields.tasks.common.fit import evaluate_run, finite_or_none, fit

    from .card import CARD_NAME, write_card
    from .check import check_checkpoint
    from .pretrained import save_pretrained

    if name not in RECIPES:
        raise SpecError(f"unknown zoo recipe {name!r}; choose from {sorted(RECIPES)}")
    recipe = RECIPES[name]
    work = Path(work_dir) / name
    if retrain or not (work / "config.json").is_file():
        fit(recipe.run, work, backend=backend, device=device, progress=progress, media=False, overwrite=True)
    target = Path(target_root) / name
    save_pretrained(work, target, dtype=recipe.dtype)
    trained = json.loads((work / "metrics.json").read_text())["metrics"]
    stored = evaluate_run(target, backend=backend, device=device)["metrics"]
    check = check_checkpoint(target, check_backends, device=device)
    metrics = {f"{backend}, float32 at the end of training": trained, f"{backend}, this {recipe.dtype} file": stored}
    card = {"id": recipe.id, "description": recipe.description, "metrics": metrics, "check": check}
    exported = load_checkpoint(target)
    write_card(target / CARD_NAME, recipe.run, exported.metadata, dtype=recipe.dtype, **card)
    entry = ZooEntry(
        id=recipe.id,
        task=recipe.run.task,
        description=recipe.description,
        folder=str(target.relative_to(Path(__file__).parent))
        if target.is_relative_to(Path(__file__).parent)
        else str(target),
        files=folder_hashes(target),
        metrics=finite_or_none(metrics),
        check={k: check[k] for k in ("passed", "tolerance", "summary", "backends")},
    )
    if Path(target_root) == CHECKPOINTS:
        save_entry(entry)
    return entry
