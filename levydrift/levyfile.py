"""Levy records from a file (CSV, Parquet, JSONL), validated by the same rules as the stream.

A file arrives as columns, so it is checked as columns: Parquet and CSV are read straight into
typed columns and screened with ``schemas.levy_record.rows_breaking_rules`` (the codec's rules,
vectorised); JSONL lines are message values for ``decode_levy_batch``. A row the screen flags
goes through the codec as the JSON a producer would send, so the reason is the codec's own and
a file the check accepts is a file the consumer would accept (``levydrift check`` also applies
the consumer's ``consumer.max_event_time_ahead_s`` to the rows' dates). The first bad row stops
the read
with a one-line ``UsageError`` naming the row (1 = the first record) and the column. Columns of
a type the screen does not take (booleans, dates, dictionaries of anything but text) take the
per-row codec path.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from levydrift.errors import UsageError
from levydrift.progress import Progress
from schemas.errors import RecordRejected, Rejection
from schemas.levy_record import (
    FIELDS,
    NUMERIC_FIELDS,
    REQUIRED_FIELDS,
    decode_levy_batch,
    decode_levy_record,
    rows_breaking_rules,
)
from schemas.timestamps import CANONICAL_FORM

if TYPE_CHECKING:  # pandas is imported for CSV only: a Parquet read starts ~0.2 s sooner
    import pandas as pd

FORMATS = (".csv", ".parquet", ".jsonl", ".ndjson")
_INT64_LIMIT = 2.0 ** 63
_INTEGER_FIELDS = ("schema_version", "tax_year")  # 2026, not 2026.0
# Few distinct values (counties, districts, classes): read from Parquet as dictionaries, so
# each distinct value becomes one Python str that its rows share, not one str per row.
_CATEGORY_FIELDS = ["county", "tax_district", "property_class"]
Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class FileColumns:
    """A file's validated columns, and what Arrow read of them without a Python object per
    row, for the detectors: the event times as int64 epoch ms (CSV, Parquet: when every one
    has the producers' form ``2026-01-01T18:17:48.000Z``; ~0.03 s per 1 M rows, without
    holding the GIL), else None; and each category field stored as a Parquet dictionary as
    (indices, distinct values), -1 where missing."""

    columns: Columns
    times_ms: np.ndarray | None = None
    dictionaries: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def read_levy_file(path: Path, progress: Progress | None = None,
                   fields: Collection[str] = FIELDS) -> Columns:
    """The file's records as columns (``levy_records_to_columns``), in file order. Every field
    is validated; the ``fields`` are returned (a Parquet text field left out is never made
    Python strings)."""
    return read_levy_file_columns(path, progress, fields).columns


def read_levy_file_columns(path: Path, progress: Progress | None = None,
                           fields: Collection[str] = FIELDS) -> FileColumns:
    """``read_levy_file``, with what Arrow read for the detectors (``FileColumns``)."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"{path}: unknown file type {suffix or '(none)'!r}; use "
                         + ", ".join(FORMATS))
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        if suffix in (".jsonl", ".ndjson"):
            read = FileColumns(_jsonl_columns(path))
        else:
            read = _table_columns(path, suffix, progress, fields)
    except OSError as error:
        raise UsageError(f"{path}: cannot be read: {error.strerror or error}") from None
    return replace(read, columns={name: read.columns[name] for name in FIELDS if name in fields})


def _refuse(path: Path, rows: list[int], rejections: list[tuple[int, Rejection]]) -> None:
    """The one-line error naming the first bad row, when there is one."""
    if rejections:
        index, rejection = rejections[0]
        column = f", column {rejection.field}" if rejection.field else ""
        more = f" ({len(rejections) - 1} more bad rows)" if len(rejections) > 1 else ""
        raise UsageError(f"{path}: row {rows[index]}{column}: {rejection.reason}: "
                         f"{rejection.message}{more}")


def _no_records(path: Path) -> UsageError:
    return UsageError(f"{path}: no records (the file is empty)")


def _jsonl_columns(path: Path) -> Columns:
    rows, values = _jsonl_values(path)
    if not values:
        raise _no_records(path)
    columns, _, rejections = decode_levy_batch(values)
    _refuse(path, rows, rejections)
    return columns


def _table_columns(path: Path, suffix: str, progress: Progress | None,
                   fields: Collection[str]) -> FileColumns:
    table = _read_table(path, suffix)
    csv = suffix == ".csv"
    if table is None or table.num_rows == 0:
        raise _no_records(path)
    missing = [name for name in REQUIRED_FIELDS if name not in table.column_names]
    if missing:
        raise UsageError(f"{path}: row 1, column {missing[0]}: missing_field: the file has no "
                         f"{missing[0]} column")
    if progress is not None:
        progress.total = table.num_rows
    # Each wanted dictionary column decoded once: for its texts and for the detectors.
    codings = {name: _dictionary_coding(table.column(name)) for name in table.column_names
               if name in fields and _is_text_dictionary(table.column(name).type)}
    typed = (_typed_columns(table, csv, fields, codings)
             if set(table.column_names) <= set(FIELDS) else None)
    if typed is None:  # a column the screen does not take: every row through the codec
        return FileColumns(_per_row_columns(path, table, csv, progress))
    columns, unparsed, screened = typed
    flagged = np.flatnonzero(rows_breaking_rules(screened) | unparsed).tolist()
    if flagged:
        _refuse(path, list(range(1, table.num_rows + 1)),
                _codec_reasons(table, csv, flagged))
    if progress is not None:
        progress.update(table.num_rows)
    dictionaries = {name: coding for name, coding in codings.items()
                    if name in _CATEGORY_FIELDS and _distinct(coding[1])}
    return FileColumns(columns, _canonical_event_times(table.column("event_time")),
                       dictionaries)


