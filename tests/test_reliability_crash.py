"""Crash suite: SIGKILL the CLI sync at seeded random moments, rerun, end where a clean run ends.

The sandbox runs in its own process (so killing the sync kills nothing else) with two
tenants: ``clean-key`` receives one uninterrupted run, ``crash-key`` the same file through
a series of killed runs and then one run to completion, all on one state file. Kill
moments are seeded: each is "after the sandbox has received E events" (E drawn from
0..90% of the events), with E = 0 meaning "after a random delay", which lands in start-up,
reading or staging. After every kill the state may only claim what the sandbox holds
(an identifier is written to ``identity`` only after the API confirmed it); at the end,
holdings and ledger equal the clean run's.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.sandbox_helpers import sandbox_companies, sandbox_leads, sandbox_stats
from tests.test_reliability_helpers import (
    REPO,
    WS,
    SandboxProcess,
    child_env,
    expected_outcome,
    held_emails,
    holdings,
    ledger,
    synced_identifiers,
    synced_lead_attributes,
    write_people,
)

CRASH, CLEAN = "crash-key", "clean-key"


def _cmd(src: Path, url: str, state: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "sync", str(src), "--base-url", url, "--state", str(state),
            "--workspace-id", WS, "--json", "--batch-size", "100"]


def _held_domains(url: str, key: str) -> set[str]:
    return {d for c in sandbox_companies(url, key) for d in c["identifiers"].get("company_domain", [])}


def _assert_state_claims_only_what_the_sandbox_holds(url: str, state: Path) -> None:
    if not state.exists():
        return
    assert synced_identifiers(state, "lead_email") <= held_emails(url, CRASH)
    assert synced_identifiers(state, "company_domain") <= _held_domains(url, CRASH)
    # and every attribute value it calls confirmed is the value the sandbox holds
    held = {e: lead["attributes"] for lead in sandbox_leads(url, CRASH)
            for e in lead["identifiers"].get("lead_email", [])}
    for email, attrs in synced_lead_attributes(state).items():
        assert attrs.items() <= held[email].items(), (email, attrs, held[email])


def _kill_once(src: Path, url: str, state: Path, rng: random.Random, total_events: int) -> str:
    """Start a sync, SIGKILL it at the drawn moment; say where it landed."""
    received_before = sandbox_stats(url, CRASH)["events_received"]
    target = rng.choice([0, *[rng.randrange(1, max(2, int(total_events * 0.9))) for _ in range(3)]])
    delay = rng.uniform(0.2, 4.0)
    proc = subprocess.Popen(_cmd(src, url, state), env=child_env(CRASH), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=REPO)
    started = time.monotonic()
    try:
        while proc.poll() is None:
            if target == 0:
                if time.monotonic() - started >= delay:
                    break
            elif sandbox_stats(url, CRASH)["events_received"] - received_before >= target:
                break
            time.sleep(0.01)
        if proc.poll() is not None:
            return f"finished before the kill (target {target or f'{delay:.1f}s'})"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    got = sandbox_stats(url, CRASH)["events_received"] - received_before
    return f"killed at {time.monotonic() - started:.1f}s after {got} events (target {target or f'{delay:.1f}s'})"


def _prove(n: int, kills: int, seed: int, tmp_path: Path) -> None:
    src = write_people(tmp_path / "people.csv", n)
    rng = random.Random(seed)
    with SandboxProcess([CRASH, CLEAN]) as sb:
        clean_state = tmp_path / "clean" / "state.duckdb"
        clean = subprocess.run(_cmd(src, sb.url, clean_state), env=child_env(CLEAN), capture_output=True,
                               timeout=600, cwd=REPO, check=False)
        assert clean.returncode == 1, clean.stderr[-2000:]  # invalid and API-rejected rows by design
        total = orjson.loads(clean.stdout)["events"]

        state = tmp_path / "crash" / "state.duckdb"
        moments = []
        for _ in range(kills):
            moments.append(_kill_once(src, sb.url, state, rng, total))
            _assert_state_claims_only_what_the_sandbox_holds(sb.url, state)
        final = subprocess.run(_cmd(src, sb.url, state), env=child_env(CRASH), capture_output=True, timeout=600,
                               cwd=REPO, check=False)
        assert final.returncode in (0, 1) and b"Traceback" not in final.stderr, final.stderr[-3000:]
        report = orjson.loads(final.stdout)
        if report["needs_rerun"]:
            report = orjson.loads(subprocess.run(_cmd(src, sb.url, state), env=child_env(CRASH), capture_output=True,
                                                 timeout=600, cwd=REPO, check=False).stdout)
        assert not report["needs_rerun"] and report["error"] is None

        assert holdings(sb.url, CRASH) == holdings(sb.url, CLEAN)
        assert held_emails(sb.url, CRASH) == expected_outcome(n)[0]
        assert synced_identifiers(state, "lead_email") == held_emails(sb.url, CRASH)
        _assert_state_claims_only_what_the_sandbox_holds(sb.url, state)
        crash_ledger = sorted(e[:4] for e in ledger(state))
        clean_ledger = sorted(e[:4] for e in ledger(clean_state))
        stats, clean_stats = sandbox_stats(sb.url, CRASH), sandbox_stats(sb.url, CLEAN)
        print(f"\ncrash suite n={n} kills={kills}: " + "; ".join(moments)
              + f"\n  events received {stats['events_received']} vs clean {clean_stats['events_received']} "
              f"({stats['events_received'] - clean_stats['events_received']} resent); "
              f"ledger {len(crash_ledger)} entries vs clean {len(clean_ledger)}")
        # The ledger is a log: every run appends the invalid rows it held back (with its run_id),
        # so a file synced k times lists them k times. Equal means the same distinct entries.
        assert sorted(set(crash_ledger)) == sorted(set(clean_ledger))
        _emails, invalid, ghosts = expected_outcome(n)
        assert {row for origin, row, *_ in crash_ledger if origin == "invalid"} == invalid
        assert {row for origin, row, *_ in crash_ledger if origin == "api"} == ghosts


def test_sigkill_three_times_then_rerun_ends_like_a_clean_run(tmp_path: Path) -> None:
    _prove(10_000, 3, seed=11, tmp_path=tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigkill_ten_times_on_50k_rows_then_rerun_ends_like_a_clean_run(tmp_path: Path) -> None:
    _prove(50_000, 10, seed=12, tmp_path=tmp_path)
