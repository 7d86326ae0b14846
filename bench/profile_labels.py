"""Where the consumer's time goes per record at steady state, with labels flowing or without:
``ConsumerService`` run in this process on bench_labels' topics, cProfile on between 20 % and
90 % of the stream.

    python bench/profile_labels.py [--records 300000] [--without-labels] [--top 40]
                                   [--no-champion] [--no-label-messages]
                                   [--output FILE] [--py-spy EXECUTABLE] [--bootstrap HOST:PORT]

Prints the functions that matter as µs per record (cumulative and own time over the records
processed while profiling); cProfile's own overhead inflates Python-heavy calls alike in both
modes, so compare the two runs rather than read absolute figures. With ``--py-spy`` (from PyPI:
``pip install py-spy``) the process is sampled instead, wall clock, without that inflation.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench_consumer import STEADY_FROM, STEADY_TO, create_topics, delete_topics, topic_names
from bench_labels import prefill, publish_champion

from consumer import metrics
from consumer.config import ConsumerSettings, load_consumer_settings
from consumer.service import ConsumerService

CONSUME = "<method 'consume' of 'cimpl.Consumer' objects>"
# (label, file suffix, function name[, the caller's name]): the per-record breakdown.
BREAKDOWN = (
    ("loop step (all)", "service.py", "step"),
    ("records: consume (confluent-kafka)", "~", CONSUME, "step"),
    ("records: process_partition (all)", "processing.py", "process_partition"),
    ("  decode + validate (all)", "levy_record.py", "decode_levy_batch"),
    ("    records to columns", "levy_record.py", "levy_records_to_columns"),
    ("  signal columns (champion predict)", "processing.py", "signal_columns"),
    ("  detector bank update", "segments.py", "update"),
    ("  labels.add_records (all)", "labels.py", "add_records"),
    ("    join_store.put_batch", "join_store.py", "put_batch"),
    ("    join_store._put (lookups)", "join_store.py", "_put"),
    ("    join_store.expire", "join_store.py", "expire"),
    ("labels: _process_labels (all)", "service.py", "_process_labels"),
    ("  label_reader.consume", "~", CONSUME, "_process_labels"),
    ("  enqueue (decode labels)", "labels.py", "enqueue"),
    ("  take_turn (all)", "labels.py", "take_turn"),
    ("    _join (the turn's labels)", "labels.py", "_join"),
    ("      join_store.join_batch", "join_store.py", "join_batch"),
    ("    _feed (error detectors)", "labels.py", "_feed"),
    ("checkpoint (all)", "service.py", "checkpoint"),
    ("  _produce_changelog", "service.py", "_produce_changelog"),
    ("    join_store.changes", "join_store.py", "changes"),
    ("  join_store.commit", "join_store.py", "commit"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--without-labels", action="store_true")
    parser.add_argument("--no-label-messages", action="store_true",
                        help="the join store on, but no label on the topic (as bench_consumer)")
    parser.add_argument("--no-champion", action="store_true",
                        help="no model serving (as bench_consumer): no scoring")
    parser.add_argument("--label-delay-hours", type=float, default=2.0)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--no-profiler", action="store_true",
                        help="only the rate and the garbage collections")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() once started: full collections skip what start-up "
                             "made (imports, the model)")
    parser.add_argument("--output", type=Path, help="the cProfile stats or py-spy stacks")
    parser.add_argument("--py-spy", metavar="EXECUTABLE",
                        help="sample with py-spy (wall clock, idle included) instead of cProfile")
    parser.add_argument("--bootstrap", default=os.environ.get(
        "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    arguments = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    names = topic_names(run)
    admin = create_topics(arguments.bootstrap, names)
    try:
        labels, _ = prefill(arguments.bootstrap, names, arguments.records,
                            arguments.label_delay_hours, not arguments.no_label_messages)
        with tempfile.TemporaryDirectory() as directory:
            workdir = Path(directory)
            if not arguments.no_champion:
                publish_champion(arguments.bootstrap, names["model_versions"],
                                 workdir / "models")
            for key in [key for key in os.environ if key.startswith("LEVYDRIFT_")]:
                del os.environ[key]
            os.environ.update({
                "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": arguments.bootstrap,
                "LEVYDRIFT_CONSUMER_GROUP_ID": f"profile-{run}",
                "LEVYDRIFT_CONSUMER_INSTANCE_ID": f"profile-{run}",
                "LEVYDRIFT_REGISTRY_ROOT": str(workdir / "models"),
                "LEVYDRIFT_CONSUMER_STATE_DIR": str(workdir / "consumer-state"),
                "LEVYDRIFT_CONSUMER_JOIN_LABELS": str(not arguments.without_labels).lower(),
                **{f"LEVYDRIFT_TOPICS_{key.upper()}": name for key, name in names.items()}})
            profile(load_consumer_settings(None), arguments, labels)
    finally:
        delete_topics(admin, names.values())


class Sampler:
    """py-spy attached to this process (``--idle``, so time waiting in Kafka calls counts),
    its stacks in collapsed form; started and stopped with the window."""

    def __init__(self, executable: str, output: Path) -> None:
        self.executable, self.output = executable, output
        self.process: subprocess.Popen[bytes] | None = None

    def enable(self) -> None:
        self.process = subprocess.Popen(
            [self.executable, "record", "--pid", str(os.getpid()), "--format", "raw",
             "--rate", "250", "--idle", "--threads", "-o", str(self.output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached

    def disable(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)


class NoProfiler:
    """The window's rate and collections only."""

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass


class GarbageCollections:
    """The cyclic collector's runs while profiling (``gc.callbacks``), by generation."""

    def __init__(self) -> None:
        self.on = False
        self.started = 0.0
        self.window: dict[int, tuple[int, float]] = {}

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif self.on:
            count, seconds = self.window.get(info["generation"], (0, 0.0))
            self.window[info["generation"]] = (count + 1,
                                               seconds + time.perf_counter() - self.started)


