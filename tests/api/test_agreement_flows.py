"""The two flows agree: the same call has the same outcome in both, in all three views.

``tests/api/test_agreement.py`` checks each flow against the docs, one mission at a time.
Here each scenario runs through BOTH flows (``agent_type`` ``lean`` and ``legacy``) on each
route of a real server on 127.0.0.1 (the scripted provider, with a provider and tools of
one's own where a scenario needs them), and what each flow's mission left is boiled down to
one view per surface:

- the API: the HTTP status, ``status``, ``error_type``, tool calls, the final message and
  error, the keys of the result, the session record and their steps, a stream's events;
- the JSON log lines (debug ones too): the ``mission.*``, ``tool.*`` and ``llm.*`` events
  with their ``error_type`` and their field names;
- the ``/metrics`` deltas: every series of the flow that moved (a histogram by its count),
  among them missions, tool calls and failures by ``error_type``, LLM failures and retries
  by ``error_type``, tokens, spend and context sizes, and ``taskforce_missions_in_progress``
  back at 0.

Within a flow the three views name one outcome; across the flows the views are equal, but
for what a flow has of its own by design: how many LLM calls it makes (the legacy flow
plans first, and spends a turn to finish each step), the events only one flow has
(``agent.plan.*``), the time to first token (only the lean flow streams), and, for the
scenarios ``_BY_DESIGN`` names, its steps, tool calls or error words, each checked as
such. The same with ``agent.fail_on_tool_error`` off (``_FED_BACK``); the calls the docs
have each flow read its own way (``_EACH_ITS_OWN``) are checked flow by flow. A session
reused across the flows, a client that leaves mid-call, a mission stopped at its deadline
(``agent.mission_timeout_seconds``) and a shutdown that cancels missions leave the same in
both.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskforce.api.server import create_app
from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.core.domain.prompts import OBSERVATION_PREFIX
from taskforce.core.interfaces import ChatMessage
from taskforce.errors import LLMProviderError
from taskforce.observability.logs._logging import configure_logging
from tests.api.conftest import parse_sse
from tests.api.test_agreement import (
    _CASES,
    _TOOLS,
    LEAVING,
    _leave,
    _line_of,
    _OwnProvider,
    _scrape,
    _until_counted,
    fixture_patient,  # noqa: F401 (the fixture ``patient``)
)
from tests.api.test_serving import _serving
from tests.support.json_lines import JSONLines
from tests.support.live_server import LiveServer, serve
from tests.support.own_parts import TableTool, marker, raises

pytestmark = pytest.mark.integration

_ROUTES = {"execute": "/api/v1/execute", "stream": "/api/v1/execute/stream"}
_GUARD_SECONDS = 30.0
_MAX_STEPS = 6
#: A result far over any message a model is sent, but under the API's own limits.
_HUGE_CHARS = 2_000_000
#: A built-in tool call that outlasts a shutdown's grace (the tool limit is the default).
_SLOW_MISSION = 'tool:sleep {"seconds": 30}\ndone'

#: ``agent.mission_timeout_seconds`` of the ``deadlined`` service, and a mission that
#: outlasts it in its second tool call, the first one done.
_DEADLINE_SECONDS = 0.3
_PAST_THE_DEADLINE = 'tool:t_ok {}\ntool:sleep {"seconds": 30}\nsay done'

#: tool name -> behaviour, beside test_agreement's tools.
_MORE_TOOLS: dict[str, Callable[[], Any]] = {
    "t_huge": lambda: {"success": True, "output": "x" * _HUGE_CHARS},
    "t_list": lambda: [1, 2],
}
_ALL_TOOLS = {**_TOOLS, **_MORE_TOOLS}

#: marker -> what every call of a marked mission raises (each flow's first call fails).
_USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
_RAISES: dict[str, Callable[[], Any]] = {
    "fail-with-usage": lambda: {
        "success": False,
        "error": "x",
        "error_type": "invalid_response",
        "usage": _USAGE,
        "model": "own-1",
    },
    "raise-with-usage": raises(
        LLMProviderError("x", error_type="invalid_response", usage=_USAGE, model="own-1")
    ),
    "context-too-long": raises(
        LLMProviderError("maximum context length exceeded", error_type="bad_request")
    ),
    "invalid-response": raises(LLMProviderError("no choices", error_type="invalid_response")),
}


#: marker -> the blank final answer a marked mission gets, after the scripted plan (legacy):
#: as the text of a turn without tool calls (lean), as a ``finish`` action's answer (legacy)
_BLANK: dict[str, str | None] = {"blank-answer": " \n\t", "null-answer": None, "no-answer": ""}


#: marker -> the arguments, no JSON object, of the call to ``t_ok`` a marked mission's model
#: asks for first: a native tool call's (lean), a ``tool_call`` action's ``args`` (legacy)
_NO_OBJECT: dict[str, str | None] = {"null-args": None, "null-args-text": "null"}


def _asks_with(arguments: str | None, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
    """The model's answer that asks for ``t_ok`` with ``arguments``, until a tool result."""
    if any(str(m.get("content")).startswith(OBSERVATION_PREFIX) for m in messages):
        content = json.dumps({"action": "finish", "answer": "done"})
        return {"success": True, "content": content, "tool_calls": [], "usage": _USAGE}
    if kwargs.get("tools"):
        call = {"id": "c1", "name": "t_ok", "arguments": arguments}
        return {"success": True, "content": None, "tool_calls": [call], "usage": _USAGE}
    content = json.dumps({"action": "tool_call", "tool": "t_ok", "args": arguments})
    return {"success": True, "content": content, "tool_calls": [], "usage": _USAGE}


