"""A server on 127.0.0.1 that accepts TCP connections and never answers: a hung W&B
server, or a proxy that swallows requests. It holds what it accepts until it stops, and
stops by itself after `max_seconds` or `max_connections`."""

from __future__ import annotations

import socket
import threading
import time


class SilentServer:
    """Accept on 127.0.0.1:<port>, read nothing, write nothing."""

    def __init__(self, *, max_seconds: float = 120.0, max_connections: int = 200) -> None:
        self.max_seconds = max_seconds
        self.max_connections = max_connections
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting, close every held connection, and wait for the loop to end."""
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self._server.close()

    def _accept(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.accepted >= self.max_connections:
                break
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self.accepted += 1
            self._held.append(conn)
