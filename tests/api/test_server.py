"""The HTTP API through a real uvicorn server: both flows, failures, streaming, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from taskforce.api._listener import WorkerSlot
from taskforce.api.server import create_app
from taskforce.config import Settings, load_settings
from taskforce.errors import ConfigurationError, StateStoreUnavailableError
from taskforce.infrastructure.tools import session_folder_name
from tests.api.conftest import CALC_WRITE_MISSION, parse_sse
from tests.support.live_server import LiveServer, serve
from tests.support.processes import START_SECONDS, clean_env, free_ports, started

_FACTORY = "taskforce.api.server:create_app"

pytestmark = pytest.mark.integration


class TestHealthAndTools:
    async def test_health(self, client: httpx.AsyncClient) -> None:
        """GET /health is 200 with status ok."""
        response = await client.get("/health")
        assert 200 == response.status_code
        assert "ok" == response.json()["status"]

    async def test_health_counts_missions_in_flight(self, client: httpx.AsyncClient) -> None:
        """/health shows the missions holding a slot now, against api.max_missions_in_flight."""
        assert {"in_flight": 0, "limit": 64} == (await client.get("/health")).json()["missions"]
        body = {"mission": 'tool:sleep {"seconds": 30}\ndone'}
        request = asyncio.create_task(client.post("/api/v1/execute", json=body))
        seen = []
        for _ in range(500):
            seen.append((await client.get("/health")).json()["missions"]["in_flight"])
            if seen[-1] == 1:
                break
            await asyncio.sleep(0.01)
        request.cancel()  # the client goes away: the mission ends and frees its slot
        with contextlib.suppress(asyncio.CancelledError):
            await request
        for _ in range(500):
            seen.append((await client.get("/health")).json()["missions"]["in_flight"])
            if seen[-1] == 0:
                break
            await asyncio.sleep(0.01)
        assert 1 in seen
        assert 0 == seen[-1]

    async def test_health_answers_head(self, client: httpx.AsyncClient) -> None:
        """HEAD /health is 200 without a body: load balancers probe with HEAD."""
        response = await client.head("/health")
        assert (200, b"") == (response.status_code, response.content)

    async def test_tools_listed_with_schemas(self, client: httpx.AsyncClient) -> None:
        """GET /api/v1/tools lists the built-in tools with their JSON schemas."""
        tools = {t["name"]: t for t in (await client.get("/api/v1/tools")).json()["tools"]}
        assert {"calculator", "file_read", "file_write", "list_dir", "sleep"} <= set(tools)
        assert "object" == tools["calculator"]["parameters"]["type"]


class TestExecute:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_calculator_then_file_write(
        self, client: httpx.AsyncClient, settings: Settings, agent_type: str
    ) -> None:
        """Both flows run calculator, file_write, then answer; the file is in the session folder."""
        response = await client.post(
            "/api/v1/execute", json={"mission": CALC_WRITE_MISSION, "agent_type": agent_type}
        )
        assert 200 == response.status_code
        body = response.json()
        assert ("completed", None) == (body["status"], body["error"])
        assert agent_type == body["agent_type"]
        assert 2 == body["tool_calls"]
        called = [name for step in body["steps"] for name in step["tool_calls"]]
        assert ["calculator", "file_write"] == called
        session_folder = settings.workspace_dir / session_folder_name(body["session_id"])
        assert "42" == (session_folder / "answer.txt").read_text(encoding="utf-8")
        assert body["final_message"]
        state = json.loads(
            (settings.state_dir / f"{body['session_id']}.json").read_text(encoding="utf-8")
        )
        assert [body["mission_id"]] == [m["mission_id"] for m in state["missions"]]

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    @pytest.mark.parametrize(
        ("mission", "needle"),
        [
            ('tool:calculator {"expression": "1/0"}', "calculator"),
            ("llm:error", "llm:error"),
        ],
    )
    async def test_failures_end_failed_and_service_keeps_serving(
        self, client: httpx.AsyncClient, agent_type: str, mission: str, needle: str
    ) -> None:
        """A failing tool or an LLM error ends the mission failed with an error; serving goes on."""
        response = await client.post(
            "/api/v1/execute", json={"mission": mission, "agent_type": agent_type}
        )
        assert 200 == response.status_code
        body = response.json()
        assert "failed" == body["status"]
        assert needle in body["error"]
        assert 200 == (await client.get("/health")).status_code
        ok = await client.post(
            "/api/v1/execute", json={"mission": "hello", "agent_type": agent_type}
        )
        assert "completed" == ok.json()["status"]

    async def test_session_continues(self, client: httpx.AsyncClient, settings: Settings) -> None:
        """Missions with the same session_id accumulate in that session's state."""
        for _ in range(2):
            body = (
                await client.post("/api/v1/execute", json={"mission": "hi", "session_id": "s-42"})
            ).json()
            assert "s-42" == body["session_id"]
        state = json.loads((settings.state_dir / "s-42.json").read_text(encoding="utf-8"))
        assert 2 == len(state["missions"])


