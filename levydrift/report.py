"""The HTML report of ``levydrift check``: one plot per drifted signal, and a JSON summary.

Each plot shows the signal over the rows (a rolling mean of the values, or for a category
the rolling share of the category that moved), the reference window and the current window
shaded, and a line at each detection. Plots are PNGs embedded as base64, so the report is one
self-contained file that CI can keep as an artifact.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib
import numpy as np
import orjson

from detectors.decision import DriftDecision, SignalFinding
from levydrift.check import CheckResult, effect_text, finding_line, summary, top_category
from levydrift.errors import UsageError

matplotlib.use("Agg")  # no display: CI runners and servers

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

MAX_POINTS = 4000  # points drawn per line: enough to read, small enough to embed


def report_paths(target: Path) -> tuple[Path, Path]:
    """(HTML, JSON): ``PATH.html`` + ``PATH.json``, or ``PATH/index.html`` + ``summary.json``."""
    if target.suffix.lower() in (".html", ".htm"):
        return target, target.with_suffix(".json")
    return target / "index.html", target / "summary.json"


def write_report(result: CheckResult, target: Path) -> tuple[Path, Path]:
    html_path, json_path = report_paths(target)
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(summary(result), option=orjson.OPT_INDENT_2
                                           | orjson.OPT_SERIALIZE_NUMPY))
        html_path.write_text(render_html(result), encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write the report to {target}: "
                         f"{error.strerror or error}") from None
    return html_path, json_path


def render_html(result: CheckResult) -> str:
    verdict = ("Drift in " + ", ".join(result.drifted_signals()) if result.drifted
               else "No drift")
    sections = [_signal_section(result, name) for name in result.drifted_signals()]
    model = (f"{result.model} v{result.model_version}" if result.model_version
             else "none (prediction and error signals not checked)")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>levydrift check: {_e(result.source)}</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#222}}
td,th{{padding:.2rem .6rem;text-align:left}} img{{max-width:100%}}
.drift{{color:#b00}} .ok{{color:#070}}</style></head><body>
<h1>levydrift check</h1>
<p class="{'drift' if result.drifted else 'ok'}"><strong>{_e(verdict)}</strong></p>
<table><tr><th>file</th><td>{_e(result.source)}</td></tr>
<tr><th>rows</th><td>{result.rows:,}</td></tr>
<tr><th>model</th><td>{_e(model)}</td></tr>
<tr><th>reference</th><td>{_e(result.reference)}</td></tr>
<tr><th>exit code</th><td>{result.exit_code}</td></tr></table>
{''.join(sections)}
</body></html>
"""


def _signal_section(result: CheckResult, signal: str) -> str:
    pairs = [(d, f) for d, f in result.findings() if f.signal == signal]
    items = "".join(f"<li>{_e(finding_line(d, f))}</li>" for d, f in pairs)
    image = _plot_png(result, signal, pairs)
    return (f"<h2>{_e(signal)}</h2><ul>{items}</ul>"
            f'<img alt="{_e(signal)} over the rows" src="data:image/png;base64,{image}">')


def _plot_png(result: CheckResult, signal: str,
              pairs: list[tuple[DriftDecision, SignalFinding]]) -> str:
    rows, values, label = _series(result, signal, pairs[0][1])
    figure, axes = plt.subplots(figsize=(9, 3.2), dpi=80)
    try:
        _shade_windows(axes, pairs)
        step = max(1, len(rows) // MAX_POINTS)
        axes.plot(rows[::step], values[::step], color="#1f4e79", linewidth=1.0, label=label)
        for decision, finding in pairs:
            axes.axvline(decision.detected_at + 1, color="#c00000", linewidth=1.2)
            axes.annotate(f"detected: {effect_text(finding)}", (decision.detected_at + 1, 1.0),
                          xycoords=("data", "axes fraction"), fontsize=8, color="#c00000",
                          va="top", ha="right", rotation=90)
        axes.set_xlabel("row")
        axes.set_title(f"{signal}: {label}", fontsize=10)
        axes.legend(loc="upper left", fontsize=8)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _series(result: CheckResult, signal: str,
            finding: SignalFinding) -> tuple[np.ndarray, np.ndarray, str]:
    """(row numbers, rolling values, label) for the signal's rows that carry a value."""
    column = result.columns[signal]
    rows = np.arange(1, len(column) + 1)
    if finding.effect_measure == "share_change":
        category = top_category(finding) or ""
        values = (np.asarray(column, dtype=object) == category).astype(float)
        label = f"rolling share of {category!r}"
    else:
        values = np.asarray(column, dtype=float)
        present = np.isfinite(values)
        rows, values = rows[present], values[present]
        label = "rolling mean"
    window = max(25, min(1000, len(values) // 100))
    return rows, _rolling_mean(values, window), f"{label} ({window} values)"


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    starts = np.arange(1, len(values) + 1) - counts
    return (sums[1:] - sums[starts]) / counts


def _shade_windows(axes: plt.Axes, pairs: list[tuple[DriftDecision, SignalFinding]]) -> None:
    for index, (decision, finding) in enumerate(pairs):
        reference = finding.reference
        if reference.first_position is not None and reference.last_position is not None:
            axes.axvspan(reference.first_position + 1, reference.last_position + 1,
                         color="#70ad47", alpha=0.15,
                         label="reference window" if index == 0 else None)
        first = finding.current.first_position
        if first is not None:
            axes.axvspan(first + 1, decision.detected_at + 1, color="#ed7d31", alpha=0.3,
                         label="current window" if index == 0 else None)


def _e(text: object) -> str:
    return html.escape(str(text))
