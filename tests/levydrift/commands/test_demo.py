"""``levydrift demo`` end to end: a real subprocess against the test broker, as `make demo`
runs it (no stdin, CI=true), must exit 0 and narrate drift, promotion and the swap, then the
last act: a performance drift found only from late labels, attributed to the version that made
the predictions, and the retrain on the joined labels.

No wall-clock budget of the test's own: the demo waits on conditions, each for up to its
(generous) step timeout, and fails by itself when a step never happens. The hour below only
guards against a hang."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RAW_LIBRDKAFKA_LINE = re.compile(r"^\S*\s*[A-Z_]+ \[rdkafka#", re.M)
LABEL_DRIFT = re.compile(r"DRIFT found from the LABELS on partition \d \(performance\): "
                         r"[^;]*(abs_error|relative_error)[^;]*; segment: [^;]+; attributed to "
                         r"version 2, which made those predictions; window "
                         r"levy-demo-\w+\.labels\[\d\]")
RETRAIN_ON_LABELS = re.compile(r"retrained on ([\d,]+) records, (all|[\d,]+) with levies joined "
                               r"from the labels \(levy-demo-\w+\.labels offsets p\d")
LABELS_TAKEN = re.compile(r"the consumer took all ([\d,]+) labels: ([\d,]+) joined")


def test_demo_runs_the_whole_loop(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVYDRIFT_")}
    env.update({"LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CI": "true"})
    result = subprocess.run(
        [sys.executable, "-m", "levydrift.cli", "demo", "--output-dir", str(tmp_path)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, cwd=REPO,
        timeout=3600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "DRIFT detected on partition" in output and "after the true change" in output
    assert "version 2 PROMOTED to champion" in output
    assert "consumer SWAPPED to version 2" in output
    assert "summary" in output and "MAE after change, v2" in output
    # The last act: the relief shows only in the labels, and the trainer answers it.
    assert LABEL_DRIFT.search(output), output[-6000:]
    assert "only the labels showed the relief" in output
    assert RETRAIN_ON_LABELS.search(output)
    assert re.search(r"version 3 (PROMOTED to champion|REJECTED by the gate)", output)
    taken = LABELS_TAKEN.search(output)
    assert taken, output[-3000:]
    labels, joined = (int(group.replace(",", "")) for group in taken.groups())
    assert labels > 10_000 and joined >= 0.9 * labels
    assert "label drift events" in output and "retrain on labels" in output
    lineage = json.loads((tmp_path / "models" / "levy-impact" / "versions" / "3"
                          / "lineage.json").read_text())
    assert lineage["labels"]["joined_records"] > 0
    assert {event["current_window"]["topic"].rsplit(".", 1)[1]
            for event in lineage["drift_events"]} == {"labels"}
    assert (tmp_path / "models" / "levy-impact" / "versions" / "2" / "model.skops").is_file()
    assert (tmp_path / "models" / "levy-impact" / "training_history.csv").is_file()
    # The narration is the demo's alone: its own logs, the Kafka clients' included, are JSON
    # lines in demo.log.
    assert not RAW_LIBRDKAFKA_LINE.search(output), RAW_LIBRDKAFKA_LINE.search(output)
    assert result.stderr == "", result.stderr[-2000:]
    log_lines = (tmp_path / "demo.log").read_text().splitlines()
    assert log_lines and all(json.loads(line)["message"] for line in log_lines)