class _Provider(_OwnProvider):
    """test_agreement's provider of one's own, with the failures of ``_RAISES``, the
    blank answers of ``_BLANK`` and the arguments of ``_NO_OBJECT`` on cue."""

    async def complete(self, messages: Sequence[ChatMessage], *args: Any, **kwargs: Any) -> Any:
        texts = [m.get("content") for m in messages]
        if (case := marker(texts, _RAISES)) is not None:
            return _RAISES[case]()
        if (asked := marker(texts, _NO_OBJECT)) is not None:
            return _asks_with(_NO_OBJECT[asked], messages, **kwargs)
        if (blank := marker(texts, _BLANK)) is not None:
            answer = _BLANK[blank]
            if not kwargs.get("tools"):
                answer = json.dumps({"action": "finish", "answer": answer})
            return {
                "success": True,
                "content": answer,
                "tool_calls": [],
                "model": "own-1",
                "usage": _USAGE,
            }
        return await super().complete(messages, *args, **kwargs)

    async def generate(self, prompt: str, *args: Any, **kwargs: Any) -> Any:
        if (case := marker([prompt], _RAISES)) is not None:
            return _RAISES[case]()
        return await super().generate(prompt, *args, **kwargs)

    async def stream(
        self, messages: Sequence[ChatMessage], *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        if (case := marker([m.get("content") for m in messages], _RAISES)) is not None:
            failed = _RAISES[case]()  # a failure returned: raised, as a stream fails
            raise LLMProviderError(
                failed["error"], error_type=failed["error_type"], usage=failed["usage"]
            )
        if (asked := marker([m.get("content") for m in messages], _NO_OBJECT)) is not None:
            answer = _asks_with(_NO_OBJECT[asked], messages, **kwargs)
            yield {"done": True, "tool_calls": answer["tool_calls"], "usage": _USAGE}
            return
        if (blank := marker([m.get("content") for m in messages], _BLANK)) is not None:
            yield {"content": _BLANK[blank]}
            yield {"done": True, "tool_calls": [], "model": "own-1", "usage": _USAGE}
            return
        async for chunk in super().stream(messages, *args, **kwargs):
            yield chunk


#: The cases of test_agreement.py run here too, each through both flows at once.
_SHARED = (
    "tool raises ValueError",
    "tool returns None",
    "tool returns text",
    "tool runs past its limit",
    "unknown tool",
    "built-in tool, wrong arguments",
    "llm:fail timeout always",
    "llm:fail rate_limit once",
    "llm:fail rate_limit always",
    "llm:fail server_error always",
    "llm:fail auth once",
    "own provider returns None",
)
#: scenario -> (mission, the error_type both flows end with; None: completed)
_SCENARIOS: dict[str, tuple[str, str | None]] = {
    **{case: _CASES[case] for case in _SHARED},
    "success in one step": ("say hi", None),
    "success in several steps": ("tool:t_ok {}\ntool:t_ok {}\nsay done", None),
    "tool returns a list": ("tool:t_list {}", "invalid_result"),
    "tool returns a huge result": ("tool:t_huge {}\nsay done", None),
    "tool arguments that are no object": ("tool:t_ok [1, 2]", "bad_request"),
    "provider raises invalid_response": ("odd:invalid-response", "invalid_response"),
    "provider: context too long": ("odd:context-too-long", "bad_request"),
    "provider fails with billed tokens": ("odd:fail-with-usage", "invalid_response"),
    "provider raises with billed tokens": ("odd:raise-with-usage", "invalid_response"),
    "provider fails after a tool call": ("tool:t_ok {}\nllm:fail auth 1\nsay done", "auth"),
    "provider recovers after a tool call": ("tool:t_ok {}\nllm:fail rate_limit 1\nsay", None),
    "llm:error after a tool call": ("tool:t_ok {}\nllm:error", "bad_request"),
    "tool fails typed after one that works": (
        "tool:t_ok {}\ntool:t_fail_typed {}",
        "QuotaExceeded",
    ),
    "a blank answer": ("odd:blank-answer", "empty_answer"),
    "a null answer": ("odd:null-answer", "empty_answer"),
    "an empty answer": ("odd:no-answer", "empty_answer"),
    "max steps": ("\n".join(["tool:t_ok {}"] * (_MAX_STEPS + 2)), "step_limit"),
}

#: scenario -> (mission, error_type) with ``agent.fail_on_tool_error`` off
_FED_BACK: dict[str, tuple[str, str | None]] = {
    "tool raises, fed back": ("tool:t_value_error {}\nsay done", None),
    "tool returns None, fed back": ("tool:t_none {}\ntool:t_ok {}\nsay done", None),
    "tool fails typed, fed back": ("tool:t_fail_typed {}\nsay done", None),
    "tool runs past its limit, fed back": ("tool:t_past_the_limit {}\nsay done", None),
    "unknown tool, fed back": ("tool:no_such_tool {}\ntool:t_ok {}", None),
    "tool arguments the tool refuses, fed back": ('tool:calculator {"expr": "1"}', None),
    "several failures, then the provider fails": (
        "tool:t_fail {}\ntool:t_text {}\nllm:fail auth 1\nsay done",
        "auth",
    ),
}

#: scenario -> (mission, {flow: error_type}): a call each flow reads its own way, as the
#: docs say (docs/metrics.md, ``taskforce_tool_calls_total``: arguments that are no JSON
#: object, ``null`` among them, are a lean tool call refused as ``InvalidArguments`` and
#: an unreadable legacy action, ``invalid_action`` when it comes again)
_EACH_ITS_OWN: dict[str, tuple[str, dict[str, str | None]]] = {
    "tool arguments null": (
        "odd:null-args",
        {"lean": "InvalidArguments", "legacy": "invalid_action"},
    ),
    "tool arguments null, as JSON text": (
        "odd:null-args-text",
        {"lean": "InvalidArguments", "legacy": "invalid_action"},
    ),
}

#: The scenarios whose views differ by design, and in what (see ``_by_design``):
#: - ``steps``: a step is a plan step in the legacy flow, an LLM turn in the lean one
#:   (docs/logging.md, ``agent.step.started``); the plan is no step. A mission whose LLM
#:   call fails in the plan, or in the turn after a step's tool call, ends with one step
#:   fewer in the legacy flow than the lean flow's turns;
#: - ``words``: the error of an empty answer is told in each flow's words (docs/logging.md,
#:   ``empty_answer``: a turn with neither text nor tool calls, a blank last step);
#: - ``turns``: the legacy flow spends two LLM turns on a step with a tool call (the call,
#:   then ``finish``), the lean flow one (docs/configuration.md, ``agent.max_steps``), so
#:   the step limit stops it after fewer tool calls.
_BY_DESIGN: dict[str, str] = {
    "tool arguments that are no object": "steps",
    "llm:fail timeout always": "steps",
    "llm:fail rate_limit always": "steps",
    "llm:fail server_error always": "steps",
    "llm:fail auth once": "steps",
    "own provider returns None": "steps",
    "provider raises invalid_response": "steps",
    "provider: context too long": "steps",
    "provider fails with billed tokens": "steps",
    "provider raises with billed tokens": "steps",
    "provider fails after a tool call": "steps",
    "llm:error after a tool call": "steps",
    "a blank answer": "words",
    "a null answer": "words",
    "an empty answer": "words",
    "max steps": "turns",
    "several failures, then the provider fails": "steps",
}

#: What each flow has of its own, by design (docs/architecture.md, docs/logging.md): the
#: legacy flow plans with ``generate`` first, so its LLM calls, and so its tokens, differ in
#: number; ``agent.plan.*`` are its events. Nothing else may differ.
_FLOW_OWN_EVENTS = frozenset({"agent.plan.created", "agent.plan.failed"})
#: Logged once a process for a model, by whichever mission calls it first.
_ONCE = "llm.price.missing"

#: The events whose field names must be the same in both flows.
_COMPARED_PREFIXES = ("mission.", "tool.", "llm.")


def _settings(root: Path, **agent: Any) -> Settings:
    return Settings(
        state_dir=root / "state",
        workspace_dir=root / "workspace",
        agent={"tool_timeout_seconds": 0.2, "max_steps": _MAX_STEPS, **agent},
        llm={
            "prices": {
                "scripted-1": {"input": 1.0, "output": 2.0},
                "own-1": {"input": 1.0, "output": 2.0},
            }
        },
    )


def _serve(settings: Settings) -> Iterator[LiveServer]:
    """The service with the tools and provider above, on 127.0.0.1."""
    container = build_container(settings, llm_provider=_Provider())
    for name in _ALL_TOOLS:
        container.tool_registry.register(TableTool(name, _ALL_TOOLS))
    with serve(create_app(container=container)) as live:
        yield live
    asyncio.run(container.aclose())


@pytest.fixture(scope="module", name="served")
def fixture_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service, a failed tool call failing its mission (the default); for the module."""
    yield from _serve(_settings(tmp_path_factory.mktemp("flows")))


@pytest.fixture(scope="module", name="forgiving")
def fixture_forgiving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service with ``agent.fail_on_tool_error`` off: a failed call is fed back."""
    yield from _serve(_settings(tmp_path_factory.mktemp("forgiving"), fail_on_tool_error=False))


@pytest.fixture(scope="module", name="deadlined")
def fixture_deadlined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service with ``agent.mission_timeout_seconds``, under a tool call's own limit."""
    settings = _settings(
        tmp_path_factory.mktemp("deadlined"),
        mission_timeout_seconds=_DEADLINE_SECONDS,
        tool_timeout_seconds=_GUARD_SECONDS,
    )
    yield from _serve(settings)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _samples(client: httpx.AsyncClient) -> Samples:
    """Every ``taskforce_`` sample of one scrape (histograms by their ``_count`` and ``_sum``)."""
    response = await client.get("/metrics")
    assert 200 == response.status_code
    return _parsed(response.text)


def _parsed(text: str) -> Samples:
    """Every ``taskforce_`` sample of an exposition (histograms by ``_count`` and ``_sum``).

    Only those lines are parsed (each as a family of its own, named as the sample): the
    buckets are most of a scrape, and parsing them most of this module's time.
    """
    kept = "\n".join(
        line
        for line in text.splitlines()
        if line.startswith("taskforce_") and "_bucket{" not in line
    )
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(kept + "\n")
        for sample in family.samples
    }


