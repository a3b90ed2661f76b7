"""A TCP proxy on 127.0.0.1 that cuts connections after a number of bytes.

Put between boto3 and moto's server, it makes responses end mid-body the way a
flaky network does. The first `cuts` connections are closed once `after_bytes`
bytes went from the server to the client; later connections pass untouched. With
`slow_downs`, the first connections are instead answered with S3's
`503 SlowDown` throttling error before any cut is counted.
"""

from __future__ import annotations

import contextlib
import socket
import threading

_SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_SLOW_DOWN_BODY)).encode() + b"\r\n\r\n" + _SLOW_DOWN_BODY
)


class FaultyProxy:
    """Forward 127.0.0.1:<port> to `target`, cutting the first `cuts` connections."""

    def __init__(
        self, target: tuple[str, int], *, after_bytes: int, cuts: int, slow_downs: int = 0
    ) -> None:
        self.target = target
        self.after_bytes = after_bytes
        self.cuts_left = cuts
        self.slow_downs_left = slow_downs
        self.slow_down_count = 0
        self.cut_count = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="faulty-proxy", daemon=True)

    @property
    def url(self) -> str:
        """The endpoint URL to give boto3."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting and wait for the accept loop to end."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                if self.slow_downs_left > 0:
                    self.slow_downs_left -= 1
                    self.slow_down_count += 1
                    threading.Thread(target=self._slow_down, args=(client,), daemon=True).start()
                    continue
                limit = self.after_bytes if self.cuts_left > 0 else None
                if limit is not None:
                    self.cuts_left -= 1
            threading.Thread(target=self._serve, args=(client, limit), daemon=True).start()

    def _slow_down(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError), client:
            client.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                data = client.recv(65536)
                if not data:
                    return
                request += data
            client.sendall(SLOW_DOWN)

    def _serve(self, client: socket.socket, limit: int | None) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
        self._pipe(upstream, client, limit)

    def _pipe(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: max(0, limit - sent)])
                    with self._lock:
                        self.cut_count += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            # shutdown() wakes the other direction's thread blocked in recv(); a bare
            # close() would leave the socket open until that recv returned.
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
