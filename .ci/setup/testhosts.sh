#!/usr/bin/env bash
# Two simulated remote hosts, h1 (10.77.0.11) and h2 (10.77.0.12), for SSH/Docker tests.
#
# Each host = a network namespace (gpuform-hN, veth to bridge gpfbr0, root side 10.77.0.1/24)
# + a holder process (tini, pid 1 of its own pid/mount/uts/ipc namespaces) in whose private
# mount namespace per-host directories under /var/lib/gpuform-test/hosts/hN/ are bind-mounted
# over the standard paths, + its own dockerd and sshd started inside those namespaces.
#
#   hosts/hN/gpuform    -> /var/lib/gpuform        hosts/hN/docker      -> /var/lib/docker
#   hosts/hN/srv        -> /srv                    hosts/hN/containerd  -> /var/lib/containerd
#   hosts/hN/run        -> /run (= /var/run)       hosts/hN/etc-docker  -> /etc/docker
#   hosts/hN/tmp        -> /tmp                    hosts/hN/root        -> /root
#   hosts/hN/sbin       -> /usr/local/sbin (nvidia-smi stand-in lives here)
#
# Usage:
#   testhosts.sh up [h1 h2]      start (idempotent: healthy hosts are left alone)
#   testhosts.sh down [--purge]  stop everything, remove namespaces/bridge (--purge: delete host data)
#   testhosts.sh status          one line per host; exit 0 only if all are healthy
#   testhosts.sh env             print shell exports, (re)write /var/lib/gpuform-test/hosts.json
#   testhosts.sh gpu HOST FIXTURE|none
#                                FIXTURE = name in tests/fixtures/hosts/nvidia-smi/ (no .csv)
#                                or a path to a CSV; `none` removes nvidia-smi from HOST.
#                                A fresh `up` (after down) restores h1=h100-sxm-x8, h2=none.
#   testhosts.sh exec HOST CMD...  run CMD inside HOST's namespaces (no ssh)
#   testhosts.sh nat on|off      opt-in outbound internet for the hosts (default off: the hosts
#                                reach only 10.77.0.0/24; anything else fails fast). `on` sets
#                                ip_forward=1 + an iptables MASQUERADE rule + default routes and
#                                is remembered across down/up until `nat off`.
# shellcheck disable=SC2016  # single-quoted scripts run inside the hosts
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

ALL_HOSTS=(h1 h2)
declare -A ADDR=([h1]=10.77.0.11 [h2]=10.77.0.12)
declare -A DEFAULT_GPU=([h1]=h100-sxm-x8 [h2]=none)
BRIDGE=gpfbr0
GW=10.77.0.1
PREFIX=24
HOSTS_DIR=$GPF_TEST_ROOT/hosts
SSH_DIR=$GPF_TEST_ROOT/ssh
KEY=$SSH_DIR/id_ed25519
KNOWN=$SSH_DIR/known_hosts
SSH_CONFIG=$SSH_DIR/config
SSH_WRAPPER_DIR=$SSH_DIR/bin
HOSTS_JSON=$GPF_TEST_ROOT/hosts.json
FIXTURES=$REPO/tests/fixtures/hosts/nvidia-smi
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PY=/usr/bin/python3
START_TIMEOUT=${GPF_TESTHOSTS_TIMEOUT:-60}

# per-host dir (under hosts/hN) -> path inside the host
BINDS=(
  "run:/run" "tmp:/tmp" "root:/root" "sbin:/usr/local/sbin"
  "gpuform:/var/lib/gpuform" "srv:/srv" "docker:/var/lib/docker"
  "containerd:/var/lib/containerd" "etc-docker:/etc/docker"
)

hdir() { echo "$HOSTS_DIR/$1"; }
netns() { echo "gpuform-$1"; }
veth() { echo "gpf-$1"; }
host_sock() { echo "$(hdir "$1")/run/docker.sock"; }
holder_pid() { cat "$(hdir "$1")/holder.pid" 2>/dev/null || true; }
unshare_pid() { cat "$(hdir "$1")/unshare.pid" 2>/dev/null || true; }
valid_host() { [[ -n ${ADDR[$1]:-} ]] || die "unknown host '$1' (known: ${ALL_HOSTS[*]})"; }

