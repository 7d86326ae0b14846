"""What the consumer checks about the labels' topics at start: the labels and the join changelog
co-partitioned with the records (else one line and exit 2), and a records retention long enough
for the trainer to find the records of late labels (else one warning)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from consumer.labels import DAY_MS, check_co_partitioned, retention_shortfall
from levydrift.errors import TopicLayoutError
from tests.consumer.harness import ConsumerRun, Topics
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
