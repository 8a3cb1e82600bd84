"""The layers import downwards only, and only the container and the API know observability."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "taskforce"

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


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
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
            if name in path.read_text(encoding="utf-8")
        }
        assert set() == found

    def test_aioprometheus_behind_one_adapter(self) -> None:
        """Only the adapter module imports aioprometheus."""
        adapter = SRC / "observability" / "metrics" / "_aioprometheus.py"
        importers = set()
        for path in _modules():
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    modules = [node.module]
                else:
                    continue
                if any(m == "aioprometheus" or m.startswith("aioprometheus.") for m in modules):
                    importers.add(str(path.relative_to(SRC)))
        assert {str(adapter.relative_to(SRC))} == importers
