#!/usr/bin/env bash
# Build the worker base image gpuform-test/base:bookworm without any registry:
# debootstrap (minbase + python3, python3-venv, ca-certificates) from the Debian mirror
# this machine's apt uses, trimmed, cached as a tarball, then `docker import`ed into
# the main dockerd. Reruns are no-ops when the image exists; a missing image with a
# cached tarball costs one import (no network).
# Usage: .ci/setup/base-image.sh [--rebuild]
# Env:   GPF_DEBIAN_MIRROR=http://...  override the mirror found in apt's sources
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
need_root
need_cmd debootstrap docker tar

SUITE=bookworm
INCLUDE=python3,python3-venv,ca-certificates
# Bump RECIPE when the build or trim steps change: it names the cached tarball.
RECIPE=v1
TARBALL=$GPF_TEST_CACHE/base-$SUITE-$RECIPE.tar
DEB_CACHE=$GPF_TEST_CACHE/debootstrap-debs

rebuild=0
[[ ${1:-} == --rebuild ]] && rebuild=1

mkdir -p "$GPF_TEST_CACHE"
exec 9>"$GPF_TEST_CACHE/.base-image.lock"
flock -w 900 9 || die "could not lock $GPF_TEST_CACHE/.base-image.lock within 900s"

main_docker info >/dev/null 2>&1 || die "main dockerd not answering on $GPF_MAIN_DOCKER_SOCK (run .ci/setup/dockerd.sh start)"

image_size() { main_docker image inspect -f '{{.Size}}' "$GPF_BASE_IMAGE" 2>/dev/null; }
report() {
  local bytes
  bytes=$(image_size)
  log "$GPF_BASE_IMAGE present: $((bytes / 1024 / 1024)) MiB ($bytes bytes); cached rootfs $TARBALL"
}

if ((!rebuild)) && main_docker image inspect "$GPF_BASE_IMAGE" >/dev/null 2>&1; then
  report
  exit 0
fi

# The archive URI apt uses for "$SUITE" (deb822 *.sources or one-line *.list), first hit.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$SUITE" '
      function flush() { if (uris != "" && (" " suites " ") ~ (" " suite " ") && enabled) { split(uris, u, " "); print u[1]; found = 1; exit } }
      /^[[:space:]]*$/ { flush(); uris = ""; suites = ""; enabled = 1; next }
      /^#/ { next }
      tolower($1) == "uris:" { $1 = ""; uris = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "enabled:" { enabled = (tolower($2) != "no") }
      BEGIN { enabled = 1 }
      END { if (!found) flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk -v suite="$SUITE" '
      $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) { print $i; exit } }' "$f"
  done
}

build_tarball() {
  local mirror=${GPF_DEBIAN_MIRROR:-}
  if [[ -z $mirror ]]; then
    mirror=$(find_mirror | head -n1)
    [[ -n $mirror ]] || die "no apt source for suite '$SUITE' found in /etc/apt/sources.list{,.d/*}; set GPF_DEBIAN_MIRROR"
  fi
  mirror=${mirror%/}
  log "debootstrap $SUITE from $mirror (variant minbase, include $INCLUDE)"
  mkdir -p "$GPF_TEST_CACHE" "$DEB_CACHE"
  local work
  work=$(mktemp -d "$GPF_TEST_CACHE/rootfs.XXXXXX")
  # shellcheck disable=SC2064
  trap "umount -R '$work/rootfs' 2>/dev/null || true; rm -rf '$work'" EXIT
  local t0=$SECONDS
  if ! debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$DEB_CACHE" \
      "$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [[ -f $work/rootfs/debootstrap/debootstrap.log ]] && tail -n 30 "$work/rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (mirror $mirror)"
  fi
  log "debootstrap done in $((SECONDS - t0))s; size before trim $(du -sm "$work/rootfs" | cut -f1) MiB"
  trim_rootfs "$work/rootfs" "$mirror"
  log "size after trim $(du -sm "$work/rootfs" | cut -f1) MiB"
  tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/rootfs.tar" .
  mv -f "$work/rootfs.tar" "$TARBALL"
  rm -f "$GPF_TEST_CACHE"/base-"$SUITE"-*.tar.old
  log "cached $TARBALL ($(du -m "$TARBALL" | cut -f1) MiB)"
}

trim_rootfs() {
  local r=$1 mirror=$2
  # anything still mounted by debootstrap
  umount -R "$r/proc" "$r/sys" "$r/dev/pts" 2>/dev/null || true
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old \
         "$r"/var/log/* "$r"/tmp/* "$r"/var/tmp/* "$r"/debootstrap \
         "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* \
         "$r"/usr/share/lintian "$r"/usr/share/linda "$r"/usr/share/locale/*
  find "$r/usr/lib/python3" "$r/usr/lib/python3.11" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
  # keep later apt-get installs in derived images from bringing the docs back
  mkdir -p "$r/etc/dpkg/dpkg.cfg.d"
  cat >"$r/etc/dpkg/dpkg.cfg.d/01-gpuform-nodoc" <<'NODOC'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
NODOC
  # container runtime owns these
  : >"$r/etc/hostname"
  rm -f "$r/etc/resolv.conf" "$r/etc/machine-id" "$r/var/lib/dbus/machine-id"
  : >"$r/etc/machine-id"
  printf 'deb %s %s main\n' "$mirror" "$SUITE" >"$r/etc/apt/sources.list"
}

if ((rebuild)) || [[ ! -s $TARBALL ]]; then
  build_tarball
else
  log "using cached rootfs $TARBALL"
fi

log "docker import -> $GPF_BASE_IMAGE"
main_docker rmi -f "$GPF_BASE_IMAGE" >/dev/null 2>&1 || true
main_docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "gpuform test base: debootstrap $SUITE minbase + $INCLUDE ($RECIPE)" \
  "$TARBALL" "$GPF_BASE_IMAGE" >/dev/null || die "docker import of $TARBALL failed"
main_docker run --rm --network host "$GPF_BASE_IMAGE" python3 -c 'import venv, ssl, sys; print(sys.version.split()[0])' >/dev/null \
  || die "$GPF_BASE_IMAGE does not run python3"
report
