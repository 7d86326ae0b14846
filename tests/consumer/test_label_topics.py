"""What the consumer checks about the labels' topics: the labels and the join changelog
co-partitioned with the records, at start and while it runs (else one line and exit 2), and a
records retention long enough for the trainer to find the records of late labels (else one
warning). Growing all three together while it runs is what `levydrift topics create` does."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewPartitions

from consumer.labels import DAY_MS, check_co_partitioned, retention_shortfall
from consumer.lag import LAYOUT_GRACE_S
from levydrift.commands.topics import create_topics
from levydrift.errors import TopicLayoutError
from levydrift.kafka import admin_client
from levydrift.settings import KafkaSettings, TopicSettings
from tests.consumer.harness import (
    ConsumerRun,
    Topics,
    committed_total,
    produce_scenario,
    wait_processed,
)
from tests.kafka_helpers import create_topic, wait_until

COUNTS = {"rec": 6, "labels": 6, "changelog": 6}


def test_co_partitioned_topics_pass() -> None:
    check_co_partitioned(COUNTS, "rec", "labels", "changelog")


@pytest.mark.parametrize("topic", ["labels", "changelog"])
def test_a_partition_count_that_differs_is_refused_naming_both(topic: str) -> None:
    with pytest.raises(TopicLayoutError) as raised:
        check_co_partitioned({**COUNTS, topic: 4}, "rec", "labels", "changelog")
    message = str(raised.value)
    assert f"{topic} has 4 partitions and rec has 6" in message
    assert "\n" not in message


@pytest.mark.parametrize("retention_ms", [None, -1, 548 * DAY_MS, 600 * DAY_MS])
def test_a_retention_as_long_as_the_horizon_is_enough(retention_ms: int | None) -> None:
    assert retention_shortfall(retention_ms, 548, "rec") is None


def test_a_retention_shorter_than_the_horizon_says_what_to_raise() -> None:
    problem = retention_shortfall(30 * DAY_MS, 548, "rec")
    assert problem is not None
    assert "rec keeps records for 30 days" in problem
    assert "consumer.label_horizon_days (548)" in problem
    assert "topics.records_retention_hours" in problem


def test_consume_refuses_labels_not_co_partitioned_in_one_line(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    labels = f"labels-wide-{unique}"
    create_topic(kafka_bootstrap, labels, partitions=3)
    topics = Topics(unique, records_partitions=2, labels_topic=labels).create(kafka_bootstrap)
    run = ConsumerRun(kafka_bootstrap, topics, f"g-{unique}", "solo",
                      tmp_path / "consumer.log").start()
    assert run.process is not None
    try:
        code = run.process.wait(60)
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail("the consumer kept running on topics that are not co-partitioned")
    assert code == 2, run.log()[-2000:]
    errors = [line for line in run.log().splitlines()
              if "must be co-partitioned" in line]
    assert len(errors) == 1, run.log()[-2000:]
    assert f"{labels} has 3 partitions and {topics.names['records']} has 2" in errors[0]
    assert "Traceback" not in run.log()


def log_of_a_start(bootstrap: str, unique: str, tmp_path: Path, retention_days: int) -> str:
    """Start ``levydrift consume`` on a records topic keeping records ``retention_days``, stop
    it once it consumes; its log."""
    records = f"rec-{retention_days}d-{unique}"
    create_topic(bootstrap, records, config={"retention.ms": str(retention_days * DAY_MS)})
    topics = Topics(unique, records_topic=records).create(bootstrap)
    run = ConsumerRun(bootstrap, topics, f"g-{unique}", "solo",
                      tmp_path / "consumer.log").start()
    try:
        wait_until(lambda: '"consuming"' in run.log(), timeout_s=60,
                   what="the consumer to start consuming")
    finally:
        assert run.stop() == 0, run.log()[-2000:]
    return run.log()


def test_consume_warns_once_when_records_leave_before_their_labels_come(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    log = log_of_a_start(kafka_bootstrap, unique, tmp_path, retention_days=30)
    warnings = [orjson.loads(line) for line in log.splitlines()
                if "records_retention_short" in line]
    assert len(warnings) == 1, log[-2000:]
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["retention_ms"] == 30 * DAY_MS
    assert f"rec-30d-{unique} keeps records for 30 days" in warnings[0]["message"]


def test_consume_does_not_warn_when_records_outlive_the_horizon(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    log = log_of_a_start(kafka_bootstrap, unique, tmp_path, retention_days=580)
    assert '"consuming"' in log and "records_retention_short" not in log


def grow(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_partitions([NewPartitions(topic, partitions)]).values():
        future.result(timeout=30)


def metadata_refreshed_often(tmp_path: Path) -> dict[str, str]:
    """librdkafka looks for new partitions every 5 minutes by default; every 2 s here."""
    config = tmp_path / "fast-metadata.toml"
    config.write_text('[kafka.client]\n"topic.metadata.refresh.interval.ms" = "2000"\n')
    return {"LEVYDRIFT_CONFIG": str(config)}


def consuming(bootstrap: str, unique: str, tmp_path: Path) -> tuple[Topics, ConsumerRun]:
    """A consumer that has processed 2,000 records on 2 co-partitioned partitions."""
    topics = Topics(unique, records_partitions=2).create(bootstrap)
    produce_scenario(bootstrap, topics.names["records"], "none", 2_000, 0)
    run = ConsumerRun(bootstrap, topics, f"g-{unique}", "solo", tmp_path / "consumer.log",
                      extra_env=metadata_refreshed_often(tmp_path)).start()
    wait_processed(bootstrap, f"g-{unique}", topics, 2_000, runs=[run])
    return topics, run


def last_line_when_it_ends(run: ConsumerRun) -> str:
    """The consumer's last line once it has ended with exit code 2 and no traceback."""
    wait_until(lambda: not run.alive(), LAYOUT_GRACE_S + 60, "the consumer to end")
    assert run.process is not None and run.process.returncode == 2, run.log()[-3000:]
    log = run.log()
    assert "Traceback" not in log
    last = log.strip().splitlines()[-1]
    assert last.startswith("levydrift consume: "), last
    return last


