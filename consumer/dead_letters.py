"""Dead letters that can always be produced, so no record can hold its partition back.

``schemas.dead_letter`` already bounds a dead letter's size. Kafka can still refuse one (a
dead-letter topic configured with a smaller ``max.message.bytes``, a broker policy): at once,
when the client refuses it, or in its delivery report, which leaves the transaction to abort.
Replaying the batch would then fail the same way forever. So each refused dead letter steps
down, per source record: the copy, then ``pointer_only`` (headers naming the reason and the
source offset), then nothing but an error log line and a count. The steps are remembered until
the next commit, so the replay after an abort produces the smaller form.
"""

from __future__ import annotations

import logging
from enum import IntEnum
from functools import partial
from typing import Any

from confluent_kafka import KafkaError

from consumer import metrics
from levydrift.kafka.transactions import MessageRefused, TransactionalOutput, is_refusal
from schemas.dead_letter import TRUNCATED, DeadLetter, pointer_only, source_of

log = logging.getLogger(__name__)

Source = tuple[str, int, int]  # topic, partition, offset of the refused record


class Form(IntEnum):
    COPY = 0  # whole, or bounded for an oversized record
    POINTER = 1
    DROPPED = 2


class DeadLetterWriter:
    """Produces dead letters into the open transaction, stepping down on refusals."""

    def __init__(self, output: TransactionalOutput, topic: str) -> None:
        self._output = output
        self._topic = topic
        self._forms: dict[Source, Form] = {}

    def produce(self, dead: DeadLetter) -> None:
        source = _source(dead)
        form = self._forms.get(source, Form.COPY)
        while form < Form.DROPPED:
            key, value, headers = dead if form == Form.COPY else pointer_only(dead)
            try:
                self._output.produce(self._topic, value, key=key, headers=headers,
                                     on_delivery=partial(self._delivered, source, form))
            except MessageRefused as refusal:
                self._refused(source, form, refusal.error)
                form = self._forms[source]
                continue
            if form == Form.POINTER:
                metrics.DEAD_LETTERS_INCOMPLETE.labels(form="pointer").inc()
            elif any(name == TRUNCATED for name, _ in headers):
                metrics.DEAD_LETTERS_INCOMPLETE.labels(form="truncated").inc()
            return
        metrics.DEAD_LETTERS_INCOMPLETE.labels(form="dropped").inc()
        log.error("dead letter dropped: Kafka refused even its headers-only form", extra={
            "source_topic": source[0], "source_partition": source[1],
            "source_offset": source[2]})

    def committed(self) -> None:
        """The transaction committed: what it held needs no step-down any more."""
        self._forms.clear()

    def _delivered(self, source: Source, form: Form, error: KafkaError | None,
                   _message: Any) -> None:
        if error is not None and is_refusal(error):
            self._refused(source, form, error)

    def _refused(self, source: Source, form: Form, error: KafkaError) -> None:
        self._forms[source] = max(self._forms.get(source, Form.COPY), Form(form + 1))
        log.warning("dead letter refused by Kafka; a smaller form follows", extra={
            "source_topic": source[0], "source_partition": source[1],
            "source_offset": source[2], "form": form.name.lower(), "error": error.str()})


def _source(dead: DeadLetter) -> Source:
    source = source_of(dead[2])
    assert source is not None, "a dead letter always carries its source headers"
    return source.topic, source.partition, source.offset
