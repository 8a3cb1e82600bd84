"""One outcome per call: the mission result, the log line and the metrics agree on a call.

Through the real container (scripted provider, real executor, proxies, metric set):
each tool call's ``error_type`` is the same in the ``tool_result`` the agent saw,
in ``tool.call.failed`` and in ``taskforce_tool_failures_total``; each failed LLM
call's is the same in ``llm.call.failed`` and in ``taskforce_llm_failures_total``;
and a refused request is never counted as a mission.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import structlog
from structlog.testing import capture_logs

from taskforce.application.container import Container, build_container
from taskforce.config import AgentSettings, Settings
from taskforce.core.domain.prompts import FINAL_STEP_DESCRIPTION, LEGACY_SYSTEM_PROMPT
from taskforce.core.interfaces import (
    current_agent_type,
    current_mission_id,
    current_session_id,
)
from taskforce.core.interfaces.executor import AgentType
from taskforce.core.interfaces.llm import ChatMessage, LLMResult
from taskforce.errors import MissionError
from taskforce.infrastructure.state import FileStateStore
from tests.core.domain.fakes import (
    FakeRegistry,
    QueueLLM,
    finish_action,
    plan,
    text,
    tool_action,
)
from tests.observability.metric_samples import faults, samples, value
from tests.support.held_store import HeldStore
from tests.support.odd_values import NoItems, NoMembership, RaisingGet, Unprintable


class _Tool:
    """A tool whose ``execute`` returns or raises what the test asks for."""

    description = "test tool"
    parameters_schema: dict[str, Any] = {"type": "object", "properties": {}}

    def __init__(self, name: str, outcome: Any) -> None:
        self.name = name
        self.outcome = outcome
        self.seen: list[dict[str, Any]] = []

    async def execute(self, **params: Any) -> Any:
        self.seen.append(
            {
                "session_id": current_session_id(),
                "mission_id": current_mission_id(),
                "agent_type": current_agent_type(),
                "log": structlog.contextvars.get_contextvars(),
            }
        )
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def _with_provider(tmp_path: Path, provider: Any) -> Container:
    """The service's container; its own scripted provider when ``provider`` is None."""
    return build_container(
        Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "workspace"),
        llm_provider=provider,
    )


@pytest.fixture(name="container")
def fixture_container(tmp_path: Path) -> Container:
    return _with_provider(tmp_path, None)


def _failed_logs(
    logs: list[MutableMapping[str, Any]], event: str = "tool.call.failed"
) -> list[Any]:
    """The ``error_type`` of every ``event`` line, in order."""
    return [log["error_type"] for log in logs if log["event"] == event]


def _deep() -> Any:
    """A value nested far past Python's recursion limit."""
    value: Any = "x"
    for _ in range(5000):
        value = {"a": value}
    return value


