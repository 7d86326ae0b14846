"""One county's change, records in county slices: what does the retrain do to the others?

    .venv/bin/python bench/bench_county_retrain.py [--seeds 1 2 3]
        [--orders roll-cycle county-batches district-sorted] [--after-onset 5000]

The simulator's stream (every record labelled) with a Grant-only levy change: from record
``--change-at`` on, Grant's actual levies are 1.3x what the champion learnt (an exemption or
levy policy of that county). The records arrive in ``--order`` (within each day); the trainer
reads its window ``--after-onset`` records after Grant's first changed record arrived. Two
rules, the same champion (trained on the first 60,000 records), the same model code:

* **before**: the window is every record from the onset (a county's onset cut the whole
  stream), the holdout its newest fifth, the gate overall MAE only;
* **after** (trainer/ now): Grant's records from the onset, the other counties' records before
  it too (``trainer.worker.changed_segments``), the newest fifth of each county held out
  (``holdout_mask``), the models compared on the held-out records the champion did not train
  on, and no county with 200 of them more than ``trainer.slice_tolerance`` worse (``gate``).

Both windows hold at most ``--window`` records (``trainer.window_records``). Each candidate is
then scored, with the champion, on the ``--test`` records that arrive after the window:
Grant's and the others'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from machine import describe  # noqa: E402

from levydrift.features import TARGET, to_model_frame  # noqa: E402
from levydrift.simulator import LevySimulator, SimulatorConfig, ordered_blocks  # noqa: E402
from trainer.config import TrainerSection  # noqa: E402
from trainer.evaluation import gate, holdout_metrics, slice_comparisons  # noqa: E402
from trainer.model import fit_model, predict  # noqa: E402
from trainer.training import HOLDOUT_SLICE, holdout_mask  # noqa: E402

COUNTY = "Grant"
LEVY_FACTOR = 1.3
CHAMPION_RECORDS = 60_000


def stream(seed: int, order: str, records: int, change_at: int
           ) -> tuple[pd.DataFrame, np.ndarray, int]:
    """(model frame in arrival order, Grant mask, arrival position of the first change)."""
    simulator = LevySimulator(SimulatorConfig(seed=seed, scenario="none", labelled_share=1.0))
    blocks = list(ordered_blocks(simulator, records, order))
    columns = {name: np.concatenate([block[name] for block in blocks]) for name in blocks[0]}
    index = np.array([int(r.rsplit("-", 1)[1]) for r in columns["record_id"]])
    grant = columns["county"] == COUNTY
    changed = grant & (index >= change_at)
    columns[TARGET] = np.where(changed, columns[TARGET] * LEVY_FACTOR, columns[TARGET])
    frame = to_model_frame(pd.DataFrame(columns), include_target=True)
    return frame, grant, int(np.flatnonzero(changed)[0])


def newest_fifth(rows: int) -> np.ndarray:
    held = np.zeros(rows, dtype=bool)
    held[rows - int(round(rows * 0.2)):] = True
    return held


def retrain(frame: pd.DataFrame, rows: np.ndarray, champion: object, by_county: bool
            ) -> tuple[object, str, str]:
    window = frame.iloc[rows]
    held = holdout_mask(window, 0.2) if by_county else newest_fifth(len(window))
    train, holdout = window[~held], window[held]
    candidate = fit_model(train)
    # as the trainer does by offsets: the gate compares on rows the champion did not learn
    compared = rows[held] >= CHAMPION_RECORDS if by_county else np.ones(len(holdout), bool)
    compared = compared if compared.any() else np.ones(len(holdout), bool)
    holdout = holdout[compared]
    actual = holdout[TARGET].to_numpy(float)
    ours, theirs = predict(candidate, holdout), predict(champion, holdout)
    slices = slice_comparisons(HOLDOUT_SLICE, holdout[HOLDOUT_SLICE].to_numpy(), actual, ours,
                               theirs) if by_county else []
    decision = gate(holdout_metrics(actual, ours), holdout_metrics(actual, theirs), 0.01,
                    slices, TrainerSection().slice_tolerance)
    return candidate, decision.decision, decision.reason


def mae(model: object, frame: pd.DataFrame) -> float:
    return float(np.mean(np.abs(predict(model, frame) - frame[TARGET].to_numpy(float))))


def run(seed: int, order: str, arguments: argparse.Namespace) -> list[str]:
    frame, grant, onset = stream(seed, order, arguments.records, arguments.change_at)
    champion = fit_model(frame.iloc[:CHAMPION_RECORDS])
    end = onset + arguments.after_onset
    test = slice(end, end + arguments.test)
    test_grant, test_rest = frame.iloc[test][grant[test]], frame.iloc[test][~grant[test]]
    cut = np.arange(onset, end)[-arguments.window:]
    scoped = np.arange(max(0, end - arguments.window), end)
    scoped = scoped[(scoped >= onset) | ~grant[scoped]]
    lines = [f"| {seed} | {order} | champion | | {mae(champion, test_grant):,.0f} | "
             f"{mae(champion, test_rest):,.0f} | |"]
    for rule, rows, by_county in (("before", cut, False), ("after", scoped, True)):
        candidate, decision, reason = retrain(frame, rows, champion, by_county)
        lines.append(f"| {seed} | {order} | {rule} | {decision} | "
                     f"{mae(candidate, test_grant):,.0f} | {mae(candidate, test_rest):,.0f} | "
                     f"{reason} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--orders", nargs="+",
                        default=["roll-cycle", "county-batches", "district-sorted"])
    parser.add_argument("--records", type=int, default=260_000)
    parser.add_argument("--change-at", type=int, default=130_000)
    parser.add_argument("--after-onset", type=int, default=5_000)
    parser.add_argument("--window", type=int, default=200_000)  # trainer.window_records
    parser.add_argument("--test", type=int, default=60_000)
    arguments = parser.parse_args()
    print(describe())
    print(f"Grant's levies x{LEVY_FACTOR} from record {arguments.change_at:,}; the window is "
          f"read {arguments.after_onset:,} records after the onset arrived; test: the next "
          f"{arguments.test:,} records. MAE in dollars.\n")
    print("| seed | order | model | gate | MAE Grant | MAE other counties | gate's reason |")
    print("|---|---|---|---|---:|---:|---|")
    for seed in arguments.seeds:
        for order in arguments.orders:
            print("\n".join(run(seed, order, arguments)), flush=True)


if __name__ == "__main__":
    main()
