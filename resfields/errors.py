"""The exception families of resfields.

Every bad input gets exactly one of these, with a message that names the problem.
Each family also derives from the built-in exception a caller would naturally catch
(``ValueError`` or ``TypeError``), so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DataError",
    "FrameError",
    "ResFieldsError",
    "ShapeError",
    "SpecError",
]


class ResFieldsError(Exception):
    """Base class of every error raised on purpose by resfields."""


class SpecError(ResFieldsError, ValueError):
    """A configuration is invalid: unknown key, wrong type, impossible value, wrong schema version."""


class ShapeError(ResFieldsError, ValueError):
    """An array has the wrong shape, or two arrays do not broadcast together."""


class FrameError(ResFieldsError, ValueError):
    """Frame ids or times are invalid: out of range, non-integer ids, NaN or missing times."""


class CheckpointError(ResFieldsError, ValueError):
    """A checkpoint folder is missing, truncated, corrupt or does not match its config."""


class DataError(ResFieldsError, ValueError):
    """A data file or folder is missing, unreadable, corrupt or inconsistent (e.g. frames of different sizes)."""
