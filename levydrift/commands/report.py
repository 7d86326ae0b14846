"""The HTML report of ``levydrift check`` (and ``levydrift daily``), with its JSON summary.

One page that opens from disk (plots are PNGs embedded as base64, no scripts, no fetches):

1. the verdict, the data, the model and the baseline the rows were compared against;
2. one table of every configured signal: status (drift, clean, not checked and why), the
   detector, its statistic against its threshold, the effect with its unit, onset and
   detection rows;
3. per drifted signal, the reference against the current distribution (ECDFs for numbers,
   share bars for categories) and the time course of what the detector watched (rolling mean,
   rolling spread or rolling share), with the windows shaded and the detections marked.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import orjson

from detectors.decision import DriftDecision, SignalFinding
from levydrift.commands.check_result import (
    CheckResult,
    finding_line,
    segment_table,
    signal_table,
    summary,
    top_category,
)
from levydrift.errors import UsageError

matplotlib.use("Agg")  # no display: CI runners and servers

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

MAX_POINTS = 3000  # points drawn per line: enough to read, small enough to embed
TOP_CATEGORIES = 8
REFERENCE_COLOUR, CURRENT_COLOUR, DETECTION_COLOUR = "#4e9a57", "#e07b28", "#c0392b"
UNITS = {"levy_rate": "rate (levy per dollar of taxable value)",
         "relative_error": "fraction of the actual levy"}
DOLLARS = {"assessed_value", "market_value", "exemption_amount", "prior_levy_amount",
           "new_construction_value", "prediction", "abs_error", "actual_levy_amount"}


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
        html_path.write_text(render_html(result, json_path.name), encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write the report to {target}: "
                         f"{error.strerror or error}") from None
    return html_path, json_path


# ---------------------------------------------------------------------- the page

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2327;
  max-width:1200px;margin:1.5rem auto;padding:0 1rem}
h1{font-size:1.5rem;margin:.2rem 0 .6rem} h2{font-size:1.2rem;margin:2rem 0 .4rem}
.verdict{padding:.7rem 1rem;border-radius:6px;font-size:1.15rem;font-weight:600}
.verdict.drift{background:#fdecea;color:#8c1d13} .verdict.ok{background:#e7f5ea;color:#1e6b30}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:.8rem 0}
dl.meta dt{color:#5f6b73} dl.meta dd{margin:0;overflow-wrap:anywhere}
table.signals{border-collapse:collapse;width:100%;font-size:.92rem}
table.signals th{text-align:left;background:#f2f4f5;border-bottom:2px solid #d5dadd}
table.signals th,table.signals td{padding:.35rem .55rem;vertical-align:top}
table.signals tr+tr td{border-top:1px solid #e6e9eb} tr.drift td{background:#fdf1ef}
td.effect{white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;white-space:nowrap;padding:0 .45rem;border-radius:9px;
  font-size:.82rem;font-weight:600}
.badge.drift{background:#c0392b;color:#fff} .badge.clean{background:#d8eedc;color:#1e6b30}
.badge.skipped{background:#eceff1;color:#5f6b73} .muted{color:#6b777f}
ul.findings{margin:.3rem 0 .6rem;padding-left:1.2rem;font-size:.92rem}
img{max-width:100%;height:auto;border:1px solid #e6e9eb;border-radius:4px}
footer{margin-top:2.5rem;color:#6b777f;font-size:.85rem}
"""


def render_html(result: CheckResult, summary_name: str = "summary.json") -> str:
    verdict = ("Drift in " + ", ".join(result.drifted_signals()) if result.drifted
               else "No drift")
    rows = signal_table(result)
    counts = {status: sum(row["status"] == status for row in rows)
              for status in ("drift", "clean", "not checked")}
    model = (f"{result.model} v{result.model_version}" if result.model_version
             else "none (prediction and error signals not checked)")
    sections = "".join(_signal_section(result, name) for name in result.drifted_signals())
    segments = _segment_section(segment_table(result))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>levydrift check: {_e(verdict)}</title><style>{STYLE}</style></head><body>
