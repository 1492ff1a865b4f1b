"""The one strict decoder from JSON-like data (dicts, lists, numbers, strings) to frozen dataclasses.

Field specs and run configs come from files other people wrote, so nothing is guessed: unknown and
missing keys, a wrong type anywhere, booleans where numbers belong and non-finite numbers are all a
SpecError naming the dotted path of the value (``train.batch_size``, ``SirenSpec.resfield.rank``,
``model.resfield_layers[2]``). The type hints of the dataclass are the schema. Values are not
range-checked here; each dataclass does that in its ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from resfields.errors import SpecError, short_repr

__all__ = ["decode_dataclass", "decode_value"]


def decode_dataclass(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from the dict ``data``, every field through :func:`decode_value`.

    ``where`` (default: the class name) starts every message. SpecError when ``data`` is not a dict,
    has a key that is no field, lacks a field without default, or holds a value of the wrong type.
    """
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {short_repr(unknown)}; known keys are {sorted(fields)}")
    missing = sorted(
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise SpecError(f"{where}: missing key(s) {missing}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: decode_value(hints[name], value, f"{where}.{name}") for name, value in data.items()})


def decode_value(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against, and converted to, the type ``hint``; SpecError starting with ``where`` when
    it does not fit.

    Understood hints: ``bool``, ``int`` (not bool), ``float`` (an int or float, finite; returned as
    float), ``str``, ``X | None``, ``Literal[...]``, ``tuple[X, ...]`` and ``tuple[X, Y]`` (from a list,
    returned as a tuple), ``dict[str, X]``, a dataclass (from a dict; an instance passes as it is) and
    ``Any`` (anything). Any other hint is a bug in the dataclass, not bad input: AssertionError.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise AssertionError(f"{where}: only X | None unions can be decoded, not {hint!r}")
        return decode_value(inner[0], value, where)
    if origin is Literal:
        if value not in args:
            raise SpecError(f"{where}: must be one of {list(args)}, got {short_repr(value)}")
        return value
    if origin is tuple and args:
        if not isinstance(value, list | tuple):
            raise SpecError(f"{where}: expected a list, got {short_repr(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise SpecError(f"{where}: expected a list of {len(args)} items, got {short_repr(value)}")
        return tuple(decode_value(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict and args and args[0] is str:
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise SpecError(f"{where}: expected an object keyed by name, got {type(value).__name__}")
        # A key is part of every message below it: a megabyte-long one is shown cut.
        return {
            key: decode_value(args[1], v, f"{where}.{key if len(key) <= 64 else short_repr(key)}")
            for key, v in value.items()
        }
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else decode_dataclass(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true/false, got {short_repr(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: expected an integer, got {short_repr(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
            raise SpecError(f"{where}: expected a finite number, got {short_repr(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected a string, got {short_repr(value)}")
        return value
    raise AssertionError(f"{where}: no decoder for the type hint {hint!r}")


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int beyond the float range has no float value
        return False
