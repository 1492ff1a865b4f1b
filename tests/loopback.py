"""Loopback helpers shared by the Hub tests (servers bind 127.0.0.1 only and stop with the test)."""

from __future__ import annotations

import socket
import threading


class Tripwire:
    """A port on 127.0.0.1 that counts connections and closes them at once (the client fails fast, never hangs)."""

    def __init__(self) -> None:
        self.hits = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
