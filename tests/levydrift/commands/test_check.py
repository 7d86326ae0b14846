"""``levydrift check``: exit codes, the signals each simulator scenario moves, bad files, the
report. Runs the command in-process (``levydrift.cli.main``) on files the simulator wrote."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pandas
import pytest

from detectors.config import DetectorSettings
from levydrift.cli import main
from levydrift.commands.simulate import write_file
from levydrift.features import to_model_frame
from levydrift.simulator import LevySimulator, SimulatorConfig
from tests.champions import train_champion
from trainer.model import ModelParams
from trainer.registry import ModelRegistry
from trainer.training import TrainingRequest, train_and_register

RECORDS = 24_000
CHANGE_AT = 12_000  # after the 5,000-row warm-up, with room for labelled error values
MODEL_SIGNALS = {"prediction", "abs_error", "relative_error"}
# The signal each scenario must be caught by (what its change moves first).
EXPECTED_SIGNAL = {
    "levy-rate-change": "levy_rate",
    "reassessment": "levy_rate",  # levy limits compress the reassessed districts' rates
    "exemption-policy": "relative_error",  # invisible in the features, visible in the errors
    "unit-bug": "prior_levy_amount",
    "new-property-class": "property_class",
    "gradual": "levy_rate",
    "variance": "levy_rate",
}


def scenario_simulator(scenario: str) -> LevySimulator:
    # 30 s apart, the rows span 8 days: the mix of categories is judged per closed day of
    # event time (detectors/composition.py), so a file within one day has no mix to compare.
    # Each county learns its own reference from its first 2,000 values (labelled ones for the
    # errors: every row is labelled); the one-county scenarios hit Grant (20 % of rows), which
    # has them by row 10,000, before the change at 12,000.
    return LevySimulator(SimulatorConfig(
        scenario=scenario, change_at=CHANGE_AT, labelled_share=1.0, event_interval_ms=30_000,
        county="Grant",
        duration=4_000 if scenario == "unit-bug" else None))


def simulated(directory: Path, scenario: str, suffix: str = ".csv",
              records: int = RECORDS) -> Path:
    path = directory / f"{scenario}{suffix}"
    if not path.exists():
        write_file(scenario_simulator(scenario), records, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("check-files")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose champion was trained on the same simulated world's history."""
    root = tmp_path_factory.mktemp("registry")
    history = LevySimulator(SimulatorConfig(labelled_share=1.0)).columns(500_000, 510_000)
    train_and_register(ModelRegistry(root), "levy-impact", TrainingRequest(
        frame=to_model_frame(history, include_target=True), trigger_event_ids=[],
        training_offsets=[], code_version="test", params=ModelParams(max_iter=40)))
    return root


