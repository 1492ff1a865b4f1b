"""What a command prints on stdout: one JSON document (``--json``) or human text, never both.

Progress bars and warnings go to stderr, so ``resfields fit ... --json | jq`` always parses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["format_metrics", "report"]


def report(data: Any, lines: Iterable[str], *, as_json: bool) -> None:
    """Print ``data`` as JSON when ``as_json``, else the human ``lines``."""
    if as_json:
        print(json.dumps(data, indent=2, allow_nan=False, default=str))
    else:
        for line in lines:
            print(line)


def format_metrics(metrics: dict[str, Any], indent: str = "  ") -> list[str]:
    """``{"psnr": 23.86, ...}`` -> ``["  psnr  23.86", ...]``, numbers to 4 significant digits."""
    width = max((len(k) for k in metrics), default=0)
    out = []
    for key, value in metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else "n/a" if value is None else str(value)
        out.append(f"{indent}{key:{width}s}  {shown}")
    return out
