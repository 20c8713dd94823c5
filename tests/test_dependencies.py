"""Every package is pinned: the direct requirements in pyproject.toml, and with them every transitive one
in constraints.txt, which `make install` and the Docker images install with (`-c constraints.txt`)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_LOCKED = {"dentalscan", "pip", "setuptools", "wheel"}  # the project itself and the installer


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
            assert match, f"not a name==version pin: {line!r}"
            pins[_name(match[1])] = match[2]
    return pins


def test_direct_requirements_are_pinned_and_agree_with_the_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    lock = _lock()
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]+\])?==([^\s;]+)", requirement)
        assert match, f"not pinned with ==: {requirement}"
        locked = lock.get(_name(match[1]))
        assert locked == match[3], f"{requirement} but constraints.txt has {locked}"


def test_what_is_installed_is_what_the_lock_says() -> None:
    """Catches a dependency added to pyproject.toml without `make lock`, or a lock that drifted."""
    lock = _lock()
    installed = {_name(d.metadata["Name"]): d.version for d in distributions()}
    unlocked = sorted(set(installed) - set(lock) - NOT_LOCKED)
    assert not unlocked, f"installed but not in constraints.txt (run make lock): {unlocked}"
    differ = {n: (installed[n], v) for n, v in lock.items() if n in installed and installed[n] != v}
    assert not differ, f"installed version differs from constraints.txt: {differ}"