def check(capsys: pytest.CaptureFixture[str], *arguments: str | Path) -> tuple[int, str, str]:
    code = main(["check", *map(str, arguments)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_no_drift_in_the_none_scenario_exits_0(files: Path, registry: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, "--data-path", simulated(files, "none"),
                         "--registry", registry)
    assert code == 0
    assert "no drift" in out and "levy-impact v1" in out


@pytest.mark.parametrize("scenario", sorted(EXPECTED_SIGNAL))
def test_each_scenario_exits_1_naming_its_signals(scenario: str, files: Path, registry: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = simulated(files, scenario)
    truth = scenario_simulator(scenario).ground_truth(RECORDS)
    code, out, _ = check(capsys, "--data-path", path, "--registry", registry,
                         "--report", files / f"{scenario}-report")
    assert code == 1, out
    summary = json.loads((files / f"{scenario}-report" / "summary.json").read_text())
    drifted = summary["drifted_signals"]
    assert EXPECTED_SIGNAL[scenario] in drifted, drifted
    # Only signals the scenario really moves (the model signals follow the levy itself).
    assert set(drifted) <= set(truth.affected_signals) | MODEL_SIGNALS, drifted
    first = min(episode["detected_at_row"] for episode in summary["episodes"])
    assert first > truth.change_index, "an alarm before the change is a false alarm"
    assert f"DRIFT: {len(summary['episodes'])} episode(s)" in out
    assert re.search(rf"{re.escape(EXPECTED_SIGNAL[scenario])}\s+at row [\d,]+: ", out)


def test_report_has_one_plot_per_drifted_signal(files: Path, registry: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    target = files / "unit-bug-report.html"
    code, out, _ = check(capsys, "--data-path", simulated(files, "unit-bug"),
                         "--registry", registry, "--report", target)
    assert code == 1
    page = target.read_text()
    summary = json.loads(target.with_suffix(".json").read_text())
    assert summary["drift"] is True and summary["exit_code"] == 1
    assert page.count('<img alt="') == len(summary["drifted_signals"]) >= 2
    assert page.count("data:image/png;base64,iVBOR") == len(summary["drifted_signals"])
    for signal in summary["drifted_signals"]:
        assert f'<h2 id="{signal}">{signal} ' in page
    assert f"report: {target}" in out


def test_report_table_lists_every_configured_signal(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Drifted, clean and not-checked signals alike, each with its status and the numbers
    behind it; the signals a file without a model cannot feed say why."""
    target = files / "table-report"
    code, _, _ = check(capsys, "--data-path", simulated(files, "levy-rate-change"),
                       "--registry", files / "empty-registry", "--report", target)
    assert code == 1
    page = (target / "index.html").read_text()
    rows = json.loads((target / "summary.json").read_text())["signals"]
    configured = DetectorSettings().all_signals()
    assert [row["signal"] for row in rows] == list(configured)
    table = page.split('<table class="signals">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr class=") == len(configured)
    by_name = {row["signal"]: row for row in rows}
    for name, row in by_name.items():
        assert f"<strong>{name}</strong>" in table
        assert row["status"] in ("drift", "clean", "not checked")
    drifted = by_name["levy_rate"]
    assert drifted["status"] == "drift" and drifted["statistic"] >= drifted["threshold"]
    assert re.fullmatch(r"mean shift [+-]\d+\.\d\d sd|spread ×\d+\.\d\d", drifted["effect"])
    assert drifted["onset_row"] <= drifted["detected_row"]
    assert f"{drifted['detected_row']:,}" in table
    for name in ("prediction", "abs_error", "relative_error"):
        assert by_name[name] == {"signal": name, "kind": by_name[name]["kind"],
                                 "status": "not checked",
                                 "reason": "no champion model to predict with"}
    clean = [row for row in rows if row["status"] == "clean"]
    assert clean and all(row["statistic"] < row["threshold"] for row in clean)


def test_no_drift_report_has_no_plots(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = check(capsys, "--data-path", simulated(files, "none"),
                       "--registry", files / "empty-registry", "--report", files / "none-rep")
    assert code == 0
    page = (files / "none-rep" / "index.html").read_text()
    assert "No drift" in page and "<img" not in page
    assert page.count('<span class="badge clean">') == 9  # every feature checked and clean
    assert json.loads((files / "none-rep" / "summary.json").read_text())["drift"] is False


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_parquet_and_jsonl_give_the_same_findings(suffix: str, files: Path, registry: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, csv_out, _ = check(capsys, "--data-path", simulated(files, "levy-rate-change"),
                          "--registry", registry)
    code, out, _ = check(capsys, "--data-path",
                         simulated(files, "levy-rate-change", suffix), "--registry", registry)
    assert code == 1
    assert out.splitlines()[1:] == csv_out.splitlines()[1:]


def test_explicit_reference_file(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = files / "reference.csv"
    write_file(LevySimulator(SimulatorConfig(labelled_share=0.5)), 6_000, reference)
    current = files / "short-rate-change.csv"
    config = SimulatorConfig(scenario="levy-rate-change", change_at=1_000)
    write_file(LevySimulator(config), 4_000, current)  # shorter than the warm-up
    code, out, _ = check(capsys, "--data-path", current, "--reference", reference,
                         "--registry", files / "empty-registry")
    assert code == 1, out
    assert "levy_rate" in out and "(reference file)" in out


# ---------------------------------------------------------------------- bad files: exit 2

def _one_line_error(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    code, out, err = check(capsys, "--data-path", path)
    assert code == 2, out + err
    assert err.count("\n") == 1 and err.startswith("levydrift check: "), err
    return err


def _csv_lines(files: Path) -> list[str]:
    source = simulated(files, "none", records=RECORDS)
    with source.open() as handle:
        return [next(handle) for _ in range(4)]


def test_missing_column(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, *rows = _csv_lines(files)
    names = header.strip().split(",")
    drop = names.index('"levy_rate"') if '"levy_rate"' in names else names.index("levy_rate")
    path = files / "missing-column.csv"
    path.write_text("".join(",".join(v for i, v in enumerate(line.strip().split(","))
                                     if i != drop) + "\n" for line in [header, *rows]))
    err = _one_line_error(capsys, path)
    assert "row 1, column levy_rate: missing_field" in err


def test_wrong_type_names_row_and_column(files: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    header, *rows = _csv_lines(files)
    names = [name.strip('"') for name in header.strip().split(",")]
    column = names.index("assessed_value")
    cells = rows[2].strip().split(",")
    cells[column] = "lots"
    rows[2] = ",".join(cells) + "\n"
    path = files / "wrong-type.csv"
    path.write_text(header + "".join(rows))
    err = _one_line_error(capsys, path)
    assert "row 3, column assessed_value: wrong_type: expected a number, got string" in err


def test_out_of_range_in_jsonl(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = list(LevySimulator(SimulatorConfig()).records(0, 3))
    records[1]["levy_rate"] = 7.5
    path = files / "out-of-range.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    err = _one_line_error(capsys, path)
    assert "row 2, column levy_rate: out_of_range" in err


def test_a_row_dated_far_ahead_is_refused_as_the_consumer_refuses_it(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = list(LevySimulator(SimulatorConfig()).records(0, 3))
    records[2]["event_time"] = "2062" + records[2]["event_time"][4:]
    path = files / "dated-ahead.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    err = _one_line_error(capsys, path)
    assert "row 3, column event_time: invalid_value: '2062-01-01T00:00:02.000Z' is more " \
           "than 86400 s ahead of this machine's clock (consumer.max_event_time_ahead_s)" in err


@pytest.mark.parametrize("content", ["", "schema_version,record_id\n"])
def test_empty_file(content: str, files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = files / f"empty-{len(content)}.csv"
    path.write_text(content)
    assert "no records (the file is empty)" in _one_line_error(capsys, path)


def test_unreadable_files(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt = files / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    assert "cannot be read" in _one_line_error(capsys, corrupt)
    assert "no such file" in _one_line_error(capsys, files / "absent.csv")
    other = files / "records.xlsx"
    other.write_text("x")
    assert "unknown file type" in _one_line_error(capsys, other)


def test_usage_errors_exit_2(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(capsys, "--data-path", simulated(files, "none"), "--publish-events")
    assert code == 2 and "--trigger-retraining" in err


def test_trigger_retraining_trains_and_gates_a_candidate(
        files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEVYDRIFT_TRAINER_WINDOW_RECORDS", "4000")  # keep the fit quick
    monkeypatch.setenv("LEVYDRIFT_TRAINER_MAX_ITER", "20")
    root = tmp_path / "models"
    train_champion(root)
    code, out, _ = check(capsys, "--data-path", simulated(files, "exemption-policy"),
                         "--registry", root, "--trigger-retraining")
    assert code == 1
    line = next(line for line in out.splitlines() if line.startswith("retraining: "))
    assert re.search(r"levy-impact version 2: (promoted|rejected) \(MAE [\d.]+", line), line
    info = ModelRegistry(root).get("levy-impact", 2)
    assert info.metrics["champion_version"] == 1  # gated against the champion
    assert info.lineage["drift_event_ids"]  # the drift events that triggered it
    assert (root / "levy-impact" / "training_history.csv").read_text().count("\n") == 3


# ---------------------------------------------------------------------- the baseline

def test_the_champions_reference_sample_is_the_baseline(
        files: Path, registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With a champion, its holdout sample is the baseline, as in the consumer (it sets the
    reference mix of categories; each segment still learns its own numeric reference, see
    detectors/CALIBRATION.md section 7); without one, the warm-up. The output and the JSON
    summary say which."""
    path = simulated(files, "levy-rate-change")
    code, out, _ = check(capsys, "--data-path", path, "--registry", registry,
                         "--report", files / "from-champion")
    summary = json.loads((files / "from-champion" / "summary.json").read_text())
    assert code == 1 and "levy_rate" in summary["drifted_signals"], out
    assert summary["reference_kind"] == "champion"
    assert "champion levy-impact v1 reference sample (2,000 holdout rows" in out
    code, out, _ = check(capsys, "--data-path", path, "--registry", files / "empty-registry",
                         "--report", files / "from-warm-up")
    summary = json.loads((files / "from-warm-up" / "summary.json").read_text())
    assert summary["reference_kind"] == "warm-up" and "warm-up" in summary["reference"]


def test_reference_file_overrides_the_champion(files: Path, registry: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    reference = files / "reference-override.csv"
    write_file(LevySimulator(SimulatorConfig(labelled_share=0.5)), 6_000, reference)
    code, out, _ = check(capsys, "--data-path", simulated(files, "none"), "--registry",
                         registry, "--reference", reference, "--report", files / "override")
    summary = json.loads((files / "override" / "summary.json").read_text())
    assert summary["reference_kind"] == "file"
    assert summary["reference"].startswith(f"{reference} (6,000 rows, --reference)"), out


# ---------------------------------------------------------------------- handled once

def test_the_same_drift_is_retrained_once_and_a_new_episode_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEVYDRIFT_TRAINER_WINDOW_RECORDS", "4000")  # keep the fit quick
    monkeypatch.setenv("LEVYDRIFT_TRAINER_MAX_ITER", "20")
    root = tmp_path / "models"
    train_champion(root, records=4_000)
    january = tmp_path / "january.parquet"  # long enough for every county's own warm-up
    write_file(LevySimulator(SimulatorConfig(scenario="levy-rate-change", change_at=12_000,
                                             labelled_share=0.5, county="Grant")), 16_000,
               january)
    outputs = []
    for _ in range(2):
        code, out, _ = check(capsys, "--data-path", january, "--registry", root,
                             "--trigger-retraining")
        assert code == 1, out  # drift is there both times: the verdict does not change
        outputs.append(out)
    registry = ModelRegistry(root)
    assert registry.versions("levy-impact") == [1, 2]
    assert len(registry.training_history("levy-impact")) == 2
    assert "retraining: levy-impact version 2:" in outputs[0]
    assert "retraining: drift already handled by version(s) 2; nothing retrained" \
        in outputs[1], outputs[1]
    lineage = registry.get("levy-impact", 2).lineage
    assert lineage["training_window"]["offsets"][0]["topic"].startswith("file.january.parquet.")
    assert [e["event_id"] for e in lineage["drift_events"]] == lineage["drift_event_ids"]

    march = tmp_path / "march.parquet"  # a new file, a new episode two months later
    write_file(LevySimulator(SimulatorConfig(
        scenario="levy-rate-change", change_at=12_000, labelled_share=0.5, seed=7,
        county="Grant", start_time=datetime(2026, 3, 1, tzinfo=UTC))), 16_000, march)
    code, out, _ = check(capsys, "--data-path", march, "--registry", root,
                         "--trigger-retraining")
    assert code == 1, out
    assert "retraining: levy-impact version 3:" in out, out
    assert registry.versions("levy-impact") == [1, 2, 3]


def test_a_file_shorter_than_the_warm_up_exits_2_even_with_a_unit_bug(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = files / "short-unit-bug.csv"
    config = SimulatorConfig(scenario="unit-bug", change_at=2_500, duration=2_500)
    write_file(LevySimulator(config), 5_000, path)
    code, out, err = check(capsys, "--data-path", path, "--registry", files / "empty-registry")
    assert code == 2, out
    assert "5,000 rows cannot be judged" in err and "--reference" in err


@pytest.mark.parametrize("order", ["county-batches", "district-sorted", "roll-cycle"])
def test_realistic_arrival_orders_of_a_stationary_file_are_no_drift(
        order: str, files: Path, registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = files / f"none-{order}.csv"
    simulator = LevySimulator(SimulatorConfig(labelled_share=0.5, event_interval_ms=5_000))
    write_file(simulator, 60_000, path, order)
    settings = files / f"segments-{order}.toml"
    # Districts certify in turn, and a district's levy rate is its own: sorted by district,
    # the district is the segment.
    key = '["tax_district"]' if order == "district-sorted" else '["county"]'
    settings.write_text(f"[detectors]\nsegment_by = {key}\n")
    code = main(["--config", str(settings), "check", "--data-path", str(path),
                 "--registry", str(registry)])
    out = capsys.readouterr().out
    assert code == 0, out


def test_a_stationary_file_cut_mid_day_in_arrival_order_is_no_drift(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An export of what arrived since noon: counties upload in turn, so its first day holds
    the afternoon's counties only. Taken as the mix to compare with, that day made the whole
    days after it read as drift (here: Yakima and one of its districts as new categories,
    +48 pp)."""
    whole, cut = files / "roll-cycle-whole.parquet", files / "roll-cycle-cut.parquet"
    simulator = LevySimulator(SimulatorConfig(labelled_share=0.5, event_interval_ms=5_000))
    write_file(simulator, 90_000, whole, "roll-cycle")
    day = 86_400_000 // 5_000
    pandas.read_parquet(whole).iloc[day // 2:].to_parquet(cut, index=False)
    code = main(["check", "--data-path", str(cut), "--registry", str(files / "no-registry")])
    out = capsys.readouterr().out
    assert code == 0, out


def test_district_strata_keep_county_segments_through_a_district_sorted_file(
        files: Path, registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Sorted by district, each county's districts arrive one after another. With district
    strata (each value against its own district's first 2,000) the county stays the
    segment: no drift in a stationary file, and one district's levy vote is found in its
    county. Without them the same stationary file reads as drift."""
    stationary, vote = files / "strata-none.parquet", files / "strata-vote.parquet"
    config = SimulatorConfig(labelled_share=0.5, event_interval_ms=5_000)
    write_file(LevySimulator(config), 150_000, stationary, "district-sorted")
    write_file(LevySimulator(replace(config, scenario="district-levy-change", county="Grant",
                                     change_at=100_000)), 150_000, vote, "district-sorted")
    strata, plain = files / "strata.toml", files / "no-strata.toml"
    strata.write_text('[detectors]\nsegment_by = ["county"]\nstratify_by = ["tax_district"]\n')
    plain.write_text('[detectors]\nsegment_by = ["county"]\n')

    def run(settings: Path, path: Path) -> tuple[int, str]:
        code = main(["--config", str(settings), "check", "--data-path", str(path),
                     "--registry", str(registry)])
        return code, capsys.readouterr().out

    code, out = run(strata, stationary)
    assert code == 0, out
    assert run(plain, stationary)[0] == 1
    code, out = run(strata, vote)
    assert code == 1 and "levy_rate" in out and "in county=Grant" in out, out


def test_a_file_of_county_rolls_one_after_another_is_no_drift(
        files: Path, registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each county's rows of every day, then the next county's, as counties' exports are
    concatenated; saved by pandas after the sort, so with its index as a column. Read in that
    order, the first county's rows closed every day's window alone: 'share of Benton +72 pp'
    and 'new category' for the rest."""
    path = files / "none-by-county.csv"
    simulator = LevySimulator(SimulatorConfig(labelled_share=0.5, event_interval_ms=5_000))
    write_file(simulator, 60_000, path)
    rolls = pandas.read_csv(path).sort_values("county", kind="stable")
    rolls.to_parquet(files / "none-by-county.parquet")  # index kept: __index_level_0__
    code, out, err = check(capsys, "--data-path", files / "none-by-county.parquet",
                           "--registry", registry)
    assert code == 0, out + err


def test_the_report_says_where_a_one_county_change_happened(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The scenario moves Grant's levy rates only: the line, the table, the JSON summary and
    the HTML name county=Grant, with the onset before the detection."""
    code, out, _ = check(capsys, "--data-path", simulated(files, "levy-rate-change"),
                         "--registry", files / "empty-registry", "--report",
                         files / "where")
    assert code == 1, out
    assert re.search(r"levy_rate\s+at row [\d,]+: .* in county=Grant$", out, re.M), out
    summary = json.loads((files / "where" / "summary.json").read_text())
    (where,) = summary["segments"]
    assert where["segment"] == "county=Grant" and where["signals"] == ["levy_rate"]
    assert where["onset_row"] <= where["detected_row"]
    row = next(r for r in summary["signals"] if r["signal"] == "levy_rate")
    assert row["segments"] == ["county=Grant"]
    assert {e["segment"] for e in summary["episodes"]} == {"county=Grant"}
    html = (files / "where" / "index.html").read_text()
    assert "<h2>Where</h2>" in html and "<strong>county=Grant</strong>" in html
