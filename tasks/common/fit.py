"""Fit any task on any backend, evaluate a run folder, resume a run.

A run folder is a checkpoint in the core's Hub layout plus what training leaves behind::

    OUT/config.json                  field spec; metadata holds the run config, step, backend, metrics
    OUT/model.safetensors            the field's parameters (canonical names)
    OUT/training_state.safetensors   Adam's moments under backend-neutral names (for --resume)
    OUT/training_state.json          step, loss history, wall time
    OUT/metrics.json                 the task's metrics, parameter count, timings
    OUT/training_curve.png           loss (and any evaluated metric) against step
    OUT/media/                       the task's videos, images and meshes

Batches are drawn from ``np.random.default_rng([seed, step])``, so a resumed run sees exactly the
batches an uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from resfields.backends import get_backend
from resfields.checkpoint import load_checkpoint, save_checkpoint
from resfields.errors import CheckpointError, SpecError
from resfields.init import sample_parameters
from resfields.tasks import get_task
from resfields.tasks.common.config import (
    ModelConfig,
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)

__all__ = ["evaluate_run", "finite_or_none", "fit", "load_run", "make_predict", "run_from_dict"]

STATE_ARRAYS = "training_state.safetensors"
STATE_JSON = "training_state.json"
METRICS = "metrics.json"
CURVE = "training_curve.png"


def run_from_dict(data: Any) -> RunConfig:
    """A :class:`RunConfig` from its JSON form, strictly (unknown keys raise SpecError)."""
    if not isinstance(data, dict) or "task" not in data:
        raise SpecError("a run config must be an object with a 'task' key")
    task = get_task(data["task"])
    unknown = sorted(set(data) - {"task", "data", "model", "train"})
    if unknown:
        raise SpecError(f"run config: unknown key(s) {unknown}")
    return RunConfig(
        task=data["task"],
        data=config_from_dict(task.Data, data.get("data", {}), f"{data['task']}.data"),
        model=config_from_dict(getattr(task, "Model", ModelConfig), data.get("model", {}), "model"),
        train=config_from_dict(TrainConfig, data.get("train", {}), "train"),
    )


def load_run(folder: str | Path) -> tuple[RunConfig, Any]:
    """The run config and the :class:`~resfields.checkpoint.Checkpoint` stored in a run folder."""
    ckpt = load_checkpoint(folder)
    if "run" not in ckpt.metadata:
        raise CheckpointError(f"{folder}: config.json has no run in its metadata (not written by `resfields fit`)")
    return run_from_dict(ckpt.metadata["run"]), ckpt


def make_predict(backend: str, model: Any) -> Callable[..., np.ndarray]:
    """``predict(x, frame_ids=None, times=None) -> (N, O)`` for a model of ``backend`` ("numpy" runs
    the float64 reference on a :class:`~resfields.checkpoint.Checkpoint`, in chunks)."""
    if backend == "numpy":

        def predict_reference(x: np.ndarray, frame_ids: Any = None, times: Any = None) -> np.ndarray:
            out = []
            for start in range(0, len(x), 16384):
                rows = slice(start, start + 16384)
                ids = None if frame_ids is None else frame_ids[rows]
                ts = None if times is None else times[rows]
                out.append(model.forward(x[rows], frame_ids=ids, times=ts).astype(np.float32))
            return np.concatenate(out)

        return predict_reference
    impl = get_backend(backend)
    return lambda x, frame_ids=None, times=None: impl.predict(model, x, frame_ids, times)


def _predictor(impl: Any, model: Any, forward: Any, field_predict: Any) -> Callable[..., Any]:
    """What a task's evaluate/write_media receive: ``predict(x, frame_ids, times)`` for a field, or,
    for tasks with their own forward, ``predict(batch) -> dict of arrays`` (no gradients)."""
    if forward is None:
        return field_predict if field_predict is not None else make_predict(impl.name, model)
    return lambda batch: impl.infer(model, forward, batch)


def _count_parameters(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(a.size for a in arrays.values()))


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n")


def fit(
    run: RunConfig,
    out_dir: str | Path,
    *,
    backend: str = "torch",
    device: str | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
    media: bool = True,
) -> dict[str, Any]:
    """Train ``run`` on ``backend``, save the run folder ``out_dir``, evaluate, write media.

    With ``resume=True`` the model, Adam's state and the loss history come from ``out_dir`` and
    training continues up to ``run.train.steps`` (the stored task, data and model must match ``run``).
    ``stop_at`` ends this session early at that step (the schedule still follows ``run.train.steps``),
    so that a later ``resume`` continues exactly as if it had never stopped.
    Returns the content of ``metrics.json``.
    """
    out = Path(out_dir)
    task_cls = get_task(run.task)
    task = task_cls(run.data, run.model)
    task.prepare()
    spec = task.field_spec()
    impl = get_backend(backend)
    history: dict[str, list[float]] = {"step": [], "loss": []}
    evals: dict[str, list[float]] = {}
    start, wall_before, optimizer_arrays = 0, 0.0, None
    if resume:
        stored, ckpt = load_run(out)
        if (stored.task, stored.data, stored.model) != (run.task, run.data, run.model):
            raise SpecError(f"{out}: cannot resume: the stored task, data or model differ from the requested run")
        arrays = ckpt.arrays
        state = json.loads((out / STATE_JSON).read_text())
        start, wall_before = int(state["step"]), float(state["wall_time_s"])
        history, evals = state["history"], state.get("evals", {})
        optimizer_arrays = load_file(str(out / STATE_ARRAYS))
    else:
        arrays = sample_parameters(spec, seed=run.train.seed)
    model = impl.build(spec, arrays, device)
    forward = task.make_forward(impl) if hasattr(task, "make_forward") else None
    trainer = impl.trainer(model, task.loss, lr=run.train.lr, forward=forward)
    if optimizer_arrays is not None:
        trainer.load_optimizer_state(optimizer_arrays)
    predict = _predictor(impl, model, forward, trainer.predict)

    train = run.train
    end = train.steps if stop_at is None else min(stop_at, train.steps)
    bar = tqdm(range(start, end), desc=f"fit {run.task} [{backend}]", disable=not progress, initial=start)
    t0 = time.perf_counter()
    for step in bar:
        batch = task.sample(np.random.default_rng([train.seed, step]), train.batch_size, step=step)
        loss = trainer.step(batch, train.lr_factor(step))
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at step {step}; lower the learning rate (--lr)")
        history["step"].append(step)
        history["loss"].append(loss)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss:.4g}")
        if train.eval_every and (step + 1) % train.eval_every == 0 and step + 1 < end:
            for key, value in task.evaluate(predict).items():
                evals.setdefault(key, []).append(value)
            evals.setdefault("step", []).append(step + 1)
    train_time = time.perf_counter() - t0 + wall_before
    steps_run = end - start

    t_eval = time.perf_counter()
    metrics = task.evaluate(predict)
    eval_time = time.perf_counter() - t_eval
    final_arrays = impl.to_numpy(model)
    summary = {
        "task": run.task,
        "backend": backend,
        "device": device or "cpu",
        "steps": end,
        "parameters": _count_parameters(final_arrays),
        "train_time_s": round(train_time, 2),
        "step_time_ms": round(1000 * (time.perf_counter() - t0 - eval_time) / max(steps_run, 1), 2),
        "eval_time_s": round(eval_time, 2),
        "final_loss": history["loss"][-1] if history["loss"] else None,
        "metrics": metrics,
    }
    metadata = {"task": run.task, "run": config_to_dict(run), "step": end, "backend": backend}
    if hasattr(task, "metadata"):
        metadata["scene"] = task.metadata()
    save_checkpoint(out, spec, final_arrays, metadata={**metadata, "metrics": finite_or_none(metrics)})
    save_file({k: np.ascontiguousarray(v) for k, v in trainer.optimizer_state().items()}, str(out / STATE_ARRAYS))
    state = {"step": end, "wall_time_s": train_time, "history": history, "evals": evals}
    _write_json(out / STATE_JSON, state)
    _write_json(out / METRICS, summary)
    _plot(out / CURVE, history, evals, run.task)
    if media:
        task.write_media(predict, out / "media")
    return summary


def evaluate_run(
    folder: str | Path,
    *,
    backend: str = "torch",
    device: str | None = None,
    out_dir: str | Path | None = None,
    media: bool = False,
    data_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Re-evaluate the checkpoint in ``folder`` on ``backend`` ("torch", "tinygrad" or "numpy").

    Writes ``metrics.json`` (and media) to ``out_dir`` when given; returns the metrics summary.
    ``data_overrides`` replaces data options (e.g. a different ``source`` of the same shape).
    """
    run, ckpt = load_run(folder)
    if data_overrides:
        run = replace(run, data=replace(run.data, **data_overrides))
    task = get_task(run.task)(run.data, run.model)
    if task.field_spec() != ckpt.spec:
        raise CheckpointError(f"{folder}: the stored field does not match the one its run config describes")
    if hasattr(task, "make_forward"):  # "numpy" runs the task's forward on the float64 reference
        impl = get_backend(backend)
        model = impl.build(ckpt.spec, ckpt.arrays, device)
        predict = _predictor(impl, model, task.make_forward(impl), None)
    else:
        model = ckpt if backend == "numpy" else get_backend(backend).build(ckpt.spec, ckpt.arrays, device)
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
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / METRICS, summary)
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
