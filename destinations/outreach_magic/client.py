"""Deliver pre-serialized events to ``POST /v1/events``: batches, retries, rate adaptation, results.

Shape of a delivery (why it is built this way):

* Pulling items from the caller's iterator (cut into batches by ``batching.py``) and
  calling ``on_outcomes`` once per finished batch both touch the caller's state (typically
  one DuckDB connection), so both run in the thread that called
  :meth:`DeliveryClient.deliver`, one at a time.
* The network runs on an asyncio loop: one keep-alive httpx pool, at most
  ``max_concurrency`` requests in flight under an AIMD limit (``limiter.py``) that halves
  on 429/503 and grows back. The loop runs in the caller's thread (``asyncio.run``);
  only when that thread already runs a loop (Airflow, Dagster, Jupyter) does it run in a
  worker thread, which then asks the caller's thread to pull and to report.
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
import concurrent.futures
import contextlib
import functools
import ipaddress
import itertools
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, NamedTuple, Protocol, overload

import httpx
import orjson

from . import settings
from .batching import Batch, JoinedBatch, batches, fit
from .exceptions import (
    ApiContractError,
    ApiUnavailableError,
    AuthenticationError,
    ConfigurationError,
    InsecureTransportError,
)
from .http11 import LeanClient, proxied
from .limiter import AdaptiveLimiter
from .retry import TRANSPORT_ERRORS, Action, Jitter, MalformedResponse, RetryPolicy, decide, full_jitter

Sleep = Callable[[float], Awaitable[Any]]
AnyBatch = Batch | JoinedBatch
OutcomeStatus = Literal["applied", "rejected", "failed"]

PAYLOAD_TOO_LARGE_ERROR: dict[str, Any] = {
    "msg": "Item is larger than the API accepts in one request (HTTP 413)",
    "type": "payload_too_large",
    "loc": [],
}
_ERROR_ENTRY_KEYS = ("msg", "type", "loc")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once per process: building it loads the CA
    bundle (about 50 ms measured), and a sync opens a client for every slice it delivers."""
    return httpx.create_ssl_context()


def _user_agent() -> str:
    try:
        version = metadata.version("outreach-magic-connector")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        version = "0.0.0"
    return f"outreach-magic-connector/{version}"


USER_AGENT = _user_agent()


class ItemOutcome(NamedTuple):
    """What happened to one item: ``applied``, ``rejected`` by the API, or ``failed`` (transient).

    A named tuple (immutable, compared by value) rather than a frozen dataclass: one is
    built per event, and the dataclass's ``__init__`` cost 1.4 µs of the delivery loop each.
    ``errors`` is the empty tuple when there are none, not a new empty list: a tuple holding
    only atomic values is untracked by the garbage collector at its first pass, where a list
    in every outcome kept a million of them tracked, promoted and rescanned by full
    collections (3 s of CPU in a 1M-event sync, most of it in the delivery loop).
    """

    key: Any
    status: OutcomeStatus
    errors: Sequence[dict[str, Any]]  # rejected: the server's entries ({msg, type, loc}) for this item
    reason: str | None  # failed: why, e.g. "retries exhausted after HTTP 503"


