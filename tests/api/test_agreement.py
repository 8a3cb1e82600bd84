"""One call, one outcome: the result, the JSON log lines and ``/metrics`` agree, everywhere.

A matrix of outcomes (a tool that succeeds, fails, raises, returns no result, times out;
an unknown tool; every LLM error type, from the scripted provider's ``llm:fail`` and from
a provider of one's own that returns or raises them; unusable answers; the step limits;
an empty answer; a state store that fails) is run in both flows through each entry point:
``POST /api/v1/execute`` and ``/api/v1/execute/stream`` of a real server on 127.0.0.1
(with a ``session_id``, and for one case of each kind of outcome without one), and
``taskforce run``. For every mission:

- the result (``status``, ``error_type``, steps) is what the session record says and what
  ``docs/logging.md`` documents for that outcome;
- its JSON log lines (``tool.call.failed``, ``llm.call.failed``, ``llm.request.retry``,
  ``mission.*``, ``agent.*``, ``state.save.failed``) carry its ids, the categories the
  docs give their events, and the same ``error_type`` as the result;
- the scrape's deltas count exactly those calls: ``taskforce_missions_total{status}``,
  ``taskforce_tool_calls_total{status}``, ``taskforce_tool_failures_total{error_type}``,
  ``taskforce_llm_requests_total{status}``, ``taskforce_llm_failures_total{error_type}``,
  ``taskforce_llm_retries_total{error_type}``, ``taskforce_state_errors_total``, with the
  labels the metric catalog documents, and no fault of the instrumentation.

A client that leaves mid-mission, on either route, leaves a cancelled mission in all
three (and no outcome of the call it left in). ``taskforce run`` has no scrape: its
result and its log lines agree, and its result is the server's for the same mission.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import wrapt
from prometheus_client.parser import text_string_to_metric_families

from taskforce.api.server import create_app
from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.core.interfaces import ChatMessage
from taskforce.core.interfaces.llm import LLM_ERROR_TYPES
from taskforce.core.interfaces.outcome import MISSION_ERROR_TYPES
from taskforce.core.interfaces.state import AppendResult
from taskforce.errors import LLMProviderError, StateStoreError
from taskforce.infrastructure.llm import ScriptedLLMProvider
from taskforce.infrastructure.state import FileStateStore
from taskforce.observability.logs._logging import configure_logging
from tests.api.conftest import parse_sse
from tests.support.json_lines import JSONLines
from tests.support.live_server import LiveServer, serve
from tests.support.odd_values import RaisingGet, Unrepresentable
from tests.support.own_parts import TableTool, marker, raises, streamed
from tests.support.processes import clean_env

pytestmark = pytest.mark.integration

_DOCS = Path(__file__).resolve().parents[2] / "docs"
_ROUTES = {"execute": "/api/v1/execute", "stream": "/api/v1/execute/stream"}
_FLOWS = ("lean", "legacy")
#: Only a guard against a test that would hang; every wait ends long before it.
_GUARD_SECONDS = 30.0
_TOOL_TIMEOUT_SECONDS = 0.2
_MAX_STEPS = 4
_MAX_CALLS = 2


# -- the parts: tools and a provider of one's own, a state store that fails on demand --


async def _past_the_limit() -> Any:
    await asyncio.sleep(_GUARD_SECONDS)
    return {"success": True, "output": "late"}


async def _swallowing_the_limit() -> Any:
    with contextlib.suppress(asyncio.CancelledError):  # misbehaves on purpose
        await asyncio.sleep(_GUARD_SECONDS)
    return {"success": True, "output": "late"}


def _nested(inner: Any, depth: int = 5000) -> Any:
    """``inner`` inside ``depth`` one-key dicts (deeper than Python's recursion limit)."""
    for _ in range(depth):
        inner = {"a": inner}
    return inner


def _nested_lists(depth: int = 5000) -> list[Any]:
    inner: list[Any] = []
    for _ in range(depth):
        inner = [inner]
    return inner


def _holding_itself(empty: dict[str, Any] | list[Any]) -> Any:
    if isinstance(empty, dict):
        empty["self"] = empty
    else:
        empty.append(empty)
    return {"success": True, "output": empty}


def _proxy(value: Any) -> Any:
    """``value`` behind a proxy that claims its class (as an instrumented object may be)."""
    return wrapt.ObjectProxy(value)


class _Opaque:
    """A value of the tool's own that JSON has no form for."""


#: tool name -> what its ``execute`` returns (called; awaited if a coroutine) or raises.
_TOOLS: dict[str, Callable[[], Any]] = {
    "t_ok": lambda: {"success": True, "output": 1},
    "t_none": lambda: None,
    "t_text": lambda: "text",
    "t_fail": lambda: {"success": False, "error": "x"},
    "t_fail_typed": lambda: {"success": False, "error": "x", "error_type": "QuotaExceeded"},
    "t_fail_reserved": lambda: {"success": False, "error_type": "unknown_tool"},
    "t_value_error": raises(ValueError("bad value")),
    "t_timeout_error": raises(TimeoutError()),
    "t_own_cancellation": raises(asyncio.CancelledError()),
    "t_system_exit": raises(SystemExit(3)),
    "t_past_the_limit": _past_the_limit,
    "t_swallowing_the_limit": _swallowing_the_limit,
    # output JSON cannot hold: nested past the recursion limit, inside itself, no JSON type
    "t_deep_dict": lambda: {"success": True, "output": _nested(1)},
    "t_deep_list": lambda: {"success": True, "output": _nested_lists()},
    "t_deep_failure": lambda: {"success": False, "error": "x", "output": _nested(1)},
    "t_deep_extra_key": lambda: {"success": True, "output": 1, "detail": _nested(1)},
    "t_holding_itself_dict": lambda: _holding_itself({}),
    "t_holding_itself_list": lambda: _holding_itself([]),
    "t_set": lambda: {"success": True, "output": {"a": {1, 2}}},
    "t_bytes": lambda: {"success": True, "output": b"\xff\x00"},
    "t_own_class": lambda: {"success": True, "output": [_Opaque()]},
    # beside a tuple key, which makes the writers write the output again through jsonable
    "t_proxy_of_deep": lambda: {"success": True, "output": {"k": _proxy(_nested(1)), (1,): 2}},
    "t_class_unreadable": lambda: {"success": True, "output": {"k": Unrepresentable(), (1,): 2}},
}


def _text(content: str) -> Callable[[], Any]:
    return lambda: {"success": True, "content": content, "tool_calls": [], "model": "own-1"}


def _asking(tool_calls: Any) -> dict[str, Any]:
    """A successful answer, also a stream's last chunk, asking for ``tool_calls``."""
    return {"success": True, "done": True, "content": None, "tool_calls": tool_calls}


#: marker -> what ``complete`` (and ``generate``, unless in _PLANS) returns or raises.
_ANSWERS: dict[str, Callable[[], Any]] = {
    "none": lambda: None,
    "text": lambda: "text",
    "fail-bare": lambda: {"success": False, "error": "x"},
    "fail-rate-limit": lambda: {"success": False, "error": "x", "error_type": "rate_limit"},
    "fail-made-up-type": lambda: {"success": False, "error": "x", "error_type": "made_up"},
    "unreadable": lambda: RaisingGet(success=False),
    "raise-auth": raises(LLMProviderError("denied", error_type="auth")),
    "raise-value-error": raises(ValueError("bug")),
    "raise-timeout-error": raises(TimeoutError()),
    "raise-own-cancellation": raises(asyncio.CancelledError()),
    "empty": _text(""),
    # text that is no string: a number, bytes (which a record could not hold)
    "number-as-text": lambda: {"success": True, "content": 5, "model": "own-1"},
    "bytes-as-text": lambda: {"success": True, "content": b"hi", "model": "own-1"},
    # a native tool call whose arguments are no JSON object (lean; streamed, as the last
    # chunk); no plan (legacy)
    "args-not-an-object": lambda: {
        "success": True,
        "done": True,
        "content": None,
        "tool_calls": [{"id": "c1", "name": "t_ok", "arguments": "[1, 2]"}],
        "model": "own-1",
    },
    # the same, arguments nested deeper than Python decodes
    "args-nested-too-deep": lambda: {
        "success": True,
        "done": True,
        "content": None,
        "tool_calls": [{"id": "c1", "name": "t_ok", "arguments": "[" * 5000 + "]" * 5000}],
        "model": "own-1",
    },
    # tool calls no flow can run: no list, no dicts in it, a call without a name (both
    # flows; streamed as the last chunk)
    "calls-not-a-list": lambda: _asking(5),
    "calls-text": lambda: _asking("x"),
    "calls-of-numbers": lambda: _asking([5]),
    "call-without-name": lambda: _asking([{"id": "c1", "function": {"name": "t_ok"}}]),
    # more tool calls in one turn than agent.max_tool_calls_per_turn (lean); no plan (legacy)
    "too-many-calls": lambda: {
        "success": True,
        "done": True,
        "content": None,
        "tool_calls": [
            {"id": f"c{n}", "name": "t_ok", "arguments": "{}"} for n in range(_MAX_CALLS + 1)
        ],
        "model": "own-1",
    },
    # the same, arguments decoded by the provider already
    "args-dict-nested-too-deep": lambda: {
        "success": True,
        "done": True,
        "content": None,
        "tool_calls": [{"id": "c1", "name": "t_ok", "arguments": _nested(1)}],
        "model": "own-1",
    },
}
#: marker -> what ``generate`` (the legacy plan) returns; ``complete`` is the scripted one's.
_PLANS: dict[str, Callable[[], Any]] = {"garbage-plan": _text("no plan in sight")}
#: marker -> what ``complete`` returns in a legacy step; ``generate`` is the scripted one's.
_ACTIONS: dict[str, Callable[[], Any]] = {"garbage-action": _text("no action in sight")}
#: marker -> the chunks ``stream`` yields (an exception: raised there).
_STREAMS: dict[str, Callable[[], list[Any]]] = {
    "s-not-text": lambda: [{"content": "x"}, {"content": 5}, {"done": True}],
    "s-not-a-chunk": lambda: [{"content": "x"}, None],
    "s-unreadable": lambda: [{"content": "x"}, RaisingGet(done=True)],
    "s-raises": lambda: [{"content": "x"}, LLMProviderError("x", error_type="server_error")],
    "s-empty": lambda: [{"done": True}],
}


class _OwnProvider(ScriptedLLMProvider):
    """A user's provider: the scripted one, but as ``_ANSWERS`` says for a marked mission."""

    async def complete(self, messages: Sequence[ChatMessage], *args: Any, **kwargs: Any) -> Any:
        texts = [m.get("content") for m in messages]
        for table in (_ANSWERS, _ACTIONS):
            if (case := marker(texts, table)) is not None:
                return table[case]()
        return await super().complete(messages, *args, **kwargs)

    async def generate(self, prompt: str, *args: Any, **kwargs: Any) -> Any:
        for table in (_ANSWERS, _PLANS):
            if (case := marker([prompt], table)) is not None:
                return table[case]()
        return await super().generate(prompt, *args, **kwargs)

    async def stream(
        self, messages: Sequence[ChatMessage], *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        texts = [m.get("content") for m in messages]
        case = marker(texts, _STREAMS)
        if case is None:
            if (answer := marker(texts, _ANSWERS)) is not None:
                # that answer as a stream gives it: a failure raised, the rest one chunk
                chunk = _ANSWERS[answer]()
                if type(chunk) is dict and chunk.get("success") is False:
                    kind = chunk.get("error_type", "other")
                    raise LLMProviderError(chunk["error"], error_type=kind)
                yield chunk
                return
            async for chunk in super().stream(messages, *args, **kwargs):
                yield chunk
            return
        async for chunk in streamed(_STREAMS[case]()):
            yield chunk


#: session id prefix -> what the store raises on the append of that session's record.
_STORE_FAILURES: dict[str, Callable[[], Exception]] = {
    "full-": lambda: StateStoreError("cannot save state: disk full"),
    "bug-": lambda: RuntimeError("/srv/secret broke"),
    "slow-": lambda: TimeoutError("no answer"),
}


class _FailingStore(FileStateStore):
    """The file store, but an append of a session named in _STORE_FAILURES raises."""

    async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
        for prefix, failure in _STORE_FAILURES.items():
            if session_id.startswith(prefix):
                raise failure()
        return await super().append(session_id, record)


# -- the cases and what the docs say their outcome is --

_RETRIED = ("timeout", "rate_limit", "server_error", "connection")


def _cases() -> dict[str, tuple[str, str | None]]:
    """Case name -> (mission, expected error_type; None: completed), in either flow."""
    cases: dict[str, tuple[str, str | None]] = {
        "tool succeeds": ("tool:t_ok {}\nsay done", None),
        "tool returns None": ("tool:t_none {}", "invalid_result"),
        "tool returns text": ("tool:t_text {}", "invalid_result"),
        "tool fails bare": ("tool:t_fail {}", "tool_error"),
        "tool fails typed": ("tool:t_fail_typed {}", "QuotaExceeded"),
        "tool fails as unknown_tool": ("tool:t_fail_reserved {}", "tool_error"),
        "tool raises ValueError": ("tool:t_value_error {}", "ValueError"),
        "tool raises TimeoutError": ("tool:t_timeout_error {}", "timeout"),
        "tool raises its own CancelledError": ("tool:t_own_cancellation {}", "CancelledError"),
        "tool raises SystemExit": ("tool:t_system_exit {}", "SystemExit"),
        "tool runs past its limit": ("tool:t_past_the_limit {}", "timeout"),
        "tool swallows its limit": ("tool:t_swallowing_the_limit {}", "timeout"),
        "tool output nested too deep": ("tool:t_deep_dict {}\nsay done", "invalid_result"),
        "tool output lists nested too deep": ("tool:t_deep_list {}", "invalid_result"),
        "tool failure nested too deep": ("tool:t_deep_failure {}", "invalid_result"),
        "tool result key nested too deep": ("tool:t_deep_extra_key {}", "invalid_result"),
        "tool output dict inside itself": ("tool:t_holding_itself_dict {}\nsay done", None),
        "tool output list inside itself": ("tool:t_holding_itself_list {}\nsay done", None),
        "tool output holds a set": ("tool:t_set {}\nsay done", None),
        "tool output is bytes": ("tool:t_bytes {}\nsay done", None),
        "tool output holds an object of its own": ("tool:t_own_class {}\nsay done", None),
        "tool output holds a proxy of a deep dict": ("tool:t_proxy_of_deep {}\nsay done", None),
        "tool output holds a value whose class cannot be read": (
            "tool:t_class_unreadable {}\nsay done",
            None,
        ),
        "built-in tool refuses": ('tool:calculator {"expression": "1/0"}', "DivisionByZero"),
        "built-in tool, wrong arguments": ('tool:calculator {"expr": "1"}', "InvalidArguments"),
        "built-in tool, path outside": (
            'tool:file_read {"path": "../outside.txt"}',
            "PathOutsideWorkspace",
        ),
        "unknown tool": ("tool:no_such_tool {}\nsay done", None),
        "llm:error": ("llm:error", "bad_request"),
        "unreadable directive": ("llm:fail sometimes", "bad_request"),
        "step limit": ("\n".join(["tool:t_ok {}"] * (_MAX_STEPS + 2)), "step_limit"),
        "own provider returns None": ("odd:none", "invalid_response"),
        "own provider returns text": ("odd:text", "invalid_response"),
        "own provider fails bare": ("odd:fail-bare", "other"),
        "own provider fails rate_limit": ("odd:fail-rate-limit", "rate_limit"),
        "own provider fails made-up type": ("odd:fail-made-up-type", "other"),
        "own provider answers unreadably": ("odd:unreadable", "invalid_response"),
        "own provider answers a number as text": ("odd:number-as-text", "invalid_response"),
        "own provider answers bytes as text": ("odd:bytes-as-text", "invalid_response"),
        "own provider answers tool calls that are no list": (
            "odd:calls-not-a-list",
            "invalid_response",
        ),
        "own provider answers tool calls as text": ("odd:calls-text", "invalid_response"),
        "own provider answers tool calls that are no dicts": (
            "odd:calls-of-numbers",
            "invalid_response",
        ),
        "own provider answers a tool call without a name": (
            "odd:call-without-name",
            "invalid_response",
        ),
        "own provider raises auth": ("odd:raise-auth", "auth"),
        "own provider raises ValueError": ("odd:raise-value-error", "other"),
        "own provider raises TimeoutError": ("odd:raise-timeout-error", "timeout"),
        "own provider raises its own CancelledError": ("odd:raise-own-cancellation", "other"),
    }
    for error_type in LLM_ERROR_TYPES:
        once = None if error_type in _RETRIED else error_type
        cases[f"llm:fail {error_type} once"] = (f"llm:fail {error_type} 1\nsay done", once)
        cases[f"llm:fail {error_type} always"] = (f"llm:fail {error_type} 5\nsay done", error_type)
    return cases


_CASES = _cases()
#: (case, flow) -> the expected error_type of a case whose outcome is each flow's own.
_BY_FLOW: dict[tuple[str, str], str | None] = {
    ("empty answer", "lean"): "empty_answer",
    ("empty answer", "legacy"): "invalid_plan",  # its plan is that empty answer first
    ("unusable plan", "legacy"): "invalid_plan",
    ("unusable plan", "lean"): None,
    ("unusable action", "legacy"): "invalid_action",
    ("unusable action", "lean"): None,
    ("arguments that are no object", "lean"): "InvalidArguments",
    ("arguments that are no object", "legacy"): "invalid_plan",
    ("arguments nested too deep", "lean"): "InvalidArguments",
    ("arguments nested too deep", "legacy"): "invalid_plan",
    ("decoded arguments nested too deep", "lean"): "InvalidArguments",
    ("decoded arguments nested too deep", "legacy"): "invalid_plan",
    ("more tool calls than a turn may ask for", "lean"): "tool_call_limit",
    ("more tool calls than a turn may ask for", "legacy"): "invalid_plan",
}
_FLOW_CASES = {
    "arguments that are no object": "odd:args-not-an-object",
    "arguments nested too deep": "odd:args-nested-too-deep",
    "decoded arguments nested too deep": "odd:args-dict-nested-too-deep",
    "more tool calls than a turn may ask for": "odd:too-many-calls",
    "empty answer": "odd:empty",
    "unusable plan": "odd:garbage-plan",
    "unusable action": "odd:garbage-action",
}
#: Streamed turns: only the lean flow on the stream route streams; elsewhere they complete.
_STREAM_CASES = {
    "stream: text that is no string": ("odd:s-not-text", "invalid_response"),
    "stream: a chunk that is no dict": ("odd:s-not-a-chunk", "invalid_response"),
    "stream: a chunk that cannot be read": ("odd:s-unreadable", "invalid_response"),
    "stream: the provider raises mid-way": ("odd:s-raises", "server_error"),
    "stream: no text, no tool call": ("odd:s-empty", "empty_answer"),
}
#: store failure case -> (session id prefix, the class the mission is failed with)
_STORE_CASES = {
    "store refuses": ("full-", "StateStoreError"),
    "store of one's own raises": ("bug-", "RuntimeError"),
    "store of one's own times out": ("slow-", "TimeoutError"),
}


#: Cases also run without a ``session_id``: one of each kind of outcome.
_SESSIONLESS_CASES = ("tool fails typed", "unknown tool", "llm:fail rate_limit always")


def _matrix() -> list[Any]:
    """Every (case, flow, route) with its mission, session prefix and expected error_type."""
    cells = []
    for flow in _FLOWS:
        for route in _ROUTES:
            for case, (mission, expected) in _CASES.items():
                cells.append(
                    pytest.param(mission, "", flow, route, expected, id=f"{case}-{flow}-{route}")
                )
            for case, mission in _FLOW_CASES.items():
                expected = _BY_FLOW[(case, flow)]
                cells.append(
                    pytest.param(mission, "", flow, route, expected, id=f"{case}-{flow}-{route}")
                )
            for case, (mission, when_streamed) in _STREAM_CASES.items():
                expected = when_streamed if (flow, route) == ("lean", "stream") else None
                cells.append(
                    pytest.param(mission, "", flow, route, expected, id=f"{case}-{flow}-{route}")
                )
            for case, (prefix, name) in _STORE_CASES.items():
                cells.append(
                    pytest.param("say hi", prefix, flow, route, name, id=f"{case}-{flow}-{route}")
                )
            for case in _SESSIONLESS_CASES:
                mission, expected = _CASES[case]
                name = f"{case}, no session-{flow}-{route}"
                cells.append(pytest.param(mission, None, flow, route, expected, id=name))
    return cells


# -- what the docs say: the events' categories, the catalog's labels --


def _documented(page: str, row: str, value: str) -> dict[str, frozenset[str]]:
    """From a table of docs/``page``: each name of a row's first cell (``row``'s first
    group) -> the ``value`` matches of the cell ``row``'s second group captures."""
    text = (_DOCS / page).read_text(encoding="utf-8")
    found: dict[str, frozenset[str]] = {}
    for names, cell in re.findall(row, text, re.M):
        for name in re.findall(r"`([a-z_.]+)`", names):
            found[name] = frozenset(re.findall(value, cell))
    return found


#: Each event of the events table -> the categories it may have.
_CATEGORIES = _documented(
    "logging.md", r"^\| (`[a-z_.]+`(?:, `[a-z_.]+`)*) \| [a-z, ]+ \| ([^|]+) \|", r"`([a-z]+)`"
)
#: Each metric of the catalog -> its label names.
_LABELS = _documented(
    "metrics.md", r"^\| (`taskforce_[a-z_]+`) \| [a-z]+ \| ([^|]+) \|", r"`([a-z_]+)`"
)
#: The counters each mission is checked against.
_COUNTERS = (
    "taskforce_missions_total",
    "taskforce_tool_calls_total",
    "taskforce_tool_failures_total",
    "taskforce_llm_requests_total",
    "taskforce_llm_failures_total",
    "taskforce_llm_retries_total",
    "taskforce_state_errors_total",
    "taskforce_metrics_errors_total",
    "taskforce_http_requests_total",
)


# -- the surfaces: a served container, its JSON log lines, its scrape --


def _settings(root: Path, tool_timeout_seconds: float = _TOOL_TIMEOUT_SECONDS) -> Settings:
    return Settings(
        state_dir=root / "state",
        workspace_dir=root / "workspace",
        agent={
            "tool_timeout_seconds": tool_timeout_seconds,
            "max_steps": _MAX_STEPS,
            "max_tool_calls_per_turn": _MAX_CALLS,
        },
    )


@pytest.fixture(scope="module", name="served")
def fixture_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service with a user's tools, provider and store, on 127.0.0.1; for the module."""
    settings = _settings(tmp_path_factory.mktemp("agreement"))
    container: Container = build_container(
        settings,
        llm_provider=_OwnProvider(),
        state_store=_FailingStore(settings.state_dir),
    )
    for name in _TOOLS:
        container.tool_registry.register(TableTool(name, _TOOLS))
    with serve(create_app(container=container)) as live:
        yield live
    asyncio.run(container.aclose())


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(client: httpx.AsyncClient) -> Samples:
    """The catalog counters of one scrape; their label names must be the documented ones."""
    response = await client.get("/metrics")
    assert 200 == response.status_code
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in _COUNTERS:
                assert _LABELS[sample.name] == set(sample.labels), sample
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _delta(before: Samples, after: Samples, name: str, by: str, **where: str) -> Counter[str]:
    """How much each ``by`` value of counter ``name`` grew, among the series ``where`` says."""
    grown: Counter[str] = Counter()
    for (metric, labels), value in after.items():
        series = dict(labels)
        if metric == name and all(series[k] == v for k, v in where.items()):
            grown[series[by]] += int(value - before.get((metric, labels), 0.0))
    return +grown  # only what grew


async def _mission(
    client: httpx.AsyncClient, route: str, body: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]] | None]:
    """Run a mission on ``route``: its result, and the events of a stream (else None)."""
    response = await client.post(_ROUTES[route], json=body)
    assert 200 == response.status_code, response.text
    if route == "execute":
        return response.json(), None
    events = parse_sse(response.text)
    assert "result" == events[-1][0], events[-3:]
    return events[-1][1]["result"], events


