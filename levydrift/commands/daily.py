"""``levydrift daily`` and ``levydrift notify``: the scheduled batch job, as the workflow
(.github/workflows/auto_retraining.yml) runs it, so the same commands run locally and in tests.

``daily`` checks one source (a file path, an http(s) URL, or ``topic:[NAME]`` for the last
window of the records topic) against the champion, retrains drift no version has handled yet,
and writes into ``--out``:

- ``report/index.html`` + ``report/summary.json``: the drift report;
- ``outcome.json``: what happened (no_drift, drift_handled, drift, promoted, rejected, failed,
  rolled_back), whether to alert, the gate metrics and, when the champion changed, the files to
  commit and the commit message;
- ``commit-paths.txt`` / ``commit-message.txt``: empty unless the champion changed (a promotion
  or a rollback). A rejected candidate is never among them: it changes nothing that serves;
- ``summary.md``: the same in markdown, for the workflow's step summary.

``notify`` sends the outcome through the ``[notify]`` channels
(``levydrift.commands.notify``), with the report's URL; an outcome that is missing (the job
crashed) is itself notified.
"""

from __future__ import annotations

import argparse
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from levydrift import settings as settings_module
from levydrift.commands.check import check_columns, check_file
from levydrift.commands.check_result import CheckResult, CheckSettings, effect_text
from levydrift.commands.notify import Notification, NotifySection, channels_from, send_all
from levydrift.commands.retraining import retrain_once
from levydrift.commands.schedule import read_topic_window, topic_window
from levydrift.errors import TrainingError, UsageError
from levydrift.logs import configure as configure_logging
from levydrift.paths import ensure_writable_dir
from trainer.registry import (
    ALIAS_HISTORY_NAME,
    ALIASES_NAME,
    TRAINING_HISTORY_NAME,
    ModelRegistry,
)

OUTCOME_NAME = "outcome.json"
ALERTING = {"drift", "promoted", "rejected", "failed", "rolled_back"}
DOWNLOAD_LIMIT_BYTES = 2 << 30


@dataclass(frozen=True)
class DailySettings(CheckSettings):
    notify: NotifySection = field(default_factory=NotifySection)


def load_daily_settings(path: str | None) -> DailySettings:
    return settings_module.load(DailySettings, path)


# ---------------------------------------------------------------------- the data source

def check_source(source: str, settings: CheckSettings, work_dir: Path, model: str,
                 registry: str, window_records: int) -> CheckResult:
    """Check ``source``: a file path, an http(s) URL (downloaded into ``work_dir``), or
    ``topic:`` / ``topic:NAME`` (the last ``window_records`` records of the topic)."""
    if source.startswith(("http://", "https://")):
        return check_file(download(source, work_dir / "data", settings.kafka.request_timeout_s),
                          settings, model=model, registry=registry, note=print)
    if source == "topic" or source.startswith("topic:"):
        topic = source.partition(":")[2] or settings.topics.records
        columns = read_topic_window(settings, topic, window_records)
        return check_columns(columns, settings,
                             f"{topic} (last {len(columns['record_id']):,} records)",
                             topic_window(topic, columns), model=model, registry=registry,
                             note=print)
    if "://" in source:
        raise UsageError(f"--source {urllib.parse.urlsplit(source).scheme}://…: only http(s) "
                         "URLs, file paths and topic:[NAME] are sources")
    return check_file(Path(source), settings, model=model, registry=registry, note=print)


def download(url: str, directory: Path, timeout_s: float) -> Path:
    """Fetch ``url`` into ``directory`` under its own file name (the suffix says the format).
    The URL is a secret (it may carry a token): messages name only its host."""
    name = Path(urllib.parse.urlsplit(url).path).name
    host = urllib.parse.urlsplit(url).hostname
    if Path(name).suffix.lower() not in (".csv", ".parquet", ".jsonl", ".ndjson"):
        raise UsageError(f"data URL on {host}: the path must end in .csv, .parquet or .jsonl")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    try:
        with urllib.request.urlopen(url, timeout=timeout_s * 6) as response, \
                target.open("wb") as handle:  # noqa: S310 - http(s) only, checked above
            copied = 0
            while block := response.read(1 << 20):
                copied += len(block)
                if copied > DOWNLOAD_LIMIT_BYTES:
                    raise UsageError(f"data URL on {host}: larger than "
                                     f"{DOWNLOAD_LIMIT_BYTES >> 30} GiB")
                handle.write(block)
    except urllib.error.HTTPError as error:
        raise UsageError(f"data URL on {host} answered HTTP {error.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise UsageError(f"data URL on {host} cannot be read: "
                         f"{getattr(error, 'reason', error)}") from None
    return target


