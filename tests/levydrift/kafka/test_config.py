"""The client configuration every consumer of the project starts from."""

from __future__ import annotations

from levydrift.kafka import FETCH_QUEUE_BACKOFF_MS, consumer_config
from levydrift.settings import KafkaSettings

LIBRDKAFKA_DEFAULT_BACKOFF_MS = 1000


def test_consumers_look_again_for_records_well_within_librdkafkas_second() -> None:
    # At the default, a consumer draining its local queue faster than once a second waits
    # on an empty queue for the rest of the second (bench/RESULTS-consumer.md).
    config = consumer_config(KafkaSettings(), "group")
    assert config["fetch.queue.backoff.ms"] == FETCH_QUEUE_BACKOFF_MS
    assert FETCH_QUEUE_BACKOFF_MS <= LIBRDKAFKA_DEFAULT_BACKOFF_MS // 5


def test_a_backoff_under_kafka_client_wins_over_the_default() -> None:
    kafka = KafkaSettings(client={"fetch.queue.backoff.ms": "250"})
    assert consumer_config(kafka, "group")["fetch.queue.backoff.ms"] == "250"
