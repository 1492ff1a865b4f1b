"""``from_pretrained`` / ``save_pretrained``: fitted ResFields models as Hub-layout folders.

>>> model = from_pretrained("resfields/nerf-bunny")                       # doctest: +SKIP
>>> views = model.render(model.scene.orbit(1, 96)[0], time=0.0)          # doctest: +SKIP
>>> model = from_pretrained("resfields/video-bikes", backend="numpy")     # doctest: +SKIP
>>> rgb = model.predict(xy, frame_ids=ids)                                # doctest: +SKIP

An id resolves, in order, to: an existing local folder; a zoo id (``resfields/NAME`` or ``NAME``)
whose checkpoint ships with the package (its files' SHA-256 are checked against the registry); a
Hugging Face Hub repo id, downloaded through ``huggingface_hub`` (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``
and the cache apply; see :mod:`resfields.zoo.hub`). Loading is strict: a missing or unexpected tensor,
a wrong shape, a schema version from the future or a mismatch between the stored model and its
recipe raise :class:`~resfields.errors.CheckpointError`. Only JSON and safetensors are read.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from resfields.backends import INFERENCE_BACKENDS
from resfields.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    Checkpoint,
    check_arrays,
    checkpoint_path,
    save_checkpoint,
    shared_mode,
)
from resfields.errors import CheckpointError, SpecError, short_repr
from resfields.spec import spec_differences

from .card import CARD_NAME, write_card
from .registry import get_entry, verify_hashes

__all__ = ["BACKEND_NAMES", "Pretrained", "from_pretrained", "resolve", "save_pretrained"]

BACKEND_NAMES = INFERENCE_BACKENDS  # the names from_pretrained takes


def resolve(
    id_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    endpoint: str | None = None,
) -> Path:
    """The local folder of a checkpoint given as a folder, a zoo id or a Hub repo id (see module doc).

    Raises:
        CheckpointError: an empty id; a folder without ``config.json`` and ``model.safetensors``; a
            shipped zoo checkpoint whose files do not match the registry; an id that is no folder, no
            zoo id and no valid Hub repo id (the broken naming rule is named); any failure of
            :func:`resfields.zoo.hub.download` (invalid revision, not found, failed verification, ...).
        SpecError: ``revision`` given with a local folder.
    """
    name = str(id_or_path)
    if not name:  # Path("") is the current folder: an empty id must not silently mean it
        raise CheckpointError(
            "an empty id names no checkpoint (a folder, a zoo id or a Hub repo id); use '.' for this folder"
        )
    path = Path(id_or_path)
    if _is_dir(path):
        if revision is not None:
            raise SpecError(f"{path}: revision={revision!r} applies to Hub ids, not to a local folder")
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (path / n).is_file()]
        if missing:
            raise CheckpointError(f"{path} is a folder but no checkpoint: it has no {' and no '.join(missing)}")
        return path
    entry = get_entry(name)
    if entry is not None and revision is None and entry.local_folder().is_dir():
        verify_hashes(entry.local_folder(), entry.files, f"zoo checkpoint {entry.id}")
        return entry.local_folder()
    from .hub import download, repo_id_problem

    problem = repo_id_problem(name)
    if problem is not None:
        raise CheckpointError(
            f"{short_repr(name)} is neither a folder, nor a zoo id, nor a valid Hub repo id: {problem}"
        )
    return download(
        entry.id if entry is not None else name,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        expected_sha256=entry.files if entry is not None and revision is None else None,
        endpoint=endpoint,
    )


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False for a name no file system accepts (too long, a NUL byte)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


@dataclass
class Pretrained:
    """A fitted model on a backend. ``run`` is its recipe (task, data, model, training), ``checkpoint``
    the loaded weights and metadata, ``folder`` where it was read from.

    Field tasks (video, sdf, flow): :meth:`predict`. NeRF: :attr:`scene` (a
    :class:`~resfields.tasks.nerf.fitted.FittedNerf`) and :meth:`render`. Every task: :meth:`evaluate`
    (needs the task's data) and :meth:`save_pretrained`.
    """

    run: Any
    checkpoint: Checkpoint
    backend: str
    device: str | None
    folder: Path

    @property
    def task(self) -> str:
        return self.run.task

    @property
    def metadata(self) -> dict[str, Any]:
        return self.checkpoint.metadata

    @cached_property
    def model(self) -> Any:
        """The backend's model (torch ``nn.Module``, tinygrad object, or the float64 reference's), built
        once: :meth:`predict`, :attr:`scene`, :meth:`render`, :meth:`evaluate` and
        :meth:`save_pretrained` all use it, so weights edited or fine-tuned in place are what they see."""
        from resfields.backends import get_backend

        return get_backend(self.backend).build(self.checkpoint.spec, self.checkpoint.arrays, self.device)

    def arrays(self) -> dict[str, np.ndarray]:
        """The model's current parameters, ``{canonical name: float32 array}``."""
        from resfields.backends import get_backend

        return get_backend(self.backend).to_numpy(self.model)

    def predict(self, x: Any, frame_ids: Any = None, times: Any = None) -> np.ndarray:
        """Field tasks: ``x`` (N, I) with ``frame_ids`` or ``times`` (N,) -> (N, O) NumPy (float64 on
        "numpy", the reference, which bakes ``W(t)`` once per distinct key; float32 otherwise)."""
        if self.task == "nerf":
            raise SpecError("a nerf model renders rays: use .render(camera, time=...) or .scene")
        from resfields.tasks.common.fit import make_predict

        return make_predict(self.backend, self.model)(np.asarray(x, np.float32), frame_ids, times)

    @cached_property
    def scene(self) -> Any:
        """NeRF: the :class:`~resfields.tasks.nerf.fitted.FittedNerf` (render, orbit, mesh) of :attr:`model`."""
        if self.task != "nerf":
            raise SpecError(f"a {self.task} model has no scene to render; use .predict")
        from resfields.backends import get_backend
        from resfields.tasks.nerf.fitted import nerf_on_model, stored_scene

        scene = stored_scene(self.run, self.checkpoint, f"{self.folder}: {CONFIG_NAME}")
        return nerf_on_model(self.run, scene, get_backend(self.backend), self.model)

    def render(self, camera: Any, *, time: float | None = None, frame: int | None = None) -> dict[str, np.ndarray]:
        """NeRF: ``rgb`` (H, W, 3), ``opacity``/``depth`` (H, W), ``normals`` (H, W, 3) of ``camera`` at a
        normalised ``time`` or a ``frame``."""
        return self.scene.render(camera, time=time, frame=frame)

    def evaluate(self, **data_overrides: Any) -> dict[str, Any]:
        """The task's metrics (``resfields eval``) of :attr:`model` on this backend; needs the task's data:
        the embedded default, or ``source=PATH`` (a data path stored in a checkpoint is never read on
        its own)."""
        from resfields.tasks.common.fit import evaluate_run

        return evaluate_run(
            self.folder,
            backend=self.backend,
            device=self.device,
            data_overrides=data_overrides,
            stored_source=False,
            model=self.model,
        )

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> Path:
        """Save :attr:`model`'s current weights (see :func:`save_pretrained`)."""
        return save_pretrained(self, folder, **kwargs)