# -- the agreement itself --


def _of(lines: list[dict[str, Any]], event: str, field: str = "error_type") -> list[Any]:
    return [line.get(field) for line in lines if line["event"] == event]


def _check_lines(result: dict[str, Any], lines: list[dict[str, Any]], flow: str) -> None:
    """The mission's lines carry its ids and flow, and each event its documented category."""
    assert lines, "no log line names the mission"
    for line in lines:
        assert (result["session_id"], flow) == (line["session_id"], line["agent_type"]), line
        documented = _CATEGORIES.get(line["event"])
        assert documented is not None, f"{line['event']} is not in docs/logging.md"
        assert line["category"] in documented, line


#: The lines that end a mission, one of them for each.
_ENDS = frozenset({"mission.completed", "mission.failed", "mission.cancelled"})


def _check_mission(
    result: dict[str, Any],
    lines: list[dict[str, Any]],
    grown: Callable[..., Counter[str]],
    flow: str,
) -> None:
    """One end line, one count, one status and error_type for the mission."""
    status, error_type = result["status"], result["error_type"]
    ends = [line for line in lines if line["event"] in _ENDS]
    assert [f"mission.{status}"] == [line["event"] for line in ends]
    assert [status] == _of(lines, "mission.duration.measured", "status")
    assert Counter({status: 1}) == grown("taskforce_missions_total", "status", agent_type=flow)
    if status == "completed":
        assert error_type is None
        return
    assert status == "failed" and error_type, result
    assert [error_type] == [ends[0]["error_type"]]
    assert (len(result["steps"]), result["tool_calls"]) == (
        ends[0]["steps"],
        ends[0]["tool_calls"],
    )


