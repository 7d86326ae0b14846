"""`make test` and the operations tests' tools: installed when the user may, else one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.deploy.tools import INSTALL_SCRIPT, REPO, TOOLS, install_command


def test_root_or_passwordless_sudo_installs_the_tools_and_anyone_else_is_told() -> None:
    script = str(REPO / INSTALL_SCRIPT)
    assert install_command(0, passwordless_sudo=False) == [script]
    assert install_command(1000, passwordless_sudo=True) == ["sudo", "-n", script]
    assert install_command(1000, passwordless_sudo=False) is None


def test_a_machine_without_the_tools_gets_one_line_naming_them_and_the_fix(
        tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    environment = {"PATH": str(empty), "HOME": str(tmp_path)}  # no tool, no Go workspace
    result = subprocess.run([sys.executable, "-m", "tests.deploy.tools", "report"], cwd=REPO,
                            env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"make test: skipped the operations tests that need {', '.join(TOOLS)} (not "
        f"installed); install them with: sudo {INSTALL_SCRIPT}"]


def test_make_test_ensures_the_tools_before_and_reports_after_the_suite() -> None:
    recipe = (REPO / "Makefile").read_text().split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    ensure, suite, report = (recipe.index(step) for step in (
        "-m tests.deploy.tools ensure", "-m pytest", "-m tests.deploy.tools report"))
    assert ensure < suite < report
    assert "exit $$status" in recipe  # the report never hides a failed suite

