"""``agent.mission_timeout_seconds`` through a served app on 127.0.0.1 and ``taskforce run``.

A mission past its deadline ends ``failed``/``mission_timeout`` on both routes and in both
flows: the API's result (a stream's last ``error`` event and its ``result``), the JSON log
lines, the session record and the ``/metrics`` scrape say the same, and the session's next
mission completes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskforce.api.server import create_app
from taskforce.config import AgentSettings, Settings
from tests.api.conftest import parse_sse
from tests.api.test_cli import _env, _taskforce
from tests.api.test_metrics_e2e import Samples, scrape, total
from tests.support.json_lines import JSONLines
from tests.support.live_server import LiveServer, serve

pytestmark = pytest.mark.integration

_DEADLINE = 0.3
_ERROR = "mission timed out after 0.3 s (agent.mission_timeout_seconds)"
_ROUTES = {"execute": "/api/v1/execute", "stream": "/api/v1/execute/stream"}
#: A first tool call that finishes, then one far past the deadline (the tool limit is 30 s).
_MISSION = 'tool:calculator {"expression": "1 + 1"}\ntool:sleep {"seconds": 60}\nDone.'
_GUARD_SECONDS = 30.0


@pytest.fixture(name="deadlined")
def fixture_deadlined(settings: Settings) -> Iterator[LiveServer]:
    """The service with a mission deadline, the scripted provider and the built-in tools."""
    agent = AgentSettings(mission_timeout_seconds=_DEADLINE)
    with serve(create_app(settings.model_copy(update={"agent": agent}))) as live:
        yield live


async def _counted(client: httpx.AsyncClient, before: Samples, flow: str) -> Samples:
    """The scrape once the mission's end is counted (a stream's after its last event)."""
    async with asyncio.timeout(_GUARD_SECONDS):
        while True:
            now = await scrape(client)
            ended = total(now, "taskforce_missions_total", agent_type=flow)
            if ended > total(before, "taskforce_missions_total", agent_type=flow):
                return now
            await asyncio.sleep(0.01)


def _grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


async def _run(
    client: httpx.AsyncClient, route: str, body: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]] | None]:
    """POST the mission on ``route``: its result, and a stream's events."""
    response = await client.post(_ROUTES[route], json=body)
    assert 200 == response.status_code
    if route == "execute":
        return response.json(), None
    events = parse_sse(response.text)
    assert "result" == events[-1][0]
    return events[-1][1]["result"], events


@pytest.mark.parametrize("flow", ["lean", "legacy"])
@pytest.mark.parametrize("route", ["execute", "stream"])
async def test_result_log_record_and_metrics_agree(
    deadlined: LiveServer, lines: JSONLines, route: str, flow: str
) -> None:
    """Failed as mission_timeout everywhere, never cancelled; the call cut short has no
    outcome of its own; the session's next mission completes."""
    session = uuid.uuid4().hex
    body = {"mission": _MISSION, "agent_type": flow, "session_id": session}
    async with httpx.AsyncClient(base_url=deadlined.url, timeout=_GUARD_SECONDS) as client:
        before = await scrape(client)
        result, events = await _run(client, route, body)
        after = await _counted(client, before, flow)
        record = (await client.get(f"/api/v1/sessions/{session}")).json()["missions"][-1]
        following = await client.post(
            "/api/v1/execute", json={"mission": "done", "agent_type": flow, "session_id": session}
        )

    said = ("failed", "mission_timeout", _ERROR)
    assert said == (result["status"], result["error_type"], result["error"])
    assert said == (record["status"], record["error_type"], record["error"])
    assert ["calculator"] == [name for step in record["steps"] for name in step["tool_calls"]]
    if events is not None:
        errors = [(data["error"], data["error_type"]) for kind, data in events if kind == "error"]
        assert [(_ERROR, "mission_timeout")] == errors
        assert "error" == events[-2][0]
    mine = [line for line in lines.read() if line.get("session_id") == session]
    ends = [line for line in mine if line["event"].startswith("mission.") and "status" not in line]
    assert [("mission.started", None), ("mission.failed", "mission_timeout")] == [
        (line["event"], line.get("error_type")) for line in ends[:2]
    ]
    [reached] = [line for line in mine if line["event"] == "agent.deadline.reached"]
    assert (_DEADLINE, "agent", "warning") == (
        reached["mission_timeout_seconds"],
        reached["category"],
        reached["level"],
    )
    finished = [line for line in mine if line["event"] == "agent.finished"]
    assert ("failed", "mission_timeout") == (finished[0]["status"], finished[0]["error_type"])
    assert not [line for line in mine if line["event"] == "mission.cancelled"]
    assert not [line for line in mine if line["event"] == "tool.call.failed"]
    assert 1 == _grown(before, after, "taskforce_missions_total", agent_type=flow, status="failed")
    assert 0 == _grown(before, after, "taskforce_missions_total", status="cancelled")
    assert 0 == _grown(before, after, "taskforce_tool_failures_total", tool_name="sleep")
    assert 0 == total(after, "taskforce_missions_in_progress", agent_type=flow)
    assert "completed" == following.json()["status"]


def test_taskforce_run_json_says_mission_timeout(tmp_path: Path) -> None:
    """`taskforce run --json` with the setting in the environment: failed as
    mission_timeout, exit 1, the record and the log line alike."""
    env = _env(tmp_path, TASKFORCE_AGENT__MISSION_TIMEOUT_SECONDS=str(_DEADLINE))
    proc = _taskforce("run", _MISSION, "--agent", "legacy", "--json", env=env, cwd=tmp_path)

    assert 1 == proc.returncode, proc.stderr
    result = json.loads(proc.stdout)
    assert ("failed", "mission_timeout", _ERROR) == (
        result["status"],
        result["error_type"],
        result["error"],
    )
    (saved,) = (tmp_path / "state").glob("*.json")
    (record,) = json.loads(saved.read_text(encoding="utf-8"))["missions"]
    assert ("failed", "mission_timeout") == (record["status"], record["error_type"])
    logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert ["mission_timeout"] == [
        line["error_type"] for line in logs if line["event"] == "mission.failed"
    ]
