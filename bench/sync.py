"""Benchmark the whole sync against baselines measured in the same run.

    python bench/sync.py                 # 1,000,000 rows (about 3-5 minutes on 2 cores)
    python bench/sync.py --rows 200000   # quicker
    python bench/sync.py --only-latency 8   # the latency case alone, 8 times (its spread)

Every figure is a ratio to a baseline of this run, on this machine:

1. full sync of N canonical rows from Parquet into the sandbox, against a bare floor:
   DuckDB reads the same Parquet, orjson builds 500-event arrays, 4 httpx clients POST
   them to the same sandbox, the median of ``--floor-runs`` runs (target: the sync
   reaches >= 50% of the floor's rate);
2. a rerun over the same unchanged rows: its time as a share of the full sync's (target
   <= 15%) and its request count (target 0);
3. the sync process's peak RSS (target <= 500 MB);
4. with 50 ms sandbox latency, concurrency 8 and batch 100: the delivery rate against
   the API-bound limit concurrency x batch / latency (target >= 90%);
5. a one-request-per-row loop (what an HTTP column in a spreadsheet tool does) on a
   smaller slice, beside the sync's own rate.

The sandbox runs in its own process (as the real API would), each sync in a fresh
child process (so import time and peak RSS are the command's own).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"


def make_rows(path: Path, rows: int) -> None:
    """Canonical rows as an enrichment export would fill them: 14 of the API's fields."""
    duckdb.sql(f"""
    COPY (SELECT
      'person' || i || '@company' || (i % 50000) || '.example.com' AS lead_email,
      'https://www.linkedin.com/in/person-' || i || '/' AS lead_linkedin_url,
      'First' || (i % 997) AS lead_first_name, 'Last' || (i % 1009) AS lead_last_name,
      'Title ' || (i % 37) AS lead_job_title, 'United States' AS lead_country,
      'director' AS lead_seniority, 'Operations' AS lead_function,
      'company' || (i % 50000) || '.example.com' AS company_domain, 'Company ' || (i % 50000) AS company_name,
      'Software' AS company_industry, CAST(10 + (i % 5000) AS VARCHAR) AS company_employee_count,
      'United States' AS company_country, 'apollo' AS platform
     FROM range({rows}) t(i)) TO '{path}' (FORMAT parquet)
    """)


