#!/usr/bin/env bash
# The console's browser tests (tests/browser): the npm packages they inject at test time (axe-core), from the
# committed package-lock.json with `npm ci`; node_modules is git-ignored. Chromium itself is a Debian package
# (packages.sh); Playwright (PyPI, the dev extra) drives it, so `playwright install` is never run.
# Usage: .ci/setup/browser.sh        (idempotent: skipped while node_modules matches the lock file)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
need_cmd npm chromium

DIR="$HERE/../../tests/browser"
stamp="$DIR/node_modules/.gpuform-lock-$(sha256sum "$DIR/package-lock.json" | cut -c1-16)"
if [[ -f $stamp ]]; then
  log "npm packages of tests/browser already installed"
  exit 0
fi
log "npm ci in tests/browser"
npm ci --prefix "$DIR" --no-audit --no-fund --loglevel=error >&2 || die "npm ci failed in tests/browser"
touch "$stamp"
log "installed: $(cd "$DIR" && node -p 'Object.keys(require("./package.json").devDependencies).join(" ")')"
