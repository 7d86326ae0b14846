"""One Kafka transaction per checkpoint: dead letters, drift events, detector snapshots and the
consumed offsets commit together or not at all (``send_offsets_to_transaction``).

Error handling follows the transactional producer's contract: retriable errors are retried,
errors that require an abort abort (the caller then rewinds to the last committed state), and
anything else is fatal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumer import metrics
from levydrift.errors import LevyDriftError

log = logging.getLogger(__name__)
T = TypeVar("T")


class TransactionAborted(Exception):
    """The open transaction was aborted; the caller must rewind to the last committed state."""


class MessageRefused(Exception):
    """Kafka refused this one message (too large, invalid); other messages are unaffected."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(error.str())
        self.error = error


# Errors that concern one message, not the connection or the transaction: retrying cannot
# help, a smaller or different message may.
REFUSALS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
                      KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG,
                      KafkaError.INVALID_MSG_SIZE, KafkaError.POLICY_VIOLATION,
                      KafkaError._INVALID_ARG})


def is_refusal(error: KafkaError) -> bool:
    return error.code() in REFUSALS


class FatalKafkaError(LevyDriftError):
    """An error the service cannot recover from (fenced by a newer instance, misconfiguration)."""

    exit_code = 4


class TransactionalOutput:
    """A transactional producer whose transaction opens on the first write after a commit."""

    def __init__(self, producer: Producer, timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        self.open = False

    def init(self) -> None:
        """Register the transactional id; aborts whatever a crashed predecessor left open."""
        self._call(lambda: self._producer.init_transactions(self._timeout_s), "initialise")

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None,
                headers: list[tuple[str, bytes]] | None = None,
                on_delivery: Callable[[KafkaError | None, Any], None] | None = None) -> None:
        """Queue a message in the open transaction. Raises ``MessageRefused`` when the client
        refuses it outright (too large); refusals by the broker arrive at ``on_delivery``."""
        self._begin_if_needed()
        extra = {"on_delivery": on_delivery} if on_delivery is not None else {}
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, **extra)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
            except KafkaException as exception:
                if is_refusal(exception.args[0]):
                    raise MessageRefused(exception.args[0]) from None
                raise

    def commit(self, offsets: list[TopicPartition], consumer: Consumer,
               timeout_s: float | None = None) -> None:
        """Send ``offsets`` (next offsets to read) and commit within ``timeout_s`` (default the
        transaction timeout). Raises ``TransactionAborted`` when the transaction had to be
        aborted, ``FatalKafkaError`` when nothing can be done."""
        budget = min(timeout_s or self._timeout_s, self._timeout_s)
        deadline = time.monotonic() + budget
        self._begin_if_needed()
        group = consumer.consumer_group_metadata()
        self._call(lambda: self._producer.send_offsets_to_transaction(
            offsets, group, max(deadline - time.monotonic(), 0.1)), "send offsets in", deadline)
        self._call(lambda: self._producer.commit_transaction(
            max(deadline - time.monotonic(), 0.1)), "commit", deadline)
        self.open = False
        metrics.TRANSACTIONS.labels(outcome="committed").inc()

    def abort(self) -> None:
        if not self.open:
            return
        try:
            self._producer.abort_transaction(self._timeout_s)
        except KafkaException as error:
            # Whether the transaction ended is unknown: only a restart (init_transactions)
            # settles it, and the restore then reads what really was committed.
            self.open = False
            raise FatalKafkaError(f"cannot abort the Kafka transaction: {error.args[0].str()}; "
                                  "restart to settle it") from None
        self.open = False
        metrics.TRANSACTIONS.labels(outcome="aborted").inc()

    def poll(self) -> None:
        self._producer.poll(0)

    def _begin_if_needed(self) -> None:
        if not self.open:
            self._call(self._producer.begin_transaction, "begin")
            self.open = True

    def _call(self, operation: Callable[[], T], what: str, deadline: float | None = None) -> T:
        deadline = deadline or time.monotonic() + self._timeout_s
        while True:
            try:
                return operation()
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                self._raise_if_fatal(error, what)
                if error.retriable() and time.monotonic() < deadline:
                    log.warning("retrying transaction step",
                                extra={"step": what, "error": error.str()})
                    continue
                log.warning("aborting transaction", extra={"step": what, "error": error.str()})
                self.abort()
                raise TransactionAborted(f"{what} failed: {error.str()}") from None

    @staticmethod
    def _raise_if_fatal(error: KafkaError, what: str) -> None:
        if error.fatal() or error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                             KafkaError.INVALID_PRODUCER_EPOCH):
            raise FatalKafkaError(
                f"cannot {what} the Kafka transaction: {error.str()} (another instance with the "
                "same consumer.instance_id may be running)")


def producer_overrides(transactional_id: str, transaction_timeout_s: float) -> dict[str, Any]:
    return {"transactional.id": transactional_id,
            "transaction.timeout.ms": int(transaction_timeout_s * 1000),
            "linger.ms": 20, "batch.size": 1_000_000}
