#!/usr/bin/env bash
# Install the Debian packages the test infrastructure needs (only the missing ones).
# Usage: .ci/setup/packages.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
need_root

PACKAGES=(
  docker.io containerd runc tini iptables   # dockerd (tini: pid 1 of each test host)
  openssh-server openssh-client
  debootstrap debian-archive-keyring        # base image without a registry
  iproute2 util-linux rsync procps psmisc curl ca-certificates sqlite3
  python3 python3-venv                      # the test hosts share this machine's /usr
  postgresql                                # state backend and gateway store tests (own cluster)
  chromium chromium-driver fonts-liberation   # the console's browser tests (Playwright drives chromium)
  prometheus                                # promtool and prometheus: examples/observability tests
  haproxy                                   # examples/ha: the load balancer in front of gateway replicas
)
# npm (axe-core for the browser tests): Debian's nodejs and npm, unless a node that brings its own npm is
# already installed (NodeSource's nodejs bundles npm and conflicts with Debian's npm package).
if ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

# (dpkg-query reads the same status database as dpkg -s; no pipe, so no SIGPIPE under pipefail)
installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  log "all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
log "missing: ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# Keep package maintainer scripts from starting services (sshd on 0.0.0.0:22, a dockerd
# with default options): the setup scripts start their own, configured instances.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $POLICY ]]; then
  printf '#!/bin/sh\n# written by gpuform .ci/setup/packages.sh during apt-get install\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  created_policy=1
fi
cleanup() { if ((created_policy)); then rm -f "$POLICY"; fi; }
trap cleanup EXIT

lists_fresh() {
  # apt lists exist and are younger than a day
  [[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit 2>/dev/null) ]]
}

if ! lists_fresh; then
  log "apt-get update"
  "${APT[@]}" update >&2 || die "apt-get update failed"
fi

log "apt-get install ${missing[*]}"
if ! "${APT[@]}" install --no-install-recommends "${missing[@]}" >&2; then
  log "install failed; refreshing package lists and retrying once"
  "${APT[@]}" update >&2 || die "apt-get update failed"
  "${APT[@]}" install --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install failed for: ${missing[*]}"
fi

still=()
for p in "${missing[@]}"; do
  installed "$p" || still+=("$p")
done
((${#still[@]} == 0)) || die "still not installed after apt-get: ${still[*]}"
log "installed: ${missing[*]}"
