"""The example pipelines against the real sandbox (and the real PostgreSQL server for the warehouse one).

Each example must do what its docstring promises: the right leads and companies end up in
the sandbox, and a second run over unchanged data sends nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.examples import duckdb_file, enrichment_export, sql_model, warehouse_postgres
from tests.sandbox_helpers import lead_by, sandbox_companies, sandbox_leads, sandbox_stats

KEY = "test-key"
WS = "65f1a2b3c4d5e6f7890a1b2c"
ROOT = Path(__file__).parent.parent
EXAMPLES = ("enrichment_export", "warehouse_postgres", "duckdb_file", "sql_model", "dlt_pipeline")
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_has_a_help_page(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    module = importlib.import_module(f"pipelines.examples.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"pipelines.examples.{name}" in out and "--state" in out and "--sandbox" in out


def test_an_example_runs_as_a_module_into_the_embedded_sandbox(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pipelines.examples.sql_model", "--sample", str(tmp_path / "crm.duckdb"),
           "--sandbox", "--json", "--state", str(tmp_path / "s.duckdb"), "--workspace-id", WS]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout)
    assert proc.returncode == report["exit_code"] == 0, proc.stderr
    assert report["applied"] == report["events"] == 4


def test_enrichment_export_syncs_the_export_then_sends_nothing(sandbox_server: Any, tmp_path: Path) -> None:
    kw: dict[str, Any] = {"api_key": KEY, "base_url": sandbox_server.url, "state_path": str(tmp_path / "s.duckdb"),
                          "constants": {"workspace_id": WS}}
    first = enrichment_export.sync_export(enrichment_export.BUNDLED_EXPORT, **kw)
    assert first.error is None and first.sources[0].preset == "apollo"
    assert first.applied == first.events > 0
    leads = sandbox_leads(sandbox_server.url, KEY)
    # Ana Souza appears twice in the export (case and URL variants): one lead
    assert len(lead_by(leads, "lead_email", "ana.souza@exemplo.example")) == 1
    requests = sandbox_stats(sandbox_server.url, KEY)["requests"]
    second = enrichment_export.sync_export(enrichment_export.BUNDLED_EXPORT, **kw)
    assert second.events == 0 and second.rows_skipped_unchanged == second.rows_read == first.rows_read
    assert sandbox_stats(sandbox_server.url, KEY)["requests"] == requests


# ----------------------------------------------------------------------------- PostgreSQL
def _pg_connect() -> Any:
    """An autocommit connection to the machine's PostgreSQL (database ``test``), or a skip."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        con = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    con.autocommit = True
    return con


@pytest.fixture
def pg_table() -> Iterator[tuple[Any, str]]:
    """A uniquely named table in the real PostgreSQL server, dropped afterwards."""
    con = _pg_connect()
    name = f"om_crm_{uuid.uuid4().hex[:10]}"
    with con.cursor() as cur:
        cur.execute(f"CREATE TABLE public.{name} (id serial PRIMARY KEY, lead_email text, lead_first_name text, "
                    "lead_job_title text, company_domain text, updated_at timestamptz NOT NULL)")
        cur.execute(f"INSERT INTO public.{name} (lead_email, lead_first_name, lead_job_title, company_domain, "
                    "updated_at) VALUES "
                    "('ada@example.com', 'Ada', 'CTO', 'example.com', '2026-09-01T10:00:00Z'), "
                    "('bo@example.org', 'Bo', 'CFO', 'example.org', '2026-09-02T10:00:00Z'), "
                    "('cy@example.net', 'Cy', 'COO', 'example.net', '2026-09-03T10:00:00Z')")
    try:
        yield con, f"public.{name}"
    finally:
        with con.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS public.{name}")
        con.close()


