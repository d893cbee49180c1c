"""Persistence across restarts (--db), and the ``outreach-magic sandbox`` command line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import running_sandbox
from tests.sandbox_helpers import post_events, sandbox_companies, sandbox_leads, sandbox_reset

# shared/ sits beside the repository (as in CI); the workplace's copy is the fallback.
CONTRACT_CHECK = next(
    (p for p in (Path(__file__).resolve().parents[2] / "shared" / "tools" / "contract_check.py",
                 Path("/work/shared/tools/contract_check.py")) if p.exists()),
    Path("../shared/tools/contract_check.py"),
)
WS = "65f1a2b3c4d5e6f7890a1b2c"
EVENTS = [
    {
        "event": "update_attributes",
        "lead_email": "Jane@Example.com",
        "company_domain": "example.co",
        "company_name": "Example",
        "workspace_id": WS,
        "tags": ["a", "b"],
        "lead_first_name": "Jane",
        "sender": "https://www.linkedin.com/in/s/",
        "linkedin_connection_level": "2",
    },
    {"event": "update_attributes", "company_domain": "other.co", "workspace_id": WS, "icp": "B"},
]


def test_db_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "state" / "sandbox.duckdb"
    with running_sandbox(["k1", "k2"], db_path=db) as sb:
        assert post_events(sb.url, "k1", EVENTS).json()["success"] == 2
        post_events(sb.url, "k2", EVENTS[1])
        leads, companies = sandbox_leads(sb.url, "k1"), sandbox_companies(sb.url, "k1")
        other = sandbox_companies(sb.url, "k2")
    with running_sandbox(["k1", "k2"], db_path=db) as sb:
        assert sandbox_leads(sb.url, "k1") == leads
        assert sandbox_companies(sb.url, "k1") == companies
        assert sandbox_companies(sb.url, "k2") == other
        # matching still works after the restart: same lead, no duplicate
        post_events(
            sb.url, "k1", {"event": "update_attributes", "lead_email": "jane@example.com", "lead_last_name": "D"}
        )
        [lead] = sandbox_leads(sb.url, "k1")
        assert lead["unified_lead_id"] == leads[0]["unified_lead_id"] and lead["attributes"]["lead_last_name"] == "D"
        sandbox_reset(sb.url, "k2")
    with running_sandbox(["k1", "k2"], db_path=db) as sb:
        assert sandbox_leads(sb.url, "k1")[0]["attributes"]["lead_last_name"] == "D"
        assert sandbox_companies(sb.url, "k2") == []  # the reset persisted too
    with running_sandbox(["k3"], db_path=db) as sb:
        assert sandbox_leads(sb.url, "k3") == []  # data belongs to keys, not to the file


def test_db_file_never_contains_the_api_key(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    secret = "sk-very-secret-key-123"
    with running_sandbox([secret], db_path=db) as sb:
        post_events(sb.url, secret, EVENTS)
    assert secret.encode() not in db.read_bytes()


@contextmanager
def cli_sandbox(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://[\w.\[\]:]+", line)
        assert match, f"no URL printed: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        yield proc, match.group(0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop(proc: subprocess.Popen[str], sig: int) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=15)


def test_cli_prints_url_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "cli.duckdb"
    with cli_sandbox("--api-key", "cli-key", "--db", str(db)) as (proc, url):
        r = post_events(url, "cli-key", EVENTS[0])
        assert r.status_code == 200 and r.json()["success"] == 1
        t0 = time.perf_counter()
        assert stop(proc, signal.SIGTERM) == 0
        assert time.perf_counter() - t0 < 10
    with cli_sandbox("--api-key", "cli-key", "--db", str(db)) as (proc, url):
        assert len(sandbox_leads(url, "cli-key")) == 1  # flushed on SIGTERM
        assert stop(proc, signal.SIGINT) == 0


def test_cli_takes_keys_from_the_environment_and_never_prints_them() -> None:
    with cli_sandbox(env={"OUTREACH_MAGIC_SANDBOX_API_KEYS": "env-one, env-two"}) as (proc, url):
        for key in ("env-one", "env-two"):
            assert httpx.get(f"{url}/_sandbox/stats", headers={"x-api-key": key}).status_code == 200
        assert httpx.get(f"{url}/_sandbox/stats", headers={"x-api-key": "env-one, env-two"}).status_code == 401
        stop(proc, signal.SIGTERM)
        out, err = proc.communicate()
    assert "env-one" not in out + err


def test_cli_without_a_key_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUTREACH_MAGIC_SANDBOX_API_KEYS"}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "sandbox"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 2 and "--api-key" in done.stderr


def test_cli_flags_match_the_contract() -> None:
    from pipelines.cli import build_parser

    args: Any = build_parser().parse_args(
        [
            "sandbox",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--latency-ms",
            "5",
            "--rate-limit",
            "3",
            "--error-rate",
            "0.1",
            "--drop-rate",
            "0.2",
            "--lost-response-rate",
            "0.3",
            "--max-items",
            "10",
            "--max-bytes",
            "1000",
            "--db",
            "x.duckdb",
            "--seed",
            "4",
        ]
    )
    assert (args.host, args.port, args.api_keys, args.latency_ms, args.rate_limit) == (
        "0.0.0.0",
        9000,
        ["a", "b"],
        5,
        3,
    )
    assert (args.error_rate, args.drop_rate, args.lost_response_rate) == (0.1, 0.2, 0.3)
    assert (args.max_items, args.max_bytes, args.db, args.seed) == (10, 1000, "x.duckdb", 4)


@pytest.mark.skipif(not CONTRACT_CHECK.exists(), reason="shared/tools/contract_check.py is not beside the repository")
def test_shared_contract_check_passes_against_the_cli() -> None:
    with cli_sandbox("--api-key", "test-key", "--api-key", "other-key") as (proc, url):
        done = subprocess.run(
            [sys.executable, str(CONTRACT_CHECK), url, "test-key", "other-key"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        stop(proc, signal.SIGTERM)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"contract: (\d+)/\1 expectations hold", done.stdout), done.stdout


def test_docs_of_a_few_changed_records_equal_the_full_listing() -> None:
    """The persistence thread writes a few dirty records: their docs equal the full listing's."""
    import random

    from sandbox.store import Tenant

    tenant = Tenant("t", random.Random(0))
    for i in range(300):
        tenant.apply({"event": "update_attributes", "lead_email": f"u{i}@example.com",
                      "company_domain": f"c{i % 50}.co", "workspace_id": WS, "icp": f"I{i}",
                      "sender": f"https://www.linkedin.com/in/s{i % 3}/", "linkedin_connection_level": "2"})
        tenant.apply({"event": "update_attributes", "company_domain": f"c{i % 50}.co", "workspace_id": WS,
                      "lead_status": "x"})
    only = {3, 150, 299}
    full = list(tenant.lead_docs())
    assert list(tenant.lead_docs(only)) == [full[i] for i in sorted(only)]
    companies = list(tenant.company_docs())
    assert list(tenant.company_docs({1, 7})) == [companies[1], companies[7]]
    assert full[3]["workspaces"] == {WS: {"icp": "I3"}} and full[3]["connections"]


def test_generated_ids_never_clash_with_restored_ones() -> None:
    import random

    from sandbox.store import Tenant

    tenant = Tenant("t", random.Random(0))
    base = tenant.leads.base
    clash = f"{(base + 2) & ((1 << 96) - 1):024x}"  # what the record at index 1 would get
    tenant.restore([], [{"unified_lead_id": clash, "identifiers": {"lead_email": ["old@example.com"]}}])
    tenant.apply({"event": "update_attributes", "lead_email": "new@example.com"})
    tenant.apply({"event": "update_attributes", "lead_email": "newer@example.com"})
    uids = tenant.leads.uids
    assert len(set(uids)) == 3 and uids[0] == clash
    assert [tenant.leads.find(u) for u in uids] == [0, 1, 2]
    assert tenant.apply({"event": "update_attributes", "unified_lead_id": uids[1], "lead_first_name": "N"}) is None
    assert tenant.leads.attributes(1) == {"lead_first_name": "N"}
    assert tenant.leads.find("0" * 24) == -1 or uids[tenant.leads.find("0" * 24)] == "0" * 24
