"""End-to-end consumer throughput through a real broker, beside a bare confluent-kafka consumer
on the same topic in the same run, and memory over the run.

    python bench/bench_consumer.py [--records 300000] [--bootstrap 127.0.0.1:9092]

Pre-fills a one-partition topic with simulated levy records, then
1. reads it with a bare Consumer (consume() in batches, no decoding): the raw rate;
2. runs the full ``levydrift consume`` service in this process (decode, validate, dead letters,
   champion scoring when given, the 12-signal detector bank, transactional checkpoints of offsets
   and detector state) over the same records with a fresh group: the end-to-end rate;
and samples the resident memory after each quarter of the stream (it must stay flat).
Runs on one core's worth of Python (the broker shares the machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from machine import describe  # noqa: E402

from consumer.config import ConsumerSection, ConsumerSettings  # noqa: E402
from consumer.service import ConsumerService  # noqa: E402
from levydrift.settings import KafkaSettings, MetricsSettings, TopicSettings  # noqa: E402
from levydrift.simulator import LevySimulator, SimulatorConfig  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def prefill(bootstrap: str, topic: str, records: int) -> None:
    simulator = LevySimulator(SimulatorConfig(seed=11, scenario="none"))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "compression.type": "lz4", "batch.size": 1_000_000})
    for batch in simulator.record_batches(0, records):
        for record in batch:
            while True:
                try:
                    producer.produce(topic, key=record["parcel_id"].encode(),
                                     value=orjson.dumps(record))
                    break
                except BufferError:
                    producer.poll(0.05)
    producer.flush(120)


def raw_rate(bootstrap: str, topic: str, records: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 52_428_800})
    consumer.subscribe([topic])
    seen, started = 0, None
    while seen < records:
        messages = consumer.consume(2000, 1.0)
        if messages and started is None:
            started = time.perf_counter()
        seen += sum(1 for message in messages if not message.error())
    elapsed = time.perf_counter() - started
    consumer.close()
    return records / elapsed


def service_rate(bootstrap: str, names: dict[str, str], records: int) -> tuple[float, list]:
    settings = ConsumerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=TopicSettings(**names),
        consumer=ConsumerSection(group_id=f"bench-{uuid.uuid4().hex[:8]}", instance_id="bench",
                                 batch_size=5000),
        metrics=MetricsSettings(port=0))
    service = ConsumerService(settings)
    samples: list[tuple[int, float]] = []
    marks = [records * q // 4 for q in (1, 2, 3, 4)]
    timing: dict[str, float] = {}

    def done(current: ConsumerService) -> bool:
        position = sum(m.next_offset for m in current.monitors.values())
        if position and "start" not in timing:
            timing["start"] = time.perf_counter()
        while marks and position >= marks[0]:
            samples.append((marks.pop(0), rss_mib()))
        return position >= records

    service.run(stop_when=done)
    return records / (time.perf_counter() - timing["start"]), samples


def warm_up_detector_kernels() -> None:
    """Compile (or load from cache) the numba kernels before timing anything."""
    import numpy as np

    from consumer.processing import signal_columns
    from detectors.bank import DetectorBank
    from detectors.config import DetectorSettings

    simulator = LevySimulator(SimulatorConfig(seed=1))
    columns = signal_columns(dict(simulator.columns(0, 200)), None)
    columns["event_time"] = columns["event_time"].astype(str).astype(object)
    DetectorBank(DetectorSettings()).update(columns, np.arange(200, dtype=np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--bootstrap", default=os.environ.get(
        "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    arguments = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    names = {"records": f"bench-rec-{run}", "dead_letters": f"bench-dlq-{run}",
             "drift_events": f"bench-drift-{run}", "model_versions": f"bench-mv-{run}",
             "detector_state": f"bench-state-{run}"}
    admin = AdminClient({"bootstrap.servers": arguments.bootstrap})
    compact = {"cleanup.policy": "compact"}
    futures = admin.create_topics([
        NewTopic(name, 1, 1, config=compact if key in ("model_versions", "detector_state")
                 else {}) for key, name in names.items()])
    for future in futures.values():
        future.result()
    print(describe())
    print(f"records: {arguments.records:,} on one partition; broker on the same machine")
    prefill(arguments.bootstrap, names["records"], arguments.records)
    warm_up_detector_kernels()
    raw = raw_rate(arguments.bootstrap, names["records"], arguments.records)
    service, samples = service_rate(arguments.bootstrap, names, arguments.records)
    print(f"{'bare confluent-kafka consume':<40} {raw:>12,.0f} records/s")
    print(f"{'levydrift consume (end to end)':<40} {service:>12,.0f} records/s"
          f"  ({service / raw:.2f} x raw)")
    print("resident memory after each quarter: "
          + ", ".join(f"{count:,}: {mib:.0f} MiB" for count, mib in samples))
    admin.delete_topics(list(names.values()))


if __name__ == "__main__":
    main()
