"""Fixtures of the consumer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.consumer.harness import ConsumerRun


@pytest.fixture
def consumers() -> Iterator[list[ConsumerRun]]:
    """The consumers a test starts; any still running when it ends (it failed) is killed."""
    runs: list[ConsumerRun] = []
    yield runs
    for run in runs:
        if run.alive():
            run.kill()
