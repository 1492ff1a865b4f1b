"""Shared fixtures: deterministic RNG; the CUDA marker skips visibly without a GPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# a NeRF small enough to fit in seconds: what the NeRF CLI, zoo and render tests share
TINY_NERF = ["--width", "16", "--n-layers", "3", "--resfield-layers", "1", "--rank", "2", "--feature-dim", "4"]
TINY_NERF += ["--color-width", "16", "--n-samples", "8", "--eval-chunk", "256", "--batch-size", "96"]
TINY_NERF += ["--mesh-resolution", "16"]


def moving_pattern_clip(n_frames: int, height: int, width: int) -> np.ndarray:
    """A small synthetic video (T, H, W, 3) float32 in [0, 1]: colour waves drifting with the frame."""
    t, y, x = np.meshgrid(np.arange(n_frames), np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    frames = np.stack([0.5 + 0.4 * np.sin(6 * x + t), 0.5 + 0.4 * np.cos(5 * y - t), 0.5 + 0.3 * x * y], -1)
    return frames.astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine (CUDA conformance runs where one is lent)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner exporting HF_HUB_OFFLINE=1 must not turn the online Hub tests into cache-only ones."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def tripwire() -> Iterator:
    """A loopback port that counts connections: an offline path must make none."""
    from loopback import Tripwire

    wire = Tripwire()
    yield wire
    wire.close()


@pytest.fixture(scope="session")
def tiny_nerf_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded bunny scene at 16 px: 2 frames, 2 training cameras and 1 held out."""
    from resfields.tasks.nerf.scene import make_scene

    folder = tmp_path_factory.mktemp("scene") / "bunny"
    make_scene(folder, n_frames=2, size=16, n_train_cameras=2, n_test_cameras=1)
    return folder


@pytest.fixture(scope="session")
def tiny_nerf_run(tiny_nerf_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-step TNeRF run folder (with media) on :func:`tiny_nerf_scene`, fitted once per session
    through the CLI; tests read it and copy it, never write into it."""
    from resfields.cli import main

    out = tmp_path_factory.mktemp("nerf_run")
    argv = ["fit", "nerf", "--data", str(tiny_nerf_scene), "--steps", "6", "--out", str(out), "--quiet"]
    assert main([*argv, *TINY_NERF]) == 0
    return out
