"""How close the delivery client gets to the API-bound limit when the API is slow.

With ``latency`` seconds per answer and ``concurrency`` requests of ``batch`` events in
flight, no client can deliver more than ``concurrency * batch / latency`` events a second.
This prints, from one run:

* a floor: plain httpx POSTing pre-built bodies under a semaphore (no batching, retries,
  result mapping or callbacks) against the same server;
* :class:`DeliveryClient` at that concurrency, as a ratio of the limit (target >= 0.90)
  and of the floor (what the client's own work costs);
* the client with one request in flight, for comparison.

The server is the real sandbox in its own process (default), a do-nothing server that only
waits (``--server null``: the client alone), or the sandbox in a thread of this process.
Ratios, not timed assertions: they depend on how busy the machine is (printed).

    python bench/client_latency.py [--events 40000] [--latency-ms 50] [--concurrency 8]
                                   [--batch-size 100] [--server sandbox|null|in-process]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from destinations.outreach_magic.client import DeliveryClient, DeliveryStats, Outcomes
from destinations.outreach_magic.settings import EVENTS_PATH
from sandbox import running_sandbox

KEY = "bench-key"

_SERVE = """
import sys
from sandbox.faults import FaultSettings
from sandbox.runner import SandboxConfig, serve_forever
serve_forever(SandboxConfig(api_keys=[sys.argv[1]], port=0, faults=FaultSettings(latency_ms=float(sys.argv[2]))))
"""


# A minimal keep-alive HTTP/1.1 server that waits ``latency`` and answers every batch as
# fully applied: it costs almost no CPU, so it shows what the client alone can reach.
_NULL_SERVER = """
import asyncio, sys, orjson
latency = float(sys.argv[1]) / 1000

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            n = len(orjson.loads(await reader.readexactly(length)))
            await asyncio.sleep(latency)
            body = orjson.dumps({"errors": {"count": 0, "details": []}, "success": n, "total": n})
            writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n%s"
                         % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("Outreach Magic sandbox listening on http://127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


@contextlib.contextmanager
def sandbox_process(latency_ms: float, script: str = _SERVE) -> Iterator[str]:
    """The sandbox in its own process, so it does not share this process's GIL with the client."""
    args = [KEY, str(latency_ms)] if script is _SERVE else [str(latency_ms)]
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def sandbox_in_process(latency_ms: float) -> Iterator[str]:
    with running_sandbox([KEY], latency_ms=latency_ms) as sb:
        yield sb.url


def events(n: int) -> list[tuple[Any, bytes]]:
    return [
        (
            i,
            orjson.dumps(
                {
                    "event": "update_attributes",
                    "lead_email": f"lead{i}@example.com",
                    "lead_first_name": f"First{i}",
                    "company_domain": f"company{i % 1000}.example.com",
                }
            ),
        )
        for i in range(n)
    ]


def deliver(url: str, data: list[tuple[Any, bytes]], concurrency: int, batch: int) -> tuple[float, DeliveryStats]:
    """Events a second through :class:`DeliveryClient`, and its stats."""
    client = DeliveryClient(api_key=KEY, base_url=url, batch_size=batch, max_concurrency=concurrency)
    confirmed = 0

    def on_outcomes(outcomes: Outcomes) -> None:
        nonlocal confirmed
        confirmed += sum(o.status == "applied" for o in outcomes)

    started = time.perf_counter()
    stats = client.deliver(data, on_outcomes)
    elapsed = time.perf_counter() - started
    assert confirmed == len(data), f"only {confirmed} of {len(data)} applied"
    return len(data) / elapsed, stats


def bare_httpx(url: str, data: list[tuple[Any, bytes]], concurrency: int, batch: int) -> float:
    """The floor: pre-built bodies POSTed by plain httpx under a semaphore, no retries, no mapping."""
    bodies = [b"[" + b",".join(c for _, c in data[i : i + batch]) + b"]" for i in range(0, len(data), batch)]

    async def run() -> float:
        headers = {"x-api-key": KEY, "content-type": "application/json"}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as http:
            gate = asyncio.Semaphore(concurrency)

            async def post(body: bytes) -> None:
                async with gate:
                    response = await http.post(EVENTS_PATH, content=body)
                    response.raise_for_status()
                    response.json()

            started = time.perf_counter()
            await asyncio.gather(*(post(body) for body in bodies))
            return len(data) / (time.perf_counter() - started)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--server",
        choices=("sandbox", "null", "in-process"),
        default="sandbox",
        help="sandbox: the real sandbox in its own process (default); null: a do-nothing server that "
        "only waits, to see the client alone; in-process: the sandbox in a thread of this process",
    )
    args = parser.parse_args()

    data = events(args.events)
    conc, batch, latency = args.concurrency, args.batch_size, args.latency_ms / 1000
    limit = conc * batch / latency
    servers = {
        "sandbox": lambda: sandbox_process(args.latency_ms),
        "null": lambda: sandbox_process(args.latency_ms, _NULL_SERVER),
        "in-process": lambda: sandbox_in_process(args.latency_ms),
    }
    with servers[args.server]() as url:
        deliver(url, data[: batch * conc], conc, batch)  # warm-up: connections, imports, caches
        floor = bare_httpx(url, data, conc, batch)
        cpu = time.process_time()
        rate, stats = deliver(url, data, conc, batch)
        cpu = time.process_time() - cpu
        serial_n = min(len(data), batch * 40)
        serial_rate, serial = deliver(url, data[:serial_n], 1, batch)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"server {args.server}, latency {args.latency_ms:g} ms, batch {batch}, {len(data):,} events")
    print(f"load average {load} on {os.cpu_count()} CPUs (the limit assumes idle CPUs for client and server)")
    print(f"{'run':<30}{'events/s':>10}{'limit/s':>12}{'of limit':>10}{'of floor':>10}{'requests':>10}")
    print(f"{f'bare httpx floor, conc {conc}':<30}{floor:>10,.0f}{limit:>12,.0f}{floor / limit:>10.2f}{1:>10.2f}")
    print(
        f"{f'DeliveryClient, conc {conc}':<30}{rate:>10,.0f}{limit:>12,.0f}{rate / limit:>10.2f}"
        f"{rate / floor:>10.2f}{stats.requests:>10}"
    )
    print(
        f"{'DeliveryClient, conc 1':<30}{serial_rate:>10,.0f}{batch / latency:>12,.0f}"
        f"{serial_rate / (batch / latency):>10.2f}{'':>10}{serial.requests:>10}"
    )
    print(f"client CPU {cpu / stats.requests * 1000:.2f} ms a request; peak in flight {stats.max_concurrency_seen}")
    verdict = "meets" if rate / limit >= 0.9 else "BELOW"
    print(f"DeliveryClient: {rate / limit:.0%} of the API-bound limit ({verdict} the 90% target), "
          f"{rate / floor:.0%} of bare httpx")


if __name__ == "__main__":
    main()
