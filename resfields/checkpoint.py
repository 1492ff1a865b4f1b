"""Checkpoints: a field spec plus its canonical parameters, in Hugging Face Hub layout.

A checkpoint is a folder with two files::

    config.json          {"schema_version": 1, "library": "resfields", "field": {...}, "metadata": {...}}
    model.safetensors    one tensor per canonical name of resfields.spec.parameter_shapes(spec)

The format is data only: JSON and safetensors are parsed, nothing is unpickled or executed.
Loading is strict and every problem (missing or truncated file, a file linked from outside the
folder, bad or too deeply nested JSON, wrong schema version, unknown key, invalid spec,
missing/unexpected/misshaped tensor, non-float dtype, NaN/Inf, a value beyond float32) raises
:class:`~resfields.errors.CheckpointError` naming the problem and the file. A spec that is invalid
*inside* a checkpoint is reported as a CheckpointError too (the SpecError is kept as ``__cause__``),
so a loader has one error family to catch.

Tensors are stored as float32 (default) or float16 and are always returned as float32.

This module is the file format only: NumPy, safetensors and the standard library, no array
framework. A backend model is saved and loaded by :func:`resfields.backends.save_field` /
:func:`resfields.backends.load_field`, where each backend turns its model into canonical arrays and back.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import safetensors
from safetensors import safe_open
from safetensors.numpy import save as _safetensors_save

from resfields.errors import CheckpointError, SpecError
from resfields.jsonio import loads_strict
from resfields.spec import (
    SCHEMA_VERSION,
    AnySpec,
    ModelSpec,
    check_schema_version,
    parameter_shapes,
    spec_from_dict,
    spec_to_dict,
)
from resfields.validate import short_names

__all__ = [
    "CONFIG_NAME",
    "LIBRARY",
    "WEIGHTS_NAME",
    "Checkpoint",
    "check_arrays",
    "checkpoint_files",
    "checkpoint_path",
    "fsync_path",
    "load_checkpoint",
    "save_checkpoint",
    "write_files_atomically",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LIBRARY = "resfields"
STORAGE_DTYPES = ("float32", "float16")

_TOP_LEVEL_KEYS = ("schema_version", "library", "field", "metadata")
# safetensors dtype tags that are accepted on load (all are upcast/downcast to float32).
_FLOAT_TAGS = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
_COMMIT_ID = re.compile(r"[0-9a-f]{40}")

PathLike = str | os.PathLike[str]

_UMASK = os.umask(0)
os.umask(_UMASK)


def shared_mode(mode: int) -> int:
    """``mode`` filtered by the process umask, as ``open``/``mkdir`` would: tempfile's 0600 files and
    0700 folders become what the user would get for an ordinary checkpoint file or folder."""
    return mode & ~_UMASK


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        spec: the field spec from ``config.json``.
        arrays: ``{canonical name: float32 array}``, shapes as :func:`resfields.spec.parameter_shapes`.
        metadata: the free-form ``metadata`` object of ``config.json`` (``{}`` if absent).
    """

    spec: AnySpec
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)

    def field(self, name: str) -> Checkpoint:
        """One field of a model checkpoint, as a checkpoint of its own (names without the prefix)."""
        if not isinstance(self.spec, ModelSpec):
            raise SpecError("this checkpoint holds a single field, not a model")
        prefix = f"{name}."
        arrays = {k[len(prefix) :]: v for k, v in self.arrays.items() if k.startswith(prefix)}
        return Checkpoint(spec=self.spec.field(name), arrays=arrays, metadata=self.metadata)


# ----------------------------------------------------------------------------- validation