class TestToolOutcome:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    @pytest.mark.parametrize(
        ("outcome", "error_type"),
        [
            (None, "invalid_result"),
            ("text", "invalid_result"),
            ({"success": False, "error": "x", "error_type": "DivisionByZero"}, "DivisionByZero"),
            ({"success": False, "error": "x"}, "tool_error"),
            (ZeroDivisionError("boom"), "ZeroDivisionError"),
            (TimeoutError(), "timeout"),
            ({"success": False, "error": "x", "error_type": "E" * 300}, "E" * 128),
            (type("Long" + "X" * 200, (Exception,), {})(), ("Long" + "X" * 200)[:128]),
            # a lone surrogate: the label guard makes it "?", and so does everything else
            ({"success": False, "error": "x", "error_type": "bad\ud800x"}, "bad?x"),
            # reserved for a name no tool has: a tool that ran failed like any other
            ({"success": False, "error": "x", "error_type": "unknown_tool"}, "tool_error"),
        ],
    )
    async def test_same_error_type_in_result_log_and_metrics(
        self, container: Container, agent_type: AgentType, outcome: Any, error_type: str
    ) -> None:
        """A failing call has one error_type: in the result fed back, the log and the metrics."""
        container.tool_registry.register(_Tool("odd", outcome))
        with capture_logs() as logs:
            stream = container.executor.execute_mission_streaming("tool:odd {}", agent_type)
            events = [event async for event in stream]
        (tool_result,) = [e.data for e in events if e.kind == "tool_result"]
        assert (False, error_type) == (tool_result["success"], tool_result["error_type"])
        assert [error_type] == _failed_logs(logs)
        assert container.metrics is not None
        labels = {"tool_name": "odd", "agent_type": agent_type}
        assert 1 == value(
            container.metrics, "taskforce_tool_failures_total", error_type=error_type, **labels
        )
        assert 1 == value(container.metrics, "taskforce_tool_calls_total", status="error", **labels)
        assert "failed" == events[-1].result.status  # type: ignore[union-attr]
        # it ended the mission (fail_on_tool_error): the result and its error event say so too
        assert error_type == events[-1].result.error_type  # type: ignore[union-attr]
        assert [error_type] == [e.data["error_type"] for e in events if e.kind == "error"]
        for stage in ("tool", "other"):
            assert 0 == value(container.metrics, "taskforce_metrics_errors_total", stage=stage)

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    @pytest.mark.parametrize(
        "outcome",
        [
            None,
            {"success": True, "output": _deep()},
            {"success": False, "error": "x", "output": _deep()},
        ],
        ids=["None", "deep-output", "deep-failure"],
    )
    async def test_an_invalid_result_is_fed_back_without_fail_on_tool_error(
        self, tmp_path: Path, agent_type: AgentType, outcome: Any
    ) -> None:
        """With ``fail_on_tool_error`` off, an invalid result (None, or one nested too deep
        for JSON) is fed back to the model and the mission goes on to complete; the call is
        the same ``invalid_result`` in the result, the log, the metrics and the record."""
        container = build_container(
            Settings(
                state_dir=tmp_path / "state",
                workspace_dir=tmp_path / "workspace",
                agent=AgentSettings(fail_on_tool_error=False),
            )
        )
        async with container:
            container.tool_registry.register(_Tool("odd", outcome))
            with capture_logs() as logs:
                stream = container.executor.execute_mission_streaming(
                    "tool:odd {}\nsay done", agent_type, session_id="s"
                )
                events = [event async for event in stream]
            state = await container.state_store.load("s") or {}
            assert container.metrics is not None
            failures = value(
                container.metrics,
                "taskforce_tool_failures_total",
                tool_name="odd",
                agent_type=agent_type,
                error_type="invalid_result",
            )
        (told,) = [e.data for e in events if e.kind == "tool_result"]
        assert (False, "invalid_result") == (told["success"], told["error_type"])
        assert "output" not in told
        assert ["invalid_result"] == _failed_logs(logs)
        assert 1 == failures
        result = events[-1].result
        assert result is not None
        assert ("completed", None) == (result.status, result.error_type)
        assert [("completed", None)] == [(r["status"], r["error_type"]) for r in state["missions"]]

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    @pytest.mark.parametrize(
        ("tool", "args", "problem"),
        [
            ("calculator", {"expr": "1+1"}, "missing required argument 'expression'; "),
            ("calculator", {"expression": "1", "x": 1}, "unexpected argument 'x'."),
            ("sleep", {}, "missing required argument 'seconds'."),
            ("file_write", {"path": "a"}, "missing required argument 'content'."),
            ("file_read", {"path": 1}, "argument 'path' must be of type string, got int."),
            ("list_dir", {"dir": "."}, "unexpected argument 'dir'."),
        ],
    )
    async def test_wrong_arguments_of_a_built_in_tool(
        self,
        container: Container,
        agent_type: AgentType,
        tool: str,
        args: dict[str, Any],
        problem: str,
    ) -> None:
        """A built-in tool called with wrong arguments is InvalidArguments in the result, the
        log and the metrics, and its error names the tool and the argument."""
        with capture_logs() as logs:
            mission = f"tool:{tool} {json.dumps(args)}"
            stream = container.executor.execute_mission_streaming(mission, agent_type)
            events = [event async for event in stream]
        (tool_result,) = [e.data for e in events if e.kind == "tool_result"]
        assert (False, "InvalidArguments") == (tool_result["success"], tool_result["error_type"])
        assert tool_result["error"].startswith(f"invalid arguments for tool {tool!r}: ")
        assert problem in tool_result["error"]
        assert ["InvalidArguments"] == _failed_logs(logs)
        assert container.metrics is not None
        assert {(tool, agent_type, "InvalidArguments"): 1} == samples(
            container.metrics, "taskforce_tool_failures_total"
        )
        assert "InvalidArguments" == events[-1].result.error_type  # type: ignore[union-attr]

    async def test_unknown_tool_is_a_counted_failure(self, container: Container) -> None:
        """tool:nosuch is fed back to the model and counted as an unknown_tool failure."""
        with capture_logs() as logs:
            result = await container.executor.execute_mission("tool:nosuch {}\nsay ok", "lean")
        assert "completed" == result.status  # the model's mistake is fed back, not fatal
        assert ["unknown_tool"] == _failed_logs(logs)
        assert container.metrics is not None
        assert 1 == value(
            container.metrics,
            "taskforce_tool_failures_total",
            tool_name="nosuch",
            agent_type="lean",
            error_type="unknown_tool",
        )


#: Arguments a model may send that are no JSON object: as they come from the provider.
_NOT_AN_OBJECT = {
    "a list": "[1, 2]",
    "a string": '"1+1"',
    "a number": "5",
    "null": "null",
    "JSON that does not parse": '{"expression": ',
    "a decoded list": [1, 2],
}


