"""Read a training window back from ``levy.records``: labelled records, most recent first.

The window ends, per partition, at the last offset a drift event names for it (the records the
detectors saw drift in); partitions no event names end at their high watermark. When an event
names the estimated onset of the change, that partition's window is the post-change records:
from the onset to the high watermark, never before the onset. Each partition
contributes up to ``window_records / partitions`` labelled records, read backwards in chunks
from its end, scanning at most ``max_scan_records / partitions`` records. Reads are
``read_committed`` and never join a group or commit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from confluent_kafka import Consumer

from levydrift.features import TARGET, to_model_frame
from levydrift.kafka import consumer_config, read_ranges, watermarks
from levydrift.kafka.messages import offset_of
from levydrift.settings import KafkaSettings
from schemas.levy_record import decode_levy_records, levy_records_to_columns

log = logging.getLogger(__name__)

_IDLE_TIMEOUT_S = 30.0  # no record for this long while reading a window: give up


@dataclass(frozen=True)
class TrainingWindow:
    """The labelled model frame (oldest to newest) and the offset ranges it came from."""

    frame: pd.DataFrame
    offsets: list[dict[str, int | str]]
    scanned_records: int
    rejected_records: int


@dataclass
class _Chunk:
    offsets: np.ndarray
    timestamps: np.ndarray
    columns: dict[str, np.ndarray]


def read_training_window(kafka: KafkaSettings, topic: str, event_ends: dict[int, int],
                         window_records: int, max_scan_records: int,
                         event_starts: dict[int, int] | None = None) -> TrainingWindow:
    """The training window of ``topic`` ending at ``event_ends`` ({partition: last offset}),
    or, for the partitions in ``event_starts`` ({partition: onset offset}), running from the
    onset to the newest record."""
    starts = event_starts or {}
    consumer = Consumer(consumer_config(kafka, group_id="levy-trainer-window-reader",
                                        **{"enable.partition.eof": True}))
    try:
        partitions = watermarks(consumer, topic, kafka.request_timeout_s)
        quota = math.ceil(window_records / len(partitions))
        scan_limit = math.ceil(max_scan_records / len(partitions))
        chunks: list[_Chunk] = []
        ranges: list[dict[str, int | str]] = []
        scanned = rejected = 0
        for partition, (low, high) in partitions.items():
            end = min(event_ends.get(partition, high - 1), high - 1)
            if partition in starts:  # post-change records only
                low, end = max(low, starts[partition]), high - 1
            chunk, first, read, refused = _read_partition_backwards(
                consumer, topic, partition, low, end, quota, scan_limit)
            scanned, rejected = scanned + read, rejected + refused
            if chunk is not None and len(chunk.offsets):
                chunks.append(chunk)
                ranges.append({"topic": topic, "partition": partition, "first_offset": first,
                               "last_offset": end})
    finally:
        consumer.close()
    return TrainingWindow(_ordered_frame(chunks), ranges, scanned, rejected)


def _read_partition_backwards(consumer: Consumer, topic: str, partition: int, low: int,
                              end: int, quota: int, scan_limit: int
                              ) -> tuple[_Chunk | None, int, int, int]:
    """Labelled records of one partition ending at ``end``: read chunks further back until
    ``quota`` labelled records, the log start, or ``scan_limit`` records. Returns (the newest
    ``quota`` records, first offset used, records scanned, records refused)."""
    collected: list[_Chunk] = []
    labelled = scanned = refused = 0
    stop = end + 1  # exclusive
    span = quota
    while labelled < quota and stop > low and scanned < scan_limit:
        start = max(low, stop - span, stop - (scan_limit - scanned))
        chunk, read, bad = _read_range(consumer, topic, partition, start, stop - 1)
        collected.insert(0, chunk)
        labelled += len(chunk.offsets)
        scanned, refused, stop = scanned + read, refused + bad, start
        share = max(labelled / max(scanned, 1), 0.01)  # grow the next chunk by what we saw
        span = max(quota, math.ceil((quota - labelled) / share * 1.1))
    if not collected:
        return None, end, scanned, refused
    merged = _concat(collected)
    keep = slice(max(0, len(merged.offsets) - quota), None)  # the most recent
    newest = _Chunk(merged.offsets[keep], merged.timestamps[keep],
                    {k: v[keep] for k, v in merged.columns.items()})
    first = int(newest.offsets[0]) if len(newest.offsets) else end
    return newest, first, scanned, refused


def _read_range(consumer: Consumer, topic: str, partition: int, first: int,
                last: int) -> tuple[_Chunk, int, int]:
    """Labelled, valid records with offsets ``first..last``; (chunk, read, refused)."""
    values: list[bytes | None] = []
    offsets: list[int] = []
    timestamps: list[int] = []
    for message in read_ranges(consumer, topic, {partition: (first, last + 1)},
                               timeout_s=_IDLE_TIMEOUT_S, idle=True):
        values.append(message.value())
        offsets.append(offset_of(message))
        timestamps.append(message.timestamp()[1])
    records, rejections = decode_levy_records(values)
    accepted = np.ones(len(values), dtype=bool)
    accepted[[index for index, _ in rejections]] = False
    columns = levy_records_to_columns(records)
    has_label = np.isfinite(columns[TARGET].astype(float)) if records else np.zeros(0, bool)
    keep_offsets = np.asarray(offsets, dtype=np.int64)[accepted][has_label]
    keep_times = np.asarray(timestamps, dtype=np.int64)[accepted][has_label]
    chunk = _Chunk(keep_offsets, keep_times, {k: v[has_label] for k, v in columns.items()})
    return chunk, len(values), len(rejections)


def _concat(chunks: list[_Chunk]) -> _Chunk:
    return _Chunk(np.concatenate([c.offsets for c in chunks]),
                  np.concatenate([c.timestamps for c in chunks]),
                  {k: np.concatenate([c.columns[k] for c in chunks]) for k in chunks[0].columns})


def _ordered_frame(chunks: list[_Chunk]) -> pd.DataFrame:
    """All partitions' records as one model frame, oldest to newest by record timestamp."""
    if not chunks:
        return to_model_frame({k: [] for k in _empty_columns()}, include_target=True)
    merged = _concat(chunks)
    order = np.argsort(merged.timestamps, kind="stable")
    return to_model_frame({k: v[order] for k, v in merged.columns.items()}, include_target=True)


def _empty_columns() -> dict[str, np.ndarray]:
    return levy_records_to_columns([])
