"""Deliver pre-serialized events to ``POST /v1/events``: batches, retries, rate adaptation, results.

Shape of a delivery (why it is built this way):

* The caller's thread drives: it pulls items lazily from the caller's iterator, cuts them
  into batches (``batching.py``) and calls ``on_outcomes`` once per finished batch. Both
  touch the caller's state (typically one DuckDB connection), so both stay in the thread
  that called :meth:`DeliveryClient.deliver`, never concurrently.
* The network runs on an asyncio loop in a worker thread: one keep-alive httpx pool, at
  most ``max_concurrency`` requests in flight under an AIMD limit (``limiter.py``) that
  halves on 429/503 and grows back. A worker thread (rather than the caller's loop) makes
  ``deliver()`` work the same from a plain script and from a thread that already runs a
  loop (Airflow, Dagster, Jupyter).
* At most ``max_concurrency + 1`` batches are handed to the network and not yet reported,
  so memory stays bounded however many items the iterator yields.
* Every answer goes through :func:`retry.decide`. A 200's *body* says which items were
  applied; a 200 whose body is not the result object is retried like a 5xx (decided:
  resending is harmless because upserts are idempotent, and confirming items on a body we
  cannot read would be guessing). A batch that exhausts its attempts reports its items as
  ``failed`` (they stay unconfirmed and are sent again next run) and delivery goes on;
  401 and other 4xx stop the run with an exception.
* Batches are independent requests and may be applied by the server in any order relative
  to each other; items within one batch are applied in order. Outcomes of a batch are
  reported in the batch's item order.

The API key travels only in the ``x-api-key`` header: never in reprs, exception messages,
outcome reasons or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import httpx
import orjson

from . import settings
from .batching import Batch, batches
from .exceptions import (
    ApiContractError,
    ApiUnavailableError,
    AuthenticationError,
    ConfigurationError,
    InsecureTransportError,
)
from .limiter import AdaptiveLimiter
from .retry import TRANSPORT_ERRORS, Action, Jitter, MalformedResponse, RetryPolicy, decide, full_jitter

Sleep = Callable[[float], Awaitable[Any]]
OutcomeStatus = Literal["applied", "rejected", "failed"]

PAYLOAD_TOO_LARGE_ERROR: dict[str, Any] = {
    "msg": "Item is larger than the API accepts in one request (HTTP 413)",
    "type": "payload_too_large",
    "loc": [],
}
_ERROR_ENTRY_KEYS = ("msg", "type", "loc")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def _user_agent() -> str:
    try:
        version = metadata.version("outreach-magic-connector")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        version = "0.0.0"
    return f"outreach-magic-connector/{version}"


USER_AGENT = _user_agent()


@dataclass(frozen=True)
class ItemOutcome:
    """What happened to one item: ``applied``, ``rejected`` by the API, or ``failed`` (transient)."""

    key: Any
    status: OutcomeStatus
    errors: list[dict[str, Any]]  # rejected: the server's entries ({msg, type, loc}) for this item
    reason: str | None  # failed: why, e.g. "retries exhausted after HTTP 503"


@dataclass
class DeliveryStats:
    """Counters of one :meth:`DeliveryClient.deliver` call.

    ``requests`` counts every HTTP attempt (including retries and split halves);
    ``retries`` the re-sends of the same batch after a failure or a 429/503;
    ``throttled`` the 429 answers; ``splits`` the 413 answers that split a batch;
    ``items_sent`` the items pulled from the iterator and sent at least once.
    """

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    splits: int = 0
    items_sent: int = 0
    applied: int = 0
    rejected: int = 0
    failed: int = 0
    seconds: float = 0.0
    max_concurrency_seen: int = 0
    min_concurrency_limit: int = 0
    batches: int = 0
    bytes_sent: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)  # "200", "429", "ReadTimeout", ...


class _Fatal(Exception):
    """Carries a run-stopping exception out of a batch task."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(type(exc).__name__)
        self.exc = exc


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_base_url(base_url: str, allow_insecure_http: bool) -> httpx.URL:
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"base_url is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("base_url must be an http(s) URL with a host, e.g. https://api.outreachmagic.io")
    if url.username or url.password:
        raise ConfigurationError("base_url must not carry credentials; the API key is sent in a header")
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise InsecureTransportError(
            f"refusing to send the API key over plain http to {url.host}; use https "
            "(or allow_insecure_http=True for a trusted network)"
        )
    return url