class TestStreaming:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_events_then_result(self, client: httpx.AsyncClient, agent_type: str) -> None:
        """The SSE stream carries progress events of both flows and ends with the result."""
        response = await client.post(
            "/api/v1/execute/stream", json={"mission": CALC_WRITE_MISSION, "agent_type": agent_type}
        )
        assert 200 == response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.text)
        kinds = [kind for kind, _ in events]
        assert "mission_started" == kinds[0]
        assert "result" == kinds[-1]
        assert {"step_started", "tool_call", "tool_result", "final_answer"} <= set(kinds)
        assert "completed" == events[-1][1]["result"]["status"]

    async def test_lean_streams_tokens(self, client: httpx.AsyncClient) -> None:
        """On the lean flow the model's text arrives as token events before the result."""
        response = await client.post(
            "/api/v1/execute/stream", json={"mission": CALC_WRITE_MISSION, "agent_type": "lean"}
        )

        events = parse_sse(response.text)
        tokens = [data for kind, data in events if kind == "token"]
        assert len(tokens) > 1
        assert events[-1][1]["result"]["final_message"] == "".join(t["content"] for t in tokens)
        assert {3} == {t["step"] for t in tokens}

    async def test_plain_execute_and_legacy_do_not_stream(self, client: httpx.AsyncClient) -> None:
        """The legacy flow's SSE stream has no token events (it keeps complete/generate)."""
        response = await client.post(
            "/api/v1/execute/stream", json={"mission": "hello", "agent_type": "legacy"}
        )

        assert "token" not in [kind for kind, _ in parse_sse(response.text)]


class TestBadInput:
    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"mission": ""},
            {"mission": 42},
            {"mission": "x", "agent_type": "turbo"},
            {"mission": "x", "session_id": "../../etc/passwd"},
            {"mission": "x", "surprise": True},
        ],
    )
    async def test_malformed_body_is_422_with_reason(
        self, client: httpx.AsyncClient, body: dict[str, object]
    ) -> None:
        """A malformed request body is a 422 whose detail says what is wrong."""
        for route in ("/api/v1/execute", "/api/v1/execute/stream"):
            response = await client.post(route, json=body)
            assert 422 == response.status_code
            detail = response.json()["detail"]
            assert detail and all("msg" in item and "loc" in item for item in detail)

    async def test_not_json_is_422(self, client: httpx.AsyncClient) -> None:
        """A body that is not JSON at all is a 422, not a 500."""
        response = await client.post(
            "/api/v1/execute", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert 422 == response.status_code

    def test_invalid_setting_stops_startup(self, settings: Settings) -> None:
        """A provider that cannot be built stops create_app with the setting's name."""
        bad = settings.model_copy(
            update={"llm": settings.llm.model_copy(update={"provider": "openai"})}
        )
        with pytest.raises(ConfigurationError, match=r"llm\.base_url"):
            create_app(bad)


class TestLoad:
    async def test_fifty_concurrent_missions(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """50 concurrent missions (20 ms scripted latency) complete with separate states.

        The process runs in an empty working directory: nothing may be written
        anywhere but the state and workspace directories.
        """
        (tmp_path / "cwd").mkdir()
        monkeypatch.chdir(tmp_path / "cwd")
        settings = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "ws",
            llm={"scripted_latency_ms": 20},
        )
        with serve(create_app(settings)) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=60.0) as client:

                async def one(i: int) -> dict[str, object]:
                    mission = f'tool:calculator {{"expression": "{i}*2"}}\nanswer {i}'
                    agent = "lean" if i % 2 else "legacy"
                    response = await client.post(
                        "/api/v1/execute",
                        json={"mission": mission, "agent_type": agent, "session_id": f"s{i}"},
                    )
                    return dict(response.json())

                results = await asyncio.gather(*(one(i) for i in range(50)))
        assert ["completed"] * 50 == [r["status"] for r in results]
        for i in range(50):
            state = json.loads((tmp_path / "state" / f"s{i}.json").read_text(encoding="utf-8"))
            (record,) = state["missions"]
            assert results[i]["mission_id"] == record["mission_id"]
            assert str(i * 2) in json.dumps(record)
        written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
        assert written <= {"state", "ws"}
        assert [] == list((tmp_path / "cwd").iterdir())


