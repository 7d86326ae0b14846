#!/usr/bin/env bash
# Regenerate deploy/requirements.lock from the venv: the pinned closure of the runtime
# dependencies in pyproject.toml (test and bench extras excluded). Usage: deploy/ci/lock-requirements.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
python="${PYTHON:-.venv/bin/python}"
{
  echo "# Pinned runtime dependencies of levy-drift (the closure of [project].dependencies in"
  echo "# pyproject.toml), taken from the development venv so the image runs what the tests ran."
  echo "# Regenerate after changing dependencies: see deploy/ci/lock-requirements.sh."
  "$python" - <<'PY'
import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()

# [project].dependencies are the runtime ones (extras are for tests and benchmarks); follow
# them transitively through the installed distributions.
with open("pyproject.toml", "rb") as handle:
    roots = tomllib.load(handle)["project"]["dependencies"]
pending = [Requirement(text).name for text in roots]
pinned = {}
while pending:
    name = canonical(pending.pop())
    if name in pinned:
        continue
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        continue  # a dependency for another platform
    pinned[name] = dist.version
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            pending.append(requirement.name)
for name in sorted(pinned):
    print(f"{name}=={pinned[name]}")
PY
} > deploy/requirements.lock
echo "wrote deploy/requirements.lock"