def _nested(levels: int) -> Any:
    """A list ``levels`` deep (itself the first level) around 1."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


class TestTheResultDepthSetting:
    """``agent.max_result_depth`` reaches the tool runner, the tool proxy and the legacy
    parser alike, so a call has one outcome whichever setting is in force."""

    async def _run(
        self, tmp_path: Path, agent_type: AgentType, mission: str, tool: Any, **agent: Any
    ) -> tuple[list[Any], list[Any], dict[tuple[str, ...], Any], dict[tuple[str, ...], Any]]:
        """Run ``mission`` with ``tool`` registered and these ``agent`` settings; return the
        tool results, the failed lines' error types, and the calls and failures counted."""
        settings = Settings(
            state_dir=tmp_path / "state",
            workspace_dir=tmp_path / "workspace",
            agent=AgentSettings(**agent),
        )
        async with build_container(settings) as container:
            container.tool_registry.register(tool)
            with capture_logs() as logs:
                stream = container.executor.execute_mission_streaming(mission, agent_type)
                events = [event async for event in stream]
            assert container.metrics is not None
            calls = samples(container.metrics, "taskforce_tool_calls_total")
            failures = samples(container.metrics, "taskforce_tool_failures_total")
        told = [e.data for e in events if e.kind == "tool_result"]
        return told, _failed_logs(logs), calls, failures

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_a_deeper_result_passes_when_the_setting_allows_it(
        self, tmp_path: Path, agent_type: AgentType
    ) -> None:
        """A result of 121 levels: with the setting at 150 a success, its output whole, in
        the result, the log and the metrics; unset (100), invalid_result in all three."""
        tool = _Tool("deep", {"success": True, "output": _nested(120)})
        told, failed, calls, failures = await self._run(
            tmp_path / "150", agent_type, "tool:deep {}", tool, max_result_depth=150
        )
        assert [(True, _nested(120))] == [(t["success"], t["output"]) for t in told]
        assert ([], {}) == (failed, failures)
        assert {("deep", agent_type, "success"): 1} == calls

        told, failed, calls, failures = await self._run(
            tmp_path / "unset", agent_type, "tool:deep {}", tool
        )
        assert [(False, "invalid_result")] == [(t["success"], t["error_type"]) for t in told]
        assert "nested deeper than 100 levels (agent.max_result_depth)" in told[0]["error"]
        assert ["invalid_result"] == failed
        assert {("deep", agent_type, "invalid_result"): 1} == failures

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_deeper_arguments_reach_the_tool_when_the_setting_allows_them(
        self, tmp_path: Path, agent_type: AgentType
    ) -> None:
        """Arguments of 121 levels (a legacy reply of 122): with the setting at 150 the tool
        gets them; unset (100) they are refused before it runs (lean: InvalidArguments;
        legacy: the reply is unreadable, so no call is made)."""
        tool = _Tool("deep", {"success": True, "output": 1})
        mission = f"tool:deep {json.dumps({'x': _nested(120)})}"
        told, failed, _, _ = await self._run(
            tmp_path / "150", agent_type, mission, tool, max_result_depth=150
        )
        assert ([True], []) == ([t["success"] for t in told], failed)
        assert 1 == len(tool.seen)

        told, failed, _, failures = await self._run(tmp_path / "unset", agent_type, mission, tool)
        assert 1 == len(tool.seen)  # not called again
        if agent_type == "lean":
            assert ["InvalidArguments"] == [t["error_type"] for t in told] == failed
            assert {("deep", "lean", "InvalidArguments"): 1} == failures
        else:
            assert ([], [], {}) == (told, failed, failures)


def _one_call(name: str, arguments: Any) -> LLMResult:
    """An answer with one native tool call, its arguments as the provider hands them over."""
    call = {"id": "c1", "name": name, "arguments": arguments}
    return cast(LLMResult, {"success": True, "content": None, "tool_calls": [call]})


class TestArgumentsThatAreNoObject:
    @pytest.mark.parametrize("arguments", _NOT_AN_OBJECT.values(), ids=_NOT_AN_OBJECT.keys())
    async def test_lean_counts_the_refused_call(self, tmp_path: Path, arguments: Any) -> None:
        """A native tool call whose arguments are no JSON object is InvalidArguments in the
        result fed back, in tool.call.failed and in both tool call metrics."""
        llm = QueueLLM(complete=[_one_call("calculator", arguments)])
        container = _with_provider(tmp_path, llm)
        with capture_logs() as logs:
            stream = container.executor.execute_mission_streaming("add", "lean")
            events = [event async for event in stream]
        (tool_result,) = [e.data for e in events if e.kind == "tool_result"]
        assert (False, "InvalidArguments") == (tool_result["success"], tool_result["error_type"])
        assert "must be a JSON object" in tool_result["error"]
        assert ["InvalidArguments"] == _failed_logs(logs)
        assert container.metrics is not None
        assert {("calculator", "lean", "InvalidArguments"): 1} == samples(
            container.metrics, "taskforce_tool_failures_total"
        )
        assert {("calculator", "lean", "error"): 1} == samples(
            container.metrics, "taskforce_tool_calls_total"
        )
        assert ("failed", "InvalidArguments", 1) == (
            events[-1].result.status,  # type: ignore[union-attr]
            events[-1].result.error_type,  # type: ignore[union-attr]
            events[-1].result.tool_calls,  # type: ignore[union-attr]
        )
        assert {} == faults(container.metrics)

    @pytest.mark.parametrize("metrics", [True, False], ids=["metrics on", "metrics off"])
    async def test_a_tool_of_ones_own_is_told_either_way(
        self, tmp_path: Path, metrics: bool
    ) -> None:
        """A tool with its own call_refused hook gets the refused result, with or without
        the metrics proxy in between."""

        class _Listening(_Tool):
            def call_refused(self, result: Any) -> None:
                told.append(result)

        told: list[Any] = []
        llm = QueueLLM(complete=[_one_call("odd", "[1]")])
        container = build_container(
            Settings(
                state_dir=tmp_path / "state",
                workspace_dir=tmp_path / "workspace",
                metrics={"enabled": metrics},
            ),
            llm_provider=llm,
        )
        container.tool_registry.register(_Listening("odd", {"success": True, "output": 1}))
        result = await container.executor.execute_mission("go", "lean")
        assert ("failed", "InvalidArguments") == (result.status, result.error_type)
        assert ["InvalidArguments"] == [refused["error_type"] for refused in told]

    # "args": null is read as no arguments (a call the tool itself judges), so left out here
    @pytest.mark.parametrize(
        "arguments",
        [value for key, value in _NOT_AN_OBJECT.items() if key != "null"],
        ids=[key for key in _NOT_AN_OBJECT if key != "null"],
    )
    async def test_legacy_refuses_the_action_and_calls_nothing(
        self, tmp_path: Path, arguments: Any
    ) -> None:
        """A legacy action whose args are no JSON object is an unreadable action, not a
        tool call: no tool.call.* line, no tool call counted, the mission invalid_action."""
        action = json.dumps({"action": "tool_call", "tool": "calculator", "args": arguments})
        llm = QueueLLM(complete=[text(action), text(action)], generate=[plan("add")])
        container = _with_provider(tmp_path, llm)
        with capture_logs() as logs:
            result = await container.executor.execute_mission("add", "legacy")
        assert ("failed", "invalid_action", 0) == (
            result.status,
            result.error_type,
            result.tool_calls,
        )
        assert [] == [log for log in logs if log["event"].startswith("tool.call.")]
        assert container.metrics is not None
        for name in ("taskforce_tool_calls_total", "taskforce_tool_failures_total"):
            assert {} == samples(container.metrics, name)
        assert {} == faults(container.metrics)


