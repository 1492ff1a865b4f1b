"""Checks of single values and read-only arrays that the task modules share.

Booleans are not numbers here: ``True`` passed as a frame count or a scale is a mistake, though
Python's ``bool`` is a subclass of ``int``. NumPy scalars count as numbers, so values taken from
arrays pass.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from resfields.errors import DataError

__all__ = ["check_count", "check_downscale", "check_positive", "frozen", "is_int", "is_real"]


def is_int(value: object) -> bool:
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """True for a Python or NumPy integer or float that is not a bool (NaN and inf included)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def check_count(value: object, name: str, where: str) -> int:
    """``value`` as an int if it is a non-negative integer; DataError naming ``where`` and ``name`` otherwise."""
    if not is_int(value) or value < 0:
        raise DataError(f"{where}: {name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_positive(value: object, name: str, where: str) -> float:
    """``value`` as a float if it is a positive finite number; DataError naming ``where`` and ``name`` otherwise."""
    if not is_real(value) or not (0.0 < float(value) < math.inf):  # also rejects NaN
        raise DataError(f"{where}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def check_downscale(path: Path, scale: object) -> float:
    """``scale`` as a float if it is a downscale factor in (0, 1]; DataError naming ``path`` otherwise."""
    if not is_real(scale) or not 0.0 < float(scale) <= 1.0:  # also rejects NaN
        raise DataError(f"{path}: scale must be a downscale factor in (0, 1], got {scale!r}")
    return float(scale)


def frozen(array: Any, dtype: Any = None) -> np.ndarray:
    """A read-only copy of ``array`` (any shape), converted to ``dtype`` when given.

    Frozen dataclasses hold these, so no caller can edit their arrays in place behind their back.
    """
    out = np.array(array, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out