def test_warehouse_table_sends_only_rows_changed_since_the_last_confirmed_run(
    pg_table: tuple[Any, str], sandbox_server: Any, tmp_path: Path
) -> None:
    con, table = pg_table
    state = str(tmp_path / "wh.duckdb")

    def sync(**kw: Any) -> Any:
        return warehouse_postgres.sync_warehouse_table(PG_URL, table, api_key=kw.pop("api_key", KEY),
                                                       base_url=sandbox_server.url, state_path=state, **kw)

    first = sync()
    assert first.error is None and (first.rows_read, first.events, first.applied) == (3, 3, 3)
    mark = warehouse_postgres.load_mark(state, PG_URL, table, "updated_at")
    assert mark is not None and mark.isoformat().startswith("2026-09-03T10:00:00")

    with con.cursor() as cur:
        cur.execute(f"UPDATE {table} SET lead_job_title = 'CEO', updated_at = '2026-09-05T10:00:00Z' "
                    "WHERE lead_email = 'ada@example.com'")
        cur.execute(f"INSERT INTO {table} (lead_email, lead_first_name, company_domain, updated_at) "
                    "VALUES ('di@example.com', 'Di', 'example.com', '2026-09-04T10:00:00Z')")
        # committed late with the same timestamp as the old mark: read with >=, so not missed
        cur.execute(f"INSERT INTO {table} (lead_email, lead_first_name, company_domain, updated_at) "
                    "VALUES ('ed@example.com', 'Ed', 'example.com', '2026-09-03T10:00:00Z')")
    received = sandbox_stats(sandbox_server.url, KEY)["events_received"]
    second = sync()
    # read: the three changed rows plus Cy's, AT the old mark and unchanged, which the row hash drops
    assert (second.rows_read, second.rows_skipped_unchanged, second.events, second.applied) == (4, 1, 3, 3)
    assert sandbox_stats(sandbox_server.url, KEY)["events_received"] == received + 3
    leads = sandbox_leads(sandbox_server.url, KEY)
    assert lead_by(leads, "lead_email", "ada@example.com")[0]["attributes"]["lead_job_title"] == "CEO"
    assert lead_by(leads, "lead_email", "di@example.com") and lead_by(leads, "lead_email", "ed@example.com")
    assert len(leads) == 5

    third = sync()
    assert third.rows_read == 1 and third.events == 0 and third.requests == 0


def test_warehouse_mark_does_not_advance_when_the_run_fails(
    pg_table: tuple[Any, str], sandbox_server: Any, tmp_path: Path
) -> None:
    _con, table = pg_table
    state = str(tmp_path / "wh.duckdb")
    failed = warehouse_postgres.sync_warehouse_table(PG_URL, table, api_key="wrong-key", base_url=sandbox_server.url,
                                                     state_path=state)
    assert failed.exit_code == 2 and failed.error
    assert warehouse_postgres.load_mark(state, PG_URL, table, "updated_at") is None
    again = warehouse_postgres.sync_warehouse_table(PG_URL, table, api_key=KEY, base_url=sandbox_server.url,
                                                    state_path=state)
    assert again.rows_read == 3 and again.applied == 3


def test_cursor_marks_round_trip_types_and_keep_other_tables(tmp_path: Path) -> None:
    import datetime as dt

    state = tmp_path / "s.duckdb"
    when = dt.datetime(2026, 9, 1, 10, 0, tzinfo=dt.timezone.utc)
    warehouse_postgres.save_mark(state, PG_URL, "public.a", "updated_at", when)
    warehouse_postgres.save_mark(state, PG_URL, "public.b", "version", 42)
    assert warehouse_postgres.load_mark(state, PG_URL, "public.a", "updated_at") == when
    assert warehouse_postgres.load_mark(state, PG_URL, "public.b", "version") == 42
    assert warehouse_postgres.load_mark(state, PG_URL, "public.c", "updated_at") is None
    assert json.loads(warehouse_postgres.cursor_file(state).read_text())  # plain JSON, inspectable by hand


# ----------------------------------------------------------------------------- DuckDB and the SQL model
def test_duckdb_file_table_syncs_leads_with_their_companies(sandbox_server: Any, tmp_path: Path) -> None:
    db = duckdb_file.build_sample_warehouse(tmp_path / "crm.duckdb")
    report = duckdb_file.sync_duckdb_file(db, table="leads_flat", api_key=KEY, base_url=sandbox_server.url,
                                          state_path=str(tmp_path / "s.duckdb"), constants={"workspace_id": WS})
    assert report.error is None and report.exit_code == 0 and report.rows_read == 4
    leads = sandbox_leads(sandbox_server.url, KEY)
    assert len(leads) == 4
    jonas = lead_by(leads, "lead_linkedin_url", "https://www.linkedin.com/in/jonas-weber-nw/")
    assert jonas and jonas[0]["workspaces"][WS]["lead_status"] == "prospect"


def test_sql_model_joins_companies_and_reruns_send_nothing(sandbox_server: Any, tmp_path: Path) -> None:
    db = duckdb_file.build_sample_warehouse(tmp_path / "crm.duckdb")
    kw: dict[str, Any] = {"api_key": KEY, "base_url": sandbox_server.url, "state_path": str(tmp_path / "s.duckdb"),
                          "constants": {"workspace_id": WS}}
    first = sql_model.sync_sql_model(db, **kw)
    assert first.error is None and first.applied == first.events == 4
    companies = {c["identifiers"]["company_domain"][0]: c for c in sandbox_companies(sandbox_server.url, KEY)}
    assert set(companies) == {"northwind.example", "contoso.example", "fabrikam.example"}
    assert companies["contoso.example"]["attributes"]["company_name"] == "Contoso Example"
    greta = lead_by(sandbox_leads(sandbox_server.url, KEY), "lead_email", "greta.hansen@northwind.example")[0]
    assert greta["unified_company_id"] == companies["northwind.example"]["unified_company_id"]
    second = sql_model.sync_sql_model(db, **kw)
    assert second.events == 0 and second.requests == 0