class _Swallowing:
    """A tool that catches the cancellation of its time limit, then returns or raises."""

    name = "swallow"
    description = "test tool"
    parameters_schema: dict[str, Any] = {"type": "object", "properties": {}}

    def __init__(self, then: Any) -> None:
        self.then = then

    async def execute(self, **params: Any) -> Any:
        # a misbehaving tool: the time limit's cancellation is swallowed
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        if isinstance(self.then, BaseException):
            raise self.then
        return self.then


class TestSwallowedTimeout:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    @pytest.mark.parametrize(
        "then", [{"success": True, "output": 1}, ValueError("late")], ids=["returns", "raises"]
    )
    async def test_is_a_timeout_everywhere(
        self, tmp_path: Path, agent_type: AgentType, then: Any
    ) -> None:
        """A tool that outlives its limit by catching the cancellation timed out, in all three."""
        container = build_container(
            Settings(
                state_dir=tmp_path / "state",
                workspace_dir=tmp_path / "workspace",
                agent=AgentSettings(tool_timeout_seconds=0.05),
            )
        )
        container.tool_registry.register(_Swallowing(then))
        with capture_logs() as logs:
            stream = container.executor.execute_mission_streaming("tool:swallow {}", agent_type)
            events = [event async for event in stream]
        (tool_result,) = [e.data for e in events if e.kind == "tool_result"]
        assert (False, "timeout") == (tool_result["success"], tool_result["error_type"])
        assert ["timeout"] == _failed_logs(logs)
        assert container.metrics is not None
        assert {("swallow", agent_type, "timeout"): 1} == samples(
            container.metrics, "taskforce_tool_failures_total"
        )
        assert {("swallow", agent_type, "error"): 1} == samples(
            container.metrics, "taskforce_tool_calls_total"
        )
        assert "timeout" == events[-1].result.error_type  # type: ignore[union-attr]
        assert {} == faults(container.metrics)


class _Provider:
    """A provider whose calls all return (or stream) what the test asks for."""

    model = "odd-1"

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    async def complete(self, messages: Any, model: Any = None, **kwargs: Any) -> Any:
        return self.outcome

    async def generate(self, prompt: str, context: Any = None, model: Any = None) -> Any:
        return self.outcome


