"""A Siren training step (forward, backward, Adam) in tinygrad with TinyJit vs torch, same spec,
same batch. The video task's layout: F frames x P pixels, one frame id per row."""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import torch

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


def _batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(FRAMES, PIXELS, 3)).astype(np.float32)
    target = rng.uniform(0, 1, size=(FRAMES, PIXELS, 3)).astype(np.float32)
    return x, target, np.arange(FRAMES, dtype=np.int32).reshape(FRAMES, 1)


def torch_step(spec: SirenSpec):
    from resfields.backends.torch import Field

    model = Field(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, target, ids = (torch.from_numpy(a) for a in _batch())
    kw = {"frame_ids": ids.long()} if spec.resfield else {}

    def step() -> float:
        loss = ((model(x, **kw) - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def tinygrad_step(spec: SirenSpec):
    from tinygrad import Context, Tensor, TinyJit
    from tinygrad.nn.optim import Adam
    from tinygrad.nn.state import get_parameters

    from resfields.backends.tinygrad import build_field

    model = build_field(spec)
    opt = Adam(get_parameters(model), lr=1e-4)
    x, target, ids = (Tensor(a).realize() for a in _batch())

    @TinyJit
    def jitted(x: Tensor, ids: Tensor, target: Tensor) -> Tensor:
        opt.zero_grad()
        kw = {"frame_ids": ids, "validate": False} if spec.resfield else {}
        loss = ((model(x, **kw) - target) ** 2).mean()
        loss.backward()
        return loss.realize(*opt.schedule_step())

    def step() -> float:
        with Context(TRAINING=1):
            return jitted(x, ids, target).item()

    return step


def _median_seconds(step, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):  # TinyJit captures on its second call
        step()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def training_table(repeats: int) -> list[dict]:
    rows = []
    for name, spec in _specs().items():
        t_torch = _median_seconds(torch_step(spec), repeats)
        t_tiny = _median_seconds(tinygrad_step(spec), repeats)
        rows.append({"case": name, "torch_ms": t_torch * 1e3, "tinygrad_ms": t_tiny * 1e3, "ratio": t_tiny / t_torch})
        print(
            f"  {name}: torch {t_torch * 1e3:.1f} ms, tinygrad {t_tiny * 1e3:.1f} ms ({t_tiny / t_torch:.2f}x)",
            file=sys.stderr,
        )
    return rows
