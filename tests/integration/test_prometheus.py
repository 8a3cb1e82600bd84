"""A real Prometheus scrapes the real /metrics of a served taskforce app and reads it back.

Prometheus runs from the ``prometheus`` binary on 127.0.0.1 with a 1 s scrape interval
against the app under uvicorn; the checks go through its HTTP API with PromQL, so they
prove the exposition parses and the numbers add up as an operator would see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from taskforce import __version__
from taskforce.api.server import create_app
from taskforce.config import MetricsSettings, Settings
from tests.integration.test_dashboard import _queries, _substitute
from tests.support.live_server import serve
from tests.support.prometheus import run_prometheus
from tests.support.workload import WORKLOAD

pytestmark = pytest.mark.integration

_T = TypeVar("_T")

DEADLINE_SECONDS = 30.0
TOKEN = "scrape-token-Zq8v"


@dataclass(frozen=True)
class Scraped:
    """A served app, the Prometheus scraping it, and the missions run before the checks."""

    app_url: str
    prometheus_url: str
    metrics_path: str
    expected_missions: dict[tuple[str, str], int]


def _settings(root: Path, **metrics: Any) -> Settings:
    """Settings like the `settings` fixture's: state and workspace under the test's tmp dir."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [key for key in os.environ if key.startswith("TASKFORCE_")]:
            patch.delenv(key)
        return Settings(
            state_dir=root / "state",
            workspace_dir=root / "workspace",
            metrics=MetricsSettings(**metrics),
        )


def _scrape_job(name: str, port: int, metrics_path: str, **extra: Any) -> dict[str, Any]:
    return {
        "job_name": name,
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "metrics_path": metrics_path,
        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
        **extra,
    }


def _prometheus(root: Path, scrape_configs: list[dict[str, Any]]) -> Any:
    """Run Prometheus on 127.0.0.1 with these scrape jobs; enter it for its base URL."""
    interval = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    # No remote_write, alerting or rule files.
    return run_prometheus(root, {"global": interval, "scrape_configs": scrape_configs})


async def _query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    """Evaluate an instant PromQL query; return its vector (metric labels and value)."""
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=5.0) as client:
        response = await client.get("/api/v1/query", params={"query": expr})
    response.raise_for_status()
    body = response.json()
    assert "success" == body["status"], body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def _targets(prometheus_url: str) -> dict[str, dict[str, Any]]:
    """Return the active targets by job name."""
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=5.0) as client:
        response = await client.get("/api/v1/targets", params={"state": "active"})
    response.raise_for_status()
    return {t["labels"]["job"]: t for t in response.json()["data"]["activeTargets"]}