<h1>levydrift drift report</h1>
<div class="verdict {'drift' if result.drifted else 'ok'}">{_e(verdict)}</div>
<dl class="meta">
<dt>data</dt><dd>{_e(result.source)} ({result.rows:,} rows)</dd>
<dt>model</dt><dd>{_e(model)}</dd>
<dt>compared against</dt><dd>{_e(result.reference)}</dd>
<dt>signals</dt><dd>{counts['drift']} drifted, {counts['clean']} clean,
{counts['not checked']} not checked</dd>
<dt>exit code</dt><dd>{result.exit_code}</dd></dl>
<h2>Every signal checked</h2>
{_table(rows)}
<p class="muted">Effects: <em>sd</em> is the current window's mean in reference standard
deviations (rank-based, so one huge parcel is not a change); <em>spread ×</em> the ratio of
the current to the reference spread; <em>pp</em> percentage points of a category's share.
Rows count from 1 in arrival order; the onset is the detectors' estimate of where the change
began.</p>
{segments}
{sections}
<footer>Generated {generated} by levydrift. Machine-readable summary:
<a href="{_e(summary_name)}">{_e(summary_name)}</a>.</footer>
</body></html>
"""


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("<tr><th>signal</th><th>kind</th><th>status</th><th>detector</th>"
            "<th>statistic / threshold<br><span class=muted>(clean: at the last row)</span>"
            "</th><th>effect</th><th>where</th><th>onset row</th>"
            "<th>detected at row</th></tr>")
    return f'<table class="signals">{head}{"".join(_table_row(row) for row in rows)}</table>'


def _table_row(row: dict[str, Any]) -> str:
    status = row["status"]
    badge = {"drift": "drift", "clean": "clean"}.get(status, "skipped")
    cells = [f"<td><strong>{_e(row['signal'])}</strong></td>", f"<td>{_e(row['kind'])}</td>",
             f'<td><span class="badge {badge}">{_e(status)}</span></td>']
    if status == "not checked":
        cells.append(f'<td colspan="6" class="muted">{_e(row["reason"])}</td>')
    else:
        ratio = (f"{row['statistic']:.3g} / {row['threshold']:.3g}"
                 if np.isfinite(row["threshold"]) else "")
        episodes = (f' <span class="muted">({row["episodes"]} episodes)</span>'
                    if row.get("episodes", 1) > 1 else "")
        effect = _e(row["effect"]) + episodes if status == "drift" else ""
        cells += [f"<td>{_e(row['detector'])}</td>", f'<td class="num">{ratio}</td>',
                  f'<td class="effect">{effect}</td>',
                  f'<td>{_e(", ".join(row.get("segments", [])))}</td>',
                  f'<td class="num">{_row_number(row.get("onset_row"))}</td>',
                  f'<td class="num">{_row_number(row.get("detected_row"))}</td>']
    return f'<tr class="{badge}">' + "".join(cells) + "</tr>"


def _segment_section(rows: list[dict[str, Any]]) -> str:
    """Where the drift is: one row per segment (county, or the configured segment key) with
    drift, or nothing when the file is clean."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td><strong>{_e(row['segment'])}</strong></td>"
        f"<td>{_e(', '.join(row['signals']))}</td><td>{_e(', '.join(row['kinds']))}</td>"
        f'<td class="num">{_row_number(row["onset_row"])}</td>'
        f'<td class="num">{_row_number(row["detected_row"])}</td>'
        f'<td class="num">{row["episodes"]}</td></tr>' for row in rows)
    return ('<h2>Where</h2><table class="signals"><tr><th>segment</th><th>drifted signals'
            '</th><th>kind</th><th>onset row</th><th>first detected at row</th>'
            f'<th>episodes</th></tr>{body}</table>')


def _row_number(row: int | None) -> str:
    return "" if row is None else f"{row:,}"


def _signal_section(result: CheckResult, signal: str) -> str:
    pairs = [(d, f) for d, f in result.findings() if f.signal == signal]
    items = "".join(f"<li>{_e(finding_line(d, f, result.reference_kind))}</li>"
                    for d, f in pairs)
    image = _figure_png(result, signal, pairs)
    kind = result.signal_kinds.get(signal, pairs[0][0].kind)
    return (f'<h2 id="{_e(signal)}">{_e(signal)} <span class="muted">({_e(kind)} drift)'
            f'</span></h2><ul class="findings">{items}</ul>'
            f'<img alt="{_e(signal)}: reference against current distribution, and the time '
            f'course" src="data:image/png;base64,{image}">')


# ---------------------------------------------------------------------- the figures

def _figure_png(result: CheckResult, signal: str,
                pairs: list[tuple[DriftDecision, SignalFinding]]) -> str:
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(12, 4.3), dpi=96, width_ratios=(1, 1.6), layout="constrained")
    try:
        _distribution(left, result, signal, pairs)
        _time_course(right, result, signal, pairs)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _current_rows(result: CheckResult, pairs: list[tuple[DriftDecision, SignalFinding]]
                  ) -> tuple[int, int]:
    """(first, end) 0-based rows of the current data: from the first onset to the end."""
    decision, finding = pairs[0]
    onset = finding.current.first_position
    return (decision.detected_at if onset is None else onset), result.rows


