"""Scaling out: a second ``levydrift consume`` joins a group mid-stream. How long do the
partitions that stay with the first instance go without a commit, and how long do the moving
ones pause?

    python bench/bench_rebalance.py [--records 1000000] [--partitions 4] [--repeat 3]

Pre-fills a topic, starts one instance, waits until it has committed a fifth of the stream,
starts a second instance in the same group, and samples every partition's committed offset
every 50 ms until the stream is done. Reported per repetition: the longest gap between two
commits of a partition that stayed with the first instance, within 20 s after the second one
started (cooperative rebalancing keeps it near the checkpoint interval; an eager rebalance stops
every partition and restores its state), the longest gap of a partition that moved, and the
total throughput with two instances relative to the first instance alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from machine import describe  # noqa: E402

from tests.consumer.harness import ConsumerRun, Topics, produce_scenario  # noqa: E402

SAMPLE_S = 0.05
WINDOW_S = 20.0
CHECKPOINT_INTERVAL_S = 2.0


def committed_offsets(probe: Consumer, topic: str, partitions: int) -> list[int]:
    offsets = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    return [max(position.offset, 0) for position in offsets]


def partitions_taken(log: str) -> set[int]:
    for line in log.splitlines():
        if line.startswith("{") and '"message":"partitions assigned"' in line:
            partitions = orjson.loads(line)["partitions"]
            if partitions:
                return set(partitions)
    return set()


def longest_gap(samples: list[tuple[float, list[int]]], partition: int, start: float,
                stop: float) -> float:
    """Longest time between two advances of ``partition``'s committed offset in [start, stop]
    (an advance before ``start`` bounds the first gap)."""
    advances, last = [], None
    for at, offsets in samples:
        if last is not None and offsets[partition] > last:
            advances.append(at)
        last = offsets[partition]
    inside = [at for at in advances if at >= start and at <= stop]
    before = [at for at in advances if at < start]
    points = before[-1:] + inside
    if len(points) < 2:
        return stop - (points[0] if points else start)
    return max(b - a for a, b in zip(points, points[1:], strict=False))


def one_run(bootstrap: str, records: int, partitions: int, workdir: Path) -> dict[str, float]:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"rebal-{suffix}", partitions).create(bootstrap)
    produce_scenario(bootstrap, topics.names["records"], "none", records, records)
    group = f"rebal-{suffix}"
    env = {"LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": str(CHECKPOINT_INTERVAL_S),
           "LEVYDRIFT_LOGGING_LEVEL": "INFO"}
    # Read uncommitted: a read-committed OffsetFetch is refused while a transaction holds
    # offsets (KIP-447) and retried with backoff, which would date an advance up to ~0.1 s late.
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
    topic = topics.names["records"]
    samples: list[tuple[float, list[int]]] = []
    first = ConsumerRun(bootstrap, topics, group, "first", workdir / f"{group}-1.log",
                        extra_env=env).start()
    began = time.monotonic()
    second = None
    joined_at = alone_rate = 0.0
    try:
        while True:
            offsets = committed_offsets(probe, topic, partitions)
            now = time.monotonic() - began
            samples.append((now, offsets))
            if second is None and sum(offsets) >= records // 5:
                alone_rate = sum(offsets) / now
                second = ConsumerRun(bootstrap, topics, group, "second",
                                     workdir / f"{group}-2.log", extra_env=env).start()
                joined_at = now
            if sum(offsets) >= records:
                break
            if not first.alive() or (second is not None and not second.alive()):
                raise SystemExit("a consumer exited early; see " + str(workdir))
            time.sleep(SAMPLE_S)
    finally:
        first.stop()
        if second is not None:
            second.stop()
        probe.close()
    assert second is not None
    moved = partitions_taken(second.log())
    if not moved:
        raise SystemExit("the stream ended before the second instance took a partition; "
                         "raise --records")
    stayed = set(range(partitions)) - moved
    done_at = samples[-1][0]
    stop = min(joined_at + WINDOW_S, done_at)
    shared = records - sum(next(o for t, o in samples if t >= joined_at))
    print(f"run: one instance {alone_rate:,.0f} rec/s from launch to the join at "
          f"{joined_at:.1f} s; both {shared / (done_at - joined_at):,.0f} rec/s until done at "
          f"{done_at:.1f} s; moved partitions {sorted(moved)}", flush=True)
    return {"stayed_gap": max(longest_gap(samples, p, joined_at, stop) for p in stayed),
            "moved_gap": max(longest_gap(samples, p, joined_at, stop) for p in moved),
            "two_vs_one": (shared / (done_at - joined_at)) / alone_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bootstrap", default=os.environ.get(
        "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    arguments = parser.parse_args()
    print(describe())
    print(f"records: {arguments.records:,} on {arguments.partitions} partitions; checkpoint "
          f"interval {CHECKPOINT_INTERVAL_S:g} s; broker on the same machine")
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(arguments.repeat):
            results.append(one_run(arguments.bootstrap, arguments.records,
                                   arguments.partitions, Path(workdir)))
    for key, label, unit in (("stayed_gap", "longest commit gap, partitions that stayed", "s"),
                             ("moved_gap", "longest commit gap, partitions that moved", "s"),
                             ("two_vs_one", "throughput, two instances / one", "x")):
        values = [r[key] for r in results]
        print(f"{label:<46} min {min(values):6.2f}{unit}  median "
              f"{statistics.median(values):6.2f}{unit}  max {max(values):6.2f}{unit}")


if __name__ == "__main__":
    main()
