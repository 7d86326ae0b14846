"""Consumer lag, measured in a thread of its own.

Lag is the end of each assigned partition minus its committed offset. The ends are asked of the
brokers by a separate client every ``interval_s``, so the gauge keeps moving while the run loop
is stuck in a commit, and costs the loop nothing. While the brokers do not answer, the gauge
keeps its last value and ``levydrift_consumer_lag_timestamp_seconds`` stops advancing: the lag
is then stale, and says so.

The same client watches topics' partition counts (``LayoutWatch``): a layout that stops
passing its check mid-run (partitions added to one of co-partitioned topics and not the
others) is kept in ``layout_problem`` for the run loop to end on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer import metrics
from levydrift.errors import LevyDriftError
from levydrift.kafka import partition_count

LAG_INTERVAL_S = 5.0
QUERY_TIMEOUT_S = 2.0
# A layout may fail its check this long while co-partitioned topics grow one after the other
# (`levydrift topics create` after raising topics.records_partitions takes well under this).
LAYOUT_GRACE_S = 30.0


class LayoutWatch:
    """Partition counts of some topics, checked as they are observed: a failure that lasts
    ``grace_s`` becomes ``problem`` (one passing observation clears the clock)."""

    def __init__(self, topics: list[str], check: Callable[[dict[str, int]], None],
                 grace_s: float = LAYOUT_GRACE_S) -> None:
        self.topics = topics
        self._check = check
        self._grace_s = grace_s
        self._failing_since: float | None = None
        self.problem: LevyDriftError | None = None

    def observe(self, counts: dict[str, int], now: float) -> None:
        try:
            self._check(counts)
        except LevyDriftError as error:
            if self._failing_since is None:
                self._failing_since = now
            if now - self._failing_since >= self._grace_s:
                self.problem = error
        else:
            self._failing_since = None


class LagProbe:
    """The run loop says which partitions it owns and where their commits stand; the probe
    measures the rest."""

    def __init__(self, consumer_config: dict[str, Any],
                 interval_s: float = LAG_INTERVAL_S) -> None:
        self._config = {**consumer_config, "enable.partition.eof": False}
        self._interval_s = interval_s
        self._committed: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.layout: LayoutWatch | None = None  # set before start(), read by the run loop

    @property
    def layout_problem(self) -> LevyDriftError | None:
        return None if self.layout is None else self.layout.problem

    def committed(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self._committed[(topic, partition)] = offset

    def forget(self, topic: str, partition: int) -> None:
        """The partition went to another member: its lag is theirs to report."""
        with self._lock:
            self._committed.pop((topic, partition), None)
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(topic, str(partition))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="levydrift-lag", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(QUERY_TIMEOUT_S * 2 + self._interval_s)

    def _run(self) -> None:
        client = Consumer(self._config)
        try:
            while not self._stop.wait(self._interval_s):
                self.measure(client)
                self.check_layout(client)
        finally:
            client.close()

    def measure(self, client: Consumer) -> bool:
        """Set the lag of every owned partition; False (nothing set, the timestamp not
        advanced) when a broker does not answer."""
        with self._lock:
            owned = list(self._committed)
        ends = {}
        for topic, partition in owned:
            try:
                _, ends[(topic, partition)] = client.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=QUERY_TIMEOUT_S, cached=False)
            except KafkaException:
                return False
        with self._lock:  # a partition forgotten meanwhile gets no gauge back
            for key, offset in self._committed.items():
                if key in ends:
                    metrics.LAG.labels(topic=key[0], partition=str(key[1])).set(
                        max(ends[key] - offset, 0))
        if owned:
            metrics.LAG_TIMESTAMP.set(time.time())
        return True

    def check_layout(self, client: Consumer) -> None:
        """Count the watched topics' partitions for ``layout`` (nothing while a broker does
        not answer, or a topic is missing: that is for the writers to find)."""
        if self.layout is None or self.layout.problem is not None:
            return
        counts = {}
        for topic in self.layout.topics:
            try:
                counts[topic] = partition_count(client, topic, QUERY_TIMEOUT_S)
            except KafkaException:
                return
            if counts[topic] == 0:
                return
        self.layout.observe(counts, time.monotonic())
