"""A Siren training step (forward, backward, Adam) in tinygrad with TinyJit vs torch, same spec,
same batch, same device, through the backends' trainers. The video task's layout: F frames x P
pixels, rows sorted by frame."""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from resfields.backends import get_backend
from resfields.init import sample_parameters
from resfields.spec import ResFieldSpec, SirenSpec

FRAMES, PIXELS, HIDDEN = 32, 256, 128


def _specs() -> dict[str, SirenSpec]:
    rf = ResFieldSpec(capacity=FRAMES, rank=10)
    return {
        f"Siren 3→128×4→3, ResField layers 1-3 (rank 10), {FRAMES}×{PIXELS} samples": SirenSpec(
            3, 3, hidden_features=HIDDEN, n_layers=5, resfield_layers=(1, 2, 3), resfield=rf
        ),
        f"vanilla Siren 3→128×4→3, {FRAMES}×{PIXELS} samples": SirenSpec(3, 3, hidden_features=HIDDEN, n_layers=5),
    }


def _batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    # the frame-major layout the task samplers emit: (frames, pixels, features), one key per row
    return {
        "x": rng.uniform(-1, 1, size=(FRAMES, PIXELS, 3)).astype(np.float32),
        "target": rng.uniform(0, 1, size=(FRAMES, PIXELS, 3)).astype(np.float32),
        "frame_ids": np.arange(FRAMES).reshape(FRAMES, 1),
    }


def _mse(pred, batch):
    return (pred - batch["target"]).square().mean()


def trainer_step(backend: str, spec: SirenSpec, device: str):
    """One task training step (host batch -> device, forward, backward, Adam) through the backend's
    trainer, exactly what ``resfields fit`` runs."""
    impl = get_backend(backend)
    model = impl.build(spec, sample_parameters(spec), device)
    trainer = impl.trainer(model, _mse, lr=1e-4)
    batch = _batch()
    if spec.resfield is None:
        del batch["frame_ids"]
    return lambda: trainer.step(batch)


def _median_seconds(step, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):  # TinyJit captures on its second call
        step()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def training_table(repeats: int, device: str = "cpu") -> list[dict]:
    rows = []
    for name, spec in _specs().items():
        t_torch = _median_seconds(trainer_step("torch", spec, device), repeats)
        t_tiny = _median_seconds(trainer_step("tinygrad", spec, device), repeats)
        ratio = t_tiny / t_torch
        rows.append(
            {"case": name, "device": device, "torch_ms": t_torch * 1e3, "tinygrad_ms": t_tiny * 1e3, "ratio": ratio}
        )
        print(
            f"  {name} [{device}]: torch {t_torch * 1e3:.1f} ms, tinygrad {t_tiny * 1e3:.1f} ms ({ratio:.2f}x)",
            file=sys.stderr,
        )
    return rows
