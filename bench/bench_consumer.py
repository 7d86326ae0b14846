"""The consumer service as users run it, beside the ceiling: a bare confluent-kafka consume loop.

    python bench/bench_consumer.py [--records 1000000] [--repeat 3] [--no-join] [--uuid-ids]
        [--join-cache-mib N] [--bootstrap HOST:PORT]

Pre-fills a one-partition topic with simulated levy records once, then, for each repetition,
runs both contenders one after the other (interleaved, so machine load hits both alike), each as
its own process started from this one:
- bare: a tight ``Consumer.consume(10000)`` loop with generous fetch settings that checks each
  message's error and takes its value, the least any real consumer does, and decodes nothing:
  the most a Python consumer of this client can do here;
- service: ``levydrift consume`` (decode, validate, dead letters, the 12-signal detector bank,
  transactional checkpoints of offsets and detector state) with a fresh group, observed from
  outside as a user would: records processed from its /metrics page, done when its committed
  offset reaches the end of the topic.
Reported per contender: end to end (from process launch to the last record read / committed)
and steady state (between 20 % and 90 % of the stream), min / median / max over repetitions,
and the service's ratio to the bare loop of the same repetition. The service's resident memory
is sampled while it runs (it must stay flat).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from machine import describe  # noqa: E402

from levydrift.simulator import LevySimulator, SimulatorConfig  # noqa: E402

STEADY_FROM, STEADY_TO = 0.2, 0.9
POLL_INTERVAL_S = 0.1

# The bare contender: prints launch-relative times at the steady-state marks and the end.
BARE_LOOP = textwrap.dedent("""
    import sys, time, uuid
    launched = float(sys.argv[3])
    from confluent_kafka import Consumer
    bootstrap, topic, total = sys.argv[1], sys.argv[2], int(sys.argv[4])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 104857600, "max.partition.fetch.bytes": 104857600,
                         "queued.max.messages.kbytes": 1048576, "fetch.wait.max.ms": 10})
    consumer.subscribe([topic])
    marks = [int(total * STEADY_FROM), int(total * STEADY_TO)]
    times = []
    seen = 0
    while seen < total:
        for message in consumer.consume(10000, 1.0):
            if message.error() is None and message.value() is not None:
                seen += 1
        while marks and seen >= marks[0]:
            marks.pop(0)
            times.append(time.time() - launched)
    times.append(time.time() - launched)
    print(" ".join(repr(t) for t in times))
    consumer.close()
""").replace("STEADY_FROM", repr(STEADY_FROM)).replace("STEADY_TO", repr(STEADY_TO))


@dataclass
class Timing:
    end_to_end: float  # records / s from launch to the end
    steady: float  # records / s between the steady-state marks
    rss_mib: tuple[float, float] = (0.0, 0.0)  # min, max over the run (service only)
    # Resident MiB when the service had processed each fifth of the records (service only).
    rss_by_fifth: tuple[float, ...] = ()
    metrics: str = ""  # the service's /metrics page once it was done (service only)


def prefill(bootstrap: str, topic: str, records: int, uuid_ids: bool = False,
            first: int = 0) -> None:
    """The simulator's records from its ``first`` on; with ``uuid_ids`` each record_id a
    random UUID (as many producers make them) instead of the simulator's
    ``sim-<seed>-<index>``, which sorts in arrival order and so flatters anything keyed by it
    (the join store)."""
    simulator = LevySimulator(SimulatorConfig(seed=11, scenario="none"))
    random_ids = random.Random(11)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "compression.type": "lz4", "batch.size": 1_000_000})
    for batch in simulator.record_batches(first, first + records):
        for record in batch:
            if uuid_ids:
                record["record_id"] = str(uuid.UUID(int=random_ids.getrandbits(128), version=4))
            while True:
                try:
                    producer.produce(topic, key=record["parcel_id"].encode(),
                                     value=orjson.dumps(record))
                    break
                except BufferError:
                    producer.poll(0.05)
    producer.flush(120)


def run_bare(bootstrap: str, topic: str, records: int) -> Timing:
    launched = time.time()
    output = subprocess.run([sys.executable, "-c", BARE_LOOP, bootstrap, topic, repr(launched),
                             str(records)], capture_output=True, text=True, check=True)
    first, last, end = map(float, output.stdout.split())
    steady = records * (STEADY_TO - STEADY_FROM) / (last - first)
    return Timing(records / end, steady)


def committed(probe: Consumer, topic: str) -> int:
    (position,) = probe.committed([TopicPartition(topic, 0)], timeout=10)
    return max(position.offset, 0)


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            line = next(line for line in status if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def metrics_page(port: int) -> str:
    """The service's /metrics page ("" while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
            return str(page.read().decode())
    except OSError:
        return ""