def test_read_model_strips_comments_and_semicolon(tmp_path: Path) -> None:
    model = tmp_path / "m.sql"
    model.write_text("-- a dbt model\nselect 1 as lead_email;\n", encoding="utf-8")
    assert sql_model.read_model(model) == "select 1 as lead_email"


# ----------------------------------------------------------------------------- a user's dlt pipeline
def test_dlt_pipeline_example_syncs_a_users_resource_and_keeps_state(
    sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.examples import dlt_pipeline

    monkeypatch.setenv("DESTINATION__OUTREACH_MAGIC__API_KEY", KEY)  # the key as a dlt secret, as users set it
    state = str(tmp_path / "om" / "state.duckdb")
    dlt_pipeline.run_pipeline(dlt_pipeline.crm_contacts(), state_path=state, base_url=sandbox_server.url)
    leads = sandbox_leads(sandbox_server.url, KEY)
    assert len(leads) == 4
    assert lead_by(leads, "lead_email", "greta.hansen@northwind.example")[0]["attributes"]["lead_first_name"] == "Greta"
    assert (tmp_path / "om" / "dlt" / "crm_to_outreach_magic").is_dir()  # dlt's folder beside the state
    requests = sandbox_stats(sandbox_server.url, KEY)["requests"]
    dlt_pipeline.run_pipeline(dlt_pipeline.crm_contacts(), state_path=state, base_url=sandbox_server.url)
    assert sandbox_stats(sandbox_server.url, KEY)["requests"] == requests


# ----------------------------------------------------------------------------- README snippets
def readme_snippet(name: str) -> str:
    """The Python block after ``<!-- readme-snippet: name -->`` in the README's "Ways of running"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Ways of running"):]
    match = re.search(rf"<!-- readme-snippet: {name} -->\n```python\n(.*?)```", section, re.S)
    assert match, name
    return match.group(1)


def test_readme_dlt_snippet_runs_as_written(sandbox_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DESTINATION__OUTREACH_MAGIC__API_KEY", KEY)
    monkeypatch.setenv("DESTINATION__OUTREACH_MAGIC__BASE_URL", sandbox_server.url)
    module = types.ModuleType("readme_snippet")  # dlt looks up a resource's module in sys.modules
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(readme_snippet("dlt"), "README.md", "exec"), module.__dict__)
    assert "contains no failed jobs" in capsys.readouterr().out
    leads = sandbox_leads(sandbox_server.url, KEY)
    assert {lead["identifiers"]["lead_email"][0] for lead in leads} == {"ada@example.com", "bo@example.org"}
    assert (tmp_path / "om_state" / "om.duckdb").is_file() and (tmp_path / "om_state" / "dlt").is_dir()


def test_readme_dagster_snippet_defines_partitioned_assets() -> None:
    dg = pytest.importorskip("dagster")
    scope: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(readme_snippet("dagster"), "README.md", "exec"), scope)
    assets = [a for a in scope["defs"].assets if isinstance(a, dg.AssetsDefinition)]
    assert sorted(a.key.to_user_string() for a in assets) == ["outreach_magic_apollo_exports",
                                                               "outreach_magic_crm_leads"]
    assert all(a.partitions_def is not None and len(a.partitions_def.get_partition_keys()) == 2 for a in assets)


def test_sql_model_runs_unchanged_on_postgresql(sandbox_server: Any, tmp_path: Path) -> None:
    """The same model file on the warehouse itself: tables in a unique schema, found through search_path."""
    con = _pg_connect()
    schema = f"om_model_{uuid.uuid4().hex[:10]}"
    data = duckdb_file.WAREHOUSE_DATA
    try:
        with con.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
            cur.execute(f"CREATE TABLE {schema}.companies (id int, name text, domain text, linkedin_url text, "
                        "employees int, industry text, country text)")
            cur.execute(f"CREATE TABLE {schema}.leads (id int, company_id int, email text, linkedin_url text, "
                        "first_name text, last_name text, title text, country text, status text, updated_at timestamp)")
            for table in ("companies", "leads"):
                with (data / f"crm_{table}.csv").open(encoding="utf-8") as fh:
                    cur.copy_expert(f"COPY {schema}.{table} FROM STDIN WITH (FORMAT csv, HEADER true)", fh)
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        report = sql_model.sync_sql_model(url, api_key=KEY, base_url=sandbox_server.url,
                                          state_path=str(tmp_path / "s.duckdb"), constants={"workspace_id": WS})
        assert report.error is None and report.applied == report.events == 4
        companies = {c["identifiers"]["company_domain"][0] for c in sandbox_companies(sandbox_server.url, KEY)}
        assert companies == {"northwind.example", "contoso.example", "fabrikam.example"}
    finally:
        with con.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        con.close()
