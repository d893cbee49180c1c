"""``outreach-magic sandbox``: serve the local API sandbox until SIGINT/SIGTERM.

Flags are exactly the contract's "Command line and faults" section. API keys come from
repeated ``--api-key`` and/or ``OUTREACH_MAGIC_SANDBOX_API_KEYS`` (comma-separated); the
environment variable exists so that a key need not appear in the process list.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from destinations.outreach_magic import settings as s

ENV_KEYS = "OUTREACH_MAGIC_SANDBOX_API_KEYS"


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be a fraction between 0 and 1")
    return value


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "sandbox",
        help="run the local API sandbox",
        description="Serve a local, stateful emulator of the Outreach Magic update_attributes API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        metavar="KEY",
        help=f"an accepted API key, one tenant each (repeatable; also {ENV_KEYS}, comma-separated)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each /v1/events answer")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="RPS",
        help="at most RPS requests a second per key (burst RPS), else 429 with Retry-After",
    )
    parser.add_argument("--error-rate", type=_rate, default=0.0, help="fraction answered 503/500/502")
    parser.add_argument("--drop-rate", type=_rate, default=0.0, help="fraction of connections closed, nothing applied")
    parser.add_argument(
        "--lost-response-rate",
        type=_rate,
        default=0.0,
        help="fraction applied, then the connection closed before the answer is complete",
    )
    parser.add_argument("--max-items", type=int, default=s.MAX_ITEMS_PER_REQUEST, help="items a request (413 beyond)")
    parser.add_argument("--max-bytes", type=int, default=s.MAX_BYTES_PER_REQUEST, help="bytes a body (413 beyond)")
    parser.add_argument("--db", default=None, metavar="PATH", help="keep the store in this DuckDB file")
    parser.add_argument("--seed", type=int, default=None, help="make injected faults repeatable")
    parser.set_defaults(func=run)
    return parser


def api_keys(args: argparse.Namespace, environ: Any = os.environ) -> list[str]:
    keys = list(args.api_keys)
    keys += [k.strip() for k in environ.get(ENV_KEYS, "").split(",") if k.strip()]
    return list(dict.fromkeys(keys))


def run(args: argparse.Namespace) -> int:
    from .faults import FaultSettings
    from .runner import SandboxConfig, serve_forever

    keys = api_keys(args)
    if not keys:
        print(f"outreach-magic sandbox: give at least one --api-key (or set {ENV_KEYS})", file=sys.stderr)
        return 2
    try:
        faults = FaultSettings(
            args.latency_ms,
            args.rate_limit,
            args.error_rate,
            args.drop_rate,
            args.lost_response_rate,
            args.seed,
        )
    except ValueError as exc:
        print(f"outreach-magic sandbox: {exc}", file=sys.stderr)
        return 2
    config = SandboxConfig(keys, args.host, args.port, faults, args.max_items, args.max_bytes, args.db)
    try:
        serve_forever(config)
    except OSError as exc:
        print(
            f"outreach-magic sandbox: cannot listen on {args.host}:{args.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0
