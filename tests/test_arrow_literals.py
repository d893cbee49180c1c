"""Arrow values built from buffers, and a sync that never makes pyarrow import pandas.

pyarrow imports pandas (45 MB of RSS) on its first conversion of a Python or NumPy value;
the sync's own path avoids such conversions. These tests pin both halves: the helpers give
exactly what pyarrow's own constructors give, and a sync run in a fresh process leaves
pandas unimported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from destinations.outreach_magic.arrow_literals import (
    FALSE,
    TRUE,
    as_numpy,
    literal,
    numeric_array,
    string_array,
    string_list_array,
)
from tests.sandbox_helpers import lead_by, sandbox_leads

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        (None, pa.string()), (None, pa.list_(pa.string())), (None, pa.int64()),
        (True, pa.bool_()), (False, pa.bool_()), ("", pa.string()), ("héllo ✓", pa.string()),
        ("x", pa.large_string()), (b",", pa.binary()), (b"[", pa.large_binary()),
        (0, pa.int32()), (-7, pa.int64()), (254, pa.int32()), (2**40, pa.uint64()),
        (2.0**53, pa.float64()), (0.5, pa.float32()),
    ],
)
def test_a_literal_equals_what_pa_scalar_gives(value: Any, type_: pa.DataType) -> None:
    got = literal(value, type_)
    assert got.type == type_
    assert got.equals(pa.scalar(value, type_))
    assert got.as_py() == value


def test_true_and_false_are_boolean_scalars() -> None:
    assert TRUE.as_py() is True and FALSE.as_py() is False and TRUE.type == pa.bool_()


def test_a_literal_of_an_unsupported_type_is_refused() -> None:
    with pytest.raises(TypeError, match="no literal of type"):
        literal(1, pa.timestamp("us"))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint32, np.uint64, np.float32, np.float64, np.bool_])
def test_a_numeric_array_equals_pa_array_with_and_without_a_mask(dtype: Any) -> None:
    rng = np.random.default_rng(7)
    values = (rng.integers(0, 2, 67) if dtype is np.bool_ else rng.integers(-50, 50, 67)).astype(dtype)
    if np.issubdtype(dtype, np.unsignedinteger):
        values = np.abs(values)
    assert numeric_array(values).equals(pa.array(values))
    mask = rng.integers(0, 2, 67).astype(bool)
    assert numeric_array(values, mask=mask).equals(pa.array(values, mask=mask))
    strided = values[::3]  # not contiguous: copied, not viewed past its end
    assert numeric_array(strided).equals(pa.array(strided))
    assert len(numeric_array(values[:0])) == 0


def test_a_string_array_equals_pa_array() -> None:
    values = ["a", None, "héllo ✓", "", "linkedin.com/in/x", None]
    got = string_array(values)
    assert got.equals(pa.array(values, pa.string()))
    assert got.null_count == 2
    assert string_array([]).equals(pa.array([], pa.string()))
    assert string_array(["x", "y"]).null_count == 0


def test_a_string_list_array_equals_pa_array() -> None:
    values = [["a", "b"], None, [], ["é", None], None, ["x"]]
    got = string_list_array(values)
    assert got.equals(pa.array(values, pa.list_(pa.string())))
    assert got.null_count == 2
    assert string_list_array([]).equals(pa.array([], pa.list_(pa.string())))


def test_as_numpy_equals_to_numpy_for_slices_chunks_booleans_and_nulls() -> None:
    ints = pa.array(np.arange(100, dtype=np.int64))
    assert as_numpy(ints[13:71]).tolist() == ints[13:71].to_numpy().tolist()
    bools = pa.array(np.arange(100) % 3 == 0)
    for start, stop in [(0, 100), (5, 6), (3, 90), (99, 100), (7, 7)]:
        got = as_numpy(bools[start:stop])
        assert got.dtype == np.bool_
        assert got.tolist() == bools[start:stop].to_numpy(zero_copy_only=False).tolist()
    chunked = pa.chunked_array([ints[0:3], ints[50:52]])
    assert as_numpy(chunked).tolist() == [0, 1, 2, 50, 51]
    with_nulls = pa.array([1, None, 3])
    assert as_numpy(with_nulls).tolist()[::2] == [1.0, 3.0]  # to_numpy's answer: NaN for null
    assert as_numpy(pa.array(["a"])).tolist() == ["a"]  # other types: to_numpy itself


_CHILD = """
import json, sys
from pipelines.runner import SyncRequest, run_sync
report = run_sync(SyncRequest(sources=[sys.argv[1]], api_key="test-key", base_url=sys.argv[2], state_path=sys.argv[3]))
print(json.dumps({"applied": report.applied, "invalid": report.invalid, "exit": report.exit_code,
                  "pandas": "pandas" in sys.modules}))
