"""docs/metrics.md and the metric catalog module say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskforce.observability.metrics._catalog import CATALOG, FAULT_STAGES, metric, series_budget

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


@pytest.fixture(name="text", scope="module")
def fixture_text() -> str:
    """The operator page on metrics."""
    return DOC.read_text(encoding="utf-8")


def _catalog_table(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    section = text.split("## Catalog", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(taskforce_\w+)` \| (\w+) \| (.*?) \|$", section, re.M)
    return {name: (kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def _section(text: str, name: str) -> str:
    return text.split(f"### `{name}`\n", 1)[1].split("\n### ", 1)[0]


def _bound(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else repr(bound)


class TestMetricsDoc:
    def test_catalog_table_matches_module(self, text: str) -> None:
        """One row per catalog metric, with its type and labels in order."""
        expected = {spec.name: (spec.kind, spec.label_names) for spec in CATALOG}
        assert expected == _catalog_table(text)

    def test_no_documented_metric_is_missing_from_catalog(self, text: str) -> None:
        """Every taskforce_* name on the page (minus histogram suffixes) is in the catalog."""
        names = set(re.findall(r"\btaskforce_[a-z0-9_]+", text))
        stripped = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
        known = {spec.name for spec in CATALOG}
        assert set() == stripped - known

    def test_every_metric_has_a_section_with_promql_and_otel(self, text: str) -> None:
        """Each metric has its own section with a PromQL example and an OpenTelemetry line."""
        for spec in CATALOG:
            section = _section(text, spec.name)
            assert "```promql" in section, spec.name
            assert spec.name in section.split("```promql", 1)[1], spec.name
            assert "OpenTelemetry" in section, spec.name

    def test_histogram_buckets_documented(self, text: str) -> None:
        """Each histogram section lists exactly the catalog's bucket bounds."""
        for spec in CATALOG:
            if spec.kind != "histogram":
                continue
            line = re.search(r"^Buckets: (.*)$", _section(text, spec.name), re.M)
            assert line is not None, spec.name
            assert ", ".join(_bound(b) for b in spec.buckets) == line.group(1), spec.name

    def test_budget_figure_matches(self, text: str) -> None:
        """The page's series_budget(100) figure is what the catalog computes."""
        found = re.search(r"series_budget\(100\) = (\d+)", text)
        assert found is not None
        assert series_budget(100) == int(found.group(1))

    def test_closed_sets_documented(self, text: str) -> None:
        """Fault stages and the closed label values appear in the label table."""
        table = text.split("### Label values", 1)[1].split("\n## ", 1)[0]
        stage_row = next(line for line in table.splitlines() if line.startswith("| `stage`"))
        assert set(FAULT_STAGES) <= set(re.findall(r"`(\w+)`", stage_row))
        for name in ("agent_type", "operation", "token_type", "method"):
            label = next(
                lab for spec in CATALOG for lab in spec.labels if lab.name == name and lab.values
            )
            row = next(line for line in table.splitlines() if line.startswith(f"| `{name}`"))
            assert set(label.values) <= set(re.findall(r"`(\w+)`", row)), name
        assert set(metric("taskforce_missions_total").labels[1].values) <= set(
            re.findall(r"`(\w+)`", table)
        )

    def test_label_table_has_one_row_per_label(self, text: str) -> None:
        """No label is described twice in the label table (two rows could disagree)."""
        table = text.split("### Label values", 1)[1].split("\n## ", 1)[0]
        first_cells = re.findall(r"^\| (.+?) \|", table, re.M)[2:]  # after header and rule
        assert [] == sorted({c for c in first_cells if first_cells.count(c) > 1})

    def test_names_the_semconv_version(self, text: str) -> None:
        """The OpenTelemetry section says which semantic-conventions version was read."""
        assert re.search(r"semantic\s+conventions\s+\*\*v\d+\.\d+\.\d+\*\*", text)
