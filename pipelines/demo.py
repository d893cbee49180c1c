"""``outreach-magic demo``: the README's first command, a whole sync with nothing to set up.

It starts the embedded sandbox on a free loopback port, syncs the bundled example
exports (an Apollo people export, HeyReach webhook events and a warehouse table in
canonical columns) into it, prints the report and a few of the leads the sandbox now
holds, then runs the same sync again to show that unchanged data sends nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import httpx

from pipelines.progress import Progress
from pipelines.runner import SyncRequest, run_sync
from pipelines.sync_cli import format_report

EXAMPLES = Path(__file__).parent / "examples" / "data"
DEMO_KEY = "demo-key"
DEMO_WORKSPACE = "65f1a2b3c4d5e6f7890a1b2c"


def example_sources() -> list[str]:
    return sorted(str(p) for p in EXAMPLES.iterdir() if p.suffix in {".csv", ".json", ".jsonl", ".parquet"})


def show_leads(url: str, limit: int = 5) -> list[str]:
    leads: list[dict[str, Any]] = httpx.get(f"{url}/_sandbox/leads", headers={"x-api-key": DEMO_KEY}).json()
    lines = [f"The sandbox now holds {len(leads)} leads; a few of them:"]
    for lead in leads[:limit]:
        ids = lead.get("identifiers", {})
        attrs = lead.get("attributes", {})
        name = attrs.get("lead_full_name") or " ".join(
            x for x in (attrs.get("lead_first_name"), attrs.get("lead_last_name")) if x
        )
        first = next((v[0] for v in ids.values() if v), "")
        lines.append(f"  {lead['unified_lead_id']}  {name or '(no name)':<28} {first}  "
                     f"{attrs.get('lead_job_title', '')}")
    return lines


def run_demo(args: argparse.Namespace) -> int:
    from sandbox import running_sandbox

    progress = Progress()
    state_path = Path(".outreach_magic") / "demo-state.duckdb"
    for stale in (state_path, state_path.with_name(state_path.name + ".wal")):
        stale.unlink(missing_ok=True)
    with running_sandbox([DEMO_KEY]) as sb:
        progress.message(f"Embedded sandbox listening at {sb.url}")
        request = SyncRequest(
            sources=example_sources(),
            api_key=DEMO_KEY,
            base_url=sb.url,
            state_path=str(state_path),
            constants={"workspace_id": DEMO_WORKSPACE},
        )
        first = run_sync(request, progress=progress.message, tick=progress.tick)
        print(format_report(first))
        print()
        print("\n".join(show_leads(sb.url)))
        print()
        second = run_sync(request)  # quietly: its one line below says it all
        print(f"Second run over the same files: {second.events} events sent, "
              f"{second.rows_skipped_unchanged} of {second.rows_read} rows skipped as unchanged, "
              f"{second.seconds:.1f} s.")
        if first.invalid:
            print(f"Rows held back, with their reasons: outreach-magic rejected --state {state_path}")
        return 0 if first.error is None and second.error is None and second.events == 0 else 2


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo", help="sync the bundled example exports into an embedded sandbox and show the report"
    )
    parser.set_defaults(func=run_demo)
    return parser