"""


def _sync_in_child(source: Path, url: str, state: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(source), url, str(state)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _export(path: Path, title: str) -> Path:
    """Rows as an enrichment export fills them, with the values that take the slower paths
    of normalization: mixed-case LinkedIn URLs, sub-domains and URLs as domains, employee
    ranges in the count column, mojibake, one invalid row."""
    duckdb.sql(f"""
    COPY (SELECT
      CASE WHEN i = 7 THEN 'not an email' ELSE 'Person' || i || '@Company' || (i % 40) || '.example.com' END
        AS lead_email,
      'https://WWW.linkedin.com/in/Person-' || i || '/?trk=x' AS lead_linkedin_url,
      CASE WHEN i % 50 = 0 THEN 'JÃ¼rgen' ELSE 'First' || i END AS lead_first_name,
      '{title} ' || (i % 5) AS lead_job_title,
      CASE WHEN i % 3 = 0 THEN 'https://www.company' || (i % 40) || '.co.uk/about'
           ELSE 'company' || (i % 40) || '.co.uk' END AS company_domain,
      CASE WHEN i % 4 = 0 THEN '51-200' ELSE CAST(10 + i % 90 AS VARCHAR) END AS company_employee_count
     FROM range(2000) t(i)) TO '{path}' (FORMAT parquet)
    """)
    return path


def test_a_sync_never_imports_pandas(sandbox_server: Any, tmp_path: Path) -> None:
    """A first sync of a new state, then a sync of a changed export, each in a fresh process:
    read, normalized (the slow paths too), merged, diffed and sent without pandas."""
    state = tmp_path / "state.duckdb"
    first = _sync_in_child(_export(tmp_path / "a.parquet", "Title"), sandbox_server.url, state)
    assert (first["applied"], first["invalid"], first["pandas"]) == (1999, 1, False)
    second = _sync_in_child(_export(tmp_path / "b.parquet", "Head of"), sandbox_server.url, state)
    assert second["applied"] == 1999 and second["exit"] == 1  # the invalid row is still invalid
    assert second["pandas"] is False
    (lead,) = lead_by(sandbox_leads(sandbox_server.url, "test-key"), "lead_email", "person50@company10.example.com")
    assert lead["attributes"]["lead_first_name"] == "Jürgen"  # mojibake repaired
    assert lead["attributes"]["lead_job_title"] == "Head of 0"  # the second sync's change


@pytest.mark.parametrize("fixture", ["clay.csv", "zoominfo.csv", "heyreach.json", "prosp.jsonl", "lusha_api.json"])
def test_an_export_syncs_without_pandas(fixture: str, sandbox_server: Any, tmp_path: Path) -> None:
    """The presets' exports (CSV with duplicates and invalid rows, JSON documents with
    lists and derived fields) go through the readers' Python-value paths as well."""
    got = _sync_in_child(ROOT / "tests" / "fixtures" / "presets" / fixture, sandbox_server.url, tmp_path / "s.duckdb")
    assert got["applied"] >= 3
    assert got["pandas"] is False
