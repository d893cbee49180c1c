"""A local, stateful emulator of the Outreach Magic ``update_attributes`` API.

In-process use (tests, demos)::

    from sandbox import running_sandbox

    with running_sandbox(["my-key"], error_rate=0.1, seed=7) as sb:
        httpx.post(f"{sb.url}/v1/events", headers={"x-api-key": "my-key"}, json={...})

Command line: ``outreach-magic sandbox --api-key KEY`` (see ``sandbox/cli.py``).
"""

from .faults import FaultSettings
from .runner import RunningSandbox, SandboxConfig, running_sandbox, serve_forever
from .server import SandboxApp
from .state import SandboxState

__all__ = [
    "FaultSettings",
    "RunningSandbox",
    "SandboxApp",
    "SandboxConfig",
    "SandboxState",
    "running_sandbox",
    "serve_forever",
]
