"""The client configuration every consumer and producer of the project starts from."""

from __future__ import annotations

from consumer.config import ConsumerSection, ConsumerSettings
from consumer.service import output_producer_config
from levydrift.kafka import (
    FETCH_QUEUE_BACKOFF_MS,
    PRODUCER_TUNING,
    consumer_config,
    producer_config,
)
from levydrift.kafka.transactions import TRANSACTIONAL_TUNING
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


def test_producer_tuning_under_kafka_client_wins_but_exactly_once_stays() -> None:
    kafka = KafkaSettings(client={"linger.ms": "0", "compression.type": "zstd",
                                  "enable.idempotence": "false", "acks": "1"})
    config = producer_config(kafka)
    assert (config["linger.ms"], config["compression.type"]) == ("0", "zstd")
    assert (config["enable.idempotence"], config["acks"]) == (True, "all")
    assert producer_config(KafkaSettings())["linger.ms"] == PRODUCER_TUNING["linger.ms"]


def test_the_consumers_transactional_producer_keeps_its_batches_under_the_state_limit() -> None:
    limit = ConsumerSection().state_record_max_bytes
    tuned = ConsumerSettings(kafka=KafkaSettings(client={"linger.ms": "2",
                                                         "batch.size": str(limit * 4)}))
    config = output_producer_config(tuned)
    assert config["linger.ms"] == "2"  # the deployment's latency choice is honoured
    assert config["batch.size"] == limit  # a batch above the topic's message limit is not
    assert config["transactional.id"] == tuned.consumer.transactional_id
    default = output_producer_config(ConsumerSettings())
    assert default["linger.ms"] == TRANSACTIONAL_TUNING["linger.ms"]
    assert default["batch.size"] == min(TRANSACTIONAL_TUNING["batch.size"], limit)
