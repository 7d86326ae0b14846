"""``levydrift check`` on a big Parquet file beside a plain pandas read of the same file.

    python bench/bench_check.py [--records 1000000] [--repeat 3] [--with-model]

Makes the file once with the simulator, then per repetition, interleaved (machine load hits
all alike), each as its own process timed from launch to exit:
- ``python -c "pandas.read_parquet(FILE)"``: the floor, reading the columns and nothing more;
- ``levydrift check --data-path FILE``: read, validate every row, score and run the detector
  bank, print findings.
Then the same two reads in this process (imports paid already): ``pandas.read_parquet`` and
``levydrift.levyfile.read_levy_file`` (read + validate into the columns the bank takes).
Reported: min / median / max seconds and the median ratio to pandas.

By default the registry is empty (no champion, as on a first run). ``--with-model`` first
trains one (``levydrift train`` on 20,000 other simulated rows, promoted as version 1), so the
check scores every row with it and takes its holdout as the baseline, as after a first
training.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
from machine import describe  # noqa: E402

from levydrift.levyfile import read_levy_file  # noqa: E402


def timed_process(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: drift found, still a full run
        raise SystemExit(f"{command[2]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def row(name: str, seconds: list[float], floor: list[float]) -> str:
    ratio = statistics.median(s / f for s, f in zip(seconds, floor, strict=True))
    return (f"{name:<44} {min(seconds):7.2f} {statistics.median(seconds):7.2f} "
            f"{max(seconds):7.2f}   {ratio:5.2f}x")


def train_champion(scratch: Path, registry: str, env: dict[str, str]) -> None:
    """Version 1 of the levy model in ``registry``, trained on rows of another seed."""
    training = scratch / "training.parquet"
    subprocess.run([sys.executable, "-m", "levydrift.cli", "simulate", "--records", "20000",
                    "--seed", "99", "--labelled-share", "1", "--output", str(training)],
                   cwd=REPO, env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "levydrift.cli", "train", "--data-path",
                    str(training), "--registry", registry], cwd=REPO, env=env, check=True,
                   capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--with-model", action="store_true",
                        help="train a champion first, so the check scores every row")
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory(prefix="bench-check-") as scratch:
        path = Path(scratch) / "levy.parquet"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")}
        subprocess.run([sys.executable, "-m", "levydrift.cli", "simulate", "--records",
                        str(args.records), "--output", str(path)], cwd=REPO, env=env,
                       check=True, capture_output=True)
        registry = str(Path(scratch) / "registry")  # empty: no champion, as on a first run
        if args.with_model:
            train_champion(Path(scratch), registry, env)
        pandas_process = [sys.executable, "-c",
                          f"import pandas; pandas.read_parquet({str(path)!r})"]
        check_process = [sys.executable, "-m", "levydrift.cli", "check", "--data-path",
                         str(path), "--registry", registry]
        times: dict[str, list[float]] = {key: [] for key in ("pp", "cp", "pr", "lr")}
        for _ in range(args.repeat):
            times["pp"].append(timed_process(pandas_process, env))
            times["cp"].append(timed_process(check_process, env))
            times["pr"].append(timed(lambda: pd.read_parquet(path)))
            times["lr"].append(timed(lambda: read_levy_file(path)))
        size = path.stat().st_size / 2**20
    print(f"file: {args.records:,} simulated rows, Parquet {size:.0f} MiB; "
          f"{'a champion scoring every row' if args.with_model else 'no model'}; "
          f"{args.repeat} interleaved repetitions; load average after "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'seconds (min median max), ratio to pandas':<44} {'min':>7} {'median':>7} "
          f"{'max':>7}   ratio")
    print(row("process: python -c pandas.read_parquet", times["pp"], times["pp"]))
    print(row("process: levydrift check --data-path", times["cp"], times["pp"]))
    print(row("in process: pandas.read_parquet", times["pr"], times["pr"]))
    print(row("in process: read_levy_file (read + validate)", times["lr"], times["pr"]))


if __name__ == "__main__":
    main()