class _StreamingProvider(_Provider):
    """A provider whose stream yields one text chunk, then what the test asks for."""

    async def stream(self, messages: Any, model: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        yield {"content": "hel"}
        yield self.outcome


class TestLLMOutcome:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    @pytest.mark.parametrize(
        ("outcome", "error_type"),
        [
            (None, "invalid_response"),
            ("text", "invalid_response"),
            ({"success": "yes", "content": "hi"}, "invalid_response"),
            ({"success": False, "error": "slow down", "error_type": "rate_limit"}, "rate_limit"),
            ({"success": False, "error": "x", "error_type": "no_such_type"}, "other"),
            ({"success": False, "error": "x"}, "other"),
            # a mapping of the provider's own that cannot be read, failed or not
            (RaisingGet(success=False, error_type="auth"), "invalid_response"),
            (RaisingGet(success=True, content="hi"), "invalid_response"),
            # a success whose text is no string, as a streamed text delta that is none
            ({"success": True, "content": 5, "tool_calls": []}, "invalid_response"),
            ({"success": True, "content": b"hi", "tool_calls": []}, "invalid_response"),
            ({"success": True, "content": ["hi"], "tool_calls": []}, "invalid_response"),
        ],
    )
    async def test_same_error_type_in_log_and_metrics(
        self, tmp_path: Path, agent_type: AgentType, outcome: Any, error_type: str
    ) -> None:
        """A failed LLM call has one error_type in the log and the metrics, and no fault."""
        container = _with_provider(tmp_path, _Provider(outcome))
        with capture_logs() as logs:
            result = await container.executor.execute_mission("say hi", agent_type)
        assert "failed" == result.status
        assert error_type == result.error_type
        assert [error_type] == _failed_logs(logs, "llm.call.failed")
        (mission_failed,) = [log for log in logs if log["event"] == "mission.failed"]
        assert error_type == mission_failed["error_type"]
        assert container.metrics is not None
        assert {("odd-1", agent_type, error_type): 1} == samples(
            container.metrics, "taskforce_llm_failures_total"
        )
        assert [("odd-1", agent_type, "error")] == [
            (model, agent, status)
            for (model, agent, _, status) in samples(
                container.metrics, "taskforce_llm_requests_total"
            )
        ]
        assert {} == faults(container.metrics)
        assert "metrics.fault" not in [log["event"] for log in logs]

    @pytest.mark.parametrize(
        "last",
        [
            None,
            "text",
            42,
            # a text delta that is no string (a list of content parts, say)
            {"content": 5},
            {"content": [{"type": "text", "text": "lo"}]},
            # a chunk of the provider's own whose get raises, text or last
            RaisingGet(content="lo"),
            RaisingGet(done=True),
        ],
    )
    async def test_streamed_chunk_that_is_not_a_dict(self, tmp_path: Path, last: Any) -> None:
        """A stream yielding a non-dict, a chunk that cannot be read or a text delta that is
        no string fails the call as invalid_response, everywhere alike."""
        container = _with_provider(tmp_path, _StreamingProvider(last))
        with capture_logs() as logs:
            events = [e async for e in container.executor.execute_mission_streaming("say hi")]
        assert "failed" == events[-1].result.status  # type: ignore[union-attr]
        assert "invalid_response" == events[-1].result.error_type  # type: ignore[union-attr]
        assert ["invalid_response"] == _failed_logs(logs, "llm.call.failed")
        assert container.metrics is not None
        assert {("odd-1", "lean", "invalid_response"): 1} == samples(
            container.metrics, "taskforce_llm_failures_total"
        )
        assert 1 == value(
            container.metrics,
            "taskforce_llm_requests_total",
            model="odd-1",
            agent_type="lean",
            operation="stream",
            status="error",
        )
        assert {} == faults(container.metrics)

    @pytest.mark.parametrize("last", [NoMembership(done=True), NoItems(done=True, model="odd-1")])
    async def test_a_last_chunk_read_with_get_alone(self, tmp_path: Path, last: Any) -> None:
        """A last chunk whose ``in`` or ``[]`` raises, but whose get answers, is read as the
        stream proxy reads it: the turn succeeds in the result, the log and the metrics."""
        container = _with_provider(tmp_path, _StreamingProvider(last))
        with capture_logs() as logs:
            events = [e async for e in container.executor.execute_mission_streaming("say hi")]
        result = events[-1].result
        assert result is not None
        assert ("completed", "hel") == (result.status, result.final_message)
        assert [] == _failed_logs(logs, "llm.call.failed")
        assert container.metrics is not None
        assert {} == samples(container.metrics, "taskforce_llm_failures_total")
        assert [("lean", "stream", "success")] == [
            (agent, operation, status)
            for (_, agent, operation, status) in samples(
                container.metrics, "taskforce_llm_requests_total"
            )
        ]


async def _blank(messages: Sequence[ChatMessage]) -> LLMResult:
    """No answer, in the form of the flow that asks: empty text, or a blank finish action."""
    is_legacy = (messages[0]["content"] or "").startswith(LEGACY_SYSTEM_PROMPT)
    return finish_action(" ") if is_legacy else text("")


#: A lean answer with two tool calls in one turn.
_TWO_CALLS = cast(
    LLMResult,
    {
        "success": True,
        "content": None,
        "tool_calls": [
            {"id": f"c{i}", "name": "calculator", "arguments": {"expression": "1"}} for i in (1, 2)
        ],
    },
)


def _failing_container(tmp_path: Path, kind: str) -> tuple[Container, str]:
    """A container whose next mission fails as ``kind`` says, and the mission to send it."""
    settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "workspace")
    provider: QueueLLM | None = None
    mission = "say hi"
    if kind == "step_limit":
        settings = settings.model_copy(update={"agent": AgentSettings(max_steps=1)})
        mission = 'tool:calculator {"expression": "1+1"}\nsay hi'
    elif kind == "StateCorruptedError":
        settings.state_dir.mkdir(parents=True)
        (settings.state_dir / "s.json").write_text("{not json")
    elif kind == "empty_answer":  # lean: no text; legacy: a blank final answer
        provider = QueueLLM([_blank] * 2, generate=[plan(FINAL_STEP_DESCRIPTION)] * 2)
    elif kind == "invalid_plan":
        provider = QueueLLM(generate=[text("no plan")] * 2)
    elif kind == "invalid_action":
        provider = QueueLLM([text("nope")] * 4, generate=[plan("x")] * 2)
    elif kind == "tool_call_limit":
        settings = settings.model_copy(update={"agent": AgentSettings(max_tool_calls_per_turn=1)})
        provider = QueueLLM([_TWO_CALLS] * 2)
    elif kind == "step_turn_limit":
        provider = QueueLLM([tool_action("calculator", {"expression": "1"})] * 16, [plan("x")] * 2)
    registry = None
    if kind in _CRASHES:  # a tool registry of one's own that raises: the agent raises
        registry = _BrokenRegistry(_Tool("x", {"success": True, "output": 1}), _CRASHES[kind])
        mission = "tool:x {}"
    return build_container(settings, llm_provider=provider, tool_registry=registry), mission


#: What a tool registry of one's own raises in the kind of failure named by its class:
#: a TimeoutError too, which no failed call caused (``timeout`` would say one did).
#: An exception whose message cannot be read is named by its class all the same.
_CRASHES: dict[str, type[Exception]] = {
    "RuntimeError": RuntimeError,
    "TimeoutError": TimeoutError,
    "Unprintable": Unprintable,
}


