"""Transactional output, the one the consumer and the trainer share: what a service produces
and the offsets it consumed commit together or not at all (``send_offsets_to_transaction``).
The consumer commits a checkpoint (dead letters, drift events, detector snapshots) this way, the
trainer worker its model-version events.

Error handling follows the transactional producer's contract: retriable errors are retried,
errors that require an abort abort (the caller then rewinds to the last committed state), and
anything else is fatal, except what a broker outage leaves behind: see ``TransactionalOutput``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, NoReturn, TypedDict, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from levydrift.errors import LevyDriftError
from levydrift.kafka import PRODUCER_TUNING, partition_count
from schemas.dead_letter import Headers

log = logging.getLogger(__name__)
T = TypeVar("T")
DeliveryCallback = Callable[[KafkaError | None, Any], None]  # (error, message)


class DeliveryOption(TypedDict, total=False):
    """``produce``'s delivery callback and partition, passed only when there are ones."""

    on_delivery: DeliveryCallback
    partition: int


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
    """A transactional producer whose transaction opens on the first write after a commit.

    When Kafka goes away mid-transaction the producer can end up where no call settles it: an
    abort that cannot reach the coordinator, a transaction the coordinator aborted on timeout
    (the producer is then fenced), or ``send_offsets_to_transaction`` blocking far past its
    timeout while the group coordinator is unreachable (librdkafka#5456, #5511). Then the
    output is ``broken``: every call is bounded by a deadline, and ``reset`` replaces the
    producer with a new one of the same transactional id, whose ``init_transactions`` fences
    the old one and settles its transaction (completing a commit that had reached the
    coordinator, aborting anything else). Until then the caller must not read what the open
    transaction held as either committed or aborted; after it, only what Kafka says.
    """

    def __init__(self, make_producer: Callable[[], Producer], timeout_s: float,
                 observe: Callable[[str], None] = lambda outcome: None) -> None:
        self._make_producer = make_producer
        self._observe = observe  # told "committed", "aborted" or "reset" (for metrics)
        self._producer = make_producer()
        self._timeout_s = timeout_s
        self.open = False
        self.broken: str | None = None  # why the producer must be replaced before any use
        self._replacement: Producer | None = None
        self._initialising: Call | None = None
        # Kafka timed out or was unreachable since the last commit: a fencing error may then
        # mean the coordinator aborted our transaction on timeout, not that another instance
        # took over, and a new producer recovers from it.
        self._troubled = False

    def init(self) -> None:
        """Register the transactional id; aborts whatever a crashed predecessor left open."""
        self._call(lambda: self._producer.init_transactions(self._timeout_s), "initialise")

    def reset(self, timeout_s: float) -> bool:
        """Replace a broken producer (see the class docstring). False while Kafka does not
        answer within ``timeout_s``: try again later.

        One replacement at a time, retried until it answers: an abandoned replacement would
        still register when Kafka comes back, and fence the one that came after it."""
        if self.broken is None:
            return True
        if self._replacement is None:
            self._replacement = self._make_producer()
        if self._initialising is None:
            replacement = self._replacement
            self._initialising = Call(lambda: replacement.init_transactions(timeout_s))
        if not self._initialising.wait(timeout_s + STUCK_GRACE_S):
            return False  # still trying: the same call is waited for next time
        initialising, self._initialising = self._initialising, None
        try:
            initialising.result()
        except KafkaException as exception:
            error: KafkaError = exception.args[0]
            if error.fatal() or not (error.retriable() or _is_timeout(error)):
                raise FatalKafkaError(f"cannot restart Kafka transactions: {error.str()}") from None
            return False
        self._producer, self._replacement = self._replacement, None
        self.broken = None
        self.open = False
        # Until it commits, a fencing error may still be the outage's aftermath.
        self._troubled = True
        self._observe("reset")
        return True

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None,
                headers: Headers | None = None,
                on_delivery: DeliveryCallback | None = None,
                partition: int | None = None) -> None:
        """Queue a message in the open transaction. Raises ``MessageRefused`` when the client
        refuses it outright (too large); refusals by the broker arrive at ``on_delivery``."""
        assert self.broken is None, "produce on a broken transactional producer"
        self._begin_if_needed()
        delivery: DeliveryOption = {"on_delivery": on_delivery} if on_delivery is not None else {}
        if partition is not None:  # else the key's partition
            delivery["partition"] = partition
        while True:
            try:
                # The stub's header type is an invariant List of (str, str | bytes | None):
                # a list of (str, bytes | None), which produce accepts, does not match it.
                self._producer.produce(topic, value=value, key=key,
                                       headers=headers,  # type: ignore[arg-type]
                                       **delivery)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
            except KafkaException as exception:
                self._refused(exception, topic)

    def _refused(self, exception: KafkaException, topic: str) -> NoReturn:
        error = exception.args[0]
        if is_refusal(error):
            raise MessageRefused(error) from None
        if _is_fencing(error):  # another instance took the transactional id over
            self._fenced(error, f"produce to {topic} in")
            raise TransactionAborted(self.broken) from None
        if error.code() == KafkaError._STATE or error.txn_requires_abort():
            # An earlier message of this transaction failed at the broker (a delivery
            # report not polled yet): it can only be aborted now.
            self.abort()
            raise TransactionAborted(f"produce to {topic} failed: {error.str()}") from None
        raise exception

    def produce_many(self, topic: str, partition: int,
                     messages: Sequence[tuple[bytes, bytes | None]],
                     on_last_delivery: DeliveryCallback | None = None) -> None:
        """``produce`` for each ``(key, value)`` of ``messages`` to one partition, in order,
        in one tight loop (the producer's ``produce`` bound once, no per-message wrapper);
        only the last message asks for a delivery report (a partition's messages are
        acknowledged in order, so the last one's offset says where it ends). The same
        errors as ``produce``; a full local queue is drained and the loop resumes where it
        stopped, so each message is queued exactly once."""
        assert self.broken is None, "produce on a broken transactional producer"
        if not messages:
            return
        self._begin_if_needed()
        produce, last = self._producer.produce, len(messages) - 1
        start = 0
        while start <= last:
            at = start
            try:
                for at, (key, value) in enumerate(messages[start:last], start):  # noqa: B007
                    produce(topic, value, key, partition)
                at = last
                key, value = messages[last]
                if on_last_delivery is None:
                    produce(topic, value, key, partition)
                else:
                    produce(topic, value, key, partition, on_last_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain, then go on from `at`
                start = at
                self._producer.poll(0.1)
            except KafkaException as exception:
                self._refused(exception, topic)

    def commit(self, offsets: list[TopicPartition], consumer: Consumer | None,
               timeout_s: float | None = None) -> None:
        """Send ``offsets`` (next offsets to read) of ``consumer``'s group, if any, and commit
        within ``timeout_s`` (default the transaction timeout). Raises ``TransactionAborted``
        when the transaction was aborted or the output broke (see ``broken``),
        ``FatalKafkaError`` when nothing can be done."""
        if self.broken is not None:
            raise TransactionAborted(self.broken)
        budget = min(timeout_s or self._timeout_s, self._timeout_s)
        deadline = time.monotonic() + budget
        self._begin_if_needed()
        if offsets and consumer is not None:
            group = consumer.consumer_group_metadata()
            self._call(lambda: self._producer.send_offsets_to_transaction(
                offsets, group, max(deadline - time.monotonic(), 0.1)), "send offsets in",
                deadline)
        self._call(lambda: self._producer.commit_transaction(
            max(deadline - time.monotonic(), 0.1)), "commit", deadline)
        self.open = self._troubled = False
        self._observe("committed")

    def abort(self, timeout_s: float | None = None) -> None:
        """Abort the open transaction (within ``timeout_s``, default the transaction timeout).
        When Kafka cannot confirm the abort, the output breaks instead: whether the
        transaction ended is unknown until ``reset`` settles it."""
        if not self.open or self.broken is not None:
            return
        timeout_s = timeout_s or self._timeout_s
        try:
            call_within(lambda: self._producer.abort_transaction(timeout_s), timeout_s)
        except KafkaException as exception:
            if _is_fencing(exception.args[0]):
                self._fenced(exception.args[0], "abort")
            else:
                self._break(f"cannot abort the Kafka transaction: {_describe(exception)}")
            return
        except CallStuck as error:
            self._break(f"cannot abort the Kafka transaction: {_describe(error)}")
            return
        self.open = False
        self._observe("aborted")

    def partitions_of(self, topic: str, timeout_s: float) -> int:
        """``partition_count`` through the producer: what produce() checks a partition
        against is refreshed by the answer."""
        return partition_count(self._producer, topic, timeout_s)

    def poll(self) -> None:
        if self.broken is None:
            self._producer.poll(0)

    def close(self, timeout_s: float) -> None:
        """Abort what is open and deliver what is queued; logs instead of raising, so an
        error on the way out never hides the one that ended the run."""
        try:
            self.abort(timeout_s)
        except FatalKafkaError as error:
            log.warning("abort on shutdown failed", extra={"error": str(error)})
            return
        if self.broken is not None:
            return
        try:
            call_within(lambda: self._producer.flush(timeout_s), timeout_s)
        except (KafkaException, CallStuck) as error:
            log.warning("producer flush on shutdown failed", extra={"error": _describe(error)})

    def _break(self, reason: str) -> None:
        log.warning("transactional producer must be replaced", extra={"reason": reason})
        self.broken = reason
        self.open = False
        # Drop what the abandoned producer still holds; the reset fences it anyway.
        with contextlib.suppress(KafkaException, RuntimeError):
            self._producer.purge(blocking=False)

    def _begin_if_needed(self) -> None:
        if not self.open:
            self._call(self._producer.begin_transaction, "begin")
            self.open = True

    def _call(self, operation: Callable[[], T], what: str, deadline: float | None = None) -> T:
        deadline = deadline or time.monotonic() + self._timeout_s
        while True:
            try:
                return call_within(operation, deadline - time.monotonic())
            except CallStuck:
                self._troubled = True
                self._break(f"{what} the transaction did not return in time (Kafka unreachable)")
                raise TransactionAborted(self.broken) from None
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                if _is_fencing(error):
                    self._fenced(error, what)
                    raise TransactionAborted(self.broken) from None
                if error.retriable() or _is_timeout(error):
                    self._troubled = True
                if error.retriable() and time.monotonic() < deadline:
                    log.warning("retrying transaction step",
                                extra={"step": what, "error": error.str()})
                    time.sleep(max(min(RETRY_PAUSE_S, deadline - time.monotonic()), 0.0))
                    continue
                log.warning("aborting transaction", extra={"step": what, "error": error.str()})
                # Within what is left of the deadline: a reachable coordinator aborts at once,
                # an unreachable one is settled by ``reset`` anyway.
                self.abort(max(deadline - time.monotonic(), MIN_ABORT_S))
                raise TransactionAborted(f"{what} failed: {error.str()}") from None

    def _fenced(self, error: KafkaError, what: str) -> None:
        if not self._troubled:
            raise FatalKafkaError(
                f"cannot {what} the Kafka transaction: {error.str()} (another instance with the "
                "same transactional id may be running: each levydrift consume needs its own "
                "consumer.instance_id, and each model one train-worker)")
        self._break(f"{what} the transaction: {error.str()} after Kafka was unreachable")


RETRY_PAUSE_S = 0.5
MIN_ABORT_S = 2.0
STUCK_GRACE_S = 2.0  # beyond a call's own timeout, before it counts as stuck


class CallStuck(Exception):
    """A librdkafka call did not return within its timeout (it goes on in its thread)."""


class Call:
    """An operation running in a daemon thread, and its outcome once it has finished."""

    def __init__(self, operation: Callable[[], Any]) -> None:
        self._outcome: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(operation,), daemon=True,
                                        name="levydrift-transaction")
        self._thread.start()

    def _run(self, operation: Callable[[], Any]) -> None:
        try:
            self._outcome["value"] = operation()
        except BaseException as error:  # handed to the waiting thread
            self._outcome["error"] = error

    def wait(self, timeout_s: float) -> bool:
        """Whether it finished within ``timeout_s``."""
        self._thread.join(max(timeout_s, 0.0))
        return not self._thread.is_alive()

    def result(self) -> Any:
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["value"]


