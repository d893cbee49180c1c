"""The ``outreach-magic`` command line: one subcommand per job, each in its own module.

Subcommands register themselves through ``add_parser(subparsers)`` and run through the
``func`` default they set, so this file stays a thin dispatcher.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outreach-magic",
        description="Sync lead and company data into Outreach Magic (update_attributes).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from pipelines import demo, sync_cli
    from sandbox import cli as sandbox_cli

    sync_cli.add_parsers(sub)
    demo.add_parser(sub)
    from pipelines import known as known_cli

    known_cli.add_parser(sub)
    sandbox_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
