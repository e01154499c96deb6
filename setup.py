"""Maps the top-level providers/ and workers/ directories into the gpuform namespace.

Providers install as ``gpuform.providers.*`` and workers as ``gpuform.workers.*``, so nothing with a generic
top-level name lands in site-packages. All other metadata lives in pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {"gpuform": "gpuform", "gpuform.providers": "providers", "gpuform.workers": "workers"}


def packages_under(directory: str, prefix: str) -> list[str]:
    return [prefix] + [f"{prefix}.{name}" for name in find_packages(directory)]


setup(
    package_dir=ROOTS,
    packages=[pkg for prefix, directory in ROOTS.items() for pkg in packages_under(directory, prefix)],
)