class _BrokenRegistry(FakeRegistry):
    """A tool registry of one's own with a bug: looking a tool up raises ``raised``."""

    def __init__(self, tool: Any, raised: type[Exception]) -> None:
        super().__init__(tool)
        self.raised = raised

    def get(self, name: str) -> Any:
        raise self.raised("a bug")


class TestMissionFailureOutcome:
    @pytest.mark.parametrize(
        ("agent_type", "kind"),
        [
            ("lean", "step_limit"),
            ("legacy", "step_limit"),
            ("lean", "StateCorruptedError"),
            ("legacy", "StateCorruptedError"),
            ("lean", "empty_answer"),
            ("legacy", "empty_answer"),
            ("legacy", "invalid_plan"),
            ("legacy", "invalid_action"),
            ("legacy", "step_turn_limit"),
            ("lean", "tool_call_limit"),
            ("lean", "RuntimeError"),
            ("legacy", "RuntimeError"),
            ("lean", "TimeoutError"),
            ("legacy", "TimeoutError"),
            ("lean", "Unprintable"),
            ("legacy", "Unprintable"),
        ],
    )
    async def test_a_failed_mission_has_one_error_type(
        self, tmp_path: Path, agent_type: AgentType, kind: str
    ) -> None:
        """Every way a mission fails gives it an error_type: in its result, in the stream's
        last error event and result, on mission.failed and in its session record alike."""
        container, mission = _failing_container(tmp_path, kind)
        with capture_logs() as logs:
            result = await container.executor.execute_mission(mission, agent_type, "s")
            events = [
                e
                async for e in container.executor.execute_mission_streaming(
                    mission, agent_type, "s"
                )
            ]
        streamed = events[-1].result
        assert streamed is not None
        errors = [e.data["error_type"] for e in events if e.kind == "error"]
        failed = [log["error_type"] for log in logs if log["event"] == "mission.failed"]
        assert ("failed", kind) == (result.status, result.error_type)
        assert ("failed", kind, kind) == (streamed.status, streamed.error_type, errors[-1])
        assert [kind, kind] == failed
        if kind in _CRASHES:
            # the step it crashed in is kept, failed with the mission's error, as logged
            error = f"the mission stopped unexpectedly ({kind})"
            assert error == result.error
            assert [("failed", error)] == [(step.status, step.outcome) for step in result.steps]
            crashed = [log["error_type"] for log in logs if log["event"] == "agent.crashed"]
            assert [kind, kind] == crashed
        if kind != "StateCorruptedError":
            state = await container.state_store.load("s") or {}
            assert [kind, kind] == [record["error_type"] for record in state["missions"]]


class TestStreamLeftEarly:
    @pytest.mark.parametrize("answer", ["say hi", 'tool:calculator {"expression": "6*7"}'])
    async def test_retries_before_the_first_text_are_counted(
        self, tmp_path: Path, answer: str
    ) -> None:
        """A client gone while the model still thinks: the retry it logged is counted too."""
        container = build_container(
            Settings(
                state_dir=tmp_path / "state",
                workspace_dir=tmp_path / "workspace",
                llm={"scripted_first_chunk_delay_ms": 5000},
            )
        )
        with capture_logs() as logs:
            stream = container.executor.execute_mission_streaming(
                f"llm:fail rate_limit\n{answer}", "lean"
            )
            async for event in stream:
                if event.kind == "step_started":
                    break  # the client goes away while the first text is still due
            await stream.aclose()
        logged = [log["error_type"] for log in logs if log["event"] == "llm.request.retry"]
        assert ["rate_limit"] == logged
        assert container.metrics is not None
        assert {("scripted-1", "lean", "rate_limit"): 1} == samples(
            container.metrics, "taskforce_llm_retries_total"
        )
        assert 1 == value(
            container.metrics, "taskforce_missions_total", agent_type="lean", status="cancelled"
        )


def _assert_one_mission_ended(
    container: Container, logs: list[MutableMapping[str, Any]], status: str
) -> None:
    """One lean mission counted and logged with ``status``, none counted or logged cancelled."""
    assert container.metrics is not None
    counted = {
        s: value(container.metrics, "taskforce_missions_total", agent_type="lean", status=s)
        for s in ("completed", "failed", "cancelled")
    }
    assert 1 == counted[status] == sum(counted.values())
    ended = [log["event"] for log in logs if log["event"].startswith("mission.")]
    assert f"mission.{status}" in ended and "mission.cancelled" not in ended
    assert 0 == value(container.metrics, "taskforce_missions_in_progress", agent_type="lean")


class TestStreamLeftAfterTheEnd:
    @pytest.mark.parametrize(
        ("mission", "status"), [("say hi", "completed"), ("llm:fail auth\nsay hi", "failed")]
    )
    async def test_the_mission_counts_as_it_ended(
        self, container: Container, mission: str, status: str
    ) -> None:
        """A client gone after the last answer but before the result event: not cancelled.

        The mission ended (its record is saved); the metrics, the log and the record all
        say how, though nobody read its result event.
        """
        with capture_logs() as logs:
            stream = container.executor.execute_mission_streaming(mission, "lean")
            async for event in stream:
                if event.kind in ("final_answer", "error"):
                    break  # the client goes away before the result event
            await stream.aclose()
        _assert_one_mission_ended(container, logs, status)


