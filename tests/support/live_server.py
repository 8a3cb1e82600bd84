"""Run an ASGI app under a real uvicorn server in a thread, on 127.0.0.1 and an ephemeral port
(or one given)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


class LiveServer:
    """A uvicorn server on a socket bound to 127.0.0.1 and ``port`` (0: an ephemeral one);
    ``url`` is its base URL."""

    def __init__(self, app: Any, *, port: int = 0, **config: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind(("127.0.0.1", port))
        except OSError:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(app, log_level="warning", lifespan="on", **config)
        self.server = uvicorn.Server(cfg)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; return once the server accepts requests."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start in time")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self.server.should_exit = True
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._sock.close()


@contextlib.contextmanager
def serve(app: Any, *, port: int = 0, **config: Any) -> Iterator[LiveServer]:
    """Serve ``app`` for the duration of the ``with`` block, on ``port`` (0: an ephemeral one).

    Raises:
        OSError: ``port`` is taken.
    """
    server = LiveServer(app, port=port, **config)
    server.start()
    try:
        yield server
    finally:
        server.stop()
