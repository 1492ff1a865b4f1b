"""The zoo's registry: which pretrained checkpoints exist, what they are, and the hashes of their files.

``registry.json`` (next to this file) maps a zoo id (also its Hub repo id, ``resfields/NAME``) to the
task, a description, the folder of the checkpoint shipped in this package (``checkpoints/NAME``), the
SHA-256 of every file, the metrics measured by ``resfields eval`` and the cross-backend check. It is
written by ``resfields zoo train NAME`` (see :mod:`resfields.zoo.recipes`), never by hand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resfields.checkpoint import checkpoint_path
from resfields.errors import CheckpointError

__all__ = [
    "REGISTRY_PATH",
    "ZooEntry",
    "file_sha256",
    "folder_hashes",
    "get_entry",
    "load_registry",
    "save_entry",
    "verify_hashes",
]

REGISTRY_PATH = Path(__file__).with_name("registry.json")
CHECKPOINTS = Path(__file__).with_name("checkpoints")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ZooEntry:
    """One pretrained checkpoint. ``folder`` is relative to the zoo package; ``files`` maps file name
    to SHA-256; ``metrics`` are ``resfields eval``'s, per backend; ``check`` is the cross-backend result."""

    id: str
    task: str
    description: str
    folder: str
    files: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The id without its organisation: ``resfields/nerf-bunny`` -> ``nerf-bunny``."""
        return self.id.split("/", 1)[-1]

    def local_folder(self) -> Path:
        """The checkpoint shipped with the package (may be absent from a stripped install)."""
        return Path(__file__).parent / self.folder


def load_registry(path: Path = REGISTRY_PATH) -> dict[str, ZooEntry]:
    """``{id: ZooEntry}``; an absent registry is empty; a malformed one raises CheckpointError."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        version = data.get("schema_version")
        if type(version) is not int or version != SCHEMA_VERSION:  # (True == 1 in Python)
            raise CheckpointError(f"{path}: registry schema_version must be {SCHEMA_VERSION}")
        return {key: ZooEntry(id=key, **value) for key, value in data["models"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise CheckpointError(f"{path}: malformed zoo registry ({type(err).__name__}: {err})") from err


def get_entry(name_or_id: str) -> ZooEntry | None:
    """The entry for ``resfields/NAME`` or plain ``NAME``; None when the zoo has no such entry."""
    registry = load_registry()
    if name_or_id in registry:
        return registry[name_or_id]
    matches = [e for e in registry.values() if e.name == name_or_id]
    return matches[0] if len(matches) == 1 else None


def save_entry(entry: ZooEntry, path: Path = REGISTRY_PATH) -> None:
    """Add or replace ``entry`` in the registry file (sorted by id, stable JSON)."""
    entries = load_registry(path)
    entries[entry.id] = entry
    models = {key: {k: v for k, v in vars(e).items() if k != "id"} for key, e in sorted(entries.items())}
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "models": models}, indent=2, sort_keys=True) + "\n")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def folder_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a checkpoint folder, by path relative to it (sorted)."""
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def verify_hashes(folder: Path, expected: Mapping[str, str], where: str | None = None) -> None:
    """CheckpointError naming each missing file and each SHA-256 mismatch of ``folder`` against
    ``expected`` ({relative name: hex digest}), prefixed by ``where``. The one verifier of shipped zoo
    files and of Hub downloads; files are read through :func:`~resfields.checkpoint.checkpoint_path`,
    so a link out of the folder is refused, never hashed."""
    problems = []
    for name, digest in sorted(expected.items()):
        if not (folder / name).is_file():
            problems.append(f"{name} is missing")
        elif (actual := file_sha256(checkpoint_path(folder, name))) != digest.strip().lower():
            problems.append(f"{name}: sha256 mismatch, expected {digest}, got {actual}")
    if problems:
        raise CheckpointError(("" if where is None else f"{where}: ") + "; ".join(problems))