def from_pretrained(
    id_or_path: str | Path,
    *,
    backend: str = "torch",
    device: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    endpoint: str | None = None,
) -> Pretrained:
    """Load a fitted model from a folder, a zoo id or a Hub repo id onto ``backend`` ("torch",
    "tinygrad" or "numpy", the float64 reference). ``revision`` pins a Hub branch, tag or commit.

    Raises:
        SpecError: an unknown ``backend``, or ``revision`` with a local folder.
        CheckpointError: whatever :func:`resolve` refuses, and a checkpoint that does not load or is not
            the model its run config describes.
    """
    if backend not in BACKEND_NAMES:
        raise SpecError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
    folder = resolve(
        id_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, endpoint=endpoint
    )
    run, ckpt = _load_checked(folder)
    return Pretrained(run=run, checkpoint=ckpt, backend=backend, device=device, folder=folder)


def _load_checked(folder: Path) -> tuple[Any, Checkpoint]:
    """The run and checkpoint of ``folder``; CheckpointError if the stored model is not the one its
    recipe builds (a tampered or mismatched config.json)."""
    from resfields.tasks import get_task
    from resfields.tasks.common.fit import load_run

    try:
        run, ckpt = load_run(folder)
    except SpecError as err:  # a bad run config inside a checkpoint is a bad checkpoint
        raise CheckpointError(f"{folder}: invalid run config in {CONFIG_NAME} ({err})") from err
    task = get_task(run.task)(run.data, run.model)
    expected = task.checkpoint_spec(ckpt.spec, ckpt.metadata, f"{folder}: {CONFIG_NAME}")
    if expected is not None and expected != ckpt.spec:
        raise CheckpointError(
            f"{folder}: the stored model does not match the one its run config describes "
            f"({spec_differences(ckpt.spec, expected)})"
        )
    return run, ckpt