def _check_calls(
    result: dict[str, Any],
    events: list[tuple[str, dict[str, Any]]] | None,
    lines: list[dict[str, Any]],
    grown: Callable[..., Counter[str]],
    flow: str,
) -> None:
    """Every tool and LLM call: its log line, its count, its error_type, the stream's events."""
    tools_failed = _of(lines, "tool.call.failed")
    tools_done = len(_of(lines, "tool.call.completed"))
    assert Counter(tools_failed) == grown(
        "taskforce_tool_failures_total", "error_type", agent_type=flow
    )
    assert +Counter({"success": tools_done, "error": len(tools_failed)}) == grown(
        "taskforce_tool_calls_total", "status", agent_type=flow
    )
    assert result["tool_calls"] == tools_done + len(tools_failed)
    llm_failed = _of(lines, "llm.call.failed")
    retried = _of(lines, "llm.request.retry")
    assert set(llm_failed + retried) <= set(LLM_ERROR_TYPES)
    assert Counter(llm_failed) == grown(
        "taskforce_llm_failures_total", "error_type", agent_type=flow
    )
    assert Counter(retried) == grown("taskforce_llm_retries_total", "error_type", agent_type=flow)
    # and the model each failure and retry is labelled with is the one its line names
    assert Counter(_of(lines, "llm.call.failed", "model")) == grown(
        "taskforce_llm_failures_total", "model", agent_type=flow
    )
    assert Counter(_of(lines, "llm.request.retry", "model")) == grown(
        "taskforce_llm_retries_total", "model", agent_type=flow
    )
    requests = grown("taskforce_llm_requests_total", "status", agent_type=flow)
    assert len(llm_failed) == requests["error"]
    # the steps as the log tells them
    steps = [step["status"] for step in result["steps"]]
    assert steps.count("failed") == len(_of(lines, "agent.step.failed"))
    assert steps.count("completed") == len(_of(lines, "agent.step.completed"))
    if events is not None:
        told = [data for kind, data in events if kind == "tool_result"]
        assert tools_failed == [data["error_type"] for data in told if not data["success"]]
        assert tools_done == sum(1 for data in told if data["success"])