def _canonical_event_times(column: pa.ChunkedArray) -> np.ndarray | None:
    """Epoch ms of a screened event-time column when every value has the canonical form
    (of the RFC 3339 times the screen passes, the only ones of its length), read by Arrow's
    ISO 8601 cast (to the millisecond, as ``event_times_ms`` reads them);
    None for any other column."""
    if not _is_text(column.type) or column.null_count or not len(column):
        return None
    if not pc.all(pc.equal(pc.binary_length(column), len(CANONICAL_FORM))).as_py():
        return None
    stamps = pc.cast(column, pa.timestamp("ms", tz="UTC"))
    times: np.ndarray = pc.cast(stamps, pa.int64()).to_numpy()
    return times


def _typed_columns(table: pa.Table, csv: bool, fields: Collection[str],
                   codings: dict[str, tuple[np.ndarray, np.ndarray]]
                   ) -> tuple[Columns, np.ndarray, dict[str, Any]] | None:
    """The fields as ``levy_records_to_columns`` gives them (at least ``fields``; a text
    dictionary column from its ``codings`` entry), a mask of CSV cells that are text where a
    number belongs, and every column as the screen takes it (Parquet text stays in Arrow);
    None when a column has a type the screen does not take."""
    count = table.num_rows
    unparsed = np.zeros(count, dtype=bool)
    columns: Columns = {}
    screened: dict[str, Any] = {}
    for name in FIELDS:
        if name not in table.column_names:  # only the optional actual levy can be absent
            columns[name] = screened[name] = np.full(count, np.nan)
            continue
        column = table.column(name)
        if pa.types.is_null(column.type):  # all null: no type to go by
            column = column.cast(pa.string())
        if csv:  # text: "" is null, numbers are parsed; what is not a number is refused
            if name in NUMERIC_FIELDS:
                numbers, text_cells = _csv_numbers(column)
                unparsed |= text_cells
            else:
                texts = column.to_numpy(zero_copy_only=False).astype(object, copy=False)
                texts[texts == ""] = None
        elif name in NUMERIC_FIELDS:
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                    or (_is_text(column.type) and column.null_count == len(column))):
                return None
            numbers = (pc.cast(column, pa.float64(), safe=False)
                       .to_numpy(zero_copy_only=False))
        elif _is_text(column.type) or _is_text_dictionary(column.type):
            screened[name], texts = _parquet_texts(column, name in fields, codings.get(name))
        else:
            return None
        if name not in NUMERIC_FIELDS:
            if texts is not None:
                columns[name] = texts
            screened.setdefault(name, texts)
            continue
        if name == "actual_levy_amount":  # JSON has no NaN or Infinity: they become null
            numbers = np.where(np.isfinite(numbers), numbers, np.nan)
        columns[name] = screened[name] = numbers
    return columns, unparsed, screened


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _parquet_texts(column: pa.ChunkedArray, wanted: bool,
                   coding: tuple[np.ndarray, np.ndarray] | None
                   ) -> tuple[pa.ChunkedArray, np.ndarray | None]:
    """A Parquet text column as the screen takes it (Arrow text, a dictionary as it is) and,
    if ``wanted``, as an object array of str (None where null; a dictionary's from its
    ``coding``)."""
    if pa.types.is_dictionary(column.type):
        return column, _dictionary_texts(*coding) if wanted and coding is not None else None
    return column, (column.to_numpy(zero_copy_only=False).astype(object, copy=False)
                    if wanted else None)


def _is_text_dictionary(kind: pa.DataType) -> bool:
    return pa.types.is_dictionary(kind) and _is_text(kind.value_type)


