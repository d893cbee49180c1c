"""``outreach-magic sandbox``: placeholder until the sandbox server lands."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser("sandbox", help="run the local API sandbox")
    parser.set_defaults(func=lambda args: 2)
    return parser
