"""A refused record goes to the dead-letter topic intact, and once fixed replays cleanly."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Producer

from schemas.dead_letter import dead_letter, original_headers, source_of
from schemas.errors import Reason, RecordRejected
from schemas.levy_record import decode_levy_record
from tests.kafka_helpers import create_topic, read_all

GOOD = {
    "schema_version": 1, "record_id": "rec-dlq-1", "parcel_id": "P-77-001",
    "county": "Benton", "tax_district": "BENTON-SD-17", "property_class": "residential",
    "tax_year": 2024, "assessed_value": 250000.0, "market_value": 270000.0,
    "exemption_amount": 0.0, "levy_rate": 0.0125, "prior_levy_amount": 3000.0,
    "new_construction_value": 0.0, "event_time": "2024-03-01T12:00:00Z",
}
ORIGINAL_HEADERS = [("source-system", b"assessor-7"), ("traceparent", b"00-4bf92f-01")]


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes,
             headers: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def test_dead_letter_round_trip_and_replay(kafka_bootstrap: str, unique: str) -> None:
    source_topic, dlq_topic = f"levy.records.{unique}", f"levy.records.{unique}.dlq"
    create_topic(kafka_bootstrap, source_topic)
    create_topic(kafka_bootstrap, dlq_topic)
    bad_value = orjson.dumps({**GOOD, "levy_rate": 12.5})  # sent in mills, not a fraction
    _produce(kafka_bootstrap, source_topic, b"P-77-001", bad_value, ORIGINAL_HEADERS)

    # the consumer's side: decode, refuse, dead-letter
    [message] = read_all(kafka_bootstrap, source_topic)
    with pytest.raises(RecordRejected) as refused:
        decode_levy_record(message.value())
    rejection = refused.value.rejection
    assert (rejection.reason, rejection.field) == (Reason.OUT_OF_RANGE, "levy_rate")
    key, value, headers = dead_letter(message.key(), message.value(), message.headers(),
                                      rejection, message.topic(), message.partition(),
                                      message.offset(), now_ms=int(time.time() * 1000))
    _produce(kafka_bootstrap, dlq_topic, key, value, headers)

    # the operator's side: read the dead letter, see why, fix, replay to its source
    [dead] = read_all(kafka_bootstrap, dlq_topic)
    assert (dead.key(), dead.value()) == (b"P-77-001", bad_value)
    source = source_of(dead.headers())
    assert source is not None
    assert (source.topic, source.partition, source.offset) == (source_topic, 0, 0)
    assert (source.reason, source.field) == ("out_of_range", "levy_rate")
    assert original_headers(dead.headers()) == ORIGINAL_HEADERS

    fixed = orjson.loads(dead.value())
    fixed["levy_rate"] = fixed["levy_rate"] / 1000
    _produce(kafka_bootstrap, source.topic, dead.key(), orjson.dumps(fixed),
             original_headers(dead.headers()))

    replayed = read_all(kafka_bootstrap, source_topic)
    assert len(replayed) == 2
    record = decode_levy_record(replayed[1].value())
    assert (record.record_id, record.levy_rate) == ("rec-dlq-1", 0.0125)
    assert replayed[1].key() == b"P-77-001"
    assert replayed[1].headers() == ORIGINAL_HEADERS