def save_pretrained(
    model: Pretrained | str | Path,
    folder: str | Path,
    *,
    dtype: str = "float32",
    card: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a model card ``README.md`` to ``folder``.

    ``model`` is a :class:`Pretrained` or a run folder (``resfields fit``). ``dtype`` "float16" halves
    the files (check the metrics after: ``resfields eval``). ``card`` adds to the card: ``id``,
    ``description``, ``metrics`` ({backend: metrics}), ``check`` (the cross-backend result), ``license``.
    The folder is written through a temporary sibling and renamed into place, so a failure leaves no
    half-written model folder.

    Raises:
        CheckpointError: the source does not load or does not match its recipe, its ``metrics.json``
            is no JSON or a symlink out of it, or ``folder`` exists, is not empty and holds no checkpoint.
        SpecError: ``dtype`` is not a storage dtype.
    """
    source = model.folder if isinstance(model, Pretrained) else Path(model)
    edited = False
    if isinstance(model, Pretrained):  # what is in memory, not what was read
        run, stored = model.run, model.checkpoint
        arrays = check_arrays(stored.spec, model.arrays(), "the model's weights")
        edited = any(not np.array_equal(arrays[k], stored.arrays[k]) for k in arrays)
        # metrics measured on the stored weights say nothing about edited ones
        metadata = {k: v for k, v in stored.metadata.items() if not (edited and k == "metrics")}
        ckpt = Checkpoint(spec=stored.spec, arrays=arrays, metadata=metadata)
    else:
        run, ckpt = _load_checked(source)
    target = Path(folder)
    if target.exists() and not (target / CONFIG_NAME).is_file() and any(target.iterdir()):
        raise CheckpointError(f"{target} exists, is not empty and holds no checkpoint: refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(shared_mode(0o777))  # mkdtemp makes 0700; a model folder is shared like any folder
    try:
        save_checkpoint(staging, ckpt.spec, ckpt.arrays, metadata=ckpt.metadata, dtype=dtype)  # type: ignore[arg-type]
        extra = dict(card or {})
        write_card(staging / CARD_NAME, run, ckpt.metadata, dtype=dtype, **extra)
        metrics = checkpoint_path(source, "metrics.json")  # a link out would copy (and publish) another file
        if metrics.is_file() and not edited:
            try:
                measured = json.loads(metrics.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
                raise CheckpointError(f"{source / 'metrics.json'}: not valid JSON: {e}") from e
            (staging / "metrics.json").write_text(json.dumps(measured, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
