#!/usr/bin/env bash
# A PostgreSQL cluster of the tests' own (Debian's server binaries; no system service): data and socket under
# /var/lib/gpuform-test/pg, listening on 127.0.0.1:55432, a role and database "gpuform" with a password.
# Writes /var/lib/gpuform-test/postgres.json ({"url": ..., "admin_url": ...}) for the tests. Idempotent.
# Usage: .ci/setup/postgres.sh [start|stop|status]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
need_root

ROOT=/var/lib/gpuform-test/pg
DATA=$ROOT/data
SOCK=$ROOT/run
PORT=${GPUFORM_TEST_PG_PORT:-55432}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
INFO=/var/lib/gpuform-test/postgres.json
PASSWORD=gpuform-test-password
[ -n "$BIN" ] || die "PostgreSQL server binaries not found (apt-get install postgresql)"

as_pg() { runuser -u postgres -- "$@"; }
running() { as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

case "${1:-start}" in
  stop) running && as_pg "$BIN/pg_ctl" -D "$DATA" -m fast stop >/dev/null; exit 0 ;;
  status) running && echo running || echo stopped; exit 0 ;;
esac

mkdir -p "$ROOT" "$SOCK"
chown postgres:postgres "$ROOT" "$SOCK"
if [ ! -f "$DATA/PG_VERSION" ]; then
  log "initdb $DATA"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >/dev/null
  cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
fi
if ! running; then
  log "starting postgres on 127.0.0.1:$PORT"
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$ROOT/postgres.log" -w -t 60 start >/dev/null
fi
psql_() { as_pg psql -h "$SOCK" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_ -c "SELECT 1 FROM pg_roles WHERE rolname='gpuform'")" != 1 ]; then
  psql_ -c "CREATE ROLE gpuform LOGIN CREATEDB PASSWORD '$PASSWORD'"
  psql_ -c "CREATE DATABASE gpuform OWNER gpuform"
fi
URL="postgresql://gpuform:$PASSWORD@127.0.0.1:$PORT/gpuform"
printf '{"url": "%s", "admin_url": "postgresql://postgres@127.0.0.1:%s/postgres?host=%s", "port": %s}\n' \
  "$URL" "$PORT" "$SOCK" "$PORT" >"$INFO"
log "postgres ready: $URL"
