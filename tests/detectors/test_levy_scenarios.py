"""The detector bank on the simulator's levy scenarios, fed the way the consumer feeds it
(bench/bench_levy_scenarios.py has the full benchmark; these are the scenarios it shows are
detected on every seed, on one seed and a shorter stream)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_levy_scenarios.py"


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_levy_scenarios", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

# The error signals only have values on labelled records (30 %), so they finish warming up
# on their first 5,000 values after about 16,700 records; a change before that would be
# learned as normal. The change comes after it.
CONFIG = bench.RunConfig(records=30_000, change_at=20_000, train_records=5_000,
                         labelled_share=0.3, max_iter=20)
SEED = 0


@pytest.fixture(scope="module")
def champion() -> object:
    return bench.train_champion(SEED, CONFIG)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["unit-bug", "new-property-class", "variance"])
def test_scenario_detected_after_the_change_and_attributed(scenario: str,
                                                            champion: object) -> None:
    run = bench.run_scenario(scenario, SEED, champion, CONFIG)
    assert run.before == [], f"false alarm before the change: {run.before}"
    first = run.first
    assert first is not None, f"{scenario} not detected"
    assert run.delay is not None and run.delay < 2_000
    assert run.right_signal(first), (first.signal_names, run.affected_signals)
    assert run.right_kind(first), (first.kind, run.expected_kinds)
