"""``levydrift simulate``: write a synthetic levy stream to Kafka or to a file, with its ground
truth (``<file>.truth.json``) beside it. The generation itself lives in ``levydrift.simulator``.

With labels, each labelled record's actual levy arrives later as a levy label (to the labels
topic, or to a JSONL file beside the records), and the records no longer carry it inline unless
asked to. To Kafka, records and labels go through one producer, keyed by parcel id, merged in
arrival order (``levydrift.simulator.arrivals``): the same key and the same partitioner put a
label in its record's partition, given the two topics' equal partition counts (checked)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from collections.abc import Iterable, Iterator
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
    DAY_MS,
    ORDERS,
    RECORD_FIELDS,
    SCENARIOS,
    Arrivals,
    GroundTruth,
    LabelDelay,
    LevySimulator,
    SimulatorConfig,
    arrivals,
    ordered_blocks,
    string_columns,
    to_labels,
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
    _add_label_arguments(parser)
    parser.set_defaults(handler=_run)


def _add_label_arguments(parser: argparse.ArgumentParser) -> None:
    labels = parser.add_argument_group(
        "late labels", "Each labelled record's actual levy (see --labelled-share) also arrives "
        "later as a levy label, its event time the record's plus a log-normal delay; records "
        "then leave it out unless --inline-actuals.")
    labels.add_argument("--with-labels", action="store_true",
                        help="emit labels: to the configured labels topic, or beside --output "
                             "FILE to FILE.labels.jsonl")
    labels.add_argument("--labels", metavar="FILE", type=Path,
                        help="with --output: write the labels (JSONL) to FILE")
    labels.add_argument("--labels-topic", metavar="TOPIC",
                        help="to Kafka: send the labels to TOPIC (default: the configured "
                             "labels topic), keyed by parcel id like the records")
    labels.add_argument("--inline-actuals", action="store_true",
                        help="records keep actual_levy_amount as well (old producers)")
    default = LabelDelay()
    labels.add_argument("--label-delay-days", type=float, metavar="DAYS",
                        help=f"median delay of a label after its record (default "
                             f"{default.median_days:g})")
    labels.add_argument("--label-delay-sigma", type=float, metavar="SIGMA",
                        help=f"log-normal sigma of the delay (default {default.sigma:g}: 90 %% "
                             "of delays within x0.44..x2.28 of the median)")
    labels.add_argument("--label-max-delay-days", type=float, metavar="DAYS",
                        help=f"longest delay, the clip (default {default.max_days:g}, the "
                             "consumer's default label horizon)")


@dataclass(frozen=True)
class LabelTarget:
    """Where the labels go (a file or a topic; neither: no labels) and whether the records
    still carry the actual levy."""

    path: Path | None = None
    topic: str | None = None
    inline_actuals: bool = True

    @property
    def emitted(self) -> bool:
        return self.path is not None or self.topic is not None


def _run(arguments: argparse.Namespace) -> int:
    config = settings_module.load(SimulatorSettings, arguments.config)
    configure_logging(config.logging.level)
    simulator_config = simulator_config_from(arguments, config.simulator)
    labels = label_target_from(arguments, config.topics)
    simulator = LevySimulator(simulator_config)
    records = arguments.records
    started = time.monotonic()
    with Progress("simulate", total=records) as progress:
        if arguments.output is not None:
            destination = str(arguments.output)
            label_count = write_file(simulator, records, arguments.output, arguments.order,
                                     progress, labels)
            truth_path = arguments.truth or Path(f"{arguments.output}.truth.json")
        else:
            topic = arguments.topic or config.topics.records
            destination = f"topic {topic}"
            label_count = produce_to_kafka(simulator, records, topic, config.kafka,
                                           arguments.rate, arguments.order, progress, labels)
            truth_path = arguments.truth or Path(f"{topic}.truth.json")
    elapsed = time.monotonic() - started
    truth = _with_labels(simulator.ground_truth(records), simulator_config, labels, label_count)
    write_truth(truth, truth_path)
    change = ("" if simulator_config.scenario == "none"
              else f", change at {simulator_config.change_at}")
    if arguments.order != "time":
        change += f", order {arguments.order}"
    labelled = (f"; {label_count} labels to {labels.path or f'topic {labels.topic}'}"
                if labels.emitted else "")
    print(f"simulate: {records} records (scenario {simulator_config.scenario}{change}) to "
          f"{destination} in {elapsed:.1f}s ({records / max(elapsed, 1e-9):,.0f} records/s)"
          f"{labelled}; truth: {truth_path}")
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
                             county=getattr(arguments, "county", None),
                             label_delay=_label_delay_from(arguments), **chosen)
    try:
        config.validate()
    except ValueError as error:
        raise UsageError(str(error)) from None
    return config


def _pick(given: Any, default: Any) -> Any:
    return default if given is None else given


_LABEL_DELAY_OPTIONS = {"label_delay_days": "median_days", "label_delay_sigma": "sigma",
                        "label_max_delay_days": "max_days"}


def _label_delay_from(arguments: argparse.Namespace) -> LabelDelay:
    given = {name: getattr(arguments, option, None)
             for option, name in _LABEL_DELAY_OPTIONS.items()}
    return LabelDelay(**{name: value for name, value in given.items() if value is not None})


def label_target_from(arguments: argparse.Namespace, topics: TopicSettings) -> LabelTarget:
    """Where the labels go, from the command line; a combination that cannot mean anything is
    a ``UsageError`` naming the option."""
    to_file = arguments.output is not None
    if arguments.labels is not None and not to_file:
        raise UsageError("--labels FILE goes with --output; to Kafka use --labels-topic or "
                         "--with-labels")
    if arguments.labels_topic is not None and to_file:
        raise UsageError("--labels-topic goes with Kafka; beside --output use --labels FILE")
    path = arguments.labels or (Path(f"{arguments.output}.labels.jsonl")
                                if to_file and arguments.with_labels else None)
    topic = (None if to_file or not (arguments.with_labels or arguments.labels_topic)
             else arguments.labels_topic or topics.labels)
    target = LabelTarget(path, topic, inline_actuals=arguments.inline_actuals)
    if not target.emitted:
        given = [option for option in ("inline_actuals", *_LABEL_DELAY_OPTIONS)
                 if getattr(arguments, option) not in (None, False)]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} needs labels (--with-labels, "
                             "--labels FILE or --labels-topic TOPIC)")
        return target
    if path is not None and path.suffix.lower() != ".jsonl":
        raise UsageError(f"--labels {path}: labels are written as JSONL; name it *.jsonl")
    if path is not None and path.resolve() == arguments.output.resolve():
        raise UsageError(f"--labels {path} is the --output file; give the labels their own")
    if topic is not None and topic == (arguments.topic or topics.records):
        raise UsageError(f"--labels-topic {topic} is the records topic; labels need their own")
    return target


def _with_labels(truth: GroundTruth, config: SimulatorConfig, labels: LabelTarget,
                 count: int) -> GroundTruth:
    """The ground truth, saying how many labels went where and how their delays were drawn
    (the median also in records, at the stream's event interval)."""
    if not labels.emitted:
        return truth
    delay = config.label_delay
    described = {"labels": count, "destination": str(labels.path or labels.topic),
                 "inline_actuals": labels.inline_actuals,
                 "delay": {"distribution": "lognormal", "unit": "days",
                           **dataclasses.asdict(delay), "min_ms": 1,
                           "median_records": (round(delay.median_days * DAY_MS
                                                    / config.event_interval_ms)
                                              if config.event_interval_ms else None)}}
    return dataclasses.replace(truth, parameters={**truth.parameters, "labels": described})


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
               progress: Progress | None = None, labels: LabelTarget | None = None) -> int:
    """Write records ``0..records-1`` to ``path`` (format by extension) in ``order``
    (``levydrift.simulator.ORDERS``), and with ``labels.path`` their labels (JSONL, in arrival
    order), atomically; return the number of labels written."""
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise UsageError(f"--output {path}: unknown format {suffix or '(none)'}; use "
                         + ", ".join(FILE_FORMATS))
    if progress is not None:
        progress.phase(f"writing {path}")
    labels = labels or LabelTarget()
    partials = [path.with_name(path.name + ".partial")]
    try:
        if labels.path is None:
            _write_records(_record_batches(simulator, records, order),
                           _column_chunks(simulator, records, progress, order), suffix,
                           partials[0], progress)
            count = 0
        else:
            partials.append(labels.path.with_name(labels.path.name + ".partial"))
            count = _write_with_labels(simulator, records, order, labels.inline_actuals,
                                       (partials[0], suffix), partials[1], progress)
            os.replace(partials[1], labels.path)
        os.replace(partials[0], path)
    except OSError as error:
        for partial in partials:  # its directory may be what failed: never a second error
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        failed = (labels.path if labels.path is not None
                  and error.filename in (str(labels.path), str(partials[-1])) else path)
        raise UsageError(f"cannot write {failed}: {error.strerror or error}") from None
    return count


