"""Schedules for the positional encoding of PE-MLP fields (NumPy; no array framework).

Coarse-to-fine annealing (Nerfies, Park et al. 2021; used by ResFields' NeRF recipes) starts a field
on the low frequencies and opens the higher bands as training goes: band ``k`` is weighed by
``w_k(α) = (1 - cos(π · clamp(α - k, 0, 1))) / 2`` with ``α`` growing linearly from 0 to ``L`` (the
number of bands). Fields take the weights as ``encoding_window=`` (shape ``(L,)``); ``α = L`` gives
all ones, the plain encoding.
"""

from __future__ import annotations

import math

import numpy as np

from resfields.errors import SpecError

__all__ = ["annealing_alpha", "coarse_to_fine_window"]


def coarse_to_fine_window(alpha: float, n_frequencies: int) -> np.ndarray:
    """The band weights ``(n_frequencies,)`` float32 for annealing progress ``alpha`` in ``[0, L]``."""
    if not math.isfinite(alpha):
        raise SpecError(f"alpha must be finite, got {alpha!r}")
    k = np.arange(n_frequencies, dtype=np.float64)
    x = np.clip(alpha - k, 0.0, 1.0)
    return ((1.0 - np.cos(math.pi * x)) / 2.0).astype(np.float32)


def annealing_alpha(step: int, anneal_steps: int, n_frequencies: int) -> float:
    """``α`` at training ``step``: ``L · step / anneal_steps``, capped at ``L`` (``anneal_steps`` 0: ``L``)."""
    if anneal_steps <= 0:
        return float(n_frequencies)
    return float(n_frequencies) * min(step / anneal_steps, 1.0)
