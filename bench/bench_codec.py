"""Decode + validate throughput of levy-record codecs, on the same realistic records.

    .venv/bin/python bench/bench_codec.py [--records 20000] [--repeats 5]

Candidates: the chosen codec (schemas.levy_record: msgspec typed decode, careful checks only
for refused input), and the same before it refused repeated keys (the price of that check);
orjson + the hand-written checks alone; orjson + fastjsonschema compiled from
levy-record.v1.json; pydantic v2; and msgspec alone (no cross-field rule, no precise reasons) as
the floor. Each runs on all-valid records and on a mix with 5% invalid ones; best of N
interleaved rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import fastjsonschema
import msgspec
import numpy as np
import orjson
import pydantic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_model  # noqa: E402

from schemas._contract import _rejection_from, load_schema  # noqa: E402
from schemas._json import parse_json_object  # noqa: E402
from schemas.errors import RecordRejected  # noqa: E402
from schemas.levy_record import (  # noqa: E402
    MAX_RECORD_BYTES,
    LevyRecord,
    decode_levy_batch,
    decode_levy_record,
    decode_levy_records,
    levy_record_from_dict,
    levy_records_to_columns,
)
from schemas.timestamps import RFC3339_PATTERN, TIMESTAMP  # noqa: E402

Decoder = Callable[[bytes], Any]
CLASSES = ["residential", "commercial", "agricultural", "industrial", "exempt"]


def realistic_records(count: int, seed: int = 7) -> list[bytes]:
    rng = np.random.default_rng(seed)
    assessed = rng.lognormal(12.4, 0.6, count)
    exemption = np.where(rng.random(count) < 0.6, np.minimum(assessed, 25_000.0), 0.0)
    rate = rng.uniform(0.008, 0.03, count)
    values = []
    for i in range(count):
        document = {
            "schema_version": 1, "record_id": f"rec-{i:09d}",
            "parcel_id": f"P-{rng.integers(10, 99)}-{rng.integers(100, 999)}-{i:06d}",
            "county": f"County-{i % 12}", "tax_district": f"SD-{i % 40:02d}",
            "property_class": CLASSES[i % len(CLASSES)], "tax_year": 2024,
            "assessed_value": round(float(assessed[i]), 2),
            "market_value": round(float(assessed[i] * rng.uniform(1.0, 1.2)), 2),
            "exemption_amount": float(exemption[i]), "levy_rate": round(float(rate[i]), 6),
            "prior_levy_amount": round(float((assessed[i] - exemption[i]) * rate[i] * 0.97), 2),
            "new_construction_value": 0.0 if i % 9 else round(float(rng.lognormal(10, 1)), 2),
            "event_time": f"2024-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.{i % 1000:03d}Z",
        }
        if i % 3 == 0:
            document["actual_levy_amount"] = round(document["prior_levy_amount"] * 1.03, 2)
        values.append(orjson.dumps(document))
    return values


def with_invalid(values: list[bytes], share: float = 0.05) -> list[bytes]:
    corruptions: list[Callable[[bytes], bytes]] = [
        lambda v: v[: len(v) // 2],
        lambda v: v.replace(b'"levy_rate":0.', b'"levy_rate":12.'),
        lambda v: v.replace(b'"schema_version":1', b'"schema_version":2'),
        lambda v: v.replace(b'"tax_year":2024', b'"tax_year":"2024"'),
        lambda v: v.replace(b'"assessed_value":', b'"assessed_value":-'),
        lambda v: v.replace(b'"county":"', b'"county":"' + b"x" * 80),
        lambda v: v.replace(b"Z\"", b'"'),
        lambda v: v.replace(b'"schema_version":1,', b'"schema_version":1,"owner":"x",'),
    ]
    step = int(1 / share)
    return [corruptions[(i // step) % len(corruptions)](v) if i % step == 0 else v
            for i, v in enumerate(values)]


# --- candidates ----------------------------------------------------------------------------

def orjson_hand_written(value: bytes) -> LevyRecord:
    return levy_record_from_dict(parse_json_object(value, MAX_RECORD_BYTES))


_FASTJSONSCHEMA = fastjsonschema.compile(load_schema("levy-record.v1.json"), use_formats=False)


def orjson_fastjsonschema(value: bytes) -> LevyRecord:
    document = parse_json_object(value, MAX_RECORD_BYTES)
    try:
        _FASTJSONSCHEMA(document)
    except fastjsonschema.JsonSchemaValueException as error:
        raise _rejection_from(error) from None
    if document["exemption_amount"] > document["assessed_value"]:
        raise ValueError("inconsistent")
    return LevyRecord(**document)


PMoney = Annotated[float, pydantic.Field(ge=0, le=1e12, allow_inf_nan=False)]
PText = Annotated[str, pydantic.Field(min_length=1, max_length=64)]


class PydanticLevyRecord(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)
    schema_version: Annotated[int, pydantic.Field(ge=1, le=1)]
    record_id: PText
    parcel_id: PText
    county: PText
    tax_district: PText
    property_class: PText
    tax_year: Annotated[int, pydantic.Field(ge=1900, le=2100)]
    assessed_value: PMoney
    market_value: PMoney
    exemption_amount: PMoney
    levy_rate: Annotated[float, pydantic.Field(gt=0, le=0.1, allow_inf_nan=False)]
    prior_levy_amount: PMoney
    new_construction_value: PMoney
    event_time: Annotated[str, pydantic.Field(pattern=RFC3339_PATTERN)]
    actual_levy_amount: PMoney | None = None

    @pydantic.model_validator(mode="after")
    def _exemption_within_assessed(self) -> PydanticLevyRecord:
        if self.exemption_amount > self.assessed_value:
            raise ValueError("exemption_amount exceeds assessed_value")
        return self


def pydantic_v2(value: bytes) -> PydanticLevyRecord:
    return PydanticLevyRecord.model_validate_json(value)


_MSGSPEC = msgspec.json.Decoder(LevyRecord)


def msgspec_alone(value: bytes) -> LevyRecord:
    return _MSGSPEC.decode(value)


def chosen_without_duplicate_keys(value: bytes) -> LevyRecord:
    """The chosen codec as it was before it refused repeated keys (issue 11): the baseline
    that prices the quote count proving each key came once."""
    if len(value) <= MAX_RECORD_BYTES:
        try:
            record = _MSGSPEC.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            pass
        else:
            if (record.exemption_amount <= record.assessed_value
                    and TIMESTAMP.fullmatch(record.event_time) is not None):
                return record
    return levy_record_from_dict(parse_json_object(value, MAX_RECORD_BYTES))


CANDIDATES: dict[str, tuple[Decoder, str]] = {
    "chosen: msgspec + careful fallback": (decode_levy_record, "yes (own codes, field)"),
    "chosen, before duplicate-key refusal": (chosen_without_duplicate_keys,
                                              "yes, but lets repeated keys through"),
    "orjson + hand-written checks": (orjson_hand_written, "yes (own codes, field)"),
    "orjson + fastjsonschema": (orjson_fastjsonschema, "yes (mapped from rule, path)"),
    "pydantic v2 (strict)": (pydantic_v2, "error type + loc (own vocabulary)"),
    "msgspec alone (floor)": (msgspec_alone, "message text only; no cross-field"),
}
REFUSALS = (RecordRejected, ValueError, msgspec.MsgspecError)


def run_once(decode: Decoder, values: list[bytes]) -> tuple[float, int]:
    accepted = 0
    started = time.perf_counter()
    for value in values:
        try:
            decode(value)
            accepted += 1
        except REFUSALS:
            pass
    return time.perf_counter() - started, accepted


def measure(workloads: dict[str, list[bytes]],
            repeats: int) -> dict[str, dict[str, tuple[float, int]]]:
    """Best records/s per candidate and workload. Rounds interleave the candidates, so load
    from other processes on a shared machine hits them all alike."""
    best: dict[str, dict[str, tuple[float, int]]] = {name: {} for name in CANDIDATES}
    for _ in range(repeats):
        for name, (decode, _) in CANDIDATES.items():
            for workload, values in workloads.items():
                seconds, accepted = run_once(decode, values)
                rate = len(values) / seconds
                if rate > best[name].get(workload, (0.0, 0))[0]:
                    best[name][workload] = (rate, accepted)
    return best


def machine() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"orjson {orjson.__version__}, msgspec {msgspec.__version__}, "
            f"fastjsonschema {fastjsonschema.VERSION}, pydantic {pydantic.VERSION}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    valid = realistic_records(args.records)
    workloads = {"valid": valid, "5% invalid": with_invalid(valid)}
    print(f"machine: {machine()}")
    print(f"records: {args.records} per workload, "
          f"mean size {sum(map(len, valid)) / len(valid):.0f} bytes, best of {args.repeats}\n")
    results = measure(workloads, args.repeats)
    chosen = results["chosen: msgspec + careful fallback"]
    header = f"| {'candidate':36} | {'valid rec/s':>11} | {'ratio':>5} | " \
             f"{'5% invalid rec/s':>16} | {'ratio':>5} | accepted | precise reasons"
    print(header)
    print("|" + "|".join("-" * (len(part) + 0) for part in header.split("|")[1:]))
    for name, per_workload in results.items():
        (valid_rate, _), (mixed_rate, accepted) = per_workload.values()
        print(f"| {name:36} | {valid_rate:11,.0f} | "
              f"{valid_rate / chosen['valid'][0]:5.2f} | {mixed_rate:16,.0f} | "
              f"{mixed_rate / chosen['5% invalid'][0]:5.2f} | {accepted:8} | "
              f"{CANDIDATES[name][1]}")
    measure_batches(workloads, args.repeats, batch=2000)


def per_record_to_columns(values: list[bytes]) -> object:
    """What the consumer did before decode_levy_batch: records one by one, then columns."""
    return levy_records_to_columns(decode_levy_records(values)[0])


def measure_batches(workloads: dict[str, list[bytes]], repeats: int, batch: int) -> None:
    """Values in consumer-sized batches to the columns the detector bank takes: the batch
    codec against the per-record codec plus the column build, interleaved, CPU-time rates
    (min / median / max), as the consumer calls them."""
    ways = {"per record, then columns": per_record_to_columns,
            "decode_levy_batch": decode_levy_batch}
    print(f"\nbatches of {batch} values to columns, CPU-time rec/s (min / median / max) "
          f"over {repeats} interleaved rounds")
    for workload, values in workloads.items():
        rates: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(repeats):
            for name, decode in ways.items():
                started = time.process_time()
                for start in range(0, len(values), batch):
                    decode(values[start:start + batch])
                rates[name].append(len(values) / (time.process_time() - started))
        for name, found in rates.items():
            found.sort()
            print(f"  {workload:10} {name:26} {found[0]:10,.0f} {found[len(found) // 2]:10,.0f}"
                  f" {found[-1]:10,.0f}")


if __name__ == "__main__":
    main()
