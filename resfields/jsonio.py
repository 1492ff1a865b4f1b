"""Strict JSON for files a user may have been handed: standard JSON only (no NaN/Infinity), nested
at most :data:`MAX_JSON_DEPTH` levels, every failure one library error."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "loads_strict"]

#: The zoo's configs nest 7 levels; far deeper JSON attacks the parser and every recursive consumer
#: after it (RecursionError) rather than describing a model.
MAX_JSON_DEPTH = 64


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _too_deep(data: Any, limit: int) -> bool:
    """True if ``data`` nests lists/objects more than ``limit`` levels (iterative: no recursion to exhaust)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads_strict(text: str | bytes, where: str, error: type[Exception]) -> Any:
    """``json.loads(text)``, raising ``error`` (a library error class) naming ``where`` for invalid
    JSON, NaN/Infinity constants or nesting deeper than :data:`MAX_JSON_DEPTH`."""
    too_deep = f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:  # json's decoder recurses once per level
        raise error(too_deep) from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise error(f"{where}: not valid JSON: {e}") from e
    if isinstance(data, dict | list) and _too_deep(data, MAX_JSON_DEPTH):
        raise error(too_deep)
    return data