# ---------------------------------------------------------------------- one run

def run_daily(source: str, out_dir: Path, settings: CheckSettings, model: str,
              registry_root: str, window_records: int = 50_000,
              retrain: bool = True) -> dict[str, Any]:
    """Check, retrain unhandled drift, write the report and the outcome files."""
    from levydrift.commands.report import write_report  # lazy: matplotlib
    registry = ModelRegistry(registry_root)
    before = registry.champion(model)
    result = check_source(source, settings, out_dir, model, registry_root, window_records)
    html, summary_path = write_report(result, out_dir / "report")
    outcome: dict[str, Any] = {
        "model": model, "source": result.source, "rows": result.rows,
        "reference": result.reference, "drift": result.drifted,
        "signals": result.drifted_signals(), "findings": _findings(result),
        "report_html": str(html), "report_json": str(summary_path),
        "champion_before": before}
    if not result.drifted:
        outcome["outcome"] = "no_drift"
    elif not retrain:
        outcome["outcome"] = "drift"
    else:
        outcome.update(_retrain(result, settings, registry_root))
    outcome["champion_after"] = registry.champion(model)
    return finish(outcome, registry, out_dir)


def _retrain(result: CheckResult, settings: CheckSettings, registry_root: str
             ) -> dict[str, Any]:
    try:
        retrained = retrain_once(result, settings, registry_root)
    except TrainingError as error:
        return {"outcome": "failed", "error": str(error)}
    if retrained.action == "handled":
        return {"outcome": "drift_handled", "handled_by": retrained.handled_by,
                "retraining": retrained.line}
    info = retrained.version
    return {"outcome": info.manifest["status"], "version": info.version,
            "gate": info.metrics.get("gate", {}), "candidate_metrics": info.metrics["candidate"],
            "champion_metrics": info.metrics.get("champion"),
            "gated_against": info.metrics.get("champion_version"),
            "drift_event_ids": info.lineage.get("drift_event_ids", []),
            "retraining": retrained.line}


def run_rollback(out_dir: Path, model: str, registry_root: str, reason: str
                 ) -> dict[str, Any]:
    """Move the champion one step back (a manual run of the workflow)."""
    registry = ModelRegistry(registry_root)
    restored, replaced = registry.rollback(model, reason)
    return finish({"model": model, "outcome": "rolled_back", "champion_before": replaced,
                   "champion_after": restored, "reason": reason, "signals": [],
                   "findings": []}, registry, out_dir)


