"""The runner's row filter: each row gets its own content hash, and confirmed rows are dropped."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from destinations.outreach_magic import settings, state
from pipelines.runner import RowFilter


def _rows(n: int, tag: str = "") -> pa.Table:
    """n rows in chunks of 2,048, which DuckDB scans in parallel and returns in any order."""
    batch = pa.RecordBatch.from_pydict({
        "lead_email": [f"p{i}@example.com" for i in range(n)],
        "lead_first_name": [f"P{i}{tag}" for i in range(n)],
        "company_domain": [f"c{i % 97}.example" for i in range(n)],
    })
    return pa.Table.from_batches(batch.slice(i, 2048) for i in range(0, n, 2048))


def test_every_row_keeps_its_own_hash_and_confirmed_rows_are_dropped(tmp_path: Path) -> None:
    """Hashes are computed apart from the rows and put back by position: checked against the
    hash DuckDB gives each row when it is computed beside the row itself, over a table of many
    chunks (its hashes come back out of order); then a filter that knows half of them keeps
    exactly the other half, in order."""
    con = state.connect(tmp_path / "s.duckdb", target="http://test")
    try:
        n = 70_000
        out = RowFilter(con, skip_known=True)(_rows(n), "rows")
        assert out.num_rows == n
        fields = [*settings.CANONICAL_FIELDS, "_om_order"]
        con.register("t_out", out)
        mismatched = con.execute(
            f"SELECT count(*) FROM t_out WHERE _om_hash <> "
            f"(hash('{','.join(fields)}', {', '.join(fields)}) & 9223372036854775807)::BIGINT"
        ).fetchall()
        con.unregister("t_out")
        assert mismatched == [(0,)]
        assert len(set(out.column("_om_hash").to_pylist())) == n

        known = out.column("_om_hash").to_pylist()[::2]  # every other row was confirmed
        con.execute("INSERT INTO row_hashes SELECT unnest(?)", [known])
        again = RowFilter(con, skip_known=True)
        kept = again(_rows(n), "rows")
        assert kept.column("lead_email").to_pylist() == [f"p{i}@example.com" for i in range(1, n, 2)]
        assert again.skipped == n // 2 and again.read == n
        changed = again(_rows(n, tag="+"), "rows")  # every row's content changed: none is known
        assert changed.num_rows == n
        assert RowFilter(con, skip_known=False)(_rows(n), "rows").num_rows == n
    finally:
        con.close()
