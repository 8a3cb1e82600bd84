"""deploy/grafana's dashboard reads only catalog metrics and labels, and every query parses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from taskforce.observability.metrics._catalog import CATALOG, PROCESS_CATALOG, metric
from tests.integration import promql
from tests.support.binaries import check_expressions

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "taskforce-dashboard.json"
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def _variables() -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in _dashboard()["templating"]["list"]}


def _substitute(expr: str) -> str:
    """Replace template variables by what Prometheus can evaluate: all values, fixed windows."""
    for name, value in promql.GRAFANA_BUILTINS.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?([a-zA-Z_]\w*)\}?", ".*", expr)


def _queries() -> list[tuple[str, str, dict[str, Any]]]:
    """Every (panel title, refId, target) of the dashboard."""
    return [
        (panel["title"], target["refId"], target)
        for panel in _panels()
        for target in panel["targets"]
    ]


class TestDashboardQueries:
    def test_queries_name_only_catalog_metrics_and_labels(self) -> None:
        """Every panel expression reads catalog metrics, with labels those metrics carry."""
        found = [
            message
            for title, _, target in _queries()
            for message in promql.problems(_substitute(target["expr"]))
        ]
        assert [] == found

    def test_matchers_use_values_the_code_produces(self) -> None:
        """A matcher on a closed label (status="error", ...) names one of its catalog values."""
        exprs = [_substitute(target["expr"]) for _, _, target in _queries()]
        assert [] == [message for expr in exprs for message in promql.closed_value_problems(expr)]

    def test_every_catalog_metric_has_a_panel(self) -> None:
        """Each metric of the catalog is graphed by at least one panel."""
        graphed: set[str] = set()
        for _, _, target in _queries():
            graphed |= promql.metrics_named(_substitute(target["expr"]))
        assert {spec.name for spec in CATALOG} == graphed - {s.name for s in PROCESS_CATALOG}

    def test_processes_row_shows_restarts_and_file_descriptors(self) -> None:
        """The Processes row graphs restarts (start time changes) and fds against the limit."""
        exprs = {title: target["expr"] for title, _, target in _queries()}
        assert "changes(process_start_time_seconds" in exprs["Restarts"]
        assert "process_open_fds / process_max_fds" in exprs["File descriptors used"]

    def test_legends_use_grouped_labels(self) -> None:
        """A legend's {{label}} is a label its query keeps (else the legend is blank)."""
        wrong = []
        for title, ref, target in _queries():
            kept = promql.read(_substitute(target["expr"])).grouping
            used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            if used - kept:
                wrong.append((title, ref, sorted(used - kept)))
        assert [] == wrong

    def test_agent_flow_selector_applies_everywhere(self) -> None:
        """Every selector of a metric with an agent_type label filters by $agent_type."""
        unfiltered = []
        for title, ref, target in _queries():
            for name, labels in promql.read(target["expr"]).series.items():
                if "agent_type" not in promql.allowed_labels(name):
                    continue
                if "agent_type" not in labels or '"$agent_type"' not in target["expr"]:
                    unfiltered.append((title, ref, name))
        assert [] == unfiltered

    def test_variables_are_defined(self) -> None:
        """Every $variable in a query is a dashboard variable or a Grafana built-in."""
        defined = set(_variables()) | {name.lstrip("$") for name in promql.GRAFANA_BUILTINS}
        used = {
            name
            for _, _, target in _queries()
            for name in re.findall(r"\$\{?([a-zA-Z_]\w*)\}?", target["expr"])
        }
        assert set() == used - defined

    def test_agent_type_variable_reads_a_catalog_label(self) -> None:
        """The agent_type variable lists label values that the catalog declares."""
        variable = _variables()["agent_type"]
        found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
        assert found is not None
        assert "agent_type" in metric(found.group(1)).label_names
        assert "agent_type" == found.group(2)
        assert variable["includeAll"] and ".*" == variable["allValue"]

    @pytest.mark.integration
    def test_queries_parse_with_promtool(self, tmp_path: Path) -> None:
        """promtool accepts every expression, as a recording rule, once variables are filled."""
        expressions = [_substitute(target["expr"]) for _, _, target in _queries()]
        result = check_expressions("dashboard", expressions, tmp_path)
        assert 0 == result.returncode, result.stdout + result.stderr
        assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


class TestDashboardLayout:
    def test_datasource_is_a_variable(self) -> None:
        """Panels and targets use the ${DS_PROMETHEUS} datasource variable, never a fixed uid."""
        assert "datasource" == _variables()["DS_PROMETHEUS"]["type"]
        assert "prometheus" == _variables()["DS_PROMETHEUS"]["query"]
        for panel in _panels():
            assert DATASOURCE == panel["datasource"], panel["title"]
            for target in panel["targets"]:
                assert DATASOURCE == target["datasource"], panel["title"]

    def test_rows_are_documented(self) -> None:
        """docs/operator-guide.md says what each row of the dashboard answers, row by row."""
        text = GUIDE.read_text(encoding="utf-8").split("\n## The dashboard\n", 1)[1]
        documented = re.findall(r"^\| ([A-Z][\w ]+?) \|", text.split("\n## ", 1)[0], re.M)
        rows = [panel["title"] for panel in _dashboard()["panels"] if panel["type"] == "row"]
        assert rows == documented

    def test_panel_ids_are_unique(self) -> None:
        """Grafana keys panels by id: no two share one."""
        ids = [panel["id"] for panel in _dashboard()["panels"]]
        assert sorted(set(ids)) == sorted(ids)

    def test_panels_do_not_overlap(self) -> None:
        """Every panel fits the 24-column grid and no two panels cover the same cell."""
        taken: dict[tuple[int, int], str] = {}
        for panel in _dashboard()["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in taken, (panel["title"], taken.get((x, y)))
                    taken[(x, y)] = panel["title"]

    def test_schema_version(self) -> None:
        """The dashboard targets a current Grafana schema and has a stable uid for links."""
        dashboard = _dashboard()
        assert 36 <= dashboard["schemaVersion"] <= 41
        assert "taskforce-overview" == dashboard["uid"]
        assert None is dashboard["id"]
