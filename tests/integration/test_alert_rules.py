"""deploy/prometheus stays deployable: promtool accepts config and rules, rule tests pass."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration import promql
from tests.support import yaml_files
from tests.support.binaries import run_promtool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = DEPLOY / "alerts.yml"
ALERT_TESTS = DEPLOY / "alerts.test.yml"
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"
SEVERITIES = {"critical", "warning", "info"}
#: The documented placeholder base of every alert's runbook_url (see docs/operator-guide.md).
RUNBOOK_BASE = "https://runbooks.example.com/taskforce/operator-guide.md"


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml_files.load(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _recorded_names() -> frozenset[str]:
    groups = yaml_files.load(ALERTS)["groups"]
    return frozenset(
        rule["record"] for group in groups for rule in group["rules"] if "record" in rule
    )


def _spoken(duration: str) -> str:
    """A Prometheus duration as the guide writes it: 5m is "5 min", 30s is "30 s"."""
    amount, unit = duration[:-1], duration[-1]
    return f"{amount} {dict(s='s', m='min', h='h')[unit]}"


def _alert_cases() -> list[dict[str, Any]]:
    tests = yaml_files.load(ALERT_TESTS)["tests"]
    return [case for test in tests for case in test.get("alert_rule_test", [])]


@pytest.mark.integration
class TestPromtool:
    def test_rules_pass_promtool_check(self) -> None:
        """`promtool check rules` accepts alerts.yml."""
        result = run_promtool("check", "rules", str(ALERTS))
        assert 0 == result.returncode, result.stdout + result.stderr

    def test_rule_unit_tests_pass(self) -> None:
        """`promtool test rules` runs every case of alerts.test.yml successfully."""
        result = run_promtool("test", "rules", str(ALERT_TESTS))
        assert 0 == result.returncode, result.stdout + result.stderr

    def test_example_config_is_valid_and_loads_the_rules(self) -> None:
        """`promtool check config` accepts the example prometheus.yml, rule file included."""
        result = run_promtool("check", "config", str(DEPLOY / "prometheus.yml"))
        assert 0 == result.returncode, result.stdout + result.stderr
        assert "SUCCESS: 1 rule files found" in result.stdout


class TestAlertCoverage:
    def test_every_alert_has_a_firing_and_a_silent_case(self) -> None:
        """Each alert is tested once where it must fire and once where it must not."""
        names = {rule["alert"] for rule in _alert_rules()}
        firing = {case["alertname"] for case in _alert_cases() if case.get("exp_alerts")}
        silent = {case["alertname"] for case in _alert_cases() if not case.get("exp_alerts")}
        assert set() == names - firing, "alerts without a firing test case"
        assert set() == names - silent, "alerts without a non-firing test case"
        assert set() == (firing | silent) - names, "test cases for alerts that do not exist"

    def test_every_alert_is_operable(self) -> None:
        """Each alert waits (`for:`), has a known severity and templated summary/description."""
        rules = _alert_rules()
        assert 9 <= len(rules)
        for rule in rules:
            name = rule["alert"]
            assert "for" in rule, name
            assert rule["labels"]["severity"] in SEVERITIES, name
            annotations = rule["annotations"]
            assert {"summary", "description"} <= set(annotations), name
            assert "{{" in annotations["summary"] + annotations["description"], name

    def test_alerts_read_catalog_metrics_and_labels(self) -> None:
        """Each alert expression names catalog metrics (or `up`) with labels they carry."""
        allowed = frozenset({"up"}) | _recorded_names()
        found = [
            message
            for rule in _alert_rules()
            for message in promql.problems(rule["expr"], allowed_series=allowed)
        ]
        assert [] == found

    def test_matchers_use_values_the_code_produces(self) -> None:
        """Rule matchers and unit-test input series use closed label values of the catalog.

        An alert on `error_type="authentication"` would never fire, and a promtool case fed
        such a series would pass while testing nothing a scrape can show.
        """
        groups = yaml_files.load(ALERTS)["groups"]
        exprs = [str(rule["expr"]) for group in groups for rule in group["rules"]]
        tests = yaml_files.load(ALERT_TESTS)["tests"]
        exprs += [series["series"] for test in tests for series in test["input_series"]]
        found = [message for expr in exprs for message in promql.closed_value_problems(expr)]
        assert [] == found

    def test_recording_rules_read_catalog_metrics(self) -> None:
        """Each recording rule reads catalog metrics (or other recorded series) by their labels."""
        groups = yaml_files.load(ALERTS)["groups"]
        records = [rule for group in groups for rule in group["rules"] if "record" in rule]
        assert records
        found = [
            message
            for rule in records
            for message in promql.problems(str(rule["expr"]), allowed_series=_recorded_names())
        ]
        assert [] == found

    def test_every_alert_links_its_runbook_entry(self) -> None:
        """runbook_url is the placeholder base plus the anchor of the alert's row in the guide."""
        guide = GUIDE.read_text(encoding="utf-8")
        for rule in _alert_rules():
            anchor = rule["alert"].lower()
            assert f"{RUNBOOK_BASE}#{anchor}" == rule["annotations"].get("runbook_url")
            assert f'<a id="{anchor}"></a>' in guide, rule["alert"]

    def test_ratio_alerts_keep_instance(self) -> None:
        """An alert that divides keeps `instance`, so one bad replica reads as that replica."""
        ratios = [rule for rule in _alert_rules() if "/" in rule["expr"]]
        assert 4 <= len(ratios)
        for rule in ratios:
            grouping = promql.read(rule["expr"]).grouping
            # No aggregation keeps every label of the series, instance included.
            assert not grouping or "instance" in grouping, rule["alert"]

    def test_alerts_name_the_instance(self) -> None:
        """An alert about one process keeps `instance`: its runbook reads that process's logs.

        Only the fleet-wide alerts drop it: a p95 over all instances, the spend against
        one budget, and no metrics at all.
        """
        fleet_wide = {"TaskforceLLMLatencyHigh", "TaskforceLLMSpendHigh", "TaskforceMetricsAbsent"}
        dropped = []
        for rule in _alert_rules():
            # No aggregation keeps every label of the series, instance included; a ratio
            # alert's service-wide part (scope="service") alone sums the instances away.
            keeps = [
                "instance" in {label.strip() for label in found.split(",")}
                for found in re.findall(r"\bby \(([^()]*)\)", rule["expr"])
            ]
            kept = any(keeps) if "scope" in rule["labels"] else all(keeps)
            if rule["alert"] not in fleet_wide and not kept:
                dropped.append(rule["alert"])
        assert [] == dropped

    def test_ratio_alerts_also_fire_service_wide(self) -> None:
        """A ratio alert also sums a job's instances, so quiet workers that all fail still page.

        Its service-wide part drops `instance` but keeps `job`, stands aside where an
        instance part fires (`unless on (job, ...)`), and a promtool case fires it.
        """
        # A ratio with a traffic minimum (`>=`); a per-process gauge ratio has none.
        ratios = [rule for rule in _alert_rules() if "/" in rule["expr"] and ">=" in rule["expr"]]
        assert 4 <= len(ratios)
        service_wide = {
            case["alertname"]
            for case in _alert_cases()
            for alert in case.get("exp_alerts") or []
            if alert["exp_labels"].get("scope") == "service"
        }
        for rule in ratios:
            name, expr = rule["alert"], rule["expr"]
            groupings = [
                {label.strip() for label in found.split(",")}
                for found in re.findall(r"\bby \(([^()]*)\)", expr)
            ]
            assert any({"job", "instance"} <= grouping for grouping in groupings), name
            assert any("job" in g and "instance" not in g for g in groupings), name
            assert "unless on (job, " in expr, name
            assert "scope" in rule["labels"], name
            assert name in service_wide, f"{name}: no promtool case fires it service-wide"

    def test_annotations_use_labels_the_alert_keeps(self) -> None:
        """A `$labels.x` in an annotation is a label the expression keeps, else it is empty."""
        wrong = []
        for rule in _alert_rules():
            expression = promql.read(rule["expr"])
            # Without aggregation every label of the series survives.
            kept = expression.grouping or {
                label for name in expression.series for label in promql.allowed_labels(name)
            }
            text = " ".join(rule["annotations"].values())
            for label in set(re.findall(r"\$labels\.(\w+)", text)) - kept:
                wrong.append((rule["alert"], label))
        assert [] == wrong

    def test_every_alert_has_a_runbook_line(self) -> None:
        """docs/operator-guide.md has one row per alert in its Alerts table, and no other."""
        text = GUIDE.read_text(encoding="utf-8").split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `(\w+)`[^|]*\|", text, re.M))
        assert {rule["alert"] for rule in _alert_rules()} == documented

    def test_guide_states_each_alerts_numbers(self) -> None:
        """The guide's "fires when" says each alert's thresholds, minimum, windows and wait.

        Ratio thresholds read as percentages (`> 0.2`: "20%"), other thresholds as seconds
        (`> 20`: "20 s"), minima as "at least N", range windows and `for:` in minutes or
        seconds ("10 min", "for 5 min", "for 30 s").
        """
        text = GUIDE.read_text(encoding="utf-8").split("\n## Alerts\n", 1)[1]
        rows = {
            name: row
            for name, row in re.findall(r"^\| `(\w+)`(.*)$", text.split("\n## ", 1)[0], re.M)
        }
        missing = []
        for rule in _alert_rules():
            expr = rule["expr"]
            said = [f"for {_spoken(rule['for'])}"]
            said += [_spoken(window) for window in re.findall(r"\[(\d+[smh])\]", expr)]
            # a traffic minimum follows the sum of an increase (not a count_over_time)
            minima = re.findall(r"\[\d+m\]\)\) >= (\d+)\b", expr)
            said += [f"at least {minimum}" for minimum in minima]
            for threshold in re.findall(r"(?<!=)> (\d+(?:\.\d+)?)\b", expr):
                value = float(threshold)
                if 0 < value < 1:
                    said.append(f"{round(value * 100)}%")
                elif value >= 1:
                    said.append(f"{threshold} s")
            row = rows[rule["alert"]].split("|")[2]  # severity | fires when | what to do
            missing += [(rule["alert"], words) for words in said if words not in row]
        assert [] == missing

    def test_alert_names_are_unique(self) -> None:
        """No two rules share an alert name (a runbook line per name in the operator guide)."""
        names = [rule["alert"] for rule in _alert_rules()]
        assert sorted(set(names)) == sorted(names)
