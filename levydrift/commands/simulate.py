"""``levydrift simulate``: write a synthetic levy stream to Kafka or to a file, with its ground
truth (``<file>.truth.json``) beside it. The generation itself lives in ``levydrift.simulator``."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from confluent_kafka import KafkaError, Producer

from levydrift import settings as settings_module
from levydrift.errors import BrokerUnavailableError, ConfigError, UsageError
from levydrift.kafka import admin_client, ensure_reachable, producer_config
from levydrift.logs import configure as configure_logging
from levydrift.progress import Progress
from levydrift.settings import KafkaSettings, LoggingSettings, TopicSettings
from levydrift.simulator import (
    COUNTIES,
    ORDERS,
    RECORD_FIELDS,
    SCENARIOS,
    GroundTruth,
    LevySimulator,
    SimulatorConfig,
    ordered_blocks,
    string_columns,
    to_records,
)

FILE_FORMATS = (".csv", ".jsonl", ".parquet")
DEFAULT_RECORDS = 100_000
FLUSH_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SimulatorSection:
    """``[simulator]``: defaults for what the command line does not say."""

    seed: int = 42
    parcels: int = 100_000
    labelled_share: float = 0.2
    event_interval_ms: int = 1000
    start_time: str = "2026-01-01T00:00:00Z"

    def validate(self) -> None:
        try:
            _parse_start_time(self.start_time)
        except UsageError as error:
            raise ConfigError(f"simulator.start_time: {error}") from None


@dataclass(frozen=True)
class SimulatorSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    simulator: SimulatorSection = field(default_factory=SimulatorSection)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate", help="write a synthetic levy stream with known drift to Kafka or a file",
        description="Generate levy records (deterministic for a seed) with a drift scenario "
                    "that starts at a known record index; write them to a Kafka topic (keyed "
                    "by parcel id) or to a .csv/.jsonl/.parquet file, and the ground truth "
                    "as JSON beside them.")
    parser.add_argument("--scenario", choices=SCENARIOS, default="none")
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS, metavar="N",
                        help=f"records to write (default {DEFAULT_RECORDS})")
    parser.add_argument("--change-at", type=int, metavar="INDEX",
                        help="record index where the scenario starts (default: half way)")
    parser.add_argument("--duration", type=int, metavar="N",
                        help="records a temporary scenario lasts (unit-bug, default a tenth "
                             "of --records) or the gradual ramp takes (default: to the end)")
    parser.add_argument("--magnitude", type=float,
                        help="scenario strength (see levydrift.simulator.DEFAULT_MAGNITUDE)")
    parser.add_argument("--order", choices=ORDERS, default="time",
                        help="arrival order within each day of event time: time (as "
                             "generated), shuffled, county-batches (counties upload in slices "
                             "of 2,000 rows), district-sorted (districts certify in turn), "
                             "roll-cycle (counties in turn); values, counts and event times "
                             "are unchanged")
    parser.add_argument("--county", choices=[c.name for c in COUNTIES],
                        help="the county a one-county scenario (reassessment, unit-bug, "
                             "levy-rate-change, district-levy-change) hits (default: by seed)")
    parser.add_argument("--seed", type=int, help="random seed (default [simulator] seed)")
    parser.add_argument("--labelled-share", type=float, metavar="SHARE",
                        help="share of records carrying actual_levy_amount (0..1)")
    parser.add_argument("--parcels", type=int, help="parcels on the simulated roll")
    parser.add_argument("--start-time", metavar="RFC3339",
                        help="event time of the first record, or 'now'")
    parser.add_argument("--interval-ms", type=int, metavar="MS",
                        help="event-time step between records")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--output", metavar="FILE", type=Path,
                        help="write to FILE (.csv, .jsonl or .parquet) instead of Kafka")
    target.add_argument("--topic", help="Kafka topic (default: the configured records topic)")
    parser.add_argument("--rate", type=float, metavar="PER_S",
                        help="records per second to Kafka (default: as fast as possible)")
    parser.add_argument("--truth", type=Path, metavar="PATH",
                        help="ground-truth JSON (default: <FILE>.truth.json, or "
                             "<topic>.truth.json in the current directory)")
    parser.set_defaults(handler=_run)


def _run(arguments: argparse.Namespace) -> int:
    config = settings_module.load(SimulatorSettings, arguments.config)
    configure_logging(config.logging.level)
    simulator_config = simulator_config_from(arguments, config.simulator)
    simulator = LevySimulator(simulator_config)
    records = arguments.records
    started = time.monotonic()
    with Progress("simulate", total=records) as progress:
        if arguments.output is not None:
            destination = str(arguments.output)
            write_file(simulator, records, arguments.output, arguments.order, progress)
            truth_path = arguments.truth or Path(f"{arguments.output}.truth.json")
        else:
            topic = arguments.topic or config.topics.records
            destination = f"topic {topic}"
            produce_to_kafka(simulator, records, topic, config.kafka, arguments.rate,
                             arguments.order, progress)
            truth_path = arguments.truth or Path(f"{topic}.truth.json")
    elapsed = time.monotonic() - started
    write_truth(simulator.ground_truth(records), truth_path)
    change = ("" if simulator_config.scenario == "none"
              else f", change at {simulator_config.change_at}")
    if arguments.order != "time":
        change += f", order {arguments.order}"
    print(f"simulate: {records} records (scenario {simulator_config.scenario}{change}) to "
          f"{destination} in {elapsed:.1f}s ({records / max(elapsed, 1e-9):,.0f} records/s); "
          f"truth: {truth_path}")
    return 0


def simulator_config_from(arguments: argparse.Namespace,
                          defaults: SimulatorSection) -> SimulatorConfig:
    """The command line over the ``[simulator]`` section; a bad value is a ``UsageError``."""
    records = arguments.records
    if records < 0:
        raise UsageError(f"--records must be >= 0, got {records}")
    if arguments.rate is not None and arguments.rate <= 0:
        raise UsageError(f"--rate must be > 0 records/s, got {arguments.rate:g}")
    change_at = records // 2 if arguments.change_at is None else arguments.change_at
    duration = arguments.duration
    if duration is None and arguments.scenario == "unit-bug":
        duration = max(records // 10, 1)
    if duration is None and arguments.scenario == "gradual":
        duration = max(records - change_at, 1)
    chosen = {
        "seed": _pick(arguments.seed, defaults.seed),
        "labelled_share": _pick(arguments.labelled_share, defaults.labelled_share),
        "parcels": _pick(arguments.parcels, defaults.parcels),
        "event_interval_ms": _pick(arguments.interval_ms, defaults.event_interval_ms),
        "start_time": _parse_start_time(_pick(arguments.start_time, defaults.start_time)),
    }
    config = SimulatorConfig(scenario=arguments.scenario, change_at=change_at, duration=duration,
                             magnitude=arguments.magnitude,
                             county=getattr(arguments, "county", None), **chosen)
    try:
        config.validate()
    except ValueError as error:
        raise UsageError(str(error)) from None
    return config


def _pick(given: Any, default: Any) -> Any:
    return default if given is None else given


def _parse_start_time(text: str) -> datetime:
    if text == "now":
        return datetime.now(UTC).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"start time {text!r} is not RFC 3339 "
                         "(e.g. 2026-01-01T00:00:00Z) or 'now'") from None
    if moment.tzinfo is None:
        raise UsageError(f"start time {text!r} has no time zone; add Z for UTC")
    return moment.astimezone(UTC)


# --------------------------------------------------------------------- files

def write_file(simulator: LevySimulator, records: int, path: Path, order: str = "time",
               progress: Progress | None = None) -> None:
    """Write records ``0..records-1`` to ``path`` (format by extension) in ``order``
    (``levydrift.simulator.ORDERS``), atomically."""
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise UsageError(f"--output {path}: unknown format {suffix or '(none)'}; use "
                         + ", ".join(FILE_FORMATS))
    if progress is not None:
        progress.phase(f"writing {path}")
    partial = path.with_name(path.name + ".partial")
    try:
        if suffix == ".jsonl":
            _write_jsonl(_record_batches(simulator, records, order), partial, progress)
        else:
            writer = _write_csv if suffix == ".csv" else _write_parquet
            writer(_column_chunks(simulator, records, progress, order), partial)
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


def _column_chunks(simulator: LevySimulator, records: int, progress: Progress | None = None,
                   order: str = "time",
                   chunk: int = 65_536) -> Iterator[dict[str, Any]]:
    if order != "time":
        for block in ordered_blocks(simulator, records, order):
            yield string_columns(block)
        if records == 0:
            yield string_columns(simulator.columns(0, 0))
        return
    for start in range(0, records, chunk):
        yield string_columns(simulator.columns(start, min(records, start + chunk)))
        if progress is not None:
            progress.update(min(records, start + chunk))
    if records == 0:
        yield string_columns(simulator.columns(0, 0))


def _record_batches(simulator: LevySimulator, records: int,
                    order: str) -> Iterator[list[dict[str, Any]]]:
    if order == "time":
        yield from simulator.record_batches(0, records)
        return
    for block in ordered_blocks(simulator, records, order):
        for start in range(0, len(block["record_id"]), 8192):
            yield to_records({k: v[start:start + 8192] for k, v in block.items()})


def _write_jsonl(batches: Iterator[list[dict[str, Any]]], path: Path,
                 progress: Progress | None = None) -> None:
    written = 0
    with path.open("wb") as handle:
        write = handle.write
        for batch in batches:
            for record in batch:
                # One write per record: holding a batch of encoded records first is 4x slower
                # (tens of thousands of live allocations).
                write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            written += len(batch)
            if progress is not None:
                progress.update(written)


def _arrow_table(columns: dict[str, Any]) -> pa.Table:
    """Record columns as an Arrow table; an unlabelled levy is null, not NaN."""
    return pa.Table.from_pydict({name: pa.array(columns[name], from_pandas=True)
                                 for name in RECORD_FIELDS})


def _write_csv(chunks: Iterator[dict[str, Any]], path: Path) -> None:
    writer: pa_csv.CSVWriter | None = None
    try:
        for columns in chunks:
            table = _arrow_table(columns)
            if writer is None:
                writer = pa_csv.CSVWriter(str(path), table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _write_parquet(chunks: Iterator[dict[str, Any]], path: Path) -> None:
    writer: pq.ParquetWriter | None = None
    try:
        for columns in chunks:
            table = _arrow_table(columns)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def write_truth(truth: GroundTruth, path: Path) -> None:
    try:
        path.write_bytes(orjson.dumps(truth.to_dict(), option=orjson.OPT_INDENT_2))
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


# --------------------------------------------------------------------- Kafka

def produce_to_kafka(simulator: LevySimulator, records: int, topic: str, kafka: KafkaSettings,
                     rate: float | None = None, order: str = "time",
                     progress: Progress | None = None) -> None:
    """Send records ``0..records-1`` to ``topic`` keyed by parcel id, idempotently, at
    ``rate`` records/s or as fast as possible; return once every one is acknowledged."""
    admin = admin_client(kafka)
    ensure_reachable(admin, kafka)
    if topic not in admin.list_topics(timeout=kafka.request_timeout_s).topics:
        raise UsageError(f"topic {topic} does not exist; create it (levydrift topics create)")
    producer = Producer(producer_config(kafka))
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            failures.append(error)

    progress = progress or Progress("simulate", total=records)
    progress.phase(f"sending to {topic}")
    started = time.monotonic()
    sent = 0
    batches = (simulator.record_batches(0, records, batch_records=8192) if order == "time"
               else _record_batches(simulator, records, order))
    for batch in batches:
        for record in batch:
            if rate is not None:
                _pace(started, sent, rate)
            _produce(producer, topic, record, delivered)
            sent += 1
        producer.poll(0)
        _raise_first(failures, topic)
        progress.update(sent)
    progress.phase(f"waiting for {len(producer):,} acknowledgements from {topic}", done=sent)
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    _raise_first(failures, topic)
    if remaining:
        raise BrokerUnavailableError(
            f"{remaining} records to {topic} unacknowledged after {FLUSH_TIMEOUT_S:g}s")


def _raise_first(failures: list[KafkaError], topic: str) -> None:
    if failures:
        raise BrokerUnavailableError(f"writing to {topic} failed: {failures[0].str()}")


def _produce(producer: Producer, topic: str, record: dict[str, Any], delivered: Any) -> None:
    value = orjson.dumps(record)
    key = record["parcel_id"].encode()
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=delivered)
            return
        except BufferError:
            producer.poll(0.1)  # the local queue is full: let deliveries drain


def _pace(started: float, sent: int, rate: float) -> None:
    ahead = started + sent / rate - time.monotonic()
    if ahead > 0.001:
        time.sleep(ahead)
