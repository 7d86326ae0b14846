"""The broker goes away mid-commit and comes back: the consumer waits for it and carries on with
nothing lost or counted twice; past ``consumer.outage_limit_s`` it exits with code 3 and one
line, and a restart carries on just the same. Runs on a broker of its own, which it stops."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.state import split_part_key
from levydrift.simulator import LevySimulator, SimulatorConfig
from schemas.dead_letter import source_of
from tests.consumer.harness import (
    ConsumerRun,
    Topics,
    committed_total,
    comparable,
    drift_events,
    final_banks,
    per_partition,
    produce_values,
    wait_processed,
)
from tests.kafka_helpers import PrivateBroker, free_port_pair, read_all, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RECORDS = 40_000
CHANGE_AT = 24_000
PARTITIONS = 2
POISON_EVERY = 997
OUTAGE_S = 30  # beyond the session timeout (10 s) and the transaction timeout below
# Short timeouts, so the outage outlives an open transaction on the broker too.
TIMEOUTS = {"LEVYDRIFT_CONSUMER_TRANSACTION_TIMEOUT_S": "12",
            "LEVYDRIFT_CONSUMER_RESTORE_TIMEOUT_S": "30"}
BUSY = {"LEVYDRIFT_CONSUMER_BATCH_SIZE": "100", "LEVYDRIFT_CONSUMER_CHECKPOINT_INTERVAL_S": "0.1"}
# The smallest part size: every checkpoint writes each partition's snapshot (~280 KiB) as
# parts, so the outage also falls between the parts of one snapshot's transaction.
IN_PARTS = {"LEVYDRIFT_CONSUMER_STATE_RECORD_MAX_BYTES": "16384"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    private = PrivateBroker(tmp_path_factory.mktemp("kafka"))
    try:
        private.start()
    except AssertionError as error:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"no private broker: {error}")
    try:
        yield private
    finally:
        private.stop()


# The detectors as shipped, and with district strata (each district learns from its first 150
# values here): their state rewinds from the last snapshot after an aborted transaction too.
DETECTORS = {"segments": {},
             "strata": {"LEVYDRIFT_DETECTORS_STRATIFY_BY": "tax_district",
                        "LEVYDRIFT_DETECTORS_STRATUM_WARMUP_RECORDS": "150"}}


@pytest.fixture(scope="module", params=sorted(DETECTORS))
def reference(request: pytest.FixtureRequest, broker: PrivateBroker,
              tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The stream (with poison records) and what an uninterrupted run makes of it."""
    name, detectors = request.param, DETECTORS[request.param]
    topics = Topics(f"reference-{name}", PARTITIONS).create(broker.bootstrap)
    simulator = LevySimulator(SimulatorConfig(seed=11, scenario="levy-rate-change",
                                              change_at=CHANGE_AT))
    pairs = [(r["parcel_id"].encode(), b"{poison" if i % POISON_EVERY == 5 else orjson.dumps(r))
             for i, r in enumerate(simulator.records(0, RECORDS))]
    produce_values(broker.bootstrap, topics.names["records"], pairs)
    log = tmp_path_factory.mktemp("logs") / "reference.log"
    run = ConsumerRun(broker.bootstrap, topics, f"reference-{name}", "ref", log,
                      extra_env=detectors).start()
    wait_processed(broker.bootstrap, f"reference-{name}", topics, RECORDS, runs=[run])
    assert run.stop() == 0, run.log()[-3000:]
    events = [comparable(e) for e in drift_events(broker.bootstrap, topics)]
    assert events, "no drift in the reference run: the comparison would prove nothing"
    letters = dead_letter_sources(broker.bootstrap, topics)
    assert len(letters) == RECORDS // POISON_EVERY + 1
    return {"name": name, "detectors": detectors, "records_topic": topics.names["records"],
            "events": events, "letters": letters, "banks": final_banks(broker.bootstrap, topics)}


def dead_letter_sources(bootstrap: str, topics: Topics) -> list[tuple[int, int]]:
    return sorted((source.partition, source.offset) for source in (
        source_of(m.headers()) for m in read_all(bootstrap, topics.names["dead_letters"])))


def assert_same_as_reference(bootstrap: str, topics: Topics, reference: dict) -> None:
    """0 lost, 0 counted twice: every dead letter once, the same drift events, and final
    detector state identical to the uninterrupted run's."""
    assert dead_letter_sources(bootstrap, topics) == reference["letters"]
    events = [comparable(e) for e in drift_events(bootstrap, topics)]
    assert per_partition(events) == per_partition(reference["events"])
    assert final_banks(bootstrap, topics) == reference["banks"]


def written_in_parts(bootstrap: str, topics: Topics) -> bool:
    return any(split_part_key(message.key()) is not None
               for message in read_all(bootstrap, topics.names["detector_state"]))


