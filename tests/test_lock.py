"""requirements/lock.txt is complete and consistent with pyproject.toml (issue 15).

The lock pins every transitive dependency at the versions the suite passes with; it is
what `.ci/run`, the README's commands and the docker images install. These tests fail
when a dependency named in pyproject.toml (base or any extra) is missing from the lock
or pinned outside its range, so a change of pyproject.toml cannot land without
`bash requirements/lock.sh`. Under `.ci/run` (SDL_LOCKED_ENV=1) they also check that
what is installed is what the lock says.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*$")

#: the platform the lock is for: Python 3.11 on Linux x86_64
LOCK_ENV = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.7",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def parse_lock(text: str) -> dict[str, Version]:
    """name -> pinned version; every requirement line of the lock must be an exact pin."""
    pins: dict[str, Version] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = PIN.match(line)
        if not m:
            raise ValueError(f"lock line {n} is not an exact pin 'name==version': {raw!r}")
        name = canonicalize_name(m.group(1))
        if name in pins:
            raise ValueError(f"lock line {n}: {name} is pinned twice")
        pins[name] = Version(m.group(2))
    return pins


def project_requirements(pyproject: dict) -> list[tuple[str, Requirement]]:
    """(where, requirement) for the base dependencies and every extra of pyproject.toml."""
    project = pyproject["project"]
    found = [("dependencies", Requirement(r)) for r in project.get("dependencies", [])]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        found += [(f"optional-dependencies.{extra}", Requirement(r)) for r in reqs]
    return found


def lock_problems(pyproject: dict, pins: dict[str, Version]) -> list[str]:
    """Every requirement of pyproject.toml that the lock misses or pins outside its range."""
    problems = []
    for where, req in project_requirements(pyproject):
        if req.marker is not None and not req.marker.evaluate({**LOCK_ENV, "extra": ""}):
            continue  # not for Python 3.11 on Linux
        name = canonicalize_name(req.name)
        if name == canonicalize_name(pyproject["project"]["name"]):
            continue  # an extra that names another extra of sdl itself
        if name not in pins:
            problems.append(f"{req} ({where}) is not in requirements/lock.txt")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req} ({where}): the lock pins {name}=={pins[name]}, outside the range")
    return problems


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def pins() -> dict[str, Version]:
    return parse_lock(LOCK.read_text())


def test_the_lock_says_how_to_regenerate_it():
    head = LOCK.read_text().splitlines()[:3]
    assert any("bash requirements/lock.sh" in line for line in head), head
    assert (ROOT / "requirements" / "lock.sh").exists()


def test_every_dependency_of_pyproject_is_pinned_within_its_range(pyproject, pins):
    assert lock_problems(pyproject, pins) == []


def test_torch_is_the_cpu_build(pins):
    assert pins["torch"].local == "cpu", "the lock must pin the CPU build of torch, never the CUDA one"
    assert not [name for name in pins if name.startswith("nvidia-")], "CUDA libraries in the lock"


def test_the_check_finds_a_missing_and_an_out_of_range_dependency(pyproject, pins):
    """The consistency check itself fails on a bad lock (so the test above can fail)."""
    broken = dict(pins)
    del broken["fastapi"]
    broken["pydantic"] = Version("1.10.0")
    problems = lock_problems(pyproject, broken)
    assert any(p.startswith("fastapi") and "not in requirements/lock.txt" in p for p in problems), problems
    assert any(p.startswith("pydantic") and "outside the range" in p for p in problems), problems
    with pytest.raises(ValueError, match="not an exact pin"):
        parse_lock("fastapi>=0.110\n")


@pytest.mark.skipif(os.environ.get("SDL_LOCKED_ENV") != "1",
                    reason="only where the environment was installed from the lock (.ci/run sets SDL_LOCKED_ENV=1)")
def test_the_installed_versions_are_the_locked_ones(pins):
    wrong = []
    for name, version in sorted(pins.items()):
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}=={version} is locked but not installed")
            continue
        if installed != version:
            wrong.append(f"{name}: installed {installed}, locked {version}")
    assert wrong == []
