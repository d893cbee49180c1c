"""The known-contacts check against a state written by a real sync into the sandbox.

One module-wide state: a sync of five people/companies through the sandbox. Every test
then only reads it, and the expected rows are written out by hand (statuses, matched
kinds, reasons) with the timestamps taken from the state itself.
"""

from __future__ import annotations

import csv
import hashlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from destinations.outreach_magic.exceptions import ConfigurationError
from destinations.outreach_magic.known import STATUS_COLUMNS, KnownIndex, check_known, skip_known
from pipelines.cli import main as cli_main
from pipelines.known import write_rows
from pipelines.runner import SyncRequest, run_sync
from tests.sandbox_helpers import sandbox_reset, sandbox_stats

KEY = "test-key"
SYNCED = [  # what the connector synced (canonical column names)
    ["lead_email", "lead_linkedin_url", "lead_sales_navigator_url", "lead_first_name", "company_domain",
     "company_name"],
    ["ann@alpha.com", "", "", "Ann", "alpha.com", "Alpha"],
    ["", "https://www.linkedin.com/in/bob-builder/", "", "Bob", "", ""],
    ["", "", "https://www.linkedin.com/sales/lead/ACwAAA1b2C3,NAME_SEARCH,x", "Cat", "", ""],
    ["eve@epsilon.com", "https://www.linkedin.com/in/eve-e/", "", "Eve", "epsilon.com", "Epsilon"],
]
LIST_HEADER = ["owner", "lead_email", "lead_linkedin_url", "lead_sales_navigator_url", "company_domain", "note"]
# (original row, expected status, matched on, whose last sync (kind, value) or None, reason)
CASES: list[tuple[list[str], str, str, tuple[str, str] | None, str]] = [
    (["o1", "  Ann@Alpha.com ", "", "", "", "email only, other case"],
     "known_lead", "lead_email", ("lead_email", "ann@alpha.com"), ""),
    (["o2", "", "http://uk.linkedin.com/in/Bob-Builder?trk=abc", "", "", "LinkedIn only, other spelling"],
     "known_lead", "lead_linkedin_url", ("lead_linkedin_url", "https://www.linkedin.com/in/bob-builder/"), ""),
    (["o3", "", "", "https://www.linkedin.com/sales/people/ACwAAA1b2C3,NAME_SEARCH,zz", "", "Sales Navigator"],
     "known_lead", "lead_sales_navigator_url",
     ("lead_sales_navigator_url", "https://www.linkedin.com/sales/lead/ACwAAA1b2C3"), ""),
    (["o4", "new.person@alpha.com", "", "", "https://www.Alpha.com/about", "company only"],
     "known_company", "company_domain", ("company_domain", "alpha.com"), ""),
    (["o5", "eve@epsilon.com", "https://www.linkedin.com/in/eve-e", "", "", "both known: email has priority"],
     "known_lead", "lead_email", ("lead_email", "eve@epsilon.com"), ""),
    (["o6", "bobby@other.com", "linkedin.com/in/bob-builder/details/", "", "", "new email, known profile"],
     "known_lead", "lead_linkedin_url", ("lead_linkedin_url", "https://www.linkedin.com/in/bob-builder/"), ""),
    (["o7", "bob@", "https://www.linkedin.com/in/bob-builder", "", "", "broken email, known profile"],
     "known_lead", "lead_linkedin_url", ("lead_linkedin_url", "https://www.linkedin.com/in/bob-builder/"), ""),
    (["o8", "zed@zeta.dev", "", "", "zeta.dev", "new"], "new", "", None, ""),
    (["o9", "n/a", "", "", "alpha.com", "placeholder email at a known company"], "invalid", "", None,
     "lead_email 'n/a': not an email address (placeholder)"),
    (["o10", "", "", "", "", "no identifier"], "invalid", "", None, "no lead or company identifier"),
    (["o11", "ann@alpha.com", "https://lnkd.in/xyz", "", "", "known email wins over a broken URL"],
     "known_lead", "lead_email", ("lead_email", "ann@alpha.com"), ""),
]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