class Outcomes(Sequence[ItemOutcome]):
    """What happened to the items of one batch, in the batch's order.

    Usually every item was applied: then this holds the batch's keys and nothing per item
    (an :class:`ItemOutcome` each cost 1 s of a 1M-event sync's delivery thread, building
    them and reading them back). Items are built only when someone looks at them;
    :attr:`all_applied` and :meth:`counts` answer without building any.
    """

    __slots__ = ("_items", "failed_reason", "keys", "rejected")

    def __init__(self, keys: Sequence[Any], rejected: dict[int, list[dict[str, Any]]] | None = None,
                 failed_reason: str | None = None) -> None:
        self.keys = keys
        self.rejected = rejected or {}  # index in the batch -> the server's error entries
        self.failed_reason = failed_reason  # every item failed, for this reason
        self._items: list[ItemOutcome] | None = None

    @classmethod
    def of(cls, items: list[ItemOutcome]) -> Outcomes:
        """Outcomes given item by item (the halves of a split batch, put together)."""
        out = cls([o.key for o in items])
        out._items = items
        return out

    @property
    def all_applied(self) -> bool:
        return self._items is None and not self.rejected and self.failed_reason is None

    def counts(self) -> tuple[int, int, int]:
        """(applied, rejected, failed)."""
        if self._items is not None:
            statuses = [o.status for o in self._items]
            applied, rejected = statuses.count("applied"), statuses.count("rejected")
            return applied, rejected, len(statuses) - applied - rejected
        if self.failed_reason is not None:
            return 0, 0, len(self.keys)
        return len(self.keys) - len(self.rejected), len(self.rejected), 0

    def _built(self) -> list[ItemOutcome]:
        if self._items is None:
            keys = [k.item() if hasattr(k, "item") else k for k in self.keys]  # NumPy scalars as Python's
            if self.failed_reason is not None:
                self._items = [ItemOutcome(k, "failed", (), self.failed_reason) for k in keys]
            else:
                rejected = self.rejected
                self._items = [
                    ItemOutcome(k, "rejected", rejected[i], None) if i in rejected
                    else ItemOutcome(k, "applied", (), None)
                    for i, k in enumerate(keys)
                ]
        return self._items

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> ItemOutcome: ...

    @overload
    def __getitem__(self, index: slice) -> list[ItemOutcome]: ...

    def __getitem__(self, index: int | slice) -> ItemOutcome | list[ItemOutcome]:
        return self._built()[index]

    def __iter__(self) -> Iterator[ItemOutcome]:
        return iter(self._built())

    def __add__(self, other: Outcomes) -> Outcomes:
        return Outcomes.of([*self, *other])

    def __repr__(self) -> str:
        return f"Outcomes({list(self)!r})"


@dataclass
class DeliveryStats:
    """Counters of one :meth:`DeliveryClient.deliver` call.

    ``requests`` counts every HTTP attempt (including retries and split halves);
    ``retries`` the re-sends of the same batch after a failure or a 429/503;
    ``throttled`` the 429 answers; ``splits`` the 413 answers that split a batch;
    ``items_sent`` the items pulled from the iterator and sent at least once;
    ``max_concurrency_seen`` the most requests in flight at once; ``min_concurrency_limit``
    the lowest the AIMD limit fell (below ``max_concurrency`` means the API asked us to
    slow down); ``status_counts`` every answer by status code or transport error name.
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


class _Poster(Protocol):
    """What a delivery needs of an HTTP client: POST a body to the events path."""

    async def post(self, body: bytes) -> httpx.Response: ...

    async def __aenter__(self) -> _Poster: ...

    async def __aexit__(self, *exc: Any) -> None: ...


class _HttpxPoster:
    """httpx for the delivery: with an injected transport (tests) or behind a proxy."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, body: bytes) -> httpx.Response:
        return await self.http.post(settings.EVENTS_PATH, content=body)

    async def __aenter__(self) -> _HttpxPoster:
        await self.http.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.http.__aexit__(*exc)


class _Stopped(Exception):
    """Raised in a batch task that was about to send after the run was stopped."""


# Report one batch's outcomes (if any), then pull up to ``want`` new batches: one call, so
# that a loop in a worker thread crosses over to the caller's thread once per batch.
Exchange = Callable[[Outcomes | None, int], Awaitable[list[AnyBatch]]]


