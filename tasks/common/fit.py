"""Fit any task on any backend, evaluate a run folder, resume a run.

A run folder is a checkpoint in the core's Hub layout plus what training leaves behind::

    OUT/config.json                  field spec; metadata holds the run config, step, backend, schedule, metrics
    OUT/model.safetensors            the field's parameters (canonical names)
    OUT/training_state.safetensors   Adam's moments under backend-neutral names (for --resume)
    OUT/training_state.json          step, loss history, wall time, cosine schedule, SHA-256 of the other three
    OUT/metrics.json                 the task's metrics, parameter count, timings
    OUT/training_curve.png           loss (and any evaluated metric) against step
    OUT/media/                       the task's videos, images and meshes
    OUT/.run/, OUT/.lock             the saves the four files above link to, and the writer's lock

What a run folder guarantees (:mod:`resfields.tasks.common.runfolder` has the mechanism):

* It is saved as a unit. The four run files are published together by one atomic rename, so every
  state a kill (SIGKILL; a power cut also relies on the fsyncs) can leave is the previous save or the
  new one, complete; ``--resume`` never sees new weights with an old training state, and ``load_checkpoint(OUT)``
  always finds a config and the weights it describes. A save that cannot be written (full disk,
  unwritable folder) raises one CheckpointError and leaves the previous save in place.
* Work is saved before anything that can fail after training: the trained state is saved before
  the final evaluation, and during training every ``save_every`` steps and at least every
  ``save_interval_s`` seconds of wall time (default: every 2 minutes), so a kill loses minutes.
* It is never written into by surprise: ``fit`` creates and locks ``OUT`` before it reads data or
  trains (an unwritable ``--out`` fails at once), refuses a folder another ``fit`` is writing,
  refuses a folder holding a run unless ``resume`` or ``overwrite``, and a non-empty folder holding
  no run unless ``overwrite``.
* Resuming repeats nothing and changes nothing silently: batches are drawn from
  ``np.random.default_rng([seed, step])`` and the schedule, Adam's state and the loss history come
  from the save, so a run stopped at any save (``stop_at``, a kill) and resumed with the same options
  ends with exactly the parameters of an uninterrupted run (bit-for-bit on torch CPU, which is
  tested). ``resume`` refuses other options and fewer steps than done; more steps continue from the
  current step with the cosine schedule of the new total, recorded in ``schedule``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import typing
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save as save_safetensors
from tqdm import tqdm

from resfields.backends import get_backend
from resfields.checkpoint import checkpoint_files, load_checkpoint, write_files_atomically
from resfields.decode import decode_dataclass, decode_value
from resfields.errors import CheckpointError, DataError, ResFieldsError, SpecError, TrainingError
from resfields.init import sample_parameters
from resfields.spec import ModelSpec, spec_differences
from resfields.tasks import get_task
from resfields.tasks.common.config import (
    ModelConfig,
    RunConfig,
    TrainConfig,
    config_to_dict,
)
from resfields.tasks.common.distributed import Ranks, check_backend, process_group, rank_device, shard_batch
from resfields.tasks.common.runfolder import (
    STATE_ARRAYS,
    STATE_JSON,
    RunFolder,
    SavedRun,
    checkpoint_folder,
    read_latest_save,
    sha256,
)
from resfields.validate import short_names

__all__ = [
    "SAVE_INTERVAL_S",
    "evaluate_run",
    "finite_or_none",
    "fit",
    "load_run",
    "make_predict",
    "run_differences",
    "run_from_dict",
]

__all__ += ["STATE_ARRAYS", "STATE_JSON"]  # where they always lived, for callers that read the state files

SAVE_INTERVAL_S = 120.0  # default wall time between saves during training: a kill loses at most ~2 minutes
METRICS = "metrics.json"
CURVE = "training_curve.png"


def run_from_dict(data: Any) -> RunConfig:
    """A :class:`RunConfig` from its JSON form, strictly (unknown keys raise SpecError)."""
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise SpecError("a run config must be an object with a 'task' key naming the task (a string)")
    task = get_task(data["task"])
    unknown = sorted(set(data) - {"task", "data", "model", "train"})
    if unknown:
        raise SpecError(f"run config: unknown key(s) {short_names(unknown)}")
    return RunConfig(
        task=data["task"],
        data=decode_dataclass(task.Data, data.get("data", {}), f"{data['task']}.data"),
        model=decode_dataclass(getattr(task, "Model", ModelConfig), data.get("model", {}), "model"),
        train=decode_dataclass(TrainConfig, data.get("train", {}), "train"),
    )


def load_run(folder: str | Path) -> tuple[RunConfig, Any]:
    """The run config and the :class:`~resfields.checkpoint.Checkpoint` stored in a run folder.

    Both come from the folder's latest complete save, read as one set (see :func:`checkpoint_folder`)."""
    ckpt = load_checkpoint(checkpoint_folder(folder))
    if "run" not in ckpt.metadata:
        raise CheckpointError(f"{folder}: config.json has no run in its metadata (not written by `resfields fit`)")
    return run_from_dict(ckpt.metadata["run"]), ckpt


