"""The exception families of resfields.

Every bad input gets exactly one of these, with a message that names the problem.
Each family also derives from the built-in exception a caller would naturally catch
(``ValueError`` or ``TypeError``), so generic handlers keep working.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = [
    "CheckpointError",
    "DTypeError",
    "DataError",
    "FrameError",
    "ResFieldsError",
    "ShapeError",
    "SpecError",
    "TrainingError",
    "short_repr",
]


class ResFieldsError(Exception):
    """Base class of every error raised on purpose by resfields."""


class SpecError(ResFieldsError, ValueError):
    """A configuration is invalid: unknown key, wrong type, impossible value, wrong schema version."""


class ShapeError(ResFieldsError, ValueError):
    """An array has the wrong shape, or two arrays do not broadcast together."""


class DTypeError(ResFieldsError, TypeError):
    """An array has the wrong dtype, e.g. float64 input to a module whose parameters are float32."""


class FrameError(ResFieldsError, ValueError):
    """Frame ids or times are invalid: out of range, non-integer ids, NaN or missing times."""


class CheckpointError(ResFieldsError, ValueError):
    """A checkpoint folder is missing, truncated, corrupt or does not match its config."""


class DataError(ResFieldsError, ValueError):
    """A data file or folder is missing, unreadable, corrupt or inconsistent (e.g. frames of different sizes)."""


class TrainingError(ResFieldsError, FloatingPointError):
    """Training diverged (a non-finite loss, e.g. too high a learning rate); the last save stays in the run folder."""


class _ShortRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        # repr() of a 5000-digit int raises ValueError (Python's int-to-str limit), so never build it
        if x.bit_length() > 128:
            return f"<{'-' if x < 0 else ''}integer of ~{int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


_REPR = _ShortRepr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = _REPR.maxdeque = 8


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a glance: a few items of a long container (with its length), the ends
    of a long string or number. A 1 KB config may name a million-element list, and an error message
    that echoes it whole is megabytes; reprlib never builds the full text."""
    text = _REPR.repr(value)
    if isinstance(value, list | tuple | set | frozenset | dict) and len(value) > _REPR.maxlist:
        text += f" ({len(value)} items)"
    return text
