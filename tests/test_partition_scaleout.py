"""Scale-out by partition: N workers with N state files together do exactly what one run does.

The proof compares two tenants of one sandbox: ``other-key`` receives a single ordinary
run, ``test-key`` receives two partitions run in parallel processes. The leads and
companies the two tenants end up holding must be equal (ids aside, since the server mints
them), and the partitions' events must add up to the single run's, none sent twice.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from pipelines.orchestration.partitioned import partition_request, run_partitioned, sum_reports
from pipelines.runner import SyncReport, SyncRequest, run_sync
from tests.sandbox_helpers import sandbox_companies, sandbox_leads, sandbox_stats

WS = "65f1a2b3c4d5e6f7890a1b2c"


def write_leads(path: Path, n: int = 120) -> Path:
    """n people at 12 companies; every 4th person has a second row (LinkedIn URL only, newer title),
    so a partition must see both rows to merge them into one lead; one row is invalid."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["lead_email", "lead_linkedin_url", "lead_first_name", "lead_job_title", "company_domain",
                    "company_name", "lead_status"])
        for i in range(n):
            domain = f"company{i % 12}.example"
            w.writerow([f"person{i}@{domain}", f"https://www.linkedin.com/in/person-{i}", f"P{i}", "Engineer",
                        domain, f"Company {i % 12}", "prospect" if i % 3 else "customer"])
            if i % 4 == 0:
                w.writerow(["", f"https://linkedin.com/in/person-{i}/", "", "Lead Engineer", "", "", ""])
        w.writerow(["not-an-email", "", "Broken", "", "", "", ""])
    return path


def holdings(url: str, key: str) -> tuple[list[Any], list[Any]]:
    """What a tenant holds, without the ids the server minted: leads name their company by domain."""
    companies = sandbox_companies(url, key)
    domain_of = {c["unified_company_id"]: tuple(sorted(c["identifiers"].get("company_domain", []))) for c in companies}

    def ids(entity: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(sorted((f, tuple(sorted(v))) for f, v in entity["identifiers"].items() if v))

    leads = sorted(repr((ids(lead), sorted(lead["attributes"].items()), sorted(
        (ws, sorted(a.items())) for ws, a in lead.get("workspaces", {}).items()),
        domain_of.get(lead.get("unified_company_id")))) for lead in sandbox_leads(url, key))
    comps = sorted(repr((ids(c), sorted(c["attributes"].items()))) for c in companies)
    return leads, comps


def _single_run(url: str, src: str, tmp_path: Path) -> SyncReport:
    single = run_sync(_request(url, src, "other-key", tmp_path / "single" / "state.duckdb"))
    assert single.error is None and single.events > 0
    return single


def _request(url: str, src: str, key: str, state: Path) -> SyncRequest:
    return SyncRequest(sources=[src], api_key=key, base_url=url, state_path=str(state), constants={"workspace_id": WS})


def _assert_union_equals_single(url: str, parts: list[SyncReport], total: SyncReport, single: SyncReport) -> None:
    assert [p.error for p in parts] == [None, None]
    assert all(p.events > 0 for p in parts), [p.events for p in parts]  # the work really was split
    assert len({p.state_path for p in parts}) == 2  # each partition its own state file
    assert total.events == sum(p.events for p in parts) == single.events
    assert total.applied == single.applied
    assert total.invalid == single.invalid == 1  # the broken row is reported by one partition only
    assert holdings(url, "test-key") == holdings(url, "other-key")
    assert sandbox_stats(url, "test-key")["events_received"] == single.events  # nothing sent twice


def test_two_parallel_worker_processes_hold_what_one_run_holds(sandbox_server: Any, tmp_path: Path) -> None:
    src = str(write_leads(tmp_path / "leads.csv"))
    url = sandbox_server.url
    single = _single_run(url, src, tmp_path)
    result = run_partitioned(_request(url, src, "test-key", tmp_path / "unused.duckdb"), 2, tmp_path / "parts")
    _assert_union_equals_single(url, result.partitions, result.total, single)


@pytest.mark.slow
def test_each_partition_keeps_its_own_state_between_runs(sandbox_server: Any, tmp_path: Path) -> None:
    src = str(write_leads(tmp_path / "leads.csv"))
    base = _request(sandbox_server.url, src, "test-key", tmp_path / "unused.duckdb")
    first = run_partitioned(base, 2, tmp_path / "parts")
    assert first.total.events > 0 and first.total.error is None
    again = run_partitioned(base, 2, tmp_path / "parts")
    assert again.total.events == 0 and again.total.requests == 0
    # each row's hash is kept by the partition owning its lead; the invalid row is read again (it is in the ledger)
    assert again.total.rows_skipped_unchanged == first.total.rows_read - first.total.invalid


def test_partition_requests_get_their_own_state_and_share_everything_else(tmp_path: Path) -> None:
    base = SyncRequest(sources=["a.csv"], api_key="k", state_path="ignored.duckdb", constants={"workspace_id": WS})
    reqs = [partition_request(base, i, 3, tmp_path) for i in range(3)]
    assert [r.partition for r in reqs] == ["0/3", "1/3", "2/3"]
    assert len({r.state_path for r in reqs}) == 3 and all(Path(r.state_path).parent.is_dir() for r in reqs)
    assert all(r.sources == base.sources and r.constants == base.constants for r in reqs)


def test_sum_reports_adds_outcomes_but_not_rows_read() -> None:
    a = SyncReport(run_id="a", base_url="u", state_path="/s/p0/state.duckdb", rows_read=10, events=3, applied=3,
                   requests=1, seconds=2.0)
    b = SyncReport(run_id="b", base_url="u", state_path="/s/p1/state.duckdb", rows_read=10, events=4, applied=2,
                   rejected=2, requests=2, seconds=5.0, exit_code=1, error="boom")
    total = sum_reports([a, b])
    assert (total.rows_read, total.events, total.applied, total.rejected, total.requests) == (10, 7, 5, 2, 3)
    assert total.seconds == 5.0 and total.exit_code == 1 and total.error == "partition 1: boom"
    with pytest.raises(ValueError):
        sum_reports([])
