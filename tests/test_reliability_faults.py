"""Fault suite: a sync through 5xx, 429 + Retry-After, dropped connections and lost responses.

Two sandboxes receive the same file: one without faults (the oracle), one with every
fault the contract lets the sandbox inject, seeded. After the faulty run and at most one
rerun (the first report must say whether it needs one), both tenants must hold the same
leads and companies (server-minted ids aside), every row must be accounted for (its lead
held, or a ledger entry with a reason), and the ledgers must agree. Lost responses make
the client resend events the server already applied; the test prints how many, since
that is the price of at-least-once delivery (harmless only because upserts are idempotent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.runner import SyncReport, SyncRequest, run_sync
from tests.sandbox_helpers import sandbox_stats
from tests.test_reliability_helpers import WS, expected_outcome, held_emails, holdings, ledger, write_people

KEY = "test-key"
# Seed 58 draws a drop and lost responses within the first 25 requests, so every fault kind occurs.
FAULTS = {"error_rate": 0.1, "drop_rate": 0.02, "lost_response_rate": 0.02, "rate_limit": 8.0, "seed": 58}


def _sync(url: str, src: Path, state: Path) -> SyncReport:
    return run_sync(SyncRequest(sources=[str(src)], api_key=KEY, base_url=url, state_path=str(state),
                                constants={"workspace_id": WS}, batch_size=50, concurrency=4, timeout=10))


def _prove(n: int, tmp_path: Path, sandbox_factory: Any) -> None:
    src = write_people(tmp_path / "people.csv", n)
    clean_sb = sandbox_factory()
    clean = _sync(clean_sb.url, src, tmp_path / "clean" / "state.duckdb")
    assert clean.failed == 0 and clean.applied > 0 and not clean.needs_rerun

    faulty_sb = sandbox_factory(**FAULTS)
    state = tmp_path / "faulty" / "state.duckdb"
    first = _sync(faulty_sb.url, src, state)
    assert first.error is None, first.error
    # needs_rerun must be exactly "some events failed after retries", never silent.
    assert first.needs_rerun == (first.failed > 0)
    reports = [first]
    if first.needs_rerun:
        second = _sync(faulty_sb.url, src, state)
        reports.append(second)
        assert second.events <= first.failed + first.rejected, "a rerun resends only what was not confirmed"
        assert not second.needs_rerun, f"still failing after one rerun: {second.failure_reasons}"

    assert holdings(faulty_sb.url, KEY) == holdings(clean_sb.url, KEY)
    emails, invalid, ghosts = expected_outcome(n)
    assert held_emails(faulty_sb.url, KEY) == emails
    entries = ledger(state)
    assert all(reason for *_, reason in entries)
    assert {row for origin, row, *_ in entries if origin == "invalid"} == invalid
    assert {row for origin, row, *_ in entries if origin == "api"} == ghosts
    assert [e[:4] for e in entries] == [e[:4] for e in ledger(tmp_path / "clean" / "state.duckdb")]

    stats, clean_stats = sandbox_stats(faulty_sb.url, KEY), sandbox_stats(clean_sb.url, KEY)
    counts = stats["status_counts"]
    assert counts.get("429", 0) > 0 and counts.get("lost", 0) > 0 and counts.get("drop", 0) > 0
    assert sum(counts.get(c, 0) for c in ("500", "502", "503")) > 0
    resent = stats["events_received"] - clean_stats["events_received"]
    reapplied = stats["events_applied"] - clean_stats["events_applied"]
    print(f"\nfault suite n={n}: runs={len(reports)} events={clean.events} requests={stats['requests']} "
          f"retries={sum(r.retries for r in reports)} status_counts={counts} "
          f"events_received={stats['events_received']} (fault-free {clean_stats['events_received']}, "
          f"{resent} sent more than once) events applied twice={reapplied} "
          f"seconds={sum(r.seconds for r in reports):.1f}")
    assert reapplied >= 0 and resent > 0


def test_faulty_api_ends_with_what_a_fault_free_run_holds(tmp_path: Path, sandbox_factory: Any) -> None:
    _prove(3_000, tmp_path, sandbox_factory)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_faulty_api_20k_rows_ends_with_what_a_fault_free_run_holds(tmp_path: Path, sandbox_factory: Any) -> None:
    _prove(20_000, tmp_path, sandbox_factory)


def test_exhausted_retries_report_needs_rerun_and_one_rerun_sends_exactly_the_failed(
    tmp_path: Path, sandbox_factory: Any
) -> None:
    """With a single attempt per batch, faults become failures: the report must say so, and
    one rerun (normal retries) must send every failed event and end where a clean run ends.

    The rerun sends a few more events than failed (measured 368-372 for 350 failed): rows
    whose own event was applied can still be re-derived when they share an entity with a
    failed event, since a row's hash is recorded only once everything from it is confirmed.
    The bound below allows a 25% surplus, far below resending everything (989 events)."""
    n = 1_000
    src = write_people(tmp_path / "people.csv", n)
    clean_sb = sandbox_factory()
    _sync(clean_sb.url, src, tmp_path / "clean" / "state.duckdb")
    faulty_sb = sandbox_factory(error_rate=0.2, drop_rate=0.05, lost_response_rate=0.05, seed=7)
    state = tmp_path / "faulty" / "state.duckdb"
    first = run_sync(SyncRequest(sources=[str(src)], api_key=KEY, base_url=faulty_sb.url, state_path=str(state),
                                 constants={"workspace_id": WS}, batch_size=50, max_attempts=1, timeout=10))
    assert first.failed > 0 and first.needs_rerun and first.exit_code == 1
    assert first.to_dict()["needs_rerun"] is True
    assert first.applied + first.rejected + first.failed == first.events
    second = _sync(faulty_sb.url, src, state)
    print(f"\nexhausted retries: first run {first.events} events, {first.failed} failed "
          f"({first.failure_reasons}); rerun sent {second.events}, failed {second.failed}, "
          f"rejected {second.rejected}, skipped_rejected {second.skipped_rejected}, first rejected {first.rejected}")
    assert first.failed <= second.events <= first.failed * 1.25 + first.rejected
    assert not second.needs_rerun
    assert holdings(faulty_sb.url, KEY) == holdings(clean_sb.url, KEY)
    assert held_emails(faulty_sb.url, KEY) == expected_outcome(n)[0]