def check_arrays(spec: AnySpec, arrays: Mapping[str, Any], where: str = "arrays") -> dict[str, np.ndarray]:
    """Check ``arrays`` against the canonical contract of ``spec``; return them as float32 NumPy arrays.

    Names must equal :func:`resfields.spec.parameter_shapes` exactly, each array must have its
    shape, a floating dtype and only finite values. ``where`` prefixes
    the messages (a file name, say). Raises :class:`CheckpointError` listing every missing,
    unexpected and misshaped tensor.
    """
    expected = parameter_shapes(spec)
    problems = _name_problems(expected, arrays)
    converted: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        if name not in arrays:
            continue
        value = _to_numpy(arrays[name])
        if not np.issubdtype(value.dtype, np.floating):
            problems.append(f"tensor {name!r} has non-float dtype {value.dtype}")
            continue
        if tuple(value.shape) != tuple(shape):
            problems.append(f"tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
            continue
        converted[name] = value
    if problems:
        raise CheckpointError(f"{where}: {'; '.join(problems)}")
    out: dict[str, np.ndarray] = {}
    for name, value in converted.items():
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes Inf, named just below
            value32 = np.ascontiguousarray(value, dtype=np.float32)
        _check_finite(value32, name, where, source=value)
        out[name] = value32
    return out


def _name_problems(expected: Mapping[str, tuple[int, ...]], names: Iterable[str]) -> list[str]:
    """Messages for tensors the contract wants but ``names`` lacks, and for names it does not know."""
    names = set(names)
    missing = [n for n in expected if n not in names]
    unexpected = sorted(n for n in names if n not in expected)
    problems = []
    if missing:
        problems.append(f"missing tensor(s) {short_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s) {short_names(unexpected)}")
    return problems


def _to_numpy(value: Any) -> np.ndarray:
    """NumPy view of a NumPy array, a torch tensor (any device) or anything with ``.numpy()``."""
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    if not isinstance(value, np.ndarray) and hasattr(value, "numpy"):  # tinygrad and friends
        return np.asarray(value.numpy())
    return np.asarray(value)


def _check_finite(value: np.ndarray, name: str, where: str, source: np.ndarray | None = None) -> None:
    """CheckpointError unless ``value`` is all finite. ``source`` is what ``value`` was cast from: a NaN
    or Inf there is reported as such, a finite value that became Inf as out of ``value``'s dtype range."""
    finite = np.isfinite(value)
    if finite.all():
        return
    if source is not None and np.isfinite(source).all():
        dtype = np.dtype(value.dtype)
        peak = float(np.max(np.abs(np.asarray(source, np.float64)[~finite])))
        raise CheckpointError(
            f"{where}: tensor {name!r} has {int(np.count_nonzero(~finite))} finite value(s) out of {dtype} range "
            f"(magnitude up to {peak:.3g}, {dtype} reaches {float(np.finfo(dtype).max):.3g}): they overflow {dtype}"
        )
    stored = finite if source is None else np.isfinite(source)
    bad = int(np.size(stored) - np.count_nonzero(stored))
    raise CheckpointError(f"{where}: tensor {name!r} has {bad} non-finite value(s) (NaN or Inf)")


def _check_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"metadata must be a dict, got {type(metadata).__name__}")
    metadata = dict(metadata)
    if not all(isinstance(k, str) for k in metadata):
        raise CheckpointError("metadata keys must be strings")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"metadata is not JSON-serialisable: {e}") from e
    return metadata


# ----------------------------------------------------------------------------- save


def _writer_is_gone(temp_name: str) -> bool:
    """Whether the writer of ``.NAME.<pid>.XXXX.tmp`` has died (temps without a pid are left alone)."""
    parts = temp_name.split(".")
    pid = next((int(p) for p in reversed(parts[2:-1]) if p.isdigit()), None)
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by someone else
        return False
    return False