holder_alive() {
  local pid
  pid=$(holder_pid "$1")
  pid_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == tini ]] \
    && [[ $(readlink "/proc/$pid/ns/mnt") != "$(readlink /proc/self/ns/mnt)" ]]
}

# Run a command inside host $1 (its mount, uts, ipc, pid and net namespaces), clean env.
host_exec() {
  local h=$1; shift
  local pid
  pid=$(holder_pid "$h")
  pid_alive "$pid" || die "host $h is not up (no holder process)"
  # 9>&-: daemons started here must not inherit (and so hold) the lock fd
  nsenter --target "$pid" --mount --uts --ipc --pid --net --wd=/ -- \
    env -i PATH="$STD_PATH" HOME=/root LANG=C.UTF-8 USER=root "$@" 9>&-
}

host_docker() { docker -H "unix://$(host_sock "$1")" "${@:2}"; }

ssh_cmd() { ssh -F "$SSH_CONFIG" "$@"; }

# ---------------------------------------------------------------- network
ensure_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE ($GW/$PREFIX)"
    ip link add "$BRIDGE" type bridge
  fi
  # (no `| grep -q` anywhere: with pipefail an early-exiting grep can fail the pipeline)
  [[ $(ip -o -4 addr show dev "$BRIDGE") == *" inet $GW/$PREFIX "* ]] || ip addr add "$GW/$PREFIX" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

ensure_netns() {
  local h=$1 ns v
  ns=$(netns "$h"); v=$(veth "$h")
  if [[ -e /run/netns/$ns ]] && ! mountpoint -q "/run/netns/$ns"; then
    log "$h: stale netns file /run/netns/$ns (not a mount; machine restarted?); recreating"
    ip link del "$v" >/dev/null 2>&1 || true
    rm -f "/run/netns/$ns"
  fi
  [[ -e /run/netns/$ns ]] || { log "$h: creating netns $ns"; ip netns add "$ns"; }
  if ! ip link show "$v" >/dev/null 2>&1; then
    ip -n "$ns" link del eth0 >/dev/null 2>&1 || true
    ip link add "$v" type veth peer name eth0 netns "$ns"
  fi
  ip link set "$v" master "$BRIDGE"
  ip link set "$v" up
  ip -n "$ns" link set lo up
  [[ $(ip -n "$ns" -o -4 addr show dev eth0) == *" inet ${ADDR[$h]}/$PREFIX "* ]] \
    || ip -n "$ns" addr add "${ADDR[$h]}/$PREFIX" dev eth0
  ip -n "$ns" link set eth0 up
  # no default route on purpose: anything outside 10.77.0.0/24 fails fast (ENETUNREACH)
}

# Optional NAT (testhosts.sh nat on|off). The flag file holds ip_forward's value before `on`.
NAT_FLAG=$GPF_TEST_ROOT/nat
NAT_RULE=(POSTROUTING -s "${GW%.*}.0/$PREFIX" ! -o "$BRIDGE" -j MASQUERADE -m comment --comment gpuform-test)

nat_apply() {
  [[ -f $NAT_FLAG ]] || return 0
  need_cmd iptables
  echo 1 >/proc/sys/net/ipv4/ip_forward
  iptables -t nat -C "${NAT_RULE[@]}" 2>/dev/null || iptables -t nat -A "${NAT_RULE[@]}"
  local h
  for h in "${ALL_HOSTS[@]}"; do
    [[ -e /run/netns/$(netns "$h") ]] && ip -n "$(netns "$h")" route replace default via "$GW"
  done
  log "NAT on: hosts have outbound access through the root namespace"
}

