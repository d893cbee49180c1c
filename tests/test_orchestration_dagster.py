"""Dagster: materialize the sync asset in-process against the sandbox, twice; the second time sends nothing.

Needs the ``dagster`` extra (``pip install -e ".[dagster]"``); skipped when it is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

dg = pytest.importorskip("dagster")

from pipelines.orchestration.jobs import DEFAULT_JOBS, state_path_for  # noqa: E402
from tests.sandbox_helpers import sandbox_leads, sandbox_stats  # noqa: E402

pytestmark = pytest.mark.dagster
KEY = "test-key"
WS_A, WS_B = "65f1a2b3c4d5e6f7890a1b2c", "75f1a2b3c4d5e6f7890a1b2d"


def _events(result: Any, asset_name: str) -> dict[str, Any]:
    (mat,) = result.asset_materializations_for_node(asset_name)
    return {k: v.value for k, v in mat.metadata.items()}


def test_partitioned_asset_keeps_state_between_materializations(sandbox_server: Any, tmp_path: Path) -> None:
    from pipelines.orchestration.dagster_defs import build_definitions

    job = DEFAULT_JOBS[1]  # the warehouse export: lead_status is a per-workspace attribute
    defs = build_definitions([job], workspaces=[WS_A, WS_B], base_url=sandbox_server.url,
                             state_dir=str(tmp_path / "state"), api_key=KEY)
    asset = defs.resolve_asset_graph().get_all_asset_keys()
    assert {k.to_user_string() for k in asset} == {f"outreach_magic_{job.name}"}
    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    name = f"outreach_magic_{job.name}"

    with dg.instance_for_test() as instance:
        first = dg.materialize(assets, partition_key=WS_A, instance=instance, resources=resources)
        assert first.success
        meta = _events(first, name)
        assert meta["events"] == meta["applied"] > 0 and meta["exit_code"] == 0
        assert meta["state_path"] == str(state_path_for(tmp_path / "state", job, WS_A))
        leads = sandbox_leads(sandbox_server.url, KEY)
        assert any(WS_A in lead["workspaces"] for lead in leads)  # the partition key became workspace_id
        requests = sandbox_stats(sandbox_server.url, KEY)["requests"]

        second = dg.materialize(assets, partition_key=WS_A, instance=instance, resources=resources)
        assert second.success
        again = _events(second, name)
        assert again["events"] == 0 and again["requests"] == 0 and again["rows_skipped_unchanged"] == meta["rows_read"]
        assert sandbox_stats(sandbox_server.url, KEY)["requests"] == requests

        other = dg.materialize(assets, partition_key=WS_B, instance=instance, resources=resources)
        assert _events(other, name)["events"] > 0  # another workspace: its own state, so its own first sync


def test_failed_sync_fails_the_materialization(sandbox_server: Any, tmp_path: Path) -> None:
    from pipelines.orchestration.dagster_defs import build_definitions

    defs = build_definitions([DEFAULT_JOBS[0]], workspaces=[WS_A], base_url=sandbox_server.url,
                             state_dir=str(tmp_path / "state"), api_key="wrong-key", retry_policy=None)
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets or []), partition_key=WS_A, instance=instance,
                                resources=dict(defs.resources or {}), raise_on_error=False)
    assert not result.success
    assert sandbox_stats(sandbox_server.url, KEY)["events_received"] == 0


def test_module_level_definitions_load_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib

    monkeypatch.setenv("OUTREACH_MAGIC_WORKSPACES", f"{WS_A},{WS_B}")
    monkeypatch.setenv("OUTREACH_MAGIC_STATE_DIR", str(tmp_path))
    import pipelines.orchestration.dagster_defs as mod

    mod = importlib.reload(mod)
    keys = mod.defs.resolve_asset_graph().get_all_asset_keys()
    assert len(keys) == len(DEFAULT_JOBS)
    (asset_def, *_rest) = list(mod.defs.assets or [])
    assert isinstance(asset_def, dg.AssetsDefinition) and asset_def.partitions_def is not None
    assert asset_def.partitions_def.get_partition_keys() == [WS_A, WS_B]