def make_predict(backend: str, model: Any) -> Callable[..., np.ndarray]:
    """``predict(x, frame_ids=None, times=None) -> (N, O)`` for a model ``backend`` built ("numpy": the
    float64 reference, which bakes ``W(t)`` once per distinct key, never per sample)."""
    impl = get_backend(backend)
    return lambda x, frame_ids=None, times=None: impl.predict(model, x, frame_ids, times)


def _predictor(impl: Any, model: Any, forward: Any, field_predict: Any) -> Callable[..., Any]:
    """What a task's evaluate/write_media receive: ``predict(x, frame_ids, times)`` for a field, or,
    for tasks with their own forward, ``predict(batch) -> dict of arrays`` (no gradients)."""
    if forward is None:
        return field_predict if field_predict is not None else make_predict(impl.name, model)
    return lambda batch: impl.infer(model, forward, batch)


def describe_spec(spec: Any) -> str:
    """One line about a field or model spec: its layers and ResField layers."""
    if isinstance(spec, ModelSpec):
        return "; ".join(f"{name}: {describe_spec(field)}" for name, field in spec.fields)
    kind = type(spec).__name__.removesuffix("Spec")
    if not hasattr(spec, "hidden_features"):
        return f"{kind} {spec.in_features}->{spec.out_features}"
    text = f"{kind} {spec.in_features}->{spec.hidden_features}x{spec.n_layers}->{spec.out_features}"
    rf = getattr(spec, "resfield", None)
    if rf is None or not spec.resfield_layers:
        return text + ", no ResField layers"
    layers = ",".join(str(i) for i in spec.resfield_layers)
    return f"{text}, ResField layers {layers} ({rf.compression}, rank {rf.rank}, capacity {rf.capacity}, {rf.mode})"


def _count_parameters(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(a.size for a in arrays.values()))


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n").encode()


