# Shared helpers for the .ci/setup/*.sh scripts. Source it; do not run it.
# shellcheck shell=bash disable=SC2034

GPF_TEST_ROOT=/var/lib/gpuform-test     # per-host data, ssh keys, hosts.json
GPF_TEST_LOG=/var/log/gpuform-test      # daemon logs
GPF_TEST_CACHE=/var/cache/gpuform-test  # debootstrap cache, base rootfs tarball
GPF_MAIN_DOCKER_SOCK=/var/run/docker.sock
GPF_BASE_IMAGE=gpuform-test/base:bookworm

_gpf_tag=${GPF_LOG_TAG:-$(basename "${BASH_SOURCE[1]:-$0}" .sh)}

log() { printf '[setup:%s %s] %s\n' "$_gpf_tag" "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[setup:%s %s] ERROR: %s\n' "$_gpf_tag" "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (uid 0); got uid $(id -u)"; }

need_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "required command '$c' not found (run .ci/setup/packages.sh first)"
  done
}

# docker CLI bound to the machine's main dockerd, whatever DOCKER_HOST/contexts say.
main_docker() { docker -H "unix://$GPF_MAIN_DOCKER_SOCK" "$@"; }

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out after ${secs}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

# tail_log FILE: print the last lines of a log to stderr (for failure messages).
tail_log() {
  [[ -f $1 ]] || { log "(no log at $1)"; return 0; }
  log "---- last 30 lines of $1 ----"
  tail -n 30 "$1" | sed 's/^/    /' >&2
  log "---- end of $1 ----"
}

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# stop_pid PID NAME [TIMEOUT]: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2 secs=${3:-20} i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 5; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.2
  done
  log "$name (pid $pid) did not stop after ${secs}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
}
