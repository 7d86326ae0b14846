"""``levydrift check`` reads files as columns and screens them with the codec's rules
vectorised (``rows_breaking_rules``); the per-row path sends each row through the codec as
JSON. The two must agree on every file: the same error (row, column, reason, message, count)
for a bad one, equal columns for a good one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.composition import event_times_ms
from levydrift import levyfile
from levydrift.errors import UsageError
from schemas.errors import RecordRejected
from schemas.levy_record import (
    FIELDS,
    MONEY_MAX,
    NUMBER_BOUNDS,
    NUMERIC_FIELDS,
    TEXT_FIELDS,
    LevyRecord,
    decode_levy_record,
    rows_breaking_rules,
)
from tests.schemas.test_levy_record import GOOD, timestamps

# A numeric warning here means a value was turned into another (1e30 cast to int64), not read.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

# What a Parquet or CSV column can hold: numbers (or null) where numbers belong, text (or
# null) where text belongs, with values on and beyond every bound.
numbers = st.one_of(
    st.floats(), st.integers(-10**13, 10**13),
    st.sampled_from([0, -0.0, -1e-9, 1e-300, 0.1, 0.1000000001, MONEY_MAX, 10**12 + 1, 1900,
                     2100, 2101, 2024.0, 2024.5, 1, 1.0, 2, None, float("nan"), float("inf"),
                     1e30, 2.0 ** 63, -(2.0 ** 63), 9.3e18]))  # beyond int64 as well
texts = st.one_of(st.text(max_size=70), st.none(), st.sampled_from(["", "x" * 64, "x" * 65]))
value_for = {name: numbers for name in NUMERIC_FIELDS}
value_for.update(dict.fromkeys(TEXT_FIELDS, texts))
value_for["event_time"] = st.one_of(timestamps.filter(lambda x: isinstance(x, str)), texts)


@st.composite
def rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 6))
    table = []
    for _ in range(count):
        row = dict(GOOD)
        for name in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):
            row[name] = draw(value_for[name])
        table.append(row)
    return table


def outcome(action: Any) -> Any:
    try:
        columns = action()
    except UsageError as error:
        return str(error)
    return {name: column.tolist() if column.dtype == object else column
            for name, column in columns.items()}


def assert_same(got: Any, want: Any) -> None:
    assert type(got) is type(want), (got, want)
    if isinstance(want, str):
        assert got == want
        return
    assert list(got) == list(want)
    for name in want:
        if isinstance(want[name], list):
            assert got[name] == want[name], name
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def per_row(path: Path) -> Any:
    suffix = path.suffix
    table = levyfile._read_table(path, suffix)
    return lambda: levyfile._per_row_columns(path, table, suffix == ".csv", None)


@settings(max_examples=200, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(table=rows(), stored_as_dictionary=st.sets(st.sampled_from(TEXT_FIELDS), max_size=3))
def test_parquet_columns_and_rows_agree(table: list[dict[str, Any]],
                                        stored_as_dictionary: set[str], tmp_path: Path) -> None:
    """Text columns stored plain or as dictionaries (pandas categoricals); the category
    fields are read as dictionaries either way."""
    path = tmp_path / "records.parquet"
    try:
        arrow = pa.Table.from_pylist(table)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return  # not a file anyone can write: a column of numbers and text mixed
    for name in stored_as_dictionary:
        index = arrow.schema.get_field_index(name)
        if pa.types.is_string(arrow.schema.field(index).type):
            arrow = arrow.set_column(index, name, pc.dictionary_encode(arrow.column(name)))
    pq.write_table(arrow, path)
    assert_same(outcome(lambda: levyfile.read_levy_file(path)), outcome(per_row(path)))


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(table=rows(), junk=st.lists(st.sampled_from(["n/a", " ", "1,5", "nan", "1e400", "0x10"]),
                                   max_size=2), data=st.data())
def test_csv_columns_and_rows_agree(table: list[dict[str, Any]], junk: list[str],
                                    data: st.DataObject, tmp_path: Path) -> None:
    frame = pd.DataFrame(table).astype(object)
    for text in junk:  # what a spreadsheet leaves in a number column
        row = data.draw(st.integers(0, len(table) - 1))
        frame.at[row, data.draw(st.sampled_from(NUMERIC_FIELDS))] = text
    path = tmp_path / "records.csv"
    frame.to_csv(path, index=False)
    assert_same(outcome(lambda: levyfile.read_levy_file(path)), outcome(per_row(path)))


def as_arrow_text(texts: list[Any], form: str, chunk_rows: int) -> Any:
    """``texts`` as the screen may take them: an object array, or Arrow text (plain, or
    dictionaries of ``chunk_rows`` rows each, every chunk with its own dictionary)."""
    if form == "numpy":
        return np.array(texts, dtype=object)
    chunks = [pa.array(texts[start:start + chunk_rows], pa.string())
              for start in range(0, len(texts), chunk_rows)]
    if form == "dictionary":
        chunks = [pc.dictionary_encode(chunk) for chunk in chunks]
    return pa.chunked_array(chunks)


@settings(max_examples=300, deadline=None)
@given(rows(), st.sampled_from(["numpy", "arrow", "dictionary"]), st.integers(1, 6))
def test_the_screen_flags_exactly_the_rows_the_codec_refuses(
        table: list[dict[str, Any]], text_form: str, chunk_rows: int) -> None:
    """Typed columns (float64 with NaN for null; text as str or None, or in Arrow) against
    each row as JSON."""
    columns = {name: np.array([np.nan if row[name] is None else float(row[name])
                               for row in table], dtype=np.float64)
               if name in NUMERIC_FIELDS else
               as_arrow_text([row[name] for row in table], text_form, chunk_rows)
               for name in FIELDS}
    columns["actual_levy_amount"][~np.isfinite(columns["actual_levy_amount"])] = np.nan
    refused = []
    for row in table:
        try:
            decode_levy_record(orjson.dumps(row))
            refused.append(False)
        except RecordRejected:
            refused.append(True)
    assert rows_breaking_rules(columns).tolist() == refused


def test_a_bad_row_is_named_by_the_codec(tmp_path: Path) -> None:
    path = tmp_path / "records.parquet"
    bad = {**GOOD, "levy_rate": 0.5}
    pq.write_table(pa.Table.from_pylist([GOOD, GOOD, bad, bad]), path)
    with pytest.raises(UsageError) as caught:
        levyfile.read_levy_file(path)
    assert "row 3, column levy_rate: out_of_range: 0.5 is outside (0, 0.1]" in str(caught.value)
    assert "(1 more bad rows)" in str(caught.value)


def test_the_struct_states_the_bounds_of_the_one_table() -> None:
    """msgspec's fast path, the careful checks and the column screen share NUMBER_BOUNDS."""
    import msgspec.inspect

    fields = {field.name: field.type for field in msgspec.inspect.type_info(LevyRecord).fields}
    for name, (low, high, low_inclusive) in NUMBER_BOUNDS.items():
        kind = fields[name]
        if isinstance(kind, msgspec.inspect.UnionType):  # the optional actual levy
            kind = next(t for t in kind.types if isinstance(t, msgspec.inspect.FloatType))
        assert (kind.ge, kind.gt) == ((low, None) if low_inclusive else (None, low)), name
        assert kind.le == high, name


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_fields_left_out_are_validated_all_the_same(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"records{suffix}"
    frame = pd.DataFrame([GOOD, {**GOOD, "record_id": "x" * 65}, GOOD])
    write(frame, path)
    with pytest.raises(UsageError) as caught:
        levyfile.read_levy_file(path, fields=("county", "levy_rate"))
    assert "row 2, column record_id: " in str(caught.value)
    frame.loc[1, "record_id"] = "r-2"
    write(frame, path)
    whole = levyfile.read_levy_file(path)
    part = levyfile.read_levy_file(path, fields=("levy_rate", "county"))
    assert list(part) == ["county", "levy_rate"]
    assert part["county"].tolist() == whole["county"].tolist()
    np.testing.assert_array_equal(part["levy_rate"], whole["levy_rate"])


def write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)


