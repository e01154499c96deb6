#!/usr/bin/env bash
# The machine's main dockerd (root network/mount namespace), for the tests' local Docker.
# Usage: .ci/setup/dockerd.sh start|stop|status|restart
#   socket: unix:///var/run/docker.sock   log: /var/log/gpuform-test/dockerd.log
# It has no bridge network and no iptables: run containers with `--network host`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

LOGFILE=$GPF_TEST_LOG/dockerd.log
PIDFILE=/var/run/docker.pid
START_TIMEOUT=${GPF_DOCKERD_TIMEOUT:-60}
DOCKERD_ARGS=(
  --storage-driver=vfs --iptables=false --ip-forward=false --bridge=none
  --host="unix://$GPF_MAIN_DOCKER_SOCK" --pidfile="$PIDFILE"
  --data-root=/var/lib/docker --exec-root=/var/run/docker
)

answering() { main_docker info >/dev/null 2>&1; }
# pid from the pid file, only if that process is a dockerd (pid files survive restarts here)
cur_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] && echo "$pid"
  return 0
}

start() {
  need_root
  need_cmd dockerd docker
  if answering; then
    log "main dockerd already running (pid $(cur_pid)) on $GPF_MAIN_DOCKER_SOCK"
    return 0
  fi
  local pid
  pid=$(cur_pid)
  if pid_alive "$pid"; then
    log "dockerd pid $pid exists but does not answer yet; waiting"
  else
    [[ -e $PIDFILE ]] && { log "removing stale pid file $PIDFILE"; rm -f "$PIDFILE"; }
    mkdir -p "$GPF_TEST_LOG"
    log "starting: dockerd ${DOCKERD_ARGS[*]}"
    printf '\n==== %s dockerd start ====\n' "$(date -Is)" >>"$LOGFILE"
    setsid dockerd "${DOCKERD_ARGS[@]}" </dev/null >>"$LOGFILE" 2>&1 &
    pid=$!
  fi
  local deadline=$((SECONDS + START_TIMEOUT))
  until answering; do
    if ! pid_alive "$pid" && ! pid_alive "$(cur_pid)"; then
      tail_log "$LOGFILE"
      die "dockerd exited during startup (log: $LOGFILE)"
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$LOGFILE"
      die "dockerd did not answer 'docker info' within ${START_TIMEOUT}s (log: $LOGFILE)"
    fi
    sleep 0.2
  done
  log "main dockerd up (pid $(cur_pid)); server $(main_docker version -f '{{.Server.Version}}' 2>/dev/null)," \
      "storage $(main_docker info -f '{{.Driver}}' 2>/dev/null)"
}

stop() {
  need_root
  local pid
  pid=$(cur_pid)
  if ! pid_alive "$pid"; then
    log "main dockerd not running"
    rm -f "$PIDFILE"
    return 0
  fi
  log "stopping main dockerd (pid $pid)"
  stop_pid "$pid" dockerd 30
  rm -f "$PIDFILE"
  log "main dockerd stopped"
}

status() {
  if answering; then
    echo "running pid=$(cur_pid) socket=$GPF_MAIN_DOCKER_SOCK version=$(main_docker version -f '{{.Server.Version}}')" \
         "driver=$(main_docker info -f '{{.Driver}}') root=$(main_docker info -f '{{.DockerRootDir}}')"
    return 0
  fi
  echo "stopped"
  return 3
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