class TestScrapeRoute:
    async def test_scrapes_of_the_app_count_under_the_metrics_path(
        self, client: httpx.AsyncClient, server: LiveServer
    ) -> None:
        """On create_app's own port a scrape is route="/metrics", never "/" (docs/metrics.md)."""
        for path in ("/metrics", "/metrics/"):
            assert 200 == (await client.get(path)).status_code
        text = (await client.get("/metrics")).text
        routes = {
            line.split('route="', 1)[1].split('"', 1)[0]
            for line in text.splitlines()
            if line.startswith("taskforce_http_requests_total{") and 'method="GET"' in line
        }
        assert "/metrics" in routes
        assert "/" not in routes


class TestLoggingUnderAForeignServer:
    def test_create_app_without_arguments_sets_logging_up(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """create_app() as uvicorn --factory calls it: JSON lines, the level, redaction."""
        monkeypatch.setenv("TASKFORCE_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("TASKFORCE_WORKSPACE_DIR", str(tmp_path / "ws"))
        monkeypatch.setenv("TASKFORCE_LOGGING__FORMAT", "json")
        monkeypatch.setenv("TASKFORCE_LOGGING__LEVEL", "warning")
        monkeypatch.setenv("TASKFORCE_API__AUTH_TOKEN", "s3cret-token")
        create_app()
        log = structlog.get_logger("t")
        log.info("server.started", category="lifecycle")  # below the level: dropped
        log.warning("worker.exited", category="lifecycle", reason="s3cret-token")
        (line,) = capsys.readouterr().err.splitlines()
        event = json.loads(line)
        assert ("worker.exited", "warning") == (event["event"], event["level"])
        assert "s3cret-token" not in line

    def test_logging_set_up_before_is_left_alone(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """When the CLI (or the embedding program) configured structlog, the app keeps it."""
        monkeypatch.setenv("TASKFORCE_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("TASKFORCE_WORKSPACE_DIR", str(tmp_path / "ws"))
        processors = [structlog.processors.JSONRenderer()]
        structlog.configure(processors=processors)
        create_app()
        assert processors == structlog.get_config()["processors"]

    def test_server_started_has_no_url_of_its_own(self, settings: Settings) -> None:
        """Served by another server, server.started leaves the API's url and worker to it."""
        with capture_logs() as logs, serve(create_app(settings)):
            pass
        (started,) = [line for line in logs if line["event"] == "server.started"]
        assert (None, None, None) == (started["url"], started["worker"], started["metrics_port"])


async def _start_worker(
    settings: Settings, *, restarted: bool
) -> tuple[list[Any], StateStoreUnavailableError | None]:
    """Run the app's start and stop as worker 0 (a replacement when ``restarted``).

    Returns:
        The log lines, and the refusal that stopped the start (``None`` if it started).
    """
    app = create_app(settings, worker=WorkerSlot(0, None, restarted=restarted))
    with structlog.testing.capture_logs() as logs:
        try:
            async with app.router.lifespan_context(app):
                pass
        except StateStoreUnavailableError as exc:
            return logs, exc
    return logs, None


class TestUnreachableStateDatabase:
    @pytest.mark.parametrize("restarted", [False, True], ids=["first-start", "replacement"])
    async def test_only_a_replacement_worker_starts_without_it(
        self, tmp_path: Path, restarted: bool
    ) -> None:
        """A first start refuses; a worker replacing one that served starts and says why.

        Otherwise one database outage plus one worker crash would stop the whole service.
        """
        pytest.importorskip("asyncpg")
        dsn = f"postgresql://u:pw-xyzzy@127.0.0.1:{free_ports(1)}/x"  # nothing listens there
        settings = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "workspace",
            state={"backend": "postgres", "dsn": dsn, "timeout_seconds": 2},
        )
        logs, refusal = await _start_worker(settings, restarted=restarted)
        unavailable = [log for log in logs if log["event"] == "state.unavailable"]
        assert restarted == bool(unavailable)
        assert restarted == (refusal is None)
        assert all("xyzzy" not in str(log) for log in logs)

    @pytest.mark.parametrize("restarted", [False, True], ids=["first-start", "replacement"])
    async def test_lock_files_it_cannot_use_stop_only_a_first_start(
        self, tmp_path: Path, restarted: bool
    ) -> None:
        """A file store whose ``.locks`` is no directory fails the writes of its sessions: a
        first start refuses, naming TASKFORCE_STATE_DIR; a worker replacing one that served
        starts and says why, as it does without its database (a worker crash after such a
        file appeared must not stop the service)."""
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / ".locks").write_text("")
        settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "workspace")
        logs, refusal = await _start_worker(settings, restarted=restarted)
        unavailable = [log for log in logs if log["event"] == "state.unavailable"]
        assert restarted == bool(unavailable)
        if refusal is not None:
            assert [
                "taskforce: state_dir (TASKFORCE_STATE_DIR): cannot use the state directory: "
                "NotADirectoryError: state_dir/.locks is not a directory"
            ] == refusal.__notes__
        assert restarted == (refusal is None)

    async def test_a_refusal_names_the_config_file_that_gave_the_setting(
        self, tmp_path: Path
    ) -> None:
        """Settings read from a config file (as a worker of taskforce serve --config gets
        them, forked without TASKFORCE_CONFIG): the line a refused start ends with names
        that file for the state_dir it gave, not TASKFORCE_STATE_DIR, which nobody set."""
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / ".locks").write_text("")
        config = tmp_path / "app.toml"
        config.write_text(
            f"state_dir = {json.dumps(str(tmp_path / 'state'))}\n"
            f"workspace_dir = {json.dumps(str(tmp_path / 'workspace'))}\n",
            encoding="utf-8",
        )
        _, refusal = await _start_worker(load_settings(config), restarted=False)
        assert refusal is not None
        assert [
            f"taskforce: state_dir (in {config}): cannot use the state directory: "
            "NotADirectoryError: state_dir/.locks is not a directory"
        ] == refusal.__notes__

    @pytest.mark.integration
    @pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
    def test_under_another_server_the_refusal_names_state_dsn(
        self, tmp_path: Path, server: str
    ) -> None:
        """Under a server taskforce does not control, the traceback it logs for the failed
        start ends with the line taskforce serve prints: state.dsn named, never the DSN."""
        pytest.importorskip("asyncpg")
        dsn = f"postgresql://u:pw-xyzzy@127.0.0.1:{free_ports(1)}/x"  # nothing listens there
        env = clean_env(tmp_path, TASKFORCE_STATE__BACKEND="postgres", TASKFORCE_STATE__DSN=dsn)
        bind = f"127.0.0.1:{free_ports(1)}"
        args = {
            "uvicorn": ["--factory", "--port", bind.split(":")[1], _FACTORY],
            "gunicorn": ["-k", "uvicorn.workers.UvicornWorker", "-b", bind, f"{_FACTORY}()"],
        }[server]
        with started(args, env, tmp_path, module=server) as child:
            assert 0 != child.process.wait(timeout=START_SECONDS)
        line = "taskforce: state.dsn (TASKFORCE_STATE__DSN): cannot reach the state database: "
        assert line in child.stderr()
        assert "xyzzy" not in child.stderr()