nat_remove() {
  [[ -f $NAT_FLAG ]] || return 0
  local h
  while iptables -t nat -D "${NAT_RULE[@]}" 2>/dev/null; do :; done
  for h in "${ALL_HOSTS[@]}"; do
    [[ -e /run/netns/$(netns "$h") ]] && ip -n "$(netns "$h")" route del default >/dev/null 2>&1
  done
  cat "$NAT_FLAG" >/proc/sys/net/ipv4/ip_forward 2>/dev/null || true
  return 0
}

# ---------------------------------------------------------------- ssh material
ensure_client_key() {
  mkdir -p "$SSH_DIR" "$SSH_WRAPPER_DIR"
  chmod 700 "$SSH_DIR"
  if [[ ! -s $KEY || ! -s $KEY.pub ]]; then
    log "generating test client key $KEY"
    rm -f "$KEY" "$KEY.pub"
    ssh-keygen -q -t ed25519 -N '' -C gpuform-test-client -f "$KEY"
  fi
  chmod 600 "$KEY"
  local hosts_line="" h
  for h in "${ALL_HOSTS[@]}"; do hosts_line+=" ${ADDR[$h]} gpuform-$h"; done
  cat >"$SSH_CONFIG.tmp" <<EOF
# gpuform test hosts (written by .ci/setup/testhosts.sh). Use: ssh -F $SSH_CONFIG root@10.77.0.11
Host$hosts_line
  User root
  Port 22
  IdentityFile $KEY
  IdentitiesOnly yes
  UserKnownHostsFile $KNOWN
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  HashKnownHosts no
  BatchMode yes
  ConnectTimeout 10
  ServerAliveInterval 15
EOF
  for h in "${ALL_HOSTS[@]}"; do printf 'Host gpuform-%s\n  HostName %s\n' "$h" "${ADDR[$h]}" >>"$SSH_CONFIG.tmp"; done
  mv -f "$SSH_CONFIG.tmp" "$SSH_CONFIG"
  # `ssh` wrapper for tools that exec plain `ssh` (docker -H ssh://...): put this dir first on PATH
  cat >"$SSH_WRAPPER_DIR/ssh.tmp" <<EOF
#!/bin/sh
# ssh with the gpuform test hosts' identity and known_hosts (written by .ci/setup/testhosts.sh)
exec /usr/bin/ssh -F $SSH_CONFIG "\$@"
EOF
  chmod 755 "$SSH_WRAPPER_DIR/ssh.tmp"
  mv -f "$SSH_WRAPPER_DIR/ssh.tmp" "$SSH_WRAPPER_DIR/ssh"
}

write_known_hosts() {
  local h tmp=$KNOWN.tmp
  : >"$tmp"
  for h in "${ALL_HOSTS[@]}"; do
    local pub
    pub=$(hdir "$h")/sshd/ssh_host_ed25519_key.pub
    [[ -s $pub ]] || continue
    printf '%s %s\n' "${ADDR[$h]}" "$(cut -d' ' -f1,2 "$pub")" >>"$tmp"
    printf 'gpuform-%s %s\n' "$h" "$(cut -d' ' -f1,2 "$pub")" >>"$tmp"
  done
  chmod 644 "$tmp"
  mv -f "$tmp" "$KNOWN"
}

write_sshd_config() {
  local h=$1 d
  d=$(hdir "$h")/sshd
  mkdir -p "$d"
  chmod 700 "$d"
  if [[ ! -s $d/ssh_host_ed25519_key ]]; then
    log "$h: generating host key"
    rm -f "$d/ssh_host_ed25519_key" "$d/ssh_host_ed25519_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C "root@gpuform-$h" -f "$d/ssh_host_ed25519_key"
  fi
  cat >"$d/sshd_config" <<EOF
# sshd of test host $h (written by .ci/setup/testhosts.sh); runs inside the host's namespaces
ListenAddress ${ADDR[$h]}:22
HostKey $d/ssh_host_ed25519_key
PidFile /run/sshd.pid
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
MaxStartups 200
MaxSessions 100
AcceptEnv LANG LC_* GPUFORM_*
Subsystem sftp internal-sftp
LogLevel INFO
EOF
}