def profile(settings: ConsumerSettings, arguments: argparse.Namespace, labels: int) -> None:
    valid = metrics.RECORDS.labels(outcome="valid")
    joined = metrics.LABELS.labels(outcome="joined")
    sampler: cProfile.Profile | Sampler | NoProfiler = cProfile.Profile()
    if arguments.py_spy:
        sampler = Sampler(arguments.py_spy, arguments.output or Path("py-spy.txt"))
    elif arguments.no_profiler:
        sampler = NoProfiler()
    window: dict[str, float] = {}
    collections = GarbageCollections()

    def stop_when(_: ConsumerService) -> bool:
        processed = valid._value.get()
        if "start" not in window and processed >= arguments.records * STEADY_FROM:
            if arguments.gc_freeze:  # what the service could do once started
                gc.freeze()
            sampler.enable()
            collections.on = True
            window.update(start=time.perf_counter(), records=valid._value.get(),
                          joined=joined._value.get())
        elif "start" in window and processed >= arguments.records * STEADY_TO:
            window.update(seconds=time.perf_counter() - window["start"],
                          records=processed - window["records"],
                          joined=joined._value.get() - window["joined"])
            sampler.disable()
            collections.on = False
            return True
        return False

    gc.callbacks.append(collections.callback)
    try:
        ConsumerService(settings).run(stop_when=stop_when)
    finally:
        gc.callbacks.remove(collections.callback)
    records = window["records"]
    mode = "without labels" if arguments.without_labels else "with labels"
    under = "py-spy" if arguments.py_spy else "no profiler" if arguments.no_profiler \
        else "cProfile"
    print(f"{mode}: {records:,.0f} records and {window['joined']:,.0f} labels joined in "
          f"{window['seconds']:.2f} s profiled ({records / window['seconds']:,.0f} rec/s under "
          f"{under}{', gc.freeze()' if arguments.gc_freeze else ''}); {labels:,} labels on the "
          "topic")
    print("garbage collections in the window (count, seconds, µs per record), by generation: "
          + "; ".join(f"gen{generation} {count:,} {seconds:.2f} s "
                      f"{seconds / records * 1e6:.2f}"
                      for generation, (count, seconds) in sorted(collections.window.items())))
    if isinstance(sampler, NoProfiler):
        return
    if isinstance(sampler, Sampler):
        report_samples(sampler.output, records, window["seconds"], arguments.top)
    else:
        report_profile(sampler, records, arguments)


def report_profile(profiler: cProfile.Profile, records: float,
                   arguments: argparse.Namespace) -> None:
    stats = pstats.Stats(profiler)
    if arguments.output:
        stats.dump_stats(str(arguments.output))
    print(f"\n{'µs per record (cumulative / own)':<44} {'cum':>8} {'own':>8} {'calls':>10}")
    for label, suffix, name, *caller in BREAKDOWN:
        found = [row for key, row in stats.stats.items()  # type: ignore[attr-defined]
                 if key[2] == name and key[0].endswith(suffix)]
        if caller:  # only the calls from that caller: (calls, calls, own, cumulative)
            found = [timing for row in found for key, timing in row[4].items()
                     if key[2] == caller[0]]
        if not found:
            continue
        calls = sum(row[1] for row in found)
        own = sum(row[2] for row in found)
        cumulative = sum(row[3] for row in found)
        print(f"{label:<44} {cumulative / records * 1e6:>8.2f} {own / records * 1e6:>8.2f} "
              f"{calls:>10,}")
    print(f"\nTop {arguments.top} by own time (µs per record):")
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])  # type: ignore[attr-defined]
    for (filename, line, name), (_, calls, own, cumulative, _) in rows[:arguments.top]:
        where = f"{Path(filename).name}:{line}({name})" if filename != "~" else name
        print(f"  {own / records * 1e6:8.2f} own {cumulative / records * 1e6:8.2f} cum "
              f"{calls:>10,}  {where[:90]}")


def report_samples(path: Path, records: float, seconds: float, top: int) -> None:
    """The main thread's samples (the one running ConsumerService.run) as µs per record:
    inclusive for the breakdown's functions, own (the innermost frame) for the top list."""
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        stacks.append((frames.split(";"), int(count)))
    main = [(frames[1:], count) for frames, count in stacks  # not the sampler's own start
            if "MainThread" in frames[0] and len(frames) > 1
            and not any(frame.startswith("Sampler.") for frame in frames)]
    total = sum(count for _, count in main)
    per_sample = seconds / total / records * 1e6  # µs per record that one sample stands for
    print(f"{total:,} samples of the main thread over {seconds:.1f} s")
    print(f"\n{'µs per record (inclusive)':<44} {'incl':>8}")
    for label, suffix, name, *caller in BREAKDOWN:
        name = "consume" if name == CONSUME else name
        samples = 0
        for frames, count in main:
            for index, frame in enumerate(frames):
                function, _, where = frame.partition(" (")
                if function.rpartition(".")[2] != name or not (suffix == "~" or where.split(":")[0]
                                            .endswith(suffix)):
                    continue
                if caller and not (index and frames[index - 1].partition(" (")[0]
                                   .rpartition(".")[2] == caller[0]):
                    continue
                samples += count
                break
        print(f"{label:<44} {samples * per_sample:>8.2f}")
    own: dict[str, int] = {}
    for frames, count in main:
        own[frames[-1]] = own.get(frames[-1], 0) + count
    print(f"\nTop {top} innermost frames (µs per record):")
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"  {count * per_sample:8.2f}  {frame[:110]}")


if __name__ == "__main__":
    main()
