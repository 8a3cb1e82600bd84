"""Many missions at once: the result, the log lines, the metrics and the store still agree.

``tests/api/test_agreement.py`` checks one mission at a time. Here about two hundred run
at once against ``taskforce serve --workers 2`` on 127.0.0.1: both flows, both routes,
completed and failed missions (tool calls, ``llm:fail``, ``llm:delay``), sessions shared
by several missions, and streaming clients that leave after the first event. Then, per
(agent_type, status), the sum over the workers' ``taskforce_missions_total``, the answers
(with the session record for a client that left), the ``mission.*`` log lines and the
state store's records are the same numbers; the tool and LLM counters are the per-mission
log lines'; no mission is in progress; and each line of a mission names only that mission.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import parse_sse
from tests.support.processes import Child, clean_env, free_ports, started, wait_until_up

pytestmark = pytest.mark.integration

_ROUTES = {"execute": "/api/v1/execute", "stream": "/api/v1/execute/stream"}
_FLOWS = ("lean", "legacy")
#: Missions whose outcome the scripted provider and the built-in tools decide.
_MISSIONS = (
    'tool:calculator {"expression": "6*7"}\nsay done',
    'tool:calculator {"expression": "1/0"}',
    "llm:fail rate_limit 1\nsay done",
    "llm:fail auth 5\nsay done",
    "llm:delay 50\nhi",
    "llm:error",
    "tool:no_such_tool {}\nsay done",
    'tool:calculator {"expr": "1"}',
)
#: What a client that leaves after the first event runs: still running when it leaves, or
#: (the short delays) racing its client: ended before the service notices, or not.
_LEFT = (
    "llm:delay 5000\nhi",
    'tool:sleep {"seconds": 5}\ndone',
    "llm:delay {ms}\nhi",
    "llm:fail auth 5\nllm:delay {ms}\nhi",
)
_MISSION_COUNT = 200
_SHARED_SESSIONS = 4
#: The categories of lines that belong to no mission.
_PROCESS_CATEGORIES = frozenset({"lifecycle", "http", "metrics"})
#: The line that ends a mission -> its status.
_ENDS = {
    "mission.completed": "completed",
    "mission.failed": "failed",
    "mission.cancelled": "cancelled",
}
#: A call of a name no tool has is logged with ``tool_sha256``, counted under that name.
_UNNAMED = {"tool": "no_such_tool"}


def _plan() -> list[dict[str, Any]]:
    """Each mission to send: its body, route, and whether its client leaves."""
    plan = []
    for i in range(_MISSION_COUNT):
        flow, route = _FLOWS[i % 2], list(_ROUTES)[(i // 2) % 2]
        leaves = i % 8 == 0
        if leaves:
            mission = _LEFT[(i // 8) % 4].replace("{ms}", str(i // 2))
            route, session = "stream", f"left-{i}"
            flow = _FLOWS[(i // 32) % 2]
        else:
            mission = _MISSIONS[(i // 4) % len(_MISSIONS)]
            shared = i % 5 == 1
            session = f"shared-{i % _SHARED_SESSIONS}" if shared else f"own-{i}"
        body = {"mission": mission, "agent_type": flow, "session_id": session}
        plan.append({"body": body, "route": route, "leaves": leaves})
    return plan


async def _send(client: httpx.AsyncClient, item: dict[str, Any]) -> dict[str, Any]:
    """Run one mission; a leaver returns its mission_id and session id, else the result."""
    route, body = item["route"], item["body"]
    if item["leaves"]:
        async with client.stream("POST", _ROUTES[route], json=body) as response:
            assert 200 == response.status_code
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    first = json.loads(line[len("data: ") :])
                    assert "mission_started" == first["kind"], first
                    break
        # closing the response here closes its connection: the service sees the client leave
        return {"left": True, "mission_id": first["mission_id"], **body}
    response = await client.post(_ROUTES[route], json=body)
    assert 200 == response.status_code, response.text
    if route == "execute":
        result: dict[str, Any] = response.json()
    else:
        events = parse_sse(response.text)
        assert "result" == events[-1][0], events[-3:]
        result = events[-1][1]["result"]
    assert (body["session_id"], body["agent_type"]) == (result["session_id"], result["agent_type"])
    return result


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _sum(
    samples: list[tuple[str, dict[str, str], float]], name: str, *by: str
) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for metric, labels, value in samples:
        if metric == name:
            counts[tuple(labels[key] for key in by)] += int(value)
    return +counts


def _events(child: Child) -> list[dict[str, Any]]:
    return [json.loads(line) for line in child.stderr().splitlines() if line.startswith("{")]


async def _until_ended(child: Child, mission_ids: set[str]) -> list[dict[str, Any]]:
    """The log lines once every mission in ``mission_ids`` has logged its end."""
    async with asyncio.timeout(30):
        while True:
            lines = _events(child)
            ended = {line.get("mission_id") for line in lines if line["event"] in _ENDS}
            if mission_ids <= ended:
                return lines
            await asyncio.sleep(0.1)


async def _settled(
    client: httpx.AsyncClient, metrics: list[str]
) -> list[list[tuple[str, dict[str, str], float]]]:
    """Each worker's scrape once all missions and their requests are counted, none running.

    A request is counted as its answer ends, which may be just after the client read it.
    """
    async with asyncio.timeout(30):
        while True:
            scraped = [_samples((await client.get(url)).text) for url in metrics]
            samples = [sample for scrape in scraped for sample in scrape]
            requests = _sum(samples, "taskforce_http_requests_total", "route")
            if _MISSION_COUNT == sum(
                _sum(samples, "taskforce_missions_total", "status").values()
            ) == sum(
                n for (route,), n in requests.items() if route in _ROUTES.values()
            ) and not _sum(samples, "taskforce_missions_in_progress", "agent_type"):
                return scraped
            await asyncio.sleep(0.05)


async def _load(api: str, metrics: list[str], child: Child) -> None:
    plan = _plan()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=api, timeout=30, limits=limits) as client:
        answers = await asyncio.gather(*(_send(client, item) for item in plan))
        every = {answer["mission_id"] for answer in answers}
        assert _MISSION_COUNT == len(every)
        lines = await _until_ended(child, every)
        sessions = {item["body"]["session_id"] for item in plan}
        records = {
            session: (await client.get(f"/api/v1/sessions/{session}")).json()["missions"]
            for session in sessions
        }
        scraped = await _settled(client, metrics)
    samples = [sample for scrape in scraped for sample in scrape]
    kept = {record["mission_id"]: record for missions in records.values() for record in missions}

    # the answers, with the session record for each client that left
    answered: Counter[tuple[str, ...]] = Counter()
    for answer in answers:
        status = kept[answer["mission_id"]]["status"] if answer.get("left") else answer["status"]
        answered[(answer["agent_type"], status)] += 1
    left = [kept[answer["mission_id"]]["status"] for answer in answers if answer.get("left")]
    assert "cancelled" in left, left  # most are: each left long before its mission's end
    # the state store's records
    stored = Counter((record["agent_type"], record["status"]) for record in kept.values())
    assert every == set(kept)
    # the mission.* log lines
    ends = [line for line in lines if line["event"] in _ENDS]
    logged = Counter((line["agent_type"], _ENDS[line["event"]]) for line in ends)
    assert len(ends) == len({line["mission_id"] for line in ends})  # one end per mission
    counted = _sum(samples, "taskforce_missions_total", "agent_type", "status")
    assert answered == stored == logged == counted, (answered, stored, logged, counted)
    timed = _sum(samples, "taskforce_mission_duration_seconds_count", "agent_type", "status")
    measured = Counter(
        (line["agent_type"], line["status"])
        for line in lines
        if line["event"] == "mission.duration.measured"
    )
    assert counted == timed == measured
    assert {flow for flow, status in counted if status == "cancelled"} == set(_FLOWS)
    # the records and results say the same of each mission
    by_mission: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_mission.setdefault(str(line.get("mission_id")), []).append(line)
    for answer in answers:
        record = kept[answer["mission_id"]]
        mine = by_mission[answer["mission_id"]]
        [end] = [line for line in mine if line["event"] in _ENDS]
        status = _ENDS[end["event"]]
        # mission.cancelled has no error_type (docs/logging.md); its record's is "cancelled"
        error_type = "cancelled" if status == "cancelled" else end.get("error_type")
        assert (record["status"], record["error_type"]) == (status, error_type), end
        if answer.get("left"):
            continue
        assert (answer["status"], answer["error_type"]) == (
            record["status"],
            record["error_type"],
        )
        calls = [line for line in mine if line["event"].startswith("tool.call.")]
        assert answer["tool_calls"] == sum(
            line["event"] in ("tool.call.completed", "tool.call.failed") for line in calls
        )
    for scrape in scraped:
        assert Counter() == _sum(scrape, "taskforce_missions_in_progress", "agent_type")
    # every mission's request, once, as the route it came by
    sent = Counter((_ROUTES[item["route"]], "200") for item in plan)
    http = _sum(samples, "taskforce_http_requests_total", "route", "status_code")
    assert sent == Counter({key: n for key, n in http.items() if key[0] in _ROUTES.values()})

    # each line of a mission names that mission, its session and flow, nothing else
    owner = {answer["mission_id"]: answer for answer in answers}
    for line in lines:
        if line.get("category") in _PROCESS_CATEGORIES:
            continue
        assert line.get("mission_id") in owner, line
        its = owner[line["mission_id"]]
        assert (its["session_id"], its["agent_type"]) == (
            line["session_id"],
            line["agent_type"],
        ), line

    # the tool and LLM counters are the per-mission log lines
    def of(event: str, *fields: str) -> Counter[tuple[str, ...]]:
        return Counter(
            tuple(str(line.get(field, _UNNAMED.get(field))) for field in fields)
            for line in lines
            if line["event"] == event
        )

    assert of("tool.call.failed", "tool", "agent_type", "error_type") == _sum(
        samples, "taskforce_tool_failures_total", "tool_name", "agent_type", "error_type"
    )
    tool_calls = _sum(samples, "taskforce_tool_calls_total", "agent_type", "status")
    assert of("tool.call.completed", "agent_type") == Counter(
        {(flow,): n for (flow, status), n in tool_calls.items() if status == "success"}
    )
    assert of("tool.call.failed", "agent_type") == Counter(
        {(flow,): n for (flow, status), n in tool_calls.items() if status == "error"}
    )
    assert of("llm.call.failed", "agent_type", "error_type") == _sum(
        samples, "taskforce_llm_failures_total", "agent_type", "error_type"
    )
    assert of("llm.request.retry", "agent_type", "error_type") == _sum(
        samples, "taskforce_llm_retries_total", "agent_type", "error_type"
    )
    llm_errors = _sum(samples, "taskforce_llm_requests_total", "agent_type", "status")
    assert of("llm.call.failed", "agent_type") == Counter(
        {(flow,): n for (flow, status), n in llm_errors.items() if status == "error"}
    )
    assert Counter() == _sum(samples, "taskforce_metrics_errors_total", "stage")


def test_two_hundred_missions_at_once_agree_everywhere(tmp_path: Path) -> None:
    """Answers (and records of the clients that left), log lines, the sum of both workers'
    metrics and the store count the same missions by (agent_type, status)."""
    api_port, metrics_port = free_ports(1), free_ports(2)
    env = clean_env(
        tmp_path,
        TASKFORCE_AGENT__TOOL_TIMEOUT_SECONDS="10",
        TASKFORCE_API__MAX_MISSIONS_IN_FLIGHT="1000",
    )
    args = ["serve", "--port", str(api_port), "--workers", "2"]
    with started([*args, "--metrics-port", str(metrics_port)], env, tmp_path) as child:
        api = f"http://127.0.0.1:{api_port}"
        metrics = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in (0, 1)]
        wait_until_up(child, [*metrics, f"{api}/health"])
        asyncio.run(_load(api, metrics, child))
    assert "Traceback" not in child.stderr()
