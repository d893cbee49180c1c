"""The ``@dlt.destination`` factory (imported lazily by the package: dlt costs a second to import).

Use it around any dlt source whose columns are named like the API's fields::

    import dlt
    from destinations.outreach_magic import outreach_magic

    pipeline = dlt.pipeline("leads_to_om", destination=outreach_magic(state_path="state/om.duckdb"))
    pipeline.run(my_rows, table_name="leads")

The factory is thin on purpose: the sink body lives in ``sink.py`` (testable without
dlt), staging in ``staging.py``, HTTP in ``client.py``. Why these dlt settings:

* ``batch_size=0`` hands the sink the path of a whole parquet load file, which is read
  columnar in slices (no per-row Python before staging);
* ``max_parallel_load_jobs=1``: every job writes the same state file;
* events per request is ``request_batch_size``, not ``batch_size``: dlt reserves
  ``batch_size`` for how many rows it hands the sink per call (0 = the whole file);
* ``api_key`` is a dlt secret (``DESTINATION__OUTREACH_MAGIC__API_KEY`` or
  ``[destination.outreach_magic] api_key`` in ``.dlt/secrets.toml``), never logged;
* authentication, configuration and unreachable-API errors are raised as
  ``DestinationTerminalException`` so dlt does not retry them five times without pause;
  transient item failures do not raise at all: those items stay unconfirmed and the next
  run sends them.
"""

from __future__ import annotations

from typing import Any

import dlt
from dlt.common.destination.exceptions import DestinationTerminalException
from dlt.common.schema import TTableSchema
from dlt.common.typing import TDataItems

from . import settings
from .exceptions import ApiContractError, ApiUnavailableError, ConfigurationError, TerminalError
from .sink import SinkOptions, sync_file, totals_for
from .state import default_state_path

__all__ = ["SinkOptions", "outreach_magic", "parse_partition"]


def parse_partition(value: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0-based i) → ``(i, n)``; None means the whole source."""
    if not value:
        return None
    try:
        index_s, count_s = value.split("/")
        index, count = int(index_s), int(count_s)
    except ValueError:
        raise ConfigurationError(f"partition must look like 'i/n' (0 <= i < n), got {value!r}") from None
    if not 0 <= index < count:
        raise ConfigurationError(f"partition must look like 'i/n' (0 <= i < n), got {value!r}")
    return index, count


@dlt.destination(
    name="outreach_magic",
    batch_size=0,
    loader_file_format="parquet",
    naming_convention="direct",
    max_table_nesting=0,
    skip_dlt_columns_and_tables=True,
    max_parallel_load_jobs=1,
    loader_parallelism_strategy="sequential",
)
def outreach_magic(
    items: TDataItems,
    table: TTableSchema,
    /,
    api_key: str = dlt.secrets.value,
    base_url: str = settings.DEFAULT_BASE_URL,
    state_path: str = str(default_state_path()),
    request_batch_size: int = settings.DEFAULT_BATCH_SIZE,
    max_batch_bytes: int = 5 * 1024 * 1024,
    max_concurrency: int = 4,
    timeout: float = 30.0,
    max_attempts: int = 8,
    workspace_id: str | None = None,
    platform: str | None = None,
    full_refresh: bool = False,
    retry_rejected: bool = False,
    dry_run: bool = False,
    allow_insecure_http: bool = False,
    stage_rows: int = 50_000,
    run_id: str = "",
    partition: str | None = None,
) -> Any:
    """Sync one load file of canonical rows to Outreach Magic (see the module docstring)."""
    opts = SinkOptions(
        api_key=api_key,
        base_url=base_url,
        state_path=state_path,
        batch_size=request_batch_size,
        max_batch_bytes=max_batch_bytes,
        max_concurrency=max_concurrency,
        timeout=timeout,
        max_attempts=max_attempts,
        workspace_id=workspace_id,
        platform=platform,
        full_refresh=full_refresh,
        retry_rejected=retry_rejected,
        dry_run=dry_run,
        allow_insecure_http=allow_insecure_http,
        stage_rows=stage_rows,
        run_id=run_id,
        partition=parse_partition(partition),
    )
    try:
        sync_file(str(items), opts, source_label=str(table.get("name") or "rows"))
    except (TerminalError, ApiUnavailableError, ApiContractError) as exc:
        if run_id:
            totals_for(run_id).fatal = exc
        raise DestinationTerminalException(str(exc)) from exc
