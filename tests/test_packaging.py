"""The distribution declares what the package imports, and imports what it declares."""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support import source

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "taskforce"


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _build_backend() -> Requirement:
    """The setuptools ``build-system.requires`` asks for."""
    requires = [Requirement(text) for text in _pyproject()["build-system"]["requires"]]
    return next(req for req in requires if req.name == "setuptools")


def _declared() -> set[str]:
    """The runtime dependencies plus the optional runtime extras (not `dev`)."""
    project = _pyproject()["project"]
    names = {_name(req) for req in project["dependencies"]}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        if extra != "dev":
            names |= {_name(req) for req in reqs if not req.startswith("pytaskforce")}
    return names


def _imported_top_levels() -> set[str]:
    """Top-level modules imported anywhere under src/taskforce (absolute imports only)."""
    tops: set[str] = set()
    for path in source.modules(SRC):
        for node in source.nodes(path):
            if isinstance(node, ast.Import):
                tops |= {alias.name.split(".", 1)[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".", 1)[0])
    return tops - set(sys.stdlib_module_names) - {"taskforce", "__future__"}


@functools.cache
def _imported_distributions() -> dict[str, str]:
    """Distribution name -> the top-level module of the package that makes it needed."""
    owners = packages_distributions()
    found: dict[str, str] = {}
    for top in sorted(_imported_top_levels()):
        assert top in owners, f"{top} is imported but no installed distribution provides it"
        for dist in owners[top]:
            found[_name(dist)] = top
    return found


class TestDeclaredDependencies:
    def test_every_imported_distribution_is_declared(self) -> None:
        """A module the code imports directly comes from a dependency pyproject names."""
        undeclared = {d: t for d, t in _imported_distributions().items() if d not in _declared()}
        assert {} == undeclared

    def test_every_declared_dependency_is_imported(self) -> None:
        """No runtime dependency is declared that the package never imports."""
        assert set() == _declared() - set(_imported_distributions())


#: The oldest release of each runtime dependency (the postgres extra's too) and of the dev
#: extra's test runner that the suite, fast loop and integration tests, passed with, every
#: one at its bound at once (a fresh venv from a constraints file of these pins). A bound
#: moves only with such a run: an older release failed (CHANGELOG says which test), or
#: cannot be installed beside the others.
_VERIFIED_FLOORS = {
    "fastapi": "0.123.7",
    "starlette": "0.40",
    "uvicorn": "0.29",
    "h11": "0.13",
    "anyio": "4.0",
    "pydantic": "2.10.1",
    "pydantic-settings": "2.7",
    "structlog": "24.1",
    "httpx": "0.27",
    "openai": "1.99.4",
    "wrapt": "2.1",
    "aioprometheus": "23.12",
    "asyncpg": "0.32",
    "pytest": "8.3",
    "pytest-asyncio": "0.24",
}


def _floors() -> dict[str, Version | None]:
    """Each declared requirement (runtime, extras, dev) -> its lower bound, or None."""
    project = _pyproject()["project"]
    texts = list(project["dependencies"])
    for reqs in project.get("optional-dependencies", {}).values():
        texts += [req for req in reqs if not req.startswith("pytaskforce")]
    floors: dict[str, Version | None] = {}
    for text in texts:
        requirement = Requirement(text)
        lows = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
        floors[_name(requirement.name)] = max(lows, default=None)
    return floors


class TestDependencyBounds:
    def test_every_requirement_has_a_lower_bound(self) -> None:
        """Without one, an environment may keep any old release of it."""
        assert [] == [name for name, floor in _floors().items() if floor is None]

    def test_the_lower_bounds_are_the_verified_ones(self) -> None:
        """The runtime bounds and the test runner's are those the suite passed with."""
        declared = _floors()
        expected = {name: Version(floor) for name, floor in _VERIFIED_FLOORS.items()}
        assert expected == {name: declared.get(name) for name in expected}
        assert set() == _declared() - set(expected)


