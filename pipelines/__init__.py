"""The runner, the ``outreach-magic`` command line, example pipelines and orchestrator glue."""
