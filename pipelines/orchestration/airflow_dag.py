"""Airflow 3 DAG: one TaskFlow task per sync, each calling the project's runner with durable state.

Put a file like this in your DAGs folder (needs the ``airflow`` extra on the workers)::

    from pipelines.orchestration.airflow_dag import build_dag
    from pipelines.orchestration.jobs import SyncJob

    dag = build_dag([SyncJob("crm_leads", ("postgresql://etl@warehouse/crm",), table="public.leads",
                             cursor_column="updated_at")],
                    state_dir="/mnt/durable/outreach_magic", workspace_id="65f1a2b3c4d5e6f7890a1b2c")

Why not dlt's ``PipelineTasksGroup``: it wipes the pipeline's local working folder before
each run, and with it what the API confirmed, so every scheduled run would resend
everything. Here each task runs :func:`pipelines.orchestration.jobs.run_job`, whose state
file lives under ``state_dir`` (a volume every worker mounts, or one worker pool with a
local disk). ``max_active_runs=1`` keeps two runs of one sync from writing one state file.

A task fails, and Airflow retries it with backoff, when nothing could be done (API down,
bad key) or some events still failed after the client's own retries; invalid and
API-rejected rows do not fail it (they are in the ledger; the counts are the task's
XCom). The API key is read when the task runs: ``OUTREACH_MAGIC_API_KEY`` in the worker's
environment, or dlt's secrets (``DESTINATION__OUTREACH_MAGIC__API_KEY``), never from
the DAG file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from pipelines.orchestration.jobs import (
    DEFAULT_JOBS,
    SyncJob,
    default_base_url,
    default_state_dir,
    default_workspaces,
    run_job,
    summary,
)

DEFAULT_ARGS: dict[str, Any] = {
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=30),
}


def build_dag(
    jobs: Iterable[SyncJob] = DEFAULT_JOBS,
    *,
    dag_id: str = "outreach_magic_sync",
    schedule: str | None = "@hourly",
    state_dir: str | None = None,
    base_url: str | None = None,
    workspace_id: str | None = None,
    partitions: int = 1,
    default_args: dict[str, Any] | None = None,
) -> Any:
    """A DAG with one task per job (or per job and partition, when ``partitions`` > 1).

    With ``partitions=N`` each job becomes N tasks ``<job>_part_<i>_of_<N>`` that Airflow
    can run on N workers at once: each syncs the leads hashing to its index and keeps its
    own state file (see :mod:`pipelines.orchestration.partitioned`).
    """
    from airflow.sdk import dag, task

    state_root = state_dir or default_state_dir()
    url = base_url or default_base_url()
    workspace = workspace_id or default_workspaces()[0]
    job_list = list(jobs)

    @dag(
        dag_id=dag_id,
        schedule=schedule,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, **(default_args or {})},
        tags=["outreach_magic", "reverse-etl"],
        doc_md=__doc__,
    )
    def outreach_magic_sync() -> None:
        for job in job_list:
            for index in range(partitions):
                part = f"{index}/{partitions}" if partitions > 1 else None
                task_id = job.name if part is None else f"{job.name}_part_{index}_of_{partitions}"

                @task(task_id=task_id)
                def sync(job: SyncJob = job, part: str | None = part) -> dict[str, int]:
                    report = run_job(job, state_dir=state_root, base_url=url, workspace_id=workspace,
                                     partition=part)
                    return summary(report)

                sync()

    return outreach_magic_sync()


def _module_dag() -> Any:
    """The DAG Airflow finds when this module itself is in the DAGs folder (the bundled examples)."""
    try:
        return build_dag()
    except ImportError:  # Airflow not installed: the module stays importable for docs and tests
        return None


dag = _module_dag()