def call_within(operation: Callable[[], T], timeout_s: float) -> T:
    """Run ``operation`` in a daemon thread and wait at most ``timeout_s`` + a grace period.
    A call that overstays is left to finish on its own (its producer is abandoned) and
    ``CallStuck`` is raised."""
    call = Call(operation)
    if not call.wait(timeout_s + STUCK_GRACE_S):
        raise CallStuck()
    return call.result()


def _is_fencing(error: KafkaError) -> bool:
    # _FATAL: what produce() raises once the producer has a fatal error (fenced, in practice).
    return error.fatal() or error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                             KafkaError.INVALID_PRODUCER_EPOCH,
                                             KafkaError._FATAL)


def _is_timeout(error: KafkaError) -> bool:
    return error.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                            KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT,
                            KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR)


def _describe(error: BaseException) -> str:
    if isinstance(error, KafkaException) and error.args:
        return error.args[0].str()
    return "no answer within the timeout" if isinstance(error, CallStuck) else str(error)


# A checkpoint's output goes out at once: later, bigger batches than the default tuning (still
# defaults: kafka.client replaces them).
TRANSACTIONAL_TUNING: Final[Mapping[str, Any]] = MappingProxyType(
    {**PRODUCER_TUNING, "linger.ms": 20, "batch.size": 1_000_000})


def producer_overrides(transactional_id: str, transaction_timeout_s: float) -> dict[str, Any]:
    """What a transactional producer must have, whatever kafka.client says."""
    return {"transactional.id": transactional_id,
            "transaction.timeout.ms": int(transaction_timeout_s * 1000)}