class _SlowAppendStore(FileStateStore):
    """The container's file store, whose ``append`` holds a mission's record back a moment
    (a subclass: a ``__getattr__`` wrapper is no ``StateStoreProtocol`` from Python 3.12 on)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path / "state")
        self.appending = asyncio.Event()

    async def append(self, session_id: str, record: Any) -> Any:
        self.appending.set()
        await asyncio.sleep(0.05)
        return await super().append(session_id, record)


class TestStreamCancelledWhileRecording:
    @pytest.mark.parametrize(
        ("mission", "status"), [("say hi", "completed"), ("llm:fail auth\nsay hi", "failed")]
    )
    async def test_the_mission_counts_as_its_record_says(
        self, tmp_path: Path, mission: str, status: str
    ) -> None:
        """A consumer cancelled again and again (an anyio cancel scope, as Starlette's
        streaming response uses) while the mission writes its record: the metrics say
        what the record and the log say, not ``cancelled``, and so does the stream, whose
        last event is the result."""
        import anyio

        store = _SlowAppendStore(tmp_path)
        container = build_container(
            Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "workspace"),
            state_store=store,
        )
        scope = anyio.CancelScope()
        kinds: list[str] = []

        async def consume() -> None:
            with scope:
                stream = container.executor.execute_mission_streaming(mission, "lean")
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        kinds.append(event.kind)

        class CountedTask(asyncio.Task[None]):
            cancels = 0

            def cancel(self, msg: Any = None) -> bool:
                CountedTask.cancels += 1
                return super().cancel(msg)

        with capture_logs() as logs:
            consumer = CountedTask(consume())
            await store.appending.wait()  # the mission ended; its record is being written
            scope.cancel()
            await consumer
        # The wait for the record is shielded from the scope: anyio does not cancel the
        # consumer again on every turn of the loop (hundreds of times in 0.05 s).
        assert CountedTask.cancels <= 2
        _assert_one_mission_ended(container, logs, status)
        assert "result" == kinds[-1]
        (session,) = (tmp_path / "state").glob("*.json")
        assert f'"status": "{status}"' in session.read_text(encoding="utf-8")


def _held_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[HeldStore, Container]:
    """A container on a held store, its missions waiting at most 0.05 s for their record."""
    from taskforce.application import executor as executor_module

    monkeypatch.setattr(executor_module, "RECORD_SECONDS", 0.05)
    store = HeldStore(tmp_path / "state")
    container = build_container(
        Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "workspace"),
        state_store=store,
    )
    return store, container


class TestCancelledWhileRecordingPastTheBound:
    async def test_the_mission_ends_cancelled_everywhere(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Cancelled while its result's record is written by a store slower than
        RECORD_SECONDS: the mission stops waiting and ends cancelled, in what the caller
        gets, the log and the metrics, once each; the write goes on and lands later."""
        store, container = _held_container(tmp_path, monkeypatch)
        with capture_logs() as logs:
            mission = asyncio.create_task(container.executor.execute_mission("say hi", "lean"))
            await store.appending.wait()  # the agent is done; its record is being written
            mission.cancel()
            try:
                # a hang guard, not a timing: without the bound this waits for the store
                await asyncio.wait([mission], timeout=10)
                assert mission.cancelled()
                ended = [log["event"] for log in logs if log["event"].startswith("mission.")]
            finally:
                store.released.set()
            await store.landed.wait()  # the write went on, and lands
        (session,) = (tmp_path / "state").glob("*.json")
        assert '"status": "completed"' in session.read_text(encoding="utf-8")
        assert ["mission.started", "mission.cancelled", "mission.duration.measured"] == ended
        assert ended == [log["event"] for log in logs if log["event"].startswith("mission.")]
        (late,) = [log for log in logs if log["event"] == "state.save.late"]
        assert "completed" == late["status"]  # what the record that lands says
        assert container.metrics is not None
        counted = {
            s: value(container.metrics, "taskforce_missions_total", agent_type="lean", status=s)
            for s in ("completed", "failed", "cancelled")
        }
        assert {"completed": 0, "failed": 0, "cancelled": 1} == counted


