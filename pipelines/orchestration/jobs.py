"""What an orchestrator schedules: named syncs, each run through the project's runner with durable state.

dlt's stock orchestrator helpers (Airflow's ``PipelineTasksGroup``, dagster-dlt's default
run path) delete the pipeline's local working folder before each run. For this connector
that folder sits beside the state file that records what the API confirmed, and losing
the state means a full resend on every schedule. So the Airflow task and the Dagster
asset are plain ones that call :func:`run_job`, whose state path is derived from a
durable ``state_dir`` (a mounted volume or a synced folder on ephemeral workers):

    <state_dir>/<job name>/<workspace id or "all">/<partition or "whole">/state.duckdb

One state file per (job, workspace, partition): two workers never write the same file,
and a partition keeps its own memory of what it sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from destinations.outreach_magic import settings
from pipelines.runner import EXIT_FAILED, SyncReport, SyncRequest, run_sync

EXAMPLE_DATA = Path(__file__).parent.parent / "examples" / "data"
STATE_DIR_ENV = "OUTREACH_MAGIC_STATE_DIR"
BASE_URL_ENV = "OUTREACH_MAGIC_BASE_URL"
WORKSPACES_ENV = "OUTREACH_MAGIC_WORKSPACES"
DEFAULT_WORKSPACE = "65f1a2b3c4d5e6f7890a1b2c"
# Counts worth showing in an orchestrator's UI (Dagster metadata, Airflow XCom).
SUMMARY_FIELDS = ("rows_read", "rows_skipped_unchanged", "invalid", "merged", "unchanged", "events", "applied",
                  "rejected", "failed", "requests", "exit_code")


class SyncFailed(RuntimeError):
    """Raised so the orchestrator marks the task failed and retries it.

    Nothing could be done (exit code 2: API unreachable, bad key, unreadable source), or
    some events still failed after the client's own retries: a rerun sends exactly those.
    Invalid or API-rejected rows do not raise; they are in the ledger and the summary.
    """


@dataclass(frozen=True)
class SyncJob:
    """One scheduled sync: its sources and how to read them (the same fields as ``outreach-magic sync``)."""

    name: str
    sources: tuple[str, ...]
    table: str | None = None
    query: str | None = None
    cursor_column: str | None = None
    preset: str = "auto"
    mapping: str | None = None
    constants: Mapping[str, Any] = field(default_factory=dict)


# The bundled examples, so the orchestrator modules load and run with nothing configured.
DEFAULT_JOBS: tuple[SyncJob, ...] = (
    SyncJob("apollo_export", (str(EXAMPLE_DATA / "apollo_people_export.csv"),)),
    SyncJob("warehouse_leads", (str(EXAMPLE_DATA / "warehouse_leads.csv"),)),
)


def state_path_for(state_dir: str | Path, job: SyncJob, workspace_id: str | None = None,
                   partition: str | None = None) -> Path:
    """The durable state file of one (job, workspace, partition); see the module docstring."""
    part = partition.replace("/", "of") if partition else "whole"
    return Path(state_dir) / job.name / (workspace_id or "all") / part / "state.duckdb"


def default_state_dir() -> str:
    return os.environ.get(STATE_DIR_ENV, ".outreach_magic/orchestrated")


def default_base_url() -> str:
    return os.environ.get(BASE_URL_ENV, settings.DEFAULT_BASE_URL).rstrip("/")


def default_workspaces() -> list[str]:
    raw = os.environ.get(WORKSPACES_ENV, DEFAULT_WORKSPACE)
    return [w.strip() for w in raw.split(",") if w.strip()]


def job_request(job: SyncJob, *, state_dir: str | Path, base_url: str, api_key: str | None,
                workspace_id: str | None = None, partition: str | None = None) -> SyncRequest:
    constants = dict(job.constants)
    if workspace_id:
        constants["workspace_id"] = workspace_id
    state = state_path_for(state_dir, job, workspace_id, partition)
    state.parent.mkdir(parents=True, exist_ok=True)
    return SyncRequest(sources=list(job.sources), api_key=api_key, base_url=base_url, state_path=str(state),
                       table=job.table, query=job.query, cursor_column=job.cursor_column, preset=job.preset,
                       mapping=job.mapping, constants=constants, partition=partition)


def run_job(job: SyncJob, *, state_dir: str | Path, base_url: str, api_key: str | None = None,
            workspace_id: str | None = None, partition: str | None = None) -> SyncReport:
    """Run one job with its durable state; raise :class:`SyncFailed` when a retry is the right answer.

    ``api_key=None`` resolves it at run time (``OUTREACH_MAGIC_API_KEY`` or dlt secrets), so
    the key lives in the worker's environment or secret store, never in the DAG/asset code.
    """
    if api_key is None:
        from pipelines.sync_cli import resolve_api_key

        api_key = resolve_api_key()
    report = run_sync(job_request(job, state_dir=state_dir, base_url=base_url, api_key=api_key,
                                  workspace_id=workspace_id, partition=partition))
    if report.exit_code == EXIT_FAILED:
        raise SyncFailed(f"{job.name}: {report.error}")
    if report.needs_rerun:
        raise SyncFailed(f"{job.name}: {report.failed} events failed after retries; a rerun sends exactly those")
    return report


def summary(report: SyncReport) -> dict[str, int]:
    """The counts an orchestrator shows; no row content, no key."""
    return {name: int(getattr(report, name)) for name in SUMMARY_FIELDS}
