"""Example: an enrichment tool's export file (Apollo, Clay, ZoomInfo, Lusha...) into Outreach Magic.

The preset is recognised from the file's headers (``preset="auto"``), so an export goes in
as downloaded; the state file makes the next run send only what changed in a newer
export of the same people. Try it with no account::

    python -m pipelines.examples.enrichment_export --sandbox
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines.examples._common import Target, add_target_arguments, run_main
from pipelines.runner import SyncReport, SyncRequest, run_sync

BUNDLED_EXPORT = Path(__file__).parent / "data" / "apollo_people_export.csv"


def sync_export(
    path: str | Path,
    *,
    api_key: str | None,
    base_url: str,
    state_path: str,
    preset: str = "auto",
    constants: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> SyncReport:
    """Sync one export file (or glob); the report says what happened to every row."""
    return run_sync(SyncRequest(sources=[str(path)], api_key=api_key, base_url=base_url, state_path=state_path,
                                preset=preset, constants=dict(constants or {}), dry_run=dry_run))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.examples.enrichment_export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", nargs="?", default=str(BUNDLED_EXPORT),
                        help="export file or glob (default: the bundled Apollo people export)")
    parser.add_argument("--preset", default="auto", help="apollo, clay, zoominfo, lusha, ... or auto (default)")
    add_target_arguments(parser, ".outreach_magic/enrichment_export.duckdb")

    def body(args: argparse.Namespace, t: Target) -> SyncReport:
        return sync_export(args.export, api_key=t.api_key, base_url=t.base_url, state_path=t.state_path,
                           preset=args.preset, constants=t.constants, dry_run=t.dry_run)

    return run_main(parser, argv, body)


if __name__ == "__main__":
    raise SystemExit(main())
