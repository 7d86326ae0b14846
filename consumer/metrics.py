"""Prometheus metrics of the drift consumer: the contract alerts and the dashboard rely on.

The names here are referenced by deploy/prometheus/alerts.yml and
deploy/grafana/dashboards/levy-drift.json (tests/deploy/test_dashboard.py checks that); renaming one
means changing those files too. Labels are bounded sets (outcomes, reasons, signal and detector
names, topic/partition): never a parcel id or record id, which would explode the series count.

Everything lives in a private ``REGISTRY`` rather than prometheus_client's global one, so the
consumer exports exactly these series and tests can read them without cross-talk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

from levydrift.metrics_http import serve_metrics

if TYPE_CHECKING:
    import numpy as np

REGISTRY = CollectorRegistry(auto_describe=True)

# Batches are small (hundreds of records); restores can take tens of seconds on a cold start.
_BATCH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RESTORE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

RECORDS = Counter(
    "levydrift_consumer_records", "Records consumed, by outcome (valid or dead_lettered).",
    ["outcome"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "levydrift_consumer_dead_letters", "Records sent to the dead-letter topic, by reason.",
    ["reason"], registry=REGISTRY)
DEAD_LETTERS_INCOMPLETE = Counter(
    "levydrift_consumer_dead_letters_incomplete",
    "Dead letters that are not a whole copy of the refused record, by form: truncated (a "
    "bounded copy of an oversized record), pointer (headers only: Kafka refused the copy), "
    "dropped (Kafka refused even that; the log names the source offset).",
    ["form"], registry=REGISTRY)
LAG = Gauge(
    "levydrift_consumer_lag_records",
    "Records between the committed offset and the end of the partition.",
    ["topic", "partition"], registry=REGISTRY)
LAG_TIMESTAMP = Gauge(
    "levydrift_consumer_lag_timestamp_seconds",
    "Unix time the lag was last measured; it stops advancing while the brokers do not answer, "
    "and the lag is then stale.", registry=REGISTRY)
BATCH_DURATION = Histogram(
    "levydrift_consumer_batch_duration_seconds", "Time to process one consumed batch.",
    buckets=_BATCH_BUCKETS, registry=REGISTRY)
LAST_BATCH = Gauge(
    "levydrift_consumer_last_batch_timestamp_seconds",
    "Unix time of the last batch processed; the stall alert watches it.", registry=REGISTRY)
DRIFT_EVENTS = Counter(
    "levydrift_drift_events", "Drift events emitted, by kind (e.g. warning, drift) and signal.",
    ["kind", "signal"], registry=REGISTRY)
DETECTOR_STATISTIC = Gauge(
    "levydrift_detector_statistic", "Current test statistic of a detector on a signal.",
    ["signal", "detector"], registry=REGISTRY)
DETECTOR_THRESHOLD = Gauge(
    "levydrift_detector_threshold", "Threshold above which the detector reports drift.",
    ["signal", "detector"], registry=REGISTRY)
CHAMPION_VERSION = Gauge(
    "levydrift_consumer_champion_version",
    "Model version the consumer is scoring with (0: none passes, it scores without a model).",
    ["model"], registry=REGISTRY)
TRANSACTIONS = Counter(
    "levydrift_consumer_transactions", "Kafka transactions, by outcome (committed or aborted).",
    ["outcome"], registry=REGISTRY)
PRODUCER_RESETS = Counter(
    "levydrift_consumer_producer_resets",
    "Transactional producers replaced after Kafka was unreachable mid-transaction.",
    registry=REGISTRY)
OWN_FENCE_RESTARTS = Counter(
    "levydrift_consumer_own_fence_restarts",
    "Times the service started afresh from its last checkpoint after the group fenced it by "
    "its own rejoin (after losing its assignment).", registry=REGISTRY)


REBALANCES = Counter(
    "levydrift_consumer_rebalances", "Consumer group rebalance callbacks, by kind.",
    ["kind"], registry=REGISTRY)
STATE_RESTORE_DURATION = Histogram(
    "levydrift_consumer_state_restore_duration_seconds",
    "Time to restore detector state after a partition assignment.",
    buckets=_RESTORE_BUCKETS, registry=REGISTRY)
STATE_RESTORE_FAILURES = Counter(
    "levydrift_consumer_state_restore_failures",
    "Detector snapshots refused on restore (the partition started fresh detectors), by reason.",
    ["reason"], registry=REGISTRY)
MODEL_LOAD_FAILURES = Counter(
    "levydrift_consumer_model_load_failures",
    "Model versions refused (or dropped after failing to predict) and unreadable model-version "
    "events, by reason.", ["reason"], registry=REGISTRY)
PREDICTION_FAILURES = Counter(
    "levydrift_consumer_prediction_failures",
    "Champion predictions that raised or returned non-finite levies; the batch was scored "
    "without a model and the champion replaced.", registry=REGISTRY)
PREDICTION_ABS_ERROR = Gauge(
    "levydrift_consumer_prediction_abs_error",
    "Recent mean absolute prediction error on labelled records.", registry=REGISTRY)

# Late labels (consumer/labels.py). Label lag is event time from prediction to actual levy:
# days to a year and a half.
_LABEL_LAG_BUCKETS = tuple(days * 86_400.0 for days in (1, 7, 30, 60, 90, 180, 270, 365, 548))
LABELS = Counter(
    "levydrift_consumer_labels",
    "Labels (actual levies) taken, by outcome: joined, duplicate, unmatched, expired, "
    "dead_lettered.", ["outcome"], registry=REGISTRY)
LABEL_LAG = Histogram(
    "levydrift_consumer_label_lag_seconds",
    "Event time between a prediction's record and its label, for joined labels.",
    buckets=_LABEL_LAG_BUCKETS, registry=REGISTRY)
LABEL_ABS_ERROR = Summary(
    "levydrift_consumer_label_abs_error",
    "Absolute error of joined labels, by the model version that made the prediction (an older "
    "version's errors are recorded here, not fed to the current champion's detectors).",
    ["model_version"], registry=REGISTRY)
PENDING_PREDICTIONS = Gauge(
    "levydrift_consumer_pending_predictions",
    "Predictions waiting for their label, over the partitions this instance owns.",
    registry=REGISTRY)
PENDING_EXPIRED = Counter(
    "levydrift_consumer_pending_expired",
    "Pending predictions removed without a label after consumer.label_horizon_days.",
    registry=REGISTRY)
QUEUED_LABELS = Gauge(
    "levydrift_consumer_queued_labels",
    "Labels fetched and waiting for their turn (the records' event time to reach theirs).",
    registry=REGISTRY)
LAST_LABEL = Gauge(
    "levydrift_consumer_last_label_timestamp_seconds",
    "Unix time a label was last fetched; the labels-stopped alert watches it.",
    registry=REGISTRY)
JOIN_RESTORE_DURATION = Histogram(
    "levydrift_consumer_join_restore_duration_seconds",
    "Time to bring a partition's pending predictions up to date from the changelog.",
    buckets=_RESTORE_BUCKETS, registry=REGISTRY)

# Label values the code uses; pre-creating them makes rate() and absent-aware alerts see 0
# instead of no series before the first event.
RECORD_OUTCOMES = ("valid", "dead_lettered")
TRANSACTION_OUTCOMES = ("committed", "aborted")
REBALANCE_KINDS = ("assigned", "revoked", "lost", "foreign")
INCOMPLETE_FORMS = ("truncated", "pointer", "dropped")
# Envelope problems (consumer.state) and snapshot problems (detectors.errors.SnapshotError).
STATE_REFUSALS = ("envelope", "version", "foreign", "inconsistent", "magic", "corrupt",
                  "too_large", "header", "shape", "incomplete")
LABEL_OUTCOMES = ("joined", "duplicate", "unmatched", "expired", "dead_lettered")
for _outcome in RECORD_OUTCOMES:
    RECORDS.labels(outcome=_outcome)
for _outcome in LABEL_OUTCOMES:
    LABELS.labels(outcome=_outcome)
for _outcome in TRANSACTION_OUTCOMES:
    TRANSACTIONS.labels(outcome=_outcome)
for _kind in REBALANCE_KINDS:
    REBALANCES.labels(kind=_kind)
for _form in INCOMPLETE_FORMS:
    DEAD_LETTERS_INCOMPLETE.labels(form=_form)
for _reason in STATE_REFUSALS:
    STATE_RESTORE_FAILURES.labels(reason=_reason)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> bool:
    """Serve ``REGISTRY`` on http://host:port/metrics in a daemon thread.

    Port 0 means disabled (not "pick a free port"), matching ``metrics.port`` in the settings.
    Returns whether a server was started.
    """
    return serve_metrics(REGISTRY, port, host)


def observe_transaction(outcome: str) -> None:
    """A transactional output's outcome: "committed", "aborted" or "reset"."""
    if outcome == "reset":
        PRODUCER_RESETS.inc()
    else:
        TRANSACTIONS.labels(outcome=outcome).inc()


def observe_many(metric: Histogram | Summary, values: np.ndarray) -> None:
    """``metric.observe(value)`` for each of ``values`` (a Histogram, or a Summary or its
    labelled child), counted in one pass: a histogram's buckets with ``np.searchsorted`` (an
    ``inc`` per bucket, not per value), a summary's count once. The sum is added once, so its
    last bits may differ from adding the values one by one. prometheus_client has no batch
    observe: this relies on its ``_sum``, ``_count``, ``_buckets`` and ``_upper_bounds``
    (tests/consumer/test_labels.py checks it against ``observe``)."""
    import numpy as np  # lazy: `levydrift consume --help` loads this module

    if not len(values):
        return
    metric._raise_if_not_observable()
    metric._sum.inc(float(np.sum(values)))
    if isinstance(metric, Summary):
        metric._count.inc(len(values))
        return
    bounds = np.array(metric._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(metric._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
