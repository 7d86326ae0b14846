#!/usr/bin/env bash
# Resolve pyproject.toml's dependencies and lock them, with hashes, for CPython 3.11+ on any
# platform (uv's universal resolution). `make lock` and `make upgrade` run this:
#   deploy/requirements.lock        the runtime closure of [project].dependencies (the image)
#   deploy/requirements-build.lock the build backend, [build-system].requires (image, make install)
#   deploy/requirements-dev.lock    the runtime versions above plus the test and bench extras
#                                   (make install, hence make test and CI)
# Versions already locked are kept; pass --upgrade (or --upgrade-package NAME) to move them.
# Usage: deploy/ci/lock-requirements.sh [--upgrade | --upgrade-package NAME ...]
set -euo pipefail
cd "$(dirname "$0")/../.."

UV_VERSION=0.13.8  # the resolver; PyPI is all it needs
python="${PYTHON:-.venv/bin/python}"
uv="$(dirname "$python")/uv"
if [ "$("$uv" --version 2>/dev/null)" != "uv $UV_VERSION" ]; then
  "$python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi

compile() {
  "$uv" pip compile --universal --python-version 3.11 --generate-hashes --quiet \
    --custom-compile-command "make lock" "$@"
}
compile pyproject.toml -o deploy/requirements.lock "${@}"
"$python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))
                                   ["build-system"]["requires"]))' \
  | compile - -c deploy/requirements.lock -o deploy/requirements-build.lock "${@}"
compile pyproject.toml --extra test --extra bench -c deploy/requirements.lock \
  -o deploy/requirements-dev.lock "${@}"
echo "locked: deploy/requirements.lock, deploy/requirements-build.lock, deploy/requirements-dev.lock"
