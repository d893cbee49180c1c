"""Where a full sync's time goes: one sync with timers around its phases.

    python bench/sync_phases.py [--rows 1000000]

Runs the same rows as ``bench/sync.py`` into the sandbox (its own process) in a child
process whose runner, sink and staging functions are wrapped with wall-clock timers, and
prints, per phase, the seconds spent inside it and how often it ran, then the child's CPU
(user, system), its peak RSS and the sandbox's CPU. Phases nest (``load`` contains
``resolve`` and ``deliver``), the next slice is prepared in a helper thread while one is
resolved and delivered, and the background confirmation writes overlap delivery, so the
rows do not add up to the total: read them as "how long was the process inside this".
Not a ratio benchmark: it explains the ratios ``bench/sync.py`` prints.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import collections, functools, json, resource, sys, threading, time
sys.path.insert(0, sys.argv[4])
started = time.perf_counter()
import pipelines.runner as runner
import destinations.outreach_magic.sink as sink
import destinations.outreach_magic.staging as staging
from destinations.outreach_magic.client import DeliveryClient
from destinations.outreach_magic import identifiers
from dlt.pipeline.pipeline import Pipeline
imported = time.perf_counter() - started
seconds = collections.defaultdict(float)
calls = collections.Counter()

def wrap(owner, name, label=None):
    fn = getattr(owner, name)
    label = label or name

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - t0
            calls[label] += 1

    setattr(owner, name, timed)

for name in ("extract", "normalize", "load"):
    wrap(Pipeline, name, f"dlt {name}")
wrap(runner.RowFilter, "__call__", "read + row hashes")
wrap(identifiers, "normalize_table", "prepare: normalize identifiers")
for name in ("prepare", "resolve", "re_resolve", "prime", "_group", "_aggregate", "_resolve", "_diff",
             "_build_events", "close", "_write_applied", "_write_confirmed", "_remember_rows"):
    wrap(staging.Staging, name, {"_write_applied": "writer: confirmation writes",
                                 "prepare": "prepare (2 slices ahead, helper thread)",
                                 "resolve": "resolve (1 slice ahead, resolve thread)",
                                 "re_resolve": "resolve again (a guess failed)",
                                 "prime": "resolve: start the events' JSON",
                                 "_group": "prepare: group", "_aggregate": "prepare: aggregate",
                                 "_resolve": "resolve: match entities",
                                 "_write_confirmed": "writer: merge into state",
                                 "_remember_rows": "writer: row hashes",
                                 "close": "close a slice's connection"}.get(name,
                                 "resolve: " + name.strip("_")))
wrap(DeliveryClient, "deliver", "deliver (main thread)")
import concurrent.futures as _cf
_result = _cf.Future.result

def _waiting(self, *args, **kwargs):
    if threading.current_thread() is not _loader[0]:
        return _result(self, *args, **kwargs)
    t0 = time.perf_counter()
    try:
        return _result(self, *args, **kwargs)
    finally:
        seconds["deliver thread: wait for the next resolved slice or a write"] += time.perf_counter() - t0
        calls["deliver thread: wait for the next resolved slice or a write"] += 1

_cf.Future.result = _waiting
_loader = [None]
_sync_file = sink.sync_file

def _marked(*args, **kwargs):
    _loader[0] = threading.current_thread()
    return _sync_file(*args, **kwargs)

sink.sync_file = _marked
import destinations.outreach_magic.destination as _destination
_destination.sync_file = _marked
_thread_cpu = collections.Counter()
_run = threading.Thread.run

def _counted(self):
    c0 = time.thread_time()
    try:
        _run(self)
    finally:
        _thread_cpu[self.name.rstrip("_0123456789").split("-pool")[0]] += time.thread_time() - c0

threading.Thread.run = _counted
report = runner.run_sync(runner.SyncRequest(sources=[sys.argv[1]], api_key="bench-key", base_url=sys.argv[2],
                                            state_path=sys.argv[3], batch_size=500, concurrency=4))
usage = resource.getrusage(resource.RUSAGE_SELF)
hwm = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"total": time.perf_counter() - started, "imports": imported, "events": report.events,
                  "applied": report.applied, "phases": {k: [seconds[k], calls[k]] for k in seconds},
                  "user": usage.ru_utime, "system": usage.ru_stime, "peak_rss_mb": hwm,
                  "threads": {**_thread_cpu, "MainThread (imports, dlt extract)": time.thread_time()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("bench_sync", ROOT / "bench" / "sync.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with tempfile.TemporaryDirectory(prefix="om-phases-") as work:
        parquet = Path(work) / "rows.parquet"
        bench.make_rows(parquet, args.rows)
        sandbox = bench.Sandbox()
        try:
            sandbox.reset()
            cpu_before = _cpu(sandbox.proc.pid)
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(parquet), sandbox.url, str(Path(work) / "state.duckdb"), str(ROOT)],
                cwd=ROOT, capture_output=True, text=True,
            )
            sandbox_cpu = _cpu(sandbox.proc.pid) - cpu_before
        finally:
            sandbox.stop()
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{args.rows:,} rows: {out['total']:.1f} s in the sync process (imports {out['imports']:.1f} s), "
          f"{out['applied']:,} of {out['events']:,} events applied")
    for name, (secs, n) in sorted(out["phases"].items(), key=lambda kv: -kv[1][0]):
        print(f"  {name:<36} {secs:7.2f} s  ({n} calls)")
    print("CPU per thread: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(out["threads"].items(),
                                                                              key=lambda kv: -kv[1])))
    print(f"CPU of the sync process: user {out['user']:.1f} s, system {out['system']:.1f} s; "
          f"peak RSS {out['peak_rss_mb']:.0f} MB; the sandbox's CPU {sandbox_cpu:.1f} s")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average {load} ({time.strftime('%H:%M')})")


def _cpu(pid: int) -> float:
    """User plus system seconds of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
