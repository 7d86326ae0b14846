"""Crashes and rebalances change nothing: kill -9 at random points, consumers joining and
leaving; the drift events and the final detector state equal an uninterrupted run's."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from tests.consumer.harness import (
    ConsumerRun,
    Topics,
    committed_total,
    comparable,
    drift_events,
    final_banks,
    per_partition,
    produce_scenario,
    wait_processed,
)
from tests.kafka_helpers import read_all, wait_until

RECORDS = 30_000
CHANGE_AT = 16_000
PARTITIONS = 2
# District strata (detectors/strata.py) in the snapshot too: each district learns from its
# first 150 values here, so every district of a partition judges before the change.
STRATA = {"LEVYDRIFT_DETECTORS_STRATIFY_BY": "tax_district",
          "LEVYDRIFT_DETECTORS_STRATUM_WARMUP_RECORDS": "150"}


def reference_run(bootstrap: str, unique: str, tmp_path: Path,
                  detectors: dict[str, str] | None = None) -> tuple[str, list, dict]:
    """Produce the stream once and process it without interruption."""
    topics = Topics(f"ref-{unique}", PARTITIONS).create(bootstrap)
    # Benton (28 % of rows): each partition has its own 2,000 Benton values before the change.
    produce_scenario(bootstrap, topics.names["records"], "levy-rate-change", RECORDS, CHANGE_AT,
                     county="Benton")
    # Big batches (up to 15,000 records per partition x 6 signals): the bank feeds its
    # signals side by side (detectors/parallel.py); the crashed runs' batches of 100 feed
    # them in turn.
    run = ConsumerRun(bootstrap, topics, f"ref-{unique}", "ref", tmp_path / "ref.log",
                      extra_env={"LEVYDRIFT_CONSUMER_BATCH_SIZE": "30000",
                                 **(detectors or {})}).start()
    wait_processed(bootstrap, f"ref-{unique}", topics, RECORDS, runs=[run])
    assert run.stop() == 0
    events = [comparable(e) for e in drift_events(bootstrap, topics)]
    assert events, "the reference run found no drift; the comparison would prove nothing"
    return topics.names["records"], events, final_banks(bootstrap, topics)


@pytest.mark.slow
@pytest.mark.parametrize("detectors", [{}, STRATA], ids=["segments", "strata"])
def test_kill_minus_nine_at_random_points_loses_and_duplicates_nothing(
        kafka_bootstrap: str, unique: str, tmp_path: Path, detectors: dict[str, str]) -> None:
    records_topic, expected_events, expected_banks = reference_run(kafka_bootstrap, unique,
                                                                   tmp_path, detectors)
    topics = Topics(f"crash-{unique}", PARTITIONS, records_topic).create(kafka_bootstrap)
    # Small batches and frequent checkpoints: many transactions for the kills to land in.
    env = {"LEVYDRIFT_CONSUMER_BATCH_SIZE": "100",
           "LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": "0.1", **detectors}
    group = f"crash-{unique}"
    randomness = random.Random(unique)

    def progress() -> int:
        return committed_total(kafka_bootstrap, group, records_topic, PARTITIONS)

    for attempt in range(4):
        run = ConsumerRun(kafka_bootstrap, topics, group, "crashy",
                          tmp_path / f"crash-{attempt}.log", extra_env=env).start()
        # Kill points by 45 % at the latest: a loaded machine polls progress slowly, and the
        # stream must not end before the last kill.
        target = RECORDS * (0.1 * (attempt + 1) + randomness.uniform(0.0, 0.05))
        wait_until(lambda run=run, target=target: progress() >= target or not run.alive(), 90,
                   f"progress past {target:.0f} records")
        assert run.alive(), run.log()[-3000:]
        run.kill()
        assert progress() < RECORDS, "the stream ended before the kill; it proves nothing"
    run = ConsumerRun(kafka_bootstrap, topics, group, "crashy", tmp_path / "crash-last.log",
                      extra_env=env).start()
    wait_processed(kafka_bootstrap, group, topics, RECORDS, runs=[run])
    assert run.stop() == 0, run.log()[-3000:]

    events = [comparable(e) for e in drift_events(kafka_bootstrap, topics)]
    assert per_partition(events) == per_partition(expected_events)
    assert final_banks(kafka_bootstrap, topics) == expected_banks


@pytest.mark.slow
def test_a_snapshot_too_large_for_one_record_goes_in_parts_and_survives_kill_minus_nine(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """Each partition's state (~300 KB with five county segments) above a 64 KiB record limit
    is written in parts; restores after kill -9 join them, so nothing differs from the
    uninterrupted run (a refused or partial restore would start fresh detectors and end
    with other banks)."""
    records_topic, expected_events, expected_banks = reference_run(kafka_bootstrap, unique,
                                                                   tmp_path)
    topics = Topics(f"parts-{unique}", PARTITIONS, records_topic).create(kafka_bootstrap)
    env = {"LEVYDRIFT_CONSUMER_BATCH_SIZE": "200",
           "LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": "0.1",
           "LEVYDRIFT_CONSUMER_STATE_RECORD_MAX_BYTES": "65536"}
    group = f"parts-{unique}"

    def progress() -> int:
        return committed_total(kafka_bootstrap, group, records_topic, PARTITIONS)

    runs = []
    for attempt, share in enumerate((0.3, 0.6)):
        run = ConsumerRun(kafka_bootstrap, topics, group, "parted",
                          tmp_path / f"parts-{attempt}.log", extra_env=env).start()
        runs.append(run)
        wait_until(lambda run=run, share=share: progress() >= RECORDS * share
                   or not run.alive(), 90, f"progress past {share:.0%}")
        assert run.alive(), run.log()[-3000:]
        run.kill()
    run = ConsumerRun(kafka_bootstrap, topics, group, "parted", tmp_path / "parts-last.log",
                      extra_env=env).start()
    wait_processed(kafka_bootstrap, group, topics, RECORDS, runs=[run])
    assert run.stop() == 0, run.log()[-3000:]
    assert not any("detector state refused" in r.log() for r in [*runs, run])

    state = read_all(kafka_bootstrap, topics.names["detector_state"])
    assert all(len(m.value() or b"") <= 65536 for m in state)
    assert any(b"|part=" in m.key() for m in state), "no snapshot was written in parts"
    events = [comparable(e) for e in drift_events(kafka_bootstrap, topics)]
    assert per_partition(events) == per_partition(expected_events)
    assert final_banks(kafka_bootstrap, topics) == expected_banks


@pytest.mark.slow
def test_consumers_joining_and_leaving_give_the_single_consumer_events(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    records_topic, expected_events, expected_banks = reference_run(kafka_bootstrap, unique,
                                                                   tmp_path)
    topics = Topics(f"pair-{unique}", PARTITIONS, records_topic).create(kafka_bootstrap)
    env = {"LEVYDRIFT_CONSUMER_BATCH_SIZE": "300"}
    group = f"pair-{unique}"

    def progress() -> int:
        return committed_total(kafka_bootstrap, group, records_topic, PARTITIONS)

    first = ConsumerRun(kafka_bootstrap, topics, group, "first", tmp_path / "first.log",
                        extra_env=env).start()
    wait_until(lambda: progress() >= RECORDS * 0.2, 90, "the first consumer to make progress")
    second = ConsumerRun(kafka_bootstrap, topics, group, "second", tmp_path / "second.log",
                         extra_env=env).start()
    wait_until(lambda: "partitions assigned" in second.log(), 60, "the second to be assigned")
    wait_until(lambda: progress() >= RECORDS * 0.6, 90, "progress with two consumers")
    assert first.stop() == 0, first.log()[-3000:]
    wait_processed(kafka_bootstrap, group, topics, RECORDS, runs=[second])
    assert second.stop() == 0, second.log()[-3000:]

    events = [comparable(e) for e in drift_events(kafka_bootstrap, topics)]
    assert per_partition(events) == per_partition(expected_events)
    assert final_banks(kafka_bootstrap, topics) == expected_banks


def logged_partitions(log: str, message: str) -> list[list[int]]:
    """The non-empty ``partitions`` of every JSON log line with this message, in order (a
    cooperative rebalance has rounds that move nothing)."""
    found = []
    for line in log.splitlines():
        if line.startswith("{") and f'"message":"{message}"' in line:
            partitions = sorted(orjson.loads(line)["partitions"])
            if partitions:
                found.append(partitions)
    return found


@pytest.mark.slow
def test_a_joining_consumer_moves_only_its_partitions(kafka_bootstrap: str, unique: str,
                                                      tmp_path: Path) -> None:
    """Cooperative rebalancing: when a second instance joins, the first gives up exactly the
    partitions the second takes and keeps processing the rest (an eager rebalance revokes all
    four, stops them all and restores their state)."""
    partitions = 4
    topics = Topics(f"coop-{unique}", partitions).create(kafka_bootstrap)
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", RECORDS, RECORDS)
    env = {"LEVYDRIFT_CONSUMER_BATCH_SIZE": "200"}
    group = f"coop-{unique}"

    def progress() -> int:
        return committed_total(kafka_bootstrap, group, topics.names["records"], partitions)

    first = ConsumerRun(kafka_bootstrap, topics, group, "first", tmp_path / "first.log",
                        extra_env=env).start()
    wait_until(lambda: progress() >= RECORDS * 0.1, 90, "the first consumer to make progress")
    second = ConsumerRun(kafka_bootstrap, topics, group, "second", tmp_path / "second.log",
                         extra_env=env).start()
    wait_until(lambda: logged_partitions(second.log(), "partitions assigned"), 60,
               "the second to be assigned")
    wait_processed(kafka_bootstrap, group, topics, RECORDS, runs=[first, second])
    assert first.stop() == 0, first.log()[-3000:]
    assert second.stop() == 0, second.log()[-3000:]

    taken = logged_partitions(second.log(), "partitions assigned")[0]
    assert 0 < len(taken) < partitions
    first_revokes = logged_partitions(first.log(), "partitions revoked")
    assert first_revokes[0] == taken, first_revokes
    assert logged_partitions(first.log(), "partitions assigned") == [list(range(partitions))]


@pytest.mark.slow
def test_a_restart_on_another_records_topic_does_not_sit_on_the_old_assignment(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """Same group and instance id, a new ``topics.records``, restarted within the session
    timeout: static membership hands back the old topic's partitions (without the fix the
    consumer idled on them for good, with no log line). It must say so, rejoin once the old
    membership expires, and process the new topic."""
    group, records = f"move-{unique}", 3_000
    old = Topics(f"move-old-{unique}", 1).create(kafka_bootstrap)
    new = Topics(f"move-new-{unique}", 1).create(kafka_bootstrap)
    for topics in (old, new):
        produce_scenario(kafka_bootstrap, topics.names["records"], "none", records, 0)
    # A long session: the restart surely comes back within it, however slow the machine.
    env = {"LEVYDRIFT_CONSUMER_SESSION_TIMEOUT_S": "30"}
    first = ConsumerRun(kafka_bootstrap, old, group, "mover", tmp_path / "old.log",
                        extra_env=env).start()
    wait_processed(kafka_bootstrap, group, old, records, runs=[first])
    assert first.stop() == 0, first.log()[-3000:]

    second = ConsumerRun(kafka_bootstrap, new, group, "mover", tmp_path / "new.log",
                         extra_env=env).start()
    wait_processed(kafka_bootstrap, group, new, records, timeout_s=150, runs=[second])
    assert second.stop() == 0, second.log()[-3000:]
    log = second.log()
    assert "Kafka assigned partitions of a topic this consumer does not read" in log, (
        "the old assignment was not handed back: the test proves nothing")
    assert "rejoined the group" in log
    assert committed_total(kafka_bootstrap, group, old.names["records"], 1) == records


@pytest.mark.slow
def test_a_second_instance_with_the_same_instance_id_ends_the_first_with_one_line(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """Two instances configured with one instance_id share a transactional id: the second
    fences the first. The first must end with exit code 4 and one line saying so (it died
    with a KafkaException traceback from a produce), and the second carry on to the end."""
    topics = Topics(f"twins-{unique}", PARTITIONS).create(kafka_bootstrap)
    # Long enough that the first is still at work when the second has started (~2 s): an
    # instance that finished the stream sits idle, and an idle one is never fenced.
    records = RECORDS * 4
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", records, 0)
    group = f"twins-{unique}"
    env = {"LEVYDRIFT_CONSUMER_BATCH_SIZE": "200",
           "LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": "0.1"}
    first = ConsumerRun(kafka_bootstrap, topics, group, "same", tmp_path / "first.log",
                        extra_env=env).start()
    wait_until(lambda: committed_total(kafka_bootstrap, group, topics.names["records"],
                                       PARTITIONS) >= RECORDS * 0.1 or not first.alive(), 90,
               "the first instance to make progress")
    second = ConsumerRun(kafka_bootstrap, topics, group, "same", tmp_path / "second.log",
                         extra_env=env).start()
    wait_until(lambda: not first.alive(), 90, "the fenced instance to end")
    assert first.process is not None and first.process.returncode == 4, first.log()[-3000:]
    log = first.log()
    assert "Traceback" not in log, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith("levydrift consume: "), last
    assert "same transactional id" in last and "instance_id" in last, last
    wait_processed(kafka_bootstrap, group, topics, records, runs=[second])
    assert second.stop() == 0, second.log()[-3000:]


def logged_after(log: str, first: str, then: str) -> bool:
    """The log has a line with message ``then`` after one with message ``first``."""
    messages = [orjson.loads(line).get("message", "") for line in log.splitlines()
                if line.startswith("{")]
    return first in messages and then in messages[messages.index(first):]


@pytest.mark.slow
def test_fenced_while_rejoining_after_a_loss_the_consumer_starts_afresh_and_loses_nothing(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """Across a broker restart librdkafka may send its rejoin twice (a retried JoinGroup the
    broker had already taken); the join handled last fences the consumer by its own hand
    (this ended the broker outage test in CI). The broker's view is rebuilt here: the
    consumer is paused past its session timeout (it loses its assignment and rejoins), then
    a second join under its instance id arrives. The service starts afresh from its last
    checkpoint instead of exiting, and the events and final state equal an uninterrupted
    run's. (Fenced with no loss before, it exits: the twin tests below.)"""
    records_topic, expected_events, expected_banks = reference_run(kafka_bootstrap, unique,
                                                                   tmp_path)
    topics = Topics(f"own-{unique}", PARTITIONS, records_topic).create(kafka_bootstrap)
    group = f"own-{unique}"
    env = {"LEVYDRIFT_CONSUMER_BATCH_SIZE": "100",
           "LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": "0.1",
           "LEVYDRIFT_CONSUMER_SESSION_TIMEOUT_S": "6"}
    run = ConsumerRun(kafka_bootstrap, topics, group, "own", tmp_path / "own.log",
                      extra_env=env).start()
    wait_until(lambda: committed_total(kafka_bootstrap, group, records_topic, PARTITIONS)
               >= RECORDS * 0.1 or not run.alive(), 90, "a tenth of the stream")
    assert run.process is not None and run.alive(), run.log()[-3000:]
    run.process.send_signal(signal.SIGSTOP)
    try:  # the broker expires the paused member once its session times out
        wait_until(lambda: not group_members(kafka_bootstrap, group), 60,
                   "the paused member to expire")
    finally:
        run.process.send_signal(signal.SIGCONT)
    wait_until(lambda: logged_after(run.log(), "partitions lost; dropped without committing",
                                    "partitions assigned") or not run.alive(), 60,
               "the consumer to rejoin")
    double = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group,
                       "group.instance.id": "own", "enable.auto.commit": False,
                       "session.timeout.ms": 6_000,
                       "partition.assignment.strategy": "cooperative-sticky"})
    committed_when_fenced: list[int] = []

    def fenced() -> bool:
        double.poll(0.2)
        if "fenced by its own earlier join" in run.log():
            committed_when_fenced.append(
                committed_total(kafka_bootstrap, group, records_topic, PARTITIONS))
            return True
        return not run.alive()

    try:
        double.subscribe([records_topic])
        wait_until(fenced, 90, "the consumer to be fenced")
    finally:
        double.close()  # a static member's close leaves the group nothing
    assert run.alive(), run.log()[-3000:]
    assert committed_when_fenced[0] < RECORDS, "the stream ended before the fence"
    wait_processed(kafka_bootstrap, group, topics, RECORDS, runs=[run])
    assert run.stop() == 0, run.log()[-3000:]
    events = [comparable(e) for e in drift_events(kafka_bootstrap, topics)]
    assert per_partition(events) == per_partition(expected_events)
    assert final_banks(kafka_bootstrap, topics) == expected_banks


