#!/usr/bin/env bash
# Everything the docker/ssh tests need, idempotent (a warm rerun takes about a second):
#   packages -> main dockerd -> base image -> test hosts h1, h2 -> bj1 behind h1 -> a PostgreSQL cluster
#   -> browser tests' npm packages
# Usage: .ci/setup/all.sh        (then: eval "$(.ci/setup/testhosts.sh env)" if you want the exports)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
need_root

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

total0=$(now)
step() {
  local name=$1; shift
  local t0
  t0=$(now)
  "$@" || die "step '$name' failed: $*"
  log "TIMING $name $(elapsed "$t0")s"
}

step packages     bash "$HERE/packages.sh"
step dockerd      bash "$HERE/dockerd.sh" start
step base-image   bash "$HERE/base-image.sh"
step testhosts    bash "$HERE/testhosts.sh" up
step bastion      bash "$HERE/bastion.sh" up
step postgres     bash "$HERE/postgres.sh" start
step browser      bash "$HERE/browser.sh"
log "TIMING total $(elapsed "$total0")s (hosts: /var/lib/gpuform-test/hosts.json)"