def _grown(
    before: Samples, after: Samples, name: str, by: str | None, flow: str
) -> dict[str, float]:
    """How much ``name`` grew for ``flow``, by the values of label ``by`` (None: ``all``);
    only the values that grew."""
    grown: dict[str, float] = {}
    for (metric, labels), value in after.items():
        series = dict(labels)
        if metric == name and series.get("agent_type") == flow:
            key = "all" if by is None else series[by]
            grown[key] = grown.get(key, 0.0) + value - before.get((metric, labels), 0.0)
    return {key: value for key, value in grown.items() if value}


async def _run(
    client: httpx.AsyncClient, route: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The HTTP status, the result and (on the stream route) the events but its tokens."""
    response = await client.post(_ROUTES[route], json=body)
    if route == "execute" or response.status_code != 200:
        return response.status_code, response.json(), []
    events = parse_sse(response.text)
    assert "result" == events[-1][0], events[-3:]
    # a ``token`` event is the lean flow's own: only it streams its turns
    return response.status_code, events[-1][1]["result"], [e for e in events if e[0] != "token"]


async def _views(
    url: str, lines: JSONLines, route: str, runs: Sequence[tuple[str, str, str | None]]
) -> list[dict[str, Any]]:
    """Run each ``(flow, mission, session)`` on ``route`` at once (two of them: of two
    flows, whose series ``agent_type`` tells apart): their API, log and metrics views."""

    async def run(client: httpx.AsyncClient, flow: str, mission: str, session: str | None) -> Any:
        body = {"mission": mission, "agent_type": flow, "session_id": session or uuid.uuid4().hex}
        answered = await _run(client, route, body)
        record = await client.get(f"/api/v1/sessions/{body['session_id']}")
        return (*answered, record.json())

    async with httpx.AsyncClient(base_url=url, timeout=_GUARD_SECONDS) as client:
        before = await _samples(client)
        ran = await asyncio.gather(*(run(client, *one) for one in runs))
        after = await _samples(client)
    return [
        _view(before, after, lines, flow, route, *answered)
        for (flow, _, _), answered in zip(runs, ran, strict=True)
    ]


def _view(
    before: Samples,
    after: Samples,
    lines: JSONLines,
    flow: str,
    route: str,
    code: int,
    result: dict[str, Any],
    streamed: list[tuple[str, dict[str, Any]]],
    record: dict[str, Any],
) -> dict[str, Any]:
    """One mission's API, log and metrics views."""
    mine = [line for line in lines.read() if line.get("mission_id") == result["mission_id"]]
    kept = record["missions"][-1]

    def grown(name: str, by: str | None = None) -> dict[str, float]:
        return _grown(before, after, name, by, flow)

    events = [e for e in mine if e["event"].startswith(_COMPARED_PREFIXES) and e["event"] != _ONCE]
    failed_calls = ("tool.call.failed", "llm.call.failed", "llm.request.retry")
    requests = grown("taskforce_llm_requests_total", "status")
    spent = {
        "tokens": sorted(grown("taskforce_llm_tokens_total", "token_type")),
        "cost": bool(grown("taskforce_llm_cost_usd_total")),
        "context messages": bool(grown("taskforce_context_pack_messages_count")),
        "context tokens": bool(grown("taskforce_context_pack_tokens_count")),
    }
    told = [
        (kind, sorted(data), data.get("error_type"), data.get("success"))
        for kind, data in streamed
        if kind not in ("step_started", "step_completed", "step_failed")
    ]
    histograms = {
        name: (
            grown(f"taskforce_{name}_count").get("all", 0),
            grown(f"taskforce_{name}_sum").get("all", 0),
        )
        for name in ("mission_duration_seconds", "mission_steps", "mission_tool_calls")
    }
    return {
        "api": (code, result["status"], result["error_type"], result["tool_calls"]),
        "result keys": sorted(result),
        # the words of an error: on the stream route the lean flow's call is another one
        # (``stream``, not ``complete``), whose failure is told in words of its own
        "said": (
            result["final_message"],
            result.get("error") if route == "execute" else result.get("error") is not None,
        ),
        "stream": told,
        "record": (kept["mission_id"], kept["status"], kept["error_type"]),
        "record keys": (
            sorted(kept),
            sorted({key for step in kept.get("steps") or [] for key in step}),
            sorted({key for step in result["steps"] for key in step}),
        ),
        "log": {
            "end": [(e["event"], e.get("error_type")) for e in mine if e["event"] in _ENDS],
            "calls": [
                (e["event"], e.get("error_type")) for e in events if e["event"] in failed_calls
            ],
            "tools completed": sum(1 for e in mine if e["event"] == "tool.call.completed"),
            "fields": {e["event"]: sorted(e) for e in events},
            "agent.finished": [e.get("error_type") for e in mine if e["event"] == "agent.finished"],
        },
        "metrics": {
            "missions": grown("taskforce_missions_total", "status"),
            "tool calls": grown("taskforce_tool_calls_total", "status"),
            "tool failures": grown("taskforce_tool_failures_total", "error_type"),
            "llm failures": grown("taskforce_llm_failures_total", "error_type"),
            "llm retries": grown("taskforce_llm_retries_total", "error_type"),
            "llm requests failed": requests.get("error", 0),
            "spent": spent,
            "in progress": sum(
                value
                for (name, labels), value in after.items()
                if name == "taskforce_missions_in_progress" and ("agent_type", flow) in labels
            ),
            "missions measured": {
                name: count if name == "mission_duration_seconds" else (count, total)
                for name, (count, total) in histograms.items()
            },
            "tool durations": grown("taskforce_tool_duration_seconds_count").get("all", 0),
            "llm durations": grown("taskforce_llm_request_duration_seconds_count").get("all", 0),
            "llm requests": sum(requests.values()),
            "context packs": grown("taskforce_context_pack_messages_count").get("all", 0),
            "metrics errors": sum(
                value - before.get(key, 0.0)
                for key, value in after.items()
                if key[0] == "taskforce_metrics_errors_total"
            ),
        },
        "mission_id": result["mission_id"],
        "moved": _all_grown(before, after, flow),
        "steps": (len(result["steps"]), log_steps(mine)),
    }


def log_steps(lines: list[dict[str, Any]]) -> int | None:
    """The steps the mission's end line counts."""
    return next((e.get("steps") for e in lines if e["event"] in _ENDS), None)


_ENDS = frozenset({"mission.completed", "mission.failed", "mission.cancelled"})


def _check_one_outcome(view: dict[str, Any], expected: str | None) -> None:
    """Within one flow: the API, the record, the log and the metrics name one outcome."""
    status = "completed" if expected is None else "failed"
    code, said, error_type, tool_calls = view["api"]
    assert (200, status, expected) == (code, said, error_type), view["api"]
    assert (view["mission_id"], status, expected) == view["record"]
    log, metrics = view["log"], view["metrics"]
    assert [(f"mission.{status}", expected)] == log["end"]
    assert [expected] == log["agent.finished"]
    assert Counter({status: 1}) == metrics["missions"]
    tool_failures = [t for event, t in log["calls"] if event == "tool.call.failed"]
    assert Counter(tool_failures) == metrics["tool failures"]
    calls = {"success": log["tools completed"], "error": len(tool_failures)}
    assert +Counter(calls) == metrics["tool calls"]
    assert tool_calls == log["tools completed"] + len(tool_failures)
    llm_failures = [t for event, t in log["calls"] if event == "llm.call.failed"]
    assert Counter(llm_failures) == metrics["llm failures"]
    assert len(llm_failures) == metrics["llm requests failed"]
    retries = [t for event, t in log["calls"] if event == "llm.request.retry"]
    assert Counter(retries) == metrics["llm retries"]
    if llm_failures:
        assert expected == llm_failures[-1]
    assert 0 == metrics["in progress"]
    assert 0 == metrics["metrics errors"]
    # the histograms saw the mission once, with the steps and tool calls the others say
    steps, logged_steps = view["steps"]
    assert steps == logged_steps
    assert {
        "mission_duration_seconds": 1,
        "mission_steps": (1, steps),
        "mission_tool_calls": (1, tool_calls),
    } == metrics["missions measured"]
    assert tool_calls == metrics["tool durations"]
    assert metrics["llm requests"] == metrics["llm durations"] == metrics["context packs"]
    if view["stream"]:
        told = [(kind, t) for kind, _, t, ok in view["stream"] if kind == "tool_result" and not ok]
        assert tool_failures == [t for _, t in told]
        assert "result" == view["stream"][-1][0]


def _comparable(view: dict[str, Any]) -> dict[str, Any]:
    """What of a view must be the same in both flows (see ``_FLOW_OWN_EVENTS``)."""
    log = view["log"]
    fields = {
        event: names for event, names in log["fields"].items() if event not in _FLOW_OWN_EVENTS
    }
    return {
        "api": view["api"],
        "record": view["record"][1:],
        "record keys": view["record keys"],
        "log": {**log, "fields": fields},
        "metrics": {
            name: value
            for name, value in view["metrics"].items()
            # how many LLM calls a flow makes is its own: the legacy flow plans first
            if name not in ("llm requests", "llm durations", "context packs")
        },
        "stream": view["stream"],
        "result keys": view["result keys"],
        "said": view["said"],
        # every series that moved; of the LLM calls' own, how many is each flow's own
        "moved": {
            key: (value if not key.startswith(_COUNTED_BY_FLOW) else "moved")
            for key, value in view["moved"].items()
            # only the lean flow streams, on the stream route (docs/architecture.md)
            if not key.startswith("taskforce_llm_time_to_first_token_seconds")
        },
    }


#: Series that count LLM calls (or what they send and bill), whose number is each flow's.
_COUNTED_BY_FLOW = (
    "taskforce_llm_requests_total[('status', 'success')]",
    "taskforce_llm_request_duration_seconds",
    "taskforce_llm_tokens_total",
    "taskforce_llm_cost_usd_total",
    "taskforce_context_pack",
)


def _by_design(kind: str | None, lean: dict[str, Any], legacy: dict[str, Any]) -> None:
    """Check what ``_BY_DESIGN`` says differs, and take it out of both views."""
    if kind == "steps":  # the lean flow's failed turn is a step of its own
        (_, steps), (_, fewer) = [
            v["metrics"]["missions measured"]["mission_steps"] for v in (lean, legacy)
        ]
        assert steps == fewer + 1
        legacy["metrics"]["missions measured"]["mission_steps"] = (1, steps)
        if fewer == 0:  # no step whose keys could be compared
            assert ([], []) == legacy["record keys"][1:]
            legacy["record keys"] = lean["record keys"]
    elif kind == "words":
        assert [
            ("", "the model answered with neither text nor tool calls"),
            ("", "the model's final answer is empty"),
        ] == [view["said"] for view in (lean, legacy)] or all(
            view["said"] == ("", True) for view in (lean, legacy)
        )
        legacy["said"] = lean["said"]
    elif kind == "turns":  # fewer tool calls in the legacy flow, none of them failed
        assert lean["api"][3] > legacy["api"][3]
        for view in (lean, legacy):
            view["api"] = view["api"][:3]
            for name in ("tool calls", "tool durations", "missions measured"):
                assert view["metrics"].pop(name)
            assert view["log"].pop("tools completed")
            view.pop("stream")
            view.pop("moved")


async def _agree(
    served: LiveServer,
    lines: JSONLines,
    scenario: str,
    mission: str,
    expected: str | None,
    route: str,
) -> None:
    """Run ``mission`` in both flows: each names one outcome, and their views agree."""
    flows = ("lean", "legacy")
    views = dict(
        zip(
            flows,
            await _views(served.url, lines, route, [(f, mission, None) for f in flows]),
            strict=True,
        )
    )
    for view in views.values():
        _check_one_outcome(view, expected)
    lean, legacy = _comparable(views["lean"]), _comparable(views["legacy"])
    _by_design(_BY_DESIGN.get(scenario), lean, legacy)
    assert lean == legacy


@pytest.fixture(name="lines")
def fixture_lines() -> JSONLines:
    """The JSON log lines of this test, ``debug`` ones too (``tool.call.started``)."""
    lines = JSONLines()
    configure_logging(fmt="json", stream=lines, level="debug")
    return lines


class TestTheTwoFlowsAgree:
    @pytest.mark.parametrize("route", list(_ROUTES))
    @pytest.mark.parametrize("scenario", list(_SCENARIOS))
    async def test_same_call_same_views(
        self, served: LiveServer, lines: JSONLines, scenario: str, route: str
    ) -> None:
        """Each flow's API result, log lines and metrics name one outcome, and the two
        flows' views are the same but for what a flow has of its own by design."""
        await _agree(served, lines, scenario, *_SCENARIOS[scenario], route)

    @pytest.mark.parametrize("route", list(_ROUTES))
    @pytest.mark.parametrize("scenario", list(_EACH_ITS_OWN))
    async def test_a_call_each_flow_reads_its_own_way(
        self, served: LiveServer, lines: JSONLines, scenario: str, route: str
    ) -> None:
        """A call the docs have each flow read its own way ends as they say in each, and
        each flow's API result, log lines and metrics name that one outcome."""
        mission, expected = _EACH_ITS_OWN[scenario]
        runs = [(flow, mission, None) for flow in expected]
        for (flow, _, _), view in zip(
            runs, await _views(served.url, lines, route, runs), strict=True
        ):
            _check_one_outcome(view, expected[flow])

    @pytest.mark.parametrize("scenario", list(_FED_BACK))
    async def test_same_call_same_views_with_failures_fed_back(
        self, forgiving: LiveServer, lines: JSONLines, scenario: str
    ) -> None:
        """The same, with ``agent.fail_on_tool_error`` off: each failed tool call is
        counted and logged alike, and the mission goes on alike in both flows. On the plain
        route: what a tool call does is the same on both (the stream route changes only how
        the lean flow calls the LLM, which ``test_same_call_same_views`` covers)."""
        await _agree(forgiving, lines, scenario, *_FED_BACK[scenario], "execute")

    @pytest.mark.parametrize("route", list(_ROUTES))
    async def test_a_session_reused_across_flows(
        self, served: LiveServer, lines: JSONLines, route: str
    ) -> None:
        """One session, a mission of each flow in turn: each ends as in a session of its
        own, and the record keeps both, in order, each with its flow's outcome."""
        session = uuid.uuid4().hex
        mission = "tool:t_ok {}\ntool:t_value_error {}"
        views = []
        for flow in ("lean", "legacy", "lean"):
            (view,) = await _views(served.url, lines, route, [(flow, mission, session)])
            _check_one_outcome(view, "ValueError")
            views.append(view)
        assert _comparable(views[0]) == _comparable(views[1]) == _comparable(views[2])
        async with httpx.AsyncClient(base_url=served.url, timeout=_GUARD_SECONDS) as client:
            record = (await client.get(f"/api/v1/sessions/{session}")).json()
        assert [v["mission_id"] for v in views] == [m["mission_id"] for m in record["missions"]]
        assert ["lean", "legacy", "lean"] == [m.get("agent_type") for m in record["missions"]]


def _all_grown(before: Samples, after: Samples, flow: str) -> dict[str, float]:
    """Every series of ``flow`` that moved (a histogram by its count), by name and labels
    but ``agent_type``, ``model`` and ``operation`` (the legacy flow plans with ``generate``)."""
    moved: dict[str, float] = {}
    for (name, labels), value in after.items():
        series = dict(labels)
        if series.pop("agent_type", None) != flow or name.endswith("_sum"):
            continue
        delta = value - before.get((name, labels), 0.0)
        if "_in_progress" in name:
            delta = value  # a gauge: where it stands, not how it moved
        series.pop("model", None)
        series.pop("operation", None)
        key = name + str(sorted(series.items()))
        if delta:
            moved[key] = moved.get(key, 0.0) + delta
    return moved


async def _left(
    url: str, lines: JSONLines, mission: str, flow: str, route: str, at: str
) -> dict[str, Any]:
    """Start ``mission`` in ``flow`` on ``route``, leave at its ``at`` line: what moved."""
    session = uuid.uuid4().hex
    body = {"mission": mission, "agent_type": flow, "session_id": session}
    async with httpx.AsyncClient(base_url=url, timeout=_GUARD_SECONDS) as client:
        before, counted = await _samples(client), await _scrape(client)
        async with httpx.AsyncClient(base_url=url, timeout=_GUARD_SECONDS) as leaving:
            await _leave(leaving, route, body, lines, at)
        ended = await _line_of(lines, session, "mission.cancelled")
        assert await _until_counted(client, counted, route)
        after = await _samples(client)
        record = (await client.get(f"/api/v1/sessions/{session}")).json()["missions"][-1]
    mine = [line for line in lines.read() if line.get("mission_id") == ended["mission_id"]]
    return {
        "record": (record["status"], record["error_type"]),
        "log": [
            (line["event"], line.get("status"), line.get("error_type"))
            for line in mine
            if line["event"].startswith(_COMPARED_PREFIXES) and line["event"] != _ONCE
        ],
        "metrics": _all_grown(before, after, flow),
    }


class TestAClientThatLeavesInBothFlows:
    @pytest.mark.parametrize("route", list(_ROUTES))
    @pytest.mark.parametrize(("mission", "at"), list(LEAVING.values()), ids=list(LEAVING))
    async def test_the_same_cancelled_mission_in_both(
        self, patient: LiveServer, lines: JSONLines, route: str, mission: str, at: str
    ) -> None:
        """A client that leaves mid-call leaves the same cancelled mission in both flows:
        its record, its log lines and every series it moved (none in progress after it)."""
        views = {
            flow: await _left(patient.url, lines, mission, flow, route, at)
            for flow in ("lean", "legacy")
        }
        assert views["lean"]["record"] == ("cancelled", "cancelled")
        if at == "tool.call.started":  # the legacy flow planned and asked: two LLM calls
            for view in views.values():
                view["metrics"] = {
                    k: v
                    for k, v in view["metrics"].items()
                    if not k.startswith(("taskforce_llm", "taskforce_context"))
                }
        assert views["lean"] == views["legacy"]


class TestADeadlineInBothFlows:
    @pytest.mark.parametrize("route", list(_ROUTES))
    async def test_the_same_timed_out_mission_in_both(
        self, deadlined: LiveServer, lines: JSONLines, route: str
    ) -> None:
        """A mission stopped at ``agent.mission_timeout_seconds`` in its second tool call
        fails as ``mission_timeout`` in both flows, never ``cancelled``: its result, record,
        log lines and every series it moved agree within each flow and across the two. The
        call cut short has no outcome: it counts among the result's tool calls, and in no
        ``tool.call.*`` line or tool series."""
        views = dict(
            zip(
                ("lean", "legacy"),
                await _views(
                    deadlined.url,
                    lines,
                    route,
                    [(flow, _PAST_THE_DEADLINE, None) for flow in ("lean", "legacy")],
                ),
                strict=True,
            )
        )
        for view in views.values():
            assert (200, "failed", "mission_timeout", 2) == view["api"]
            assert (view["mission_id"], "failed", "mission_timeout") == view["record"]
            log, metrics = view["log"], view["metrics"]
            assert [("mission.failed", "mission_timeout")] == log["end"]
            assert ["mission_timeout"] == log["agent.finished"]
            assert ([], 1) == (log["calls"], log["tools completed"])
            assert {"failed": 1} == metrics["missions"]
            assert ({"success": 1}, {}) == (metrics["tool calls"], metrics["tool failures"])
            assert (0, 0) == (metrics["in progress"], metrics["metrics errors"])
            assert (1, 1) == view["steps"]
            if route == "stream":
                assert ("error", "mission_timeout") == view["stream"][-2][::2]
        lean, legacy = _comparable(views["lean"]), _comparable(views["legacy"])
        assert lean == legacy


class TestAShutdownInBothFlows:
    async def test_the_same_cancelled_missions_in_both(self, settings: Settings) -> None:
        """Missions of both flows, on both routes, still in a tool call when the shutdown's
        grace expires: each flow's answers, records, log lines and series say the same."""
        lines = JSONLines()
        configure_logging(fmt="json", stream=lines, level="debug")
        bodies = {
            (flow, route): {
                "mission": _SLOW_MISSION,
                "agent_type": flow,
                "session_id": f"{flow}-{route}",
            }
            for flow in ("lean", "legacy")
            for route in _ROUTES
        }
        async with _serving(settings) as running:
            async with httpx.AsyncClient(base_url=running.url, timeout=_GUARD_SECONDS) as client:
                before = await _samples(client)
                asked = {
                    key: asyncio.create_task(client.post(_ROUTES[key[1]], json=body))
                    for key, body in bodies.items()
                }
                for body in bodies.values():
                    await _line_of(lines, body["session_id"], "tool.call.started")
                running.server.should_exit = True
                await asyncio.wait_for(running.task, timeout=_GUARD_SECONDS)
                answers = dict(zip(asked, await asyncio.gather(*asked.values()), strict=True))
            assert running.container.metrics is not None
            after = _parsed(running.container.metrics.render().decode())
        records = {
            key: json.loads((settings.state_dir / f"{body['session_id']}.json").read_text())
            for key, body in bodies.items()
        }
        views: dict[str, dict[str, Any]] = {}
        for flow in ("lean", "legacy"):
            told: dict[str, Any] = {}
            for route in _ROUTES:
                answer = answers[(flow, route)]
                said = answer.json() if route == "execute" else parse_sse(answer.text)[-1][1]
                told[route] = (answer.status_code, said.get("error_type"))
                mission = records[(flow, route)]["missions"][-1]
                told[f"{route} record"] = (mission["status"], mission["error_type"])
                told[f"{route} log"] = [
                    (line["event"], line.get("status"), line.get("error_type"))
                    for line in lines.read()
                    if line.get("mission_id") == mission["mission_id"]
                    and line["event"].startswith(_COMPARED_PREFIXES)
                    and line["event"] != _ONCE
                ]
            # the legacy flow planned first: its LLM calls are its own
            told["moved"] = {
                key: value
                for key, value in _all_grown(before, after, flow).items()
                if not key.startswith(("taskforce_llm", "taskforce_context"))
            }
            views[flow] = told
        # the plain request is refused as the shutdown's; the stream ends with its error
        assert 503 == views["lean"]["execute"][0]
        assert (200, "cancelled") == views["lean"]["stream"]
        assert ("cancelled", "cancelled") == views["lean"]["execute record"]
        assert views["lean"] == views["legacy"]
