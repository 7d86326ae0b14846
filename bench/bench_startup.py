"""How soon ``levydrift consume`` works after launch, on the project's partition layout.

    python bench/bench_startup.py [--partitions 6] [--records 60000] [--repeat 5] [--champion]
        [--build DIR ...] [--bootstrap HOST:PORT]

Per repetition: fresh topics (records, labels and changelog with ``--partitions`` partitions,
co-partitioned as ``levydrift topics create`` makes them; the others one), the records topic
pre-filled with simulated records spread over its partitions by parcel, then ``levydrift
consume`` launched with a fresh group and state directory, as users run it (a process, the
join store on; no champion, or with ``--champion`` a model version serving from the start),
until every record is committed; then as many new records, and the same instance launched
again with its state (a restart after a deploy: snapshots, changelog and join stores to
restore). Reported from each launch, min / median / max: the first record processed (its
/metrics page, sampled every 20 ms) and every record committed (the group's committed
offsets). Each ``--build`` (a checkout with its own ``.venv``, or this one by default) runs
once per repetition, the order alternating, so two builds meet the same machine load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import builds as builds_module  # noqa: E402
from bench_consumer import (  # noqa: E402
    free_port,
    prefill,
    records_processed,
    topic_names,
)
from bench_labels import publish_champion  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from machine import describe, load_average  # noqa: E402

SAMPLE_INTERVAL_S = 0.02
CO_PARTITIONED = ("records", "labels", "join_changelog")
COMPACTED = ("model_versions", "detector_state", "join_changelog")


def create_topics(admin: AdminClient, names: dict[str, str], partitions: int) -> None:
    futures = admin.create_topics([
        NewTopic(name, partitions if key in CO_PARTITIONED else 1, 1,
                 config={"cleanup.policy": "compact"} if key in COMPACTED else {})
        for key, name in names.items()])
    for future in futures.values():
        future.result()


def committed_total(probe: Consumer, topic: str, partitions: int) -> int:
    positions = probe.committed([TopicPartition(topic, p) for p in range(partitions)],
                                timeout=10)
    return sum(max(position.offset, 0) for position in positions)


def launch_to_work(build: Path, bootstrap: str, names: dict[str, str], records: int,
                   partitions: int, workdir: Path, group: str) -> tuple[float, float]:
    """Seconds from launch to the first record processed and to ``records`` committed; the
    instance's state directory is kept for its next launch."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")}
    env.update({"LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "LEVYDRIFT_CONSUMER_GROUP_ID": group, "LEVYDRIFT_CONSUMER_INSTANCE_ID": group,
                "LEVYDRIFT_REGISTRY_ROOT": str(workdir / f"{group}-models"),
                "LEVYDRIFT_CONSUMER_STATE_DIR": str(workdir / group),
                "LEVYDRIFT_METRICS_PORT": str(port), "LEVYDRIFT_METRICS_HOST": "127.0.0.1",
                "LEVYDRIFT_LOGGING_LEVEL": "WARNING",
                **{f"LEVYDRIFT_TOPICS_{key.upper()}": name for key, name in names.items()}})
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "enable.auto.commit": False})
    python = build / ".venv" / "bin" / "python"
    log = (workdir / f"{group}.log").open("ab")
    launched = time.monotonic()
    process = subprocess.Popen([str(python), "-m", "levydrift.cli", "consume"], cwd=build,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    first_record = None
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"levydrift consume exited early ({process.returncode}); "
                                 f"log: {log.name}")
            if first_record is None and records_processed(port) > 0:
                first_record = time.monotonic() - launched
            if first_record is not None \
                    and committed_total(probe, names["records"], partitions) >= records:
                return first_record, time.monotonic() - launched
            time.sleep(SAMPLE_INTERVAL_S)
    finally:
        process.terminate()
        process.wait(60)
        probe.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=6,
                        help="records partitions (the project's default layout has 6)")
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--champion", action="store_true",
                        help="a champion serving (bench_labels.py's version 1): scikit-learn "
                             "and skops imported, the model loaded and probed at start")
    builds_module.add_arguments(parser)
    arguments = parser.parse_args()
    builds = builds_module.chosen(arguments, REPO)
    admin = AdminClient({"bootstrap.servers": arguments.bootstrap})
    print(describe())
    print(f"records: {arguments.records:,} over {arguments.partitions} partitions; broker on "
          f"the same machine; {arguments.repeat} repetitions")
    timings: dict[tuple[Path, str], list[tuple[float, float]]] = {
        (build, start): [] for build in builds for start in ("first start", "restart")}
    records, partitions = arguments.records, arguments.partitions
    with tempfile.TemporaryDirectory() as workdir:
        for repetition in range(arguments.repeat):
            for build in builds_module.in_turn(builds, repetition):
                names = topic_names(uuid.uuid4().hex[:8])
                group = f"startup-{uuid.uuid4().hex[:8]}"
                create_topics(admin, names, partitions)
                try:
                    prefill(arguments.bootstrap, names["records"], records)
                    if arguments.champion:
                        publish_champion(arguments.bootstrap, names["model_versions"],
                                         Path(workdir) / f"{group}-models")
                    timings[(build, "first start")].append(launch_to_work(
                        build, arguments.bootstrap, names, records, partitions, Path(workdir),
                        group))
                    # As after a deploy: the same instance, its state kept, new records waiting.
                    prefill(arguments.bootstrap, names["records"], records, first=records)
                    timings[(build, "restart")].append(launch_to_work(
                        build, arguments.bootstrap, names, 2 * records, partitions,
                        Path(workdir), group))
                finally:
                    for future in admin.delete_topics(list(names.values())).values():
                        future.result()
            print(f"repetition {repetition + 1}: load average {load_average():.1f}", flush=True)
    print(f"\n{'seconds from launch (min median max)':<44} {'first record':>26}   "
          f"{'all committed':>26}")
    for (build, start), runs in timings.items():
        print(f"{f'{build}, {start}':<44} {spread_s([first for first, _ in runs])}   "
              f"{spread_s([done for _, done in runs])}")


def spread_s(values: list[float]) -> str:
    return f"{min(values):8.2f} {statistics.median(values):8.2f} {max(values):8.2f}"


if __name__ == "__main__":
    main()
