"""``LayoutWatch``: partition counts observed over time; a check that keeps failing for the
grace period becomes the problem the consumer ends on, a passing observation clears it."""

from __future__ import annotations

from consumer.labels import check_co_partitioned
from consumer.lag import LayoutWatch
from levydrift.errors import TopicLayoutError

TOPICS = ["rec", "labels", "changelog"]
EVEN = {"rec": 2, "labels": 2, "changelog": 2}


def watch() -> LayoutWatch:
    return LayoutWatch(TOPICS, lambda counts: check_co_partitioned(counts, *TOPICS),
                       grace_s=30.0)


def test_a_layout_that_passes_is_no_problem() -> None:
    layout = watch()
    for now in range(0, 300, 5):
        layout.observe(EVEN, float(now))
    assert layout.problem is None


def test_a_failure_that_lasts_the_grace_period_is_the_problem() -> None:
    layout = watch()
    layout.observe(EVEN, 0.0)
    for now in (5.0, 20.0, 34.0):
        layout.observe({**EVEN, "labels": 3}, now)
        assert layout.problem is None
    layout.observe({**EVEN, "labels": 3}, 35.0)
    assert isinstance(layout.problem, TopicLayoutError)
    assert "labels has 3 partitions and rec has 2" in str(layout.problem)


def test_topics_grown_one_after_the_other_within_the_grace_are_no_problem() -> None:
    layout = watch()
    layout.observe({**EVEN, "rec": 3}, 0.0)
    layout.observe({**EVEN, "rec": 3, "labels": 3}, 20.0)
    layout.observe({"rec": 3, "labels": 3, "changelog": 3}, 25.0)
    layout.observe({"rec": 3, "labels": 3, "changelog": 3}, 100.0)
    assert layout.problem is None


def test_a_passing_observation_restarts_the_clock() -> None:
    layout = watch()
    layout.observe({**EVEN, "rec": 3}, 0.0)
    layout.observe(EVEN, 25.0)  # not a layout that happens; it tests the clock
    layout.observe({**EVEN, "rec": 3}, 40.0)
    layout.observe({**EVEN, "rec": 3}, 60.0)
    assert layout.problem is None
    layout.observe({**EVEN, "rec": 3}, 70.0)
    assert layout.problem is not None
