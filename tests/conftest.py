"""Shared fixtures: deterministic RNG; the CUDA marker skips visibly without a GPU."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest


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
