"""Notifications of the batch path: drift, promotion, rejection, rollback, failure.

The services alert through Prometheus and Alertmanager (deploy/); the batch job
(``levydrift daily``, the scheduled workflow) has no long-running process to scrape, so it
notifies directly through the channels a user configures in ``[notify]``:

- ``webhook_urls``: a JSON ``POST`` of the notification (chat bridges, incident tools, a
  serverless function);
- ``alertmanager_url``: the notification as an alert pushed to Alertmanager's
  ``/api/v2/alerts``, so it follows the same routes as the services' alerts;
- ``github_issue``: one open issue per model, opened by the first notification and commented
  on by later ones (needs ``GITHUB_TOKEN`` and ``GITHUB_REPOSITORY``; ``GITHUB_API_URL``, set
  by GitHub Actions, points at GitHub Enterprise or a test server).

Adding a channel: a class with a ``name`` and ``send(notification) -> str`` (where it went,
for the log), built in ``channels_from``. A channel that fails does not stop the others; the
command fails after trying them all.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson

from levydrift.errors import ConfigError, LevyDriftError

SEVERITY = {"drift": "warning", "promoted": "info", "rejected": "warning",
            "rolled_back": "warning", "failed": "critical"}


class NotificationError(LevyDriftError):
    """One or more channels could not deliver (the message names each)."""


@dataclass(frozen=True)
class NotifySection:
    """The ``[notify]`` table (``LEVYDRIFT_NOTIFY_*``): where the batch job sends alerts."""

    webhook_urls: list[str] = field(default_factory=list)
    alertmanager_url: str = ""
    github_issue: bool = False
    github_labels: list[str] = field(default_factory=lambda: ["levydrift"])
    timeout_s: float = 10.0

    def validate(self) -> None:
        for url in [*self.webhook_urls, *([self.alertmanager_url] if self.alertmanager_url
                                          else [])]:
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise ConfigError(f"notify: {_redact(url)!r} is not an http(s) URL")
        if self.timeout_s <= 0:
            raise ConfigError("notify.timeout_s must be > 0")


@dataclass(frozen=True)
class Notification:
    """What happened, for people (title, markdown text) and for machines (details)."""

    kind: str  # drift | promoted | rejected | rolled_back | failed
    model: str
    title: str
    text: str
    report_url: str = ""
    run_url: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.kind, "warning")

    def as_json(self) -> dict[str, Any]:
        return {"source": "levydrift", "kind": self.kind, "severity": self.severity,
                "model": self.model, "title": self.title, "text": self.text,
                "report_url": self.report_url, "run_url": self.run_url,
                "details": dict(self.details)}


class Channel(Protocol):
    """Somewhere a notification goes."""

    name: str

    def send(self, notification: Notification) -> str:
        """Deliver, or raise ``NotificationError``; returns where it went."""


class WebhookChannel:
    """``POST`` the notification as JSON (``Notification.as_json``)."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def send(self, notification: Notification) -> str:
        _request("POST", self.url, notification.as_json(), {}, self.timeout_s)
        return _redact(self.url)


class AlertmanagerChannel:
    """Push the notification as one alert to Alertmanager (API v2), resolving itself after
    ``resolve_after``: a batch outcome is an event, not a condition that stays true."""

    name = "alertmanager"

    def __init__(self, base_url: str, timeout_s: float = 10.0,
                 resolve_after: timedelta = timedelta(hours=1)) -> None:
        self.url = base_url.rstrip("/") + "/api/v2/alerts"
        self.timeout_s = timeout_s
        self.resolve_after = resolve_after

    def send(self, notification: Notification) -> str:
        now = datetime.now(UTC)
        alert = {
            "labels": {"alertname": "LevyBatch" + notification.kind.title().replace("_", ""),
                       "model": notification.model, "kind": notification.kind,
                       "severity": notification.severity, "service": "levydrift-batch"},
            "annotations": {"summary": notification.title,
                            "description": notification.text[:4000],
                            "report_url": notification.report_url},
            "startsAt": _rfc3339(now), "endsAt": _rfc3339(now + self.resolve_after),
        }
        if notification.run_url:
            alert["generatorURL"] = notification.run_url
        _request("POST", self.url, [alert], {}, self.timeout_s)
        return _redact(self.url)


