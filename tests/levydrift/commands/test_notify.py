"""The batch path's notification channels, each against a local HTTP server: the webhook's
receiver, and a stand-in for GitHub's REST API at a configurable base URL (as GITHUB_API_URL
points the channel at GitHub Enterprise)."""

from __future__ import annotations

from typing import Any

import pytest

from levydrift import settings as settings_module
from levydrift.commands.daily import DailySettings
from levydrift.commands.notify import (
    GitHubIssueChannel,
    Notification,
    NotificationError,
    NotifySection,
    WebhookChannel,
    channels_from,
    send_all,
)
from levydrift.errors import ConfigError
from tests.http_receiver import Received, http_receiver

PROMOTED = Notification("promoted", "levy-impact", "levy-impact v2 promoted after drift in "
                        "levy_rate", "- gate: promoted", "file:///r/index.html",
                        "https://ci/run/1", {"version": 2})


def test_webhook_posts_the_notification_as_json() -> None:
    with http_receiver() as (url, received):
        where = WebhookChannel(f"{url}/hook/s3cr3t?token=abc").send(PROMOTED)
    assert [r.method for r in received] == ["POST"] and received[0].path.startswith("/hook/")
    body = received[0].body
    assert body["kind"] == "promoted" and body["severity"] == "info"
    assert body["model"] == "levy-impact" and body["details"] == {"version": 2}
    assert body["report_url"] == "file:///r/index.html" and body["run_url"] == "https://ci/run/1"
    assert "s3cr3t" not in where and "abc" not in where  # the secret part is never printed


class FakeGitHub:
    """The three calls the channel makes: list open issues, open one, comment on one."""

    def __init__(self) -> None:
        self.issues: list[dict[str, Any]] = []
        self.comments: list[tuple[int, str]] = []

    def __call__(self, request: Received) -> tuple[int, Any]:
        if request.headers.get("Authorization") != "Bearer t0ken":
            return 401, {"message": "Bad credentials"}
        if request.method == "GET" and request.path.startswith("/api/v3/repos/o/r/issues?"):
            return 200, [i for i in self.issues if i["state"] == "open"]
        if request.method == "POST" and request.path == "/api/v3/repos/o/r/issues":
            number = len(self.issues) + 1
            self.issues.append({"number": number, "state": "open", **request.body,
                                "html_url": f"https://gh/o/r/issues/{number}"})
            return 201, self.issues[-1]
        if request.method == "POST" and request.path.endswith("/comments"):
            number = int(request.path.split("/")[-2])
            self.comments.append((number, request.body["body"]))
            return 201, {"html_url": f"https://gh/o/r/issues/{number}#c{len(self.comments)}"}
        return 404, {"message": "Not Found"}


def test_github_issue_is_opened_once_then_commented_on() -> None:
    github = FakeGitHub()
    with http_receiver(github) as (url, received):
        channels = channels_from(NotifySection(github_issue=True), {
            "GITHUB_REPOSITORY": "o/r", "GITHUB_TOKEN": "t0ken",
            "GITHUB_API_URL": f"{url}/api/v3"})
        assert [type(c) for c in channels] == [GitHubIssueChannel]
        first = send_all(channels, PROMOTED)
        rejected = Notification("rejected", "levy-impact", "levy-impact v3 rejected",
                                "- gate: rejected")
        second = send_all(channels, rejected)
        github.issues[0]["state"] = "closed"  # someone dealt with it: the next one is new
        third = send_all(channels, rejected)
    assert first == ["github-issue: https://gh/o/r/issues/1"]
    assert second == ["github-issue: https://gh/o/r/issues/1#c1"]
    assert third == ["github-issue: https://gh/o/r/issues/2"]
    assert github.issues[0]["title"] == "levydrift: levy-impact (batch drift check)"
    assert github.issues[0]["labels"] == ["levydrift"]
    assert "levy-impact v2 promoted" in github.issues[0]["body"]
    assert github.comments == [(1, "### levy-impact v3 rejected\n\n- gate: rejected")]
    assert received[0].path == "/api/v3/repos/o/r/issues?state=open&labels=levydrift&per_page=100"


def test_a_failing_channel_does_not_stop_the_others() -> None:
    with http_receiver(lambda _: (500, {})) as (broken, _), \
            http_receiver() as (working, received):
        channels = [WebhookChannel(f"{broken}/x"), WebhookChannel(f"{working}/y")]
        with pytest.raises(NotificationError, match=r"webhook: POST http://127\.0\.0\.1:\d+/… "
                                                     r"answered HTTP 500"):
            send_all(channels, PROMOTED)
    assert len(received) == 1  # the second channel was still tried


def test_github_issue_without_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="GITHUB_TOKEN"):
        channels_from(NotifySection(github_issue=True), {"GITHUB_REPOSITORY": "o/r"})


def test_channels_come_from_levydrift_notify_variables() -> None:
    settings = settings_module.load(DailySettings, environ={
        "LEVYDRIFT_NOTIFY_WEBHOOK_URLS": "https://a.example/h1, https://b.example/h2",
        "LEVYDRIFT_NOTIFY_ALERTMANAGER_URL": "http://am:9093",
        "LEVYDRIFT_NOTIFY_GITHUB_ISSUE": "false"})
    assert [c.name for c in channels_from(settings.notify, {})] == [
        "webhook", "webhook", "alertmanager"]
    empty = settings_module.load(DailySettings, environ={  # unset secrets in the workflow
        "LEVYDRIFT_NOTIFY_WEBHOOK_URLS": "", "LEVYDRIFT_NOTIFY_ALERTMANAGER_URL": ""})
    assert channels_from(empty.notify, {}) == []
    with pytest.raises(ConfigError, match="not an http"):
        settings_module.load(DailySettings, environ={
            "LEVYDRIFT_NOTIFY_WEBHOOK_URLS": "ftp://x.example/h"})