def _check_failure(
    result: dict[str, Any],
    events: list[tuple[str, dict[str, Any]]] | None,
    lines: list[dict[str, Any]],
    grown: Callable[..., Counter[str]],
) -> None:
    """A failed mission's error_type is its failed call's, or a documented mission type."""
    error_type = result["error_type"]
    unsaved = _of(lines, "state.save.failed")
    assert Counter({"append": len(unsaved)}) == +grown("taskforce_state_errors_total", "operation")
    if result["status"] != "failed":
        assert [] == unsaved
        return
    if events is not None:
        assert error_type == [data for kind, data in events if kind == "error"][-1]["error_type"]
    if unsaved:  # the agent ended as it did, then its record could not be saved
        assert [error_type] == unsaved
        return
    assert error_type == _of(lines, "agent.finished")[-1]
    llm_failed = _of(lines, "llm.call.failed")
    tools_failed = _of(lines, "tool.call.failed")
    crashed = _of(lines, "agent.crashed")
    if llm_failed:  # an LLM call failed: it ended the mission, nothing ran after it
        assert error_type == llm_failed[-1]
    elif crashed:  # the agent loop raised: named by its class
        assert [error_type] == crashed
    elif error_type not in MISSION_ERROR_TYPES:  # a tool call failed (fail_on_tool_error)
        assert error_type == tools_failed[-1]