def _distribution(axes: plt.Axes, result: CheckResult, signal: str,
                  pairs: list[tuple[DriftDecision, SignalFinding]]) -> None:
    first, end = _current_rows(result, pairs)
    current = result.columns[signal][first:end]
    reference = result.reference_columns.get(signal)
    where = f"rows {first + 1:,}-{end:,}"
    if reference is None:
        reference = np.asarray([])
    if pairs[0][1].effect_measure == "share_change":
        _share_bars(axes, np.asarray(reference, dtype=object), np.asarray(current, dtype=object),
                    where)
    else:
        _ecdfs(axes, _finite(reference), _finite(current), signal, where)
    axes.set_title("distribution: reference against current", fontsize=10, loc="left")


def _ecdfs(axes: plt.Axes, reference: np.ndarray, current: np.ndarray, signal: str,
           where: str) -> None:
    """Empirical CDFs: a shift shows as one curve beside the other, a change of spread as
    curves that cross; no binning to hide either."""
    both = np.concatenate([reference, current])
    if both.size == 0:
        axes.text(0.5, 0.5, "no values", ha="center", transform=axes.transAxes)
        return
    low, high = np.quantile(both, [0.005, 0.995])  # heavy tails would squash the body
    if high <= low:
        low, high = low - 0.5, high + 0.5
    floor = 1.0
    for values, colour, label, width in (
            (reference, REFERENCE_COLOUR, f"reference (n={reference.size:,})", 2.4),
            (current, CURRENT_COLOUR, f"current, {where} (n={current.size:,})", 1.6)):
        if values.size:
            ordered = np.sort(values)
            shares = np.arange(1, ordered.size + 1) / ordered.size
            floor = min(floor, float(np.mean(ordered <= low)))
            step = max(1, ordered.size // MAX_POINTS)
            axes.step(ordered[::step], shares[::step], where="post", color=colour,
                      linewidth=width, label=label)
    if low > 0 and high / low > 50:
        axes.set_xscale("log")
    axes.set_xlim(low, high)
    # A value most records share (no new construction: 0) would flatten the rest: start the
    # axis just below it.
    bottom = np.floor(max(floor - 0.05, 0.0) * 10) / 10
    axes.set_ylim(bottom, 1)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if bottom < 0.8 else 1))
    zoom = f"; axis from {bottom:.0%}" if bottom > 0 else ""
    axes.set_xlabel(f"{signal} ({_unit(signal)}; 0.5-99.5% range{zoom})", fontsize=9)
    axes.set_ylabel("share of records at or below", fontsize=9)
    axes.grid(alpha=0.25)
    _tick_format(axes, signal, "x")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)


def _share_bars(axes: plt.Axes, reference: np.ndarray, current: np.ndarray,
                where: str) -> None:
    reference_shares = _shares(reference)
    current_shares = _shares(current)
    names = sorted(set(reference_shares) | set(current_shares),
                   key=lambda n: -max(reference_shares.get(n, 0.0), current_shares.get(n, 0.0)))
    names = names[:TOP_CATEGORIES][::-1]  # largest at the top
    positions = np.arange(len(names))
    axes.barh(positions + 0.2, [reference_shares.get(n, 0.0) for n in names], height=0.4,
              color=REFERENCE_COLOUR, alpha=0.6, label=f"reference (n={reference.size:,})")
    axes.barh(positions - 0.2, [current_shares.get(n, 0.0) for n in names], height=0.4,
              color=CURRENT_COLOUR, label=f"current, {where} (n={current.size:,})")
    axes.set_yticks(positions, names, fontsize=8)
    axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.set_xlabel("share of records", fontsize=9)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)