def run_differences(stored: RunConfig, requested: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(option, stored value, requested value)`` for every option in which two runs differ, except
    ``train.steps`` (the one option a resumed run may change); options are named ``section.field``."""
    if stored.task != requested.task:
        return [("task", stored.task, requested.task)]
    diffs = []
    for section in ("data", "model", "train"):
        ours, theirs = getattr(stored, section), getattr(requested, section)
        if type(ours) is not type(theirs):
            diffs.append((section, type(ours).__name__, type(theirs).__name__))
            continue
        for f in dataclasses.fields(ours):
            if (section, f.name) != ("train", "steps") and getattr(ours, f.name) != getattr(theirs, f.name):
                diffs.append((f"{section}.{f.name}", getattr(ours, f.name), getattr(theirs, f.name)))
    return diffs


def _check_session_options(stop_at: int | None, save_every: int | None, save_interval_s: float | None) -> None:
    if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, int) or stop_at < 0):
        raise SpecError(f"stop_at must be a non-negative step or None, got {stop_at!r}")
    if save_every is not None and (isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 0):
        raise SpecError(f"save_every must be a non-negative number of steps or None, got {save_every!r}")
    if save_interval_s is not None and (
        isinstance(save_interval_s, bool)
        or not isinstance(save_interval_s, int | float)
        or not math.isfinite(save_interval_s)
        or save_interval_s < 0
    ):
        raise SpecError(f"save_interval_s must be a non-negative number of seconds or None, got {save_interval_s!r}")


def _resume_state(out: Path, saved: SavedRun, run: RunConfig, stop_at: int | None) -> tuple[int, list[dict[str, int]]]:
    """The step to start from and the schedule segments of a resumed run; SpecError for what a resume
    cannot do (other options, fewer steps than done, a stop before the current step)."""
    if "run" not in saved.checkpoint.metadata:
        raise CheckpointError(f"{saved.folder}: config.json has no run in its metadata (not from `resfields fit`)")
    stored = run_from_dict(saved.checkpoint.metadata["run"])
    diffs = run_differences(stored, run)
    if diffs:
        listed = "; ".join(f"{name}: stored {a!r}, requested {b!r}" for name, a, b in diffs)
        raise SpecError(
            f"cannot resume {out}: the requested run differs from the stored one ({listed}); a resumed run keeps "
            "its options and only --steps may change; start a new run with --overwrite or another --out"
        )
    start = int(saved.state["step"])
    if run.train.steps < start:
        raise SpecError(
            f"cannot resume {out}: it has trained {start} steps, more than --steps {run.train.steps}; "
            f"pass --steps {start} or more (a resumed run never repeats steps)"
        )
    if stop_at is not None and stop_at < start:
        raise SpecError(f"cannot resume {out} at step {start} and stop at step {stop_at}: that step is done")
    schedule = saved.state.get("schedule") or [{"from_step": 0, "steps": stored.train.steps}]
    schedule = [dict(segment) for segment in schedule]
    if schedule[-1]["steps"] != run.train.steps:
        # another total: its cosine schedule from where the run stands (a segment no step used is replaced)
        if schedule[-1]["from_step"] == start:
            schedule.pop()
        schedule.append({"from_step": start, "steps": run.train.steps})
    return start, schedule


def fit(
    run: RunConfig,
    out_dir: str | Path,
    *,
    backend: str = "torch",
    device: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
    media: bool = True,
    save_every: int | None = None,
    save_interval_s: float | None = SAVE_INTERVAL_S,
    announce: Callable[[dict[str, Any]], None] | None = None,
    ranks: Ranks | None = None,
) -> dict[str, Any]:
    """Train ``run`` on ``backend`` into the run folder ``out_dir``, save it, evaluate, write media.

    ``announce`` is called once before training with ``{"data", "model", "parameters"}``: what the
    options resolved to (frames, resolution, layers), also part of the returned summary.

    ``out_dir`` is created and locked before anything else; a folder holding a run needs ``resume``
    or ``overwrite``, a non-empty folder holding none needs ``overwrite`` (CheckpointError otherwise).
    With ``resume=True`` the model, Adam's state, the loss history and the schedule come from the
    folder's latest save and training continues up to ``run.train.steps``; ``run`` must otherwise
    equal the stored run (SpecError naming the options that differ), and ``run.train.steps`` may not
    be below the steps done. ``stop_at`` ends this session early at that step (the schedule still
    follows ``run.train.steps``), so that a later ``resume`` continues exactly as if it had never stopped.
    The state is saved every ``save_every`` steps (None or 0: not by count), at least every
    ``save_interval_s`` seconds (None or 0: not by time), at the end of the session and before the
    final evaluation. Returns the content of ``metrics.json``.

    ``ranks`` makes this process one rank of a ``torch.distributed`` run (torch only; see
    :mod:`resfields.tasks.common.distributed`): the model trains under DDP on the rank's shard of each
    global batch, and rank 0 alone writes the folder, shows progress and evaluates; every rank reads the
    folder to resume. The other ranks return ``{"task", "backend", "device", "steps", "rank"}``.
    """
    if resume and overwrite:
        raise SpecError("resume and overwrite exclude each other: one continues the run in the folder, one replaces it")
    _check_session_options(stop_at, save_every, save_interval_s)
    out = Path(out_dir)
    task_cls = get_task(run.task)
    impl = get_backend(backend)  # an unknown backend fails before the folder is touched
    distributed = ranks is not None and ranks.world > 1
    if distributed:
        check_backend(backend, ranks.world)
    main = not distributed or ranks.main
    with ExitStack() as session:
        if distributed:
            session.enter_context(process_group(ranks, device))
            device = rank_device(device, ranks)
        # rank 0 creates and locks the folder (refusing what it must) before any other rank reads it
        folder = session.enter_context(RunFolder.open(out, resume=resume, overwrite=overwrite)) if main else None
        _barrier(distributed)
        saved = (folder.read() if main else read_latest_save(out)) if resume else None
        _barrier(distributed)  # every rank has read the save before rank 0 may publish a new one
        return _train(
            run,
            out,
            task_cls,
            impl,
            backend,
            device,
            folder,
            saved,
            ranks if distributed else None,
            stop_at=stop_at,
            progress=progress and main,
            media=media,
            save_every=save_every,
            save_interval_s=save_interval_s,
            announce=announce if main else None,
        )


def _barrier(distributed: bool) -> None:
    if distributed:
        import torch.distributed as dist

        dist.barrier()


def _train(
    run: RunConfig,
    out: Path,
    task_cls: Any,
    impl: Any,
    backend: str,
    device: str | None,
    folder: RunFolder | None,
    saved: SavedRun | None,
    ranks: Ranks | None,
    *,
    stop_at: int | None,
    progress: bool,
    media: bool,
    save_every: int | None,
    save_interval_s: float | None,
    announce: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """The body of :func:`fit` once the folder is open (``folder`` None on a rank other than 0)."""
    history: dict[str, list[float]] = {"step": [], "loss": []}
    evals: dict[str, list[float]] = {}
    start, wall_before = 0, 0.0
    schedule = [{"from_step": 0, "steps": run.train.steps}]
    if saved is not None:
        start, schedule = _resume_state(out, saved, run, stop_at)
        wall_before = float(saved.state["wall_time_s"])
        history, evals = saved.state["history"], saved.state.get("evals", {})
    task = task_cls(run.data, run.model)
    task.prepare()
    spec = task.field_spec()
    if saved is not None:
        if saved.checkpoint.spec != spec:
            raise CheckpointError(
                f"{out}: the stored field does not match the one its run config describes "
                f"({spec_differences(saved.checkpoint.spec, spec)})"
            )
        arrays = saved.checkpoint.arrays
    else:
        arrays = sample_parameters(spec, seed=run.train.seed)
    model = impl.build(spec, arrays, device)
    resolved = {
        "data": task.describe() if hasattr(task, "describe") else str(run.data),
        "model": describe_spec(spec),
        "parameters": _count_parameters(arrays),
    }
    if announce is not None:
        announce(resolved)
    forward = task.make_forward(impl) if hasattr(task, "make_forward") else None
    trainer = impl.trainer(model, task.loss, lr=run.train.lr, forward=forward, distributed=ranks is not None)
    if saved is not None:
        trainer.load_optimizer_state(saved.optimizer)
    predict = _predictor(impl, model, forward, trainer.predict)
    if hasattr(task, "bind"):  # a task whose batches depend on the model (a NeRF's surface sampler)
        task.bind(predict)
    metadata: dict[str, Any] = {"task": run.task, "run": config_to_dict(run), "backend": backend}
    if hasattr(task, "metadata"):
        metadata["scene"] = task.metadata()

    train = run.train
    end = train.steps if stop_at is None else min(stop_at, train.steps)
    t0 = time.perf_counter()

    def save(step: int, metrics: dict[str, float] | None = None, wall_time_s: float | None = None) -> None:
        if folder is None:  # a rank other than 0 writes nothing
            return
        meta = {**metadata, "step": step, "schedule": schedule}
        if metrics is not None:
            meta["metrics"] = finite_or_none(metrics)
        files = checkpoint_files(spec, impl.to_numpy(model), metadata=meta)
        optimizer = {k: np.ascontiguousarray(v) for k, v in trainer.optimizer_state().items()}
        files[STATE_ARRAYS] = save_safetensors(optimizer)
        state = {
            "step": step,
            "wall_time_s": wall_before + time.perf_counter() - t0 if wall_time_s is None else wall_time_s,
            "history": history,
            "evals": evals,
            "schedule": schedule,
            "files": {name: sha256(data) for name, data in files.items()},
        }
        files[STATE_JSON] = _json_bytes(state)
        folder.publish(files)

    # the bar counts steps of the whole run: a resumed session starts at its step, not at 0
    bar = tqdm(range(start, end), f"fit {run.task} [{backend}]", disable=not progress, initial=start, total=end)
    last_save = time.perf_counter()
    for step in bar:
        batch = task.sample(np.random.default_rng([train.seed, step]), train.batch_size, step=step)
        batch = shard_batch(batch, ranks, getattr(task, "shard_key", "x"))
        loss = trainer.step(batch, train.lr_factor(step))
        if not math.isfinite(loss):
            # a library error (the CLI prints one line); saves are published whole, so the last one stands
            saved_step = None if folder is None else folder.saved_step
            kept = "nothing was saved" if saved_step is None else f"the save of step {saved_step} is intact"
            raise TrainingError(
                f"the loss became {loss} at step {step}; lower the learning rate (--lr); {kept} in {out}"
            )
        history["step"].append(step)
        history["loss"].append(loss)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss:.4g}")
        done = step + 1
        if folder is not None and train.eval_every and done % train.eval_every == 0 and done < end:
            for key, value in task.evaluate(predict).items():
                evals.setdefault(key, []).append(value)
            evals.setdefault("step", []).append(done)
        by_count = bool(save_every) and done % save_every == 0
        by_time = bool(save_interval_s) and time.perf_counter() - last_save >= save_interval_s
        if done < end and (by_count or by_time):
            save(done)
            last_save = time.perf_counter()
    bar.close()
    train_time = time.perf_counter() - t0 + wall_before
    steps_run = end - start
    if steps_run > 0 or saved is None:
        save(end, wall_time_s=train_time)  # before evaluating: an evaluation that fails must not cost the training
    if folder is None:  # evaluation runs once, on rank 0
        return {"task": run.task, "backend": backend, "device": device or "cpu", "steps": end, "rank": ranks.rank}

    t_eval = time.perf_counter()
    try:
        metrics = task.evaluate(predict)
    except ResFieldsError as err:
        raise type(err)(
            f"{err} (evaluation failed; the trained run is saved in {out} at step {end}, "
            "so `resfields eval` or `fit --resume` can take it from there)"
        ) from err
    eval_time = time.perf_counter() - t_eval
    summary = {
        "task": run.task,
        "backend": backend,
        "device": device or "cpu",
        "steps": end,
        **resolved,
        "train_time_s": round(train_time, 2),
        "step_time_ms": round(1000 * (time.perf_counter() - t0 - eval_time) / max(steps_run, 1), 2),
        "eval_time_s": round(eval_time, 2),
        "final_loss": history["loss"][-1] if history["loss"] else None,
        "metrics": metrics,
    }
    save(end, metrics, wall_time_s=train_time)
    try:
        write_files_atomically(out, {METRICS: _json_bytes(summary)})
        _plot(out / CURVE, history, evals, run.task)
        if media:
            task.write_media(predict, out / "media")
    except OSError as e:
        raise CheckpointError(
            f"cannot write the outputs of {out}: {e.strerror or e}; the trained run itself is saved there"
        ) from e
    return summary


def evaluate_run(
    folder: str | Path,
    *,
    backend: str = "torch",
    device: str | None = None,
    out_dir: str | Path | None = None,
    media: bool = False,
    data_overrides: dict[str, Any] | None = None,
    stored_source: bool = True,
    model: Any = None,
) -> dict[str, Any]:
    """Re-evaluate the checkpoint in ``folder`` on ``backend`` ("torch", "tinygrad" or "numpy"), or
    ``model``, a model of that backend with the checkpoint's spec (e.g. fine-tuned in memory).

    Writes ``metrics.json`` (and media) to ``out_dir`` when given; returns the metrics summary.
    ``data_overrides`` replaces data options (e.g. a different ``source`` of the same shape); their
    values are checked like a stored run config's (SpecError). With ``stored_source=False`` a data
    file named by the checkpoint's run config is never read: unless its ``source`` is None (the
    embedded data) ``data_overrides`` must give one (DataError otherwise). ``resfields eval`` works so,
    since a checkpoint from elsewhere could name any file on this machine.
    """
    run, ckpt = load_run(folder)
    overrides = dict(data_overrides or {})
    hints = typing.get_type_hints(type(run.data))
    unknown = sorted(set(overrides) - set(hints))
    if unknown:
        raise SpecError(f"unknown data option(s) {unknown} for task {run.task!r}; known: {sorted(hints)}")
    overrides = {key: decode_value(hints[key], value, f"data option {key}") for key, value in overrides.items()}
    source = getattr(run.data, "source", None)
    if not stored_source and source is not None and "source" not in overrides:
        raise DataError(
            f"{folder} was trained on data from {source!r}, and eval reads no file that a checkpoint names: "
            "pass --data PATH (or --set source=PATH) with your copy of that data"
        )
    if overrides:
        run = replace(run, data=replace(run.data, **overrides))
    task = get_task(run.task)(run.data, run.model)
    if task.field_spec() != ckpt.spec:
        raise CheckpointError(
            f"{folder}: the stored field does not match the one its run config describes "
            f"({spec_differences(ckpt.spec, task.field_spec())})"
        )
    impl = get_backend(backend)
    if model is None:
        model = impl.build(ckpt.spec, ckpt.arrays, device)
    if hasattr(task, "make_forward"):  # "numpy" runs the task's forward on the float64 reference
        predict = _predictor(impl, model, task.make_forward(impl), None)
    else:
        predict = make_predict(backend, model)
    t0 = time.perf_counter()
    metrics = task.evaluate(predict)
    summary = {
        "task": run.task,
        "backend": backend,
        "device": device or "cpu",
        "checkpoint": str(folder),
        "eval_time_s": round(time.perf_counter() - t0, 2),
        "metrics": metrics,
    }
    if out_dir is not None:
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_files_atomically(out, {METRICS: _json_bytes(summary)})
        except OSError as e:
            raise CheckpointError(f"cannot write {out / METRICS}: {e.strerror or e}") from e
        if media:
            task.write_media(predict, out / "media")
    return summary


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively.

    Metrics can be infinite (PSNR of a perfect fit, Chamfer of an empty mesh); the files stay strict
    JSON, where such a value is null.
    """
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plot(path: Path, history: dict[str, list[float]], evals: dict[str, list[float]], task: str) -> None:
    from resfields.tasks.common.media import plot_curves

    steps, losses = np.asarray(history["step"]), np.asarray(history["loss"])
    if len(losses) == 0:
        return
    # a running mean over ~1 % of the run keeps the curve readable without hiding its trend
    width = max(1, len(losses) // 100)
    smooth = np.convolve(losses, np.ones(width) / width, mode="valid")
    plot_curves(path, {"training loss": (steps[width - 1 :], smooth)}, ylabel="loss", title=f"{task}: training loss")