def _write_records(batches: Iterator[list[dict[str, Any]]], chunks: Iterator[dict[str, Any]],
                   suffix: str, path: Path, progress: Progress | None) -> None:
    """Records to ``path``: JSONL from ``batches`` (record dicts), CSV or Parquet from
    ``chunks`` (string columns); only the one the format needs is read."""
    if suffix == ".jsonl":
        _write_jsonl(batches, path, progress)
    else:
        writer = _write_csv if suffix == ".csv" else _write_parquet
        writer(chunks, path)


def _write_with_labels(simulator: LevySimulator, records: int, order: str,
                       inline_actuals: bool, output: tuple[Path, str], label_path: Path,
                       progress: Progress | None) -> int:
    """The records to ``output`` (path, format) and their labels to ``label_path`` in one
    pass over the merged stream; the number of labels."""
    written = {"records": 0, "labels": 0}
    with label_path.open("wb") as handle:

        def merged() -> Iterator[Arrivals]:
            for arrived in arrivals(simulator, records, order, inline_actuals):
                for label in to_labels(arrived.labels):
                    handle.write(orjson.dumps(label, option=orjson.OPT_APPEND_NEWLINE))
                written["labels"] += len(arrived.label_slots)
                yield arrived
                written["records"] += len(arrived.records["record_id"])
                if progress is not None:
                    progress.update(written["records"])

        def chunks() -> Iterator[dict[str, Any]]:
            yield from (string_columns(arrived.records) for arrived in merged())
            if records == 0:  # the writers take their schema from a first chunk
                yield string_columns(simulator.columns(0, 0))

        _write_records((to_records(arrived.records) for arrived in merged()), chunks(),
                       output[1], output[0], None)
    return written["labels"]


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
                     progress: Progress | None = None, labels: LabelTarget | None = None
                     ) -> int:
    """Send records ``0..records-1`` to ``topic`` keyed by parcel id, idempotently, at
    ``rate`` records/s or as fast as possible; return once every one is acknowledged. With
    ``labels.topic``, their labels too, merged in arrival order, keyed like their records by
    the same producer (so the same partitioner): return the number of labels."""
    labels = labels or LabelTarget()
    admin = admin_client(kafka)
    ensure_reachable(admin, kafka)
    _check_topics(admin.list_topics(timeout=kafka.request_timeout_s).topics, topic,
                  labels.topic)
    producer = Producer(producer_config(kafka))
    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Any) -> None:
        if error is not None:
            failures.append(f"writing to {message.topic() if message else topic} failed: "
                            f"{error.str()}")

    progress = progress or Progress("simulate", total=records)
    progress.phase(f"sending to {topic}")
    started = time.monotonic()
    sent = labelled = 0
    for batch in _documents(simulator, records, order, labels):
        for is_label, document in batch:
            if is_label:
                _produce(producer, labels.topic or "", document, delivered)
                labelled += 1
                continue
            if rate is not None:
                _pace(started, sent, rate)
            _produce(producer, topic, document, delivered)
            sent += 1
        producer.poll(0)
        _raise_first(failures)
        progress.update(sent)
    progress.phase(f"waiting for {len(producer):,} acknowledgements from {topic}", done=sent)
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    _raise_first(failures)
    if remaining:
        raise BrokerUnavailableError(
            f"{remaining} messages to {topic} unacknowledged after {FLUSH_TIMEOUT_S:g}s")
    return labelled


