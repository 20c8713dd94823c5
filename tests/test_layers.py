"""The layers hold (import-linter's contracts in pyproject.toml), and the contracts do catch an upward import:
the linter is run on a temporary copy of the code with one deliberately added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "demo", "dicom", "core", "clinics", "patients", "analysis")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (make install)")


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports reads pyproject.toml from, and imports the packages relative to, the folder it runs in
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=where, capture_output=True, text=True, timeout=300, check=False
    )


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__", "models"))
    return copy


def test_the_code_keeps_its_layers() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("clinics/models.py", "from patients import models as _upward", "clinics is not allowed to import patients"),
        ("patients/models.py", "import analysis.models as _upward", "patients is not allowed to import analysis"),
        ("analysis/models.py", "import dicom.models as _upward", "analysis is not allowed to import dicom"),
        ("core/conditions.py", "import clinics.tenancy as _upward", "core is not allowed to import clinics"),
        ("analysis/ml/model.py", "import django.conf as _upward", "analysis.ml is not allowed to import django"),
    ],
)
def test_the_contract_catches_an_upward_import(tmp_path: Path, module: str, line: str, expected: str) -> None:
    copy = _copy(tmp_path)
    assert _lint(copy).returncode == 0  # the copy itself is clean...
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint(copy)
    assert result.returncode != 0 and expected in result.stdout, result.stdout[-3000:]  # ...until the import
