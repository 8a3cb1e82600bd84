"""Every dashboard panel and alert rule reads series that a real `taskforce serve` produces.

One `taskforce serve` (scripted LLM) is driven through what the panels show: both flows,
tool successes and failures, an LLM error, a stream, a rate-limited and an auth-refused
call, a session saved and one whose state cannot be read, a tool name past the label
cap. One Prometheus scrapes it every second; then each panel query (Grafana variables
filled in) must return data through the HTTP API, and each rule expression must evaluate.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration import promql
from tests.integration.test_dashboard import _queries, _substitute
from tests.integration.test_fleet import eventually, rule_files
from tests.support.processes import clean_env, free_ports, started, wait_until_up
from tests.support.prometheus import api_get, query, run_prometheus
from tests.support.workload import send

pytestmark = pytest.mark.integration

MODEL = "scripted-1"
#: Missions beyond WORKLOAD, each feeding panels WORKLOAD does not: (flow, mission).
DRILLS: tuple[tuple[str, str], ...] = (
    ("lean", "llm:fail rate_limit\nsay hi"),  # LLM retries by reason
    ("lean", "llm:fail auth\nsay hi"),  # LLM failures by error type, auth alert
    # A second tool name past metrics.max_label_values=1: label overflow.
    ("lean", 'tool:file_write {"path": "a.txt", "content": "x"}\nsay done'),
)


def _selectors(expr: str) -> set[str]:
    """The series selectors of ``expr``: ``name{matchers}`` as written, or a bare name."""
    found = {
        f"{match.group(1)}{{{match.group(2)}}}"
        for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^{}]*)\}", expr)
    }
    bare = re.sub(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{[^{}]*\}", " ", expr)
    named = promql.read(bare).series
    return found | {name for name in named if name}


def _rule_exprs() -> dict[str, str]:
    """Every alert and recording rule of the rule files: its name and expression."""
    rules = [
        rule
        for path in rule_files()
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    ]
    return {rule.get("alert") or rule["record"]: str(rule["expr"]) for rule in rules}


_RULE_EXPRS = _rule_exprs()
_RULE_SELECTORS = {name: _selectors(expr) for name, expr in _RULE_EXPRS.items()}


#: Panels whose truthful value here is 0: no restart happened, and an instrumentation
#: fault is a bug no request can provoke. Their series must still exist, as numbers.
ZERO_PANELS = frozenset({"Restarts", "Instrumentation faults"})
#: Panels read while a mission is held (a gauge is back at 0 once it ends).
HELD_PANELS = frozenset({"Missions in progress"})


@dataclass(frozen=True)
class Served:
    prometheus: str
    #: Panel title -> its result, read while a mission was held in flight.
    while_held: dict[str, list[dict[str, Any]]]


def _read_while_held(api: str, prometheus: str) -> dict[str, list[dict[str, Any]]]:
    """Hold one mission (a slow model), read the HELD_PANELS once it is scraped in flight."""
    exprs = {title: _substitute(t["expr"]) for title, _, t in _queries() if title in HELD_PANELS}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(
            httpx.post,
            f"{api}/api/v1/execute",
            json={"mission": "llm:delay 5000\nsay hi", "agent_type": "legacy"},
            timeout=30,
        )
        eventually(
            lambda: query(prometheus, "sum(taskforce_missions_in_progress) > 0"),
            bool,
            "the held mission was never scraped in flight",
        )
        results = {title: query(prometheus, expr) for title, expr in exprs.items()}
        assert 200 == held.result().status_code
    return results


def _sums_to(expected: float, result: list[dict[str, Any]]) -> bool:
    return bool(result) and expected == float(result[0]["value"][1])


def _drive(api: str, state_dir: Path) -> None:
    """Run every scenario the panels are about through the API."""
    send(api, 1)
    with httpx.Client(base_url=api, timeout=30) as client:
        for flow, mission in DRILLS:
            answer = client.post("/api/v1/execute", json={"mission": mission, "agent_type": flow})
            assert 200 == answer.status_code, answer.text
        # A streamed mission: the time-to-first-token panel.
        with client.stream(
            "POST", "/api/v1/execute/stream", json={"mission": "say hi", "agent_type": "lean"}
        ) as stream:
            assert 200 == stream.status_code
            assert "event: result" in "".join(stream.iter_text())
        # A saved session, then a session whose state file is unreadable: state panels.
        saved = client.post("/api/v1/execute", json={"mission": "hi", "session_id": "kept"})
        assert "completed" == saved.json()["status"], saved.text
        (state_dir / "broken.json").write_text("{not json", encoding="utf-8")
        assert 500 == client.get("/api/v1/sessions/broken").status_code


@pytest.fixture(name="served", scope="module")
def fixture_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("kit")
    port = free_ports(1)
    env = clean_env(
        root,
        TASKFORCE_LLM__PRICES=json.dumps({MODEL: {"input": 1.0, "output": 2.0}}),
        TASKFORCE_LLM__RETRY_AFTER_MAX_SECONDS="0",
        TASKFORCE_METRICS__MAX_LABEL_VALUES="1",
    )
    with started(["serve", "--port", str(port)], env, root) as child:
        api = f"http://127.0.0.1:{port}"
        # Prometheus starts while the service does; it is waited for under Prometheus.
        prom_root = root / "prometheus"
        prom_root.mkdir()
        for path in rule_files():
            shutil.copy(path, prom_root / path.name)
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [p.name for p in rule_files()],
            "scrape_configs": [
                {"job_name": "taskforce", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            ],
        }
        with run_prometheus(prom_root, config) as prometheus:
            wait_until_up(child, [f"{api}/health"])
            # A first scrape before any mission: counters then rise within the window.
            eventually(lambda: query(prometheus, "taskforce_build_info"), bool, "never scraped")
            # Twice, scraped in between: a series born at its first increment shows in
            # rate() from its second (Prometheus cannot know it started at 0).
            for rounds in (1, 2):
                _drive(api, root / "state")
                finished = rounds * (len(DRILLS) + 7)  # WORKLOAD (5), the stream, a session
                eventually(
                    lambda: query(prometheus, "sum(taskforce_missions_total)"),
                    functools.partial(_sums_to, finished),
                    "the missions were never scraped",
                )
            yield Served(prometheus, _read_while_held(api, prometheus))


def _panel_ids() -> list[str]:
    return [f"{title} [{ref}]" for title, ref, _ in _queries()]


def _fed(result: list[dict[str, Any]]) -> bool:
    """True when some sample of an instant vector is a number above 0 (not NaN from 0/0)."""
    return any(0 < float(sample["value"][1]) < math.inf for sample in result)


class TestPanelsAreFed:
    def test_exceptions_name_panels(self) -> None:
        """ZERO_PANELS and HELD_PANELS name panels of the dashboard (no stale exemption)."""
        assert (ZERO_PANELS | HELD_PANELS) <= {title for title, _, _ in _queries()}

    @pytest.mark.parametrize(("title", "ref", "target"), _queries(), ids=_panel_ids())
    def test_panel_returns_data(
        self, served: Served, title: str, ref: str, target: dict[str, Any]
    ) -> None:
        """The panel's query, variables filled in, returns at least one numeric sample."""
        expr = _substitute(target["expr"])
        if title in served.while_held:
            result = served.while_held[title]
        else:
            result = query(served.prometheus, expr)
        if title in ZERO_PANELS:
            assert any(math.isfinite(float(s["value"][1])) for s in result), (title, result)
        else:
            assert _fed(result), (title, ref, expr, result)


