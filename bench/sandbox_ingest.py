"""How many events a second the sandbox ingests, beside a bare Starlette endpoint, in one run.

    python bench/sandbox_ingest.py            # defaults: 50,000 events a run, under ~2 minutes

What is measured, and how:

* Two servers, each its own process on uvicorn with the same settings and the same
  loopback socket setup: the sandbox exactly as ``outreach-magic sandbox`` runs it, and
  a bare Starlette endpoint that reads the body, ``orjson.loads`` it and answers a
  constant (the ceiling any JSON-over-HTTP Python server on uvicorn could reach).
* 4 client processes (not threads: their HTTP and JSON work must not share the server's
  interpreter), each with one keep-alive ``httpx`` connection, sending pre-encoded
  bodies back to back. Bodies are encoded before the clock starts; the clock runs from a
  barrier that releases all clients to the moment the last one got its last answer.
* Batch sizes 100 and 500; for the sandbox, *inserts* (new leads and companies) and
  *updates* (the same events again, so every item matches an existing lead) separately;
  each figure is the median of 3 runs. The sandbox's store keeps growing over the runs
  (300,000 leads and companies at the end with the defaults), as a long sync would grow it.
* On a 2-core machine the clients and the server share the cores, so the absolute
  figures are a floor; the ratio to the bare endpoint is the fairer number.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import orjson

CLIENTS = 4
RUNS = 3
KEY = "bench-key"
WS = "65f1a2b3c4d5e6f7890a1b2c"


# ------------------------------------------------------------------ the bare endpoint
def serve_bare() -> None:
    """A Starlette app on uvicorn that only parses the JSON body (the baseline)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def events(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(b'{"ok":true}', media_type="application/json")

    app = Starlette(routes=[Route("/v1/events", events, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # same as the sandbox's
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(f"bare endpoint listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def start_server(kind: str) -> tuple[subprocess.Popen[str], str]:
    if kind == "sandbox":
        cmd = [sys.executable, "-m", "pipelines.cli", "sandbox", "--port", "0"]
        env = {**os.environ, "OUTREACH_MAGIC_SANDBOX_API_KEYS": KEY}
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve-bare"]
        env = dict(os.environ)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if not match:
        proc.kill()
        raise SystemExit(f"{kind} server did not start: {line!r}")
    return proc, match.group(0)


# ------------------------------------------------------------------------ clients
def make_events(run: str, worker: int, count: int) -> list[dict[str, Any]]:
    """Realistic events: a lead, its company, a workspace attribute (about 330 bytes each)."""
    out = []
    for i in range(count):
        n = f"{run}-{worker}-{i}"
        out.append({
            "event": "update_attributes",
            "platform": "clay",
            "workspace_id": WS,
            "icp": "ICP 1",
            "lead_email": f"person.{n}@example.com",
            "lead_first_name": "Jane",
            "lead_last_name": f"Doe {i}",
            "lead_job_title": "Head of Operations",
            "company_domain": f"company-{n}.example.com",
            "company_name": f"Company {n}",
            "company_industry": "Software",
        })
    return out


def client(worker: int, conn: Any, barrier: Any) -> None:
    import httpx

    # TCP_NODELAY: without it, the body written after the headers waits for the server's
    # delayed ACK (about 40 ms per request on Linux loopback), which measures Nagle, not servers.
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    http = httpx.Client(timeout=60, transport=transport, headers=headers)
    while True:
        job = conn.recv()
        if job is None:
            break
        url, run, count, batch = job
        events = make_events(run, worker, count)
        bodies = [(orjson.dumps(events[i : i + batch]), len(events[i : i + batch])) for i in range(0, count, batch)]
        barrier.wait()
        start = time.perf_counter()
        ok = True
        for body, items in bodies:
            r = http.post(f"{url}/v1/events", content=body)
            if r.status_code != 200 or (r.content.startswith(b'{"errors"') and r.json()["success"] != items):
                ok = False
        conn.send((start, time.perf_counter(), ok))
    http.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``); the clients' encoding happens
    before the barrier, so during a run the server's CPU goes to serving."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Clients:
    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.barrier = ctx.Barrier(n)
        self.pipes = []
        self.procs = []
        for w in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client, args=(w, child, self.barrier), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def run(self, url: str, run: str, total: int, batch: int, server_pid: int) -> tuple[float, float]:
        """(events a second of wall time, events a second of server CPU time) for ``total`` events."""
        per = total // len(self.pipes)
        for pipe in self.pipes:
            pipe.send((url, run, per, batch))
        cpu0 = cpu_seconds(server_pid)
        results = [pipe.recv() for pipe in self.pipes]
        cpu = cpu_seconds(server_pid) - cpu0
        if not all(ok for _, _, ok in results):
            raise SystemExit(f"a client saw a non-200 answer or rejected items in run {run}")
        start = min(r[0] for r in results)
        end = max(r[1] for r in results)
        events = per * len(self.pipes)
        return events / (end - start), events / max(cpu, 1e-9)

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for proc in self.procs:
            proc.join(timeout=10)


# ------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per run (default 50,000)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare()
        return 0

    print(f"machine: {os.cpu_count()} cores (nproc), Python {platform.python_version()}, {platform.platform()}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before the run: {load} (other work on the machine skews the absolute figures)")
    print(f"{CLIENTS} client processes, {args.events:,} events a run, median of {RUNS} runs\n")
    clients = Clients(CLIENTS)
    servers = {kind: start_server(kind) for kind in ("bare", "sandbox")}
    rates: dict[tuple[str, int, str], tuple[float, float]] = {}
    try:
        for batch in (100, 500):
            for r in range(RUNS):
                (bare_proc, bare_url), (sb_proc, sb_url) = servers["bare"], servers["sandbox"]
                rates[("bare", batch, f"parse{r}")] = clients.run(bare_url, f"b{batch}r{r}", args.events, batch,
                                                                  bare_proc.pid)
                run_id = f"b{batch}r{r}"
                rates[("sandbox", batch, f"insert{r}")] = clients.run(sb_url, run_id, args.events, batch, sb_proc.pid)
                rates[("sandbox", batch, f"update{r}")] = clients.run(sb_url, run_id, args.events, batch, sb_proc.pid)
    finally:
        clients.close()
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    def median(kind: str, batch: int, phase: str, which: int) -> float:
        return statistics.median(rates[(kind, batch, f"{phase}{r}")][which] for r in range(RUNS))

    for which, title in ((0, "events a second (wall clock)"),
                         (1, "events per second of server CPU (what one dedicated core would sustain)")):
        print(title)
        print(f"{'batch':>7}  {'bare parse':>12}  {'sandbox insert':>14}  {'ratio':>5}  "
              f"{'sandbox update':>14}  {'ratio':>5}")
        for batch in (100, 500):
            bare = median("bare", batch, "parse", which)
            ins, upd = median("sandbox", batch, "insert", which), median("sandbox", batch, "update", which)
            print(f"{batch:>7}  {bare:>12,.0f}  {ins:>14,.0f}  {ins / bare:>5.2f}  {upd:>14,.0f}  {upd / bare:>5.2f}")
        print()
    print(f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
