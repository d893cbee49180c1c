"""A lean HTTP/1.1 keep-alive client for the delivery hot path: one POST path, many requests.

Why not httpx all the way: a 100-event POST through ``httpx.AsyncClient`` costs about
1.3 ms of CPU on this project's machine (about 2,600 Python calls: URL merging, request
and header models, auth and redirect flows, httpcore's connection state machine, anyio),
and the delivery loop is one thread. With 50 ms API latency and 8 requests in flight
that CPU is what keeps a sync below the API-bound rate. This client speaks just the
HTTP/1.1 the delivery needs, on asyncio protocols, and answers with real
``httpx.Response`` objects raising real ``httpx`` exceptions, so everything above it
(retry decisions, result parsing, tests) is unchanged.

What it does: pre-built request head (the key header is in it and nowhere else); one
connection per request in flight, reused when the server keeps it alive, dropped when it
says ``Connection: close``, closes it, or a request on it fails or is cancelled; response
framing by ``Transfer-Encoding: chunked``, ``Content-Length`` or connection close, 1xx
informational answers skipped; bodies decoded by httpx (``Content-Encoding``); one
timeout for connecting and for each wait for bytes (httpx's connect/read timeouts).
What it does not: proxies, HTTP/2, redirects, cookies, streaming. The delivery client
uses httpx itself whenever a proxy applies to the target or a transport is injected.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from typing import Any

import httpx

_MAX_HEAD = 64 * 1024
_NO_BODY = frozenset({204, 304})


def proxied(url: httpx.URL) -> bool:
    """True when the environment routes ``url`` through a proxy (httpx honours that; we do not)."""
    proxies = urllib.request.getproxies()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.host)


class _Reader:
    """Incremental parser of one response; ``feed`` returns True when the response is complete."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.keep_alive = True
        self._head_done = False
        self._length: int | None = None  # Content-Length framing
        self._chunked = False
        self._until_close = False
        self._chunk_left = -1  # bytes left of the current chunk (+2 for its CRLF); -1: read a size line
        self._trailers = False

    def feed(self, data: bytes) -> bool:
        self.buf += data
        if not self._head_done and not self._read_head():
            return False
        if self._until_close:
            self.body += self.buf
            self.buf.clear()
            return False
        if self._chunked:
            return self._read_chunks()
        assert self._length is not None
        take = min(self._length - len(self.body), len(self.buf))
        self.body += self.buf[:take]
        del self.buf[:take]
        if len(self.body) < self._length:
            return False
        if self.buf:  # bytes past the answer: this connection's framing cannot be trusted
            self.keep_alive = False
        return True

    def eof(self) -> bool:
        """The server closed the connection: True if that completes the response."""
        return self._head_done and self._until_close

    def _read_head(self) -> bool:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("response head is too large")
                return False
            lines = bytes(self.buf[:end]).split(b"\r\n")
            del self.buf[: end + 4]
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise httpx.RemoteProtocolError("malformed response status line")
            status = int(parts[1])
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue, 103 Early Hints: the real answer follows
            self.status, self.reason = status, parts[2] if len(parts) > 2 else b""
            headers = []
            connection = b""
            length: bytes | None = None
            encoding = b""
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep or not name or name != name.strip():
                    raise httpx.RemoteProtocolError("malformed response header")
                value = value.strip()
                headers.append((name, value))
                low = name.lower()
                if low == b"content-length":
                    if length is not None and length != value:
                        raise httpx.RemoteProtocolError("conflicting Content-Length headers")
                    length = value
                elif low == b"transfer-encoding":
                    encoding = value.lower()
                elif low == b"connection":
                    connection = value.lower()
            self.headers = headers
            self.keep_alive = parts[0] == b"HTTP/1.1" and b"close" not in connection
            self._head_done = True
            if status in _NO_BODY:
                self._length = 0
            elif encoding:
                if encoding.rsplit(b",", 1)[-1].strip() != b"chunked":
                    self._until_close = True
                    self.keep_alive = False
                else:
                    self._chunked = True
            elif length is not None:
                if not length.isdigit():
                    raise httpx.RemoteProtocolError("malformed Content-Length")
                self._length = int(length)
            else:
                self._until_close = True
                self.keep_alive = False
            return True

    def _read_chunks(self) -> bool:
        buf = self.buf
        while True:
            if self._trailers:
                end = buf.find(b"\r\n")
                if end < 0:
                    return False
                line = bytes(buf[:end])
                del buf[: end + 2]
                if not line:
                    if buf:
                        self.keep_alive = False
                    return True
                continue
            if self._chunk_left < 0:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise httpx.RemoteProtocolError("malformed chunk size line")
                    return False
                size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise httpx.RemoteProtocolError("malformed chunk size") from None
                if size == 0:
                    self._trailers = True
                    continue
                self._chunk_left = size + 2
            take = min(self._chunk_left, len(buf))
            if take == 0:
                return False
            self.body += buf[:take]
            del buf[:take]
            self._chunk_left -= take
            if self._chunk_left == 0:
                if self.body[-2:] != b"\r\n":
                    raise httpx.RemoteProtocolError("malformed chunk end")
                del self.body[-2:]
                self._chunk_left = -1


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reader: _Reader | None = None
        self.waiter: asyncio.Future[_Reader] | None = None
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, waiter = self.reader, self.waiter
        if reader is None or waiter is None or waiter.done():
            self._close()  # bytes nobody asked for: the connection's framing is lost
            return
        try:
            complete = reader.feed(data)
        except httpx.RemoteProtocolError as exc:
            self._fail(exc)
            return
        if complete:
            self._settle()
            waiter.set_result(reader)
        else:
            self._arm()

    def eof_received(self) -> bool | None:
        self._lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    # requests
    async def request(self, data: bytes) -> _Reader:
        assert self.transport is not None
        self.reader = _Reader()
        self.waiter = self.loop.create_future()
        self.transport.write(data)
        self._arm()
        try:
            return await self.waiter
        finally:
            self._settle()
            self.reader = self.waiter = None

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(self.timeout, self._timed_out)

    def _settle(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        self._fail(httpx.ReadTimeout("timed out waiting for the response"))

    def _fail(self, exc: Exception) -> None:
        waiter = self.waiter
        self._close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._settle()
        reader, waiter = self.reader, self.waiter
        if waiter is None or waiter.done():
            return
        if reader is not None and reader.eof():
            waiter.set_result(reader)
        elif isinstance(exc, OSError):
            waiter.set_exception(httpx.ReadError(f"connection lost: {type(exc).__name__}"))
        else:
            waiter.set_exception(httpx.RemoteProtocolError("Server disconnected without sending a complete response."))

    def _close(self) -> None:
        self.closed = True
        self._settle()
        if self.transport is not None:
            self.transport.close()


class LeanClient:
    """POSTs bodies to one URL over a pool of keep-alive connections; answers ``httpx.Response``.

    Used as ``async with LeanClient(...) as http: await http.post(body)``. The pool holds
    idle connections only; the caller bounds requests in flight (the delivery's limiter).
    """

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        target = httpx.URL(url)
        self._request = httpx.Request("POST", target)  # for the responses; carries no header of ours
        self._host = target.host
        self._port = target.port or (443 if target.scheme == "https" else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if target.scheme == "https" else None
        self._timeout = timeout
        host = f"[{self._host}]" if ":" in self._host else self._host
        default_port = target.port is None
        netloc = host if default_port else f"{host}:{self._port}"
        lines = [f"POST {target.raw_path.decode('ascii')} HTTP/1.1", f"Host: {netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    def __repr__(self) -> str:
        return f"LeanClient(host={self._host!r}, port={self._port})"

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for conn in list(self._all):
            conn._close()
        self._all.clear()
        self._idle.clear()

    async def post(self, body: bytes) -> httpx.Response:
        conn = await self._acquire()
        data = b"%sContent-Length: %d\r\n\r\n%s" % (self._head, len(body), body)
        try:
            reader = await conn.request(data)
        except BaseException:
            conn._close()  # a failed or cancelled exchange leaves the framing unknown
            self._all.discard(conn)
            raise
        if reader.keep_alive and not conn.closed:
            self._idle.append(conn)
        else:
            conn._close()
            self._all.discard(conn)
        return httpx.Response(
            reader.status,
            headers=reader.headers,
            content=bytes(reader.body),
            request=self._request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reader.reason},
        )

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
            self._all.discard(conn)
        loop = asyncio.get_running_loop()
        try:
            _transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop, self._timeout),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                ),
                self._timeout,
            )
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc.strerror or exc}") from None
        self._all.add(conn)
        return conn