def finish(outcome: dict[str, Any], registry: Any, out_dir: Path) -> dict[str, Any]:
    """Add the alert flag and, when the champion changed, what to commit; write the files."""
    changed = outcome["champion_after"] != outcome["champion_before"]
    outcome["alert"] = outcome["outcome"] in ALERTING
    outcome["champion_changed"] = changed
    outcome["commit_paths"] = _commit_paths(registry, outcome) if changed else []
    outcome["commit_message"] = commit_message(outcome) if changed else ""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / OUTCOME_NAME).write_bytes(orjson.dumps(
        outcome, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    (out_dir / "commit-paths.txt").write_text("".join(f"{p}\n" for p in outcome["commit_paths"]))
    (out_dir / "commit-message.txt").write_text(outcome["commit_message"])
    (out_dir / "summary.md").write_text(markdown(outcome))
    return outcome


def _commit_paths(registry: Any, outcome: dict[str, Any]) -> list[str]:
    """The files that make the new champion: its version directory (promotion only) and the
    model's aliases and histories. Relative to the working directory (the repository)."""
    model_dir = registry.model_dir(outcome["model"])
    paths = [model_dir / ALIASES_NAME, model_dir / ALIAS_HISTORY_NAME]
    if outcome["outcome"] == "promoted":
        paths = [registry.version_dir(outcome["model"], outcome["version"]), *paths,
                 model_dir / TRAINING_HISTORY_NAME]
    return [os.path.relpath(path) for path in paths if path.exists()]


def _findings(result: CheckResult) -> list[dict[str, Any]]:
    return [{"signal": finding.signal, "kind": decision.kind,
             "detected_at_row": decision.detected_at + 1, "effect": effect_text(finding)}
            for decision, finding in result.findings()]


# ---------------------------------------------------------------------- words

def headline(outcome: dict[str, Any]) -> str:
    model, kind = outcome["model"], outcome["outcome"]
    signals = ", ".join(outcome.get("signals", [])) or "no signal"
    if kind == "promoted":
        return f"{model} v{outcome['version']} promoted after drift in {signals}"
    if kind == "rejected":
        return (f"{model} v{outcome['version']} rejected by the gate (drift in {signals}; "
                f"v{outcome['champion_after']} stays champion)")
    if kind == "rolled_back":
        return (f"{model} rolled back to v{outcome['champion_after']} "
                f"(was v{outcome['champion_before']})")
    if kind == "failed":
        return f"retraining {model} failed after drift in {signals}"
    if kind == "drift":
        return f"drift in {signals} ({model}; not retrained)"
    if kind == "drift_handled":
        return f"drift in {signals} already handled ({model}; nothing retrained)"
    return f"no drift ({model})"


def markdown(outcome: dict[str, Any], report_url: str = "", run_url: str = "") -> str:
    lines = [f"**{headline(outcome)}**", ""]
    if outcome.get("source"):
        lines.append(f"- data: `{outcome['source']}` ({outcome['rows']:,} rows)")
        lines.append(f"- reference: {outcome['reference']}")
    for finding in outcome.get("findings", []):
        lines.append(f"- {finding['kind']} drift in `{finding['signal']}` at row "
                     f"{finding['detected_at_row']:,}: {finding['effect']}")
    if outcome.get("gate"):
        lines.append(f"- gate: {outcome['gate'].get('decision')}: {outcome['gate'].get('reason')}")
        lines.append(f"- candidate v{outcome['version']}: {_metrics(outcome['candidate_metrics'])}")
        if outcome.get("champion_metrics"):
            lines.append(f"- champion v{outcome['gated_against']}: "
                         f"{_metrics(outcome['champion_metrics'])}")
    for key in ("retraining", "error", "reason"):
        if outcome.get(key) and not (key == "retraining" and outcome.get("gate")):
            lines.append(f"- {key}: {outcome[key]}")
    if outcome.get("champion_changed"):
        lines.append(f"- champion: {_version(outcome['champion_before'])} → "
                     f"{_version(outcome['champion_after'])}")
    if report_url:
        lines.append(f"- report: {report_url}")
    if run_url:
        lines.append(f"- run: {run_url}")
    return "\n".join(lines) + "\n"


def commit_message(outcome: dict[str, Any]) -> str:
    """Subject: what changed; body: why (the signals and the gate's metrics)."""
    body = markdown(outcome).split("\n", 2)[2]
    events = outcome.get("drift_event_ids") or []
    if events:
        body += "- drift events: " + ", ".join(events) + "\n"
    return f"models: {headline(outcome)}\n\n{body}"


def _version(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


def _metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name.upper() if name != 'r2' else 'R²'} {value:.4g}"
                     for name, value in metrics.items())


# ---------------------------------------------------------------------- notify

def notification_for(outcome: dict[str, Any] | None, report_url: str, run_url: str,
                     model: str) -> Notification | None:
    """The notification of an outcome (None when there is nothing to tell); a missing
    outcome means the job failed before writing one."""
    if outcome is None:
        return Notification("failed", model, f"the daily drift job for {model} failed",
                            "The job stopped before writing its outcome; see the run's log.",
                            report_url, run_url)
    if not outcome.get("alert"):
        return None
    return Notification(outcome["outcome"], outcome["model"], headline(outcome),
                        markdown(outcome, report_url, run_url), report_url, run_url,
                        {key: value for key, value in outcome.items()
                         if key not in ("commit_message",)})


# ---------------------------------------------------------------------- command line

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    daily = subparsers.add_parser(
        "daily", help="the scheduled batch job: check, retrain unhandled drift, outcome files",
        description="Check a source against the champion, retrain drift no version has "
                    "handled yet, write the report and outcome files into --out (what the "
                    "scheduled workflow runs). Exit 0 whatever the drift; 2/3 on errors.")
    daily.add_argument("--source", required=True, metavar="SOURCE",
                       help="a levy records file (.csv, .parquet, .jsonl), an http(s) URL of "
                            "one, or topic:[NAME] for the last --window-records records of "
                            "the records topic")
    daily.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="where the report and the outcome files go")
    daily.add_argument("--window-records", type=int, default=50_000, metavar="N",
                       help="records read from the topic (default 50000)")
    daily.add_argument("--check-only", action="store_true",
                       help="report and alert drift, but do not retrain")
    daily.add_argument("--rollback", metavar="REASON",
                       help="instead of checking, move the champion one version back")
    daily.add_argument("--model", help="model name (default: trainer.model_name)")
    daily.add_argument("--registry", metavar="DIR",
                       help="registry root (default: registry.root)")
    daily.set_defaults(handler=_run_daily)

    notify = subparsers.add_parser(
        "notify", help="send a daily outcome through the configured [notify] channels",
        description="Send the outcome written by levydrift daily (drift, promotion, "
                    "rejection, rollback, failure) through the [notify] channels: webhooks, "
                    "Alertmanager, a GitHub issue. A missing outcome is notified as a failed "
                    "job. Exit 0 when delivered or nothing to tell, 2 when a channel failed.")
    notify.add_argument("--outcome", required=True, type=Path, metavar="FILE",
                        help="the outcome.json of levydrift daily")
    notify.add_argument("--report-url", default="", metavar="URL",
                        help="where people can open the report (the workflow's artifact)")
    notify.add_argument("--run-url", default="", metavar="URL", help="the job's run page")
    notify.add_argument("--model", help="model name (default: trainer.model_name)")
    notify.set_defaults(handler=_run_notify)


