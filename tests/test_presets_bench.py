"""Throughput of apply_mapping on 1M rows, printed beside a plain cast-and-trim baseline.

Run with ``pytest -m slow tests/test_presets_bench.py -s``. The floor asserted is far below
what this 2-core machine measures (about 550k rows/s for 15 Apollo columns), so that a
shared CI runner does not flake; what it catches is a per-row Python path sneaking in,
which would cost one to two orders of magnitude.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sources.mapping import apply_mapping, plan_mapping

APOLLO_COLUMNS = [
    "First Name",
    "Last Name",
    "Title",
    "Company",
    "Company Name for Emails",
    "Email",
    "Email Status",
    "Seniority",
    "Departments",
    "Person Linkedin Url",
    "Website",
    "Company Linkedin Url",
    "# Employees",
    "Industry",
    "Country",
]


def _batch(n: int) -> pa.RecordBatch:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 10**9, n).astype(str)
    data = {c: pa.array(np.char.add(c[:3] + " ", ids)) for c in APOLLO_COLUMNS}
    data["# Employees"] = pa.array(np.where(rng.random(n) < 0.1, "51-200", ids))
    data["Last Name"] = pa.array(np.where(rng.random(n) < 0.001, "MÃ¼ller", np.char.add("L", ids)))
    data["Company"] = pa.array(np.where(rng.random(n) < 0.2, "", np.char.add("Co", ids)))
    data["_om_source"] = pa.repeat(pa.scalar("bench"), n)
    data["_om_row"] = pa.array(np.arange(1, n + 1), pa.int64())
    return pa.RecordBatch.from_pydict(data)


@pytest.mark.slow
def test_apply_mapping_throughput_on_one_million_rows() -> None:
    batch_rows, batches = 50_000, 20
    batch = _batch(batch_rows)
    plan = plan_mapping(batch.schema.names)
    assert plan.preset == "apollo"

    start = time.perf_counter()
    for _ in range(batches):
        for name in APOLLO_COLUMNS:
            pc.utf8_trim_whitespace(pc.cast(batch.column(name), pa.string()))
    baseline = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(batches):
        apply_mapping(batch, plan)
    mapped = time.perf_counter() - start

    rows = batch_rows * batches
    print(
        f"\napply_mapping {rows / mapped:,.0f} rows/s; baseline cast+trim {rows / baseline:,.0f} rows/s; "
        f"ratio {mapped / baseline:.1f}x"
    )
    assert rows / mapped > 100_000
