"""``levydrift consume`` against a real broker: drift events, poison records, shutdown."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from schemas.dead_letter import source_of
from tests.consumer.harness import (
    REPO,
    ConsumerRun,
    Topics,
    drift_events,
    produce_scenario,
    produce_values,
    wait_processed,
)
from tests.consumer.test_models import scrape
from tests.kafka_helpers import free_port_pair, read_all, wait_until

RECORDS = 24_000
CHANGE_AT = 14_000


def run_to_end(bootstrap: str, topics: Topics, group: str, tmp_path: Path,
               total: int) -> ConsumerRun:
    run = ConsumerRun(bootstrap, topics, group, "solo", tmp_path / f"{group}.log").start()
    wait_processed(bootstrap, group, topics, total, runs=[run])
    assert run.stop() == 0, run.log()[-3000:]
    return run


@pytest.mark.slow
def test_reassessment_yields_one_event_naming_the_changed_signal(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    topics = Topics(unique).create(kafka_bootstrap)
    simulator = produce_scenario(kafka_bootstrap, topics.names["records"], "levy-rate-change",
                                 RECORDS, CHANGE_AT)
    run_to_end(kafka_bootstrap, topics, f"g-{unique}", tmp_path, RECORDS)

    events = drift_events(kafka_bootstrap, topics)
    truth = simulator.ground_truth(RECORDS)
    assert len(events) == 1, [(e.kind, [s.signal for s in e.signals]) for e in events]
    event = events[0]
    assert event.kind == "distribution"
    assert {s.signal for s in event.signals} <= set(truth.affected_signals) | {"tax_district"}
    assert "levy_rate" in {s.signal for s in event.signals}
    assert event.current_window.last_offset >= CHANGE_AT
    assert event.reference_window.last_offset < CHANGE_AT
    # Where and since when: the county the levy changed in, an onset at or after the change
    # (one partition: offsets are record indexes) and the episode identity.
    assert event.segment == truth.segment == f"county={truth.affected_counties[0]}"
    assert event.onset is not None
    assert CHANGE_AT - 200 <= event.onset.offset <= event.current_window.last_offset
    assert event.episode is not None and event.episode.segment == event.segment
    assert event.episode.signal == event.signals[0].signal


@pytest.mark.slow
def test_stationary_stream_yields_no_event(kafka_bootstrap: str, unique: str,
                                           tmp_path: Path) -> None:
    topics = Topics(unique).create(kafka_bootstrap)
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", RECORDS, CHANGE_AT)
    run_to_end(kafka_bootstrap, topics, f"g-{unique}", tmp_path, RECORDS)
    assert drift_events(kafka_bootstrap, topics) == []
    states = read_all(kafka_bootstrap, topics.names["detector_state"])
    assert states, "no detector-state snapshot was committed"


POISON = [
    (b"not json at all", "not_json"),
    (b'{"schema_version": 1, "record_id": "x"', "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b"\xff\xfe\xfd", "bad_encoding"),
    (b"x" * (200 << 10), "too_large"),  # over the codec limit, under the broker's
    (None, "empty"),
]


def test_poison_records_reach_the_dead_letter_topic_and_the_rest_is_processed(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    topics = Topics(unique).create(kafka_bootstrap)
    simulator = produce_scenario(kafka_bootstrap, topics.names["records"], "none", 0, 0)
    good = [(r["parcel_id"].encode(), orjson.dumps(r)) for r in simulator.records(0, 3000)]
    bad_numbers = {**orjson.loads(good[10][1]), "levy_rate": 0.7}
    repeated_key = b'{"assessed_value":-5,' + good[11][1][1:]  # the second one is valid
    poison = [*POISON, (orjson.dumps(bad_numbers), "out_of_range"),
              (repeated_key, "duplicate_key")]
    mixed = good[:1000] + [(b"poison", value) for value, _ in poison] + good[1000:]
    produce_values(kafka_bootstrap, topics.names["records"], mixed)

    run = ConsumerRun(kafka_bootstrap, topics, f"g-{unique}", "solo",
                      tmp_path / "consumer.log").start()
    wait_processed(kafka_bootstrap, f"g-{unique}", topics, len(mixed), runs=[run])
    assert run.alive(), "the consumer stopped on poison records"
    assert run.stop() == 0

    letters = read_all(kafka_bootstrap, topics.names["dead_letters"])
    assert [letter.value() for letter in letters] == [value for value, _ in poison]
    for index, (letter, (_, reason)) in enumerate(zip(letters, poison, strict=True)):
        source = source_of(letter.headers())
        assert source is not None
        assert source.reason == reason
        assert source.topic == topics.names["records"]
        assert source.offset == 1000 + index
        assert letter.key() == b"poison"
    assert source_of(letters[-1].headers()).field == "assessed_value"


def test_sigterm_finishes_the_batch_commits_and_exits_zero(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    topics = Topics(unique).create(kafka_bootstrap)
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", 5000, 0)
    run = ConsumerRun(kafka_bootstrap, topics, f"g-{unique}", "solo",
                      tmp_path / "consumer.log").start()
    wait_processed(kafka_bootstrap, f"g-{unique}", topics, 5000, runs=[run])
    started = time.monotonic()
    assert run.stop(timeout_s=15) == 0
    assert time.monotonic() - started < 10


def test_a_burst_read_to_its_end_is_committed_without_waiting_out_the_interval(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    # With only the interval, the records after the first batch would be committed 50 s
    # after it; the empty fetch after the burst commits them at once.
    topics = Topics(unique).create(kafka_bootstrap)
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", 5000, 0)
    run = ConsumerRun(kafka_bootstrap, topics, f"g-{unique}", "solo", tmp_path / "consumer.log",
                      extra_env={"LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": "50"}).start()
    wait_processed(kafka_bootstrap, f"g-{unique}", topics, 5000, timeout_s=35, runs=[run])


def records_processed(port: int, run: ConsumerRun) -> float:
    """Records the consumer has processed, from its /metrics page (0 before it serves)."""
    assert run.alive(), f"the consumer exited:\n{run.log()[-3000:]}"
    try:
        samples = scrape(port)
    except OSError:
        return 0.0
    return sum(value for (name, _), value in samples.items()
               if name == "levydrift_consumer_records_total")


def test_a_backlogs_last_partial_batch_is_processed_without_waiting_out_the_batch_timeout(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    # 5,000 records in batches of 2,000: the last fetch finds 1,000. librdkafka's consume
    # waits for a whole batch or the timeout, so without the short wait after a full fetch
    # those 1,000 would sit out batch_timeout_s (25 s here), fetched already.
    topics = Topics(unique).create(kafka_bootstrap)
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", 5000, 0)
    port = free_port_pair()
    run = ConsumerRun(kafka_bootstrap, topics, f"g-{unique}", "solo", tmp_path / "consumer.log",
                      extra_env={"LEVYDRIFT_CONSUMER_BATCH_TIMEOUT_S": "25",
                                 "LEVYDRIFT_CONSUMER_BATCH_SIZE": "2000",
                                 "LEVYDRIFT_METRICS_PORT": str(port)}).start()
    try:
        wait_until(lambda: records_processed(port, run) >= 5000, 20,
                   "every record processed, launch included")
    finally:
        assert run.stop(timeout_s=60) == 0, run.log()[-3000:]


def test_partitions_are_restored_without_waiting_behind_the_readers_fetches(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    # A broker answers a client's requests in order. Where a partition's labels start, asked
    # of the label reader once it reads another partition, waited for that reader's fetch in
    # flight, up to fetch.wait.max.ms (20 s here) for each partition restored after the first:
    # 40 s before any record here. A fetch wait that long is what a quiet cluster's operator
    # may choose; the default 0.5 s cost as much per partition at every start.
    topics = Topics(unique, records_partitions=3).create(kafka_bootstrap)
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", 3000, 0)
    config = tmp_path / "long-fetch-wait.toml"
    config.write_text('[kafka.client]\n"fetch.wait.max.ms" = "20000"\n')
    run = ConsumerRun(kafka_bootstrap, topics, f"g-{unique}", "solo", tmp_path / "consumer.log",
                      extra_env={"LEVYDRIFT_CONFIG": str(config)}).start()
    try:
        wait_processed(kafka_bootstrap, f"g-{unique}", topics, 3000, timeout_s=30, runs=[run])
    finally:
        assert run.stop(timeout_s=60) == 0, run.log()[-3000:]


def test_a_consumer_without_a_champion_never_imports_scipy_linalg(
        kafka_bootstrap: str, unique: str) -> None:
    """numba imports scipy.linalg (~0.2 s of a start) when its CPU target is set up, only to
    choose how np.convolve multiplies; the service sets that target up without it. A fresh
    process that restores, scores and commits records: the test session imports scipy."""
    topics = Topics(unique).create(kafka_bootstrap)
    produce_scenario(kafka_bootstrap, topics.names["records"], "none", 500, 0)
    program = "\n".join([
        "import sys",
        "from consumer.config import ConsumerSection, ConsumerSettings",
        "from consumer.service import ConsumerService",
        "from levydrift.settings import KafkaSettings, MetricsSettings, TopicSettings",
        "from tests.kafka_helpers import scratch_dir",
        f"settings = ConsumerSettings(kafka=KafkaSettings(bootstrap_servers={kafka_bootstrap!r}),",
        f"    topics=TopicSettings(**{topics.names!r}), metrics=MetricsSettings(port=0),",
        f"    consumer=ConsumerSection(group_id='g-{unique}', instance_id='solo',",
        f"                             state_dir=scratch_dir('g-{unique}')))",
        "service = ConsumerService(settings)",
        "code = service.run(stop_when=lambda service: sum(",
        "    monitor.next_offset for monitor in service.monitors.values()) >= 500)",
        "print(code, service.champion.version, 'scipy.linalg' in sys.modules)"])
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["0", "None", "False"], done.stdout[-2000:]