class GitHubIssueChannel:
    """One open issue per model (found by its title and label): opened by the first
    notification, commented on by the next ones until someone closes it."""

    name = "github-issue"

    def __init__(self, repository: str, token: str, api_url: str = "https://api.github.com",
                 labels: Sequence[str] = ("levydrift",), timeout_s: float = 10.0) -> None:
        if repository.count("/") != 1 or not token:
            raise ConfigError("notify.github_issue needs GITHUB_REPOSITORY (owner/name) and "
                              "GITHUB_TOKEN in the environment")
        self.base = f"{api_url.rstrip('/')}/repos/{repository}"
        self.headers = {"Authorization": f"Bearer {token}",
                        "Accept": "application/vnd.github+json",
                        "X-GitHub-Api-Version": "2022-11-28"}
        self.labels = list(labels)
        self.timeout_s = timeout_s

    def issue_title(self, model: str) -> str:
        return f"levydrift: {model} (batch drift check)"

    def send(self, notification: Notification) -> str:
        title = self.issue_title(notification.model)
        body = f"### {notification.title}\n\n{notification.text}"
        query = urllib.parse.urlencode({"state": "open", "labels": ",".join(self.labels),
                                        "per_page": 100})
        issues = _request("GET", f"{self.base}/issues?{query}", None, self.headers,
                          self.timeout_s)
        existing = next((issue for issue in issues or [] if issue.get("title") == title
                         and "pull_request" not in issue), None)
        if existing is None:
            created = _request("POST", f"{self.base}/issues",
                               {"title": title, "body": body, "labels": self.labels},
                               self.headers, self.timeout_s)
            return str(created.get("html_url", f"issue #{created.get('number')}"))
        comment = _request("POST", f"{self.base}/issues/{existing['number']}/comments",
                           {"body": body}, self.headers, self.timeout_s)
        return str(comment.get("html_url", f"issue #{existing['number']}"))


def channels_from(section: NotifySection,
                  environ: Mapping[str, str] | None = None) -> list[Channel]:
    """The configured channels (tokens come from the environment, never from a file)."""
    environ = os.environ if environ is None else environ
    channels: list[Channel] = [WebhookChannel(url, section.timeout_s)
                               for url in section.webhook_urls]
    if section.alertmanager_url:
        channels.append(AlertmanagerChannel(section.alertmanager_url, section.timeout_s))
    if section.github_issue:
        channels.append(GitHubIssueChannel(
            environ.get("GITHUB_REPOSITORY", ""), environ.get("GITHUB_TOKEN", ""),
            environ.get("GITHUB_API_URL") or "https://api.github.com", section.github_labels,
            section.timeout_s))
    return channels


def send_all(channels: Sequence[Channel], notification: Notification) -> list[str]:
    """Send through every channel; lines saying where each went. Raises
    ``NotificationError`` naming every channel that failed, after trying them all."""
    delivered, failures = [], []
    for channel in channels:
        try:
            delivered.append(f"{channel.name}: {channel.send(notification)}")
        except LevyDriftError as error:
            failures.append(f"{channel.name}: {error}")
    if failures:
        raise NotificationError("notification not delivered by " + "; ".join(failures))
    return delivered


def _request(method: str, url: str, payload: Any, headers: Mapping[str, str],
             timeout_s: float) -> Any:
    data = None if payload is None else orjson.dumps(payload)
    request = urllib.request.Request(url, data=data, method=method, headers={
        "User-Agent": "levydrift", **({"Content-Type": "application/json"} if data else {}),
        **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as error:
        raise NotificationError(f"{method} {_redact(url)} answered HTTP {error.code} "
                                f"{error.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise NotificationError(f"{method} {_redact(url)} failed: {reason}") from None
    return orjson.loads(body) if body.strip() else None


def _redact(url: str) -> str:
    """Scheme and host only: webhook URLs carry their secret in the path (chat webhooks),
    the query or the user part."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…" if parts.path.strip("/") else \
        f"{parts.scheme}://{host}{port}"


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
