"""Wheelhouses for hosts that may not reach a package index: built here, uploaded, installed offline.

A wheelhouse holds gpuform's own wheel plus wheels of the requirements, downloaded for the host's Python
version and platform (``pip download --only-binary=:all: --platform … --python-version …``). It is cached
under the state directory by a hash of (platform, requirements, gpuform's source).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import requires
from pathlib import Path

import gpuform
from gpuform.errors import ProviderError


@dataclass(frozen=True)
class Platform:
    """A host's interpreter: ``3.11``, ``x86_64``, glibc ``(2, 36)``."""

    python: str
    machine: str
    glibc: tuple[int, int]

    PROBE = ("import json, platform, sys; v = platform.libc_ver()[1] or '2.17'; "
             "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'machine': platform.machine(), "
             "'glibc': [int(x) for x in v.split('.')[:2]]}))")

    @classmethod
    def parse(cls, text: str) -> Platform:
        data = json.loads(text)
        return cls(str(data["python"]), str(data["machine"]), (int(data["glibc"][0]), int(data["glibc"][1])))

    @classmethod
    def here(cls) -> Platform:
        out = subprocess.run([sys.executable, "-c", cls.PROBE], capture_output=True, text=True, check=True).stdout
        return cls.parse(out)

    @property
    def tag(self) -> str:
        return f"cp{self.python.replace('.', '')}-{self.machine}-glibc{self.glibc[0]}.{self.glibc[1]}"

    def pip_platform_args(self) -> list[str]:
        tags = [f"manylinux_{self.glibc[0]}_{minor}_{self.machine}" for minor in range(5, self.glibc[1] + 1)]
        tags += [f"manylinux2014_{self.machine}", f"manylinux2010_{self.machine}", f"manylinux1_{self.machine}",
                 f"linux_{self.machine}"]
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python]
        for tag in tags:
            args += ["--platform", tag]
        return args


def source_root() -> Path | None:
    """The checkout gpuform runs from (editable installs), where its wheel can be built."""
    root = Path(gpuform.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").exists() and (root / "gpuform" / "__init__.py").exists() else None


def gpuform_requirements() -> list[str]:
    """gpuform's own dependencies (no extras), for hosts that run the gateway."""
    return [r for r in (requires("gpuform") or []) if "extra ==" not in r]


def _source_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((root / "gpuform").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            st = path.stat()
            h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    h.update((root / "pyproject.toml").read_bytes())
    return h.hexdigest()[:16]


_build_lock = threading.Lock()


def build(cache: Path, platform: Platform, requirements: list[str], announce: Callable[[], None] = lambda: None
          ) -> Path:
    """A directory of wheels: gpuform plus ``requirements`` for ``platform`` (cached; one build at a time,
    across threads and processes). ``announce`` is called when it is not in the cache (a build starts)."""
    cache.mkdir(parents=True, exist_ok=True)
    with _build_lock, open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(cache, platform, requirements, announce)


def _build(cache: Path, platform: Platform, requirements: list[str], announce: Callable[[], None]) -> Path:
    root = source_root()
    version = _source_digest(root) if root else gpuform.__version__
    key = hashlib.sha256(json.dumps([platform.tag, sorted(requirements), version]).encode()).hexdigest()[:16]
    target = cache / f"{platform.tag}-{key}"
    if (target / ".complete").exists():
        return target
    announce()
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("gpuform-*.whl"):
        old.unlink()
    if root is not None:
        _copy_gpuform_wheel(cache, root, version, target)
    else:
        _pip(["download", "--no-deps", "-d", str(target), f"gpuform=={gpuform.__version__}"], "download gpuform")
    if requirements:
        _pip(["download", "-d", str(target), *platform.pip_platform_args(), *requirements],
             f"download wheels for {platform.tag}")
    (target / ".complete").write_text(json.dumps({"platform": platform.tag, "requirements": requirements}))
    return target


def _copy_gpuform_wheel(cache: Path, root: Path, version: str, target: Path) -> None:
    """gpuform's wheel of this source (built once per source digest, shared by every wheelhouse) into ``target``."""
    built = cache / f"gpuform-{version}"
    if not (built / ".complete").exists():
        shutil.rmtree(built, ignore_errors=True)
        built.mkdir(parents=True)
        _build_from_source(root, built)
        (built / ".complete").write_text(version)
    for wheel in built.glob("gpuform-*.whl"):
        shutil.copy2(wheel, target / wheel.name)


def _build_from_source(root: Path, target: Path) -> None:
    """``pip wheel`` of a copy of the checkout's package (its ``gpuform/``, ``pyproject.toml`` and README).
    Building in the checkout itself reuses setuptools' ``build/lib``, which keeps modules deleted from the
    source since: the wheel would then carry them, and the gateway it runs would report another build id."""
    with tempfile.TemporaryDirectory(prefix="gpuform-wheel-") as tmp:
        staged = Path(tmp)
        shutil.copytree(root / "gpuform", staged / "gpuform", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md"):
            if (root / name).exists():
                shutil.copy2(root / name, staged / name)
        _pip(["wheel", "--no-deps", "--wheel-dir", str(target), str(staged)],
             "build gpuform's wheel")


def _pip(args: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, check=False, env={**os.environ, "PIP_NO_INPUT": "1"})
    if proc.returncode != 0:
        tail = "\n".join(line for line in proc.stderr.splitlines() if "is ignored" not in line)[-1500:]
        raise ProviderError(f"could not {what}: {tail}",
                            "The machine running gpuform must reach a package index (or a local mirror via "
                            "PIP_INDEX_URL / PIP_FIND_LINKS) to prepare wheels for hosts that cannot.")