def _run_daily(arguments: argparse.Namespace) -> int:
    if arguments.window_records < 1:
        raise UsageError("--window-records must be >= 1")
    try:
        ensure_writable_dir(arguments.out)
    except OSError as error:
        raise UsageError(f"--out {arguments.out} cannot be used: "
                         f"{error.strerror or error}") from None
    # An outcome left from an earlier run must not be notified as this one's.
    (arguments.out / OUTCOME_NAME).unlink(missing_ok=True)
    settings = load_daily_settings(arguments.config)
    configure_logging(settings.logging.level)
    model = arguments.model or settings.trainer.model_name
    registry = arguments.registry or settings.registry.root
    if arguments.rollback:
        outcome = run_rollback(arguments.out, model, registry, arguments.rollback)
    else:
        outcome = run_daily(arguments.source, arguments.out, settings, model, registry,
                            arguments.window_records, retrain=not arguments.check_only)
    print(markdown(outcome), end="")
    print(f"outcome: {arguments.out / OUTCOME_NAME}")
    return 0


def _run_notify(arguments: argparse.Namespace) -> int:
    settings = load_daily_settings(arguments.config)
    configure_logging(settings.logging.level)
    try:
        outcome = orjson.loads(arguments.outcome.read_bytes())
    except FileNotFoundError:
        outcome = None
    except (OSError, orjson.JSONDecodeError) as error:
        raise UsageError(f"{arguments.outcome}: cannot be read: {error}") from None
    notification = notification_for(outcome, arguments.report_url, arguments.run_url,
                                     arguments.model or settings.trainer.model_name)
    if notification is None:
        print(f"nothing to notify ({outcome['outcome']})")
        return 0
    channels = channels_from(settings.notify)
    if not channels:
        print(f"no [notify] channel configured; not sent: {notification.title}")
        return 0
    for line in send_all(channels, notification):
        print(f"notified {line}")
    return 0