# ---------------------------------------------------------------- gpu stand-in
install_gpu() {
  local h=$1 fixture=$2 sbin csv
  sbin=$(hdir "$h")/sbin
  mkdir -p "$sbin"
  if [[ $fixture == none ]]; then
    rm -f "$sbin/nvidia-smi" "$sbin/.nvidia-smi.csv"
    echo none >"$(hdir "$h")/gpu"
    log "$h: nvidia-smi removed"
    return 0
  fi
  if [[ $fixture == */* || $fixture == *.csv ]]; then csv=$fixture; else csv=$FIXTURES/$fixture.csv; fi
  [[ -s $csv ]] || die "GPU fixture '$fixture' not found ($csv); available: $(cd "$FIXTURES" && for f in *.csv; do printf '%s ' "${f%.csv}"; done)"
  install -m 644 "$csv" "$sbin/.nvidia-smi.csv.tmp" && mv -f "$sbin/.nvidia-smi.csv.tmp" "$sbin/.nvidia-smi.csv"
  install -m 755 "$HERE/fake-nvidia-smi.py" "$sbin/nvidia-smi.tmp" && mv -f "$sbin/nvidia-smi.tmp" "$sbin/nvidia-smi"
  basename "$csv" .csv >"$(hdir "$h")/gpu"
  log "$h: nvidia-smi stand-in installed ($(basename "$csv" .csv), $(grep -c . "$csv") GPUs)"
}

# ---------------------------------------------------------------- host lifecycle
host_healthy() {
  local h=$1
  holder_alive "$h" || return 1
  host_docker "$h" info >/dev/null 2>&1 || return 1
  [[ -s $KNOWN ]] || return 1
  timeout 15 ssh -F "$SSH_CONFIG" -o ConnectTimeout=5 "root@${ADDR[$h]}" true >/dev/null 2>&1 || return 1
}

prepare_dirs() {
  local h=$1 d spec
  d=$(hdir "$h")
  mkdir -p "$d" "$GPF_TEST_LOG"
  for spec in "${BINDS[@]}"; do
    mkdir -p "$d/${spec%%:*}"
    # mount points must exist in the root namespace (empty dirs; the root ns is not mounted over)
    [[ -d ${spec#*:} ]] || mkdir -p "${spec#*:}"
  done
  # a fresh boot: empty /run and /tmp
  find "$d/run" "$d/tmp" -mindepth 1 -delete 2>/dev/null || rm -rf "${d:?}/run/"* "${d:?}/tmp/"*
  chmod 755 "$d/run"; chmod 1777 "$d/tmp"; chmod 700 "$d/root"; chmod 755 "$d/sbin"
  mkdir -p "$d/root/.ssh"
  chmod 700 "$d/root/.ssh"
  install -m 600 "$KEY.pub" "$d/root/.ssh/authorized_keys"
  [[ -s $d/etc-docker/daemon.json ]] || echo '{}' >"$d/etc-docker/daemon.json"
}

# What pid 1 (under tini) of each host runs: the bind mounts, then sleep forever.
HOST_INIT='
set -eu
h=$1; d=$2; shift 2
hostname "gpuform-$h"
for spec in "$@"; do mount --bind "$d/${spec%%:*}" "${spec#*:}"; done
mkdir -p /run/sshd /run/lock; chmod 755 /run/sshd; chmod 1777 /run/lock
echo "$h" > /run/gpuform-test-host
exec sleep infinity
'

start_holder() {
  local h=$1 d log upid hpid
  d=$(hdir "$h")
  log=$GPF_TEST_LOG/$h-holder.log
  rm -f "$d/holder.pid" "$d/unshare.pid"
  printf '\n==== %s holder start ====\n' "$(date -Is)" >>"$log"
  setsid nsenter --net="/run/netns/$(netns "$h")" -- \
    unshare --mount --uts --ipc --pid --fork --kill-child --mount-proc --propagation private -- \
    tini -- bash -c "$HOST_INIT" host-init "$h" "$d" "${BINDS[@]}" </dev/null >>"$log" 2>&1 9>&- &
  upid=$!
  echo "$upid" >"$d/unshare.pid"
  local deadline=$((SECONDS + 15))
  until [[ -s $d/run/gpuform-test-host ]]; do
    pid_alive "$upid" || { tail_log "$log"; die "$h: holder exited during setup (log: $log)"; }
    ((SECONDS < deadline)) || { tail_log "$log"; die "$h: holder not ready after 15s (log: $log)"; }
    sleep 0.1
  done
  hpid=$(pgrep -P "$upid" -x tini | head -n1 || true)
  pid_alive "$hpid" || die "$h: cannot find the holder (tini) under unshare pid $upid"
  echo "$hpid" >"$d/holder.pid"
  log "$h: holder pid $hpid (unshare $upid), hostname gpuform-$h"
}

start_dockerd() {
  local h=$1 log
  log=$GPF_TEST_LOG/$h-dockerd.log
  printf '\n==== %s dockerd start ====\n' "$(date -Is)" >>"$log"
  host_exec "$h" LOG="$log" bash -c 'setsid dockerd "$@" </dev/null >>"$LOG" 2>&1 &' dockerd \
    --storage-driver=vfs --iptables=false --ip-forward=false --bridge=none \
    --host=unix:///var/run/docker.sock --pidfile=/var/run/docker.pid \
    --data-root=/var/lib/docker --exec-root=/var/run/docker \
    --config-file=/etc/docker/daemon.json --label="gpuform-test.host=$h" \
    || die "$h: could not launch dockerd"
}

start_sshd() {
  local h=$1 cfg log
  cfg=$(hdir "$h")/sshd/sshd_config
  log=$GPF_TEST_LOG/$h-sshd.log
  host_exec "$h" /usr/sbin/sshd -t -f "$cfg" || die "$h: sshd config test failed ($cfg)"
  host_exec "$h" /usr/sbin/sshd -f "$cfg" -E "$log" || { tail_log "$log"; die "$h: sshd failed to start"; }
}

wait_host() {
  local h=$1 deadline=$((SECONDS + START_TIMEOUT))
  until host_docker "$h" info >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      tail_log "$GPF_TEST_LOG/$h-dockerd.log"
      die "$h: dockerd did not answer on $(host_sock "$h") within ${START_TIMEOUT}s"
    fi
    holder_alive "$h" || die "$h: holder died while waiting for dockerd"
    sleep 0.2
  done
  until timeout 2 bash -c "exec 3<>/dev/tcp/${ADDR[$h]}/22" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      tail_log "$GPF_TEST_LOG/$h-sshd.log"
      die "$h: sshd not listening on ${ADDR[$h]}:22 within ${START_TIMEOUT}s"
    fi
    sleep 0.2
  done
}

# TCP from inside the host to a listener on the gateway address in the root namespace.
check_gateway() {
  local h=$1 portfile out
  portfile=$(mktemp)
  "$PY" - "$GW" "$portfile" 9>&- <<'PYEOF' &
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(4); s.settimeout(15)
open(sys.argv[2], "w").write(str(s.getsockname()[1]))
c, _ = s.accept(); c.sendall(b"gateway-ok"); c.close()
PYEOF
  local lpid=$!
  wait_for 5 "gateway test listener" test -s "$portfile" || { kill "$lpid" 2>/dev/null; die "gateway test listener did not start"; }
  out=$(host_exec "$h" python3 -c 'import socket,sys; c=socket.create_connection((sys.argv[1], int(sys.argv[2])), 5); print(c.recv(64).decode())' \
        "$GW" "$(cat "$portfile")" 2>&1) || true
  kill "$lpid" 2>/dev/null || true
  wait "$lpid" 2>/dev/null || true
  rm -f "$portfile"
  [[ $out == gateway-ok ]] || die "$h: TCP from ${ADDR[$h]} to the root namespace at $GW failed: $out"
}

host_up() {
  local h=$1
  if holder_alive "$h" || pid_alive "$(unshare_pid "$h")"; then
    log "$h: not healthy; restarting it"
    host_down "$h"
  fi
  ensure_netns "$h"
  prepare_dirs "$h"
  write_sshd_config "$h"
  install_gpu "$h" "${DEFAULT_GPU[$h]}"
  start_holder "$h"
  start_dockerd "$h"
  start_sshd "$h"
}

# cgroups left behind by this host's containers (v1 hierarchies and the unified one)
clean_cgroups() {
  local h=$1 dir id cg
  for dir in "$(hdir "$h")"/docker/containers/*/; do
    [[ -d $dir ]] || continue
    id=$(basename "$dir")
    for cg in /sys/fs/cgroup/*/docker/"$id" /sys/fs/cgroup/docker/"$id"; do
      [[ -d $cg ]] && rmdir "$cg" 2>/dev/null || true
    done
  done
}

host_down() {
  local h=$1 hpid upid
  hpid=$(holder_pid "$h"); upid=$(unshare_pid "$h")
  if holder_alive "$h"; then
    # dockerd first, so it stops its containers and containerd cleanly
    # (containers are killed, not stopped: this is a power-off, and `docker stop` waits 10 s each)
    host_exec "$h" sh -c '
      ids=$(docker ps -q 2>/dev/null); [ -z "$ids" ] || docker kill $ids >/dev/null 2>&1 || true
      p=$(cat /var/run/docker.pid 2>/dev/null) || exit 0
      kill -TERM "$p" 2>/dev/null || exit 0
      i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done
      kill -KILL "$p" 2>/dev/null || true' || true
    host_exec "$h" sh -c 'p=$(cat /run/sshd.pid 2>/dev/null) && kill -TERM "$p" 2>/dev/null' || true
  fi
  # tini forwards SIGTERM to `sleep`; when pid 1 exits the kernel kills the rest of the host
  pid_alive "$hpid" && stop_pid "$hpid" "$h holder" 10
  pid_alive "$upid" && stop_pid "$upid" "$h unshare" 5
  clean_cgroups "$h"
  rm -f "$(hdir "$h")/holder.pid" "$(hdir "$h")/unshare.pid"
}

net_down() {
  local h ns
  for h in "${ALL_HOSTS[@]}"; do
    ns=$(netns "$h")
    if [[ -e /run/netns/$ns ]]; then
      ip netns del "$ns" || log "WARNING: could not delete netns $ns"
    fi
    ip link del "$(veth "$h")" >/dev/null 2>&1 || true
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  return 0
}

# ---------------------------------------------------------------- env / hosts.json
write_hosts_json() {
  local args=() h
  for h in "${ALL_HOSTS[@]}"; do
    args+=("$h" "${ADDR[$h]}" "$(hdir "$h")" "$(holder_pid "$h")" "$(cat "$(hdir "$h")/gpu" 2>/dev/null || echo none)")
  done
  GW=$GW PREFIX=$PREFIX BRIDGE=$BRIDGE KEY=$KEY KNOWN=$KNOWN SSH_CONFIG=$SSH_CONFIG \
  SSH_WRAPPER_DIR=$SSH_WRAPPER_DIR MAIN_SOCK=$GPF_MAIN_DOCKER_SOCK BASE_IMAGE=$GPF_BASE_IMAGE \
  BINDS="${BINDS[*]}" NAT=$([[ -f $NAT_FLAG ]] && echo 1 || echo 0) "$PY" - "$HOSTS_JSON" "${args[@]}" <<'PYEOF'
import json, os, sys
out, rest = sys.argv[1], sys.argv[2:]
e = os.environ
binds = [b.split(":", 1) for b in e["BINDS"].split()]
hosts = []
for i in range(0, len(rest), 5):
    name, addr, d, pid, gpu = rest[i:i + 5]
    hosts.append({
        "name": name,
        "address": addr,
        "port": 22,
        "user": "root",
        "identity_file": e["KEY"],
        "known_hosts": e["KNOWN"],
        "ssh_config": e["SSH_CONFIG"],
        "hostname": f"gpuform-{name}",
        "docker_socket": f"{d}/run/docker.sock",
        "docker_host": f"unix://{d}/run/docker.sock",
        "docker_ssh_host": f"ssh://root@{addr}",
        "data_dir": d,
        "paths": {inside: f"{d}/{sub}" for sub, inside in binds},
        "holder_pid": int(pid) if pid else None,
        "netns": f"gpuform-{name}",
        "gpu_fixture": None if gpu == "none" else gpu,
        "nsenter": ["nsenter", "--target", pid, "--mount", "--uts", "--ipc", "--pid", "--net", "--wd=/", "--"],
    })
doc = {
    "gateway": e["GW"],
    "network": f"{e['GW'].rsplit('.', 1)[0]}.0/{e['PREFIX']}",
    "bridge": e["BRIDGE"],
    "ssh": {
        "identity_file": e["KEY"],
        "public_key": e["KEY"] + ".pub",
        "known_hosts": e["KNOWN"],
        "config": e["SSH_CONFIG"],
        "wrapper_path_dir": e["SSH_WRAPPER_DIR"],
    },
    "main_docker": {"socket": e["MAIN_SOCK"], "docker_host": "unix://" + e["MAIN_SOCK"]},
    "base_image": e["BASE_IMAGE"],
    "internet": e["NAT"] == "1",
    "hosts": hosts,
}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
os.replace(tmp, out)
PYEOF
}

print_env() {
  local h H
  echo "export GPUFORM_TEST_HOSTS_JSON=$HOSTS_JSON"
  echo "export GPUFORM_TEST_HOSTS='${ALL_HOSTS[*]}'"
  echo "export GPUFORM_TEST_GATEWAY=$GW"
  echo "export GPUFORM_TEST_SSH_KEY=$KEY"
  echo "export GPUFORM_TEST_KNOWN_HOSTS=$KNOWN"
  echo "export GPUFORM_TEST_SSH_CONFIG=$SSH_CONFIG"
  echo "export GPUFORM_TEST_SSH_WRAPPER_DIR=$SSH_WRAPPER_DIR"
  echo "export GPUFORM_TEST_MAIN_DOCKER_HOST=unix://$GPF_MAIN_DOCKER_SOCK"
  echo "export GPUFORM_TEST_BASE_IMAGE=$GPF_BASE_IMAGE"
  for h in "${ALL_HOSTS[@]}"; do
    H=${h^^}
    echo "export GPUFORM_TEST_${H}_ADDR=${ADDR[$h]}"
    echo "export GPUFORM_TEST_${H}_SSH=root@${ADDR[$h]}"
    echo "export GPUFORM_TEST_${H}_DOCKER_HOST=unix://$(host_sock "$h")"
    echo "export GPUFORM_TEST_${H}_DATA_DIR=$(hdir "$h")"
    echo "export GPUFORM_TEST_${H}_HOLDER_PID=$(holder_pid "$h")"
  done
}

# ---------------------------------------------------------------- commands
cmd_up() {
  need_root
  need_cmd ip nsenter unshare tini sshd dockerd docker ssh ssh-keygen pgrep mountpoint flock "$PY"
  local hosts=("$@") h
  ((${#hosts[@]})) || hosts=("${ALL_HOSTS[@]}")
  for h in "${hosts[@]}"; do valid_host "$h"; done
  local t0=$SECONDS
  ensure_client_key
  ensure_bridge
  local started=()
  for h in "${hosts[@]}"; do
    if host_healthy "$h"; then
      log "$h: already up (holder $(holder_pid "$h"))"
    else
      host_up "$h"
      started+=("$h")
    fi
  done
  write_known_hosts
  for h in "${started[@]}"; do
    wait_host "$h"
    ssh_cmd "root@${ADDR[$h]}" true || die "$h: ssh login as root@${ADDR[$h]} failed (log: $GPF_TEST_LOG/$h-sshd.log)"
    check_gateway "$h"
    log "$h: up: ssh root@${ADDR[$h]}, dockerd $(host_docker "$h" version -f '{{.Server.Version}}') on $(host_sock "$h"), gateway $GW reachable"
  done
  nat_apply
  write_hosts_json
  log "hosts up (${hosts[*]}) in $((SECONDS - t0))s; description in $HOSTS_JSON"
}

cmd_down() {
  need_root
  local purge=0 h
  [[ ${1:-} == --purge ]] && purge=1
  # bj1 (bastion.sh) hangs off h1's namespace: stop it first (this process holds the lock it would take)
  if [[ -d $HOSTS_DIR/bj1 ]]; then GPF_TESTHOSTS_LOCKED=1 bash "$HERE/bastion.sh" down 9>&- || true; fi
  local pids=()
  for h in "${ALL_HOSTS[@]}"; do
    if holder_alive "$h" || pid_alive "$(unshare_pid "$h")"; then
      log "$h: stopping"
    fi
    host_down "$h" &
    pids+=($!)
  done
  for h in "${pids[@]}"; do wait "$h" || true; done
  nat_remove
  net_down
  rm -f "$HOSTS_JSON"
  if ((purge)); then
    log "purging $HOSTS_DIR"
    rm -rf "$HOSTS_DIR"
  fi
  log "hosts down"
}

cmd_status() {
  local h rc=0 state
  for h in "${ALL_HOSTS[@]}"; do
    if host_healthy "$h"; then
      state="up holder=$(holder_pid "$h") ssh=root@${ADDR[$h]}:22 docker=$(host_sock "$h") gpu=$(cat "$(hdir "$h")/gpu" 2>/dev/null || echo none)"
    elif holder_alive "$h"; then
      state="DEGRADED holder=$(holder_pid "$h") (dockerd or sshd not answering; run: $0 up)"; rc=3
    else
      state="down"; rc=3
    fi
    echo "$h ${ADDR[$h]} $state"
  done
  return $rc
}

cmd_env() {
  local h
  for h in "${ALL_HOSTS[@]}"; do
    holder_alive "$h" || die "host $h is not up (run: $0 up)"
  done
  write_hosts_json
  print_env
}

cmd_gpu() {
  need_root
  [[ $# -eq 2 ]] || die "usage: $0 gpu HOST FIXTURE|none"
  valid_host "$1"
  [[ -d $(hdir "$1") ]] || die "host $1 has never been set up (run: $0 up)"
  install_gpu "$1" "$2"
  [[ -f $HOSTS_JSON ]] && write_hosts_json
  return 0
}

cmd_nat() {
  case ${1:-} in
    on)
      [[ -f $NAT_FLAG ]] || cat /proc/sys/net/ipv4/ip_forward >"$NAT_FLAG"
      nat_apply ;;
    off)
      nat_remove
      rm -f "$NAT_FLAG"
      log "NAT off: hosts reach only ${GW%.*}.0/$PREFIX" ;;
    *) die "usage: $0 nat on|off" ;;
  esac
  [[ -f $HOSTS_JSON ]] && write_hosts_json
  return 0
}

cmd_exec() {
  [[ $# -ge 2 ]] || die "usage: $0 exec HOST CMD..."
  valid_host "$1"
  local h=$1; shift
  host_exec "$h" "$@"
}

# one up/down/gpu at a time (a second caller waits)
lock() {
  mkdir -p "$GPF_TEST_ROOT"
  exec 9>"$GPF_TEST_ROOT/.testhosts.lock"
  if ! flock -n 9; then
    log "waiting for another testhosts.sh (lock $GPF_TEST_ROOT/.testhosts.lock; holders: $(fuser "$GPF_TEST_ROOT/.testhosts.lock" 2>/dev/null))"
    flock -w 300 9 || die "could not lock $GPF_TEST_ROOT/.testhosts.lock within 300s"
  fi
}

# sourced (bastion.sh reuses the functions above): define them, run nothing
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0

case ${1:-} in
  up) shift; need_root; lock; cmd_up "$@" ;;
  down) shift; need_root; lock; cmd_down "$@" ;;
  status) cmd_status ;;
  env) cmd_env ;;
  gpu) shift; need_root; lock; cmd_gpu "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  nat) shift; need_root; lock; cmd_nat "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
