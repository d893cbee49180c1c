"""The sink's pipeline: a slice is resolved while the previous one is delivered, against the
state plus the previous slice's events taken as confirmed; writes land in order on one
writer thread; a slice of identifiers the state cannot hold skips the identity join.

Each test checks what must hold whatever the timing: one person is one entity, the state
says what the API confirmed, and a speculative resolve whose guess failed is redone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pytest

from destinations.outreach_magic import staging
from destinations.outreach_magic.client import DeliveryClient, DeliveryStats
from destinations.outreach_magic.identity_filter import IdentityFilter
from tests.sandbox_helpers import lead_by, sandbox_companies, sandbox_leads
from tests.test_sync import KEY, sync, write_csv

UNKNOWN_ID = "aaaaaaaaaaaaaaaaaaaaaaaa"


def _recorded_events(monkeypatch: pytest.MonkeyPatch) -> list[list[dict[str, Any]]]:
    """The events the delivery client pulls, as sent: one list per delivery (slice), in order."""
    sent: list[list[dict[str, Any]]] = []
    original = DeliveryClient.deliver_batches

    def recording(self: DeliveryClient, batches: Any, *args: Any, **kwargs: Any) -> Any:
        mine: list[dict[str, Any]] = []
        sent.append(mine)

        def pulled() -> Any:
            for batch in batches:
                mine.extend(orjson.loads(batch.body()))
                yield batch

        return original(self, pulled(), *args, **kwargs)

    monkeypatch.setattr(DeliveryClient, "deliver_batches", recording)
    return sent


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(staging.Staging, name)

    def counting(self: staging.Staging, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(staging.Staging, name, counting)
    return calls


def test_the_next_slice_is_diffed_against_the_one_in_flight(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lead in two slices: the second is resolved while the first is delivered, and its
    writes are held back so they surely land after that resolve. The second slice still
    finds the same entity and sends only the attribute that changed, as if it had waited."""
    original_write = staging.Staging._write_applied

    def slow_write(self: staging.Staging, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.2)
        original_write(self, *args, **kwargs)

    monkeypatch.setattr(staging.Staging, "_write_applied", slow_write)
    sent = _recorded_events(monkeypatch)
    speculative = _count_calls(monkeypatch, "accept")
    header = ["lead_email", "lead_first_name", "lead_job_title", "company_domain", "company_name"]
    rows = [["ada@example.com", "Ada", "Engineer", "acme.example", "Acme"],
            ["bo@example.com", "Bo", "Analyst", "acme.example", "Acme"],
            ["ada@example.com", "Ada", "CTO", "acme.example", "Acme Inc"],
            ["cy@example.com", "Cy", "Chef", "acme.example", "Acme Inc"]]
    src = write_csv(tmp_path / "two.csv", header, rows)
    state = tmp_path / "s.duckdb"
    report = sync(sandbox_server.url, state, [src], stage_rows=2, constants={})
    assert report.exit_code == 0 and report.applied == report.events == 4
    assert speculative, "the second slice was not resolved against the first one in flight"
    assert len(sent) == 2
    (second_ada,) = [e for e in sent[1] if e.get("lead_email") == "ada@example.com"]
    assert second_ada.get("lead_job_title") == "CTO" and "lead_first_name" not in second_ada
    company = [e["company_name"] for events in sent for e in events if e.get("company_name")]
    assert company == ["Acme", "Acme Inc"]  # each change once
    con = duckdb.connect(str(state), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT entity_id) FROM lead_state").fetchall() == [(3, 3)]
    assert con.execute(
        "SELECT lead_first_name, lead_job_title FROM lead_state JOIN identity USING (entity_id) "
        "WHERE value = 'ada@example.com'").fetchall() == [("Ada", "CTO")]
    assert con.execute("SELECT count(*) FROM company_state").fetchall() == [(1,)]
    con.close()
    (ada,) = lead_by(sandbox_leads(sandbox_server.url, KEY), "lead_email", "ada@example.com")
    assert ada["attributes"]["lead_job_title"] == "CTO"
    again = sync(sandbox_server.url, state, [src], stage_rows=2, constants={})
    assert again.events == 0 and again.requests == 0