def metric_total(text: str, prefix: str) -> float:
    """The sum of the samples on a /metrics page whose line starts with ``prefix``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


def records_processed(port: int) -> int:
    """Records the service has processed (valid + dead-lettered), from its /metrics page."""
    return int(metric_total(metrics_page(port), "levydrift_consumer_records_total{"))


def run_service(bootstrap: str, names: dict[str, str], records: int, workdir: Path,
                extra_env: dict[str, str] | None = None, group: str | None = None,
                done: Callable[[], bool] | None = None) -> Timing:
    """``levydrift consume`` with a fresh group (or ``group``), its environment plus
    ``extra_env``, until its committed offset reaches ``records`` (and ``done()``, when
    given, holds)."""
    group = group or f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")}
    env.update({"LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "LEVYDRIFT_CONSUMER_GROUP_ID": group, "LEVYDRIFT_CONSUMER_INSTANCE_ID": group,
                "LEVYDRIFT_REGISTRY_ROOT": str(workdir / "models"),
                "LEVYDRIFT_CONSUMER_STATE_DIR": str(workdir / "consumer-state"),
                "LEVYDRIFT_METRICS_PORT": str(port), "LEVYDRIFT_METRICS_HOST": "127.0.0.1",
                "LEVYDRIFT_LOGGING_LEVEL": "WARNING",
                **{f"LEVYDRIFT_TOPICS_{key.upper()}": name for key, name in names.items()},
                **(extra_env or {})})
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "enable.auto.commit": False})
    log = (workdir / f"{group}.log").open("wb")
    launched = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "levydrift.cli", "consume"], cwd=REPO,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    samples: list[tuple[float, int]] = []
    memory: list[tuple[int, float]] = []  # (records processed, resident MiB)
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"levydrift consume exited early ({process.returncode}); "
                                 f"log: {log.name}")
            processed = records_processed(port)
            samples.append((time.monotonic() - launched, processed))
            if processed > records * STEADY_FROM or processed >= records // 5:
                memory.append((processed, rss_mib(process.pid)))
            if processed >= records and committed(probe, names["records"]) >= records \
                    and (done is None or done()):
                break
            time.sleep(POLL_INTERVAL_S)
        end = time.monotonic() - launched  # every record processed and committed
        page = metrics_page(port)
    finally:
        process.terminate()
        process.wait(60)
        probe.close()
    first = next((t, n) for t, n in samples if n >= records * STEADY_FROM)
    last = next((t, n) for t, n in samples if n >= records * STEADY_TO)
    steady = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else float("nan")
    steady_memory = [mib for n, mib in memory if n > records * STEADY_FROM]
    by_fifth = tuple(next(mib for n, mib in memory if n >= records * fifth // 5)
                     for fifth in range(1, 6))
    return Timing(records / end, steady, rss_mib=(min(steady_memory), max(steady_memory)),
                  rss_by_fifth=by_fifth, metrics=page)


def spread(values: list[float]) -> str:
    return (f"{min(values):>10,.0f} {statistics.median(values):>10,.0f} "
            f"{max(values):>10,.0f}")


def ratio_spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def topic_names(run: str) -> dict[str, str]:
    """Every topic of the service, named for one benchmark run."""
    return {"records": f"bench-rec-{run}", "dead_letters": f"bench-dlq-{run}",
            "drift_events": f"bench-drift-{run}", "model_versions": f"bench-mv-{run}",
            "detector_state": f"bench-state-{run}", "labels": f"bench-labels-{run}",
            "join_changelog": f"bench-changelog-{run}"}


def create_topics(bootstrap: str, names: dict[str, str]) -> AdminClient:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    compact = {"cleanup.policy": "compact"}
    futures = admin.create_topics([
        NewTopic(name, 1, 1, config=compact if key in ("model_versions", "detector_state",
                                                       "join_changelog")
                 else {}) for key, name in names.items()])
    for future in futures.values():
        future.result()
    return admin


def delete_topics(admin: AdminClient, names: Iterable[str]) -> None:
    """Delete the benchmark's topics, waiting for the broker's answer (an admin client that
    goes away first takes the unsent request with it)."""
    for future in admin.delete_topics(list(names)).values():
        future.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-join", action="store_true",
                        help="run the service with consumer.join_labels off (no join store)")
    parser.add_argument("--uuid-ids", action="store_true",
                        help="random UUID record ids (the simulator's sort in arrival order)")
    parser.add_argument("--join-cache-mib", type=int, default=0,
                        help="consumer.join_cache_mib: the join store's filters and indexes "
                             "in a cache this big (0: RocksDB's default, in memory)")
    parser.add_argument("--bootstrap", default=os.environ.get(
        "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    arguments = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    names = topic_names(run)
    admin = create_topics(arguments.bootstrap, names)
    print(describe())
    print(f"records: {arguments.records:,} on one partition; broker on the same machine; "
          f"{arguments.repeat} interleaved repetitions")
    prefill(arguments.bootstrap, names["records"], arguments.records, arguments.uuid_ids)
    bare: list[Timing] = []
    service: list[Timing] = []
    settings = {"LEVYDRIFT_CONSUMER_JOIN_CACHE_MIB": str(arguments.join_cache_mib)}
    if arguments.no_join:
        settings["LEVYDRIFT_CONSUMER_JOIN_LABELS"] = "false"
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(arguments.repeat):
            bare.append(run_bare(arguments.bootstrap, names["records"], arguments.records))
            service.append(run_service(arguments.bootstrap, names, arguments.records,
                                       Path(workdir), settings))
    print(f"\n{'records/s (min median max)':<36} {'end to end':>32}   {'steady state':>32}")
    for label, timings in (("bare confluent-kafka consume loop", bare),
                           ("levydrift consume", service)):
        print(f"{label:<36} {spread([t.end_to_end for t in timings])}   "
              f"{spread([t.steady for t in timings])}")
    print("levydrift consume / bare, same repetition (min / median / max): end to end "
          + ratio_spread([s.end_to_end / b.end_to_end for s, b in zip(service, bare,
                                                                       strict=True)])
          + "; steady state "
          + ratio_spread([s.steady / b.steady for s, b in zip(service, bare, strict=True)]))
    print("levydrift consume resident memory over each run (MiB, min-max): "
          + ", ".join(f"{low:.0f}-{high:.0f}" for low, high in (t.rss_mib for t in service)))
    print("levydrift consume resident memory after each fifth of the records (MiB): "
          + "; ".join(" / ".join(f"{mib:.0f}" for mib in t.rss_by_fifth) for t in service))
    delete_topics(admin, names.values())


if __name__ == "__main__":
    main()
