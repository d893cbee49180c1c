"""Start the sandbox on uvicorn: in a background thread (tests, demos) or in the foreground (CLI).

The listening socket is bound before uvicorn starts, so port 0 gives a free port that is
known (and printable) before the first request, with no race between "find a free port"
and "bind it".
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from destinations.outreach_magic import settings as s

from .faults import FaultSettings
from .server import Limits, QuietAbortFilter, SandboxApp
from .state import SandboxState

_START_TIMEOUT_S = 10.0


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising SIGINT/SIGTERM after its graceful shutdown.

    uvicorn re-sends the captured signal once it has stopped, which kills the process
    before the caller can flush the ``--db`` file; here the signal only asks for a
    graceful exit, and ``serve_forever`` returns normally (exit status 0).
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@dataclass
class SandboxConfig:
    """Everything ``outreach-magic sandbox`` and :func:`running_sandbox` accept."""

    api_keys: Sequence[str] = ("test-key",)
    host: str = "127.0.0.1"
    port: int = 0
    faults: FaultSettings = field(default_factory=FaultSettings)
    max_items: int = s.MAX_ITEMS_PER_REQUEST
    max_bytes: int = s.MAX_BYTES_PER_REQUEST
    db_path: str | Path | None = None


def build(config: SandboxConfig) -> tuple[SandboxApp, uvicorn.Server, socket.socket]:
    """The app, a configured uvicorn server and its bound socket (not yet serving)."""
    state = SandboxState(config.api_keys, config.db_path, config.faults.seed)
    app = SandboxApp(state, config.faults, Limits(config.max_items, config.max_bytes))
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError:
        sock.close()
        state.close()
        raise
    sock.listen(2048)  # connections queue from now on, even before uvicorn accepts them
    uv_config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
        timeout_keep_alive=30,
    )
    logging.getLogger("uvicorn.error").addFilter(QuietAbortFilter())
    return app, _Server(uv_config), sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class RunningSandbox:
    """A sandbox serving in a background thread; ``stop()`` is idempotent."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.app, self._server, self._sock = build(config)
        self.url = url_of(self._sock)
        self.api_keys: tuple[str, ...] = tuple(config.api_keys)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="sandbox-server", daemon=True
        )

    @property
    def state(self) -> SandboxState:
        """The in-memory store, for in-process inspection (hold ``state.lock`` while reading)."""
        return self.app.state

    def start(self) -> RunningSandbox:
        self.app.state.start()
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the sandbox server failed to start")
            self._thread.join(0.01)
            waited += 0.01
            if waited > _START_TIMEOUT_S:
                self.stop()
                raise RuntimeError("the sandbox server did not start in time")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()
        self.app.state.close()


@contextmanager
def running_sandbox(
    api_keys: Sequence[str] = ("test-key",),
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    latency_ms: float = 0,
    rate_limit: float | None = None,
    error_rate: float = 0.0,
    drop_rate: float = 0.0,
    lost_response_rate: float = 0.0,
    max_items: int = s.MAX_ITEMS_PER_REQUEST,
    max_bytes: int = s.MAX_BYTES_PER_REQUEST,
    db_path: str | Path | None = None,
    seed: int | None = None,
) -> Iterator[RunningSandbox]:
    """Serve a sandbox on a free loopback port for the duration of the ``with`` block.

    >>> with running_sandbox(["my-key"]) as sb:   # doctest: +SKIP
    ...     httpx.post(sb.url + "/v1/events", ...)
    """
    faults = FaultSettings(latency_ms, rate_limit, error_rate, drop_rate, lost_response_rate, seed)
    config = SandboxConfig(tuple(api_keys), host, port, faults, max_items, max_bytes, db_path)
    sandbox = RunningSandbox(config).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def serve_forever(config: SandboxConfig, announce: bool = True) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (uvicorn's handlers), then flush and stop."""
    app, server, sock = build(config)
    try:
        if announce:
            print(f"Outreach Magic sandbox listening on {url_of(sock)}", flush=True)
        app.state.start()
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.state.close()