class TestClosingWithRecordsUnderWay:
    async def test_a_write_its_mission_stopped_waiting_for_is_waited_for(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A mission that stopped waiting for its record (state.save.late): closing the
        container waits for that write (within its own bound) before the store closes,
        so the record lands, as the log line said it might."""
        from taskforce.application import executor as executor_module

        store, container = _held_container(tmp_path, monkeypatch)
        with capture_logs() as logs:
            mission = asyncio.create_task(container.executor.execute_mission("say hi", "lean"))
            await store.appending.wait()  # the agent is done; its record is being written
            mission.cancel()
            await asyncio.wait([mission])  # it ended cancelled; its write goes on
            monkeypatch.setattr(executor_module, "RECORD_SECONDS", 60.0)  # a hang guard
            closing = asyncio.create_task(container.aclose())
            for _ in range(20):  # turns of the loop for a close that would not wait
                await asyncio.sleep(0)
            store.released.set()
            await closing
        events = [log["event"] for log in logs]
        assert "state.save.late" in events
        assert not {"state.save.failed", "state.save.abandoned"} & set(events)
        (session,) = (tmp_path / "state").glob("*.json")
        assert '"status": "completed"' in session.read_text(encoding="utf-8")

    async def test_a_cancelled_record_that_waits_for_its_session_is_written(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A mission cancelled while it waited for its session (another mission of it was
        saving) records ``cancelled`` once that one is done: closing the container waits
        for that write rather than cancel it, so both records land."""
        from taskforce.application import executor as executor_module

        monkeypatch.setattr(executor_module, "RECORD_SECONDS", 60.0)  # a hang guard
        store = HeldStore(tmp_path / "state")
        container = build_container(
            Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "workspace"),
            state_store=store,
        )
        executor = container.executor
        with capture_logs() as logs:
            first = asyncio.create_task(executor.execute_mission("say hi", session_id="one"))
            await store.appending.wait()  # it holds the session while its record is held
            second = asyncio.create_task(executor.execute_mission("say hi", session_id="one"))
            for _ in range(20):  # turns of the loop: it waits for the session's lock
                await asyncio.sleep(0)
            second.cancel()
            await asyncio.wait([second])
            closing = asyncio.create_task(container.aclose())
            for _ in range(20):  # turns of the loop for a close that would cancel that write
                await asyncio.sleep(0)
            store.released.set()
            await asyncio.gather(first, closing)
        assert "state.save.abandoned" not in [log["event"] for log in logs]
        saved = json.loads((tmp_path / "state" / "one.json").read_text(encoding="utf-8"))
        assert ["completed", "cancelled"] == [r["status"] for r in saved["missions"]]

    async def test_a_write_past_the_bound_is_given_up_and_logged(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write still under way when closing has waited RECORD_SECONDS is given up:
        cancelled, and logged state.save.abandoned with its session, mission and status."""
        store, container = _held_container(tmp_path, monkeypatch)  # never released
        with capture_logs() as logs:
            mission = asyncio.create_task(
                container.executor.execute_mission(
                    "say hi", "lean", session_id="held", mission_id="m1"
                )
            )
            await store.appending.wait()
            mission.cancel()
            await asyncio.wait([mission])
            await container.aclose()
        (abandoned,) = [log for log in logs if log["event"] == "state.save.abandoned"]
        assert ("warning", "state") == (abandoned["log_level"], abandoned["category"])
        assert ("held", "m1", "completed") == (
            abandoned["session_id"],
            abandoned["mission_id"],
            abandoned["status"],
        )
        assert [] == list((tmp_path / "state").glob("*.json"))


class TestMissionContext:
    async def test_one_set_of_ids_everywhere(self, container: Container) -> None:
        """The ids the executor made are the ones tools, logs and the result see; reset after."""
        tool = _Tool("probe", {"success": True, "output": 1})
        container.tool_registry.register(tool)
        result = await container.executor.execute_mission("tool:probe {}", "legacy")
        (seen,) = tool.seen
        ids = {"session_id": result.session_id, "mission_id": result.mission_id}
        assert ids | {"agent_type": "legacy"} == {
            k: seen[k] for k in ("session_id", "mission_id", "agent_type")
        }
        assert ids | {"agent_type": "legacy"} == seen["log"]
        assert 32 == len(result.session_id) == len(result.mission_id)
        assert (None, None, "none") == (
            current_session_id(),
            current_mission_id(),
            current_agent_type(),
        )
        assert {} == structlog.contextvars.get_contextvars()


def _taskforce_lines(exposition: bytes) -> list[bytes]:
    """The exposition without the process families, which change on their own (CPU, GC)."""
    return [line for line in exposition.splitlines() if b"taskforce_" in line]


class TestRefusedRequests:
    @pytest.mark.parametrize(
        "request_args",
        [
            {"mission": " \n\t "},
            {"mission": "\u200b\ufeff\x00 "},
            {"mission": ""},
            {"mission": "go", "agent_type": "bogus"},
            {"mission": "go", "session_id": "../escape"},
            {"mission": "go", "session_id": ""},
        ],
    )
    async def test_refused_request_is_not_a_mission(
        self, container: Container, request_args: dict[str, Any]
    ) -> None:
        """A refused request raises MissionError and leaves the mission series untouched."""
        assert container.metrics is not None
        before = _taskforce_lines(container.metrics.render())
        with pytest.raises(MissionError):
            await container.executor.execute_mission(**request_args)
        with pytest.raises(MissionError):
            async for _ in container.executor.execute_mission_streaming(**request_args):
                pass
        for agent_type in ("lean", "legacy"):
            assert 0 == value(
                container.metrics, "taskforce_missions_in_progress", agent_type=agent_type
            )
            for status in ("completed", "failed", "cancelled"):
                assert 0 == value(
                    container.metrics,
                    "taskforce_missions_total",
                    agent_type=agent_type,
                    status=status,
                )
        assert before == _taskforce_lines(container.metrics.render())


class TestScriptedDrillsCountOncePerFlow:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    @pytest.mark.parametrize(
        "mission",
        [
            "llm:fail rate_limit\nsay hi",
            'tool:calculator {"expression": "1+1"}\nllm:fail rate_limit\nsay hi',
        ],
    )
    async def test_one_fail_line_is_one_retry_in_either_flow(
        self, container: Container, agent_type: AgentType, mission: str
    ) -> None:
        """One llm:fail line fails one call's first attempt, whichever flow runs it."""
        result = await container.executor.execute_mission(mission, agent_type)
        assert "completed" == result.status
        assert container.metrics is not None
        retries = sum(
            count
            for labels, count in samples(container.metrics, "taskforce_llm_retries_total").items()
            if labels[1] == agent_type and labels[2] == "rate_limit"
        )
        assert 1 == retries
