"""Benchmark: ``normalize_table`` on 1M rows (email, LinkedIn profile URL, website).

Prints the rows/s of the identifier normalization beside a plain lower-case-and-strip
baseline (``utf8_lower`` + ``utf8_trim_whitespace`` over the same three columns) in the
same run, and their ratio. The data is a realistic mix: mostly distinct people, a share
of messy spellings (case, whitespace, ``http://``, country hosts, ``?trk=``, trailing
segments, ``mailto:``, websites with paths and UTM tags, IDN and multi-label suffixes,
percent-encoded slugs) and a few invalid cells (placeholders, ``lnkd.in`` links).

Usage: ``python bench/normalize.py [--rows 1000000] [--seed 7] [--profile]``.
The target (issue 3) is at least 200,000 rows/s.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import random
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc

from destinations.outreach_magic.identifiers import normalize_table

FIRST = ["jane", "john", "maria", "li", "ahmed", "olga", "pierre", "sofia", "kenji", "amara", "lucas", "emma"]
LAST = ["doe", "smith", "garcia", "wang", "khan", "ivanova", "martin", "rossi", "tanaka", "okafor", "silva"]
TLDS = ["com", "io", "co.uk", "de", "fr", "com.au", "net", "example", "ai", "co"]


def _person(i: int, rng: random.Random) -> tuple[str, str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    brands = ["acme", "globex", "initech", "umbrella", "hooli", "stark"]
    company = f"{brands[(i // 7) % len(brands)]}{i // 7}"  # about 7 people per company
    tld = TLDS[(i // 7) % len(TLDS)]
    slug = f"{first}-{last}-{i:x}"
    email = f"{first}.{last}{i}@{company}.{tld}"
    url = f"https://www.linkedin.com/in/{slug}/"
    website = f"{company}.{tld}"
    roll = rng.random()
    if roll < 0.55:  # as the most common tools export them
        return email, f"http://www.linkedin.com/in/{slug}", f"https://www.{website}"
    if roll < 0.75:
        return email, url, website
    if roll < 0.97:  # messy variants, each a different kind of mess
        kind = rng.randrange(8)
        if kind == 0:
            return f"  {email.title()} ", f"https://uk.linkedin.com/in/{slug}?originalSubdomain=uk", website.upper()
        if kind == 1:
            return f"mailto:{email}", f"linkedin.com/in/{slug}/details/experience/", f"http://{website}/about?utm_source=x"
        if kind == 2:
            return f"{first.title()} <{email}>", f"https://m.linkedin.com/in/{slug.title()}", f"www.{website}:443/"
        if kind == 3:
            return email, f"https://www.linkedin.com/in/%C3%A9{slug}/", f"https://shop.{website}/p?id=1"
        if kind == 4:
            return email, f"https://www.linkedin.com/mwlite/in/{slug}", f"https://{first}{i}.github.io/"
        if kind == 5:
            if rng.random() < 0.1:  # internationalized domains: rare, and shared by a company's people
                idn = f"bücher{i // 7}.example"
                return f"{first}@{idn}", f"https://www.linkedin.com/in/ACoAA{i:08X}Bc", idn
            return email, f"https://www.linkedin.com/in/ACoAA{i:08X}Bc", f"{website}."
        if kind == 6:
            return email.upper(), f"www.linkedin.com/in/{slug}/recent-activity/all/#x", f"HTTPS://{website.upper()}"
        return email, f"https://linkedin.com/comm/in/{slug}?trk=x", f"{company}.{tld}."
    invalid = rng.randrange(3)
    if invalid == 0:
        return "n/a", "https://lnkd.in/abc", "-"
    if invalid == 1:
        return "", "", ""
    return f"{first} {last}", f"https://www.linkedin.com/company/{company}", "localhost"


def make_table(rows: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    emails, urls, sites = zip(*(_person(i, rng) for i in range(rows)), strict=True)
    return pa.table(
        {
            "lead_email": pa.array(emails, pa.string()),
            "lead_linkedin_url": pa.array(urls, pa.string()),
            "company_domain": pa.array(sites, pa.string()),
            "_om_row": pa.array(range(rows), pa.int64()),
        }
    )


def baseline(table: pa.Table) -> pa.Table:
    cols = ["lead_email", "lead_linkedin_url", "company_domain"]
    out = {c: pc.utf8_trim_whitespace(pc.utf8_lower(table[c])) for c in cols}
    return pa.table(out)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (
        f"{cpu}; {os.cpu_count()} CPUs; Python {platform.python_version()}; pyarrow {pa.__version__}; "
        f"{platform.system()} {platform.release()}"
    )


def _timed(fn: object, table: pa.Table) -> tuple[float, float]:
    """Wall and CPU seconds of one call (CPU time is what a shared, loaded machine distorts least)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(table)  # type: ignore[operator]
    return time.perf_counter() - wall, time.process_time() - cpu


def _best_of(fn: object, table: pa.Table, repeat: int) -> tuple[float, float]:
    runs = [_timed(fn, table) for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=0, help="normalize in record batches of this size")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one normalize run")
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    t0 = time.perf_counter()
    table = make_table(args.rows, args.seed)
    print(f"generated {args.rows:,} rows in {time.perf_counter() - t0:.1f}s")
    distinct = {c: len(pc.unique(table[c])) for c in ("lead_email", "lead_linkedin_url", "company_domain")}
    print(f"distinct values: {distinct}")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        normalize_table(table)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)

    def run(t: pa.Table) -> None:
        if args.batch:
            for batch in t.to_batches(max_chunksize=args.batch):
                normalize_table(batch)
        else:
            normalize_table(t)

    # The first run is cold (tldextract loads its snapshot, caches are empty), as in a real sync.
    from destinations.outreach_magic import identifiers

    for fn in (identifiers._email, identifiers._profile_url, identifiers._domain):
        fn.cache_clear()
    print(f"load average before: {_load()}")
    start = time.perf_counter(), time.process_time()
    result = normalize_table(table)
    cold = time.perf_counter() - start[0], time.process_time() - start[1]
    warm = _best_of(run, table, 2)
    base = _best_of(baseline, table, 3)
    print(f"load average after:  {_load()}")
    rows = args.rows
    print(f"invalid cells: {len(result.errors):,}")
    print(f"{'':22s} {'wall s':>8s} {'rows/s wall':>12s} {'cpu s':>8s} {'rows/s cpu':>12s} {'x baseline cpu':>15s}")
    for label, (wall, cpu) in (("baseline lower+strip", base), ("normalize_table cold", cold),
                               ("normalize_table warm", warm)):  # fmt: skip
        print(f"{label:22s} {wall:8.3f} {rows / wall:12,.0f} {cpu:8.3f} {rows / cpu:12,.0f} {cpu / base[1]:15.1f}")
    target = 200_000
    verdict = "meets" if rows / cold[0] >= target else "MISSES"
    print(f"target {target:,} rows/s, cold, wall clock: {verdict}")
    return 0 if rows / cold[0] >= target else 1


if __name__ == "__main__":
    sys.exit(main())