def scrape(port: int, run: ConsumerRun) -> dict[str, float]:
    """The consumer's unlabelled metrics, by sample name (its log, if it has exited)."""
    assert run.alive(), f"the consumer exited:\n{run.log()[-3000:]}"
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels}


def progress(bootstrap: str, group: str, topic: str) -> int:
    return committed_total(bootstrap, group, topic, PARTITIONS)


def test_the_consumer_waits_out_a_broker_outage(broker: PrivateBroker, reference: dict,
                                                tmp_path: Path) -> None:
    group = f"outage-{reference['name']}"
    topics = Topics(group, PARTITIONS, reference["records_topic"]).create(broker.bootstrap)
    port = free_port_pair()
    run = ConsumerRun(broker.bootstrap, topics, group, "steady", tmp_path / "outage.log",
                      extra_env={**BUSY, **TIMEOUTS, **IN_PARTS, **reference["detectors"],
                                 "LEVYDRIFT_METRICS_PORT": str(port)}).start()
    wait_until(lambda: progress(broker.bootstrap, group, topics.names["records"])
               >= RECORDS * 0.25 or not run.alive(), 120, "a quarter of the stream")
    assert run.alive(), run.log()[-3000:]

    broker.stop()
    down_since = time.monotonic()
    lag_times = set()
    try:
        while time.monotonic() - down_since < OUTAGE_S:
            assert run.alive(), f"the consumer exited during the outage:\n{run.log()[-3000:]}"
            if time.monotonic() - down_since > 8:  # after the last measurement that could succeed
                lag_times.add(scrape(port, run).get("levydrift_consumer_lag_timestamp_seconds"))
            time.sleep(0.5)
    finally:
        broker.start()
    assert len(lag_times) == 1, "the lag was refreshed while no broker answered"

    # Generous: librdkafka's reconnect backoff and a loaded CI machine decide when; the
    # guarantee under test is that the lag is measured again at all.
    wait_until(lambda: scrape(port, run)["levydrift_consumer_lag_timestamp_seconds"]
               > max(lag_times), 180, "the lag to be measured again")
    wait_processed(broker.bootstrap, group, topics, RECORDS, timeout_s=240, runs=[run])
    resets = scrape(port, run)["levydrift_consumer_producer_resets_total"]
    assert run.stop() == 0, run.log()[-3000:]
    assert resets >= 1, "the outage never hit an open transaction; it proves nothing"
    assert written_in_parts(broker.bootstrap, topics), "no snapshot went in parts"
    assert_same_as_reference(broker.bootstrap, topics, reference)


def test_past_the_outage_limit_the_consumer_exits_with_one_line(broker: PrivateBroker,
                                                                reference: dict,
                                                                tmp_path: Path) -> None:
    group = f"limit-{reference['name']}"
    topics = Topics(group, PARTITIONS, reference["records_topic"]).create(broker.bootstrap)
    limit_s, transaction_timeout_s = 8, 12
    run = ConsumerRun(broker.bootstrap, topics, group, "impatient", tmp_path / "limit.log",
                      extra_env={**BUSY, **TIMEOUTS, **reference["detectors"],
                                 "LEVYDRIFT_CONSUMER_OUTAGE_LIMIT_S": str(limit_s)}).start()
    wait_until(lambda: progress(broker.bootstrap, group, topics.names["records"])
               >= RECORDS * 0.25 or not run.alive(), 120, "a quarter of the stream")
    assert run.alive(), run.log()[-3000:]

    # From the stop's start: the broker refuses connections before the script returns
    # (seconds under load), and the consumer's first failed checkpoint may start there.
    down_since = time.monotonic()
    broker.stop()
    try:
        # No hang: the limit, plus at most one transaction timeout in a stuck call, plus
        # closing (consumer close, bounded flush).
        wait_until(lambda: not run.alive(), limit_s + transaction_timeout_s + 40,
                   "the consumer to give up")
        waited = time.monotonic() - down_since
    finally:
        broker.start()
    assert run.process.returncode == 3, run.log()[-3000:]
    assert waited >= limit_s
    log = run.log()
    assert "Traceback" not in log
    last = log.strip().splitlines()[-1]
    assert last.startswith("levydrift consume: no checkpoint committed for"), last
    assert "consumer.outage_limit_s" in last

    # The restart restores the one-record snapshot and goes on writing parts.
    again = ConsumerRun(broker.bootstrap, topics, group, "impatient", tmp_path / "again.log",
                        extra_env={**BUSY, **IN_PARTS, **reference["detectors"]}).start()
    wait_processed(broker.bootstrap, group, topics, RECORDS, runs=[again])
    assert again.stop() == 0, again.log()[-3000:]
    assert written_in_parts(broker.bootstrap, topics), "no snapshot went in parts"
    assert_same_as_reference(broker.bootstrap, topics, reference)
