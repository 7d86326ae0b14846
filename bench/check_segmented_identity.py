"""Same decisions and snapshot bytes as another build: feeds the segmented bank the
consumer's columns in several arrival orders and a stream with segment and pooled decisions,
under ``segment_by`` county, county + tax_district and county with tax_district strata, and
records every decision and a hash of the snapshot every 50 batches.

    <old checkout>/bench/check_segmented_identity.py --write before.json   (a copy of this file)
    <new checkout>/bench/check_segmented_identity.py --compare before.json

Each build runs from its own checkout: ``bench_arrival_orders`` puts the repository it sits
in first on ``sys.path``, whatever ``PYTHONPATH`` says (the first line printed names the
build). E.g. ``git archive <commit> | tar -x -C /tmp/old`` and copy this file into it.

``--compare`` exits 1 on any difference. The old build's snapshot at batch 75 of each run
(``--write`` keeps them beside the JSON) is also restored by this build and fed the rest of
the stream: the same decisions and snapshot hashes as the old build's uninterrupted run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_arrival_orders import BATCH, COUNTY, arrived, champion_for  # noqa: E402

from detectors import DetectorSettings  # noqa: E402
from detectors.segments import SegmentedBank  # noqa: E402
from levydrift.simulator import LevySimulator, SimulatorConfig  # noqa: E402

RECORDS = 300_000
EVERY = 50  # batches between snapshot hashes
MIDDLE = 75  # the batch before which a snapshot is taken to resume from
# name -> (segment_by, stratify_by)
SEGMENTINGS = {"county": (("county",), ()),
               "county+district": (("county", "tax_district"), ()),
               "county, district strata": (("county",), ("tax_district",))}


def drifting(columns: dict[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
    """One county's values x1.45 from record 100,000 (a segment change) and every record's
    levy rate x1.3 from record 200,000 (a change of the whole stream: the pooled layer's)."""
    index = start + np.arange(len(columns["county"]))
    hit = (columns["county"] == COUNTY) & (index >= 100_000)
    for name in ("assessed_value", "market_value"):
        columns[name] = np.where(hit, np.round(columns[name] * 1.45), columns[name])
    columns["levy_rate"] = np.where(index >= 200_000, columns["levy_rate"] * 1.3,
                                    columns["levy_rate"])
    return columns


def streams(cache: Path) -> dict[str, dict[str, np.ndarray]]:
    path = cache / f"identity-{RECORDS}.pkl"
    if path.exists():
        with path.open("rb") as handle:
            loaded: dict[str, dict[str, np.ndarray]] = pickle.load(handle)
            return loaded
    champion = champion_for(0)
    out = {}
    for order in ("county-batches", "shuffled", "time"):
        simulator = LevySimulator(SimulatorConfig(seed=0, labelled_share=0.3, county=COUNTY))
        out[order] = arrived(simulator, RECORDS, order, champion)
    simulator = LevySimulator(SimulatorConfig(seed=1, labelled_share=0.3, county=COUNTY))
    out["drift-shuffled"] = arrived(simulator, RECORDS, "shuffled", champion, drifting)
    cache.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(out, handle, protocol=5)
    return out


def run(columns: dict[str, np.ndarray], segmenting: tuple[tuple[str, ...], tuple[str, ...]],
        resume: bytes | None = None) -> tuple[dict[str, object], bytes]:
    """Every decision (batch, repr) and the snapshot hash every ``EVERY`` batches, and the
    snapshot at batch ``MIDDLE``. With ``resume`` (such a snapshot), the bank restored from
    it is fed from batch ``MIDDLE`` on."""
    settings = DetectorSettings(segment_by=segmenting[0], stratify_by=segmenting[1])
    bank = (SegmentedBank(settings) if resume is None
            else SegmentedBank.restore(resume, settings))
    n = len(columns["index"])
    decisions, hashes, middle = [], [], b""
    for batch, first in enumerate(range(0, n, BATCH)):
        if batch == MIDDLE:
            middle = bank.snapshot()
        if resume is not None and batch < MIDDLE:
            continue
        part = {name: values[first:first + BATCH] for name, values in columns.items()}
        decisions += [[batch, repr(d)]
                      for d in bank.update(part, np.arange(first, min(n, first + BATCH)))]
        if batch % EVERY == EVERY - 1:
            hashes.append(hashlib.sha256(bank.snapshot()).hexdigest())
    decisions += [[-1, repr(d)] for d in bank.finish()]
    hashes.append(hashlib.sha256(bank.snapshot()).hexdigest())
    layers = {"segment": sum(1 for _, d in decisions if "segment=''" not in d),
              "stream": sum(1 for _, d in decisions if "segment=''" in d)}
    return {"decisions": decisions, "hashes": hashes, "counts": layers}, middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/levydrift-identity"))
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path)
    group.add_argument("--compare", type=Path)
    args = parser.parse_args()
    print("build:", Path(sys.modules["detectors"].__file__ or "").parent.parent, flush=True)
    results, snapshots = {}, {}
    data = streams(args.cache)
    for order, columns in data.items():
        for name, segmenting in SEGMENTINGS.items():
            key = f"{order}/{name}"
            results[key], snapshots[key] = run(columns, segmenting)
            print(key, results[key]["counts"], flush=True)
    if args.write:
        args.write.write_text(json.dumps(results))
        args.write.with_suffix(".snapshots.pkl").write_bytes(pickle.dumps(snapshots))
        return
    before = json.loads(args.compare.read_text())
    old_snapshots = pickle.loads(args.compare.with_suffix(".snapshots.pkl").read_bytes())
    failed = False
    for key, result in results.items():
        old = before[key]
        order, segmenting = key.split("/")
        resumed, _ = run(data[order], SEGMENTINGS[segmenting], old_snapshots[key])
        later = [d for d in old["decisions"] if d[0] >= MIDDLE or d[0] < 0]
        same_resumed = (resumed["decisions"] == later
                        and resumed["hashes"] == old["hashes"][MIDDLE // EVERY:])
        print(f"{key}: decisions {len(result['decisions'])} "
              f"{'same' if result['decisions'] == old['decisions'] else 'DIFFER'}, "
              f"{len(result['hashes'])} snapshot hashes "
              f"{'same' if result['hashes'] == old['hashes'] else 'DIFFER'}, "
              f"old build's snapshot at batch {MIDDLE} restored and fed on: "
              f"{'same' if same_resumed else 'DIFFERS'}", flush=True)
        failed |= not (result == old and same_resumed and snapshots[key] == old_snapshots[key])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