def _time_course(axes: plt.Axes, result: CheckResult, signal: str,
                 pairs: list[tuple[DriftDecision, SignalFinding]]) -> None:
    rows, values, label = _series(result, signal, pairs[0][1])
    step = max(1, len(rows) // MAX_POINTS)
    _shade_windows(axes, pairs)
    axes.plot(rows[::step], values[::step], color="#1f4e79", linewidth=1.1, label=label)
    level = _reference_level(result, signal, pairs[0][1])
    if level is not None:
        axes.axhline(level, color=REFERENCE_COLOUR, linewidth=1.4, linestyle="--",
                     label="reference level")
    for index, (decision, _) in enumerate(pairs):
        axes.axvline(decision.detected_at + 1, color=DETECTION_COLOUR, linewidth=1.4,
                     label="detection" if index == 0 else None)
    if len(values):
        low, high = np.quantile(values, [0.005, 0.995])  # robust: start-up noise is dropped
        if level is not None:
            low, high = min(low, level), max(high, level)
        pad = (high - low) * 0.15 or abs(high) * 0.05 or 1.0
        axes.set_ylim(low - pad, high + pad)
    axes.set_xlim(1, result.rows)
    axes.set_xlabel("row (arrival order)", fontsize=9)
    axes.set_ylabel(label, fontsize=9)
    axes.set_title("time course", fontsize=10, loc="left")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    if pairs[0][1].effect_measure == "share_change":
        axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    else:
        _tick_format(axes, signal, "y")
    axes.grid(alpha=0.25)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, fontsize=8,
                frameon=False)


def _series(result: CheckResult, signal: str,
            finding: SignalFinding) -> tuple[np.ndarray, np.ndarray, str]:
    """(row numbers, rolling values, label): what the detector that fired watched. Only
    full windows are drawn, so the first few values do not spike the axis."""
    column = result.columns[signal]
    rows = np.arange(1, len(column) + 1)
    if finding.effect_measure == "share_change":
        category = top_category(finding) or ""
        values = (np.asarray(column, dtype=object) == category).astype(float)
        what = f"share of {category!r}"
    else:
        values = np.asarray(column, dtype=float)
        present = np.isfinite(values)
        rows, values = rows[present], values[present]
        what = "spread (std)" if finding.effect_measure == "std_ratio" else "mean"
    window = max(25, min(1000, len(values) // 60))
    if len(values) < window:
        return rows[:0], values[:0], f"rolling {what}"
    if finding.effect_measure == "std_ratio":
        rolled = _rolling_std(values, window)
    else:
        rolled = _rolling_mean(values, window)
    return rows[window - 1:], rolled, f"rolling {what} ({window} values)"


def _reference_level(result: CheckResult, signal: str, finding: SignalFinding) -> float | None:
    """The baseline's value of what the time course draws (mean, spread or share)."""
    reference = result.reference_columns.get(signal)
    if reference is None or len(reference) == 0:
        return None
    if finding.effect_measure == "share_change":
        return float(np.mean(np.asarray(reference, dtype=object) == (top_category(finding)
                                                                     or "")))
    values = _finite(reference)
    if values.size == 0:
        return None
    return float(values.std() if finding.effect_measure == "std_ratio" else values.mean())


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    sums = np.cumsum(np.insert(values, 0, 0.0))
    return (sums[window:] - sums[:-window]) / window


def _rolling_std(values: np.ndarray, window: int) -> np.ndarray:
    mean = _rolling_mean(values, window)
    square = _rolling_mean(values * values, window)
    return np.sqrt(np.maximum(square - mean * mean, 0.0))


def _shade_windows(axes: plt.Axes, pairs: list[tuple[DriftDecision, SignalFinding]]) -> None:
    for index, (decision, finding) in enumerate(pairs):
        reference = finding.reference
        if reference.first_position is not None and reference.last_position is not None:
            axes.axvspan(reference.first_position + 1, reference.last_position + 1,
                         color=REFERENCE_COLOUR, alpha=0.12,
                         label="reference window" if index == 0 else None)
        first = finding.current.first_position
        if first is not None:
            axes.axvspan(first + 1, decision.detected_at + 1, color=CURRENT_COLOUR, alpha=0.3,
                         label="onset to detection" if index == 0 else None)


def _shares(values: np.ndarray) -> dict[str, float]:
    names = [str(v) for v in values if v is not None and v == v and v != ""]
    if not names:
        return {}
    labels, counts = np.unique(np.asarray(names, dtype=object), return_counts=True)
    return {str(label): float(count) / len(names) for label, count in zip(labels, counts,
                                                                          strict=True)}


def _finite(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def _unit(signal: str) -> str:
    return "dollars" if signal in DOLLARS else UNITS.get(signal, "value")


def _tick_format(axes: plt.Axes, signal: str, axis: str) -> None:
    if signal not in DOLLARS:
        return
    target = axes.xaxis if axis == "x" else axes.yaxis
    target.set_major_formatter(FuncFormatter(_dollars))


def _dollars(value: float, _: Any = None) -> str:
    size = abs(value)
    if size >= 1e6:
        return f"${value / 1e6:.1f}M"
    if size >= 1e3:
        return f"${value / 1e3:.0f}k"
    return f"${value:.0f}"


def _e(text: object) -> str:
    return html.escape(str(text))
