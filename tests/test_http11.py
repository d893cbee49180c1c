"""The lean HTTP/1.1 client under the delivery: framing, keep-alive, failures, as httpx would report them.

A scripted server on loopback answers each request with raw bytes the test chooses, so
every framing rule and failure is exercised over a real socket, and split into small
writes where that matters.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from destinations.outreach_magic.client import DeliveryClient
from destinations.outreach_magic.http11 import LeanClient, _Reader, proxied

KEY = "sk-lean-secret"
HEADERS = {"x-api-key": KEY, "content-type": "application/json"}

# What the server does with one request: bytes to write (in pieces, with a pause between),
# then whether to close the connection afterwards.
Script = Callable[[bytes], Awaitable[tuple[list[bytes], bool]]]


def answer(body: bytes = b'{"ok":1}', status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


class ScriptedServer:
    """Reads whole requests (Content-Length framed) and answers from ``replies`` in order."""

    def __init__(self, replies: list[tuple[list[bytes], bool]]) -> None:
        self.replies = replies
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api/v1/events"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append(head + await reader.readexactly(length))
                pieces, close = self.replies.pop(0)
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.001)
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def run(replies: list[tuple[list[bytes], bool]], bodies: list[bytes], timeout: float = 5.0,
        pause: float = 0.0) -> tuple[list[httpx.Response | BaseException], ScriptedServer]:
    server = ScriptedServer(replies)

    async def main() -> list[httpx.Response | BaseException]:
        url = await server.start()
        out: list[httpx.Response | BaseException] = []
        async with LeanClient(url, HEADERS, timeout=timeout) as http:
            for body in bodies:
                try:
                    out.append(await http.post(body))
                except httpx.TransportError as exc:
                    out.append(exc)
                await asyncio.sleep(pause)
        await server.stop()
        return out

    return asyncio.run(main()), server


def test_the_request_carries_path_host_length_and_headers_and_connections_are_reused() -> None:
    out, server = run([([answer(b"a")], False), ([answer(b"bb")], False)], [b"[1]", b"[22]"])
    assert [r.content for r in out if isinstance(r, httpx.Response)] == [b"a", b"bb"]
    assert server.connections == 1  # keep-alive
    first = server.requests[0]
    assert first.startswith(b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nx-api-key: " + KEY.encode() + b"\r\n" in first and b"Content-Length: 3\r\n\r\n[1]" in first


def test_chunked_answers_split_into_single_bytes_are_reassembled() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n")
    out, server = run([([bytes([b]) for b in chunked], False), ([answer()], False)], [b"x", b"y"])
    assert isinstance(out[0], httpx.Response) and out[0].json() == {"a": 1}
    assert isinstance(out[1], httpx.Response) and out[1].status_code == 200 and server.connections == 1


def test_informational_answers_are_skipped_and_gzip_is_decoded() -> None:
    packed = gzip.compress(b'{"total": 3}')
    reply = b"HTTP/1.1 100 Continue\r\n\r\n" + answer(packed, extra="Content-Encoding: gzip\r\n")
    out, _ = run([([reply[:30], reply[30:]], False)], [b"x"])
    assert isinstance(out[0], httpx.Response) and out[0].json() == {"total": 3}


def test_a_close_delimited_answer_ends_at_eof_and_the_next_request_reconnects() -> None:
    close_delimited = b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 2\r\n\r\nbusy"
    out, server = run([([close_delimited], True), ([answer()], False)], [b"x", b"y"])
    first = out[0]
    assert isinstance(first, httpx.Response) and first.status_code == 503 and first.text == "busy"
    assert first.headers["retry-after"] == "2"
    assert isinstance(out[1], httpx.Response) and out[1].status_code == 200 and server.connections == 2


def test_connection_close_and_a_server_closing_an_idle_connection_open_a_new_one() -> None:
    out, server = run([([answer(extra="Connection: close\r\n")], False), ([answer()], True), ([answer()], False)],
                      [b"1", b"2", b"3"], pause=0.05)
    assert [r.status_code for r in out if isinstance(r, httpx.Response)] == [200, 200, 200]
    assert server.connections == 3


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{\"half", httpx.RemoteProtocolError),  # lost answer
        (b"", httpx.RemoteProtocolError),  # closed without a word
        (b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n", httpx.RemoteProtocolError),  # garbage status
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", httpx.RemoteProtocolError),
    ],
)
def test_broken_answers_raise_httpx_transport_errors(reply: bytes, error: type[Exception]) -> None:
    out, _ = run([([reply], True)], [b"x"])
    assert isinstance(out[0], error), out[0]
    assert KEY not in str(out[0])


def test_a_silent_server_is_a_read_timeout_and_a_closed_port_a_connect_error() -> None:
    out, _ = run([([], False), ([answer()], False)], [b"x"], timeout=0.2)  # no answer, no close
    assert isinstance(out[0], httpx.ReadTimeout)

    async def refused() -> BaseException:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        async with LeanClient(f"http://127.0.0.1:{port}/v1/events", HEADERS, timeout=1) as http:
            try:
                await http.post(b"x")
            except httpx.TransportError as exc:
                return exc
        raise AssertionError("no error")

    exc = asyncio.run(refused())
    assert isinstance(exc, httpx.ConnectError) and KEY not in str(exc)


def test_any_split_of_an_answer_parses_the_same() -> None:
    raw = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
           b"5\r\nhello\r\n0\r\n\r\n")
    # gzip before chunked is not ours to decode: the parser frames it and httpx decodes it;
    # here only framing matters, so compare the framed body for every split point.
    for cut in range(1, len(raw)):
        reader = _Reader()
        done = reader.feed(raw[:cut]) or reader.feed(raw[cut:])
        assert done and reader.status == 200 and bytes(reader.body) == b"hello", cut


def test_proxies_from_the_environment_send_the_delivery_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = httpx.URL("https://api.example.com")
    assert not proxied(url)
    assert DeliveryClient(api_key=KEY, base_url=str(url))._lean
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxied(url)
    assert not DeliveryClient(api_key=KEY, base_url=str(url))._lean
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert not proxied(url)
    transport: Any = httpx.MockTransport(lambda request: httpx.Response(200))
    assert not DeliveryClient(api_key=KEY, base_url=str(url), transport=transport)._lean


def test_https_targets_verify_the_certificate_and_name(tmp_path: Any) -> None:
    """TLS with a certificate for ``localhost``: accepted when trusted, refused when the name differs."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main() -> tuple[httpx.Response, BaseException]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(answer(b'{"tls": true}'))
                await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        async with LeanClient(f"https://localhost:{port}/v1/events", HEADERS, timeout=5, ssl_context=client_ctx) as h:
            good = await h.post(b"{}")
        async with LeanClient(f"https://127.0.0.1:{port}/v1/events", HEADERS, timeout=5, ssl_context=client_ctx) as h:
            try:
                await h.post(b"{}")
                bad: BaseException = AssertionError("accepted a certificate for another name")
            except httpx.ConnectError as exc:
                bad = exc
        server.close()
        return good, bad

    good, bad = asyncio.run(main())
    assert good.json() == {"tls": True}
    assert isinstance(bad, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(bad)