class TestOneOutcomeEverywhere:
    @pytest.mark.parametrize(("mission", "prefix", "flow", "route", "expected"), _matrix())
    async def test_result_log_and_metrics_agree(
        self,
        served: LiveServer,
        lines: JSONLines,
        mission: str,
        prefix: str | None,
        flow: str,
        route: str,
        expected: str | None,
    ) -> None:
        """The mission ends as the docs say; its result, session record, log lines and
        scrape say the same of it and of every call it made. A request without a
        ``session_id`` (prefix ``None``) starts a new session, recorded all the same."""
        body = {"mission": mission, "agent_type": flow}
        if prefix is not None:
            body["session_id"] = f"{prefix}{uuid.uuid4().hex}"
        # a store that refused the record has none to show
        await agree(served.url, lines, body, route, expected, is_recorded=not prefix)


Grown = Callable[..., Counter[str]]


async def agree(
    url: str,
    lines: JSONLines,
    body: dict[str, Any],
    route: str,
    expected: str | None,
    *,
    is_recorded: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]], Grown]:
    """Run the mission ``body`` on ``route`` of the server at ``url`` and check that it
    ends as ``expected`` (an error_type, None: completed) in its result, its session
    record (``is_recorded``), its log lines and the scrape, for it and every call it made.

    Returns:
        Its result, its log lines, and how much a counter grew (``grown(name, by, **where)``).
    """
    async with httpx.AsyncClient(base_url=url, timeout=_GUARD_SECONDS) as client:
        before = await _scrape(client)
        result, events = await _mission(client, route, body)
        after = await _scrape(client)
        record = await client.get(f"/api/v1/sessions/{result['session_id']}")
    status = "completed" if expected is None else "failed"
    assert (status, expected) == (result["status"], result["error_type"]), result
    if is_recorded:
        kept = record.json()["missions"][-1]
        assert (result["mission_id"], status, expected) == (
            kept["mission_id"],
            kept["status"],
            kept["error_type"],
        )
    mine = [line for line in lines.read() if line.get("mission_id") == result["mission_id"]]

    def grown(name: str, by: str, **where: str) -> Counter[str]:
        return _delta(before, after, name, by, **where)

    flow = body["agent_type"]
    _check_lines(result, mine, flow)
    _check_mission(result, mine, grown, flow)
    _check_calls(result, events, mine, grown, flow)
    _check_failure(result, events, mine, grown)
    # Not one fault of the metrics in any case: a chunk the stream proxy cannot read is
    # the call's invalid_response, as the agents say, not a fault of the proxy.
    assert Counter() == grown("taskforce_metrics_errors_total", "stage")
    return result, mine, grown