canonical_times = st.datetimes(min_value=datetime(1900, 1, 1),
                               max_value=datetime(2199, 12, 31, 23, 59, 59, 999999)).map(
    lambda moment: moment.isoformat(timespec="milliseconds") + "Z")
other_times = st.sampled_from(["2024-03-01T12:00:00+05:30", "2024-03-01T12:00:00Z",
                               "2024-03-01T12:00:00.5Z", "2024-03-01T12:00:00.123456Z",
                               "1969-12-31T23:59:59.999+00:00"])


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(times=st.lists(st.one_of(canonical_times, canonical_times, other_times), min_size=1,
                      max_size=8), suffix=st.sampled_from([".parquet", ".csv"]))
def test_event_times_arrow_reads_are_the_ones_event_times_ms_reads(
        times: list[str], suffix: str, tmp_path: Path) -> None:
    """``read_levy_file_columns`` reads a file's event times with Arrow when every one has the
    producers' form, and then they are exactly what ``event_times_ms`` reads from the text;
    any other form (a zone offset, another fraction) is left to ``event_times_ms``."""
    path = tmp_path / f"records{suffix}"
    frame = pd.DataFrame([{**GOOD, "event_time": moment} for moment in times])
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    read = levyfile.read_levy_file_columns(path)
    canonical = all(len(moment) == 24 and moment.endswith("Z") for moment in times)
    assert (read.times_ms is not None) == canonical, times
    if read.times_ms is not None:
        np.testing.assert_array_equal(read.times_ms, event_times_ms(read.columns["event_time"]))
        assert read.times_ms.dtype == np.int64


@settings(max_examples=100, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(table=rows())
def test_category_dictionaries_hold_the_texts_the_columns_hold(
        table: list[dict[str, Any]], tmp_path: Path) -> None:
    """Each category field of a Parquet file comes with its dictionary coding (indices into
    distinct values, -1 where missing), and that coding spells the column's texts."""
    path = tmp_path / "records.parquet"
    try:
        pq.write_table(pa.Table.from_pylist(table), path)
        read = levyfile.read_levy_file_columns(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UsageError):
        return  # not a file anyone can write, or one the screen refuses
    assert set(read.dictionaries) == {"county", "tax_district", "property_class"}
    for name, (indices, values) in read.dictionaries.items():
        assert len(set(values.tolist())) == len(values)
        assert np.append(values, None)[indices].tolist() == read.columns[name].tolist(), name