async def _eventually(
    probe: Callable[[], Awaitable[_T]], is_done: Callable[[_T], bool], what: str
) -> _T:
    """Poll ``probe`` until ``is_done`` holds on its result, for at most DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        value = await probe()
        if is_done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: last seen {value!r}")
        await asyncio.sleep(0.2)


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


async def _run_workload(app_url: str) -> dict[tuple[str, str], int]:
    async with httpx.AsyncClient(base_url=app_url, timeout=30.0) as client:
        responses = await asyncio.gather(
            *(
                client.post("/api/v1/execute", json={"mission": mission, "agent_type": agent})
                for agent, mission, _ in WORKLOAD
            )
        )
    seen = [(r.status_code, r.json().get("status")) for r in responses]
    assert [(200, status) for _, _, status in WORKLOAD] == seen
    return dict(Counter((agent, status) for agent, _, status in WORKLOAD))


@pytest.fixture(scope="module", name="scraped")
def fixture_scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """Serve the app, run WORKLOAD through the API, and wait until Prometheus has scraped it."""
    root = tmp_path_factory.mktemp("scraped")
    settings = _settings(root)
    path = settings.metrics.path
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(serve(create_app(settings)))
        prometheus_url = stack.enter_context(
            _prometheus(root / "prometheus", [_scrape_job("taskforce", server.port, path)])
        )

        async def up() -> list[dict[str, Any]]:
            return await _query(prometheus_url, 'up{job="taskforce"}')

        # the series made at 0 are scraped at 0 once before any mission, as in production
        asyncio.run(_eventually(up, bool, "Prometheus never scraped the idle app"))
        expected = asyncio.run(_run_workload(server.url))

        async def scraped_total() -> list[dict[str, Any]]:
            return await _query(prometheus_url, "sum(taskforce_missions_total)")

        asyncio.run(
            _eventually(
                scraped_total,
                lambda result: bool(result) and len(WORKLOAD) == _value(result[0]),
                "Prometheus never scraped every mission",
            )
        )
        yield Scraped(server.url, prometheus_url, path, expected)


class TestScrapedByPrometheus:
    async def test_target_is_up(self, scraped: Scraped) -> None:
        """up{job="taskforce"} is 1: Prometheus reaches /metrics and parses it."""
        result = await _query(scraped.prometheus_url, 'up{job="taskforce"}')
        assert [1.0] == [_value(sample) for sample in result]

    async def test_targets_api_reports_a_clean_scrape(self, scraped: Scraped) -> None:
        """The target's health is "up" with no scrape error, at the configured metrics path."""
        target = (await _targets(scraped.prometheus_url))["taskforce"]
        assert ("up", "") == (target["health"], target["lastError"])
        assert f"{scraped.app_url}{scraped.metrics_path}" == target["scrapeUrl"]

    async def test_samples_scraped(self, scraped: Scraped) -> None:
        """The last scrape took samples (a scrape Prometheus rejects takes none)."""
        result = await _query(scraped.prometheus_url, 'scrape_samples_scraped{job="taskforce"}')
        assert 1 == len(result)
        assert 0 < _value(result[0])

    async def test_missions_counted_by_flow_and_status(self, scraped: Scraped) -> None:
        """sum by (agent_type, status) of the mission counter is exactly what was run."""
        result = await _query(
            scraped.prometheus_url,
            "sum by (agent_type, status) (taskforce_missions_total) > 0",
        )
        counted = {(s["metric"]["agent_type"], s["metric"]["status"]): _value(s) for s in result}
        assert scraped.expected_missions == counted

    async def test_mission_series_exist_at_zero(self, scraped: Scraped) -> None:
        """Every flow x status series exists, zeros included, so rate() and alerts see them."""
        result = await _query(
            scraped.prometheus_url,
            'count(taskforce_missions_total{agent_type=~"lean|legacy"})',
        )
        assert [6.0] == [_value(sample) for sample in result]

    async def test_no_mission_left_in_progress(self, scraped: Scraped) -> None:
        """The in-progress gauges are back at 0 once every mission has answered."""
        result = await _query(scraped.prometheus_url, "sum(taskforce_missions_in_progress)")
        assert [0.0] == [_value(sample) for sample in result]

    async def test_build_info(self, scraped: Scraped) -> None:
        """taskforce_build_info is 1 with the package version."""
        result = await _query(scraped.prometheus_url, 'taskforce_build_info{job="taskforce"}')
        assert [(__version__, 1.0)] == [(s["metric"]["version"], _value(s)) for s in result]

    async def test_mission_duration_quantile_is_a_number(self, scraped: Scraped) -> None:
        """histogram_quantile over the mission duration buckets gives a finite p95 per flow."""
        result = await _query(
            scraped.prometheus_url,
            "histogram_quantile(0.95, sum by (agent_type, le) "
            '(taskforce_mission_duration_seconds_bucket{agent_type=~"lean|legacy"}))',
        )
        quantiles = {s["metric"]["agent_type"]: _value(s) for s in result}
        assert {"lean", "legacy"} == set(quantiles)
        assert all(math.isfinite(q) and 0 < q for q in quantiles.values()), quantiles

    async def test_tool_calls_match_the_missions(self, scraped: Scraped) -> None:
        """Three calculator calls were made: two succeeded, one (1/0) failed."""
        result = await _query(
            scraped.prometheus_url,
            "sum by (tool_name, status) (taskforce_tool_calls_total) > 0",
        )
        counted = {(s["metric"]["tool_name"], s["metric"]["status"]): _value(s) for s in result}
        assert {("calculator", "success"): 2.0, ("calculator", "error"): 1.0} == counted

    async def test_llm_error_and_tokens_are_seen(self, scraped: Scraped) -> None:
        """The llm:error mission shows as one lean LLM error; tokens and context were counted."""
        errors = await _query(
            scraped.prometheus_url,
            'sum by (agent_type) (taskforce_llm_requests_total{status="error"}) > 0',
        )
        assert {"lean": 1.0} == {s["metric"]["agent_type"]: _value(s) for s in errors}
        for expr in (
            "sum(taskforce_llm_tokens_total)",
            "sum(taskforce_context_pack_messages_count)",
            "sum(taskforce_context_pack_tokens_sum)",
        ):
            result = await _query(scraped.prometheus_url, expr)
            assert 0 < _value(result[0]), expr


