"""End-to-end syncs against the real sandbox over loopback HTTP.

The expected sandbox contents come from an oracle written independently of staging:
the preset fixtures' expected canonical rows, normalized with ``identifiers``, grouped
the way the server groups them (any shared identifier is the same lead), last non-empty
value per attribute.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pytest

from destinations.outreach_magic import settings as s
from destinations.outreach_magic.contract import item_errors
from destinations.outreach_magic.identifiers import NORMALIZERS, IdentifierError
from pipelines.runner import SyncReport, SyncRequest, run_sync
from tests.sandbox_helpers import lead_by, sandbox_companies, sandbox_leads, sandbox_stats

FIXTURES = Path(__file__).parent / "fixtures" / "presets"
KEY = "test-key"
WS = "65f1a2b3c4d5e6f7890a1b2c"
PRESET_FILES = sorted(p for p in FIXTURES.iterdir() if not p.name.endswith(".expected.jsonl")
                      and p.suffix in {".csv", ".json", ".jsonl"})


def sync(url: str, state: Path, sources: list[Any], **kw: Any) -> SyncReport:
    kw.setdefault("constants", {"workspace_id": WS})
    return run_sync(SyncRequest(sources=[str(x) if isinstance(x, Path) else x for x in sources],
                                api_key=kw.pop("api_key", KEY), base_url=url, state_path=str(state), **kw))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


# ----------------------------------------------------------------------------- oracle
def _normalize_row(row: dict[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for field in s.CANONICAL_FIELDS:
        value = row.get(field)
        if value is None:
            continue
        try:
            norm = NORMALIZERS[field](value)
        except IdentifierError:
            return None
        if norm is not None:
            out[field] = norm
    has_lead = any(f in out for f in s.LEAD_IDENTIFIERS)
    has_company = any(f in out for f in s.COMPANY_IDENTIFIERS)
    for attrs, has in ((s.COMPANY_ATTRIBUTES, has_company), (s.LEAD_ATTRIBUTES, has_lead)):
        if not has and (has_lead or has_company):
            for f in attrs:
                out.pop(f, None)
    return out if not item_errors({"event": "update_attributes", **out}) else None


def expected_leads(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leads as the server would hold them: rows sharing any identifier are one lead."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    owner: dict[tuple[str, str], int] = {}
    valid: list[dict[str, Any]] = []
    for row in rows:
        norm = _normalize_row(row)
        if norm is None or not any(f in norm for f in s.LEAD_IDENTIFIERS):
            continue
        i = len(valid)
        valid.append(norm)
        parent[i] = i
        for f in s.LEAD_IDENTIFIERS:
            if f in norm:
                key = (f, norm[f])
                if key in owner:
                    parent[find(i)] = find(owner[key])
                else:
                    owner[key] = i
    groups: dict[int, list[dict[str, Any]]] = {}
    for i, row in enumerate(valid):
        groups.setdefault(find(i), []).append(row)
    leads = []
    for members in groups.values():
        ids: dict[str, set[str]] = {}
        attrs: dict[str, str] = {}
        for row in members:
            for f in s.LEAD_IDENTIFIERS:
                if f in row:
                    ids.setdefault(f, set()).add(row[f])
            for f in s.LEAD_ATTRIBUTES:
                if f in row:
                    attrs[f] = row[f]
        leads.append({"ids": ids, "attrs": attrs})
    return leads


@pytest.mark.parametrize("fixture", PRESET_FILES, ids=lambda p: p.name)
def test_each_preset_syncs_to_the_expected_sandbox_contents(fixture: Path, sandbox_server: Any, tmp_path: Path) -> None:
    expected_file = fixture.with_name(fixture.stem + ".expected.jsonl")
    rows = [json.loads(line) for line in expected_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    report = sync(sandbox_server.url, tmp_path / "state.duckdb", [fixture])
    assert report.error is None, report.error
    assert report.rows_read == len(rows)
    assert report.applied == report.events and report.failed == 0 and report.rejected == 0

    want = expected_leads([{**row, "workspace_id": WS} for row in rows])
    got = sandbox_leads(sandbox_server.url, KEY)
    assert len(got) == len(want), [g["identifiers"] for g in got]
    for lead in want:
        kind, values = next(iter(lead["ids"].items()))
        matches = lead_by(got, kind, next(iter(values)))
        assert len(matches) == 1, (kind, values)
        held = matches[0]
        for f, vals in lead["ids"].items():
            assert vals <= set(held["identifiers"].get(f, [])), (f, vals, held["identifiers"])
        assert {k: v for k, v in held["attributes"].items() if k in s.LEAD_ATTRIBUTES} == lead["attrs"]


def test_second_identical_run_sends_nothing(sandbox_server: Any, tmp_path: Path) -> None:
    src = FIXTURES / "apollo.csv"
    first = sync(sandbox_server.url, tmp_path / "s.duckdb", [src])
    assert first.applied > 0
    requests_before = sandbox_stats(sandbox_server.url, KEY)["requests"]
    second = sync(sandbox_server.url, tmp_path / "s.duckdb", [src])
    assert second.events == 0 and second.requests == 0
    assert second.rows_skipped_unchanged == second.rows_read == first.rows_read
    assert sandbox_stats(sandbox_server.url, KEY)["requests"] == requests_before


def test_changing_one_attribute_sends_one_event_with_identifiers_and_that_attribute(
    sandbox_server: Any, tmp_path: Path
) -> None:
    header = ["lead_email", "lead_linkedin_url", "lead_first_name", "lead_job_title", "company_domain", "company_name"]
    rows = [
        ["ada@example.com", "https://www.linkedin.com/in/ada-l", "Ada", "Engineer", "example.com", "Example"],
        ["bob@example.org", "", "Bob", "Sales", "example.org", "Example Org"],
    ]
    src = write_csv(tmp_path / "leads.csv", header, rows)
    state = tmp_path / "s.duckdb"
    assert sync(sandbox_server.url, state, [src]).applied == 2
    rows[0][3] = "Chief Engineer"
    write_csv(src, header, rows)
    dry = sync(sandbox_server.url, state, [src], dry_run=True)
    assert dry.events == 1
    assert dry.samples == [{
        "event": "update_attributes",
        "lead_email": "ada@example.com",
        "lead_linkedin_url": "https://www.linkedin.com/in/ada-l/",
        "lead_job_title": "Chief Engineer",
        "company_domain": "example.com",
    }]
    report = sync(sandbox_server.url, state, [src])
    assert report.events == 1 and report.applied == 1 and report.requests == 1
    ada = lead_by(sandbox_leads(sandbox_server.url, KEY), "lead_email", "ada@example.com")[0]
    assert ada["attributes"]["lead_job_title"] == "Chief Engineer"
    assert ada["attributes"]["lead_first_name"] == "Ada"


def test_a_company_named_by_several_leads_rides_on_the_first_lead_event_only(
    sandbox_server: Any, tmp_path: Path
) -> None:
    header = ["lead_email", "lead_first_name", "company_domain", "company_name"]
    rows = [[f"p{i}@acme.example", f"P{i}", "acme.example", "Acme"] for i in range(3)]
    rows.append(["solo@other.example", "Solo", "other.example", "Other"])
    src = write_csv(tmp_path / "leads.csv", header, rows)
    report = sync(sandbox_server.url, tmp_path / "s.duckdb", [src])
    assert report.applied == 4
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM company_state").fetchall() == [(2,)]
    con.close()
    # The events themselves, staged afresh: every one names the domain, one carries the name.
    from destinations.outreach_magic import staging
    from destinations.outreach_magic.sink import SinkOptions, stage_table
    from sources.canonical import open_source

    table = next(iter(open_source(str(src), preset="auto")))
    opts = SinkOptions(api_key=KEY, base_url=sandbox_server.url, state_path=str(tmp_path / "fresh.duckdb"))
    st: staging.Staging = stage_table(table, opts)
    try:
        events = [orjson.loads(body) for _no, body in st.events()]
    finally:
        st.close()
    acme = [e for e in events if e.get("company_domain") == "acme.example"]
    assert len(acme) == 3 and sum("company_name" in e for e in acme) == 1
    assert [e.get("company_name") for e in events if e.get("company_domain") == "other.example"] == ["Other"]


def test_dry_run_sends_nothing_and_records_nothing(sandbox_server: Any, tmp_path: Path) -> None:
    src = FIXTURES / "zoominfo.csv"
    dry = sync(sandbox_server.url, tmp_path / "s.duckdb", [src], dry_run=True)
    assert dry.events > 0 and dry.applied == 0 and dry.samples
    assert sandbox_stats(sandbox_server.url, KEY)["requests"] == 0
    real = sync(sandbox_server.url, tmp_path / "s.duckdb", [src])
    assert real.events == dry.events and real.applied == dry.events


def test_401_leaves_the_state_untouched_and_exits_2(sandbox_server: Any, tmp_path: Path) -> None:
    src = FIXTURES / "apollo.csv"
    state = tmp_path / "s.duckdb"
    bad = sync(sandbox_server.url, state, [src], api_key="wrong-key-123")
    assert bad.exit_code == 2 and bad.applied == 0
    assert "Invalid API key" in (bad.error or "") or "401" in (bad.error or "")
    assert "wrong-key-123" not in json.dumps(bad.to_dict())
    con = duckdb.connect(str(state), read_only=True)
    assert con.execute("SELECT count(*) FROM identity").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM row_hashes").fetchall() == [(0,)]
    con.close()
    good = sync(sandbox_server.url, state, [src])
    assert good.exit_code in (0, 1) and good.applied > 0 and good.error is None
    assert good.applied == good.events


def test_a_401_with_the_next_slice_prepared_leaves_nothing_open(sandbox_server: Any, tmp_path: Path) -> None:
    """Slices are prepared a step ahead on connections of their own: when delivery stops,
    the one prepared meanwhile is closed too (the state file opens read-only at once, which
    DuckDB refuses while this process still holds it open for writing)."""
    import threading

    rows = [[f"p{i}@example.com", f"P{i}"] for i in range(20)]
    src = write_csv(tmp_path / "leads.csv", ["lead_email", "lead_first_name"], rows)
    state = tmp_path / "s.duckdb"
    bad = sync(sandbox_server.url, state, [src], api_key="wrong-key-123", stage_rows=3)
    assert bad.exit_code == 2 and bad.applied == 0
    con = duckdb.connect(str(state), read_only=True)
    assert con.execute("SELECT count(*) FROM identity").fetchall() == [(0,)]
    con.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("outreach-magic-prepare")]
    good = sync(sandbox_server.url, state, [src], stage_rows=3)
    assert good.exit_code == 0 and good.applied == good.events == 20


def test_unfinished_dlt_work_is_loaded_first_and_a_rerun_with_nothing_new_needs_no_dlt(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that stopped after dlt extracted its rows but before they were loaded leaves its
    package to the next run, which loads it first; once everything is confirmed, a rerun
    over the same rows reads and hashes them and never builds a dlt pipeline at all."""
    import dlt
    from dlt.pipeline.pipeline import Pipeline

    src = write_csv(tmp_path / "leads.csv", ["lead_email", "lead_first_name"],
                    [[f"p{i}@example.com", f"P{i}"] for i in range(5)])
    state = tmp_path / "s.duckdb"
    original_load = Pipeline.load

    def stopped(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("stopped before loading (injected)")

    monkeypatch.setattr(Pipeline, "load", stopped)
    first = sync(sandbox_server.url, state, [src])
    assert first.exit_code == 2 and first.applied == 0
    assert sandbox_stats(sandbox_server.url, KEY)["requests"] == 0
    monkeypatch.setattr(Pipeline, "load", original_load)
    second = sync(sandbox_server.url, state, [src])
    assert second.exit_code == 0 and second.applied == second.events == 5  # the first run's package
    assert len(sandbox_leads(sandbox_server.url, KEY)) == 5

    def no_dlt(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a rerun with nothing new built a dlt pipeline")

    monkeypatch.setattr(dlt, "pipeline", no_dlt)
    third = sync(sandbox_server.url, state, [src])
    assert third.exit_code == 0 and third.events == 0 and third.rows_skipped_unchanged == 5


def test_slices_are_prepared_ahead_at_a_lower_cpu_priority_than_delivery(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper that prepares the next slice runs niced below the thread that delivers,
    so on busy cores the delivery (what the run waits for) gets the CPU first."""
    import threading

    from destinations.outreach_magic import sink

    seen: list[tuple[str, int]] = []
    original = sink.prepare_table

    def recording(*args: Any, **kwargs: Any) -> Any:
        tid = threading.get_native_id()
        seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, tid)))
        return original(*args, **kwargs)

    monkeypatch.setattr(sink, "prepare_table", recording)
    delivering = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    src = write_csv(tmp_path / "leads.csv", ["lead_email"], [[f"p{i}@example.com"] for i in range(9)])
    report = sync(sandbox_server.url, tmp_path / "s.duckdb", [src], stage_rows=3)
    assert report.applied == 9
    assert len(seen) == 3 and all(name.startswith("outreach-magic-prepare") for name, _ in seen)
    assert all(nice == min(delivering + 10, 19) for _, nice in seen)


def test_a_lead_and_companies_spread_over_slices_prepared_ahead_stay_one_entity_each(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next slice is prepared while one is delivered, but matched against the state only
    after that one's confirmations are written: a person whose rows fall in two slices, and
    companies named in every slice, end as one entity each (in the state and on the server),
    the later slice's values win, and a rerun finds nothing to send. Delivery is slowed down
    so that the next slice is surely prepared before the current one is confirmed."""
    import time

    from destinations.outreach_magic.client import DeliveryClient

    original = DeliveryClient.deliver

    def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DeliveryClient, "deliver", slow)
    header = ["lead_email", "lead_linkedin_url", "lead_first_name", "lead_job_title", "company_domain"]
    people = 12
    rows = [[f"p{i}@example.com", "", f"P{i}", "Engineer", f"c{i % 3}.example"] for i in range(people)]
    rows += [[f"p{i}@example.com", f"https://www.linkedin.com/in/p-{i}", "", f"Lead {i}", f"c{i % 3}.example"]
             for i in range(people)]
    src = write_csv(tmp_path / "spread.csv", header, rows)
    state = tmp_path / "s.duckdb"
    first = sync(sandbox_server.url, state, [src], stage_rows=7)  # slices of rows 0-6, 7-13, 14-20, 21-23
    assert first.failed == 0 and first.applied == first.events
    con = duckdb.connect(str(state), read_only=True)
    assert con.execute(
        "SELECT count(*), count(DISTINCT (entity_type, kind, value)) FROM identity"
    ).fetchall() == [(people * 2 + 3, people * 2 + 3)]
    assert con.execute("SELECT count(DISTINCT entity_id) FROM identity WHERE entity_type = 'lead'").fetchall() == [
        (people,)]
    assert con.execute("SELECT count(*), count(DISTINCT entity_id) FROM lead_state").fetchall() == [(people, people)]
    assert con.execute("SELECT count(*), count(DISTINCT entity_id) FROM company_state").fetchall() == [(3, 3)]
    con.close()
    leads = sandbox_leads(sandbox_server.url, KEY)
    assert len(leads) == people and len(sandbox_companies(sandbox_server.url, KEY)) == 3
    for i in range(people):
        (lead,) = lead_by(leads, "lead_email", f"p{i}@example.com")
        assert lead["identifiers"]["lead_linkedin_url"] == [f"https://www.linkedin.com/in/p-{i}/"]
        assert (lead["attributes"]["lead_first_name"], lead["attributes"]["lead_job_title"]) == (f"P{i}", f"Lead {i}")
    again = sync(sandbox_server.url, state, [src], stage_rows=7)
    assert again.events == 0 and again.requests == 0


def test_api_rejections_land_in_the_ledger_and_the_rest_is_applied(sandbox_server: Any, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "mixed.csv", ["unified_lead_id", "lead_email", "lead_first_name"], [
        ["aaaaaaaaaaaaaaaaaaaaaaaa", "", "Ghost"],  # the server knows no such lead: rejected per index
        ["", "cleo@example.com", "Cleo"],
        ["", "not-an-email", "Nope"],  # held back before any request
    ])
    state = tmp_path / "s.duckdb"
    report = sync(sandbox_server.url, state, [src])
    assert (report.applied, report.rejected, report.invalid, report.exit_code) == (1, 1, 1, 1)
    con = duckdb.connect(str(state), read_only=True)
    ledger = con.execute('SELECT origin, row, "column", value, reason FROM rejected ORDER BY row').fetchall()
    con.close()
    assert ledger[0][0] == "api" and ledger[0][1] == 1 and "matches no lead" in ledger[0][4]
    assert ledger[1][:4] == ("invalid", 3, "lead_email", "not-an-email")
    assert lead_by(sandbox_leads(sandbox_server.url, KEY), "lead_email", "cleo@example.com")
    again = sync(sandbox_server.url, state, [src])
    assert again.events == 0 and again.skipped_rejected == 1 and again.invalid == 1
    retry = sync(sandbox_server.url, state, [src], retry_rejected=True)
    assert retry.rejected == 1 and retry.events == 1


@pytest.mark.parametrize("batch_size", [1, 7, 100])
def test_batch_size_bounds_items_per_request(batch_size: int, sandbox_server: Any, tmp_path: Path) -> None:
    rows = [[f"p{i}@example.com", f"Person {i}"] for i in range(23)]
    src = write_csv(tmp_path / "many.csv", ["lead_email", "lead_first_name"], rows)
    report = sync(sandbox_server.url, tmp_path / "s.duckdb", [src], batch_size=batch_size)
    assert report.applied == 23
    assert report.requests == math.ceil(23 / batch_size)
    assert len(sandbox_leads(sandbox_server.url, KEY)) == 23


def test_invalid_rows_name_row_column_and_value_and_valid_rows_still_sync(sandbox_server: Any, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "bad.csv", ["lead_email", "lead_linkedin_url", "company_domain"], [
        ["n/a", "", ""],
        ["dee@example.com", "https://www.linkedin.com/company/acme/", ""],
        ["eve@example.com", "", "example.com"],
    ])
    state = tmp_path / "s.duckdb"
    report = sync(sandbox_server.url, state, [src])
    assert report.invalid == 2 and report.applied == 1
    con = duckdb.connect(str(state), read_only=True)
    ledger = con.execute('SELECT row, "column", value, reason FROM rejected ORDER BY row').fetchall()
    con.close()
    assert [(r, c, v) for r, c, v, _ in ledger] == [
        (1, "lead_email", "n/a"), (2, "lead_linkedin_url", "https://www.linkedin.com/company/acme/")]
    assert all(reason for *_, reason in ledger)


def test_rows_of_one_person_in_url_variants_become_one_lead(sandbox_server: Any, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "variants.csv", ["lead_email", "lead_linkedin_url", "lead_job_title", "updated_at"], [
        ["fay@example.com", "https://uk.linkedin.com/in/fay-q?trk=abc", "Analyst", "2026-01-01"],
        ["", "http://www.linkedin.com/in/fay-q/details/experience/", "Lead Analyst", "2026-03-01"],
        ["FAY@example.com", "", "", "2026-02-01"],
    ])
    mapping = tmp_path / "m.toml"
    mapping.write_text('order_by = "updated_at"\n', encoding="utf-8")
    report = sync(sandbox_server.url, tmp_path / "s.duckdb", [src], mapping=str(mapping))
    assert report.events == 1 and report.merged == 2
    leads = sandbox_leads(sandbox_server.url, KEY)
    assert len(leads) == 1
    assert leads[0]["attributes"]["lead_job_title"] == "Lead Analyst"
    assert leads[0]["identifiers"]["lead_linkedin_url"] == ["https://www.linkedin.com/in/fay-q/"]


def test_two_emails_on_one_profile_are_two_events_and_no_email_is_lost(sandbox_server: Any, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "two.csv", ["lead_email", "lead_linkedin_url"], [
        ["gil@work.example", "https://www.linkedin.com/in/gil"],
        ["gil@home.example", "https://www.linkedin.com/in/gil"],
    ])
    report = sync(sandbox_server.url, tmp_path / "s.duckdb", [src])
    assert report.events == 2
    leads = sandbox_leads(sandbox_server.url, KEY)
    assert len(leads) == 1 and set(leads[0]["identifiers"]["lead_email"]) == {"gil@work.example", "gil@home.example"}


def test_workspace_attributes_and_company_link(sandbox_server: Any, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "ws.csv", ["lead_email", "company_domain", "company_name", "icp", "tags"], [
        ["hal@example.com", "https://www.example.com/about?utm_source=x", "Example", "ICP 1", "vip; renewal"],
    ])
    report = sync(sandbox_server.url, tmp_path / "s.duckdb", [src])
    assert report.applied == 1
    lead = sandbox_leads(sandbox_server.url, KEY)[0]
    company = sandbox_companies(sandbox_server.url, KEY)[0]
    assert lead["unified_company_id"] == company["unified_company_id"]
    assert company["identifiers"]["company_domain"] == ["example.com"]
    assert lead["workspaces"][WS] == {"icp": "ICP 1", "tags": ["vip", "renewal"]}


def test_full_refresh_sends_everything_again(sandbox_server: Any, tmp_path: Path) -> None:
    src = FIXTURES / "clay.csv"
    first = sync(sandbox_server.url, tmp_path / "s.duckdb", [src])
    again = sync(sandbox_server.url, tmp_path / "s.duckdb", [src], full_refresh=True)
    assert again.events == first.events and again.applied == first.applied


def test_a_users_own_dlt_pipeline_with_the_destination(sandbox_server: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import dlt

    from destinations.outreach_magic import outreach_magic

    monkeypatch.setenv("DESTINATION__OUTREACH_MAGIC__API_KEY", KEY)
    rows = [
        {"lead_email": "ivy@example.com", "lead_first_name": "Ivy", "company_domain": "example.com"},
        {"lead_email": "IVY@example.com", "lead_job_title": "CFO"},
        {"lead_email": "jon@example.net", "lead_first_name": "Jon"},
    ]
    pipeline = dlt.pipeline("users_own", pipelines_dir=str(tmp_path / "dlt"),
                            destination=outreach_magic(base_url=sandbox_server.url,
                                                       state_path=str(tmp_path / "om.duckdb")))
    pipeline.run(rows, table_name="my_leads")
    leads = sandbox_leads(sandbox_server.url, KEY)
    assert len(leads) == 2
    ivy = lead_by(leads, "lead_email", "ivy@example.com")[0]
    assert ivy["attributes"] == {"lead_first_name": "Ivy", "lead_job_title": "CFO"}
    pipeline.run(rows, table_name="my_leads")
    assert sandbox_stats(sandbox_server.url, KEY)["requests"] == 1  # the rerun found nothing changed
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_cli_sync_json_with_embedded_sandbox(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUTREACH_MAGIC_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "sync", str(FIXTURES / "apollo.csv"), "--sandbox", "--json",
         "--state", str(tmp_path / "s.duckdb"), "--workspace-id", WS],
        capture_output=True, text=True, timeout=180, env=env, cwd=Path(__file__).parent.parent,
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == report["exit_code"] in (0, 1)
    assert report["applied"] == report["events"] > 0 and report["sources"][0]["preset"] == "apollo"
    assert "Traceback" not in proc.stderr


def test_rows_a_reader_skips_are_in_the_ledger(sandbox_server: Any, tmp_path: Path) -> None:
    src = tmp_path / "ragged.csv"
    src.write_text("lead_email,lead_first_name\nkim@example.com,Kim\nlou@example.com,Lou,extra,fields\n"
                   "max@example.com,Max\n", encoding="utf-8")
    state = tmp_path / "s.duckdb"
    report = sync(sandbox_server.url, state, [src])
    assert report.applied == 2 and report.invalid == 1 and report.exit_code == 1
    con = duckdb.connect(str(state), read_only=True)
    ledger = con.execute('SELECT origin, row, reason FROM rejected').fetchall()
    con.close()
    assert ledger[0][:2] == ("invalid", 2) and ledger[0][2]


def test_incremental_cursor_on_a_postgres_table_reads_only_new_rows(sandbox_server: Any, tmp_path: Path) -> None:
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        pg = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=3)
    except Exception as exc:  # pragma: no cover - the server is part of this machine
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    table = f"om_sync_{os.getpid()}"
    pg.autocommit = True
    cur = pg.cursor()
    cur.execute(f"CREATE TABLE {table} (lead_email text, lead_job_title text, updated_at timestamptz)")
    try:
        cur.execute(f"INSERT INTO {table} VALUES ('nia@example.com', 'CEO', '2026-01-01'), "
                    "('oli@example.com', 'CTO', '2026-01-02')")
        url = "postgresql://postgres@127.0.0.1:5432/test"
        state = tmp_path / "s.duckdb"
        first = sync(sandbox_server.url, state, [url], table=table, cursor_column="updated_at")
        assert first.error is None and first.rows_read == 2 and first.applied == 2
        cur.execute(f"UPDATE {table} SET lead_job_title = 'COO', updated_at = '2026-02-01' "
                    "WHERE lead_email = 'oli@example.com'")
        cur.execute(f"INSERT INTO {table} VALUES ('pat@example.com', 'CFO', '2026-02-02')")
        second = sync(sandbox_server.url, state, [url], table=table, cursor_column="updated_at")
        assert second.rows_read == 2 and second.applied == 2  # the boundary row (Jan 2) moved on
        oli = lead_by(sandbox_leads(sandbox_server.url, KEY), "lead_email", "oli@example.com")[0]
        assert oli["attributes"]["lead_job_title"] == "COO"
        cur.execute(f"INSERT INTO {table} VALUES ('quin@example.com', 'CMO', '2026-02-02')")  # same mark
        third = sync(sandbox_server.url, state, [url], table=table, cursor_column="updated_at")
        assert third.rows_read == 2 and third.rows_skipped_unchanged == 1 and third.applied == 1
        fourth = sync(sandbox_server.url, state, [url], table=table, cursor_column="updated_at")
        assert fourth.requests == 0 and fourth.events == 0
    finally:
        cur.execute("SET lock_timeout = '10s'")  # a leaked reader transaction must fail the test, not hang it
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        pg.close()


def test_company_only_rows_are_confirmed_in_the_state_and_not_resent(sandbox_server: Any, tmp_path: Path) -> None:
    header = ["company_domain", "company_name", "icp", "lead_email", "lead_first_name"]
    src = write_csv(tmp_path / "companies.csv", header, [
        ["delta.example", "Delta", "ICP 2", "", ""],
        ["epsilon.example", "Epsilon", "", "eli@epsilon.example", "Eli"],
    ])
    state = tmp_path / "s.duckdb"
    assert sync(sandbox_server.url, state, [src]).applied == 2
    con = duckdb.connect(str(state), read_only=True)
    assert con.execute("SELECT count(*) FROM identity WHERE entity_type = 'company'").fetchall() == [(2,)]
    assert sorted(con.execute("SELECT company_name FROM company_state").fetchall()) == [("Delta",), ("Epsilon",)]
    assert con.execute("SELECT icp FROM company_ws_state").fetchall() == [("ICP 2",)]
    con.close()
    # Bypass the row-hash shortcut: staging's own diff must find nothing to send either.
    again = sync(sandbox_server.url, state, [src], retry_rejected=True)
    assert again.rows_skipped_unchanged == 0 and again.events == 0 and again.unchanged == 2


def test_the_ledger_says_what_is_wrong_now_once(sandbox_server: Any, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "l.csv", ["lead_email", "lead_first_name"], [
        ["n/a", "Nobody"], ["rae@example.com", "Rae"], ["bad@@example.com", "Bad"]])
    state = tmp_path / "s.duckdb"

    def ledger() -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(state), read_only=True)
        rows = con.execute('SELECT origin, row, "column", value FROM rejected ORDER BY row').fetchall()
        con.close()
        return rows

    sync(sandbox_server.url, state, [src])
    first = ledger()
    assert [r[1] for r in first] == [1, 3]
    sync(sandbox_server.url, state, [src])
    assert ledger() == first  # not once per run
    write_csv(src, ["lead_email", "lead_first_name"], [
        ["nobody@example.com", "Nobody"], ["rae@example.com", "Rae"], ["bad@@example.com", "Bad"]])
    sync(sandbox_server.url, state, [src])
    assert [r[1] for r in ledger()] == [3]  # the fixed row left the ledger


def test_confirmations_flushed_in_the_background_during_delivery_are_all_written(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a small flush size, many flushes run in the background thread while requests go
    on (some rejected by the API, whose ledger writes share the connection): every applied
    event ends in the state once, the ledger holds the rejections, and a rerun sends nothing."""
    from destinations.outreach_magic import staging

    monkeypatch.setattr(staging, "FLUSH_ITEMS", 37)
    flushes = []
    original = staging.Staging._flush_in_background

    def counting(self: Any, batch: np.ndarray) -> None:
        flushes.append(len(batch))
        original(self, batch)

    monkeypatch.setattr(staging.Staging, "_flush_in_background", counting)
    rows = [[f"p{i}@example.com", f"P{i}", f"c{i % 40}.example"] for i in range(1_200)]
    src = write_csv(tmp_path / "many.csv", ["lead_email", "lead_first_name", "company_domain"], rows)
    state = tmp_path / "s.duckdb"
    first = sync(sandbox_server.url, state, [src], batch_size=20, concurrency=4)
    assert first.applied == first.events == 1_200 and first.failed == 0
    assert len(flushes) >= 20 and min(flushes) >= 37
    con = duckdb.connect(str(state), read_only=True)
    assert con.execute("SELECT count(*) FROM identity WHERE kind = 'lead_email'").fetchall() == [(1_200,)]
    assert con.execute("SELECT count(*), count(DISTINCT entity_id) FROM lead_state").fetchall() == [(1_200, 1_200)]
    con.close()
    assert len(sandbox_leads(sandbox_server.url, KEY)) == 1_200
    again = sync(sandbox_server.url, state, [src], retry_rejected=True)
    assert again.events == 0 and again.unchanged == 1_200


def test_state_keys_stay_unique_when_one_entity_spans_flushes_new_then_known(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entities this pass created are appended to the state without a lookup; known ones are
    matched. Either way every state table keeps one row per key, with the latest value, even
    when one lead's workspace and connection events are confirmed in different flushes."""
    from destinations.outreach_magic import staging

    monkeypatch.setattr(staging, "FLUSH_ITEMS", 7)
    header = ["lead_email", "lead_first_name", "workspace_id", "import_name", "sender", "linkedin_connection_level",
              "company_domain", "company_name"]

    def rows(tag: str, workspaces: int) -> list[list[str]]:
        out = [[f"p{i}@example.com", f"P{i}{tag}", f"{w:024x}", f"list {w}{tag}",
                f"https://www.linkedin.com/in/sender-{w % 2}", str(1 + w % 2),
                f"c{i % 5}.example", f"C{i % 5}{tag}"] for i in range(30) for w in range(workspaces)]
        out += [["", "", f"{0:024x}", f"alone {k}{tag}", "", "", f"solo{k}.example", f"Solo{k}"] for k in range(4)]
        return out

    def check(con: Any, leads_ws: int) -> None:
        for table, key in (("lead_state", "entity_id"), ("company_state", "entity_id"),
                           ("lead_ws_state", "entity_id, workspace_id"),
                           ("company_ws_state", "entity_id, workspace_id"), ("conn_state", "entity_id, sender")):
            total, distinct = con.execute(
                f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {key} FROM {table})) FROM {table}"
            ).fetchall()[0]
            assert total == distinct, table
        assert con.execute("SELECT count(*) FROM lead_ws_state").fetchall() == [(30 * leads_ws,)]
        assert con.execute("SELECT count(*) FROM conn_state").fetchall() == [(30 * 2,)]
        assert con.execute("SELECT count(*) FROM company_ws_state").fetchall() == [(4,)]
        assert con.execute("SELECT count(*), count(DISTINCT value) FROM identity").fetchall() == [(39, 39)]

    src = write_csv(tmp_path / "ws.csv", header, rows("", 3))
    state = tmp_path / "s.duckdb"
    first = sync(sandbox_server.url, state, [src], batch_size=5, constants={})
    assert first.invalid == 0 and first.failed == 0 and first.applied == first.events
    con = duckdb.connect(str(state), read_only=True)
    check(con, 3)
    con.close()
    # Known entities now: new names, one more workspace each, new import names everywhere.
    write_csv(src, header, rows("+", 4))
    second = sync(sandbox_server.url, state, [src], batch_size=5, constants={})
    assert second.failed == 0 and second.applied == second.events > 0
    con = duckdb.connect(str(state), read_only=True)
    check(con, 4)
    assert con.execute("SELECT DISTINCT import_name LIKE '%+' FROM lead_ws_state").fetchall() == [(True,)]
    assert con.execute("SELECT DISTINCT lead_first_name LIKE '%+' FROM lead_state").fetchall() == [(True,)]
    con.close()
    again = sync(sandbox_server.url, state, [src], retry_rejected=True, constants={})
    assert again.events == 0


