"""Shared fixtures: deterministic RNG; the CUDA marker skips visibly without a GPU."""

from __future__ import annotations

import numpy as np
import pytest


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
