"""The demo's waits: on a condition, saying what for and how long so far, up to a limit."""

from __future__ import annotations

import time

import pytest

from levydrift.commands import demo, demo_narrator
from levydrift.commands.demo_narrator import DemoFailed, Narrator


def test_a_wait_shows_what_it_waits_for_and_returns_when_it_happens(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo_narrator, "PROGRESS_EVERY_S", 0.2)
    narrator = Narrator()
    narrator.tty = False
    ready_at = time.monotonic() + 1.5
    result = narrator.wait("version 2", lambda: time.monotonic() >= ready_at and "v2", 60,
                           lambda: "trainer: fitting a candidate")
    assert result == "v2"
    lines = capsys.readouterr().out.splitlines()
    assert lines, "no progress shown while waiting"
    for line in lines:
        assert "... waiting for version 2: " in line
        assert "s so far (up to 60s); trainer: fitting a candidate" in line


def test_a_step_that_never_happens_fails_naming_it_and_the_option(
        capsys: pytest.CaptureFixture[str]) -> None:
    narrator = Narrator()
    started = time.monotonic()
    with pytest.raises(DemoFailed) as raised:
        narrator.wait("the consumer to score 16,000 records", lambda: False, 0.5)
    assert time.monotonic() - started < 5
    assert str(raised.value) == ("the consumer to score 16,000 records did not happen within "
                                 "0.5s (the step timeout; raise it with --step-timeout)")


def test_the_default_step_timeout_is_generous() -> None:
    # A loaded 2-core machine took 55 s for one retrain; the limit is for hangs, not for speed.
    assert demo.DEFAULT_STEP_TIMEOUT_S >= 300
