"""Security: the API key never leaks, plain HTTP is refused, tenants are isolated, the state is private.

The leak scans run the real CLI as a child process with a distinctive key and ``HOME``
pointed into the test folder, then read every byte it left behind: stdout, stderr (with
dlt logging at INFO), the state file, its WAL and spill folder, dlt's working folder
beside it and anything written under ``HOME`` (dlt's global folder). They run after a
successful sync, a 401, a run against an API that only answers 5xx, and a SIGKILL in the
middle of delivery, since failure paths are where keys usually escape (exception text,
repr of a config object, a traceback with locals).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest

from destinations.outreach_magic.client import DeliveryClient
from destinations.outreach_magic.exceptions import InsecureTransportError
from pipelines.runner import SyncRequest, run_sync
from tests.sandbox_helpers import post_events, sandbox_leads, sandbox_stats
from tests.test_reliability_helpers import REPO, WS, child_env, wait_until, write_people

SECRET = "om-live-" + secrets.token_hex(16)


def _duckdb_hits(path: Path) -> list[str]:
    """Columns of a DuckDB file holding the key. DuckDB compresses strings on disk (FSST,
    dictionaries), so a byte scan alone could miss a stored key: ask the database too."""
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return []  # not a DuckDB file (or a WAL): the byte scan covers it
    try:
        columns = con.execute("SELECT table_schema, table_name, column_name FROM information_schema.columns").fetchall()
        hits = []
        for schema, table, column in columns:
            found = con.execute(f'SELECT count(*) FROM "{schema}"."{table}" '
                                f'WHERE CAST("{column}" AS VARCHAR) LIKE ?', [f"%{SECRET}%"]).fetchone()
            if found and found[0]:
                hits.append(f"{path.name}:{table}.{column}")
        return hits
    finally:
        con.close()


def _scan(root: Path, *blobs: bytes) -> list[str]:
    """Where the key appears: raw bytes (UTF-8 or UTF-16) of every output and file under
    ``root``, plus the decoded contents of every DuckDB file (the state, its copies)."""
    needles = [SECRET.encode(), SECRET.encode("utf-16-le")]
    hits = [f"output #{i}" for i, blob in enumerate(blobs) if any(n in blob for n in needles)]
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if any(n in data for n in needles):
            hits.append(str(path.relative_to(root)))
        if path.suffix == ".duckdb" or data[8:12] == b"DUCK":
            hits.extend(_duckdb_hits(path))
    return hits


def test_the_scanner_finds_a_key_stored_in_a_compressed_duckdb_column(tmp_path: Path) -> None:
    """A positive control: the scans below can fail. 50,000 repeats compress the column."""
    con = duckdb.connect(str(tmp_path / "leak.duckdb"))
    con.execute("CREATE TABLE t AS SELECT 'prefix ' || ? || ' ' || (i % 7)::VARCHAR AS v FROM range(50000) r(i)",
                [SECRET])
    con.close()
    (tmp_path / "log.txt").write_text(f"key={SECRET}", encoding="utf-8")
    hits = _scan(tmp_path)
    assert "leak.duckdb:t.v" in hits and "log.txt" in hits


def _cmd(src: Path, url: str, state: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "sync", str(src), "--base-url", url, "--state", str(state),
            "--workspace-id", WS, "--json", "--batch-size", "10", "--concurrency", "1"]


def _env(tmp: Path) -> dict[str, str]:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return child_env(SECRET, HOME=str(home), RUNTIME__LOG_LEVEL="INFO")


def _files_written(tmp: Path) -> int:
    return sum(1 for p in tmp.rglob("*") if p.is_file())


def test_key_absent_after_a_successful_run(tmp_path: Path, sandbox_factory: Any) -> None:
    sb = sandbox_factory(api_keys=[SECRET])
    src = write_people(tmp_path / "people.csv", 200)
    done = subprocess.run(_cmd(src, sb.url, tmp_path / "st" / "state.duckdb"), env=_env(tmp_path),
                          capture_output=True, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 1, done.stderr[-2000:]  # the file has invalid rows by design
    assert orjson.loads(done.stdout)["applied"] > 0
    assert (tmp_path / "st" / "dlt").is_dir(), "dlt's working folder must sit beside the state (and be scanned)"
    assert _scan(tmp_path, done.stdout, done.stderr) == []


def test_key_absent_after_a_401(tmp_path: Path, sandbox_factory: Any) -> None:
    sb = sandbox_factory(api_keys=["some-other-key"])
    src = write_people(tmp_path / "people.csv", 50)
    done = subprocess.run(_cmd(src, sb.url, tmp_path / "st" / "state.duckdb"), env=_env(tmp_path),
                          capture_output=True, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 2
    report = orjson.loads(done.stdout)
    assert report["applied"] == 0 and "401" in report["error"]
    assert _scan(tmp_path, done.stdout, done.stderr) == []


def test_key_absent_after_a_run_against_500s(tmp_path: Path, sandbox_factory: Any) -> None:
    sb = sandbox_factory(api_keys=[SECRET], error_rate=1.0, seed=3)
    src = write_people(tmp_path / "people.csv", 20)
    done = subprocess.run(_cmd(src, sb.url, tmp_path / "st" / "state.duckdb"), env=_env(tmp_path),
                          capture_output=True, timeout=240, cwd=REPO, check=False)
    report = orjson.loads(done.stdout)
    assert done.returncode in (1, 2) and report["applied"] == 0 and report["needs_rerun"]
    assert b"Traceback" not in done.stderr
    assert _scan(tmp_path, done.stdout, done.stderr) == []


def test_key_absent_after_a_sigkill_mid_delivery(tmp_path: Path, sandbox_factory: Any) -> None:
    sb = sandbox_factory(api_keys=[SECRET], latency_ms=150)
    src = write_people(tmp_path / "people.csv", 400)
    proc = subprocess.Popen(_cmd(src, sb.url, tmp_path / "st" / "state.duckdb"), env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert wait_until(lambda: sandbox_stats(sb.url, SECRET)["requests"] >= 3, timeout=60)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert _files_written(tmp_path / "st") > 0
    assert _scan(tmp_path, out, err) == []


def test_key_absent_from_every_log_record_in_process(tmp_path: Path, sandbox_factory: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """DEBUG for every logger (httpx, httpcore, dlt, ours) while syncing through faults."""
    sb = sandbox_factory(api_keys=[SECRET], error_rate=0.3, seed=5)
    src = write_people(tmp_path / "people.csv", 100)
    with caplog.at_level(logging.DEBUG):
        report = run_sync(SyncRequest(sources=[str(src)], api_key=SECRET, base_url=sb.url,
                                      state_path=str(tmp_path / "s.duckdb"), constants={"workspace_id": WS},
                                      batch_size=10, max_attempts=3))
    assert report.requests > 0 and caplog.records
    assert SECRET not in caplog.text
    assert SECRET not in repr(report) and SECRET not in orjson.dumps(report.to_dict()).decode()
    assert SECRET not in repr(SyncRequest(sources=[], api_key=SECRET))


# ----------------------------------------------------------------------------- plain HTTP
@pytest.fixture
def no_remote_connect(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record, and refuse, any socket connect to a non-loopback address."""
    attempts: list[Any] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in ("127.0.0.1", "::1", "localhost") and not str(address).startswith("/"):
            attempts.append(address)
            raise OSError("test guard: non-loopback connect refused")

    def connect(self: socket.socket, address: Any) -> None:
        guard(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guard(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


def test_plain_http_to_a_remote_host_is_refused_before_connecting(tmp_path: Path, no_remote_connect: list[Any]) -> None:
    src = write_people(tmp_path / "people.csv", 30)
    report = run_sync(SyncRequest(sources=[str(src)], api_key=SECRET, base_url="http://203.0.113.1:8080",
                                  state_path=str(tmp_path / "s.duckdb"), constants={"workspace_id": WS}))
    assert report.exit_code == 2 and report.applied == 0 and report.requests == 0
    assert "plain http" in (report.error or "") and "allow_insecure_http" in (report.error or "")
    assert no_remote_connect == []
    with pytest.raises(InsecureTransportError):
        DeliveryClient(api_key=SECRET, base_url="http://203.0.113.1")
    with pytest.raises(InsecureTransportError):
        DeliveryClient(api_key=SECRET, base_url="http://api.outreachmagic.io")


def _cli_refusal(tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    src = write_people(tmp_path / "people.csv", 10)
    env = _env(tmp_path)
    env.pop("RUNTIME__LOG_LEVEL")  # the default configuration, as a user runs it
    return subprocess.run(_cmd(src, "http://203.0.113.1:9", tmp_path / "s.duckdb"), env=env,
                          capture_output=True, timeout=120, cwd=REPO, check=False)


def test_plain_http_cli_refusal_exits_2_with_the_reason_and_no_key(tmp_path: Path) -> None:
    done = _cli_refusal(tmp_path)
    report = orjson.loads(done.stdout)
    assert done.returncode == 2 and report["requests"] == 0 and "plain http" in report["error"]
    assert _scan(tmp_path, done.stdout, done.stderr) == []




def test_plain_http_cli_refusal_prints_no_traceback(tmp_path: Path) -> None:
    assert b"Traceback" not in _cli_refusal(tmp_path).stderr


def test_plain_http_is_allowed_with_the_flag_and_loopback_without(no_remote_connect: list[Any]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"errors": {"count": 0, "details": []}, "success": 1, "total": 1})

    client = DeliveryClient(api_key=SECRET, base_url="http://203.0.113.1", allow_insecure_http=True,
                            transport=httpx.MockTransport(handler))
    assert SECRET not in repr(client)
    outcomes: list[Any] = []
    event = orjson.dumps({"event": "update_attributes", "lead_email": "a@b.example"})
    client.deliver([(0, event)], outcomes.extend)
    assert seen and seen[0].url.scheme == "http" and seen[0].headers["x-api-key"] == SECRET
    assert len(outcomes) == 1 and no_remote_connect == []
    for url in ("http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1", "https://api.outreachmagic.io"):
        DeliveryClient(api_key=SECRET, base_url=url)  # no error


# ----------------------------------------------------------------------------- tenants
def test_tenant_isolation_under_concurrent_load(tmp_path: Path, sandbox_server: Any) -> None:
    url = sandbox_server.url
    files = {}
    for key, domain in (("test-key", "alpha"), ("other-key", "beta")):
        path = tmp_path / f"{domain}.csv"
        path.write_text("lead_email,lead_first_name,company_domain\n" + "".join(
            f"p{i}@{domain}.example,{domain}{i},{domain}{i % 20}.example\n" for i in range(1500)), encoding="utf-8")
        files[key] = path
    reports: dict[str, Any] = {}
    shared_email_posts: list[int] = []

    def sync(key: str) -> None:
        reports[key] = run_sync(SyncRequest(sources=[str(files[key])], api_key=key, base_url=url,
                                            state_path=str(tmp_path / key / "s.duckdb"), batch_size=25,
                                            concurrency=8))

    def hammer(key: str) -> None:
        # both tenants write the same email with different names at the same time
        for i in range(60):
            r = post_events(url, key, [{"event": "update_attributes", "lead_email": f"shared{i}@both.example",
                                        "lead_first_name": key}])
            shared_email_posts.append(r.status_code)

    threads = [threading.Thread(target=f, args=(k,)) for k in ("test-key", "other-key") for f in (sync, hammer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert set(shared_email_posts) == {200}
    for key, own, other in (("test-key", "alpha", "beta"), ("other-key", "beta", "alpha")):
        assert reports[key].applied == 1500 and reports[key].error is None
        leads = sandbox_leads(url, key)
        emails = [e for lead in leads for e in lead["identifiers"].get("lead_email", [])]
        assert len(leads) == 1500 + 60
        assert not [e for e in emails if other in e]
        assert sum(own in e for e in emails) == 1500
        shared = [lead for lead in leads if lead["identifiers"]["lead_email"][0].startswith("shared")]
        assert {lead["attributes"]["lead_first_name"] for lead in shared} == {key}
    # a lead id minted for one tenant is unknown to the other
    alpha_id = sandbox_leads(url, "test-key")[0]["unified_lead_id"]
    body = post_events(url, "other-key", [{"event": "update_attributes", "unified_lead_id": alpha_id,
                                           "lead_first_name": "Intruder"}]).json()
    assert body["success"] == 0 and "matches no lead" in body["errors"]["details"][0]["error"][0]["msg"]
    assert all(lead["attributes"].get("lead_first_name") != "Intruder" for lead in sandbox_leads(url, "test-key"))


# ----------------------------------------------------------------------------- state file
def test_state_file_is_created_owner_only(tmp_path: Path, sandbox_server: Any) -> None:
    old = os.umask(0o022)  # a permissive umask: the connector must not rely on the caller's
    try:
        src = write_people(tmp_path / "people.csv", 30)
        state = tmp_path / "fresh" / "state.duckdb"
        report = run_sync(SyncRequest(sources=[str(src)], api_key="test-key", base_url=sandbox_server.url,
                                      state_path=str(state), constants={"workspace_id": WS}))
    finally:
        os.umask(old)
    assert report.applied > 0
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    wal = state.with_name(state.name + ".wal")
    if wal.exists():
        assert stat.S_IMODE(wal.stat().st_mode) & 0o077 == 0
