"""Training batches in the frame-major layout every backend runs fastest.

A batch with the same number of samples ``P`` for each of ``F`` frames is laid out as
``(F, P, features)`` with one key per row (``frame_ids``/``times`` of shape ``(F, 1)``): torch runs one
GEMM per frame without sorting, and tinygrad builds ``F`` weight matrices once instead of taking the
per-sample low-rank path (~R times the GEMM work).
"""

from __future__ import annotations

import numpy as np

__all__ = ["frame_major", "samples_per_frame"]

KEYS = ("frame_ids", "times")


def samples_per_frame(batch_size: int, n_frames: int) -> int:
    """Samples per frame for a batch of about ``batch_size`` rows over ``n_frames`` frames (at least 1;
    the batch is rounded down to a multiple of the frame count)."""
    return max(batch_size // n_frames, 1)


def frame_major(batch: dict[str, np.ndarray], n_frames: int) -> dict[str, np.ndarray]:
    """``(F*P, ...)`` columns sorted by frame with ``P`` rows per frame -> ``(F, P, ...)``; the keys
    become ``(F, 1)``. Raises ValueError if the rows are not ``F`` equal, constant-key blocks."""
    out = {}
    for name, column in batch.items():
        blocks = column.reshape(n_frames, len(column) // n_frames, *column.shape[1:])
        if name in KEYS:
            if not (blocks == blocks[:, :1]).all():
                raise ValueError(f"{name} is not constant within each frame's block of rows")
            blocks = blocks[:, :1]
        out[name] = blocks
    return out
