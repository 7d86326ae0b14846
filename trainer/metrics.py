"""Prometheus metrics of the retraining worker: the contract alerts and the dashboard rely on.

Referenced by deploy/prometheus/alerts.yml (retrain failed, model stale) and the Grafana
dashboard; tests/deploy/test_dashboard.py checks the dashboard only uses names defined here or in
consumer/metrics.py. A private ``REGISTRY`` keeps the exported series to exactly these.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from levydrift.metrics_http import serve_metrics

REGISTRY = CollectorRegistry(auto_describe=True)

# A retrain fits on a window of records and evaluates a challenger: seconds to many minutes.
_RETRAIN_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)

RETRAINS = Counter(
    "levydrift_trainer_retrains", "Retrain attempts, by outcome (promoted, rejected, failed).",
    ["outcome"], registry=REGISTRY)
RETRAIN_DURATION = Histogram(
    "levydrift_trainer_retrain_duration_seconds", "Wall time of one retrain attempt.",
    buckets=_RETRAIN_BUCKETS, registry=REGISTRY)
TRAINING_RECORDS = Gauge(
    "levydrift_trainer_training_records", "Records used by the last retrain attempt.",
    registry=REGISTRY)
CHAMPION_VERSION = Gauge(
    "levydrift_trainer_champion_version", "Version of the current champion in the registry.",
    ["model"], registry=REGISTRY)
LAST_PROMOTION = Gauge(
    "levydrift_trainer_last_promotion_timestamp_seconds",
    "Unix time the current champion was promoted; the model-stale alert watches it.",
    ["model"], registry=REGISTRY)
DRIFT_EVENTS_CONSUMED = Counter(
    "levydrift_trainer_drift_events_consumed", "Drift events read by the trainer.",
    registry=REGISTRY)

RETRAIN_OUTCOMES = ("promoted", "rejected", "failed")
# Pre-created so "retrain failed" can use increase() from the first failure on.
for _outcome in RETRAIN_OUTCOMES:
    RETRAINS.labels(outcome=_outcome)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> bool:
    """Serve ``REGISTRY`` on http://host:port/metrics in a daemon thread; port 0 disables it.

    Returns whether a server was started.
    """
    return serve_metrics(REGISTRY, port, host)