# -- a client that leaves mid-mission --


@pytest.fixture(scope="module", name="patient")
def fixture_patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The same service, but a tool call may run as long as the guard: a client leaves first."""
    settings = _settings(tmp_path_factory.mktemp("patient"), _GUARD_SECONDS * 2)
    container = build_container(settings, llm_provider=_OwnProvider())
    for name in _TOOLS:
        container.tool_registry.register(TableTool(name, _TOOLS))
    with serve(create_app(container=container)) as live:
        yield live
    asyncio.run(container.aclose())


async def _line_of(lines: JSONLines, session: str, event: str) -> dict[str, Any]:
    """Wait for the first ``event`` line of ``session``; the guard only stops a hang."""
    async with asyncio.timeout(_GUARD_SECONDS):
        while True:
            for line in lines.read():
                if (line.get("session_id"), line["event"]) == (session, event):
                    return line
            await asyncio.sleep(0.01)


async def _leave(
    client: httpx.AsyncClient, route: str, body: dict[str, Any], lines: JSONLines, at: str
) -> None:
    """Start the mission on ``route``; leave once its ``at`` line is logged."""
    if route == "stream":
        async with client.stream("POST", _ROUTES[route], json=body) as response:
            assert 200 == response.status_code
            await _line_of(lines, body["session_id"], at)
        return  # closing the response closes the connection
    request = asyncio.create_task(client.post(_ROUTES[route], json=body))
    try:
        await _line_of(lines, body["session_id"], at)
    finally:
        request.cancel()  # the connection goes with it
        with contextlib.suppress(asyncio.CancelledError):
            await request


#: Where a client leaves its mission: case -> (mission, the line it leaves at).
LEAVING = {
    "in a tool call": ("tool:t_past_the_limit {}", "tool.call.started"),
    "in an LLM call": ("llm:delay 60000\nhi", "mission.started"),
}


class TestAClientThatLeaves:
    @pytest.mark.parametrize("flow", _FLOWS)
    @pytest.mark.parametrize("route", list(_ROUTES))
    @pytest.mark.parametrize(("mission", "at"), list(LEAVING.values()), ids=list(LEAVING))
    async def test_leaves_a_cancelled_mission_everywhere(
        self, patient: LiveServer, flow: str, route: str, mission: str, at: str
    ) -> None:
        """Cancelled in the record, the log and the metrics; the call it was in has no
        outcome anywhere; a plain request that lost its client is a 499."""
        lines = JSONLines()
        configure_logging(fmt="json", stream=lines, level="debug")
        session = uuid.uuid4().hex
        body = {"mission": mission, "agent_type": flow, "session_id": session}
        async with httpx.AsyncClient(base_url=patient.url, timeout=_GUARD_SECONDS) as client:
            before = await _scrape(client)
            async with httpx.AsyncClient(base_url=patient.url, timeout=_GUARD_SECONDS) as leaving:
                await _leave(leaving, route, body, lines, at)
            ended = await _line_of(lines, session, "mission.cancelled")
            served = await _until_counted(client, before, route)
            after = await _scrape(client)
            record = (await client.get(f"/api/v1/sessions/{session}")).json()["missions"][-1]
        assert served
        mine = [line for line in lines.read() if line.get("mission_id") == ended["mission_id"]]
        _check_lines({"session_id": session}, mine, flow)
        assert [] == [line["event"] for line in mine if line["event"] in _OUTCOMES]
        assert ["cancelled"] == _of(mine, "mission.duration.measured", "status")
        assert ("cancelled", "cancelled") == (record["status"], record["error_type"])

        def grown(name: str, by: str, **where: str) -> Counter[str]:
            return _delta(before, after, name, by, **where)

        assert Counter({"cancelled": 1}) == grown("taskforce_missions_total", "status")
        for name in ("taskforce_tool_calls_total", "taskforce_tool_failures_total"):
            assert Counter() == grown(name, "tool_name")
        assert Counter() == grown("taskforce_llm_failures_total", "error_type")
        assert 0 == grown("taskforce_llm_requests_total", "status")["error"]
        left = grown("taskforce_http_requests_total", "status_code", route=_ROUTES["execute"])
        assert (Counter({"499": 1}) if route == "execute" else Counter()) == left
        assert Counter() == grown("taskforce_metrics_errors_total", "stage")


#: What a mission that lost its client has none of: an outcome of a call, an end but its own.
_OUTCOMES = frozenset(
    {
        "tool.call.completed",
        "tool.call.failed",
        "llm.call.failed",
        "mission.completed",
        "mission.failed",
        "agent.finished",
    }
)


async def _until_counted(client: httpx.AsyncClient, before: Samples, route: str) -> bool:
    """Wait until the request that lost its client is counted (after its end): the 499 of
    a plain request; the cancelled mission of a stream, which the proxy counts after the
    executor logged ``mission.cancelled`` (a scrape between the two sees none yet)."""
    name, by, wanted = (
        ("taskforce_missions_total", "status", "cancelled")
        if route == "stream"
        else ("taskforce_http_requests_total", "status_code", "499")
    )
    async with asyncio.timeout(_GUARD_SECONDS):
        while True:
            now = await _scrape(client)
            if _delta(before, now, name, by)[wanted]:
                return True
            await asyncio.sleep(0.01)


# -- taskforce run: the same missions, the same outcomes, its log lines alike --

#: The cases taskforce run can have: the built-in tools and the scripted provider.
_CLI_CASES = {
    **{
        case: _CASES[case]
        for case in (
            "built-in tool refuses",
            "built-in tool, wrong arguments",
            "built-in tool, path outside",
            "unknown tool",
            "llm:error",
            "unreadable directive",
            "llm:fail rate_limit once",
            "llm:fail auth always",
            "llm:fail server_error always",
        )
    },
    "built-in tool runs past its limit": ('tool:sleep {"seconds": 5}', "timeout"),
    "step limit with a built-in tool": (
        "\n".join(['tool:calculator {"expression": "1+1"}'] * (_MAX_STEPS + 2)),
        "step_limit",
    ),
}


async def run_json(root: Path, *args: str, **env: str) -> tuple[int, str, list[Any]]:
    """``taskforce run --json ARGS`` in ``root`` with these ``TASKFORCE_*`` variables: its
    exit code, standard output and JSON log lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskforce",
        "run",
        "--json",
        *args,
        env=clean_env(root, **env),
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(_GUARD_SECONDS * 2):
        out, err = await process.communicate()
    assert process.returncode is not None
    return (
        process.returncode,
        out.decode(),
        [json.loads(line) for line in err.decode().splitlines()],
    )


