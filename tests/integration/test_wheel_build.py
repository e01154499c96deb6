"""gpuform's wheel for hosts is built from the checkout's current source only: a module deleted from the
source but still in setuptools' ``build/lib`` (an editable checkout after ``git pull``) is not in the wheel,
so the gateway it runs reports the same build id as the control plane."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from gpuform.providers.common.wheels import _build_from_source

pytestmark = [pytest.mark.integration]


def test_a_module_left_in_build_lib_is_not_in_the_wheel(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    (root / "gpuform").mkdir(parents=True)
    (root / "gpuform" / "__init__.py").write_text('__version__ = "0.0.1"\n')
    (root / "gpuform" / "kept.py").write_text("KEPT = 1\n")
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "gpuform"\nversion = "0.0.1"\n'
        '[tool.setuptools.packages.find]\ninclude = ["gpuform*"]\n')
    stale = root / "build" / "lib" / "gpuform"
    stale.mkdir(parents=True)
    (stale / "deleted_since.py").write_text("GONE = 1\n")
    target = tmp_path / "wheels"
    target.mkdir()

    _build_from_source(root, target)

    [wheel] = target.glob("gpuform-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gpuform/kept.py" in names
    assert not any("deleted_since" in n for n in names), names
    assert (stale / "deleted_since.py").exists(), "the checkout's own build directory is left alone"
