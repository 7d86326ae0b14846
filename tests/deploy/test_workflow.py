"""The scheduled retraining workflow: actionlint (with shellcheck on the `run:` scripts when
installed) and the properties the operations contract asks for."""

from __future__ import annotations

import re

from tests.deploy.conftest import REPO, run

WORKFLOW = REPO / ".github" / "workflows" / "auto_retraining.yml"


def test_workflow_passes_actionlint(actionlint: str) -> None:
    result = run([actionlint, "-no-color", str(WORKFLOW.relative_to(REPO))], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_schedule_permissions_and_pins() -> None:
    text = WORKFLOW.read_text()
    assert re.search(r"^\s+- cron: \"[^\"]+\"", text, re.M)
    assert re.search(r"^  workflow_dispatch:", text, re.M)
    assert re.search(r"^permissions:\n  contents: write\b.*\n  issues: write\b", text, re.M)
    uses = re.findall(r"uses:\s*(\S+)", text)
    assert uses
    for action in uses:  # pinned to a full commit SHA, not a movable tag
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), action
    # The logic is in levydrift commands (run locally by test_workflow_steps.py); the shipped
    # sample is the default source, so a scheduled run works before anything is configured.
    assert 'levydrift daily --source "$DATA_SOURCE"' in text and "levydrift notify" in text
    assert "'data/sample/levy_records.parquet'" in text
    assert (REPO / "data" / "sample" / "levy_records.parquet").stat().st_size < 1_000_000
    assert "actions/upload-artifact@" in text
    # Only the files levydrift daily lists when the champion changed, never models/ whole.
    assert "git add --force models/" not in text and "commit-paths.txt" in text