class TestRulesEvaluate:
    def test_every_rule_is_healthy_on_the_real_scrape(self, served: Served) -> None:
        """Prometheus evaluated every loaded alert and recording rule without an error."""

        def rules() -> list[dict[str, Any]]:
            groups = api_get(served.prometheus, "rules")["groups"]
            return [rule for group in groups for rule in group["rules"]]

        loaded = eventually(
            rules,
            lambda found: (
                bool(found) and all(r.get("lastEvaluation", "0001").startswith("20") for r in found)
            ),
            "rules never evaluated",
        )
        broken = [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
        assert [] == broken

    @pytest.mark.parametrize("name", sorted(_RULE_EXPRS))
    def test_rule_expression_evaluates(self, served: Served, name: str) -> None:
        """The HTTP API evaluates the rule's expression on the real scrape without an error."""
        query(served.prometheus, _RULE_EXPRS[name])  # raises unless status is "success"

    @pytest.mark.parametrize("name", sorted(_RULE_SELECTORS))
    def test_every_selector_of_a_rule_selects_series(self, served: Served, name: str) -> None:
        """Each series selector of the rule (matchers included) selects scraped series.

        A matcher on a value the code never produces (or a recorded series never written)
        would leave the rule without input, firing never.
        """
        empty = [sel for sel in _RULE_SELECTORS[name] if not query(served.prometheus, sel)]
        assert [] == empty
