"""The runner, the ``outreach-magic`` command line, example pipelines and orchestrator glue."""

import os

# Arrow's allocator for every process that starts here (the CLI, a script importing the
# runner), set before anything imports pyarrow, which reads it once at import. The default
# (mimalloc) reserves a 1 GiB arena and keeps freed pages resident: the 1,000,000-row sync
# peaked 55-65 MB higher with it than with the system allocator, at the same speed
# (``python bench/sync.py``). A host that imported pyarrow first keeps its own choice, and
# so does anyone who sets the variable.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
