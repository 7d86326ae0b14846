"""``levydrift schedule``: the batch drift check every ``--interval`` hours.

The successor of ``python ml/auto_retraining_scheduler.py --interval 24``. Each run checks a
file (``--data-path``) or the last ``--window-records`` records of the records topic
(``--from-topic``), retrains on drift with ``--trigger-retraining`` and on a fixed cadence with
``--retrain-every N`` (every Nth run, drift or not), and prints one JSON line. SIGTERM or
SIGINT stops it between runs (the wait is an ``Event``, so it stops at once).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer

from levydrift.commands.check import check_columns, check_file
from levydrift.commands.check_result import CheckResult, CheckSettings, load_check_settings
from levydrift.commands.retraining import train_on_result, trained_on_same_data, trigger_retraining
from levydrift.errors import LevyDriftError, UsageError
from levydrift.kafka import consumer_config, read_ranges, watermarks
from levydrift.logs import configure as configure_logging
from schemas.levy_record import decode_levy_records, levy_records_to_columns
from trainer.registry import utc_now

log = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Job:
    """What every run does."""

    settings: CheckSettings
    data_path: Path | None
    window_records: int
    report: Path | None
    trigger_retraining: bool
    publish_events: bool
    retrain_every: int
    model: str
    registry: str

    def run(self, number: int) -> dict[str, Any]:
        """One run; returns its log entry (errors are logged, not raised)."""
        started = time.monotonic()
        entry: dict[str, Any] = {"run": number, "started_at": utc_now()}
        try:
            result = self.check()
            entry.update(source=result.source, rows=result.rows, drift=result.drifted,
                         signals=result.drifted_signals(), exit_code=result.exit_code)
            if self.report is not None:
                from levydrift.commands.report import write_report  # lazy: matplotlib

                entry["report"] = str(write_report(result, self.report / f"run-{number}")[0])
            entry["retraining"] = self.retrain(result, number)
        except LevyDriftError as error:
            entry.update(exit_code=error.exit_code, error=str(error))
        entry["duration_s"] = round(time.monotonic() - started, 3)
        return entry

    def check(self) -> CheckResult:
        if self.data_path is not None:
            return check_file(self.data_path, self.settings, model=self.model,
                              registry=self.registry, note=log.info)
        topic = self.settings.topics.records
        columns = read_topic_window(self.settings, topic, self.window_records)
        return check_columns(columns, self.settings,
                             f"{topic} (last {len(columns['record_id']):,} records)",
                             topic_window(topic, columns), model=self.model,
                             registry=self.registry)

    def retrain(self, result: CheckResult, number: int) -> str | None:
        """Drift no version handled yet retrains (``--trigger-retraining``); so does every
        ``--retrain-every``-th run, unless a version was trained on exactly this data."""
        if result.drifted and self.trigger_retraining:
            return trigger_retraining(result, self.settings, self.registry,
                                      self.publish_events).line
        if self.retrain_every and number % self.retrain_every == 0:
            done = trained_on_same_data(result, self.registry)
            if done is not None:
                return f"scheduled: version {done} was trained on the same data; skipped"
            info = train_on_result(result, self.settings, self.registry, [])
            return "scheduled " + info.summary_line()
        return None


def topic_window(topic: str, columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """A topic window as a training window named by its content (the record ids), so the
    same records read again are recognised as data already trained on."""
    digest = hashlib.sha256("\n".join(map(str, columns["record_id"])).encode()).hexdigest()
    rows = len(columns["record_id"])
    return {"topic": f"window.{topic}.{digest[:12]}", "partition": 0, "first_offset": 0,
            "last_offset": max(rows - 1, 0)}


def schedule_loop(run: Callable[[int], dict[str, Any]], interval_s: float,
                  stop: threading.Event, emit: Callable[[dict[str, Any]], None],
                  once: bool = False) -> int:
    """Run, emit the entry, wait ``interval_s`` (or until ``stop``), repeat. Returns the
    exit code of the last run with ``once``, else 0 after a stop."""
    number = 0
    while not stop.is_set():
        number += 1
        entry = run(number)
        emit(entry)
        if once:
            return int(entry.get("exit_code", 0))
        stop.wait(interval_s)
    emit({"stopped_at": utc_now(), "runs": number})
    return 0


def read_topic_window(settings: CheckSettings, topic: str, records: int) -> dict[str, Any]:
    """The last ``records`` records of ``topic`` (split over its partitions) as columns, in
    record-timestamp order. Records the stream would dead-letter are left out, as there."""
    kafka = settings.kafka
    reader = Consumer(consumer_config(kafka, "levydrift-schedule"))
    values: list[bytes | None] = []
    stamps: list[int] = []
    try:
        ends = watermarks(reader, topic, kafka.request_timeout_s)
        quota = math.ceil(records / len(ends))
        tails = {partition: (max(low, high - quota), high)
                 for partition, (low, high) in ends.items()}
        for message in read_ranges(reader, topic, tails, timeout_s=kafka.request_timeout_s,
                                   idle=True):
            values.append(message.value())
            stamps.append(message.timestamp()[1])
    finally:
        reader.close()
    decoded, rejected = decode_levy_records(values)
    keep = np.ones(len(values), dtype=bool)
    keep[[index for index, _ in rejected]] = False
    order = np.argsort(np.asarray(stamps, dtype=np.int64)[keep], kind="stable")
    if not decoded:
        raise UsageError(f"topic {topic} holds no valid levy records")
    columns = levy_records_to_columns(decoded)
    return {name: column[order] for name, column in columns.items()}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schedule", help="run the batch drift check every --interval hours",
        description="Run levydrift check every --interval hours on a file or on the last "
                    "window of the records topic; one JSON line per run; SIGTERM stops it.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-path", type=Path, metavar="FILE",
                        help="levy records file, re-read at every run")
    source.add_argument("--from-topic", action="store_true",
                        help="check the last --window-records records of the records topic")
    parser.add_argument("--interval", type=float, default=24.0, metavar="HOURS",
                        help="hours between runs (default 24)")
    parser.add_argument("--window-records", type=int, default=50_000, metavar="N",
                        help="records read from the topic per run (default 50000)")
    parser.add_argument("--retrain-every", type=int, default=0, metavar="N",
                        help="also retrain every Nth run, drift or not (default: never)")
    parser.add_argument("--trigger-retraining", action="store_true",
                        help="retrain when a run finds drift (as levydrift check)")
    parser.add_argument("--publish-events", action="store_true",
                        help="with --trigger-retraining: publish drift events for the worker")
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="write each run's report to DIR/run-<n>/")
    parser.add_argument("--model", help="model name (default: trainer.model_name)")
    parser.add_argument("--registry", metavar="DIR",
                        help="registry root (default: registry.root)")
    parser.add_argument("--once", action="store_true",
                        help="one run, exit with its code (0 no drift, 1 drift, 2/3 error)")
    parser.set_defaults(handler=_run)


def _run(arguments: argparse.Namespace) -> int:
    if arguments.interval <= 0 or arguments.window_records < 1 or arguments.retrain_every < 0:
        raise UsageError("--interval must be > 0, --window-records >= 1, --retrain-every >= 0")
    settings = load_check_settings(arguments.config)
    configure_logging(settings.logging.level)
    job = Job(settings, arguments.data_path, arguments.window_records, arguments.report,
              arguments.trigger_retraining, arguments.publish_events, arguments.retrain_every,
              arguments.model or settings.trainer.model_name,
              arguments.registry or settings.registry.root)
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    return schedule_loop(job.run, arguments.interval * SECONDS_PER_HOUR, stop, _emit,
                         once=arguments.once)


def _emit(entry: dict[str, Any]) -> None:
    print(orjson.dumps(entry, option=orjson.OPT_SERIALIZE_NUMPY).decode(), flush=True)
