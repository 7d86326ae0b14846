"""Read a training window back from ``levy.records`` and ``levy.labels``: training rows, most
recent first.

A training row is a valid record with an actual levy: inline (the record's own
``actual_levy_amount``: old producers and batch files) or joined from the labels topic by
``record_id`` (``trainer.window_labels``). A record without either is not a training row; a
label whose record is outside the window is ignored. When the labels topic does not exist (a
deployment from before it), the window has the inline levies only, and says so once.

The window ends, per partition, at the last offset a drift event names for it (the records the
detectors saw drift in); partitions no event names end at their high watermark. When an event
names the estimated onset of the change, that partition's window is the post-change records:
from the onset to the high watermark, never before the onset. When every such event names one
segment (``county=Grant``: levy drift is usually one county's), only that segment's records
must come from after the onset; the other segments' records before it still describe the
present, so the window takes them too (records arrive in county slices: a window cut at one
county's onset could hold little but that county). An event found from labels names offsets
of the labels topic (partition p of it holds the labels of records partition p): its window is
the records whose labels are at or after its onset (up to its end, without one); for one
segment's, the worker adds the other segments' records read with ``other_segments_of``.
Each partition contributes up to ``window_records / partitions`` rows, read backwards in chunks
from its end, scanning at most ``max_scan_records / partitions`` records (and as many labels).
Reads are ``read_committed`` and never join a group or commit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import Consumer

from detectors.composition import WindowTally, event_times_ms, merge_counts
from levydrift.errors import MissingTopicError
from levydrift.features import CATEGORICAL_FEATURES, TARGET, to_model_frame
from levydrift.kafka import consumer_config, read_ranges, watermarks
from levydrift.kafka.messages import offset_of
from levydrift.settings import KafkaSettings
from schemas.levy_record import decode_levy_records, levy_records_to_columns
from trainer.window_labels import LabelIndex, LabelSpan

log = logging.getLogger(__name__)

_IDLE_TIMEOUT_S = 30.0  # no record for this long while reading a window: give up
WINDOW_FETCH_WAIT_MS = 10  # what the window reader's fetch waits for data at a partition's end


@dataclass(frozen=True)
class TrainingWindow:
    """The training rows as a model frame (oldest to newest) and where they came from.

    ``offsets`` holds one range per partition of each topic read: the records topic's (first
    record used to the window's end) and the labels topic's (first label joined to the last
    label the window could use). ``joined_records`` rows took their levy from a label, the
    rest their own; ``labels_topic`` is None when no labels topic was read."""

    frame: pd.DataFrame
    offsets: list[dict[str, int | str]]
    scanned_records: int
    rejected_records: int
    labels_topic: str | None = None
    joined_records: int = 0
    scanned_labels: int = 0
    rejected_labels: int = 0
    # partition -> the segments whose records come from after the onset only (the others'
    # from before it too); partitions cut at an onset for the whole stream are not listed
    post_change_segments: dict[str, list[str]] = field(default_factory=dict)
    # per frame row: (records partition, offset) of its record, and its record timestamp
    record_offsets: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    record_times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    duplicate_records: int = 0  # rows of records read again (same record_id), dropped
    # every record scanned, by category, over whole event-time windows: (counts, windows);
    # None unless asked for (``composition_window_s``)
    mix: tuple[dict[str, dict[str, int]], int] | None = None

    def merged(self, other: TrainingWindow) -> TrainingWindow:
        """This window's rows and ``other``'s (of the same topics) that it lacks, oldest to
        newest; the offset ranges of both."""
        new = ~np.isin(_record_keys(other.record_offsets), _record_keys(self.record_offsets))
        times = np.concatenate([self.record_times, other.record_times[new]])
        order = np.argsort(times, kind="stable")
        frame = pd.concat([self.frame, other.frame[new]], ignore_index=True).iloc[order]
        return TrainingWindow(
            frame.reset_index(drop=True), self.offsets + other.offsets,
            self.scanned_records + other.scanned_records,
            self.rejected_records + other.rejected_records, self.labels_topic or other.labels_topic,
            self.joined_records + other.joined_records, self.scanned_labels + other.scanned_labels,
            self.rejected_labels + other.rejected_labels,
            {**other.post_change_segments, **self.post_change_segments},
            np.concatenate([self.record_offsets, other.record_offsets[new]])[order],
            times[order], self.duplicate_records + other.duplicate_records,
            self._fuller_mix(other))

    def _fuller_mix(self, other: TrainingWindow) -> tuple[dict[str, dict[str, int]], int] | None:
        """The mix over more whole windows: two reads of the same partitions overlap, and
        their counts cannot be told apart to be summed."""
        mixes = [mix for mix in (self.mix, other.mix) if mix is not None]
        return max(mixes, key=lambda mix: mix[1]) if mixes else None

    def lineage(self) -> dict[str, Any]:
        """What a version's lineage says about the window besides its offset ranges: how much
        was read, and where the levies came from (``labels`` is None without a labels
        topic)."""
        labels = None if self.labels_topic is None else {
            "topic": self.labels_topic, "joined_records": self.joined_records,
            "inline_records": len(self.frame) - self.joined_records,
            "scanned_labels": self.scanned_labels, "refused_labels": self.rejected_labels}
        return {"scanned_records": self.scanned_records,
                "refused_records": self.rejected_records,
                "duplicate_records": self.duplicate_records, "labels": labels,
                "post_change_segments": self.post_change_segments}


def _record_keys(record_offsets: np.ndarray) -> np.ndarray:
    """One int64 per (partition, offset) row: offsets stay far below 2**40."""
    return (record_offsets[:, 0] << 40) | record_offsets[:, 1]


@dataclass
class _Chunk:
    offsets: np.ndarray
    timestamps: np.ndarray
    columns: dict[str, np.ndarray]
    label_partitions: np.ndarray  # per row: the labels partition of its levy, -1 for inline
    label_offsets: np.ndarray  # per row: the labels offset of its levy, -1 for inline
    partitions: np.ndarray  # per row: its records partition

    def rows(self, keep: np.ndarray | slice) -> _Chunk:
        return _Chunk(self.offsets[keep], self.timestamps[keep],
                      {k: v[keep] for k, v in self.columns.items()},
                      self.label_partitions[keep], self.label_offsets[keep],
                      self.partitions[keep])


@dataclass
class _Partition:
    """What to read of one records partition."""

    partition: int
    low: int
    end: int
    labels: LabelIndex | None = None
    inline: bool = True  # whether records' own levies count (not in a labels event's window)
    onset: int = -1  # records of ``changed`` segments before this offset are not used
    changed: tuple[dict[str, str], ...] = ()
    mix: WindowTally | None = None  # every record scanned, labelled or not, by event time


@dataclass
class _Totals:
    chunks: list[_Chunk] = field(default_factory=list)
    ranges: list[dict[str, int | str]] = field(default_factory=list)
    scanned: int = 0
    refused: int = 0
    scanned_labels: int = 0
    refused_labels: int = 0
    mixes: list[tuple[dict[str, dict[str, int]], set[int]]] = field(default_factory=list)


def read_training_window(kafka: KafkaSettings, topic: str, event_ends: dict[int, int],
                         window_records: int, max_scan_records: int,
                         event_starts: dict[int, int] | None = None, *,
                         labels_topic: str | None = None,
                         label_ends: dict[int, int] | None = None,
                         label_starts: dict[int, int] | None = None,
                         changed_segments: dict[int, tuple[dict[str, str], ...]] | None = None,
                         other_segments_of: dict[int, tuple[dict[str, str], ...]] | None = None,
                         composition_window_s: int | None = None) -> TrainingWindow:
    """The training window of ``topic`` ending at ``event_ends`` ({partition: last offset}),
    or, for the partitions in ``event_starts`` ({partition: onset offset}), running from the
    onset to the newest record; in partitions of ``changed_segments`` only those segments'
    records run from the onset, the others' from before it too. With ``labels_topic`` its
    labels are joined; ``label_ends`` and ``label_starts`` are the same for drift events on
    the labels topic ({labels partition = records partition: labels offset}). With
    ``other_segments_of`` only its partitions are read, and only their records outside the
    segments named (the rest of a window a segment's labels event cut at its onset). With
    ``composition_window_s``, every record scanned (labelled or not) is counted by category
    and event-time window: ``TrainingWindow.mix``, the stream's mix over each partition's
    whole windows."""
    # It reads what is there, one range after another: a fetch that long-polls at a
    # partition's end (fetch.wait.max.ms, 0.5 s by default) held up the next range's fetch
    # and the label lookups behind it on the same connection, 0.5 s per range read.
    consumer = Consumer(consumer_config(kafka, group_id="levy-trainer-window-reader",
                                        **{"enable.partition.eof": True,
                                           "fetch.wait.max.ms": WINDOW_FETCH_WAIT_MS}))
    try:
        partitions = watermarks(consumer, topic, kafka.request_timeout_s)
        quota = math.ceil(window_records / len(partitions))
        scan_limit = math.ceil(max_scan_records / len(partitions))
        label_spans = _label_spans(consumer, kafka, labels_topic, partitions, label_ends or {},
                                   label_starts or {})
        totals = _Totals()
        for partition, (low, high) in partitions.items():
            if other_segments_of is not None and partition not in other_segments_of:
                continue
            plan = _plan(partition, low, high, event_ends, event_starts or {},
                         (changed_segments or {}).get(partition, ()))
            if other_segments_of is not None:  # every record counts as before any change
                plan.onset, plan.changed = high, other_segments_of[partition]
            if composition_window_s is not None:
                plan.mix = WindowTally(composition_window_s)
            if label_spans is not None and labels_topic is not None:
                plan.labels = _label_index(consumer, kafka, labels_topic, label_spans,
                                           partition, partition in (label_starts or {}),
                                           scan_limit)
                plan.inline = not plan.labels.whole
            _read_partition(consumer, topic, plan, quota, scan_limit, totals)
    finally:
        consumer.close()
    window = _window(totals, labels_topic if label_spans is not None else None, label_spans)
    scoped = {partition: changed for partition, changed in (changed_segments or {}).items()
              if partition in partitions and partition in (event_starts or {}) and changed}
    return replace(window, post_change_segments=segment_scopes(scoped))


def segment_scopes(changed: dict[int, tuple[dict[str, str], ...]]) -> dict[str, list[str]]:
    """``changed_segments`` as text for logs and lineage: {"0": ["county=Grant"]}."""
    return {str(partition): [",".join(f"{name}={value}" for name, value in fields.items())
                             for fields in segments]
            for partition, segments in changed.items()}


def _plan(partition: int, low: int, high: int, event_ends: dict[int, int],
          event_starts: dict[int, int], changed: tuple[dict[str, str], ...]) -> _Partition:
    end = min(event_ends.get(partition, high - 1), high - 1)
    if partition not in event_starts:
        return _Partition(partition, low, end)
    if changed:  # post-change records of the changed segments, any of the others
        return _Partition(partition, low, high - 1, onset=event_starts[partition],
                          changed=changed)
    return _Partition(partition, max(low, event_starts[partition]), high - 1)


def _label_index(consumer: Consumer, kafka: KafkaSettings, labels_topic: str,
                 spans: dict[int, list[LabelSpan]], partition: int, whole: bool,
                 scan_limit: int) -> LabelIndex:
    """The labels of records partition ``partition``; ``whole`` for a labels event's window,
    whose onset and end are offsets of labels partition ``partition``."""
    usable = [s for s in spans[partition] if s.partition == partition] if whole \
        else spans[partition]
    return LabelIndex(consumer, labels_topic, usable, scan_limit, kafka.request_timeout_s,
                      whole=whole)


def _label_spans(consumer: Consumer, kafka: KafkaSettings, labels_topic: str | None,
                 records: dict[int, tuple[int, int]], label_ends: dict[int, int],
                 label_starts: dict[int, int]) -> dict[int, list[LabelSpan]] | None:
    """Per records partition, the labels partitions (and offsets) that can hold its labels;
    None when there is no labels topic to read."""
    if labels_topic is None:
        return None
    try:
        labels = watermarks(consumer, labels_topic, kafka.request_timeout_s)
    except MissingTopicError:
        log.warning("labels topic does not exist; training on the levies records carry inline",
                    extra={"labels_topic": labels_topic})
        return None
    # From an onset the window runs to the newest label (as it runs to the newest record for
    # a records event): what came after the change is what the new model must learn.
    spans = {partition: LabelSpan(partition, max(low, label_starts.get(partition, low)),
                                  high - 1 if partition in label_starts
                                  else min(label_ends.get(partition, high - 1), high - 1))
             for partition, (low, high) in labels.items()}
    if len(labels) == len(records):  # co-partitioned: partition p's labels are in p
        return {partition: [spans[partition]] for partition in records}
    log.warning("labels topic is not co-partitioned with the records; reading all of its "
                "partitions for each records partition", extra={
                    "labels_topic": labels_topic, "labels_partitions": len(labels),
                    "records_partitions": len(records)})
    return {partition: list(spans.values()) for partition in records}


def _read_partition(consumer: Consumer, topic: str, plan: _Partition, quota: int,
                    scan_limit: int, totals: _Totals) -> None:
    """Read one partition's rows into ``totals`` (its chunk and its records range)."""
    chunk, first, read, refused = _read_partition_backwards(consumer, topic, plan, quota,
                                                            scan_limit)
    totals.scanned, totals.refused = totals.scanned + read, totals.refused + refused
    if plan.mix is not None:
        totals.mixes.append(plan.mix.whole())
    if plan.labels is not None:
        totals.scanned_labels += plan.labels.scanned
        totals.refused_labels += plan.labels.refused
    if chunk is not None and len(chunk.offsets):
        totals.chunks.append(chunk)
        totals.ranges.append({"topic": topic, "partition": plan.partition,
                              "first_offset": first, "last_offset": plan.end})


def _read_partition_backwards(consumer: Consumer, topic: str, plan: _Partition, quota: int,
                              scan_limit: int) -> tuple[_Chunk | None, int, int, int]:
    """Rows of one partition ending at ``plan.end``: read chunks further back until ``quota``
    rows, the log start, ``scan_limit`` records, or (in a labels event's window) every label
    found its record. Returns (the newest ``quota`` rows, first offset used, records scanned,
    records refused)."""
    collected: list[_Chunk] = []
    rows = scanned = refused = 0
    stop = plan.end + 1  # exclusive
    span = quota
    while rows < quota and stop > plan.low and scanned < scan_limit:
        if plan.labels is not None and not plan.inline and plan.labels.all_found:
            break
        start = max(plan.low, stop - span, stop - (scan_limit - scanned))
        chunk, read, bad = _read_range(consumer, topic, plan, start, stop - 1)
        collected.insert(0, chunk)
        rows += len(chunk.offsets)
        scanned, refused, stop = scanned + read, refused + bad, start
        share = max(rows / max(scanned, 1), 0.01)  # grow the next chunk by what we saw
        span = max(quota, math.ceil((quota - rows) / share * 1.1))
    if not collected:
        return None, plan.end, scanned, refused
    merged = _concat(collected)
    newest = merged.rows(slice(max(0, len(merged.offsets) - quota), None))  # the most recent
    first = int(newest.offsets[0]) if len(newest.offsets) else plan.end
    return newest, first, scanned, refused


def _read_range(consumer: Consumer, topic: str, plan: _Partition, first: int,
                last: int) -> tuple[_Chunk, int, int]:
    """The rows among the valid records with offsets ``first..last``; (chunk, read,
    refused)."""
    values: list[bytes | None] = []
    offsets: list[int] = []
    timestamps: list[int] = []
    for message in read_ranges(consumer, topic, {plan.partition: (first, last + 1)},
                               timeout_s=_IDLE_TIMEOUT_S, idle=True, release=True):
        values.append(message.value())
        offsets.append(offset_of(message))
        timestamps.append(message.timestamp()[1])
    records, rejections = decode_levy_records(values)
    accepted = np.ones(len(values), dtype=bool)
    accepted[[index for index, _ in rejections]] = False
    columns = levy_records_to_columns(records)
    count = len(records)
    chunk = _Chunk(np.asarray(offsets, dtype=np.int64)[accepted],
                   np.asarray(timestamps, dtype=np.int64)[accepted], columns,
                   np.full(count, -1, np.int64), np.full(count, -1, np.int64),
                   np.full(count, plan.partition, np.int64))
    if plan.labels is not None and count:
        plan.labels.cover_since(int(chunk.timestamps.min()))
    if plan.mix is not None and count:
        plan.mix.add({name: columns[name] for name in CATEGORICAL_FEATURES},
                     event_times_ms(columns["event_time"]))
    if plan.changed and count:
        chunk = chunk.rows(~_before_change(chunk, plan))
    return _with_levies(chunk, plan), len(values), len(rejections)


def _before_change(chunk: _Chunk, plan: _Partition) -> np.ndarray:
    """Rows of a changed segment from before the onset: the old regime of that segment."""
    before = chunk.offsets < plan.onset
    changed = np.zeros(len(chunk.offsets), dtype=bool)
    for fields in plan.changed:
        match = before.copy()
        for name, value in fields.items():
            match &= np.asarray(chunk.columns[name]).astype(str) == value
        changed |= match
    return changed


def _with_levies(chunk: _Chunk, plan: _Partition) -> _Chunk:
    """The chunk's training rows, each with its actual levy."""
    levies = chunk.columns[TARGET].astype(float)
    keep = np.isfinite(levies) if plan.inline else np.zeros(len(levies), dtype=bool)
    if plan.labels is not None and len(levies):
        joined = plan.labels.join(chunk.columns["record_id"])
        labelled = joined.offsets >= 0
        # A record with both an inline levy and a label takes the label's: the label is the
        # certified levy, published after the record and for this purpose.
        levies = np.where(labelled, joined.amounts, levies)
        keep |= labelled
        chunk.label_partitions, chunk.label_offsets = joined.partitions, joined.offsets
    chunk.columns = {**chunk.columns, TARGET: levies}
    return chunk.rows(keep)


def _window(totals: _Totals, labels_topic: str | None,
            spans: dict[int, list[LabelSpan]] | None) -> TrainingWindow:
    ranges = totals.ranges + _label_ranges(totals.chunks, labels_topic, spans)
    joined = sum(int((chunk.label_offsets >= 0).sum()) for chunk in totals.chunks)
    frame, record_offsets, record_times = _ordered_frame(totals.chunks)
    rows = sum(len(chunk.offsets) for chunk in totals.chunks)
    mix = None
    if totals.mixes:  # each partition's whole windows, summed
        windows = set().union(*(inside for _, inside in totals.mixes))
        mix = (merge_counts(counts for counts, _ in totals.mixes), len(windows))
    return TrainingWindow(frame, ranges, totals.scanned, totals.refused, labels_topic, joined,
                          totals.scanned_labels, totals.refused_labels,
                          record_offsets=record_offsets, record_times=record_times,
                          duplicate_records=rows - len(frame), mix=mix)


def _label_ranges(chunks: list[_Chunk], labels_topic: str | None,
                  spans: dict[int, list[LabelSpan]] | None) -> list[dict[str, int | str]]:
    """Per labels partition with a joined label: the first label joined to the span's end
    (the last label the window could have used)."""
    if labels_topic is None or spans is None or not chunks:
        return []
    partitions = np.concatenate([chunk.label_partitions for chunk in chunks])
    offsets = np.concatenate([chunk.label_offsets for chunk in chunks])
    ends = {span.partition: span.end for group in spans.values() for span in group}
    return [{"topic": labels_topic, "partition": int(partition),
             "first_offset": int(offsets[partitions == partition].min()),
             "last_offset": ends[int(partition)]}
            for partition in np.unique(partitions[partitions >= 0])]


def _concat(chunks: list[_Chunk]) -> _Chunk:
    return _Chunk(np.concatenate([c.offsets for c in chunks]),
                  np.concatenate([c.timestamps for c in chunks]),
                  {k: np.concatenate([c.columns[k] for c in chunks]) for k in chunks[0].columns},
                  np.concatenate([c.label_partitions for c in chunks]),
                  np.concatenate([c.label_offsets for c in chunks]),
                  np.concatenate([c.partitions for c in chunks]))


def _ordered_frame(chunks: list[_Chunk]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """All partitions' rows as one model frame, oldest to newest by record timestamp, each
    row's (records partition, offset), and its timestamp. A record sent again (a producer's
    retry, a county uploading its slice twice) is one row, its newest: twice, it could be
    trained on and held out at once, and the candidate judged on what it learnt."""
    if not chunks:
        return (to_model_frame({k: [] for k in _empty_columns()}, include_target=True),
                np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    merged = _concat(chunks)
    order = newest_of_each(merged.columns["record_id"],
                           np.argsort(merged.timestamps, kind="stable"))
    frame = to_model_frame({k: v[order] for k, v in merged.columns.items()},
                           include_target=True)
    return (frame, np.column_stack([merged.partitions[order], merged.offsets[order]]),
            merged.timestamps[order])


def event_time_order(event_times: Any, rows: int) -> np.ndarray:
    """Row indices oldest to newest by event time (RFC 3339 text, datetime64 or ms; rows
    without one first), the given order where times are equal; that order without times."""
    if event_times is None:
        return np.arange(rows)
    return np.argsort(event_times_ms(event_times), kind="stable")


def newest_of_each(record_ids: Any, order: np.ndarray) -> np.ndarray:
    """``order`` (row indices, oldest first) keeping only the last row of each record id
    (rows without one all stay); ``order`` itself without ids."""
    if record_ids is None:
        return order
    ids = pd.Series(np.asarray(record_ids, dtype=object)[order])
    again = ids.notna().to_numpy() & ids.duplicated(keep="last").to_numpy()
    return order[~again]


def _empty_columns() -> dict[str, np.ndarray]:
    return levy_records_to_columns([])