class Sandbox:
    """``outreach-magic sandbox`` in a child process on a free port."""

    def __init__(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "sandbox", "--port", "0", "--api-key", KEY, *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = line.strip().rsplit(" ", 1)[-1]
        if not self.url.startswith("http"):
            raise RuntimeError(f"sandbox did not start: {line}")

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sandbox/reset", headers={"x-api-key": KEY}).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_sandbox/stats", headers={"x-api-key": KEY}).json())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def floor(parquet: Path, url: str, batch: int = 500, clients: int = 4) -> float:
    """DuckDB → orjson → httpx: the least any connector must do to send these rows."""
    started = time.perf_counter()
    rel = duckdb.sql(f"SELECT * FROM '{parquet}'")
    assert rel is not None  # a SELECT always has a result; the stubs say it may not
    table = rel.to_arrow_table()
    bodies = []
    rows = table.to_pylist()
    for i in range(0, len(rows), batch):
        bodies.append(orjson.dumps([{"event": "update_attributes", **r} for r in rows[i:i + batch]]))
    del rows, table
    lock = threading.Lock()
    todo = list(reversed(bodies))

    def worker() -> None:
        with httpx.Client(base_url=url, headers={"x-api-key": KEY, "content-type": "application/json"},
                          timeout=60) as client:
            while True:
                with lock:
                    if not todo:
                        return
                    body = todo.pop()
                client.post("/v1/events", content=body).raise_for_status()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def run_child(args: list[str]) -> dict[str, Any]:
    """One sync in a fresh process; returns its report plus wall time and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def child(argv: list[str]) -> None:
    """The child side: run the sync, print the report, the delivery time and peak RSS."""
    p = argparse.ArgumentParser()
    p.add_argument("source")
    p.add_argument("--url")
    p.add_argument("--state")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=4)
    a = p.parse_args(argv)
    from pipelines.runner import SyncRequest, run_sync

    report = run_sync(SyncRequest(sources=[a.source], api_key=KEY, base_url=a.url, state_path=a.state,
                                  batch_size=a.batch_size, concurrency=a.concurrency))
    out = report.to_dict()
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). ru_maxrss is no good here: Linux carries the
    parent's peak across fork and exec, so a child would report the benchmark's own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def per_row_loop(parquet: Path, url: str, rows: int) -> float:
    """One POST per row, one at a time: events per second."""
    rel = duckdb.sql(f"SELECT * FROM '{parquet}' LIMIT {rows}")
    assert rel is not None
    data = rel.to_arrow_table().to_pylist()
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"x-api-key": KEY}, timeout=30) as client:
        for r in data:
            client.post("/v1/events", json={"event": "update_attributes", **r}).raise_for_status()
    return rows / (time.perf_counter() - started)


def latency_case(work: Path, rows: int, name: str) -> None:
    """A sync with 50 ms sandbox latency, concurrency 8, batch 100, against the API-bound limit."""
    slow = Sandbox("--latency-ms", "50")
    try:
        latency_parquet = work / f"{name}.parquet"
        make_rows(latency_parquet, rows)
        res = run_child([str(latency_parquet), "--url", slow.url, "--state", str(work / f"{name}.duckdb"),
                         "--batch-size", "100", "--concurrency", "8"])
        limit = 8 * 100 / 0.050
        delivery = res["events"] / res["delivery_seconds"]
        print(f"50 ms latency, concurrency 8, batch 100: delivery {delivery:,.0f} events/s = "
              f"{delivery / limit:.2f} of the API-bound limit {limit:,.0f}/s (target >= 0.90); "
              f"whole command {res['events'] / res['wall']:,.0f} events/s")
    finally:
        slow.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--latency-rows", type=int, default=40_000)
    parser.add_argument("--loop-rows", type=int, default=2_000)
    parser.add_argument("--floor-runs", type=int, default=3, help="the floor is the median of this many runs")
    parser.add_argument("--only-sync", action="store_true",
                        help="run only the floor, the full sync and the rerun (skip the per-row loop and latency case)")
    parser.add_argument("--only-latency", type=int, default=0, metavar="RUNS",
                        help="run only the 50 ms latency case, RUNS times (its spread between runs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="om-bench-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"duckdb {duckdb.__version__}; rows {args.rows:,}")
    try:
        if args.only_latency:
            for run in range(args.only_latency):
                latency_case(work, args.latency_rows, f"lat{run}")
            return
        parquet = work / "rows.parquet"
        make_rows(parquet, args.rows)
        sb = Sandbox()
        try:
            # The floor moves by 15% between back-to-back runs (four threads of one process
            # sharing the GIL beside the sandbox) while the sync is steady: its median over a
            # few runs keeps one lucky or unlucky run from deciding the verdict.
            floors = []
            for _ in range(args.floor_runs):
                sb.reset()
                floors.append(floor(parquet, sb.url))
            floor_s = sorted(floors)[len(floors) // 2]
            floor_rate = args.rows / floor_s
            runs = " / ".join(f"{f:.1f}" for f in floors)
            print(f"floor (DuckDB → orjson → 4×httpx, batch 500): {floor_s:7.1f} s  {floor_rate:>10,.0f} rows/s"
                  f"  (median of {len(floors)}: {runs} s)")
            sb.reset()
            full = run_child([str(parquet), "--url", sb.url, "--state", str(work / "state.duckdb")])
            assert full["applied"] == full["events"] == args.rows, full
            rate = args.rows / full["wall"]
            print(f"full sync (batch 500, concurrency 4):            {full['wall']:7.1f} s  {rate:>10,.0f} rows/s"
                  f"  = {rate / floor_rate:.2f} of the floor (target >= 0.50); peak RSS {full['peak_rss_mb']:.0f} MB"
                  " (target <= 500)")
            before = sb.stats()["requests"]
            again = run_child([str(parquet), "--url", sb.url, "--state", str(work / "state.duckdb")])
            sent = sb.stats()["requests"] - before
            print(f"rerun, nothing changed:                          {again['wall']:7.1f} s"
                  f"  = {again['wall'] / full['wall']:.2f} of the full sync (target <= 0.15); {sent} requests"
                  f" (target 0); peak RSS {again['peak_rss_mb']:.0f} MB")
            if args.only_sync:
                return
            loop_rate = per_row_loop(parquet, sb.url, args.loop_rows)
            print(f"one request per row ({args.loop_rows:,} rows):             {loop_rate:>18,.0f} rows/s"
                  f"  = {loop_rate / rate:.3f} of the sync's rate")
        finally:
            sb.stop()
        latency_case(work, args.latency_rows, "lat")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