async def _run(root: Path, mission: str, flow: str, route: str) -> tuple[int, Any, list[Any]]:
    """``taskforce run --json`` (``--stream`` for the stream route): exit code, result or
    events, and its JSON log lines."""
    streamed = ["--stream"] if route == "stream" else []
    code, out, logged = await run_json(
        root,
        "--agent",
        flow,
        *streamed,
        mission,
        TASKFORCE_AGENT__TOOL_TIMEOUT_SECONDS=str(_TOOL_TIMEOUT_SECONDS),
        TASKFORCE_AGENT__MAX_STEPS=str(_MAX_STEPS),
    )
    said = [json.loads(line) for line in out.splitlines()] if streamed else json.loads(out)
    return code, said, logged


def _calls(lines: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The outcomes of a mission's calls, as its log lines tell them (warnings and above)."""
    return {
        event: _of(lines, event)
        for event in ("tool.call.failed", "llm.call.failed", "llm.request.retry", "mission.failed")
    }


class TestTheCommandLine:
    @pytest.mark.parametrize("flow", _FLOWS)
    @pytest.mark.parametrize("route", list(_ROUTES))
    @pytest.mark.parametrize("case", list(_CLI_CASES))
    async def test_run_agrees_with_itself_and_the_server(
        self, served: LiveServer, lines: JSONLines, tmp_path: Path, case: str, flow: str, route: str
    ) -> None:
        """``taskforce run`` ends the mission as the server does; its exit code, result and
        log lines (with its ids) say the same of it and of each failed call."""
        mission, expected = _CLI_CASES[case]
        code, said, logged = await _run(tmp_path, mission, flow, route)
        if route == "stream":
            assert "result" == said[-1]["kind"]
            result, events = said[-1]["result"], [(e["kind"], e) for e in said]
        else:
            result, events = said, None
        status = "completed" if expected is None else "failed"
        assert (status, expected) == (result["status"], result["error_type"])
        assert (0 if status == "completed" else 1) == code
        mine = [line for line in logged if line.get("mission_id") == result["mission_id"]]
        # every other line is the process's own: its ids are on every line of the mission
        others = [line["category"] for line in logged if line not in mine]
        assert set(others) <= _PROCESS_CATEGORIES, others
        if mine:
            _check_lines(result, mine, flow)
        if events is not None:
            told = [
                data["error_type"]
                for kind, data in events
                if kind == "tool_result" and not data["success"]
            ]
            assert told == _of(mine, "tool.call.failed")
        if status == "failed":
            assert [expected] == _of(mine, "mission.failed")
        # the server, for the same mission in the same flow and route
        async with httpx.AsyncClient(base_url=served.url, timeout=_GUARD_SECONDS) as client:
            body = {"mission": mission, "agent_type": flow}
            there, _ = await _mission(client, route, body)
        steps = [(step["status"], step["tool_calls"]) for step in result["steps"]]
        assert (there["status"], there["error_type"], there["tool_calls"]) == (
            result["status"],
            result["error_type"],
            result["tool_calls"],
        )
        assert [(step["status"], step["tool_calls"]) for step in there["steps"]] == steps
        theirs = [line for line in lines.read() if line.get("mission_id") == there["mission_id"]]
        assert _calls(theirs) == _calls(mine)


#: Categories of the lines that belong to no mission.
_PROCESS_CATEGORIES = frozenset({"lifecycle", "http", "metrics"})