def group_members(bootstrap: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return len(admin.describe_consumer_groups([group])[group].result(timeout=10).members)


def test_an_idle_instance_fenced_by_its_replacement_ends_and_the_replacement_carries_on(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """The first instance has read everything and waits; a second with the same instance_id
    joins. librdkafka fences the first's static membership with an error whose fatal() is
    False: it was logged as a warning and the fenced instance ran on, holding the join
    store's lock, so its replacement died at its first assignment."""
    topics = Topics(f"idle-{unique}", PARTITIONS).create(kafka_bootstrap)
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", 3_000, 0)
    group = f"idle-{unique}"
    first = ConsumerRun(kafka_bootstrap, topics, group, "same", tmp_path / "first.log").start()
    wait_processed(kafka_bootstrap, group, topics, 3_000, runs=[first])
    second = ConsumerRun(kafka_bootstrap, topics, group, "same", tmp_path / "second.log").start()
    wait_until(lambda: not first.alive(), 90, "the fenced idle instance to end")
    assert first.process is not None and first.process.returncode == 4, first.log()[-3000:]
    last = first.log().strip().splitlines()[-1]
    assert last.startswith("levydrift consume: ") and "instance_id" in last, last
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", 3_000, 0, seed=8)
    wait_processed(kafka_bootstrap, group, topics, 6_000, runs=[second])
    assert second.stop() == 0, second.log()[-3000:]
