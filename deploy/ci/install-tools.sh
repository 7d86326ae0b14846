#!/usr/bin/env bash
# Installs the tools the operations tests drive (tests/deploy), on Debian as root. Idempotent: each
# tool is installed only when missing. .ci/run calls it; developers can too.
#   promtool, prometheus  <- Debian package prometheus
#   amtool, prometheus-alertmanager <- Debian package prometheus-alertmanager
#   chromium              <- Debian package chromium (renders the drift report headless)
#   docker-compose        <- Debian package docker-compose (validates compose files, no engine)
#   shellcheck            <- Debian package shellcheck (actionlint uses it on `run:` scripts)
#   actionlint            <- Go module, into $(go env GOPATH)/bin (not packaged by Debian 12)
set -euo pipefail

ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.7}"
export DEBIAN_FRONTEND=noninteractive

packages=()
command -v promtool >/dev/null || packages+=(prometheus)
command -v prometheus >/dev/null || packages+=(prometheus)
command -v amtool >/dev/null || packages+=(prometheus-alertmanager)
command -v docker-compose >/dev/null || packages+=(docker-compose)
command -v shellcheck >/dev/null || packages+=(shellcheck)
command -v chromium >/dev/null || packages+=(chromium)
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
  packages+=(golang-go)
fi
if [ "${#packages[@]}" -gt 0 ]; then
  apt-get update -qq
  # --no-install-recommends: no need for node-exporter and friends, only the binaries.
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${packages[@]}" | sort -u) >/dev/null
fi
# Debian starts the packaged daemons; the tests run their own Prometheus, so stop these when
# there is an init system to ask (in containers there usually is none).
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus prometheus-alertmanager prometheus-node-exporter \
    >/dev/null 2>&1 || true
fi

go_bin="$(command -v go || echo /usr/local/go/bin/go)"
gobin="$("$go_bin" env GOPATH)/bin"
if ! command -v actionlint >/dev/null && [ ! -x "$gobin/actionlint" ]; then
  "$go_bin" install "github.com/rhysd/actionlint/cmd/actionlint@${ACTIONLINT_VERSION}"
fi

promtool --version 2>&1 | head -1
amtool --version 2>&1 | head -1
docker-compose version --short 2>/dev/null || docker-compose version | head -1
chromium --version 2>/dev/null | head -1
"$gobin/actionlint" -version 2>/dev/null | head -1 || actionlint -version | head -1
