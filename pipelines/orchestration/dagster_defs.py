"""Dagster definitions: one asset per sync, partitioned by workspace, state kept between runs.

Load it with ``dagster dev -m pipelines.orchestration.dagster_defs`` (needs the ``dagster``
extra). Each asset calls the project's runner (:func:`pipelines.orchestration.jobs.run_job`)
for one workspace partition: the partition key becomes the ``workspace_id`` constant and
picks the partition's own state file under ``state_dir``, so a scheduled
materialization sends only what changed since the last one.

Why not dagster-dlt's ``@dlt_assets`` default run path: it runs the pipeline in a fresh
working folder each time (the local pipeline state is dropped before the run), which for
this destination means forgetting what the API confirmed and resending everything on
every schedule. A plain asset around the runner keeps the state file, finishes pending
load packages first, and reports per-row outcomes as asset metadata.

Configuration (environment of the code location, or the resource in code):
``OUTREACH_MAGIC_API_KEY`` (or dlt secrets; resolved when the asset runs, never in Dagster's config),
``OUTREACH_MAGIC_BASE_URL``, ``OUTREACH_MAGIC_STATE_DIR`` (durable storage: a volume that
outlives the run worker), ``OUTREACH_MAGIC_WORKSPACES`` (comma-separated workspace ids:
the partitions).
"""

# No ``from __future__ import annotations``: Dagster reads the asset function's parameter
# annotations at definition time to find its resources.

from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg

from pipelines.orchestration.jobs import (
    DEFAULT_JOBS,
    SyncJob,
    default_base_url,
    default_state_dir,
    default_workspaces,
    run_job,
    summary,
)

RESOURCE_KEY = "outreach_magic"
# A failed sync (API unreachable, events still failing after the client's own retries) is
# worth retrying later: a rerun sends exactly what is unconfirmed.
DEFAULT_RETRY = dg.RetryPolicy(max_retries=3, delay=60, backoff=dg.Backoff.EXPONENTIAL)


class OutreachMagicResource(dg.ConfigurableResource):  # type: ignore[misc,unused-ignore]
    """Where syncs go and where their state lives; the key is resolved from the environment."""

    base_url: str
    state_dir: str
    # None (the default, and right in production): OUTREACH_MAGIC_API_KEY or dlt secrets,
    # resolved when the asset runs. A string here is resource config, which Dagster shows
    # in its UI: pass one only in tests against the sandbox.
    api_key: str | None = None


def sync_asset(job: SyncJob, partitions: dg.PartitionsDefinition,
               retry_policy: dg.RetryPolicy | None = DEFAULT_RETRY) -> dg.AssetsDefinition:
    """The asset for one sync: materializing a partition syncs that workspace."""

    @dg.asset(
        name=f"outreach_magic_{job.name}",
        partitions_def=partitions,
        group_name="outreach_magic",
        retry_policy=retry_policy,
        description=f"{job.name}: {', '.join(job.sources)} synced into Outreach Magic (only what changed).",
        kinds={"dlt", "outreach_magic"},
    )
    def _sync(context: dg.AssetExecutionContext, outreach_magic: OutreachMagicResource) -> dg.MaterializeResult:
        workspace = context.partition_key
        report = run_job(job, state_dir=outreach_magic.state_dir, base_url=outreach_magic.base_url,
                         api_key=outreach_magic.api_key, workspace_id=workspace)
        context.log.info(f"{job.name} [{workspace}]: {report.events} events, {report.applied} applied, "
                         f"{report.invalid} invalid, {report.rejected} rejected")
        meta: dict[str, Any] = {**summary(report), "state_path": report.state_path,
                                   "seconds": round(report.seconds, 2)}
        return dg.MaterializeResult(metadata=meta)

    return _sync


def build_definitions(
    jobs: Iterable[SyncJob] = DEFAULT_JOBS,
    *,
    workspaces: Sequence[str] | None = None,
    base_url: str | None = None,
    state_dir: str | None = None,
    api_key: str | None = None,
    retry_policy: dg.RetryPolicy | None = DEFAULT_RETRY,
) -> dg.Definitions:
    """Definitions for ``jobs``; arguments left out come from the environment (see the module docstring)."""
    partitions = dg.StaticPartitionsDefinition(list(workspaces or default_workspaces()))
    resource = OutreachMagicResource(
        base_url=base_url or default_base_url(),
        state_dir=state_dir or default_state_dir(),
        api_key=api_key,  # None: resolved when the asset runs, so the key never sits in Dagster's config
    )
    assets = [sync_asset(job, partitions, retry_policy) for job in jobs]
    return dg.Definitions(assets=assets, resources={RESOURCE_KEY: resource})


defs = build_definitions()
