"""The drift report in a real browser: Debian's Chromium, headless, opens the page from disk
(no network: the plots are embedded) and writes a screenshot into the test's output directory,
for people to look at; the test checks that the page rendered what it says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from levydrift.cli import main
from levydrift.commands.simulate import write_file
from levydrift.simulator import LevySimulator, SimulatorConfig
from tests.deploy.conftest import REPO, require_tool

SAMPLE = REPO / "data" / "sample" / "levy_records.parquet"
WIDTH, HEIGHT = 1280, 2000


def render(chromium: str, page: Path, arguments: list[str], profile: Path) -> str:
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", *arguments, page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("scenario", ["sample", "new-property-class"])
def test_the_report_renders_in_headless_chromium(
        scenario: str, tmp_path_factory: pytest.TempPathFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    chromium = require_tool("chromium")
    output = tmp_path_factory.mktemp(f"report-{scenario}")
    data = SAMPLE
    if scenario != "sample":
        data = output / f"{scenario}.parquet"
        # 30 s apart, the rows span 8 days: a new class shows in the mix of closed days.
        write_file(LevySimulator(SimulatorConfig(scenario=scenario, change_at=12_000,
                                                 labelled_share=0.5,
                                                 event_interval_ms=30_000)), 24_000, data)
    assert main(["check", "--data-path", str(data), "--registry", str(output / "no-models"),
                 "--report", str(output / "report")]) == 1
    page = output / "report" / "index.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # opens offline, from disk

    dom = render(chromium, page, ["--dump-dom"], tmp_path_factory.mktemp("profile"))
    assert dom.count('<span class="badge ') == 12  # one row per configured signal
    assert dom.count('<img alt="') == text.count('<img alt="') >= 1

    screenshot = output / f"report-{scenario}.png"
    render(chromium, page, [f"--screenshot={screenshot}", f"--window-size={WIDTH},{HEIGHT}"],
           tmp_path_factory.mktemp("profile"))
    image = np.asarray(Image.open(screenshot).convert("RGB"))
    assert image.shape == (HEIGHT, WIDTH, 3)
    top = image[:200].reshape(-1, 3)
    assert (np.abs(top - (253, 236, 234)).sum(axis=1) < 12).any()  # the red drift verdict
    # The plots drew (their PNGs decoded): the drawing colours of the curves are on screen.
    assert (np.abs(image.reshape(-1, 3) - (224, 123, 40)).sum(axis=1) < 30).sum() > 500
    with capsys.disabled():
        print(f"\nscreenshot of the {scenario} report: {screenshot}")
