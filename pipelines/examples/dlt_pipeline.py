"""Example: your own dlt pipeline, with Outreach Magic as its destination.

For when the rows come from code you already have as a dlt resource (an internal API, a
scoring job): yield rows whose keys are the API's field names (``lead_email``,
``company_domain``...; other keys are ignored) and run the pipeline with the
``outreach_magic`` destination. What to keep between runs, on durable storage:

* ``state_path``, the connector's state (what the API confirmed): without it every run
  resends everything;
* ``pipelines_dir``, dlt's working folder: a run that crashed leaves a load package there
  that the next ``pipeline.run`` finishes first.

The API key is a dlt secret: ``DESTINATION__OUTREACH_MAGIC__API_KEY`` or ``api_key`` under
``[destination.outreach_magic]`` in ``.dlt/secrets.toml``. Try it::

    python -m pipelines.examples.dlt_pipeline --sandbox --workspace-id 65f1a2b3c4d5e6f7890a1b2c
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import orjson

from destinations.outreach_magic import outreach_magic
from pipelines.examples._common import add_target_arguments, target_from_args

CRM_LEADS = Path(__file__).parent / "data" / "warehouse" / "crm_leads.csv"


@dlt.resource(name="crm_contacts", write_disposition="append")
def crm_contacts(crm_csv: str = str(CRM_LEADS)) -> Iterator[dict[str, Any]]:
    """Your resource: here rows of a CRM export, renamed to the API's field names.

    (The argument is not called ``path``: dlt injects resource arguments from config, and
    would find ``PATH`` in the environment.)
    """
    with open(crm_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            yield {
                "lead_email": row["email"] or None,
                "lead_linkedin_url": row["linkedin_url"] or None,
                "lead_first_name": row["first_name"],
                "lead_last_name": row["last_name"],
                "lead_job_title": row["title"] or None,
            }


def run_pipeline(
    data: Any,
    *,
    state_path: str,
    base_url: str,
    api_key: str | None = None,
    workspace_id: str | None = None,
    pipeline_name: str = "crm_to_outreach_magic",
) -> Any:
    """Run ``data`` (any dlt resource, source or iterable of rows) into Outreach Magic; returns dlt's load info.

    ``api_key=None`` lets dlt resolve it from its secrets. dlt's working folder goes beside
    the state file, so keeping that one folder keeps both.
    """
    kwargs: dict[str, Any] = {"base_url": base_url, "state_path": state_path, "workspace_id": workspace_id}
    if api_key:
        kwargs["api_key"] = api_key
    pipeline = dlt.pipeline(
        pipeline_name=pipeline_name,
        pipelines_dir=str(Path(state_path).parent / "dlt"),
        destination=outreach_magic(**kwargs),
    )
    return pipeline.run(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.examples.dlt_pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="?", default=str(CRM_LEADS), help="CRM export (default: bundled crm_leads.csv)")
    add_target_arguments(parser, ".outreach_magic/dlt_pipeline.duckdb")
    args = parser.parse_args(argv)
    Path(args.state).parent.mkdir(parents=True, exist_ok=True)
    with target_from_args(args) as t:
        try:
            info = run_pipeline(crm_contacts(args.csv), state_path=t.state_path, base_url=t.base_url,
                                api_key=t.api_key, workspace_id=t.constants.get("workspace_id"))
        except Exception as exc:  # dlt wraps the destination's error; show it without a traceback
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    if args.json:
        sys.stdout.write(orjson.dumps({"loads": [str(p) for p in info.loads_ids]}).decode() + "\n")
    else:
        print(info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
