"""The labels a training window joins to its records: ``levy.labels`` read backwards, bounded.

A label (schemas/levy_label.py) carries the actual levy of one record, by ``record_id``; it is
keyed by ``parcel_id`` like the record, so with the topics co-partitioned the labels of records
partition p are in labels partition p. When the partition counts differ (a deployment the
consumer refuses to start on, but a trainer must still read) a label may be in any labels
partition, so every one of them is read.

The labels of a record are produced after the record, so they carry a later broker timestamp:
joining records read back to time T needs the labels from T on (less ``LABEL_CLOCK_SLACK_MS``),
found with the broker's time index, never a scan from the start. A drift event found from labels
instead names the labels themselves (from its onset on): those are read first, whole, and the
records are joined to them. Either way at most ``scan_limit`` labels are read, read_committed.
When a record has several labels, the first by offset wins (a correction is a new record, not a
second label).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Consumer, KafkaException, TopicPartition

from levydrift.errors import BrokerUnavailableError
from levydrift.kafka import read_ranges
from levydrift.kafka.messages import offset_of
from schemas.levy_label import decode_levy_labels

log = logging.getLogger(__name__)

# A label produced this long before its record (producers' clocks apart, or a label that beat
# its record to the broker) is still found; older ones are not looked for.
LABEL_CLOCK_SLACK_MS = 3_600_000
_IDLE_TIMEOUT_S = 30.0  # no label for this long while reading: give up


@dataclass(frozen=True)
class LabelSpan:
    """The labels of one labels partition a window may use: offsets ``low..end``."""

    partition: int
    low: int
    end: int


@dataclass
class Joined:
    """Per record of a batch: the label's amount, labels partition and offset (-1: none)."""

    amounts: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray


@dataclass
class LabelIndex:
    """The labels read so far for one records partition, by record id.

    ``whole`` (a labels drift event's window): every label of the spans is read at once, and
    only records with one of them are training rows. Otherwise ``cover_since`` reads further
    back as the records being joined get older."""

    consumer: Consumer
    topic: str
    spans: list[LabelSpan]
    scan_limit: int
    timeout_s: float
    whole: bool = False
    scanned: int = 0
    refused: int = 0
    _by_record: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    _found: set[str] = field(default_factory=set)
    _next: dict[int, int] = field(default_factory=dict)  # per partition: first offset read
    _limited: bool = False  # the scan limit stopped a read (said once)

    def __post_init__(self) -> None:
        self._next = {span.partition: span.end + 1 for span in self.spans}
        if self.whole:
            for span in self.spans:
                self._read_back_to(span.partition, span.low)

    def cover_since(self, timestamp_ms: int) -> None:
        """Read back to the labels produced at ``timestamp_ms`` (less the slack): every label
        of a record produced then or later has been read."""
        if self.whole or not self.spans:
            return
        wanted = [TopicPartition(self.topic, span.partition, max(0, timestamp_ms
                                                                 - LABEL_CLOCK_SLACK_MS))
                  for span in self.spans if self._next[span.partition] > span.low]
        if not wanted:
            return
        try:
            found = self.consumer.offsets_for_times(wanted, timeout=self.timeout_s)
        except KafkaException as error:
            raise BrokerUnavailableError(
                f"looking up {self.topic}'s offsets by time: {error.args[0].str()}") from None
        for position in found:
            if position.offset >= 0:  # -1: no label that recent; nothing more to read
                self._read_back_to(position.partition, position.offset)

    def join(self, record_ids: np.ndarray) -> Joined:
        """The labels of ``record_ids`` (noted as found, for ``all_found``)."""
        count = len(record_ids)
        joined = Joined(np.full(count, np.nan), np.full(count, -1, np.int64),
                        np.full(count, -1, np.int64))
        for row, record_id in enumerate(record_ids):
            label = self._by_record.get(record_id)
            if label is not None:
                joined.amounts[row], joined.partitions[row], joined.offsets[row] = label
                self._found.add(record_id)
        return joined

    @property
    def all_found(self) -> bool:
        """Whether every label read has found its record (for ``whole``: nothing left to
        look for further back)."""
        return len(self._found) == len(self._by_record)

    def _read_back_to(self, partition: int, first: int) -> None:
        """Read ``partition`` from ``first`` up to where it was read from before, within the
        span and the scan limit. These labels are older than all read before, so for a record
        they replace the one read (the first by offset wins)."""
        span = next(s for s in self.spans if s.partition == partition)
        stop = self._next[partition]
        first = max(first, span.low, stop - (self.scan_limit - self.scanned))
        if first >= stop:
            if self.scanned >= self.scan_limit and stop > span.low and not self._limited:
                self._limited = True
                log.warning("labels scan limit reached; older labels are not joined",
                            extra={"topic": self.topic, "partition": partition,
                                   "scan_limit": self.scan_limit})
            return
        values: list[bytes | None] = []
        offsets: list[int] = []
        for message in read_ranges(self.consumer, self.topic, {partition: (first, stop)},
                                   timeout_s=_IDLE_TIMEOUT_S, idle=True, release=True):
            values.append(message.value())
            offsets.append(offset_of(message))
        labels, rejections = decode_levy_labels(values)
        refused = {index for index, _ in rejections}
        accepted = [offset for index, offset in enumerate(offsets) if index not in refused]
        for label, offset in reversed(list(zip(labels, accepted, strict=True))):
            self._by_record[label.record_id] = (label.actual_levy_amount, partition, offset)
        self.scanned += len(values)
        self.refused += len(rejections)
        self._next[partition] = first