def fsync_path(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    """Flush ``path`` (a file, or with ``directory=True`` a folder, making renames in it durable) to disk."""
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_files_atomically(folder: Path, files: dict[str, bytes]) -> None:
    """Write every file to a temporary sibling first, then rename them into place.

    If anything fails before the renames, the folder keeps its previous content (no half-written
    file appears). The weights are renamed before the config, so a reader never sees a new config
    without its weights. The two renames are not one atomic step (a run folder of `resfields fit`
    is: see ``resfields.tasks.common.runfolder``). Temporaries carry the writer's pid, so those of a
    writer that was killed are removed by the next save into the folder.
    """
    for name in files:
        for stale in folder.glob(f".{name}.*.tmp"):
            if _writer_is_gone(stale.name):
                try:
                    stale.unlink()
                except OSError:
                    pass
    temps: dict[str, str] = {}
    try:
        for name, payload in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
            temps[name] = tmp
            os.chmod(tmp, shared_mode(0o666))  # mkstemp makes 0600 files; checkpoints are shared like any file
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
        for name in files:
            os.replace(temps[name], folder / name)
            del temps[name]
    finally:
        for tmp in temps.values():
            try:
                os.unlink(tmp)
            except OSError:
                pass


def checkpoint_files(
    spec: AnySpec,
    arrays: Mapping[str, Any],
    *,
    metadata: Mapping[str, Any] | None = None,
    dtype: Literal["float32", "float16"] = "float32",
) -> dict[str, bytes]:
    """The bytes of ``model.safetensors`` and ``config.json`` that :func:`save_checkpoint` writes
    (validated the same way, same errors), for writers that place the files themselves."""
    if dtype not in STORAGE_DTYPES:
        raise SpecError(f"checkpoint dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    checked = check_arrays(spec, arrays, where="save_checkpoint")
    meta = _check_metadata(metadata)
    with np.errstate(over="ignore"):  # float16 overflow becomes Inf, reported just below
        stored = {name: np.ascontiguousarray(value.astype(dtype)) for name, value in checked.items()}
    for name, value in stored.items():
        _check_finite(value, name, f"save_checkpoint (as {dtype})", source=checked[name])
    config = {"schema_version": SCHEMA_VERSION, "library": LIBRARY, "field": spec_to_dict(spec), "metadata": meta}
    config_bytes = (json.dumps(config, indent=2, allow_nan=False) + "\n").encode("utf-8")
    weights_bytes = _safetensors_save(
        stored, metadata={"format": LIBRARY, "schema_version": str(SCHEMA_VERSION), "dtype": dtype}
    )
    return {WEIGHTS_NAME: weights_bytes, CONFIG_NAME: config_bytes}


def save_checkpoint(
    folder: PathLike,
    spec: AnySpec,
    arrays: Mapping[str, Any],
    *,
    metadata: Mapping[str, Any] | None = None,
    dtype: Literal["float32", "float16"] = "float32",
) -> Path:
    """Save ``spec`` and its parameters to ``folder`` (created if needed); return the folder.

    Args:
        folder: target directory; ``config.json`` and ``model.safetensors`` are (over)written.
        spec: the field spec (LinearSpec, SirenSpec or MLPSpec).
        arrays: ``{canonical name: array}`` with exactly the names and shapes of
            :func:`resfields.spec.parameter_shapes` (NumPy arrays or torch tensors).
        metadata: free-form JSON-serialisable dict stored in ``config.json``.
        dtype: storage dtype of the tensors, "float32" or "float16" (loaded back as float32).

    Raises:
        CheckpointError: the arrays do not match the spec (every missing, unexpected or
            misshaped tensor is named), contain NaN/Inf (also after the float16 cast), or the
            metadata is not JSON. Nothing is written in that case.
        SpecError: ``dtype`` is not a supported storage dtype.
    """
    folder = Path(folder)
    files = checkpoint_files(spec, arrays, metadata=metadata, dtype=dtype)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} exists and is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    write_files_atomically(folder, files)
    return folder


# ----------------------------------------------------------------------------- load


def checkpoint_path(folder: PathLike, name: str) -> Path:
    """The real path of ``folder/name`` (links followed), refused if it leads out of ``folder``.

    A checkpoint folder is data from someone else: a ``model.safetensors`` linking to a file elsewhere
    on disk would make the loader read (and a push upload) that file. The one link allowed out is the
    Hugging Face cache's own layout: in ``<cache>/models--NS--NAME/snapshots/<40 hex>/`` a file may link
    to a file directly inside that same repo cache's ``blobs/``.

    Raises:
        CheckpointError: ``folder/name`` is, or goes through, a symlink leading anywhere else.
    """
    folder = Path(folder)
    root = Path(os.path.realpath(folder))
    target = Path(os.path.realpath(folder / name))
    if target.is_relative_to(root):
        return target
    repo = root.parent.parent
    if root.parent.name == "snapshots" and _COMMIT_ID.fullmatch(root.name) and repo.name.startswith("models--"):
        blobs = Path(os.path.realpath(repo / "blobs"))
        if target.parent == blobs and blobs.parent == repo:
            return target
    raise CheckpointError(
        f"{folder / name} is a symlink to {target}, outside the checkpoint folder {root}: refusing to read it"
    )


def _read_config(path: Path) -> tuple[AnySpec, dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing {CONFIG_NAME}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from e
    data = loads_strict(text, str(path), CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise CheckpointError(f"{path}: unknown top-level key(s) {unknown}; allowed: {list(_TOP_LEVEL_KEYS)}")
    if "schema_version" not in data:
        raise CheckpointError(f"{path}: missing 'schema_version'")
    try:
        check_schema_version(data["schema_version"])
    except SpecError as e:
        raise CheckpointError(f"{path}: {e}") from e
    if "library" in data and data["library"] != LIBRARY:
        raise CheckpointError(f"{path}: 'library' must be {LIBRARY!r}, got {data['library']!r}")
    if "field" not in data:
        raise CheckpointError(f"{path}: missing 'field' (the field spec)")
    try:
        spec = spec_from_dict(data["field"])
    except SpecError as e:
        raise CheckpointError(f"{path}: invalid field spec: {e}") from e
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: 'metadata' must be an object, got {type(metadata).__name__}")
    return spec, metadata


def _read_weights(path: Path, spec: AnySpec) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing {WEIGHTS_NAME}")
    expected = parameter_shapes(spec)
    try:
        with safe_open(str(path), framework="np") as f:
            names = list(f.keys())
            problems = _name_problems(expected, names)
            for name, shape in expected.items():
                if name not in names:
                    continue
                view = f.get_slice(name)
                tag, stored_shape = view.get_dtype(), tuple(view.get_shape())
                if tag not in _FLOAT_TAGS:
                    problems.append(f"tensor {name!r} has unsupported dtype {tag} (expected F16, F32 or F64)")
                elif stored_shape != tuple(shape):
                    problems.append(f"tensor {name!r} has shape {stored_shape}, config expects {tuple(shape)}")
            if problems:
                raise CheckpointError(f"{path}: {'; '.join(problems)} for the field in {CONFIG_NAME}")
            raw = {name: f.get_tensor(name) for name in expected}
    except CheckpointError:
        raise
    except (safetensors.SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file: {e}") from e
    arrays: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes Inf, named just below
            value32 = np.ascontiguousarray(value, dtype=np.float32)
        _check_finite(value32, name, str(path), source=value)
        arrays[name] = value32
    return arrays


def load_checkpoint(folder: PathLike) -> Checkpoint:
    """Load and fully validate a checkpoint folder written by :func:`save_checkpoint`.

    Returns a :class:`Checkpoint` whose ``arrays`` are float32 with the shapes of
    :func:`resfields.spec.parameter_shapes` (float16/float64 tensors are converted).

    Raises:
        CheckpointError: for every problem, naming it and the file: missing folder or file, a file
            that is a symlink out of the folder (see :func:`checkpoint_path`), invalid JSON, JSON
            nested deeper than :data:`resfields.jsonio.MAX_JSON_DEPTH`, wrong ``schema_version``, unknown top-level key,
            invalid field spec (the SpecError is chained as ``__cause__``), corrupt/truncated
            safetensors, missing or unexpected tensors, wrong shapes, non-float dtypes, NaN/Inf values,
            float64 values beyond float32's range.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder does not exist or is not a directory")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        checkpoint_path(folder, name)
    spec, metadata = _read_config(folder / CONFIG_NAME)
    arrays = _read_weights(folder / WEIGHTS_NAME, spec)
    return Checkpoint(spec=spec, arrays=arrays, metadata=metadata)