def _dictionary_texts(indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A dictionary column (``_dictionary_coding``) as an object array of str (None where
    null): one str per distinct value, shared by its rows."""
    texts: np.ndarray = np.array([*values, None], dtype=object)[indices]  # -1: the None
    return texts


def _dictionary_coding(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A dictionary column as (indices, -1 where null; its values as an object array)."""
    column = column.unify_dictionaries()  # one dictionary for every chunk
    dictionary = column.chunk(0).dictionary if column.num_chunks else pa.array([], pa.string())
    values = np.array(dictionary.to_pylist(), dtype=object)
    indices = pa.chunked_array([chunk.indices for chunk in column.chunks],
                               column.type.index_type)
    return pc.fill_null(indices, -1).to_numpy().astype(np.int64, copy=False), values


def _distinct(values: np.ndarray) -> bool:
    """Whether a dictionary's values are distinct strs (a value's rows then share one
    index)."""
    texts = values.tolist()
    return None not in texts and len(set(texts)) == len(texts)


def _csv_numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """float64 values of a CSV column (NaN for an empty cell), and a mask of the cells that
    are text, not numbers (``_csv_values`` sends those to the codec as strings)."""
    import pandas as pd  # lazy: CSV only

    text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
    empty = (text == "").to_numpy() | text.isna().to_numpy()
    numbers = pd.to_numeric(text.where(~empty), errors="coerce").to_numpy(dtype=np.float64)
    return numbers, ~empty & np.isnan(numbers)


def _codec_reasons(table: pa.Table, csv: bool,
                   rows: list[int]) -> list[tuple[int, Rejection]]:
    """The codec's verdict on each flagged row, sent as the JSON a producer would send."""
    values = _table_values(table, csv, rows)
    rejections = []
    for row, value in zip(rows, values, strict=True):
        try:
            decode_levy_record(value)
        except RecordRejected as error:
            rejections.append((row, error.rejection))
    return rejections


def _per_row_columns(path: Path, table: pa.Table, csv: bool,
                     progress: Progress | None) -> Columns:
    values = _table_values(table, csv, range(table.num_rows), progress)
    columns, _, rejections = decode_levy_batch(values)
    _refuse(path, list(range(1, len(values) + 1)), rejections)
    return columns


def _jsonl_values(path: Path) -> tuple[list[int], list[bytes]]:
    """Non-blank lines as message values; rows are line numbers."""
    rows, values = [], []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if line:
                rows.append(number)
                values.append(line)
    return rows, values


def _table_values(table: pa.Table, csv: bool, rows: Any,
                  progress: Progress | None = None) -> list[bytes]:
    """``rows`` of ``table`` as the JSON objects a producer would send."""
    lists = {name: _csv_values(name, table.column(name).to_pandas()) if csv
             else table.column(name).to_pylist() for name in table.column_names}
    names = list(lists)
    dumps = orjson.dumps
    values: list[bytes] = []
    selected = zip(*(map(column.__getitem__, rows) for column in lists.values()), strict=True)
    while chunk := list(itertools.islice(selected, 65_536)):  # the slow part of a big file
        values.extend(dumps(dict(zip(names, row, strict=True))) for row in chunk)
        if progress is not None:
            progress.update(len(values))
    return values


def _read_table(path: Path, suffix: str) -> pa.Table | None:
    """The file as an Arrow table (a CSV as text columns); None for an empty CSV."""
    try:
        if suffix == ".parquet":
            return _without_pandas_index(pq.read_table(path, read_dictionary=_CATEGORY_FIELDS))
        return _read_csv_table(path)
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 - pandas and pyarrow raise many kinds
        raise UsageError(f"{path}: cannot be read: {str(error).splitlines()[0]}") from None


def _read_csv_table(path: Path) -> pa.Table | None:
    import pandas as pd  # lazy: CSV only

    # Text, not inferred types: a stray "n/a" must be reported in its own row, not turn
    # the whole column into strings.
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return None
    return pa.Table.from_pandas(frame, preserve_index=False)


def _without_pandas_index(table: pa.Table) -> pa.Table:
    """The table without the index pandas stored as columns (``__index_level_0__`` when a
    sorted or filtered frame was written without ``index=False``): pandas itself reads them
    back as the index, not as data, and so does ``levydrift train``."""
    metadata = table.schema.pandas_metadata or {}
    stored = [name for name in metadata.get("index_columns", [])
              if isinstance(name, str) and name in table.column_names]
    return table.drop_columns(stored) if stored else table


def _csv_values(name: str, text: pd.Series) -> list[Any]:
    """CSV text to JSON types: numbers where the text is a number, null where it is empty,
    and the text itself otherwise (which the codec then refuses, naming the row)."""
    import pandas as pd  # lazy: CSV only

    empty = (text == "").to_numpy()
    if name not in NUMERIC_FIELDS:
        values = text.to_numpy(dtype=object)
        values[empty] = None
        return values.tolist()
    numbers = pd.to_numeric(text.where(~empty), errors="coerce").to_numpy(dtype=float)
    parsed = ~np.isnan(numbers)
    # Whole numbers that fit int64 become ints; anything else stays as read, for the codec to
    # judge (a cast would turn 1e30 into a wrong, possibly valid-looking number).
    if (name in _INTEGER_FIELDS and np.all(np.abs(numbers) < _INT64_LIMIT)
            and np.all(numbers % 1 == 0)):
        return numbers.astype(np.int64).tolist()
    values = numbers.astype(object)
    values[~parsed] = text.to_numpy(dtype=object)[~parsed]
    values[empty] = None
    return values.tolist()


__all__ = ["FIELDS", "FORMATS", "FileColumns", "read_levy_file", "read_levy_file_columns"]