@pytest.fixture(scope="module")
def synced_state(_session_sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state file written by a real sync of :data:`SYNCED` into the sandbox."""
    folder = tmp_path_factory.mktemp("known")
    sandbox_reset(_session_sandbox.url, KEY)
    report = run_sync(SyncRequest(sources=[str(write_csv(folder / "synced.csv", SYNCED))], api_key=KEY,
                                  base_url=_session_sandbox.url, state_path=str(folder / "state.duckdb")))
    assert report.exit_code == 0 and report.applied == 4, report.error
    yield folder / "state.duckdb"


@pytest.fixture
def prospects(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "prospects.csv", [LIST_HEADER] + [case[0] for case in CASES])


def last_synced(state: Path, kind: str, value: str) -> datetime:
    """The oracle for om_last_synced_at: the matched entity's state row, read directly."""
    con = duckdb.connect(str(state), read_only=True)
    table = "lead_state" if kind.startswith("lead") else "company_state"
    rows = con.execute(f"SELECT s.confirmed_at FROM identity i JOIN {table} s USING (entity_id) "
                       "WHERE i.kind = ? AND i.value = ?", [kind, value]).fetchall()
    con.close()
    assert len(rows) == 1, (kind, value)
    return rows[0][0]


def expected_rows(state: Path, statuses: set[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for original, status, matched, whose, reason in CASES:
        if statuses is not None and status not in statuses:
            continue
        row: dict[str, Any] = {k: (v or None) for k, v in zip(LIST_HEADER, original, strict=True)}
        row.update(om_status=status, om_matched_on=matched or None,
                   om_last_synced_at=last_synced(state, *whose) if whose else None, om_reason=reason or None)
        out.append(row)
    return out


def read_output(path: Path) -> list[dict[str, Any]]:
    """Rows of an output file as dicts of Python values, empty cells as None, timestamps parsed."""
    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    elif path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = [{k: (v or None) for k, v in r.items()} for r in csv.DictReader(fh)]
    for r in rows:
        if isinstance(r["om_last_synced_at"], str):
            r["om_last_synced_at"] = datetime.fromisoformat(r["om_last_synced_at"])
    return rows


# ------------------------------------------------------------------------ the function
def test_each_kind_of_match_gets_its_status_kind_timestamp_and_reason(synced_state: Path, prospects: Path) -> None:
    result = check_known(str(prospects), synced_state)
    rows = result.table.drop_columns(["_om_source", "_om_row"]).to_pylist()
    assert rows == expected_rows(synced_state)
    assert result.counts == {"known_lead": 7, "known_company": 1, "new": 1, "invalid": 2}
    assert result.credits_saved == 7
    assert result.matched_on == {"lead_email": 3, "lead_linkedin_url": 3, "lead_sales_navigator_url": 1,
                                 "company_domain": 1}
    assert [(i.row, i.column, i.value) for i in result.issues] == [(9, "lead_email", "n/a")]
    assert result.table.column("_om_row").to_pylist() == list(range(1, len(CASES) + 1))
    assert result.state.leads == 4 and result.state.companies == 2
    assert "knows only" in result.state.describe() and str(synced_state) in result.state.describe()


def test_an_arrow_table_with_tool_columns_goes_through_the_same_preset_as_sync(synced_state: Path) -> None:
    apollo = pa.table({
        "First Name": ["Ann", "Bob", "Zed"],
        "Email": ["ANN@alpha.com", None, "zed@zeta.dev"],
        "Person Linkedin Url": [None, "https://de.linkedin.com/in/bob-builder/", None],
        "Website": ["http://alpha.com", None, "zeta.dev"],
        "Company Name for Emails": ["Alpha", None, "Zeta"],
        "# Employees": [10, None, 3],
    })
    result = check_known(apollo, synced_state)
    assert result.sources[0].preset == "apollo"
    assert result.statuses.column("om_status").to_pylist() == ["known_lead", "known_lead", "new"]
    assert result.statuses.column("om_matched_on").to_pylist() == ["lead_email", "lead_linkedin_url", None]
    assert result.table.column("# Employees").to_pylist() == [10, None, 3]  # original types kept


def test_several_sources_keep_the_union_of_their_columns(synced_state: Path, tmp_path: Path) -> None:
    a = write_csv(tmp_path / "a.csv", [["lead_email", "extra_a"], ["ann@alpha.com", "x"]])
    b = write_csv(tmp_path / "b.csv", [["company_domain", "extra_b"], ["epsilon.com", "y"], ["nope.org", "z"]])
    result = check_known(str(tmp_path / "*.csv"), synced_state, preset="canonical")  # a glob: one source per file
    assert [Path(s.spec) for s in result.sources] == [a, b]
    assert [s.rows for s in result.sources] == [1, 2]
    view = result.table.select(["_om_source", "lead_email", "extra_a", "company_domain", "extra_b", "om_status"])
    assert view.to_pylist() == [
        {"_om_source": "a.csv", "lead_email": "ann@alpha.com", "extra_a": "x", "company_domain": None,
         "extra_b": None, "om_status": "known_lead"},
        {"_om_source": "b.csv", "lead_email": None, "extra_a": None, "company_domain": "epsilon.com",
         "extra_b": "y", "om_status": "known_company"},
        {"_om_source": "b.csv", "lead_email": None, "extra_a": None, "company_domain": "nope.org",
         "extra_b": "z", "om_status": "new"},
    ]


def test_rechecking_an_earlier_output_replaces_its_statuses(
    synced_state: Path, prospects: Path, tmp_path: Path
) -> None:
    first = check_known(str(prospects), synced_state)
    write_rows(first.table, tmp_path / "checked.csv")
    again = check_known(str(tmp_path / "checked.csv"), synced_state)
    assert again.table.column_names == first.table.column_names
    assert again.table.column("om_status").to_pylist() == [case[1] for case in CASES]


def test_chunking_does_not_change_the_answer(synced_state: Path, prospects: Path) -> None:
    whole = check_known(str(prospects), synced_state)
    chunked = check_known(str(prospects), synced_state, chunk_rows=2, batch_rows=3)
    assert chunked.table.equals(whole.table)


def test_last_synced_is_the_last_confirmed_sync_of_the_lead_not_when_its_email_was_first_seen(
    sandbox_server: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state.duckdb"
    for name in ("Ann", "Annie"):
        rows = [["lead_email", "lead_first_name"], ["ann@alpha.com", name]]
        report = run_sync(SyncRequest(sources=[str(write_csv(tmp_path / f"{name}.csv", rows))], api_key=KEY,
                                      base_url=sandbox_server.url, state_path=str(state)))
        assert report.applied == 1
    con = duckdb.connect(str(state), read_only=True)
    first_seen, last = con.execute("SELECT i.confirmed_at, s.confirmed_at FROM identity i JOIN lead_state s "
                                   "USING (entity_id) WHERE i.value = 'ann@alpha.com'").fetchall()[0]
    con.close()
    assert last > first_seen
    result = check_known(pa.table({"lead_email": ["ANN@alpha.com"]}), state, preset="canonical")
    assert result.table.column("om_last_synced_at").to_pylist() == [last]


def test_a_missing_state_file_is_a_clear_error_and_is_not_created(tmp_path: Path, prospects: Path) -> None:
    with pytest.raises(ConfigurationError, match="no state file"):
        check_known(str(prospects), tmp_path / "none.duckdb")
    assert not (tmp_path / "none.duckdb").exists()


# ------------------------------------------------------------------------ offline, read-only
def test_the_check_sends_nothing_and_leaves_the_state_file_unchanged(
    synced_state: Path, prospects: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _session_sandbox: Any
) -> None:
    def fingerprint() -> tuple[str, int, list[str]]:
        data = synced_state.read_bytes()
        return hashlib.sha256(data).hexdigest(), synced_state.stat().st_mtime_ns, sorted(
            p.name for p in synced_state.parent.iterdir())

    requests_before = sandbox_stats(_session_sandbox.url, KEY)["requests"]
    before = fingerprint()

    def no_network(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the known check opened a network connection")

    with monkeypatch.context() as m:
        m.setattr(socket.socket, "connect", no_network)
        m.setattr(socket.socket, "connect_ex", no_network)
        code = cli_main(["known", str(prospects), "--state", str(synced_state),
                         "--out-new", str(tmp_path / "n.csv"), "--out-known", str(tmp_path / "k.csv")])
    assert code == 0
    assert fingerprint() == before
    assert sandbox_stats(_session_sandbox.url, KEY)["requests"] == requests_before


def test_a_state_a_sync_is_writing_is_refused_with_a_clear_message(synced_state: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy.duckdb"
    busy.write_bytes(synced_state.read_bytes())
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(busy)!r}); print('ok', flush=True); "
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        with pytest.raises(ConfigurationError, match="a sync may be writing it"):
            check_known(pa.table({"lead_email": ["ann@alpha.com"]}), busy)
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------ the CLI
@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_cli_outputs_equal_the_expected_rows_column_for_column(
    ext: str, synced_state: Path, prospects: Path, tmp_path: Path
) -> None:
    new, known = tmp_path / f"new.{ext}", tmp_path / f"known.{ext}"
    code = cli_main(["known", str(prospects), "--state", str(synced_state),
                     "--out-new", str(new), "--out-known", str(known)])
    assert code == 0
    expected_known = expected_rows(synced_state, {"known_lead", "known_company"})
    expected_new = expected_rows(synced_state, {"new", "invalid"})
    for path, expected in ((known, expected_known), (new, expected_new)):
        rows = read_output(path)
        assert list(rows[0]) == [*LIST_HEADER, *STATUS_COLUMNS]
        assert rows == expected


def test_cli_summary_names_the_state_and_the_credits_saved(
    synced_state: Path, prospects: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["known", str(prospects), "--state", str(synced_state)]) == 0
    text = capsys.readouterr().out
    assert f"state file {synced_state}" in text and "knows only" in text
    assert "7 of 11 rows" in text and "1 more need no company enrichment" in text
    assert cli_main(["known", str(prospects), "--state", str(synced_state), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"known_lead": 7, "known_company": 1, "new": 1, "invalid": 2}
    assert summary["credits_saved"] == 7 and summary["state_path"] == str(synced_state)
    assert summary["target"].startswith("http://127.0.0.1")


def test_cli_mapping_file_names_the_identifier_columns(synced_state: Path, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "crm.csv", [["Mail Pro", "Profil"], ["ann@alpha.com", ""],
                                             ["", "https://www.linkedin.com/in/eve-e/"], ["x@y.org", ""]])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[columns]\nlead_email = "Mail Pro"\nlead_linkedin_url = "Profil"\n', encoding="utf-8")
    out = tmp_path / "all_known.csv"
    assert cli_main(["known", str(source), "--mapping", str(mapping), "--state", str(synced_state),
                     "--out-known", str(out)]) == 0
    assert [(r["Mail Pro"], r["Profil"], r["om_matched_on"]) for r in read_output(out)] == [
        ("ann@alpha.com", None, "lead_email"), (None, "https://www.linkedin.com/in/eve-e/", "lead_linkedin_url")]


def test_cli_without_a_state_file_exits_2(tmp_path: Path, prospects: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["known", str(prospects), "--state", str(tmp_path / "x.duckdb")]) == 2
    assert "no state file" in capsys.readouterr().err


# ------------------------------------------------------------------------ dlt
def test_the_transformer_drops_known_leads_before_an_enrichment_step(synced_state: Path) -> None:
    rows = [dict(zip(LIST_HEADER, case[0], strict=True)) for case in CASES]

    @dlt.resource(name="prospects")
    def prospect_rows() -> Iterator[list[dict[str, Any]]]:
        yield [{k: v or None for k, v in r.items()} for r in rows]

    enriched: list[str] = []

    @dlt.transformer
    def enrich(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        enriched.extend(item["owner"] for item in items)
        yield items

    out = list(prospect_rows() | skip_known(state_path=str(synced_state)) | enrich)
    kept = [case for case in CASES if case[1] != "known_lead"]
    assert enriched == [case[0][0] for case in kept]
    assert [r["om_status"] for r in out] == [case[1] for case in kept]


def test_the_transformer_keeps_arrow_and_maps_raw_columns_with_a_preset(synced_state: Path) -> None:
    table = pa.table({"Email": ["ann@alpha.com", "x@y.org"], "Website": [None, "epsilon.com"]})
    out = list(dlt.resource([table], name="raw") | skip_known(state_path=str(synced_state), drop=(),
                                                                preset="generic"))
    assert len(out) == 1 and isinstance(out[0], pa.Table)
    assert out[0].column("om_status").to_pylist() == ["known_lead", "known_company"]
    assert out[0].column_names == ["Email", "Website", *STATUS_COLUMNS]


def test_index_check_on_canonical_columns_needs_only_the_identifiers_it_has(synced_state: Path) -> None:
    with KnownIndex(synced_state) as index:
        statuses, bad = index.check(pa.table({"lead_email": ["eve@epsilon.com", "bad", None]}))
    assert statuses.column("om_status").to_pylist() == ["known_lead", "invalid", "invalid"]
    assert list(bad) == [1]
