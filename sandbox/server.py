"""The sandbox's ASGI application: ``POST /v1/events`` per the contract, plus ``/_sandbox/*``.

``/v1/events`` is a raw ASGI handler in front of a Starlette app that serves everything
else (the inspection endpoints, 404s). Two reasons: it sees the server's own ``send``,
which the drop and lost-response faults need to close the connection mid-answer, and it
keeps per-request overhead off the hot path. Checks run in the contract's order: key,
rate limit, content type, size, body shape; then the injected fault, then the upsert.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import compress
from operator import not_
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from destinations.outreach_magic import settings as s
from destinations.outreach_magic.contract import ItemErrors, build_result, fast_verdicts, validate_item

from .faults import Fault, FaultInjector, FaultSettings
from .openapi import openapi_endpoint
from .state import SandboxState
from .store import Tenant

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_LOG = logging.getLogger("sandbox")


@dataclass
class Limits:
    max_items: int = s.MAX_ITEMS_PER_REQUEST
    max_bytes: int = s.MAX_BYTES_PER_REQUEST


class AbortConnection(Exception):
    """Raised after a partial answer so that the ASGI server closes the connection.

    Used only when the server's transport cannot be reached directly (see
    :func:`_close_transport`); :class:`QuietAbortFilter` keeps it out of the logs.
    """


class QuietAbortFilter(logging.Filter):
    """Hide uvicorn's "Exception in ASGI application" for deliberate aborts."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, AbortConnection)


