"""What every example's command line shares: where to send, which state, how to report.

Each example is a small function a user can copy (``sync_...(...) -> SyncReport``) plus a
``main()`` built from these helpers, so ``python -m pipelines.examples.<name> --help`` works
and ``--sandbox`` runs it against the embedded sandbox with nothing else set up.
The API key comes from ``OUTREACH_MAGIC_API_KEY`` or dlt secrets, never from a flag
(flags end up in shell history and process listings).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from destinations.outreach_magic import settings
from pipelines.runner import SyncReport

SANDBOX_KEY = "sandbox-key"


@dataclass
class Target:
    """Where a sync goes: the API (or sandbox) URL, the key, and the durable state file."""

    base_url: str
    api_key: str | None = field(repr=False)  # a secret: never in a repr, a log or a report
    state_path: str
    constants: dict[str, Any]
    dry_run: bool = False


def add_target_arguments(parser: argparse.ArgumentParser, default_state: str) -> None:
    parser.add_argument("--state", default=default_state,
                        help=f"state file, kept between runs (default {default_state})")
    parser.add_argument("--base-url", default=None, help=f"API base URL (default {settings.DEFAULT_BASE_URL})")
    parser.add_argument("--workspace-id", help="set workspace_id on every row")
    parser.add_argument("--platform", help="set platform on every row")
    parser.add_argument("--dry-run", action="store_true", help="do everything except send")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--sandbox", action="store_true",
                        help="start the embedded sandbox and sync into it (no account needed)")


@contextmanager
def target_from_args(args: argparse.Namespace) -> Iterator[Target]:
    """The target the flags describe; with ``--sandbox`` a sandbox that lives as long as the block."""
    from pipelines.sync_cli import resolve_api_key

    constants = {k: v for k, v in (("workspace_id", args.workspace_id), ("platform", args.platform)) if v}
    if args.sandbox:
        from sandbox import running_sandbox

        with running_sandbox([SANDBOX_KEY]) as sb:
            yield Target(sb.url, SANDBOX_KEY, args.state, constants, args.dry_run)
    else:
        base_url = (args.base_url or settings.DEFAULT_BASE_URL).rstrip("/")
        yield Target(base_url, resolve_api_key(), args.state, constants, args.dry_run)


def print_report(report: SyncReport, as_json: bool) -> int:
    """Print the report (text like ``outreach-magic sync`` or JSON) and return its exit code."""
    from pipelines.sync_cli import format_report

    if as_json:
        sys.stdout.write(orjson.dumps(report.to_dict()).decode() + "\n")
    else:
        print(format_report(report))
    return report.exit_code


def run_main(parser: argparse.ArgumentParser, argv: list[str] | None,
             body: Callable[[argparse.Namespace, Target], SyncReport]) -> int:
    """Parse, open the target, run ``body`` and print its report; the process exit code is the report's."""
    args = parser.parse_args(argv)
    Path(args.state).parent.mkdir(parents=True, exist_ok=True)
    with target_from_args(args) as target:
        report = body(args, target)
    return print_report(report, args.json)
