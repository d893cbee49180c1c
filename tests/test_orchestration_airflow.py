"""Airflow 3: run the DAG with ``dag.test()`` against the sandbox, twice; the second run sends nothing.

Needs the ``airflow`` extra (``pip install -e ".[airflow]"``); skipped when it is not installed.
Airflow reads ``AIRFLOW_HOME``, the DAGs folder and its metadata database location once,
when it is first imported (and dlt imports it on its own import when it is installed), so
the DAG runs in a fresh interpreter whose environment is set before anything starts:
a temporary ``AIRFLOW_HOME``, the metadata database created with ``resetdb()``, the DAG
file in ``AIRFLOW__CORE__DAGS_FOLDER``, examples off, and the API key in the worker's
environment as in production.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_helpers import sandbox_stats

if importlib.util.find_spec("airflow") is None:  # find_spec: importing Airflow here would configure it too early
    pytest.skip("the airflow extra is not installed", allow_module_level=True)

# Not marked slow (about a minute): it runs wherever the airflow extra is installed, as in .ci/run.
pytestmark = pytest.mark.airflow
KEY = "test-key"
WS = "65f1a2b3c4d5e6f7890a1b2c"
ROOT = Path(__file__).parent.parent

DAG_FILE = """
from pipelines.orchestration.airflow_dag import build_dag
from pipelines.orchestration.jobs import DEFAULT_JOBS

dag = build_dag(DEFAULT_JOBS, dag_id="om_test", schedule=None, state_dir={state_dir!r}, base_url={base_url!r},
                workspace_id={ws!r}, default_args={{"retries": 0}})
split = build_dag(DEFAULT_JOBS[:1], dag_id="om_split", schedule=None, state_dir={state_dir!r},
                  base_url={base_url!r}, workspace_id={ws!r}, partitions=2)
"""

RUNNER = """
import importlib.util, json, sys
from airflow.utils.db import resetdb

resetdb()
spec = importlib.util.spec_from_file_location("om_dag", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
out = {"split_tasks": sorted(mod.split.task_ids), "retries": mod.split.default_args["retries"], "runs": []}
for _ in range(2):
    run = mod.dag.test()
    out["runs"].append({"state": str(run.state),
                        "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()},
                        "xcom": {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in run.get_task_instances()}})
print("RESULT " + json.dumps(out, default=str))
"""


def test_dag_test_syncs_then_sends_nothing(sandbox_server: Any, tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    dag_file = dags / "outreach_magic_dag.py"
    dag_file.write_text(DAG_FILE.format(state_dir=str(tmp_path / "state"), base_url=sandbox_server.url, ws=WS),
                        encoding="utf-8")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "OUTREACH_MAGIC_API_KEY": KEY,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(RUNNER), str(dag_file)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=400)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[0].removeprefix("RESULT "))

    assert result["split_tasks"] == ["apollo_export_part_0_of_2", "apollo_export_part_1_of_2"]
    assert result["retries"] == 3  # the default: failed syncs are retried with backoff
    first, second = result["runs"]
    assert first["state"].endswith("success") and set(first["tasks"]) == {"apollo_export", "warehouse_leads"}
    assert all(xcom["events"] == xcom["applied"] > 0 for xcom in first["xcom"].values()), first["xcom"]
    assert second["state"].endswith("success")
    assert all(xcom["events"] == 0 and xcom["requests"] == 0 for xcom in second["xcom"].values()), second["xcom"]
    stats = sandbox_stats(sandbox_server.url, KEY)
    assert stats["events_received"] == sum(x["events"] for x in first["xcom"].values())
    for path in tmp_path.rglob("*"):  # the key is in no log, XCom, state or load file
        if path.is_file() and path.suffix not in {".py"}:
            assert KEY.encode() not in path.read_bytes(), path


def test_readme_airflow_snippet_parses_into_a_dag(tmp_path: Path) -> None:
    from tests.test_examples import readme_snippet

    script = readme_snippet("airflow") + "\nprint('TASKS', sorted(dag.task_ids), dag.schedule, dag.max_active_runs)\n"
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TASKS ['crm_leads'] @hourly 1" in proc.stdout