def test_a_slice_guessed_against_a_rejected_event_is_resolved_again(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first slice's event names an unknown unified id (the API rejects it); the second
    slice has that id with an email. Resolved while the first was in flight, the second
    took the id as known through the first; once the rejection is in, it is resolved
    again, so the id is written to the index with the entity the API did confirm."""
    redone = _count_calls(monkeypatch, "re_resolve")
    header = ["unified_lead_id", "lead_email", "lead_first_name"]
    rows = [[UNKNOWN_ID, "", "Ghost"], ["", "bo@example.com", "Bo"],
            [UNKNOWN_ID, "zed@example.com", "Zed"], ["", "cy@example.com", "Cy"]]
    src = write_csv(tmp_path / "rejected.csv", header, rows)
    state = tmp_path / "s.duckdb"
    report = sync(sandbox_server.url, state, [src], stage_rows=2, constants={})
    assert (report.applied, report.rejected, report.exit_code) == (3, 1, 1)
    assert redone == [1]
    con = duckdb.connect(str(state), read_only=True)
    ids = dict(con.execute("SELECT value, entity_id FROM identity WHERE entity_type = 'lead'").fetchall())
    assert ids[UNKNOWN_ID] == ids["zed@example.com"]
    assert len(ids) == 4 and len(set(ids.values())) == 3
    assert con.execute("SELECT count(*), count(DISTINCT entity_id) FROM lead_state").fetchall() == [(3, 3)]
    assert con.execute("SELECT count(*) FROM lead_state WHERE entity_id NOT IN (SELECT entity_id FROM identity)"
                       ).fetchall() == [(0,)]
    con.close()
    again = sync(sandbox_server.url, state, [src], stage_rows=2, constants={})
    assert again.events == 0 and again.skipped_rejected == 1


def test_transient_failures_in_flight_leave_one_entity_per_person_and_a_rerun_sends_the_rest(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    """Requests fail at random and are not retried: slices resolved against a slice some of
    whose events then failed are resolved again. Each person stays one entity in the state;
    the next runs send exactly what was not confirmed, until nothing is left."""
    sb = sandbox_factory(error_rate=0.25, seed=7)
    header = ["lead_email", "lead_linkedin_url", "lead_job_title"]
    people = 40
    rows = [[f"p{i}@example.com", "", f"Title {i}"] for i in range(people)]
    rows += [[f"p{i}@example.com", f"https://www.linkedin.com/in/p-{i}", f"Lead {i}"] for i in range(people)]
    src = write_csv(tmp_path / "flaky.csv", header, rows)
    state = tmp_path / "s.duckdb"
    runs = []
    for _ in range(12):
        runs.append(sync(sb.url, state, [src], stage_rows=9, batch_size=3, max_attempts=1, constants={}))
        if not runs[-1].failed and not runs[-1].events:
            break
    assert runs[0].failed > 0, "no request failed: the test proves nothing"
    assert not runs[-1].events and not runs[-1].failed
    con = duckdb.connect(str(state), read_only=True)
    assert con.execute("SELECT count(DISTINCT entity_id), count(*) FROM identity").fetchall() == [
        (people, people * 2)]
    assert con.execute("SELECT count(*), count(DISTINCT entity_id) FROM lead_state").fetchall() == [
        (people, people)]
    con.close()
    leads = sandbox_leads(sb.url, KEY)
    assert len(leads) == people
    for i in range(people):
        (lead,) = lead_by(leads, "lead_email", f"p{i}@example.com")
        assert lead["identifiers"]["lead_linkedin_url"] == [f"https://www.linkedin.com/in/p-{i}/"]
        assert lead["attributes"]["lead_job_title"] == f"Lead {i}"  # the later row's value, after all runs


def test_a_later_row_applied_after_an_earlier_one_failed_is_not_overwritten_by_the_rerun(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person's first row is in a slice whose delivery fails (retries exhausted), the
    later row in a slice that is applied. No row is hashed after the failure, so the rerun
    stages both rows, the later one wins the merge, and the API keeps the later values
    (hashing the later row would leave the rerun only the earlier one, whose stale title
    and company name would overwrite them)."""
    from destinations.outreach_magic.client import Outcomes

    original = DeliveryClient.deliver_batches
    deliveries: list[int] = []

    def first_fails(self: DeliveryClient, batches: Any, on_outcomes: Any, **kwargs: Any) -> Any:
        deliveries.append(1)
        if len(deliveries) > 1:
            return original(self, batches, on_outcomes, **kwargs)
        stats = DeliveryStats()
        for batch in batches:  # as if every attempt had failed
            on_outcomes(Outcomes(batch.keys, failed_reason="retries exhausted after HTTP 503"))
            stats.failed += len(batch)
        return stats

    monkeypatch.setattr(DeliveryClient, "deliver_batches", first_fails)
    header = ["lead_email", "lead_job_title", "company_domain", "company_name"]
    rows = [["ada@example.com", "Engineer", "acme.example", "Acme Old"], ["bo@example.com", "Analyst", "", ""],
            ["ada@example.com", "CTO", "acme.example", "Acme New"], ["cy@example.com", "Chef", "", ""]]
    src = write_csv(tmp_path / "later.csv", header, rows)
    state = tmp_path / "s.duckdb"
    first = sync(sandbox_server.url, state, [src], stage_rows=2, constants={})
    assert first.failed == 2 and first.applied == 2
    monkeypatch.setattr(DeliveryClient, "deliver_batches", original)
    second = sync(sandbox_server.url, state, [src], stage_rows=2, constants={})
    # nothing was hashed after the failure: every row is staged again, bo's is sent
    assert second.failed == 0 and second.rows_skipped_unchanged == 0
    assert lead_by(sandbox_leads(sandbox_server.url, KEY), "lead_email", "bo@example.com")
    (ada,) = lead_by(sandbox_leads(sandbox_server.url, KEY), "lead_email", "ada@example.com")
    assert ada["attributes"]["lead_job_title"] == "CTO"
    assert [c["attributes"]["company_name"] for c in sandbox_companies(sandbox_server.url, KEY)] == ["Acme New"]
    third = sync(sandbox_server.url, state, [src], stage_rows=2, constants={})
    assert third.events == 0 and third.rows_skipped_unchanged == 4


def test_a_first_sync_of_new_leads_never_joins_the_identity_index(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identity filter knows the index holds none of a new slice's identifiers, so the
    join is skipped; a slice naming a lead synced before joins it (and finds the lead)."""
    joins: list[str] = []
    original = staging.Staging._resolve

    def watching(self: staging.Staging, id_cols: Any, prefix: str, *args: Any) -> None:
        con = self.con

        class Spy:
            def execute(self, sql: str, *a: Any) -> Any:
                if "JOIN identity" in sql:
                    joins.append(prefix)
                return con.execute(sql, *a)

            def __getattr__(self, name: str) -> Any:
                return getattr(con, name)

        self.con = Spy()  # type: ignore[assignment]
        try:
            original(self, id_cols, prefix, *args)
        finally:
            self.con = con

    monkeypatch.setattr(staging.Staging, "_resolve", watching)
    src = write_csv(tmp_path / "new.csv", ["lead_email", "lead_first_name"],
                    [[f"n{i}@example.com", f"N{i}"] for i in range(30)])
    state = tmp_path / "s.duckdb"
    first = sync(sandbox_server.url, state, [src], stage_rows=10, constants={})
    assert first.applied == 30 and joins == []
    write_csv(src, ["lead_email", "lead_first_name"], [["n3@example.com", "Renamed"], ["new@example.com", "New"]])
    second = sync(sandbox_server.url, state, [src], constants={})
    assert second.applied == 2 and joins == ["l"]
    con = duckdb.connect(str(state), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT entity_id) FROM lead_state").fetchall() == [(31, 31)]
    con.close()


# ------------------------------------------------------------------ the identity filter
def _hashes(*values: str) -> np.ndarray:
    con = duckdb.connect()
    return con.execute("SELECT hash('lead', 'lead_email', v) AS h FROM unnest(?) t(v)", [list(values)]
                       ).fetchnumpy()["h"]


def test_identity_filter_says_none_only_for_hashes_it_never_saw(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    con.execute("CREATE TABLE identity (entity_type VARCHAR, kind VARCHAR, value VARCHAR, entity_id BIGINT, "
                "confirmed_at TIMESTAMP)")
    con.execute("INSERT INTO identity VALUES ('lead', 'lead_email', 'old@example.com', 1, now())")
    f = IdentityFilter()
    assert f.may_hold_any(_hashes("x@example.com")), "before loading it knows nothing, so it says maybe"
    f.load(con)
    assert f.may_hold_any(_hashes("new@example.com", "old@example.com"))
    assert not f.may_hold_any(_hashes("new@example.com", "other@example.com"))
    f.add(_hashes("new@example.com"))
    assert f.may_hold_any(_hashes("other@example.com", "new@example.com"))
    # another kind or entity type is another hash
    other_type = con.execute("SELECT hash('company', 'lead_email', 'old@example.com') AS h").fetchnumpy()["h"]
    assert not f.may_hold_any(other_type)


def test_identity_filter_keeps_every_hash_across_many_additions_and_gives_up_past_its_size() -> None:
    rng = np.random.default_rng(3)
    f = IdentityFilter(max_items=2_500_000)
    f._loaded = True  # an empty index
    added = [rng.integers(0, 2**63, 150_000, dtype=np.uint64) for _ in range(12)]
    for batch in added:
        assert not f.may_hold_any(batch)
        f.add(batch)
    assert all(f.may_hold_any(batch[k:k + 1]) for batch in added for k in (0, 77_777, 149_999))
    assert not f.may_hold_any(rng.integers(0, 2**63, 10_000, dtype=np.uint64))
    f.add(rng.integers(0, 2**63, 1_000_000, dtype=np.uint64))  # past max_items: memory stays bounded
    assert f.disabled and f.may_hold_any(np.array([1], dtype=np.uint64))
