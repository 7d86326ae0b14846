"""Fixtures of the consumer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.consumer.harness import kill_leftovers


@pytest.fixture(autouse=True)
def no_consumer_outlives_its_test() -> Iterator[None]:
    """A consumer still running when its test ends (it failed) is killed: left running, it
    would fence the next test's instance of the same instance id."""
    yield
    kill_leftovers()