# What a clone holds that the README's set-up lines, the tests and the docs need: the
# files at the top and every file under these folders (the caches .gitignore names aside).
_PROJECT_FILES = (
    "README.md",
    "LICENSE",
    "pyproject.toml",
    "MANIFEST.in",
    "noxfile.py",
    "CHANGELOG.md",
)
_PROJECT_DIRS = ("src", "tests", "docs", "deploy", "examples", "benchmarks", ".ci")
_NOT_SOURCE = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info")


def _project_tree(into: Path) -> set[str]:
    """Copy the project's files into ``into``; return their paths relative to it."""
    for name in _PROJECT_FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, into / name)
    for name in _PROJECT_DIRS:
        shutil.copytree(ROOT / name, into / name, ignore=_NOT_SOURCE)
    return {path.relative_to(into).as_posix() for path in into.rglob("*") if path.is_file()}


def _require_build_backend() -> None:
    """Skip the test outside CI, fail it under ``CI=true``, unless the setuptools installed
    here (the dev extra's) is one ``build-system.requires`` accepts."""
    wanted = _build_backend()
    try:
        have: str | None = version("setuptools")
    except PackageNotFoundError:
        have = None
    if have is None or have not in wanted.specifier:
        message = f"setuptools {have or 'is not installed'}: the build needs {wanted}"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


class TestMetadata:
    def test_the_license_is_an_spdx_expression(self) -> None:
        """``project.license`` is an SPDX expression, which setuptools reads from 77 on (so
        the build asks for 77 or later); the TOML table form (``{text = "MIT"}``) is
        deprecated, with builds to stop taking it from 2027-02-18."""
        assert "MIT" == _pyproject()["project"]["license"]
        assert Version("76.9") not in _build_backend().specifier

    def test_the_license_text_ships_with_the_project(self) -> None:
        """The licence the metadata names is in a LICENSE file at the top, the one setuptools
        puts into the wheel and the sdist (``license-files``' default)."""
        text = (ROOT / "LICENSE").read_text(encoding="utf-8")
        assert text.startswith("MIT License\n")
        assert "Permission is hereby granted, free of charge" in text


class TestSourceDistribution:
    @pytest.mark.slow  # setuptools builds the sdist in a Python process of its own
    def test_the_sdist_holds_the_whole_project(self, tmp_path: Path) -> None:
        """An unpacked sdist is a project its README's test line works in: the tests with
        their conftest and support modules, the docs, deploy files, examples, benchmarks
        and the files they read (the package alone left the tests unable to import)."""
        _require_build_backend()
        tree = tmp_path / "tree"
        tree.mkdir()
        expected = _project_tree(tree)
        out = tmp_path / "dist"
        build = (
            "import sys; from setuptools import build_meta;"
            " print(build_meta.build_sdist(sys.argv[1]))"
        )
        done = subprocess.run(
            [sys.executable, "-c", build, str(out)],
            cwd=tree,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert 0 == done.returncode, done.stderr[-2000:]
        archive = out / done.stdout.strip().splitlines()[-1]
        with tarfile.open(archive) as sdist:
            top = archive.name.removesuffix(".tar.gz") + "/"
            shipped = {m.name.removeprefix(top) for m in sdist.getmembers() if m.isfile()}
        assert set() == expected - shipped


def _nox_pythons() -> set[str]:
    """Every Python a session of noxfile.py runs on (``python=`` a version, a list, a name)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    names = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "python":
            value = node.value
            if isinstance(value, ast.Name):
                value = names[value.id]
            found |= (
                {str(item) for item in ast.literal_eval(value)}
                if isinstance(value, ast.List)
                else {str(ast.literal_eval(value))}
            )
    return found


class TestPythonVersions:
    def test_the_classifiers_name_the_pythons_the_sessions_run(self) -> None:
        """The trove classifiers name each Python a nox session runs the suite on, no other,
        and ``requires-python`` starts at the oldest of them."""
        project = _pyproject()["project"]
        prefix = "Programming Language :: Python :: "
        named = {
            entry.removeprefix(prefix)
            for entry in project["classifiers"]
            if re.fullmatch(re.escape(prefix) + r"3\.\d+", entry)
        }
        assert _nox_pythons() == named
        oldest = min(named, key=Version)
        assert f">={oldest}" == project["requires-python"]