#: The dashboard panels WORKLOAD feeds (no stream, retry, price, state error, overflow,
#: fault or restart). Left out too: tool failures by error type and the HTTP panels,
#: whose series are born with their first event (an open label value) and so show
#: only from a process's second such event.
_FED_PANELS = frozenset(
    {
        "Mission throughput",
        "Mission failure ratio",
        "Mission duration p50 / p95",
        "Steps and tool calls per mission p95",
        "LLM request rate",
        "LLM error ratio",
        "LLM latency p95",
        "Tokens per second",
        "LLM failures by error type",
        "Context pack p95 (messages)",
        "Context pack p95 (tokens)",
        "State size p95",
        "Tool call rate",
        "Tool failure ratio",
        "Tool duration p95",
        "Instances by version",
        "File descriptors used",
        "Resident memory",
        "CPU",
    }
)


class TestDashboardShowsTheWorkload:
    async def test_every_fed_panel_shows_a_number(self, scraped: Scraped) -> None:
        """Each query of a panel WORKLOAD feeds, as Grafana sends it (all flows), gives a
        finite non-zero value on a fresh app: a series born at its first observation
        would leave its panel empty for a worker's first call."""
        queries = [(title, target) for title, _, target in _queries() if title in _FED_PANELS]
        assert _FED_PANELS == {title for title, _ in queries}
        empty = []
        for title, target in queries:
            result = await _query(scraped.prometheus_url, _substitute(target["expr"]))
            if not any(math.isfinite(v) and v > 0 for v in map(_value, result)):
                empty.append((title, target.get("legendFormat")))
        assert [] == empty


@pytest.fixture(scope="module", name="token_targets")
def fixture_token_targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A token-protected /metrics scraped by two jobs, one sending the token; their targets."""
    root = tmp_path_factory.mktemp("token")
    # A non-default path too: Prometheus must follow metrics.path.
    settings = _settings(root, auth_token=TOKEN, path="/internal/metrics")
    path = settings.metrics.path
    with serve(create_app(settings)) as server:
        jobs = [
            _scrape_job(
                "with-token",
                server.port,
                path,
                authorization={"type": "Bearer", "credentials": TOKEN},
            ),
            _scrape_job("without-token", server.port, path),
        ]
        with _prometheus(root / "prometheus", jobs) as prometheus_url:

            async def targets() -> dict[str, dict[str, Any]]:
                return await _targets(prometheus_url)

            yield asyncio.run(
                _eventually(
                    targets,
                    lambda found: (
                        len(found) == 2 and all(t["health"] != "unknown" for t in found.values())
                    ),
                    "Prometheus never scraped both jobs",
                )
            )


class TestScrapeWithToken:
    def test_scrape_with_the_token_is_up(self, token_targets: dict[str, Any]) -> None:
        """Prometheus sending `authorization: {credentials: token}` scrapes cleanly."""
        target = token_targets["with-token"]
        assert ("up", "") == (target["health"], target["lastError"])

    def test_scrape_without_the_token_gets_401(self, token_targets: dict[str, Any]) -> None:
        """Without the token the target is down and the scrape error names HTTP 401."""
        target = token_targets["without-token"]
        assert "down" == target["health"]
        assert "401" in target["lastError"]


EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "prometheus.yml"


def _example_on(port: int) -> dict[str, Any]:
    """examples/prometheus.yml as shipped, but aimed at ``port`` and scraping every second."""
    config: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    assert ["127.0.0.1:8000"] == static["targets"]  # what `taskforce serve` binds by default
    static["targets"] = [f"127.0.0.1:{port}"]
    return config


class TestExampleConfig:
    async def test_examples_prometheus_yml_scrapes_a_served_app(self, tmp_path: Path) -> None:
        """The job of examples/prometheus.yml, its path and scheme as shipped, gets up == 1."""
        settings = _settings(tmp_path)
        with (
            serve(create_app(settings)) as server,
            run_prometheus(tmp_path / "prometheus", _example_on(server.port)) as prometheus_url,
        ):

            async def up() -> list[dict[str, Any]]:
                return await _query(prometheus_url, 'up{job="taskforce"} == 1')

            await _eventually(up, bool, "examples/prometheus.yml never scraped the app")
            builds = await _query(prometheus_url, 'taskforce_build_info{job="taskforce"}')
        assert [__version__] == [sample["metric"]["version"] for sample in builds]
