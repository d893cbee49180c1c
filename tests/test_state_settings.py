"""The DuckDB settings a state connection runs with, and the environment variables the
README documents for them (read once, at import: checked in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import json, sys
from destinations.outreach_magic import state
con = state.connect(sys.argv[1], target="https://api.example.test")
names = ("memory_limit", "threads", "checkpoint_threshold")
print(json.dumps({n: con.execute(f"SELECT current_setting('{n}')").fetchall()[0][0] for n in names}))
con.close()
"""


def _settings(state: Path, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_MAGIC_DUCKDB_")}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(state)], cwd=ROOT, env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def test_defaults_bound_memory_use_one_thread_and_checkpoint_every_32_mb_of_wal(tmp_path: Path) -> None:
    assert _settings(tmp_path / "s.duckdb") == {
        "memory_limit": "122.0 MiB", "threads": 1, "checkpoint_threshold": "30.5 MiB"}


def test_the_documented_environment_variables_reach_duckdb(tmp_path: Path) -> None:
    got = _settings(tmp_path / "s.duckdb", OUTREACH_MAGIC_DUCKDB_MEMORY="256MB",
                    OUTREACH_MAGIC_DUCKDB_THREADS="2", OUTREACH_MAGIC_DUCKDB_CHECKPOINT="64MB")
    assert got == {"memory_limit": "244.1 MiB", "threads": 2, "checkpoint_threshold": "61.0 MiB"}
