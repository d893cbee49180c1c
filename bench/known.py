"""Benchmark: ``check_known`` on a 1M-row prospect list against a state that knows 1M leads.

The state is built directly with SQL in a temp folder (same schema as the sync engine's,
through ``state.connect``): 1M leads, each with an email and a LinkedIn URL, every fifth
with a Sales Navigator URL, about 143k companies by domain. The list (CSV, as tools
export it, plus the same rows as Parquet) mixes: known by email (35%), known by LinkedIn
URL only, spelled differently (15%), known by Sales Navigator URL only (5%), new person
at a known company (15%), new (25%), invalid (5%: placeholders, ``lnkd.in`` links, no
identifier).

Printed beside it, in the same run: a plain Python ``set`` lookup of the list's emails,
pre-normalized, against the state's emails (the cheapest possible "is this email known"
check, which knows nothing of other identifiers, spellings or companies), and the ratio.

Usage: ``python bench/known.py [--rows 1000000] [--leads 1000000] [--repeat 2] [--profile]``.
Each check runs in a fresh interpreter, so the normalizers' per-value caches start cold;
imports (and pyarrow's first-call pandas import) are done before the clock starts.
The target (issue 7) is at least 200,000 rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from destinations.outreach_magic import state as state_mod

COMPANY_EVERY = 7  # leads per company


def build_state(path: Path, leads: int) -> None:
    """A state that knows ``leads`` leads and their companies, written with SQL only."""
    con = state_mod.connect(path, target="https://api.outreachmagic.io")
    ts = "TIMESTAMP '2026-11-01 09:00:00' + to_seconds(i % 86400)"
    con.execute(f"""
        INSERT INTO identity
        SELECT 'lead', 'lead_email', 'p' || i || '.doe@co' || (i // {COMPANY_EVERY}) || '.com', i, {ts}
        FROM range({leads}) r(i);
        INSERT INTO identity
        SELECT 'lead', 'lead_linkedin_url', 'https://www.linkedin.com/in/person-' || i || '/', i, {ts}
        FROM range({leads}) r(i);
        INSERT INTO identity
        SELECT 'lead', 'lead_sales_navigator_url', 'https://www.linkedin.com/sales/lead/ACwAA' || i, i, {ts}
        FROM range({leads}) r(i) WHERE i % 5 = 0;
        INSERT INTO identity
        SELECT 'company', 'company_domain', 'co' || c || '.com', {leads} + c, TIMESTAMP '2026-11-01 09:00:00'
        FROM range({leads // COMPANY_EVERY + 1}) r(c);
        INSERT INTO lead_state (entity_id, lead_first_name, company_entity_id, confirmed_at)
        SELECT i, 'P' || i, {leads} + i // {COMPANY_EVERY}, {ts} FROM range({leads}) r(i);
        INSERT INTO company_state (entity_id, company_name, confirmed_at)
        SELECT {leads} + c, 'Co ' || c, TIMESTAMP '2026-11-01 09:00:00' FROM range({leads // COMPANY_EVERY + 1}) r(c);
    """)
    con.close()


def build_list(folder: Path, rows: int, leads: int) -> tuple[Path, Path]:
    """The prospect list as CSV and Parquet (same rows), generated with DuckDB."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"""
        CREATE TABLE list AS
        WITH r AS (SELECT i, hash(i) % 100 AS roll, hash(i * 7 + 1) % {leads} AS k FROM range({rows}) t(i))
        SELECT
          CASE WHEN roll < 35 THEN upper(substr('p' || k, 1, 1)) || substr('p' || k, 2) || '.Doe@Co'
                                   || (k // {COMPANY_EVERY}) || '.com'
               WHEN roll < 55 THEN NULL
               WHEN roll < 70 THEN 'new' || i || '@co' || (k // {COMPANY_EVERY}) || '.com'
               WHEN roll < 95 THEN 'new' || i || '@fresh' || i || '.io'
               WHEN roll < 97 THEN 'n/a'
               ELSE NULL END AS "Email",
          CASE WHEN roll < 35 THEN 'https://www.linkedin.com/in/person-' || k || '/'
               WHEN roll < 50 THEN 'http://uk.linkedin.com/in/Person-' || k || '?trk=public_profile'
               WHEN roll < 55 THEN NULL
               WHEN roll < 97 THEN NULL
               WHEN roll < 98 THEN 'https://lnkd.in/abc' || i
               ELSE NULL END AS "LinkedIn Url",
          CASE WHEN roll >= 50 AND roll < 55
               THEN 'https://www.linkedin.com/sales/lead/ACwAA' || (k - k % 5) || ',NAME_SEARCH,x1' END
               AS "Sales Navigator Url",
          CASE WHEN roll < 70 THEN 'https://www.co' || (k // {COMPANY_EVERY}) || '.com'
               WHEN roll < 95 THEN 'fresh' || i || '.io' END AS "Website",
          'First' || i AS "First Name", 'Last' || i AS "Last Name", 'Company ' || (k // 7) AS "Company",
          'VP Sales' AS "Title"
        FROM r ORDER BY i
    """)
    csv_path, parquet_path = folder / "prospects.csv", folder / "prospects.parquet"
    con.execute(f"COPY list TO '{csv_path}' (HEADER, DELIMITER ',')")
    con.execute(f"COPY list TO '{parquet_path}' (FORMAT PARQUET)")
    con.close()
    return csv_path, parquet_path


def set_baseline(state_path: Path, csv_path: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds of a Python set lookup of the list's (pre-normalized) emails; and how many hit."""
    import duckdb

    con = duckdb.connect(str(state_path), read_only=True)
    known = {v for (v,) in con.execute("SELECT value FROM identity WHERE kind = 'lead_email'").fetchall()}
    con.close()
    con = duckdb.connect()
    emails = [e for (e,) in con.execute(f"SELECT lower(\"Email\") FROM read_csv('{csv_path}', all_varchar=true)")
              .fetchall()]
    con.close()
    started, cpu = time.perf_counter(), time.process_time()
    hits = sum(1 for e in emails if e in known)
    return time.perf_counter() - started, time.process_time() - cpu, hits


_CHILD = """
import json, sys, time, cProfile, pstats, io
import pyarrow as pa
from destinations.outreach_magic.known import check_known
pa.array([""])  # one-time: pyarrow's first pa.array imports pandas (about 0.5 s); startup is not throughput
path, state, profile = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
prof = cProfile.Profile() if profile else None
w0, c0 = time.perf_counter(), time.process_time()
run = (lambda: prof.runcall(check_known, path, state, preset="generic")) if prof else (
    lambda: check_known(path, state, preset="generic"))
result = run()
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
out = {"wall": wall, "cpu": cpu, "rows": result.table.num_rows, "counts": result.counts}
if prof:
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
    out["profile"] = buf.getvalue()
print(json.dumps(out))
"""


def run_check(path: Path, state_path: Path, profile: bool) -> dict[str, Any]:
    """``check_known`` in a fresh interpreter: the normalizers' caches start empty, as in a real run."""
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(state_path), "1" if profile else "0"],
                          check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per format; the best is reported")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of one CSV check")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]} on {platform.machine()}, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.1f} (the machine is shared: CPU seconds are shown beside wall time)")
    with tempfile.TemporaryDirectory(prefix="om-known-bench-") as tmp:
        folder = Path(tmp)
        state_path = folder / "state.duckdb"
        t0 = time.perf_counter()
        build_state(state_path, args.leads)
        csv_path, parquet_path = build_list(folder, args.rows, args.leads)
        print(f"setup: state with {args.leads:,} leads + list of {args.rows:,} rows in "
              f"{time.perf_counter() - t0:.1f} s (not timed below)")
        before = (state_path.stat().st_mtime_ns, state_path.stat().st_size)

        best: dict[str, float] = {}
        best_cpu: dict[str, float] = {}
        for label, path in (("csv", csv_path), ("parquet", parquet_path)):
            for _ in range(args.repeat):
                run = run_check(path, state_path, profile=False)
                assert run["rows"] == args.rows
                print(f"check_known {label:<7} {args.rows:>10,} rows: wall {run['wall']:6.2f} s = "
                      f"{args.rows / run['wall']:>9,.0f} rows/s; cpu {run['cpu']:6.2f} s = "
                      f"{args.rows / run['cpu']:>9,.0f} rows/cpu-s   {run['counts']}")
                best[label] = min(best.get(label, float("inf")), run["wall"])
                best_cpu[label] = min(best_cpu.get(label, float("inf")), run["cpu"])
        assert (state_path.stat().st_mtime_ns, state_path.stat().st_size) == before, "the state changed"

        base_s, base_cpu, base_hits = set_baseline(state_path, csv_path)
        print(f"baseline: Python set lookup of pre-normalized emails: {args.rows:,} rows: wall {base_s:.3f} s = "
              f"{args.rows / base_s:,.0f} rows/s; cpu {base_cpu:.3f} s = {args.rows / base_cpu:,.0f} rows/cpu-s "
              f"({base_hits:,} hits; emails only: no reading, mapping, normalization, other identifiers or companies)")
        for label in best:
            print(f"ratio set lookup / check_known({label}): wall {base_s / best[label]:.3f}, "
                  f"cpu {base_cpu / best_cpu[label]:.3f} (check_known takes {best_cpu[label] / base_cpu:.0f}x the CPU)")
        target = 200_000
        for label in best:
            rate, cpu_rate = args.rows / best[label], args.rows / best_cpu[label]
            print(f"target {target:,} rows/s on {label}: wall {rate:,.0f} ({'met' if rate >= target else 'NOT met'}), "
                  f"per CPU-second {cpu_rate:,.0f} ({'met' if cpu_rate >= target else 'NOT met'})")
        if args.profile:
            print(run_check(csv_path, state_path, profile=True)["profile"])


if __name__ == "__main__":
    main()
