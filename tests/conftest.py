"""Shared fixtures: a real sandbox over loopback HTTP.

``sandbox_server`` reuses one session-wide server (keys ``test-key`` and ``other-key``,
no faults) and resets both tenants before each test: starting uvicorn per test would
cost more than most tests. ``sandbox_factory(**kwargs)`` starts a dedicated server with
the given :func:`sandbox.running_sandbox` arguments (faults, limits, ``db_path``...) and
stops it after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from sandbox import RunningSandbox, running_sandbox
from tests.sandbox_helpers import sandbox_reset

SANDBOX_KEYS = ("test-key", "other-key")


@pytest.fixture(scope="session")
def _session_sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(SANDBOX_KEYS) as sb:
        yield sb


@pytest.fixture
def sandbox_server(_session_sandbox: RunningSandbox) -> RunningSandbox:
    """A running sandbox (``.url``, ``.api_keys``) with empty tenants ``test-key`` and ``other-key``."""
    for key in SANDBOX_KEYS:
        sandbox_reset(_session_sandbox.url, key)
    return _session_sandbox


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., RunningSandbox]]:
    """Start sandboxes with custom settings: ``sandbox_factory(error_rate=0.5, seed=1)``."""
    with ExitStack() as stack:

        def start(**kwargs: Any) -> RunningSandbox:
            kwargs.setdefault("api_keys", SANDBOX_KEYS)
            return stack.enter_context(running_sandbox(**kwargs))

        yield start