def _parse_result(content: bytes, n: int) -> dict[int, list[dict[str, Any]]]:
    """Per-index errors of a 200 body; raises :class:`MalformedResponse` if it is not the result object."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise MalformedResponse("body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("errors"), dict):
        raise MalformedResponse("body has no 'errors' object")
    details = data["errors"].get("details")
    if not isinstance(details, list):
        raise MalformedResponse("'errors.details' is not a list")
    total = data.get("total")
    if total is not None and total != n:
        raise MalformedResponse(f"'total' is {total!r} for a batch of {n}")
    rejected: dict[int, list[dict[str, Any]]] = {}
    for detail in details:
        index = detail.get("index") if isinstance(detail, dict) else None
        entries = detail.get("error") if isinstance(detail, dict) else None
        if type(index) is not int or not 0 <= index < n or not isinstance(entries, list):
            raise MalformedResponse("an 'errors.details' entry has no valid index/error")
        rejected.setdefault(index, []).extend(
            {k: e[k] for k in _ERROR_ENTRY_KEYS if k in e} if isinstance(e, dict) else {"msg": str(e)}
            for e in entries
        )
    return rejected


class _Stopped(Exception):
    """Raised in a batch task that was about to send after the run was stopped."""


class _Run:
    """One ``deliver()`` call's network side: lives on the worker thread's event loop."""

    def __init__(self, client: DeliveryClient, events: queue.SimpleQueue[tuple[str, Any]]) -> None:
        self.client = client
        self.events = events
        self.stats = DeliveryStats()
        self.got_response = False
        self.stopped = False
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.inbox: asyncio.Queue[Batch | None] | None = None
        self.main_task: asyncio.Task[None] | None = None
        self.limiter: AdaptiveLimiter | None = None

    # --- called from the caller's thread
    def thread_main(self) -> None:
        try:
            asyncio.run(self.main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported, then re-raised in the caller's thread
            self.events.put(("fatal", exc))
        finally:
            self.ready.set()
            self.events.put(("exit", None))

    def submit(self, batch: Batch | None) -> None:
        assert self.loop is not None and self.inbox is not None
        # The loop may have closed after a fatal answer: that event is already queued.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.inbox.put_nowait, batch)

    def stop(self) -> None:
        self.stopped = True
        if self.loop is not None and self.main_task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self.loop.call_soon_threadsafe(self.main_task.cancel)

    # --- on the worker loop
    async def main(self) -> None:
        c = self.client
        self.loop = asyncio.get_running_loop()
        self.inbox = asyncio.Queue()
        self.main_task = asyncio.current_task()
        self.limiter = AdaptiveLimiter(c.max_concurrency)
        self.ready.set()
        tasks: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=c.max_concurrency, max_keepalive_connections=c.max_concurrency)
        try:
            async with httpx.AsyncClient(
                base_url=c.base_url,
                headers={
                    "x-api-key": c._api_key,
                    "content-type": "application/json",
                    "accept": "application/json",
                    "user-agent": USER_AGENT,
                },
                timeout=httpx.Timeout(c.timeout),
                limits=limits,
                transport=c._transport,
                follow_redirects=False,
            ) as http:
                while (batch := await self.inbox.get()) is not None:
                    task = asyncio.create_task(self.run_batch(http, batch))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self.stats.max_concurrency_seen = self.limiter.peak_in_flight
            self.stats.min_concurrency_limit = self.limiter.min_limit

    async def run_batch(self, http: httpx.AsyncClient, batch: Batch) -> None:
        try:
            outcomes = await self.deliver_batch(http, batch)
        except _Fatal as fatal:
            self.events.put(("fatal", fatal.exc))
            self.stop()
        except _Stopped:
            pass
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: stop loudly rather than lose items silently
            self.events.put(("fatal", exc))
            self.stop()
        else:
            self.events.put(("outcomes", outcomes))

    async def deliver_batch(self, http: httpx.AsyncClient, batch: Batch) -> list[ItemOutcome]:
        c, stats, limiter = self.client, self.stats, self.limiter
        assert limiter is not None
        body = batch.body()
        attempt = throttles = 0
        while True:
            pause = limiter.pause_remaining()
            if pause > 0:  # a 429 elsewhere asked everyone to wait
                await c._sleep(pause)
            epoch = await limiter.acquire()
            try:
                if self.stopped:
                    raise _Stopped
                result = await self.send(http, body)
                parsed: dict[int, list[dict[str, Any]]] = {}
                if isinstance(result, httpx.Response) and result.is_success:
                    try:
                        parsed = _parse_result(result.content, len(batch))
                    except MalformedResponse as exc:
                        result = exc
                if isinstance(result, httpx.Response) and result.status_code == 429:
                    throttles += 1
                else:
                    attempt += 1
                decision = decide(
                    result, attempt=attempt, throttles=throttles, batch_len=len(batch), policy=c._policy
                )
                action = decision.action
                # Decided while still holding the slot, so no other request starts after a stop.
                if action in (Action.AUTH_ERROR, Action.CONTRACT_ERROR) or (
                    action is Action.GIVE_UP and not self.got_response
                ):
                    self.stopped = True
            finally:
                await limiter.release()
            if action is Action.ACCEPT:
                limiter.succeeded()
                return [
                    ItemOutcome(key, "rejected", parsed[i], None)
                    if i in parsed
                    else ItemOutcome(key, "applied", [], None)
                    for i, key in enumerate(batch.keys)
                ]
            if action in (Action.RETRY, Action.THROTTLE):
                stats.retries += 1
                if action is Action.THROTTLE:
                    is_429 = isinstance(result, httpx.Response) and result.status_code == 429
                    stats.throttled += int(is_429)
                    # A 429 is about the key's rate: hold back every request, not just this one.
                    limiter.throttled(epoch, pause=decision.delay if is_429 else 0.0)
                await c._sleep(decision.delay)
                continue
            if action is Action.SPLIT:
                stats.splits += 1
                first, second = batch.halves()
                a, b = await asyncio.gather(self.deliver_batch(http, first), self.deliver_batch(http, second))
                return a + b
            if action is Action.REJECT_ITEM:
                return [ItemOutcome(batch.keys[0], "rejected", [dict(PAYLOAD_TOO_LARGE_ERROR)], None)]
            if action is Action.GIVE_UP:
                if not self.got_response:
                    raise _Fatal(
                        ApiUnavailableError(
                            f"Outreach Magic API at {c._display_url} is unreachable: no HTTP response "
                            f"after {attempt} attempts (last: {decision.reason})"
                        )
                    )
                reason = f"retries exhausted after {decision.reason}"
                return [ItemOutcome(key, "failed", [], reason) for key in batch.keys]
            assert isinstance(result, httpx.Response)
            if action is Action.AUTH_ERROR:
                raise _Fatal(
                    AuthenticationError(
                        f"Outreach Magic rejected the API key (HTTP 401) at {c._display_url}; "
                        "nothing was marked synced"
                    )
                )
            raise _Fatal(ApiContractError(result.status_code, c._redact(result.text)))

    async def send(self, http: httpx.AsyncClient, body: bytes) -> httpx.Response | BaseException:
        """One POST (the caller holds a slot); transport errors are returned, not raised."""
        stats = self.stats
        stats.requests += 1
        stats.bytes_sent += len(body)
        try:
            response = await http.post(settings.EVENTS_PATH, content=body)
        except TRANSPORT_ERRORS as exc:
            name = type(exc).__name__
            stats.status_counts[name] = stats.status_counts.get(name, 0) + 1
            return exc
        self.got_response = True
        code = str(response.status_code)
        stats.status_counts[code] = stats.status_counts.get(code, 0) + 1
        return response


class DeliveryClient:
    """Sends events to Outreach Magic in batches and reports, per item, what the API did.

    ``jitter=None`` disables jitter; ``sleep`` and ``transport`` are injectable for tests.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = settings.DEFAULT_BASE_URL,
        batch_size: int = settings.DEFAULT_BATCH_SIZE,
        max_batch_bytes: int = 5 * 1024 * 1024,
        max_concurrency: int = 4,
        timeout: float = 30.0,
        max_attempts: int = 8,
        backoff_base: float = 0.25,
        backoff_cap: float = 30.0,
        jitter: Jitter | None = full_jitter,
        allow_insecure_http: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigurationError("an API key is required (OUTREACH_MAGIC_API_KEY or dlt secrets)")
        if any(ch in api_key for ch in "\r\n\0") or not api_key.isprintable():
            raise ConfigurationError("the API key contains characters that cannot be sent in a header")
        if not 1 <= batch_size <= settings.MAX_ITEMS_PER_REQUEST:
            raise ConfigurationError(
                f"batch_size must be 1..{settings.MAX_ITEMS_PER_REQUEST}, got {batch_size}"
            )
        if not 64 <= max_batch_bytes <= settings.MAX_BYTES_PER_REQUEST:
            raise ConfigurationError(
                f"max_batch_bytes must be 64..{settings.MAX_BYTES_PER_REQUEST}, got {max_batch_bytes}"
            )
        if not 1 <= max_concurrency <= 64:
            raise ConfigurationError(f"max_concurrency must be 1..64, got {max_concurrency}")
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be positive, got {timeout}")
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {max_attempts}")
        if backoff_base < 0 or backoff_cap < backoff_base:
            raise ConfigurationError("backoff_base must be >= 0 and backoff_cap >= backoff_base")
        url = _check_base_url(base_url, allow_insecure_http)
        self._api_key = api_key
        self.base_url = str(url).rstrip("/")
        self._display_url = f"{url.scheme}://{url.netloc.decode('ascii')}"
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self._policy = RetryPolicy(max_attempts, backoff_base, backoff_cap, jitter)
        self._transport = transport
        self._sleep = sleep

    def __repr__(self) -> str:
        return (
            f"DeliveryClient(base_url={self.base_url!r}, batch_size={self.batch_size}, "
            f"max_concurrency={self.max_concurrency}, api_key='***')"
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")

    def deliver(
        self,
        items: Iterable[tuple[Any, bytes]],
        on_outcomes: Callable[[list[ItemOutcome]], None],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> DeliveryStats:
        """Send every ``(key, event JSON bytes)`` item; call ``on_outcomes`` once per finished batch.

        Callbacks run in the calling thread, one at a time, after the API answered for that
        batch: commit confirmations there. Raises :class:`AuthenticationError` (401),
        :class:`ApiContractError` (other 4xx) and :class:`ApiUnavailableError` (no HTTP
        response at all); after such an error nothing more is reported.
        """
        started = time.perf_counter()
        events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        run = _Run(self, events)
        worker = threading.Thread(target=run.thread_main, name="outreach-magic-delivery", daemon=True)
        worker.start()
        run.ready.wait()
        stats = run.stats
        window = self.max_concurrency + 1
        pending = batches(items, max_items=self.batch_size, max_bytes=self.max_batch_bytes)
        outstanding = 0
        exhausted = False
        done = 0
        try:
            while True:
                while not exhausted and outstanding < window:
                    batch = next(pending, None)
                    if batch is None:
                        exhausted = True
                        run.submit(None)
                        break
                    stats.batches += 1
                    stats.items_sent += len(batch)
                    outstanding += 1
                    run.submit(batch)
                if exhausted and outstanding == 0:
                    break
                kind, payload = events.get()
                if kind == "fatal":
                    raise payload
                if kind == "exit":
                    raise RuntimeError("the delivery worker stopped before every batch was answered")
                outcomes: list[ItemOutcome] = payload
                outstanding -= 1
                for outcome in outcomes:
                    if outcome.status == "applied":
                        stats.applied += 1
                    elif outcome.status == "rejected":
                        stats.rejected += 1
                    else:
                        stats.failed += 1
                done += len(outcomes)
                on_outcomes(outcomes)
                if on_progress is not None:
                    on_progress(done)
        finally:
            if not exhausted or outstanding:
                run.stop()
            worker.join(timeout=30)
            stats.seconds = time.perf_counter() - started
        return stats
