"""CSV / TSV / TXT: every column a string, streamed, delimiter and encoding detected.

Why this shape (measured on this machine, 200k rows x 12 columns):
- pyarrow's streaming CSV reader parses about 1.2M rows/s; Python's `csv` module plus
  Arrow conversion about 70k rows/s. So pyarrow is the fast path.
- The reader is given the PATH, not a Python file object: with a file object, abandoning
  the generator early deadlocks pyarrow's read-ahead thread against the GIL (observed).
- pyarrow cannot say WHERE it skipped a malformed row (`InvalidRow.number` is None), and
  `_om_row` must be the exact record position. So the fast path runs in strict mode;
  at the first malformed record it stops, and a Python `csv` reader continues from the
  first record not yet yielded, reporting each ragged record with its position. A record
  whose extra fields are all empty (a trailing delimiter some exporters write) is kept. Clean
  files never pay for the slow path; damaged ones (usually small hand-edited exports) do.
- No type inference at all: ids, zip codes and phone numbers keep leading zeros.
  Empty cells (quoted or not) become null.
- Encoding: a UTF-16 BOM means UTF-16 (Excel's "Unicode text" export); otherwise the file
  is checked to be valid UTF-8 in one streaming pass (about 1 GB/s). If it is not, it is
  decoded as Windows-1252 (a superset of Latin-1 for printable text, what Excel writes in
  Western locales), with the five bytes cp1252 leaves undefined mapped as Latin-1, and an
  "encoding" issue is reported. A UTF-8 BOM is stripped.
- Delimiter: a first line `sep=;` (Excel's own hint) wins; otherwise among `,` `;` TAB `|`,
  the one that splits the first 64 KiB into the most consistent number of fields (>1) wins;
  ties go to the file extension's default.
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from destinations.outreach_magic.arrow_literals import numeric_array, string_array

from ._common import IssueSink, SourceIssue, add_provenance, add_provenance_rows, dedupe_names

CANDIDATE_DELIMITERS = (",", ";", "\t", "|")
SAMPLE_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: pyarrow's block size. Its streaming reader reads about 32 blocks ahead of the consumer
#: (measured: ~41 MB held at 1.2 MB blocks on a 127 MB file, independent of file size),
#: so this bounds memory; small blocks are combined into batches of `batch_rows`.
BLOCK_BYTES = 1 << 20
LENIENT_CP1252 = "om_cp1252_lenient"
_CP1252_UNDEFINED = (0x81, 0x8D, 0x8F, 0x90, 0x9D)
_DECODING_TABLE = "".join(
    chr(i) if i in _CP1252_UNDEFINED else bytes([i]).decode("cp1252") for i in range(256)
)


def _lenient_decode(data: Any, errors: str = "strict") -> tuple[str, int]:
    return codecs.charmap_decode(bytes(data), errors, _DECODING_TABLE)


class _LenientIncrementalDecoder(codecs.IncrementalDecoder):
    def decode(self, input: Any, final: bool = False) -> str:
        return codecs.charmap_decode(bytes(input), self.errors, _DECODING_TABLE)[0]


def _search(name: str) -> codecs.CodecInfo | None:
    if name != LENIENT_CP1252:
        return None
    return codecs.CodecInfo(
        name=LENIENT_CP1252,
        encode=codecs.getencoder("cp1252"),
        decode=_lenient_decode,
        incrementaldecoder=_LenientIncrementalDecoder,
    )


codecs.register(_search)


def detect_encoding(path: Path, limit: int | None = None) -> tuple[str, bool]:
    """Return (python codec name, was_fallback). Streams the file (or its first `limit` bytes)."""
    with path.open("rb") as fh:
        head = fh.read(4)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16", False
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        seen = 0
        try:
            while chunk := fh.read(1 << 20 if limit is None else min(1 << 20, limit - seen)):
                decoder.decode(chunk)
                seen += len(chunk)
            if limit is None or seen < limit:
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return LENIENT_CP1252, True
    return "utf-8-sig", False


def _sample_text(path: Path, encoding: str) -> tuple[str, bool]:
    """First SAMPLE_BYTES decoded; the flag says whether that is the whole file."""
    with path.open("rb") as fh:
        raw = fh.read(SAMPLE_BYTES + 1)
        # A header longer than the sample (10,000 columns) must still be read whole, or
        # its names would be cut short: extend to the first line break, up to a cap.
        while len(raw) > SAMPLE_BYTES and b"\n" not in raw and len(raw) < MAX_HEADER_BYTES:
            more = fh.read(1 << 20)
            if not more:
                break
            raw += more
    limit = max(SAMPLE_BYTES, raw.find(b"\n") + 1)
    whole = len(raw) <= limit
    raw = raw[:limit]
    return codecs.getincrementaldecoder(encoding)(errors="ignore").decode(raw, final=whole), whole


def sniff(path: Path, encoding: str, default: str = ",") -> tuple[str, list[str], int]:
    """Detect the delimiter and parse the header row (raw names, before de-duplication).

    Returns (delimiter, header, lines to skip before the header). Excel writes and honours a
    first line `sep=;` naming the delimiter: it is obeyed and skipped.
    """
    text, whole = _sample_text(path, encoding)
    text = text.lstrip("\ufeff")
    first, _, rest = text.partition("\n")
    if first.rstrip("\r").lower().startswith("sep=") and len(first.rstrip("\r")) == 5:
        delim = first.rstrip("\r")[4]
        for row in csv.reader(io.StringIO(rest, newline=""), delimiter=delim):
            if row:
                return delim, row, 1
        return delim, [], 1
    if not whole:  # drop a partial last line so it does not spoil the field counts
        cut = max(text.rfind("\n"), text.rfind("\r"))
        if cut > 0:
            text = text[:cut]
    best: tuple[float, int, int] | None = None
    best_delim = default
    for delim in CANDIDATE_DELIMITERS:
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delim))
        except csv.Error:
            continue
        rows = [r for r in rows if r]
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        consistent = sum(1 for r in rows if len(r) == width) / len(rows)
        score = (consistent, width, 1 if delim == default else 0)
        if best is None or score > best:
            best, best_delim = score, delim
    for row in csv.reader(io.StringIO(text, newline=""), delimiter=best_delim):
        if row:
            return best_delim, row, 0
    return best_delim, [], 0


def default_delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def list_csv_columns(path: Path) -> list[str]:
    """The header only: encoding judged on the first SAMPLE_BYTES, not the whole file."""
    encoding, _ = detect_encoding(path, limit=SAMPLE_BYTES)
    _, header, _ = sniff(path, encoding, default_delimiter(path))
    return dedupe_names(header)


def read_delimited(path: Path, batch_rows: int, sink: IssueSink) -> Iterator[pa.RecordBatch]:
    label = path.name
    encoding, fell_back = detect_encoding(path)
    if fell_back:
        sink.report(
            SourceIssue(
                label,
                "encoding",
                "file is not valid UTF-8; decoded as Windows-1252 (cp1252). Re-export as UTF-8 if "
                "accented letters look wrong.",
            )
        )
    delimiter, header, preamble = sniff(path, encoding, default_delimiter(path))
    if not header:
        return
    names = dedupe_names(header)
    width = len(header)
    def strict(_row: object) -> str:
        return "error"

    auto = [f"f{i}" for i in range(width)]
    yielded = 0  # data records already yielded by the fast path
    pending: list[pa.RecordBatch] = []
    try:
        reader = pacsv.open_csv(
            str(path),
            read_options=pacsv.ReadOptions(
                autogenerate_column_names=True,
                encoding=encoding.replace("-sig", ""),
                block_size=BLOCK_BYTES,
                use_threads=False,
                skip_rows=preamble,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=strict
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(auto, pa.string()),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        header_pending = True
        for batch in reader:
            if header_pending:
                batch = batch.slice(1)
                header_pending = False
            pending.append(batch)
            if sum(b.num_rows for b in pending) < batch_rows:
                continue
            combined = pa.Table.from_batches(pending).combine_chunks()
            pending = []
            for part in combined.to_batches(max_chunksize=batch_rows):
                if part.num_rows < batch_rows:
                    pending.append(part)  # the remainder waits for the next block
                    continue
                yield add_provenance(part, label, yielded + 1, names)
                yielded += part.num_rows
        for part in pa.Table.from_batches(pending, schema=reader.schema).combine_chunks().to_batches():
            if part.num_rows:
                yield add_provenance(part, label, yielded + 1, names)
                yielded += part.num_rows
        return
    except pa.ArrowInvalid:
        pass  # a malformed record: continue exactly where the fast path stopped
    yield from _read_slow(path, encoding, delimiter, width, names, yielded, batch_rows, sink, preamble)


def _read_slow(
    path: Path,
    encoding: str,
    delimiter: str,
    width: int,
    names: list[str],
    skip: int,
    batch_rows: int,
    sink: IssueSink,
    preamble: int,
) -> Iterator[pa.RecordBatch]:
    label = path.name
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # exports carry long bios/notes
    with path.open("r", encoding=encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        for _ in range(preamble + 1):  # `sep=` line, header
            next(reader, None)
        record = 0
        rows: list[list[str]] = []
        numbers: list[int] = []
        for row in reader:
            if not row:
                continue  # a blank line is not a record (pyarrow skips them too)
            record += 1
            if record <= skip:
                continue
            if len(row) > width and not any(row[width:]):
                row = row[:width]  # trailing empty fields (`a,b,` under `x,y`): nothing is lost
            if len(row) != width:
                sink.report(
                    SourceIssue(
                        label,
                        "ragged_row",
                        f"expected {width} fields, found {len(row)}; row skipped",
                        row=record,
                        line=reader.line_num,
                    )
                )
                continue
            rows.append(row)
            numbers.append(record)
            if len(rows) >= batch_rows:
                yield _rows_to_batch(rows, numbers, names, label)
                rows, numbers = [], []
        if rows:
            yield _rows_to_batch(rows, numbers, names, label)


def _rows_to_batch(rows: list[list[str]], numbers: list[int], names: list[str], label: str) -> pa.RecordBatch:
    columns = [string_array([v or None for v in col]) for col in zip(*rows, strict=True)]
    batch = pa.RecordBatch.from_arrays(columns, names=[f"f{i}" for i in range(len(columns))])
    return add_provenance_rows(batch, label, numeric_array(np.asarray(numbers, dtype=np.int64)), names)