class _Run:
    """One ``deliver()`` call, on an event loop: pulls batches, runs them, reports outcomes.

    ``exchange`` is the only way it touches the caller's iterator and callbacks;
    :meth:`DeliveryClient.deliver` makes sure it runs in the caller's thread.
    """

    def __init__(self, client: DeliveryClient) -> None:
        self.client = client
        self.stats = DeliveryStats()
        self.got_response = False
        self.stopped = False
        self.limiter = AdaptiveLimiter(client.max_concurrency)

    async def drive(self, exchange: Exchange) -> None:
        c, stats = self.client, self.stats
        finished: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        window = c.max_concurrency + 1  # batches handed to the network and not yet reported
        outstanding = 0
        exhausted = False
        to_report: Outcomes | None = None
        try:
            async with self._http() as http:
                while True:
                    want = 0 if exhausted else window - outstanding
                    if to_report is not None or want > 0:
                        new = await exchange(to_report, want)
                        to_report = None
                        exhausted = exhausted or len(new) < want
                        for batch in new:
                            stats.batches += 1
                            stats.items_sent += len(batch)
                            outstanding += 1
                            task = asyncio.create_task(self.run_batch(http, batch, finished))
                            tasks.add(task)
                            task.add_done_callback(tasks.discard)
                    if exhausted and outstanding == 0:
                        break
                    kind, payload = await finished.get()
                    if kind == "fatal":
                        raise payload
                    outstanding -= 1
                    to_report = payload
        finally:
            self.stopped = True
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            stats.max_concurrency_seen = self.limiter.peak_in_flight
            stats.min_concurrency_limit = self.limiter.min_limit

    def _http(self) -> _Poster:
        c = self.client
        headers = {
            "x-api-key": c._api_key,
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": USER_AGENT,
        }
        if c._lean:
            return LeanClient(c.base_url + settings.EVENTS_PATH, headers, timeout=c.timeout, ssl_context=_ssl_context())
        return _HttpxPoster(httpx.AsyncClient(
            base_url=c.base_url,
            headers=headers,
            timeout=httpx.Timeout(c.timeout),
            limits=httpx.Limits(
                max_connections=c.max_concurrency, max_keepalive_connections=c.max_concurrency
            ),
            # TCP_NODELAY: a small request body written after its headers otherwise waits
            # for the peer's delayed ACK (~40 ms a request on loopback, measured).
            transport=c._transport or httpx.AsyncHTTPTransport(
                verify=_ssl_context(),
                limits=httpx.Limits(max_connections=c.max_concurrency, max_keepalive_connections=c.max_concurrency),
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            ),
            follow_redirects=False,
        ))

    async def run_batch(self, http: _Poster, batch: AnyBatch, finished: asyncio.Queue[Any]) -> None:
        try:
            outcomes = await self.deliver_batch(http, batch)
        except _Fatal as fatal:
            self.stopped = True
            finished.put_nowait(("fatal", fatal.exc))
        except _Stopped:
            pass
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: stop loudly rather than lose items silently
            self.stopped = True
            finished.put_nowait(("fatal", exc))
        else:
            finished.put_nowait(("outcomes", outcomes))

    async def deliver_batch(self, http: _Poster, batch: AnyBatch) -> Outcomes:
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
                return Outcomes(batch.keys, parsed)
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
                return Outcomes(batch.keys, {0: [dict(PAYLOAD_TOO_LARGE_ERROR)]})
            if action is Action.GIVE_UP:
                if not self.got_response:
                    raise _Fatal(
                        ApiUnavailableError(
                            f"Outreach Magic API at {c._display_url} is unreachable: no HTTP response "
                            f"after {attempt} attempts (last: {decision.reason})"
                        )
                    )
                reason = f"retries exhausted after {decision.reason}"
                return Outcomes(batch.keys, failed_reason=reason)
            assert isinstance(result, httpx.Response)
            if action is Action.AUTH_ERROR:
                raise _Fatal(
                    AuthenticationError(
                        f"Outreach Magic rejected the API key (HTTP 401) at {c._display_url}; "
                        "nothing was marked synced"
                    )
                )
            raise _Fatal(ApiContractError(result.status_code, c._redact(result.text)))

    async def send(self, http: _Poster, body: bytes) -> httpx.Response | BaseException:
        """One POST (the caller holds a slot); transport errors are returned, not raised."""
        stats = self.stats
        stats.requests += 1
        stats.bytes_sent += len(body)
        try:
            response = await http.post(body)
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
    Requests go through :class:`~.http11.LeanClient` unless a transport is injected, a
    proxy applies to ``base_url`` or ``lean_http=False``; then through ``httpx.AsyncClient``.
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
        lean_http: bool = True,
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
        # The lean HTTP/1.1 client (http11.py) unless a transport is injected or a proxy
        # applies: it costs a fraction of httpx's CPU per request (see that module).
        self._lean = lean_http and transport is None and not proxied(url)

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
        on_outcomes: Callable[[Outcomes], None],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> DeliveryStats:
        """Send every ``(key, event JSON bytes)`` item; call ``on_outcomes`` once per finished batch.

        Callbacks run in the calling thread, one at a time, after the API answered for that
        batch: commit confirmations there. Raises :class:`AuthenticationError` (401),
        :class:`ApiContractError` (other 4xx) and :class:`ApiUnavailableError` (no HTTP
        response at all); after such an error nothing more is reported.
        """
        pending = batches(items, max_items=self.batch_size, max_bytes=self.max_batch_bytes)
        return self._deliver(pending, on_outcomes, on_progress)

    def deliver_batches(
        self,
        prebuilt: Iterable[JoinedBatch],
        on_outcomes: Callable[[Outcomes], None],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> DeliveryStats:
        """:meth:`deliver` for items the caller already joined into request bodies; a batch
        over ``batch_size`` items or ``max_batch_bytes`` bytes is cut first."""
        pending = fit(prebuilt, max_items=self.batch_size, max_bytes=self.max_batch_bytes)
        return self._deliver(pending, on_outcomes, on_progress)

    def _deliver(
        self,
        pending: Iterator[AnyBatch],
        on_outcomes: Callable[[Outcomes], None],
        on_progress: Callable[[int], None] | None,
    ) -> DeliveryStats:
        started = time.perf_counter()
        run = _Run(self)
        stats = run.stats
        done = 0

        def exchange(outcomes: Outcomes | None, want: int) -> list[AnyBatch]:
            nonlocal done
            if outcomes is not None:
                applied, rejected, failed = outcomes.counts()
                stats.applied += applied
                stats.rejected += rejected
                stats.failed += failed
                done += len(outcomes)
                on_outcomes(outcomes)
                if on_progress is not None:
                    on_progress(done)
            return list(itertools.islice(pending, want))

        try:
            if _loop_running():
                _run_beside_loop(run, exchange)
            else:
                _run_fresh_loop(run.drive(_here(exchange)))
        finally:
            stats.seconds = time.perf_counter() - started
        return stats


def _run_fresh_loop(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` on a new loop in this thread, leaving the thread's own event loop alone.

    ``asyncio.run`` would replace (and then unset) a loop the caller had set on this thread
    but not started; ``asyncio.Runner`` with a loop factory does not touch it.
    """
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(coro)
    else:  # pragma: no cover - Python 3.10
        asyncio.run(coro)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _here(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn`` as a coroutine function that runs it inline (we are in the caller's thread)."""

    async def call(*args: Any) -> Any:
        return fn(*args)

    return call


def _run_beside_loop(run: _Run, exchange: Callable[[Outcomes | None, int], list[AnyBatch]]) -> None:
    """Run the delivery loop in a worker thread, serving its ``exchange`` calls here.

    Used only when the calling thread already runs an event loop (Airflow, Dagster,
    Jupyter): ``asyncio.run`` is not allowed there, and the caller's callbacks must still run
    in the caller's thread. The default path avoids the thread: two threads trading the GIL
    per batch cost about half the throughput in a measurement here.
    """
    jobs: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    loop_box: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]] = []

    def remote(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any) -> Any:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            jobs.put(("call", (fn, args, future)))
            return await asyncio.wrap_future(future)

        return call

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop_box.append((asyncio.get_running_loop(), task))
        await run.drive(remote(exchange))

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            jobs.put(("error", exc))
        else:
            jobs.put(("done", None))

    worker = threading.Thread(target=thread_main, name="outreach-magic-delivery", daemon=True)
    worker.start()
    finished = False
    try:
        while True:
            kind, payload = jobs.get()
            if kind == "done":
                finished = True
                return
            if kind == "error":
                finished = True
                raise payload
            fn, args, future = payload
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed back to the loop, which stops and re-raises it here
                future.set_exception(exc)
    finally:
        if not finished and loop_box:  # interrupted here (KeyboardInterrupt): stop the loop
            loop, task = loop_box[0]
            run.stopped = True
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        worker.join(timeout=30)