@pytest.mark.slow
def test_records_grown_alone_mid_run_end_the_consumer_in_one_line(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """A partition added to the records and not to the labels: partition 2's labels have no
    partition to come from. Assigned the new partition, the consumer counts the partitions
    again and ends with exit code 2 and the line saying what to run (it died with a
    changelog error instead)."""
    topics, run = consuming(kafka_bootstrap, unique, tmp_path)
    grow(kafka_bootstrap, topics.names["records"], 3)
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", 2_000, 0, seed=8)
    last = last_line_when_it_ends(run)
    assert f"{topics.names['labels']} has 2 partitions and {topics.names['records']} has 3" \
        in last, last
    assert "topics.records_partitions = 3" in last and "levydrift topics create" in last, last


@pytest.mark.slow
def test_labels_grown_alone_mid_run_end_the_consumer_after_the_grace_period(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """A partition added to the labels only: no records partition owns it, so its labels
    would never be read (before, silently, until a restart refused the layout). The consumer
    watches the counts and ends once they have differed for the grace period."""
    topics, run = consuming(kafka_bootstrap, unique, tmp_path)
    grow(kafka_bootstrap, topics.names["labels"], 3)
    grown_at = time.monotonic()
    last = last_line_when_it_ends(run)
    assert time.monotonic() - grown_at >= LAYOUT_GRACE_S
    assert f"{topics.names['labels']} has 3 partitions and {topics.names['records']} has 2" \
        in last, last
    assert "topics.records_partitions = 3" in last, last


@pytest.mark.slow
def test_topics_grown_together_mid_run_the_consumer_takes_the_new_partition(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """`levydrift topics create` after raising topics.records_partitions grows the records,
    the labels and the changelog at once: the running consumer is assigned the new partition
    and processes it, the labels' and changelog's partition with it, without ending."""
    topics, run = consuming(kafka_bootstrap, unique, tmp_path)
    group = f"g-{unique}"
    settings = TopicSettings(**topics.names, records_partitions=3)
    outcome = create_topics(admin_client(KafkaSettings(bootstrap_servers=kafka_bootstrap)),
                            settings, 1, 30)
    for name in ("records", "labels", "join_changelog"):
        assert outcome[topics.names[name]] == "grew from 2 to 3 partitions", outcome
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", 3_000, 0, seed=8)
    topics.records_partitions = 3
    wait_processed(kafka_bootstrap, group, topics, 5_000, timeout_s=LAYOUT_GRACE_S + 90,
                   runs=[run])
    assert committed_total(kafka_bootstrap, group, topics.names["records"], 3) \
        > committed_total(kafka_bootstrap, group, topics.names["records"], 2)
    assert run.stop() == 0, run.log()[-3000:]
