"""Levy records from a file (CSV, Parquet, JSONL), validated by the same codec as the stream.

Every row goes through ``schemas.levy_record.decode_levy_records`` as the JSON a producer would
send, so a file the check accepts is a file the consumer would accept. The first bad row stops
the read with a one-line ``UsageError`` naming the row (1 = the first record) and the column.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq

from levydrift.errors import UsageError
from levydrift.progress import Progress
from schemas.levy_record import (
    FIELDS,
    NUMERIC_FIELDS,
    REQUIRED_FIELDS,
    decode_levy_records,
    levy_records_to_columns,
)

FORMATS = (".csv", ".parquet", ".jsonl", ".ndjson")
_INTEGER_FIELDS = ("schema_version", "tax_year")  # 2026, not 2026.0


def read_levy_file(path: Path, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """The file's records as columns (``levy_records_to_columns``), in file order."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"{path}: unknown file type {suffix or '(none)'!r}; use "
                         + ", ".join(FORMATS))
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        if suffix in (".jsonl", ".ndjson"):
            rows, values = _jsonl_values(path)
        else:
            rows, values = _table_values(path, suffix, progress)
    except OSError as error:
        raise UsageError(f"{path}: cannot be read: {error.strerror or error}") from None
    if not values:
        raise UsageError(f"{path}: no records (the file is empty)")
    records, rejections = decode_levy_records(values)
    if rejections:
        index, rejection = rejections[0]
        column = f", column {rejection.field}" if rejection.field else ""
        more = f" ({len(rejections) - 1} more bad rows)" if len(rejections) > 1 else ""
        raise UsageError(f"{path}: row {rows[index]}{column}: {rejection.reason}: "
                         f"{rejection.message}{more}")
    return levy_records_to_columns(records)


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


def _table_values(path: Path, suffix: str,
                  progress: Progress | None = None) -> tuple[list[int], list[bytes]]:
    table = _read_table(path, suffix)
    names = list(table)
    missing = [name for name in REQUIRED_FIELDS if name not in names]
    count = len(next(iter(table.values()), []))
    if missing and count:
        raise UsageError(f"{path}: row 1, column {missing[0]}: missing_field: the file has no "
                         f"{missing[0]} column")
    if progress is not None:
        progress.total = count
    dumps = orjson.dumps
    values: list[bytes] = []
    table_rows = zip(*table.values(), strict=True)
    while chunk := list(itertools.islice(table_rows, 65_536)):  # the slow part of a big file
        values.extend(dumps(dict(zip(names, row, strict=True))) for row in chunk)
        if progress is not None:
            progress.update(len(values))
    return list(range(1, len(values) + 1)), values


def _read_table(path: Path, suffix: str) -> dict[str, list[Any]]:
    """Columns as lists of JSON-ready values (None for a missing value)."""
    try:
        if suffix == ".parquet":
            return pq.read_table(path).to_pydict()
        # Text, not inferred types: a stray "n/a" must be reported in its own row, not turn
        # the whole column into strings.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return {}
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 - pandas and pyarrow raise many kinds
        raise UsageError(f"{path}: cannot be read: {str(error).splitlines()[0]}") from None
    return {name: _csv_values(name, frame[name]) for name in frame.columns}


def _csv_values(name: str, text: pd.Series) -> list[Any]:
    """CSV text to JSON types: numbers where the text is a number, null where it is empty,
    and the text itself otherwise (which the codec then refuses, naming the row)."""
    empty = (text == "").to_numpy()
    if name not in NUMERIC_FIELDS:
        values = text.to_numpy(dtype=object)
        values[empty] = None
        return values.tolist()
    numbers = pd.to_numeric(text.where(~empty), errors="coerce").to_numpy(dtype=float)
    parsed = ~np.isnan(numbers)
    if name in _INTEGER_FIELDS and parsed.all() and np.all(numbers % 1 == 0):
        return numbers.astype(np.int64).tolist()
    values = numbers.astype(object)
    values[~parsed] = text.to_numpy(dtype=object)[~parsed]
    values[empty] = None
    return values.tolist()


__all__ = ["FIELDS", "FORMATS", "read_levy_file"]
