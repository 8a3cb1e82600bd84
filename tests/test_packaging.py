"""The distribution declares what the package imports, and imports what it declares."""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.support import source

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "taskforce"


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _declared() -> set[str]:
    """The runtime dependencies plus the optional runtime extras (not `dev`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
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
