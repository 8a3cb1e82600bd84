"""The layers import downwards only, and only the container and the API know observability."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.support import source

SRC = source.SRC

# layer -> prefixes of taskforce modules it must never import
_FORBIDDEN = {
    "core": (
        "taskforce.infrastructure",
        "taskforce.application",
        "taskforce.api",
        "taskforce.observability",
        "taskforce.config",
    ),
    "infrastructure": ("taskforce.application", "taskforce.api", "taskforce.observability"),
    "application": ("taskforce.api",),
}
_OBSERVABILITY_ALLOWED = ("taskforce.core.interfaces", "taskforce.observability")
_MAY_IMPORT_OBSERVABILITY = ("application/container.py", "api/")


def _modules() -> tuple[Path, ...]:
    return source.modules(SRC)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in source.nodes(path):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name == "taskforce" or name.startswith("taskforce.")}


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else ""


class TestLayers:
    @pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
    def test_imports_point_downwards(self, path: Path) -> None:
        """No module imports a layer above its own (ARCHITECTURE.md, 'Layers')."""
        layer = _layer(path)
        imports = _imports(path)
        bad = {m for m in imports for p in _FORBIDDEN.get(layer, ()) if m.startswith(p)}
        if layer == "observability":
            bad |= {m for m in imports if not m.startswith(_OBSERVABILITY_ALLOWED)}
        rel = str(path.relative_to(SRC))
        if not rel.startswith(_MAY_IMPORT_OBSERVABILITY) and layer != "observability":
            bad |= {m for m in imports if m.startswith("taskforce.observability")}
        assert set() == bad

    def test_the_rule_sees_imports(self) -> None:
        """The checker finds a forbidden import when there is one (it can fail)."""
        src = SRC / "application" / "container.py"
        assert any(m.startswith("taskforce.observability") for m in _imports(src))


class TestMetricsLayer:
    def test_no_metric_name_outside_the_catalog(self) -> None:
        """A metric is named in the catalog module only; code records through its spec."""
        from taskforce.observability.metrics import CATALOG

        catalog = SRC / "observability" / "metrics" / "_catalog.py"
        names = {spec.name for spec in CATALOG}
        found = {
            (str(path.relative_to(SRC)), name)
            for path in _modules()
            if path != catalog
            for name in names
            if name in source.text(path)
        }
        assert set() == found

    def test_aioprometheus_behind_one_adapter(self) -> None:
        """Only the adapter module imports aioprometheus, in any form (lazily, by importlib)."""
        adapter = SRC / "observability" / "metrics" / "_aioprometheus.py"
        importers = {
            str(path.relative_to(SRC))
            for path in _modules()
            if _imports_aioprometheus(source.nodes(path))
        }
        assert {str(adapter.relative_to(SRC))} == importers

    @pytest.mark.parametrize(
        "source",
        [
            "import aioprometheus",
            "import aioprometheus.collectors as c",
            "from aioprometheus.renderer import render",
            "def f():\n    from aioprometheus import Registry",
            "import importlib\nimportlib.import_module('aioprometheus.collectors')",
            "from importlib import import_module\nimport_module('aioprometheus')",
            "__import__('aioprometheus')",
        ],
    )
    def test_the_adapter_rule_sees_every_import_form(self, source: str) -> None:
        """The checker finds aioprometheus imported any of these ways (it can fail)."""
        assert _imports_aioprometheus(ast.walk(ast.parse(source)))

    def test_the_adapter_rule_ignores_mentions(self) -> None:
        """A docstring or a comment naming aioprometheus is no import."""
        assert not _imports_aioprometheus(
            ast.walk(ast.parse('"""aioprometheus\' own handler."""\nx = 1  # aioprometheus'))
        )


def _is_aioprometheus(name: object) -> bool:
    return isinstance(name, str) and (name == "aioprometheus" or name.startswith("aioprometheus."))


def _imports_aioprometheus(nodes: Iterable[ast.AST]) -> bool:
    """Whether a module of these nodes imports aioprometheus (statements, ``import_module``,
    ``__import__``)."""
    for node in nodes:
        if isinstance(node, ast.Import):
            names: list[object] = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called not in ("import_module", "__import__"):
                continue
            first = node.args[0]
            names = [first.value if isinstance(first, ast.Constant) else None]
        else:
            continue
        if any(_is_aioprometheus(name) for name in names):
            return True
    return False