def _close_transport(send: Send) -> bool:
    """Close the TCP connection under ``send`` without a (complete) answer.

    uvicorn's ``send`` is a bound method of its request cycle, which holds the asyncio
    transport; marking the cycle disconnected stops uvicorn from answering 500 or logging.
    Returns False when the server is not uvicorn (the caller then raises instead).
    """
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(cycle, "disconnected"):
        return False
    transport.close()
    cycle.disconnected = True
    return True


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    start = [_JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        start += headers
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


Answer = Callable[[Send], Awaitable[None]]


def _later(respond: Callable[..., Awaitable[None]], *args: Any) -> Answer:
    """An answer decided now and sent later (after the injected latency)."""

    async def answer(send: Send) -> None:
        await respond(send, *args)

    return answer


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


_INVALID_KEY = _error(s.INVALID_API_KEY_MESSAGE)
_RATE_LIMITED = _error(s.RATE_LIMIT_MESSAGE)
_BAD_CONTENT_TYPE = _error(s.CONTENT_TYPE_MESSAGE)
_SERVER_ERRORS = {
    Fault.ERROR_503: (503, _error("Service temporarily unavailable"), [(b"retry-after", b"1")]),
    Fault.ERROR_500: (500, _error("Internal server error"), []),
    Fault.ERROR_502: (502, _error("Bad gateway"), []),
}


class SandboxApp:
    """The whole sandbox as one ASGI callable."""

    def __init__(self, state: SandboxState, faults: FaultSettings | None = None, limits: Limits | None = None) -> None:
        self.state = state
        self.faults = FaultInjector(faults or FaultSettings())
        self.limits = limits or Limits()
        self.inspection = Starlette(
            routes=[
                Route("/_sandbox/leads", self._leads, methods=["GET"]),
                Route("/_sandbox/companies", self._companies, methods=["GET"]),
                Route("/_sandbox/stats", self._stats, methods=["GET"]),
                Route("/_sandbox/reset", self._reset, methods=["POST"]),
                Route("/openapi.json", openapi_endpoint, methods=["GET"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == s.EVENTS_PATH:
            await self.events(scope, receive, send)
        else:
            await self.inspection(scope, receive, send)

    # ------------------------------------------------------------ /v1/events
    async def events(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _answer(send, 405, _error("Method not allowed"), [(b"allow", b"POST")])
            return
        key = content_type = content_length = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                key = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
        faults = self.faults
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        answer = await self._events(key, content_type, content_length, receive)
        if faults.latency_s:
            # The latency is the API's response time: the answer leaves ``latency`` after the
            # request arrived, or as soon as it is ready if the work took longer. Sleeping
            # first and working after would add this server's own processing to every
            # request, and "concurrency x batch / latency" would no longer be the bound.
            await asyncio.sleep(max(0.0, arrived + faults.latency_s - loop.time()))
        await answer(send)

    async def _events(
        self, key: str | None, content_type: bytes | None, content_length: bytes | None, receive: Receive
    ) -> Answer:
        """Check, parse and apply one request; returns how to answer it (sent by the caller)."""
        faults = self.faults
        tenant = self.state.tenants.get(key) if key is not None else None
        if tenant is None:
            return _later(_answer, 401, _INVALID_KEY)
        tenant.requests += 1
        wait = faults.retry_after(tenant.tenant_id)
        if wait:
            tenant.count_status("429")
            return _later(_answer, 429, _RATE_LIMITED, [(b"retry-after", str(wait).encode())])
        if content_type is None or content_type.split(b";", 1)[0].strip().lower() != b"application/json":
            tenant.count_status("415")
            return _later(_answer, 415, _BAD_CONTENT_TYPE)
        max_bytes = self.limits.max_bytes
        too_big = _error(f"Request body is larger than the limit of {max_bytes} bytes")
        if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
            tenant.count_status("413")
            return _later(_answer, 413, too_big)
        body = await _read_body(receive, max_bytes)
        if body is None:
            tenant.count_status("413")
            return _later(_answer, 413, too_big)
        items, problem = _parse(body)
        if problem:
            tenant.count_status("400")
            return _later(_answer, 400, _error(problem))
        tenant.events_received += len(items)
        if len(items) > self.limits.max_items:
            tenant.count_status("413")
            return _later(
                _answer,
                413,
                _error(f"Request has {len(items)} items, more than the limit of {self.limits.max_items}"),
            )

        fault = faults.draw()
        if fault in _SERVER_ERRORS:
            status, payload, extra = _SERVER_ERRORS[fault]
            tenant.count_status(fault.value)
            return _later(_answer, status, payload, extra)
        if fault is Fault.DROP:
            tenant.count_status("drop")
            return _drop

        result = self._apply(tenant, items)
        payload = orjson.dumps(result)
        if fault is Fault.LOST:
            tenant.count_status("lost")
            return _later(_lose, payload)
        tenant.count_status("200")
        return _later(_answer, 200, payload)

    def _apply(self, tenant: Tenant, items: list[Any]) -> Any:
        """Validate, then upsert in array order, under the state lock (one request at a time).

        Certainly-valid items (the fast path) skip the pydantic model; only the others are
        built as models, for their error entries. The store applies the valid ones.
        """
        details: list[ItemErrors] = []
        with self.state.lock, _gc_paused():
            verdicts = fast_verdicts(items, from_json=True)
            valid = verdicts.valid  # completed in place by the model below
            for index in compress(range(len(items)), map(not_, valid)):
                errors = validate_item(items[index])[1]
                if errors:
                    details.append({"index": index, "error": errors})
                else:
                    valid[index] = True
            for index, message in tenant.apply_many(items, verdicts):
                field = "unified_lead_id" if "lead" in message else "unified_company_id"
                details.append({"index": index, "error": [{"msg": message, "type": "value_error", "loc": [field]}]})
            tenant.events_applied += len(items) - len(details)
            tenant.events_rejected += len(details)
        return build_result(len(items), details)

    # ------------------------------------------------------------ /_sandbox/*
    def _tenant(self, request: Request) -> Tenant | None:
        key = request.headers.get("x-api-key")
        return self.state.tenants.get(key) if key is not None else None

    async def _leads(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if tenant is None:
            return _unauthorized()
        with self.state.lock:
            body = orjson.dumps(list(tenant.lead_docs()))
        return Response(body, media_type="application/json")

    async def _companies(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if tenant is None:
            return _unauthorized()
        with self.state.lock:
            body = orjson.dumps(list(tenant.company_docs()))
        return Response(body, media_type="application/json")

    async def _stats(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if tenant is None:
            return _unauthorized()
        with self.state.lock:
            body = orjson.dumps(tenant.stats())
        return Response(body, media_type="application/json")

    async def _reset(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if tenant is None:
            return _unauthorized()
        self.state.reset(tenant)
        return Response(orjson.dumps({"reset": True}), media_type="application/json")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while one request is applied.

    Validating and applying a batch allocates a few thousand short-lived containers (key
    tuples, value views, column tuples), freed by reference counting when the request ends.
    A collection in the middle would promote them as survivors, and enough survivors
    trigger full collections, each a walk over the whole store: measured at 8-12% of the
    sandbox's time on growing stores. Paused, they die young; nothing here makes cycles.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _unauthorized() -> Response:
    return Response(_INVALID_KEY, status_code=401, media_type="application/json")


async def _read_body(receive: Receive, max_bytes: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _parse(body: bytes) -> tuple[list[Any], str | None]:
    """The items of a body, or a 400 reason (not JSON, neither object nor array, empty array)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [], "Request body is not valid JSON"
    if isinstance(data, dict):
        return [data], None
    if isinstance(data, list):
        return (data, None) if data else ([], "Request body is an empty array")
    return [], "Request body must be a JSON object or an array of objects"


async def _drop(send: Send) -> None:
    """Close the connection before any answer: nothing was applied."""
    if not _close_transport(send):
        await send({"type": "http.response.start", "status": 200, "headers": [_JSON, (b"content-length", b"2")]})
        raise AbortConnection("dropped")


async def _lose(send: Send, payload: bytes) -> None:
    """The request was applied; send half an answer, then close (a lost response)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [_JSON, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload[: len(payload) // 2], "more_body": True})
    if not _close_transport(send):
        raise AbortConnection("response lost")
