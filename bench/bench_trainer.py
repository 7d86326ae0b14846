"""Trainer benchmark: time from a drift event to its model-version event.

* in-process: training window (already decoded) -> fit, holdout scoring, gate, registry write,
  for 100,000 and 1,000,000 labelled records;
* end to end through the real broker: records on a topic, a drift event, a TrainWorker in this
  process; time from producing the event to reading its model-version event (window read-back
  and decoding included), for 100,000 labelled records (``--e2e-records``).

Run with one core for the training figures: ``OMP_NUM_THREADS=1 .venv/bin/python
bench/bench_trainer.py``. Prints a Markdown table; ``--write`` also writes bench/RESULTS-trainer.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from machine import cpu_model, load_average

from levydrift import settings as settings_module
from levydrift.features import to_model_frame
from levydrift.simulator import LevySimulator, SimulatorConfig, to_records
from schemas.drift_event import DetectorSpec, DriftEvent, DriftSignal, SourceOffsets, WindowSummary
from trainer.config import TrainerSettings
from trainer.registry import ModelRegistry
from trainer.training import TrainingRequest, train_and_register
from trainer.worker import TrainWorker

SIMULATOR = LevySimulator(SimulatorConfig(seed=11, labelled_share=1.0, parcels=200_000))


def in_process(records: int, root: Path) -> tuple[float, str]:
    frame = to_model_frame(SIMULATOR.columns(0, records), include_target=True)
    started = time.perf_counter()
    info = train_and_register(ModelRegistry(root), "bench", TrainingRequest(
        frame=frame, trigger_event_ids=[], code_version="bench",
        training_offsets=[{"topic": "bench", "partition": 0, "first_offset": 0,
                           "last_offset": records - 1}]))
    elapsed = time.perf_counter() - started
    return elapsed, f"MAE {info.metrics['candidate']['mae']:.2f}, " \
                    f"R² {info.metrics['candidate']['r2']:.5f}"


def end_to_end(bootstrap: str, records: int, root: Path) -> tuple[float, float]:
    unique = uuid.uuid4().hex[:8]
    topics = {"records": f"bench-records-{unique}", "drift": f"bench-drift-{unique}",
              "versions": f"bench-versions-{unique}"}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()]).values():
        future.result()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "compression.type": "lz4"})
    for start in range(0, records, 65_536):
        for record in to_records(SIMULATOR.columns(start, min(records, start + 65_536))):
            producer.produce(topics["records"], key=record["parcel_id"].encode(),
                             value=orjson.dumps(record))
            producer.poll(0)
    producer.flush(60)
    config = root / "bench.toml"
    config.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
[topics]
records = "{topics['records']}"
drift_events = "{topics['drift']}"
model_versions = "{topics['versions']}"
[trainer]
group_id = "bench-{unique}"
transactional_id_prefix = "bench-{unique}"
window_records = {records}
episode_linger_s = 0.0
[registry]
root = "{root / 'e2e'}"
[metrics]
port = 0
""")
    worker = TrainWorker(settings_module.load(TrainerSettings, config, environ={}))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    summary = WindowSummary(n=1, mean=0.0, std=1.0)
    event = DriftEvent(str(uuid.uuid4()), "levy-impact", None, "performance",
                       (DriftSignal("abs_error", DetectorSpec("page_hinkley", {}), 1.0, 0.5,
                                    None, summary, summary),),
                       SourceOffsets(topics["records"], 0, 0, 0),
                       SourceOffsets(topics["records"], 0, 1, records - 1),
                       "2026-01-01T00:00:00Z", "bench")
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-reader-{unique}",
                       "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    reader.assign([TopicPartition(topics["versions"], 0, 0)])
    started = time.perf_counter()
    producer.produce(topics["drift"], key=b"levy-impact", value=event.to_bytes())
    producer.flush(10)
    try:
        while True:
            message = reader.poll(1.0)
            if message is not None and message.error() is None:
                elapsed = time.perf_counter() - started
                break
            if time.perf_counter() - started > 900:
                raise TimeoutError("no model-version event within 15 minutes")
    finally:
        reader.close()
        worker.stop()
        thread.join(60)
    lineage = ModelRegistry(root / "e2e").get("levy-impact", 1).lineage
    return elapsed, float(lineage["training_duration_s"])


def machine() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores visible, OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, Python {platform.python_version()}, "
            f"load average at start {load_average():.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--e2e-records", type=int, default=100_000)
    parser.add_argument("--bootstrap", default=os.environ.get("LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS",
                                                              "127.0.0.1:9092"))
    parser.add_argument("--write", action="store_true")
    arguments = parser.parse_args()
    lines = ["# Trainer benchmark", "", f"Machine: {machine()}.", "",
             "| measurement | labelled records | seconds | model |", "|---|---:|---:|---|"]
    with tempfile.TemporaryDirectory() as directory:
        for size in (int(s) for s in arguments.sizes.split(",") if s):
            elapsed, quality = in_process(size, Path(directory) / f"in-{size}")
            lines.append(f"| in-process train + gate + registry | {size:,} | {elapsed:.1f} | "
                         f"{quality} |")
            print(lines[-1], flush=True)
        if arguments.e2e_records:
            elapsed, training = end_to_end(arguments.bootstrap, arguments.e2e_records,
                                           Path(directory))
            lines.append(f"| drift event -> model-version event (broker, read-back incl.) | "
                         f"{arguments.e2e_records:,} | {elapsed:.1f} | of which training "
                         f"{training:.1f} s |")
            print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    print(report)
    if arguments.write:
        Path(__file__).with_name("RESULTS-trainer.md").write_text(report)


if __name__ == "__main__":
    main()
