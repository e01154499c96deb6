#!/usr/bin/env bash
# Smoke test of the test infrastructure itself (run after all.sh). Leaves the hosts as it found them.
# Usage: .ci/setup/selftest.sh [--cycle]     --cycle: also `testhosts.sh down` then `up`
# shellcheck disable=SC2016  # single-quoted scripts run on the hosts
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
need_root

KEY=$GPF_TEST_ROOT/ssh/id_ed25519
KNOWN=$GPF_TEST_ROOT/ssh/known_hosts
WRAP=$GPF_TEST_ROOT/ssh/bin
H1=10.77.0.11
H2=10.77.0.12
SSH=(ssh -i "$KEY" -o UserKnownHostsFile="$KNOWN" -o BatchMode=yes)
fails=0
ok() { log "ok   $*"; }
bad() { log "FAIL $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

bash "$HERE/testhosts.sh" status >/dev/null || die "hosts not up (run .ci/setup/all.sh)"

t_info() {
  local out
  out=$("${SSH[@]}" root@$H1 docker info 2>/dev/null) || return 1
  [[ $out == *"Name: gpuform-h1"* && $out == *"gpuform-test.host=h1"* && $out == *"Storage Driver: vfs"* ]]
}
check "ssh -i KEY -o UserKnownHostsFile=KNOWN root@$H1 docker info -> h1's own dockerd" t_info

t_docker_ssh() { PATH="$WRAP:$PATH" docker -H ssh://root@$H1 info -f '{{.Name}}' 2>/dev/null | grep -qx gpuform-h1; }
check "docker -H ssh://root@$H1 (with $WRAP first on PATH)" t_docker_ssh

t_srv() {
  local tag=selftest-$$
  "${SSH[@]}" root@$H1 "echo $tag > /srv/selftest-x" || return 1
  [[ $("${SSH[@]}" root@$H1 cat /srv/selftest-x) == "$tag" ]] || return 1
  "${SSH[@]}" root@$H2 test ! -e /srv/selftest-x || return 1
  [[ ! -e /srv/selftest-x ]] || return 1
  [[ -f $GPF_TEST_ROOT/hosts/h1/srv/selftest-x ]] || return 1
  "${SSH[@]}" root@$H1 rm -f /srv/selftest-x
}
check "/srv/x written on h1: absent on h2 and in the root ns" t_srv

t_image() {
  local had
  had=$("${SSH[@]}" root@$H1 "docker image inspect $GPF_BASE_IMAGE >/dev/null 2>&1 && echo yes || echo no")
  main_docker save "$GPF_BASE_IMAGE" | "${SSH[@]}" root@$H1 docker load >/dev/null || return 1
  [[ $("${SSH[@]}" root@$H1 "docker run --rm --network host $GPF_BASE_IMAGE python3 -c 'print(1)'") == 1 ]] || return 1
  "${SSH[@]}" root@$H2 "! docker image inspect $GPF_BASE_IMAGE >/dev/null 2>&1" || return 1
  [[ $had == yes ]] || "${SSH[@]}" root@$H1 docker rmi "$GPF_BASE_IMAGE" >/dev/null
}
check "docker save | ssh h1 docker load; docker run --network host on h1 (not on h2)" t_image

t_gpu() {
  local lines
  lines=$("${SSH[@]}" root@$H1 nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader) || return 1
  [[ $(grep -c '^[0-7], NVIDIA H100 80GB HBM3, 81559 MiB, GPU-' <<<"$lines") == 8 ]] || return 1
  "${SSH[@]}" root@$H2 '! command -v nvidia-smi' >/dev/null || return 1
  ! command -v nvidia-smi >/dev/null
}
check "nvidia-smi stand-in: 8x H100 on h1, absent on h2 and in the root ns" t_gpu

t_python() {
  local h
  for h in $H1 $H2; do
    "${SSH[@]}" "root@$h" 'd=$(mktemp -d) && python3 -m venv "$d/v" && "$d/v/bin/python" -c "import sys; assert sys.prefix != sys.base_prefix" && rm -rf "$d"' || return 1
  done
}
check "python3 -m venv works on h1 and h2" t_python

t_keyonly() {
  local out
  out=$(ssh -o UserKnownHostsFile="$KNOWN" -o BatchMode=yes -o PubkeyAuthentication=no \
        -o PreferredAuthentications=password,keyboard-interactive root@$H1 true 2>&1) && return 1
  [[ $out == *"Permission denied (publickey)"* ]]
}
check "root login is key-only (password/keyboard-interactive refused)" t_keyonly

t_main() { [[ $(main_docker info -f '{{.Name}} {{len .Labels}}') == "$(hostname) 0" ]]; }
check "root ns /var/run/docker.sock is still the main dockerd" t_main

if [[ ${1:-} == --cycle ]]; then
  t_cycle() { bash "$HERE/testhosts.sh" down >/dev/null 2>&1 && bash "$HERE/testhosts.sh" up >/dev/null 2>&1 && t_info; }
  check "testhosts.sh down; up" t_cycle
fi

((fails == 0)) || die "$fails check(s) failed"
log "all checks passed"
