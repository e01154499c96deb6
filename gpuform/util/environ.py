"""The environment gpuform gives the processes it starts: a short allowlist from its own environment plus
what is declared for them, never the operator's whole shell (which holds other keys and tokens)."""

from __future__ import annotations

import os
from collections.abc import Mapping

ALLOWED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "SHELL", "LD_LIBRARY_PATH",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
    "XDG_RUNTIME_DIR"})
ALLOWED_PREFIXES = ("LC_", "CUDA_")
GATEWAY_EXTRA = frozenset({"SSH_AUTH_SOCK", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY"})


def built_environment(declared: Mapping[str, str], *, extra_allowed: frozenset[str] = frozenset(),
                      source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allowlisted part of ``source`` (default: this process's environment), then ``declared``."""
    source = os.environ if source is None else source
    env = {k: v for k, v in source.items()
           if k in ALLOWED or k in extra_allowed or k.startswith(ALLOWED_PREFIXES)}
    env.update(declared)
    return env