def _check_topics(existing: dict[str, Any], records: str, labels: str | None) -> None:
    """Both topics exist, with one partition count: a label lands in its record's partition
    only then (the same key and partitioner pick the same partition number of each)."""
    for topic in (records, labels):
        if topic is not None and topic not in existing:
            raise UsageError(f"topic {topic} does not exist; create it (levydrift topics create)")
    if labels is None:
        return
    counts = len(existing[records].partitions), len(existing[labels].partitions)
    if counts[0] != counts[1]:
        raise UsageError(f"topic {labels} has {counts[1]} partitions but {records} has "
                         f"{counts[0]}: a label must land in its record's partition, so they "
                         "need the same count (levydrift topics create makes them so)")


def _documents(simulator: LevySimulator, records: int, order: str,
               labels: LabelTarget) -> Iterator[Iterable[tuple[bool, dict[str, Any]]]]:
    """Batches of (is a label, record or label dict) in arrival order."""
    if labels.topic is None:
        batches = (simulator.record_batches(0, records, batch_records=8192) if order == "time"
                   else _record_batches(simulator, records, order))
        for batch in batches:
            yield ((False, record) for record in batch)
        return
    for arrived in arrivals(simulator, records, order, labels.inline_actuals,
                            batch_records=8192):
        yield arrived.interleave(to_records(arrived.records), to_labels(arrived.labels))


def _raise_first(failures: list[str]) -> None:
    if failures:
        raise BrokerUnavailableError(failures[0])


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
