"""The scheduled workflow's steps, run locally in order as GitHub would run them: the `run:`
scripts of .github/workflows/auto_retraining.yml with the job's and steps' environment, its
`${{ }}` expressions evaluated for a repository that configured nothing but a webhook, in a
clone of a temporary repository holding the shipped sample. The `uses:` steps (checkout,
setup-python, upload-artifact) and the pip install are what GitHub provides; the test stands
in for them (a fresh clone, this venv, a file:// report URL)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import REPO
from tests.http_receiver import Received, http_receiver

WORKFLOW = REPO / ".github" / "workflows" / "auto_retraining.yml"
SAMPLE = REPO / "data" / "sample" / "levy_records.parquet"
PROVIDED_BY_GITHUB = {"Install levy-drift (pinned dependencies, as in the image)"}
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
UNSET_BY_DEFAULT = ("inputs.", "secrets.", "vars.")  # empty on GitHub when not configured


def evaluate(text: str, context: dict[str, str]) -> str:
    """Substitute each ``${{ a || b || 'literal' }}`` (the only form the workflow uses)."""
    def one(match: re.Match[str]) -> str:
        for operand in (part.strip() for part in match.group(1).split("||")):
            if operand.startswith("'") and operand.endswith("'"):
                value = operand[1:-1]
            elif operand in context:
                value = context[operand]
            elif operand.startswith(UNSET_BY_DEFAULT):
                value = ""
            else:
                raise AssertionError(f"the test does not know the workflow's {operand!r}")
            if value:
                return value
        return ""
    return EXPRESSION.sub(one, text)


def git(*arguments: str, cwd: Path) -> str:
    return subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True,
                          text=True, timeout=60).stdout


def run_workflow(clone: Path, context: dict[str, str], tmp: Path) -> list[str]:
    """Every `run:` step of the job, in order; returns the step summary's lines."""
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["drift-check"]
    summary, output = tmp / "step-summary.md", tmp / "github-output"
    summary.write_text("")
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(("LEVYDRIFT_", "GITHUB_"))}
    base.update(PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
                GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(output),
                GITHUB_REF_NAME="main", CI="true")
    base.update({key: evaluate(str(value), context) for key, value in job["env"].items()})
    for step in job["steps"]:
        if "uses" in step or step.get("name") in PROVIDED_BY_GITHUB:
            continue
        assert step.get("if", "always()") == "always()", step  # conditions live in commands
        env = {**base, **{key: evaluate(str(value), context)
                          for key, value in step.get("env", {}).items()}}
        script = tmp / "step.sh"
        script.write_text(evaluate(step["run"], context))
        result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail",
                                 str(script)], cwd=clone, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, (step["name"], result.stdout, result.stderr)
    return summary.read_text().splitlines()


def fresh_clone(remote: Path, where: Path) -> Path:
    git("clone", "--quiet", str(remote), str(where), cwd=remote.parent)
    return where


def test_the_workflow_steps_promote_commit_and_alert_once(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git("init", "--quiet", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    seed = tmp_path / "seed"
    for source in (WORKFLOW, SAMPLE, REPO / ".gitignore"):
        target = seed / source.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    git("init", "--quiet", "-b", "main", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "add", ".", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "--quiet", "-m",
        "the repository with its sample", cwd=seed)
    git("push", "--quiet", str(remote), "main", cwd=seed)

    with http_receiver() as (webhook, received):
        context = {"secrets.LEVYDRIFT_NOTIFY_WEBHOOK_URLS": f"{webhook}/hooks/levy",
                   "github.server_url": "https://github.example", "github.repository": "o/r",
                   "github.run_id": "1", "github.token": "not-used"}
        first = fresh_clone(remote, tmp_path / "run-1")
        context["steps.report.outputs.artifact-url"] = (first / "reports/daily/report"
                                                        ).as_uri()
        summary = run_workflow(first, context, tmp_path)
        commits = git("log", "--format=%H", "main", cwd=remote).split()
        assert len(commits) == 2, summary
        message = git("log", "-1", "--format=%B", "main", cwd=remote)
        assert message.startswith("models: levy-impact v1 promoted after drift in levy_rate\n")
        assert "- gate: promoted: no champion to compare with" in message
        assert "distribution drift in `levy_rate` at row" in message
        files = git("show", "--name-only", "--format=", "main", cwd=remote).split()
        for name in ("model.skops", "manifest.json", "reference.parquet", "lineage.json"):
            assert f"models/levy-impact/versions/1/{name}" in files
        assert "models/levy-impact/aliases.json" in files
        assert not any(name.startswith("reports/") for name in files)
        assert any("promoted after drift in levy_rate" in line for line in summary)
        alerts = _alerts(received)
        assert [alert["kind"] for alert in alerts] == ["promoted"]
        assert alerts[0]["report_url"] == context["steps.report.outputs.artifact-url"]
        assert alerts[0]["run_url"] == "https://github.example/o/r/actions/runs/1"
        assert received[0].path == "/hooks/levy"

        # The next day, the same data: the drift is handled; no version, commit or alert.
        second = fresh_clone(remote, tmp_path / "run-2")
        context["steps.report.outputs.artifact-url"] = (second / "reports/daily/report"
                                                        ).as_uri()
        summary = run_workflow(second, context, tmp_path)
        assert git("log", "--format=%H", "main", cwd=remote).split() == commits
        assert sorted(p.name for p in (second / "models/levy-impact/versions").iterdir()) \
            == ["1"]
        assert len(_alerts(received)) == 1
        assert any("already handled" in line for line in summary), summary
        assert (second / "reports/daily/report/index.html").exists()


def _alerts(received: list[Received]) -> list[dict[str, Any]]:
    return [request.body for request in received]
