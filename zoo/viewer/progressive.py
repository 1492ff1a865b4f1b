"""Progressive rendering on a worker thread: a cheap preview of the latest request at once, the full
image once requests have stopped for a moment.

A NeRF view of 256 pixels takes seconds on a CPU; a 64-pixel one a small fraction of that. While the
user drags the camera or the time slider, only previews are drawn, each of the newest state (the
states in between are dropped, not queued); when the state rests for ``settle`` seconds the full
image follows. A result whose state was superseded while it rendered is thrown away, so a slow
full-size render never overwrites a newer preview.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["Progressive"]


class Progressive:
    """Render the latest requested state at each level of ``levels`` (e.g. ``(64, 256)`` pixels), in order.

    ``render(state, level)`` returns a result; ``publish(result, state, level, seconds)`` shows it.
    Both run on the worker thread. :meth:`request` never blocks; :meth:`close` stops the thread.
    """

    def __init__(
        self,
        render: Callable[[Any, int], Any],
        publish: Callable[[Any, Any, int, float], None],
        levels: tuple[int, ...],
        settle: float = 0.3,
        name: str = "resfields-viewer",
    ) -> None:
        self._render, self._publish = render, publish
        self._levels = tuple(dict.fromkeys(levels))  # a preview as large as the full image is rendered once
        self._settle = settle
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._state: Hashable | None = None
        self._version = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def request(self, state: Hashable) -> None:
        """Ask for ``state`` (a hashable snapshot: camera, frame, output, ...); a repeat of the last one is ignored."""
        with self._lock:
            if state == self._state:
                return
            self._state, self._version = state, self._version + 1
        self._wake.set()

    def redraw(self) -> None:
        """Render the current state again at every level (e.g. after the scene changed under it)."""
        with self._lock:
            self._version += 1
        self._wake.set()

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker (after the render in progress, if any)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)

    def _current(self, version: int) -> bool:
        with self._lock:
            return version == self._version and not self._closed

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._closed:
                return
            with self._lock:
                self._wake.clear()
                state, version = self._state, self._version
            for i, level in enumerate(self._levels):
                if i > 0 and self._wake.wait(self._settle):  # still moving: start over from a preview
                    break
                start = time.perf_counter()
                try:
                    result = self._render(state, level)
                except Exception as err:  # one bad frame must not end the viewer; say what failed
                    print(f"resfields view: rendering failed: {type(err).__name__}: {err}", file=sys.stderr)
                    break
                if not self._current(version):
                    break
                try:
                    self._publish(result, state, level, time.perf_counter() - start)
                except Exception as err:  # e.g. the browser tab closed meanwhile
                    print(f"resfields view: could not show a frame: {type(err).__name__}: {err}", file=sys.stderr)
                    break