class TestTargetsFileOutsideTaskforceServe:
    def _settings(self, tmp_path: Path, targets: Path) -> Settings:
        return Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "workspace",
            metrics={"port": free_ports(1), "targets_file": targets},
        )

    async def test_a_missing_folder_is_made_and_the_listener_listed(self, tmp_path: Path) -> None:
        """Built by another server, the app makes the file's folder, as taskforce serve does."""
        targets = tmp_path / "no" / "such" / "t.json"
        settings = self._settings(tmp_path, targets)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            listed = json.loads(targets.read_text(encoding="utf-8"))
        assert [[f"127.0.0.1:{settings.metrics.port}"]] == [g["targets"] for g in listed]

    async def test_a_metrics_path_of_its_own_is_listed(self, tmp_path: Path) -> None:
        """The entry tells Prometheus where the listener serves: `__metrics_path__`."""
        targets = tmp_path / "t.json"
        settings = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "workspace",
            metrics={"port": free_ports(1), "targets_file": targets, "path": "/internal/m"},
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            (listed,) = json.loads(targets.read_text(encoding="utf-8"))
        assert "/internal/m" == listed["labels"]["__metrics_path__"]

    def test_another_file_is_refused_and_left_as_it_is(self, tmp_path: Path) -> None:
        """A targets_file naming a file that is no targets file stops the app, unwritten.

        Built by another server (uvicorn, gunicorn) as under taskforce serve: a mistyped
        path must not have its file replaced by a list of endpoints.
        """
        other = tmp_path / "prometheus.yml"
        other.write_text("global: {}\n", encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            create_app(self._settings(tmp_path, other))
        assert "metrics.targets_file" == info.value.setting
        assert "TASKFORCE_METRICS__TARGETS_FILE" in str(info.value)
        assert "global: {}\n" == other.read_text(encoding="utf-8")

    async def test_a_targets_file_that_cannot_be_written_is_logged_not_fatal(
        self, tmp_path: Path
    ) -> None:
        """A file that passed the start-up check but cannot be written is named in a log.

        The app still starts and serves its metrics; only discovery through the file is
        missing (here its lock cannot be taken: a directory stands where it would be).
        """
        targets = tmp_path / "t.json"
        (tmp_path / "t.json.lock").mkdir()
        app = create_app(self._settings(tmp_path, targets))
        with structlog.testing.capture_logs() as logs:
            async with app.router.lifespan_context(app):
                started = [log["event"] for log in logs]
        assert "server.started" in started
        (failed,) = [log for log in logs if log["event"] == "metrics.targets.failed"]
        assert ("error", "metrics.targets_file") == (failed["log_level"], failed["setting"])