def test_a_failed_background_flush_claims_nothing_it_did_not_write(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background thread's error reaches the delivery (which stops); confirmations it did
    not write stay unclaimed and are sent again when dlt retries the load job, while those
    written before, and the buffer confirmed after, stay written (found unchanged)."""
    from destinations.outreach_magic import staging

    monkeypatch.setattr(staging, "FLUSH_ITEMS", 50)
    original = staging.Staging._write_transaction
    calls = []

    def failing_second(self: Any, applied: np.ndarray, **kwargs: Any) -> None:
        calls.append(len(applied))
        if len(calls) == 2:
            raise duckdb.IOException("disk full (injected)")
        original(self, applied, **kwargs)

    monkeypatch.setattr(staging.Staging, "_write_transaction", failing_second)
    rows = [[f"q{i}@example.com", f"Q{i}"] for i in range(300)]
    src = write_csv(tmp_path / "q.csv", ["lead_email", "lead_first_name"], rows)
    state = tmp_path / "s.duckdb"
    report = sync(sandbox_server.url, state, [src], batch_size=25, concurrency=2)
    assert len(calls) > 2, "the injected failure did not happen"
    # dlt retried the failed job: what the first attempt wrote was unchanged, the rest sent
    assert report.exit_code == 0 and report.failed == 0
    assert 50 <= report.unchanged < 300 and report.unchanged + report.events == 300
    con = duckdb.connect(str(state), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT entity_id) FROM lead_state").fetchall() == [(300, 300)]
    con.close()
    assert len(sandbox_leads(sandbox_server.url, KEY)) == 300
    monkeypatch.setattr(staging.Staging, "_write_transaction", original)
    again = sync(sandbox_server.url, state, [src], retry_rejected=True)
    assert again.events == 0 and again.unchanged == 300


def test_event_json_is_byte_for_byte_what_earlier_versions_wrote() -> None:
    """Content hashes of API-rejected events are stored (``rejected_events``) and compared
    on later runs, so the event JSON must not change by a byte across versions: checked
    against the form earlier versions used (a CASE per field), over rows with empty fields,
    tags, quotes, backslashes and non-ASCII text."""
    from destinations.outreach_magic import staging

    st = staging.Staging.__new__(staging.Staging)
    st.present = ["lead_email", "lead_first_name", "tags", "company_name", "import_name"]
    earlier = "concat('{\"event\":\"update_attributes\"'" + "".join(
        f", CASE WHEN {c} IS NOT NULL THEN ',\"{c}\":' || to_json({c}) END" for c in st.present) + ", '}')"
    con = duckdb.connect()
    con.execute("CREATE TABLE t (lead_email VARCHAR, lead_first_name VARCHAR, tags VARCHAR[], company_name VARCHAR, "
                "import_name VARCHAR)")
    con.execute("""INSERT INTO t VALUES
        ('a@example.com', 'Zoë "Z" O\\Brien', ['x', 'y'], 'Acme, Inc.', NULL),
        (NULL, NULL, NULL, NULL, NULL),
        (NULL, 'Ünïcode ✓', NULL, NULL, 'list "2"'),
        ('b@example.com', NULL, [], NULL, 'tab	here')""")
    now_sql = st._json_sql()
    rows = con.execute(f"SELECT {now_sql}, {earlier}, hash({now_sql}) = hash({earlier}) FROM t").fetchall()
    for now, before, same_hash in rows:
        assert now == before and same_hash
        assert json.loads(now)["event"] == "update_attributes"
    assert rows[1][0] == '{"event":"update_attributes"}'
