"""Shared pieces of the reliability and security suites (no tests of its own).

* :func:`write_people` writes a seeded CSV of N people at N/8 companies with a known
  sprinkling of rows the connector must hold back (bad email) and rows the API must
  reject (a ``unified_lead_id`` that names no lead), so "every row is accounted for"
  has both kinds of ledger entry to find.
* :func:`holdings` is what a tenant holds with the server-minted ids taken out (a lead
  names its company by the company's identifiers), so two sandboxes that received the
  same data through different histories compare equal.
* :func:`ledger` and :func:`synced_identifiers` read the state file read-only.
* :class:`SandboxProcess` runs ``outreach-magic sandbox`` in another process, so a test
  can SIGKILL the sync process without touching the server.
"""

from __future__ import annotations

import csv
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

from tests.sandbox_helpers import sandbox_companies, sandbox_leads

WS = "65f1a2b3c4d5e6f7890a1b2c"
REPO = Path(__file__).resolve().parent.parent
HEADER = ["lead_email", "unified_lead_id", "lead_first_name", "lead_last_name", "lead_job_title",
          "company_domain", "company_name", "lead_status"]
INVALID_EVERY = 97  # row i % 97 == 13: the email is not an email (held back by staging)
GHOST_EVERY = 101  # row i % 101 == 7: only a unified_lead_id the server does not know (rejected by the API)


def write_people(path: Path, n: int, seed: int = 1) -> Path:
    """``n`` data rows; returns ``path``. Row numbers in the ledger are 1-based data rows."""
    rng = random.Random(seed)
    titles = ["Engineer", "Analyst", "VP Sales", "CTO", "Designer", "Founder"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(n):
            domain = f"co{i // 8}.example"
            email = f"person{i}@{domain}"
            ghost = ""
            if i % INVALID_EVERY == 13:
                email = f"person{i} at {domain}"
            elif i % GHOST_EVERY == 7:
                email, ghost = "", f"{i:024x}"
            w.writerow([email, ghost, f"First{i}", f"Last{rng.randrange(1000)}", rng.choice(titles),
                        domain, f"Company {i // 8}", rng.choice(["prospect", "customer"])])
    return path


def expected_outcome(n: int) -> tuple[set[str], set[int], set[int]]:
    """(emails that must be held by the sandbox, 1-based rows invalid, 1-based rows the API rejects)."""
    emails, invalid, ghosts = set(), set(), set()
    for i in range(n):
        if i % INVALID_EVERY == 13:
            invalid.add(i + 1)
        elif i % GHOST_EVERY == 7:
            ghosts.add(i + 1)
        else:
            emails.add(f"person{i}@co{i // 8}.example")
    return emails, invalid, ghosts


def _ids(entity: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((f, tuple(sorted(v))) for f, v in entity["identifiers"].items() if v))


def holdings(url: str, key: str) -> tuple[list[str], list[str]]:
    """A tenant's leads and companies without the ids the server minted, sorted."""
    companies = sandbox_companies(url, key)
    company_ids = {c["unified_company_id"]: _ids(c) for c in companies}
    leads = sorted(
        repr((_ids(lead), sorted(lead["attributes"].items()),
              sorted((ws, sorted(a.items())) for ws, a in (lead.get("workspaces") or {}).items()),
              sorted((lead.get("connections") or {}).items()),
              company_ids.get(lead.get("unified_company_id"))))
        for lead in sandbox_leads(url, key)
    )
    comps = sorted(
        repr((_ids(c), sorted(c["attributes"].items()),
              sorted((ws, sorted(a.items())) for ws, a in (c.get("workspaces") or {}).items())))
        for c in companies
    )
    return leads, comps


def held_emails(url: str, key: str) -> set[str]:
    return {e for lead in sandbox_leads(url, key) for e in lead["identifiers"].get("lead_email", [])}


def ledger(state: Path) -> list[tuple[Any, ...]]:
    """(origin, row, column, value, reason) of every ledger entry, sorted by row."""
    con = duckdb.connect(str(state), read_only=True)
    try:
        return con.execute('SELECT origin, row, "column", value, reason FROM rejected ORDER BY row, origin').fetchall()
    finally:
        con.close()


def synced_identifiers(state: Path, kind: str = "lead_email") -> set[str]:
    """Identifier values the state file marks as confirmed by the API."""
    con = duckdb.connect(str(state), read_only=True)
    try:
        rows = con.execute("SELECT value FROM identity WHERE kind = ?", [kind]).fetchall()
    finally:
        con.close()
    return {r[0] for r in rows}


def child_env(key: str | None, **extra: str) -> dict[str, str]:
    """The environment of a CLI child: the key only in ``OUTREACH_MAGIC_API_KEY``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_MAGIC", "DESTINATION__"))}
    env["PYTHONPATH"] = str(REPO)
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    if key is not None:
        env["OUTREACH_MAGIC_API_KEY"] = key
    env.update(extra)
    return env


def cli_sync(src: Path | str, url: str, state: Path, key: str | None, *extra_args: str,
             timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """``python -m pipelines.cli sync SRC --json`` as a child process (bytes out, for scanning)."""
    cmd = [sys.executable, "-m", "pipelines.cli", "sync", str(src), "--base-url", url, "--state", str(state),
           "--workspace-id", WS, "--json", *extra_args]
    return subprocess.run(cmd, env=child_env(key), capture_output=True, timeout=timeout, cwd=cwd or REPO,
                          check=False)


class SandboxProcess:
    """``outreach-magic sandbox`` in a child process; the URL is read from its first line."""

    def __init__(self, keys: list[str], *args: str) -> None:
        cmd = [sys.executable, "-m", "pipelines.cli", "sandbox", "--port", "0"]
        for key in keys:
            cmd += ["--api-key", key]
        self.proc = subprocess.Popen([*cmd, *args], env=child_env(None), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        found = re.search(r"(http://\S+)", line)
        if not found:
            self.stop()
            raise RuntimeError(f"sandbox did not announce its URL: {line!r}")
        self.url = found.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Any, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def synced_lead_attributes(state: Path) -> dict[str, dict[str, str]]:
    """email -> the lead attributes the state file records as confirmed for that lead."""
    from destinations.outreach_magic import settings as s

    con = duckdb.connect(str(state), read_only=True)
    try:
        cols = ", ".join(f"ls.{c}" for c in s.LEAD_ATTRIBUTES)
        rows = con.execute(
            f"SELECT i.value, {cols} FROM identity i JOIN lead_state ls USING (entity_id) "
            "WHERE i.entity_type = 'lead' AND i.kind = 'lead_email'"
        ).fetchall()
    finally:
        con.close()
    return {email: {c: v for c, v in zip(s.LEAD_ATTRIBUTES, values, strict=True) if v is not None}
            for email, *values in rows}
