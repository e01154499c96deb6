#!/usr/bin/env bash
# A test host behind a bastion: bj1 (10.78.0.2), reachable only from inside h1 (the bastion).
#
# bj1 is made like h1/h2 (testhosts.sh's functions: own namespaces, private /root, /run, /var/lib/gpuform,
# its own sshd and dockerd; no GPUs), but its network is a veth pair to h1's namespace (gpf-bj1 there,
# 10.78.0.1/24) instead of the bridge: this machine's route to 10.78.0.0/24 is `unreachable`, h1 does not forward,
# so SSH reaches bj1 only through h1 (ProxyJump root@10.77.0.11). bj1's default route points at h1, so a
# gateway listening on h1 (10.77.0.11) is reachable from bj1's workers.
#
# Usage (after testhosts.sh up h1):
#   bastion.sh up      start bj1 (idempotent; re-links it when h1's namespace was recreated)
#   bastion.sh down    stop bj1, remove its namespace (h1 is left as it is; testhosts.sh down calls this)
#   bastion.sh status  exit 0 when bj1 answers SSH through h1
# Writes /var/lib/gpuform-test/bastion.json (addresses, its known_hosts line file, an ssh_config).
# shellcheck disable=SC2034  # ADDR and DEFAULT_GPU are read by testhosts.sh's functions
set -euo pipefail
BASTION_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=testhosts.sh
source "$BASTION_HERE/testhosts.sh"
_gpf_tag=bastion

H=bj1
JUMP=h1
ADDR[$H]=10.78.0.2
DEFAULT_GPU[$H]=none
LINK_JUMP_SIDE=10.78.0.1
BJ_KNOWN=$SSH_DIR/known_hosts.$H
BJ_CONFIG=$SSH_DIR/config.$H
BJ_JSON=$GPF_TEST_ROOT/bastion.json

bj_link() {
  local ns jns
  ns=$(netns "$H"); jns=$(netns "$JUMP")
  [[ -e /run/netns/$jns ]] || die "$JUMP is not up (run: testhosts.sh up $JUMP)"
  [[ -e /run/netns/$ns ]] || ip netns add "$ns"
  if ! ip -n "$jns" link show "gpf-$H" >/dev/null 2>&1; then
    ip -n "$ns" link del eth0 >/dev/null 2>&1 || true
    ip -n "$jns" link add "gpf-$H" type veth peer name eth0 netns "$ns"
  fi
  [[ $(ip -n "$jns" -o -4 addr show dev "gpf-$H") == *" inet $LINK_JUMP_SIDE/24 "* ]] \
    || ip -n "$jns" addr add "$LINK_JUMP_SIDE/24" dev "gpf-$H"
  ip -n "$jns" link set "gpf-$H" up
  ip -n "$ns" link set lo up
  [[ $(ip -n "$ns" -o -4 addr show dev eth0) == *" inet ${ADDR[$H]}/24 "* ]] || ip -n "$ns" addr add "${ADDR[$H]}/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route replace default via "$LINK_JUMP_SIDE"
  # from this machine the subnet is unreachable at once (not a timeout through the default route)
  ip route replace unreachable "${LINK_JUMP_SIDE%.*}.0/24"
}

bj_files() {
  local pub
  pub=$(hdir "$H")/sshd/ssh_host_ed25519_key.pub
  printf '%s %s\n' "${ADDR[$H]}" "$(cut -d' ' -f1,2 "$pub")" >"$BJ_KNOWN.tmp" && mv -f "$BJ_KNOWN.tmp" "$BJ_KNOWN"
  cat >"$BJ_CONFIG.tmp" <<EOF
# $H behind $JUMP (written by .ci/setup/bastion.sh). Use: ssh -F $BJ_CONFIG $H
Host $H
  HostName ${ADDR[$H]}
  ProxyJump root@${ADDR[$JUMP]}
Host *
  User root
  IdentityFile $KEY
  IdentitiesOnly yes
  UserKnownHostsFile $KNOWN $BJ_KNOWN
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
EOF
  mv -f "$BJ_CONFIG.tmp" "$BJ_CONFIG"
  printf '{"name": "%s", "address": "%s", "jump": "%s", "jump_address": "%s", "known_hosts": "%s", "ssh_config": "%s"}\n' \
    "$H" "${ADDR[$H]}" "$JUMP" "${ADDR[$JUMP]}" "$BJ_KNOWN" "$BJ_CONFIG" >"$BJ_JSON"
}

bj_healthy() {
  holder_alive "$H" && [[ -s $BJ_CONFIG ]] && host_docker "$H" info >/dev/null 2>&1 \
    && timeout 15 ssh -F "$BJ_CONFIG" -o ConnectTimeout=5 "$H" true >/dev/null 2>&1
}

bj_up() {
  local t0=$SECONDS
  bj_link
  if bj_healthy; then log "$H: already up (holder $(holder_pid "$H"))"; return 0; fi
  if holder_alive "$H" || pid_alive "$(unshare_pid "$H")"; then host_down "$H"; fi
  prepare_dirs "$H"
  write_sshd_config "$H"
  install_gpu "$H" none
  start_holder "$H"
  start_dockerd "$H"
  start_sshd "$H"
  bj_files
  wait_for "$START_TIMEOUT" "$H dockerd" host_docker "$H" info || { tail_log "$GPF_TEST_LOG/$H-dockerd.log"; die "$H: dockerd did not start"; }
  wait_for 20 "$H sshd through $JUMP" ssh -F "$BJ_CONFIG" -o ConnectTimeout=5 "$H" true \
    || { tail_log "$GPF_TEST_LOG/$H-sshd.log"; die "$H: no ssh login through $JUMP"; }
  log "$H: up in $((SECONDS - t0))s: ssh -F $BJ_CONFIG $H (only through $JUMP); $BJ_JSON"
}

bj_down() {
  host_down "$H"
  ip -n "$(netns "$JUMP")" link del "gpf-$H" >/dev/null 2>&1 || true
  ip route del unreachable "${LINK_JUMP_SIDE%.*}.0/24" >/dev/null 2>&1 || true
  if [[ -e /run/netns/$(netns "$H") ]]; then ip netns del "$(netns "$H")"; fi
  rm -f "$BJ_JSON"
  log "$H: down"
}

# testhosts.sh down calls `down` while it holds the lock
locked() { [[ ${GPF_TESTHOSTS_LOCKED:-} == 1 ]] || lock; }

case ${1:-} in
  up) need_root; locked; bj_up ;;
  down) need_root; locked; bj_down ;;
  status) bj_healthy && echo "$H ${ADDR[$H]} up (through $JUMP)" || { echo "$H ${ADDR[$H]} down"; exit 3; } ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
