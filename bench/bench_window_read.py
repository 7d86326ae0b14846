"""How long the trainer takes to read its training window back from Kafka, labels joined.

    python bench/bench_window_read.py [--partitions 6] [--records 120000]
        [--labelled-share 0.34] [--window 30000,120000] [--repeat 5] [--build DIR ...]
        [--bootstrap HOST:PORT]

A records topic with ``--partitions`` partitions (the project's default layout has 6) holds
simulated records without their levy; a co-partitioned labels topic holds the levies of
``--labelled-share`` of them, in another order, as they arrive months later. Each measurement is
``trainer.window.read_training_window`` with the labels topic, for ``--window`` training rows,
timed in a process of its own (imports excluded), the way a drift event's retrain reads it:
back from each partition's newest record, chunk by chunk, each chunk's labels looked up by time.
Each ``--build`` (a checkout with its own ``.venv``, or this one by default) runs once per
repetition and window, the order alternating. Reported: seconds and training rows, min / median
/ max.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import builds as builds_module  # noqa: E402
import orjson  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from machine import describe, load_average  # noqa: E402

from levydrift.simulator import LevySimulator, SimulatorConfig, to_records  # noqa: E402
from tests.consumer.harness import produce_values  # noqa: E402

# One measurement, run in the build's own interpreter and directory.
MEASURE = textwrap.dedent("""
    import sys, time
    from levydrift.settings import KafkaSettings
    from trainer.window import read_training_window
    bootstrap, records, labels, window = sys.argv[1:5]
    started = time.perf_counter()
    read = read_training_window(KafkaSettings(bootstrap_servers=bootstrap), records, {},
                                int(window), 10_000_000, labels_topic=labels)
    print(time.perf_counter() - started, len(read.frame))
""")


def fill(bootstrap: str, records_topic: str, labels_topic: str, records: int,
         labelled_share: float) -> None:
    """Records without their levy; the levies of a share of them as labels, shuffled."""
    simulator = LevySimulator(SimulatorConfig(seed=11, labelled_share=1.0))
    documents = to_records(simulator.columns(0, records))
    chosen = random.Random(5).sample(documents, int(records * labelled_share))
    labels = [{"schema_version": 1, "record_id": r["record_id"], "parcel_id": r["parcel_id"],
               "tax_year": r["tax_year"], "actual_levy_amount": r["actual_levy_amount"],
               "event_time": r["event_time"]} for r in chosen]
    produce_values(bootstrap, records_topic, keyed(
        {k: v for k, v in r.items() if k != "actual_levy_amount"} for r in documents))
    produce_values(bootstrap, labels_topic, keyed(labels))


def keyed(documents: Iterable[dict]) -> Iterator[tuple[bytes, bytes]]:
    """Each document as a message keyed by its parcel (a label lands beside its record)."""
    return ((document["parcel_id"].encode(), orjson.dumps(document)) for document in documents)


def measure(build: Path, bootstrap: str, records_topic: str, labels_topic: str,
            window: int) -> tuple[float, int]:
    output = subprocess.run([str(build / ".venv" / "bin" / "python"), "-c", MEASURE, bootstrap,
                             records_topic, labels_topic, str(window)], cwd=build,
                            capture_output=True, text=True, check=True)
    seconds, rows = output.stdout.split()[-2:]
    return float(seconds), int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--records", type=int, default=120_000)
    parser.add_argument("--labelled-share", type=float, default=0.34)
    parser.add_argument("--window", default="30000,120000",
                        help="training rows asked for (trainer.window_records), comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    builds_module.add_arguments(parser)
    arguments = parser.parse_args()
    builds = builds_module.chosen(arguments, REPO)
    windows = [int(size) for size in arguments.window.split(",") if size]
    run = uuid.uuid4().hex[:8]
    records_topic, labels_topic = f"bench-window-rec-{run}", f"bench-window-labels-{run}"
    admin = AdminClient({"bootstrap.servers": arguments.bootstrap})
    for future in admin.create_topics([NewTopic(name, arguments.partitions, 1) for name
                                       in (records_topic, labels_topic)]).values():
        future.result()
    print(describe())
    print(f"records: {arguments.records:,} over {arguments.partitions} partitions, "
          f"{arguments.labelled_share:.0%} of them labelled on the labels topic; broker on the "
          f"same machine; {arguments.repeat} repetitions")
    timings: dict[tuple[Path, int], list[tuple[float, int]]] = {
        (build, window): [] for build in builds for window in windows}
    try:
        fill(arguments.bootstrap, records_topic, labels_topic, arguments.records,
             arguments.labelled_share)
        for repetition in range(arguments.repeat):
            for window in windows:
                for build in builds_module.in_turn(builds, repetition):
                    timings[(build, window)].append(measure(
                        build, arguments.bootstrap, records_topic, labels_topic, window))
            print(f"repetition {repetition + 1}: load average {load_average():.1f}", flush=True)
    finally:
        for future in admin.delete_topics([records_topic, labels_topic]).values():
            future.result()
    print(f"\n{'window read (min median max)':<52} {'seconds':>24}   training rows")
    for (build, window), runs in timings.items():
        seconds = [elapsed for elapsed, _ in runs]
        print(f"{f'{build}, window {window:,}':<52} {min(seconds):7.2f} "
              f"{statistics.median(seconds):7.2f} {max(seconds):7.2f}   "
              f"{sorted({rows for _, rows in runs})}")


if __name__ == "__main__":
    main()
