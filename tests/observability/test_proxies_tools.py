"""ToolProxy and ToolRegistryProxy: parity with the plain objects, and what each call records."""

from __future__ import annotations

import asyncio
import copy
import inspect
import pickle
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.core.domain._tool_runner import run_tool_call
from taskforce.core.interfaces import (
    TOOL_TIMEOUT_CANCEL_MESSAGE,
    ToolProtocol,
    ToolRegistryProtocol,
    ToolResult,
)
from taskforce.errors import ToolNotFoundError, ToolTimeoutError
from taskforce.observability import ToolProxy, ToolRegistryProxy, mission_scope
from taskforce.observability.metrics import MetricSet
from taskforce.observability.proxies import _tools
from tests.observability.metric_samples import BrokenMetrics, faults, samples, series
from tests.observability.proxy_fakes import FakeRegistry, FakeTool
from tests.support.odd_values import InterruptOfItsOwn


def _calls(metrics: MetricSet) -> list[tuple[str, str, str, str | None]]:
    """Every tool call recorded: (tool_name, agent_type, status, error_type), one per call."""
    failures = samples(metrics, "taskforce_tool_failures_total")
    calls: list[tuple[str, str, str, str | None]] = []
    for (tool, agent, status), count in samples(metrics, "taskforce_tool_calls_total").items():
        if status == "success":
            calls += [(tool, agent, status, None)] * int(count)
        else:
            for (failed_tool, failed_agent, error_type), failed in failures.items():
                if (failed_tool, failed_agent) == (tool, agent):
                    calls += [(tool, agent, status, error_type)] * int(failed)
    return calls


def _seconds(metrics: MetricSet) -> float:
    """The duration of the one tool call recorded."""
    ((count, total),) = samples(metrics, "taskforce_tool_duration_seconds").values()
    assert 1 == count
    return float(total)


def _raising(exc: BaseException) -> Any:
    async def behaviour(**params: Any) -> Any:
        raise exc

    return behaviour


def _failing_classification(*args: Any) -> Any:
    raise RuntimeError("the outcome could not be read")


def _enter(subject: Any) -> None:
    with subject:
        pass


async def _enter_async(subject: Any) -> None:
    async with subject:
        pass


def _returning(result: Any) -> Any:
    async def behaviour(**params: Any) -> Any:
        return result

    return behaviour


class _PlainTool:
    """A tool with plain instance attributes (assignable and deletable)."""

    def __init__(self) -> None:
        self.name = "plain"
        self.description = "a plain tool"
        self.parameters_schema: dict[str, Any] = {"type": "object"}

    async def execute(self, **params: Any) -> ToolResult:
        return {"success": True, "output": None}


class TestToolProxyParity:
    def test_identity_and_attributes(self, metrics: MetricSet) -> None:
        """isinstance, attributes and __wrapped__ are those of the plain tool."""
        tool = FakeTool("calc")
        proxy = ToolProxy(tool, metrics)
        assert isinstance(proxy, FakeTool)
        assert isinstance(proxy, ToolProtocol)
        assert tool is proxy.__wrapped__
        assert ("calc", "a fake tool", "plain attribute") == (
            proxy.name,
            proxy.description,
            proxy.extra,
        )
        assert inspect.iscoroutinefunction(proxy.execute)

    async def test_same_result_object(self, metrics: MetricSet) -> None:
        """execute returns the very object the tool returned."""
        result = {"success": True, "output": 42}
        proxy = ToolProxy(FakeTool(behaviour=_returning(result)), metrics)
        assert result is await proxy.execute(a=1)

    async def test_arguments_pass_through(self, metrics: MetricSet) -> None:
        """Keyword arguments reach the tool unchanged."""
        proxy = ToolProxy(FakeTool(), metrics)
        assert {"success": True, "output": {"x": 1, "y": "two"}} == await proxy.execute(
            x=1, y="two"
        )

    async def test_same_exception_object(self, metrics: MetricSet) -> None:
        """An exception of the tool comes out of the proxy as the same object."""
        error = ValueError("bad")
        proxy = ToolProxy(FakeTool(behaviour=_raising(error)), metrics)
        with pytest.raises(ValueError) as caught:
            await proxy.execute()
        assert error is caught.value

    async def test_a_tool_that_is_no_context_manager_is_none_through_the_proxy(
        self, metrics: MetricSet
    ) -> None:
        """``with``/``async with`` on the proxy fail as on the tool: the same TypeError."""
        tool = FakeTool()
        proxy = ToolProxy(tool, metrics)
        for subject in (tool, proxy):
            with pytest.raises(TypeError, match="'FakeTool' object does not support the cont"):
                _enter(subject)
            with pytest.raises(TypeError, match="'FakeTool' object does not support the asyn"):
                await _enter_async(subject)

    def test_copy_and_pickle_refused(self, metrics: MetricSet) -> None:
        """A proxy cannot be copied or pickled (wrapt's default, kept on purpose)."""
        proxy = ToolProxy(FakeTool(), metrics)
        with pytest.raises(NotImplementedError):
            copy.copy(proxy)
        with pytest.raises(NotImplementedError):
            pickle.dumps(proxy)

    def test_assignment_writes_through(self, metrics: MetricSet) -> None:
        """Setting a plain attribute on the proxy sets it on the tool (wrapt semantics)."""
        tool = FakeTool()
        proxy = ToolProxy(tool, metrics)
        proxy.extra = "changed"
        assert "changed" == tool.extra

    def test_pass_throughs_are_the_tools_live_attributes(self, metrics: MetricSet) -> None:
        """name/description/parameters_schema are read from the tool on every access."""
        tool = _PlainTool()
        proxy = ToolProxy(tool, metrics)
        assert tool.parameters_schema is proxy.parameters_schema
        tool.name, tool.description = "renamed", "new text"
        assert ("renamed", "new text") == (proxy.name, proxy.description)

    def test_pass_throughs_write_and_delete_on_the_tool(self, metrics: MetricSet) -> None:
        """Assigning or deleting a pass-through attribute changes the tool, not the proxy."""
        tool = _PlainTool()
        proxy = ToolProxy(tool, metrics)
        proxy.description = "set through the proxy"
        assert "set through the proxy" == tool.description
        del proxy.description
        assert not hasattr(tool, "description")
        assert not hasattr(proxy, "description")

    def test_missing_attribute_is_missing(self, metrics: MetricSet) -> None:
        """An attribute the tool lacks is missing on the proxy too (AttributeError, hasattr)."""
        proxy = ToolProxy(FakeTool(), metrics)
        assert not hasattr(proxy, "no_such_attribute")
        with pytest.raises(AttributeError):
            _ = proxy.no_such_attribute


class TestToolProxyRecords:
    async def test_success(self, metrics: MetricSet) -> None:
        """A successful call is one success record with the tool's name and a duration."""
        await ToolProxy(FakeTool("calc"), metrics).execute()
        assert [("calc", "none", "success", None)] == _calls(metrics)
        assert _seconds(metrics) >= 0.0

    async def test_duration_covers_the_await(self, metrics: MetricSet) -> None:
        """The duration is that of the awaited call, not of creating the coroutine."""

        async def slow(**params: Any) -> Any:
            await asyncio.sleep(0.05)
            return {"success": True}

        await ToolProxy(FakeTool(behaviour=slow), metrics).execute()
        assert _seconds(metrics) >= 0.045

    @pytest.mark.parametrize(
        ("failed", "expected_type"),
        [
            ({"success": False, "error": "nope", "error_type": "refused"}, "refused"),
            ({"success": False, "error": "nope"}, "tool_error"),
            ({"success": False, "error_type": ""}, "tool_error"),
        ],
    )
    async def test_success_false_takes_the_tools_error_type(
        self, metrics: MetricSet, failed: dict[str, Any], expected_type: str
    ) -> None:
        """A returned success: false is an error of the tool's own type, else tool_error."""
        assert failed is await ToolProxy(FakeTool(behaviour=_returning(failed)), metrics).execute()
        ((_, _, status, error_type),) = _calls(metrics)
        assert ("error", expected_type) == (status, error_type)

    @pytest.mark.parametrize(
        ("error", "expected_type"),
        [
            (ValueError("x"), "ValueError"),
            (KeyError("k"), "KeyError"),
            (TimeoutError(), "timeout"),
            (ToolTimeoutError("calc", 1.0), "timeout"),
        ],
    )
    async def test_raise_records_class_name(
        self, metrics: MetricSet, error: Exception, expected_type: str
    ) -> None:
        """A raised exception is an error typed by its class name; timeouts are 'timeout'."""
        with pytest.raises(type(error)):
            await ToolProxy(FakeTool(behaviour=_raising(error)), metrics).execute()
        ((_, _, status, error_type),) = _calls(metrics)
        assert ("error", expected_type) == (status, error_type)

    async def test_timeout_cancellation_is_timeout(self, metrics: MetricSet) -> None:
        """A call cancelled with the tool-timeout message counts as error 'timeout'."""
        started = asyncio.Event()

        async def hang(**params: Any) -> Any:
            started.set()
            await asyncio.sleep(10)

        task = asyncio.create_task(ToolProxy(FakeTool(behaviour=hang), metrics).execute())
        await started.wait()
        task.cancel(TOOL_TIMEOUT_CANCEL_MESSAGE)
        with pytest.raises(asyncio.CancelledError):
            await task
        ((_, _, status, error_type),) = _calls(metrics)
        assert ("error", "timeout") == (status, error_type)

    async def test_other_cancellation_records_nothing(self, metrics: MetricSet) -> None:
        """A call cancelled for any other reason (mission cancelled) records no outcome."""
        started = asyncio.Event()

        async def hang(**params: Any) -> Any:
            started.set()
            await asyncio.sleep(10)

        task = asyncio.create_task(ToolProxy(FakeTool(behaviour=hang), metrics).execute())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [] == _calls(metrics)
        assert {} == samples(metrics, "taskforce_tool_duration_seconds")

    @pytest.mark.parametrize(
        ("raised", "expected_type"),
        [(asyncio.CancelledError(), "CancelledError"), (SystemExit(2), "SystemExit")],
        ids=["CancelledError", "SystemExit"],
    )
    async def test_a_base_exception_of_the_tools_own_is_an_error(
        self, metrics: MetricSet, raised: BaseException, expected_type: str
    ) -> None:
        """A CancelledError the tool raised itself (nobody cancelled the caller), or a
        SystemExit: the same object comes out, and the call is an error typed by its class,
        as the tool runner fails it."""
        with pytest.raises(type(raised)) as caught:
            await ToolProxy(FakeTool(behaviour=_raising(raised)), metrics).execute()
        assert raised is caught.value
        ((_, _, status, error_type),) = _calls(metrics)
        assert ("error", expected_type) == (status, error_type)

    async def test_a_cancellation_the_tool_turns_into_an_error_records_nothing(
        self, metrics: MetricSet
    ) -> None:
        """The caller cancelled; the tool caught that and raised a ValueError: the same
        object comes out, and the call has no outcome (the mission was cancelled)."""
        started = asyncio.Event()
        raised = ValueError("no")

        async def stubborn(**params: Any) -> Any:
            started.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise raised from None

        task = asyncio.create_task(ToolProxy(FakeTool(behaviour=stubborn), metrics).execute())
        await started.wait()
        task.cancel()
        with pytest.raises(ValueError) as caught:
            await task
        assert raised is caught.value
        assert [] == _calls(metrics)

    async def test_keyboard_interrupt_records_nothing(self, metrics: MetricSet) -> None:
        """An interrupt stops the process, not the call: it has no outcome of its own."""
        with pytest.raises(KeyboardInterrupt):
            await ToolProxy(FakeTool(behaviour=_raising(KeyboardInterrupt())), metrics).execute()
        assert [] == _calls(metrics)

    async def test_an_interrupt_of_the_tools_own_is_an_error(self, metrics: MetricSet) -> None:
        """A subclass of KeyboardInterrupt is the tool's own (no signal raises one): an error."""
        error = InterruptOfItsOwn()
        with pytest.raises(InterruptOfItsOwn) as raised:
            await ToolProxy(FakeTool(behaviour=_raising(error)), metrics).execute()
        assert error is raised.value
        assert [("fake", "none", "error", "InterruptOfItsOwn")] == _calls(metrics)

    async def test_an_argument_named_self_reaches_the_tool(self, metrics: MetricSet) -> None:
        """``self`` is an argument like any other (the model chooses the names): the tool
        gets it, and the call is recorded."""
        seen: dict[str, Any] = {}

        async def behaviour(**params: Any) -> Any:
            seen.update(params)
            return {"success": True}

        await ToolProxy(FakeTool(behaviour=behaviour), metrics).execute(self=1, x=2)
        assert {"self": 1, "x": 2} == seen
        assert [("fake", "none", "success", None)] == _calls(metrics)

    async def test_agent_type_from_the_mission(self, metrics: MetricSet) -> None:
        """Inside a mission scope the call carries the mission's agent_type."""
        proxy = ToolProxy(FakeTool(), metrics)
        with mission_scope("s", "m", "legacy"):
            await proxy.execute()
        await proxy.execute()
        assert {"legacy", "none"} == {agent for _, agent, _, _ in _calls(metrics)}


class TestToolProxyFaults:
    async def test_broken_metrics_do_not_change_the_call(self) -> None:
        """A MetricSet that raises leaves results and exceptions as they were; faults counted."""
        metrics = BrokenMetrics()
        result = {"success": True}
        error = ValueError("tool")
        assert result is await ToolProxy(FakeTool(behaviour=_returning(result)), metrics).execute()
        with pytest.raises(ValueError) as caught:
            await ToolProxy(FakeTool(behaviour=_raising(error)), metrics).execute()
        assert error is caught.value
        assert {"tool": 2} == faults(metrics)

    async def test_fault_logged_once(self) -> None:
        """A fault that repeats is logged once (event metrics.fault, category metrics)."""
        proxy = ToolProxy(FakeTool(), BrokenMetrics())
        with capture_logs() as logs:
            for _ in range(3):
                await proxy.execute()
        (log,) = logs
        assert ("metrics.fault", "metrics", "tool.execute", "RuntimeError") == (
            log["event"],
            log["category"],
            log["stage"],
            log["error_type"],
        )

    async def test_a_result_the_outcome_cannot_read_is_returned_as_is(
        self, metrics: MetricSet, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Classifying the result fails: the same object comes back, and a fault is counted."""
        monkeypatch.setattr(_tools, "classify_tool_result", _failing_classification)
        result = {"success": True}
        assert result is await ToolProxy(FakeTool(behaviour=_returning(result)), metrics).execute()
        assert {"tool": 1} == faults(metrics)
        assert [] == _calls(metrics)

    async def test_an_exception_the_outcome_cannot_read_is_raised_as_is(
        self, metrics: MetricSet, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Classifying the exception fails: the tool's own exception object comes out."""
        monkeypatch.setattr(_tools, "tool_exception_error_type", _failing_classification)
        error = ValueError("tool")
        with pytest.raises(ValueError) as caught:
            await ToolProxy(FakeTool(behaviour=_raising(error)), metrics).execute()
        assert error is caught.value
        assert {"tool": 1} == faults(metrics)

    @pytest.mark.parametrize("odd", [None, ["not", "a", "dict"], {"success": "yes"}, {}])
    async def test_result_that_is_not_a_tool_result(self, metrics: MetricSet, odd: Any) -> None:
        """Not a dict with a boolean success: returned as is, error/invalid_result, no fault."""
        assert odd is await ToolProxy(FakeTool(behaviour=_returning(odd)), metrics).execute()
        assert {} == faults(metrics)
        ((_, _, status, error_type),) = _calls(metrics)
        assert ("error", "invalid_result") == (status, error_type)

    async def test_result_nested_too_deep_is_returned_as_is(self, metrics: MetricSet) -> None:
        """A result JSON cannot hold: the same object back, counted error/invalid_result."""
        deep: Any = 1
        for _ in range(5000):
            deep = {"a": deep}
        odd = {"success": True, "output": deep}
        assert odd is await ToolProxy(FakeTool(behaviour=_returning(odd)), metrics).execute()
        assert {} == faults(metrics)
        ((_, _, status, error_type),) = _calls(metrics)
        assert ("error", "invalid_result") == (status, error_type)


class TestResultDepth:
    async def test_the_registry_gives_its_depth_to_every_tool_it_hands_out(
        self, metrics: MetricSet
    ) -> None:
        """A registry proxy of max_result_depth 150 hands out tools that count a result of
        121 levels a success; one of the default (100) counts it invalid_result."""
        deep: Any = 1
        for _ in range(120):
            deep = [deep]
        result = {"success": True, "output": deep}
        tool = FakeTool("deep", behaviour=_returning(result))
        deeper = ToolRegistryProxy(FakeRegistry(tool), metrics, max_result_depth=150)
        assert result is await deeper.get("deep").execute()
        assert [("deep", "none", "success", None)] == _calls(metrics)
        unset = ToolRegistryProxy(FakeRegistry(tool), metrics)
        assert result is await unset.get("deep").execute()
        assert ("deep", "none", "error", "invalid_result") in _calls(metrics)


class TestToolRegistryProxy:
    def test_parity(self, metrics: MetricSet) -> None:
        """isinstance and pass-through methods are the plain registry's."""
        registry = FakeRegistry(FakeTool("a"))
        proxy = ToolRegistryProxy(registry, metrics)
        assert isinstance(proxy, FakeRegistry)
        assert isinstance(proxy, ToolRegistryProtocol)
        assert registry.openai_schemas() == proxy.openai_schemas()
        assert registry.openai_schemas == proxy.openai_schemas  # the registry's bound method
        assert registry is proxy.__wrapped__

    def test_get_hands_out_one_cached_proxy_per_tool(self, metrics: MetricSet) -> None:
        """get returns a ToolProxy around the registered tool, the same one every time."""
        tool = FakeTool("a")
        proxy = ToolRegistryProxy(FakeRegistry(tool), metrics)
        first = proxy.get("a")
        assert isinstance(first, ToolProxy)
        assert tool is first.__wrapped__
        assert first is proxy.get("a")
        assert first is proxy.list_tools()[0]

    @pytest.mark.parametrize(
        ("behaviour", "outcome"),
        [(None, ("success", None)), (_raising(ValueError("bad")), ("error", "ValueError"))],
        ids=["success", "raises"],
    )
    async def test_a_call_is_labelled_with_the_name_it_was_made_for(
        self, metrics: MetricSet, behaviour: Any, outcome: tuple[str, str | None]
    ) -> None:
        """A tool whose ``name`` changed since it was registered: its call is counted under
        the name it was looked up by, the one the runner's log line gives."""
        tool = FakeTool("a", behaviour)
        proxy = ToolRegistryProxy(FakeRegistry(tool), metrics)
        tool._name = "renamed"
        with capture_logs() as logs:
            await run_tool_call(proxy, "a", {}, timeout_seconds=5.0)
        logged = [line["tool"] for line in logs if line["event"].startswith("tool.call.")]
        assert ["a", "a"] == logged
        assert [("a", "none", *outcome)] == _calls(metrics)

    async def test_tools_made_anew_share_one_cache_of_children(self, metrics: MetricSet) -> None:
        """A registry that hands out a new tool object on every get, under a few names: the
        children its proxies keep are one bounded cache, not one per tool object."""

        class FreshTools(FakeRegistry):
            def get(self, name: str) -> ToolProtocol:
                return FakeTool(name)

        proxy = ToolRegistryProxy(FreshTools(), metrics)
        handed_out: list[Any] = []
        for call in range(1500):
            tool = proxy.get(f"t{call % 100}")
            await tool.execute()
            handed_out.append(tool)
        caches = {id(t._self_families.bundles): t._self_families.bundles for t in handed_out}
        assert 100 == sum(map(len, caches.values()))
        assert 15 == samples(metrics, "taskforce_tool_calls_total")[("t7", "none", "success")]

    def test_a_proxy_it_hands_out_looks_up_no_family_of_its_own(
        self, metrics: MetricSet, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each tool proxy the registry makes (new tool objects, one per get) takes the
        registry's families: it shares that one object and looks up none in the metric
        set. A tool wrapped alone still looks up its own. Before, each proxy looked up
        its three families and then dropped them for the registry's."""

        class FreshTools(FakeRegistry):
            def get(self, name: str) -> ToolProtocol:
                return FakeTool(name)

        registry = ToolRegistryProxy(FreshTools(), metrics, max_result_depth=150)
        lookups: list[str] = []

        def spy(real: Any) -> Any:
            def looked_up(self: MetricSet, spec: Any) -> Any:
                lookups.append(spec.name)
                return real(self, spec)

            return looked_up

        for kind in ("counter", "histogram"):
            monkeypatch.setattr(MetricSet, kind, spy(getattr(MetricSet, kind)))
        handed_out: list[Any] = [registry.get(f"t{index}") for index in range(3)]
        assert [] == lookups
        assert {id(registry._self_families)} == {id(t._self_families) for t in handed_out}
        assert 150 == handed_out[0]._self_families.max_depth
        alone = ToolProxy(FakeTool("alone"), metrics, max_result_depth=7)
        assert 3 == len(lookups)
        assert (7, False) == (
            alone._self_families.max_depth,
            alone._self_families is registry._self_families,
        )

    def test_list_tools_in_order(self, metrics: MetricSet) -> None:
        """list_tools returns proxies of every tool, in registration order."""
        proxy = ToolRegistryProxy(FakeRegistry(FakeTool("a"), FakeTool("b")), metrics)
        tools = proxy.list_tools()
        assert ["a", "b"] == [t.name for t in tools]
        assert all(isinstance(t, ToolProxy) for t in tools)

    def test_list_tools_is_a_new_list_of_the_same_proxies(self, metrics: MetricSet) -> None:
        """Each list_tools is a fresh list (safe to change) holding the same proxies."""
        proxy = ToolRegistryProxy(FakeRegistry(FakeTool("a"), FakeTool("b")), metrics)
        first = proxy.list_tools()
        assert isinstance(first, list)
        first.clear()
        second = proxy.list_tools()
        assert ["a", "b"] == [t.name for t in second]
        assert second is not proxy.list_tools()
        assert all(a is b for a, b in zip(second, proxy.list_tools(), strict=True))
        assert second[0] is proxy.get("a")

    def test_list_tools_follows_the_registry(self, metrics: MetricSet) -> None:
        """A tool added, or one replaced by another object, shows up in the next list."""
        registry = FakeRegistry(FakeTool("a"))
        proxy = ToolRegistryProxy(registry, metrics)
        assert ["a"] == [t.name for t in proxy.list_tools()]
        proxy.register(FakeTool("b"))
        assert ["a", "b"] == [t.name for t in proxy.list_tools()]
        replacement = FakeTool("a")
        registry._tools["a"] = replacement
        (first, _) = proxy.list_tools()
        assert isinstance(first, ToolProxy)
        assert replacement is first.__wrapped__

    def test_unknown_tool_raises_the_same_and_is_counted(self, metrics: MetricSet) -> None:
        """get of an unknown name raises the registry's error and counts an unknown_tool failure."""
        error = ToolNotFoundError("missing")

        class Refusing(FakeRegistry):
            def get(self, name: str) -> Any:
                raise error

        with pytest.raises(ToolNotFoundError) as caught:
            ToolRegistryProxy(Refusing(), metrics).get("missing")
        assert error is caught.value
        assert [("missing", "none", "error", "unknown_tool")] == _calls(metrics)

    async def test_made_up_names_cannot_push_real_tools_into_other(self) -> None:
        """Names no tool has get a tenth of the cap; the registered tools keep their names."""
        metrics = MetricSet(max_label_values=20)  # made-up names: at most 2 of their own
        registry = ToolRegistryProxy(FakeRegistry(), metrics)
        for index in [0, 1, 2, 0, *range(3, 40)]:
            with pytest.raises(ToolNotFoundError):
                registry.get(f"made_up_{index}")
        for name in ("calc", "search", "files"):
            registry.register(FakeTool(name))
            await registry.get(name).execute()
        failures = samples(metrics, "taskforce_tool_failures_total")
        assert {
            ("made_up_0", "none", "unknown_tool"): 2,
            ("made_up_1", "none", "unknown_tool"): 1,
            ("other", "none", "unknown_tool"): 38,
        } == failures
        succeeded = {
            tool
            for (tool, _, status) in samples(metrics, "taskforce_tool_calls_total")
            if status == "success"
        }
        assert {"calc", "search", "files"} == succeeded
        # the 38 folded ones are overflows like any other, for the overflow alert
        overflow = samples(metrics, "taskforce_metrics_label_overflow_total")
        assert 38 == overflow[("taskforce_tool_calls_total", "tool_name")]
        assert 38 == overflow[("taskforce_tool_failures_total", "tool_name")]

    async def test_below_ten_values_made_up_names_get_none(self) -> None:
        """With a cap under 10 every made-up name is other: the cap is the registered tools'."""
        metrics = MetricSet(max_label_values=5)
        registry = ToolRegistryProxy(FakeRegistry(), metrics)
        with pytest.raises(ToolNotFoundError):
            registry.get("made_up")
        for name in ("a", "b", "c", "d"):
            registry.register(FakeTool(name))
            await registry.get(name).execute()
        assert {("other", "none", "unknown_tool"): 1} == samples(
            metrics, "taskforce_tool_failures_total"
        )
        assert {"a", "b", "c", "d"} <= {
            tool for (tool, _, _) in samples(metrics, "taskforce_tool_calls_total")
        }

    def test_other_get_errors_are_not_tool_calls(self, metrics: MetricSet) -> None:
        """A registry that breaks in get for another reason: raised unchanged, nothing counted."""

        class Broken(FakeRegistry):
            def get(self, name: str) -> Any:
                raise RuntimeError("registry down")

        with pytest.raises(RuntimeError):
            ToolRegistryProxy(Broken(), metrics).get("calc")
        assert [] == _calls(metrics)

    async def test_tool_registered_later_is_observed(self, metrics: MetricSet) -> None:
        """A tool registered through the proxy after the build is handed out observed."""
        proxy = ToolRegistryProxy(FakeRegistry(), metrics)
        proxy.register(FakeTool("late"))
        await proxy.get("late").execute()
        assert [("late", "none", "success", None)] == _calls(metrics)

    def test_registering_a_proxy_registers_the_plain_tool(self, metrics: MetricSet) -> None:
        """register(ToolProxy) stores the tool inside, so nothing is counted twice."""
        tool = FakeTool("t")
        registry = FakeRegistry()
        ToolRegistryProxy(registry, metrics).register(ToolProxy(tool, MetricSet()))
        assert tool is registry.get("t")
        assert not isinstance(registry.get("t"), ToolProxy)

    def test_duplicate_register_raises_the_same(self, metrics: MetricSet) -> None:
        """register keeps the registry's ValueError for a duplicate name."""
        proxy = ToolRegistryProxy(FakeRegistry(FakeTool("a")), metrics)
        with pytest.raises(ValueError, match="duplicate"):
            proxy.register(FakeTool("a"))

    def test_tuple_stays_tuple(self, metrics: MetricSet) -> None:
        """A registry that lists tools as a tuple gets a tuple of proxies back."""

        class TupleRegistry(FakeRegistry):
            def list_tools(self) -> Any:
                return tuple(super().list_tools())

        tools = ToolRegistryProxy(TupleRegistry(FakeTool("a")), metrics).list_tools()
        assert isinstance(tools, tuple)
        assert isinstance(tools[0], ToolProxy)


class TestOverflowThroughTheProxy:
    async def test_an_overflowed_tool_counts_its_overflow_on_every_call(self) -> None:
        """Past the cap a tool is 'other' on every call, each call counted as an overflow."""
        metrics = MetricSet(max_label_values=1)
        await ToolProxy(FakeTool("first"), metrics).execute()
        second = ToolProxy(FakeTool("second"), metrics)
        for _ in range(3):
            await second.execute()
        assert {
            ("first", "none", "success"): 1,
            ("other", "none", "success"): 3,
        } == samples(metrics, "taskforce_tool_calls_total")
        overflow = samples(metrics, "taskforce_metrics_label_overflow_total")
        assert 3 == overflow[("taskforce_tool_calls_total", "tool_name")]


def _call_series(metrics: MetricSet) -> set[tuple[str, str, str]]:
    """Every (tool_name, agent_type, status) series of the call counter, zeros included."""
    return {
        (s["tool_name"], s["agent_type"], s["status"])
        for s in series(metrics, "taskforce_tool_calls_total")
    }


def _at_zero(*names: str) -> set[tuple[str, str, str]]:
    return {(n, a, s) for n in names for a in ("lean", "legacy") for s in ("success", "error")}


class TestCallCountersAtZero:
    """A counter series first seen above zero is invisible to increase() until its second
    sample: each worker of a fleet (and each replacement) would hide its first calls."""

    def test_registered_tools_have_their_call_series_at_zero(self, metrics: MetricSet) -> None:
        """Wrapping a registry makes both flows' success and error series of each tool, at 0."""
        ToolRegistryProxy(FakeRegistry(FakeTool("a"), FakeTool("b")), metrics)
        assert _at_zero("a", "b") == _call_series(metrics)
        assert {} == samples(metrics, "taskforce_tool_calls_total")

    def test_registered_tools_have_their_duration_series_at_zero(self, metrics: MetricSet) -> None:
        """The tool duration panel reads rate() of the buckets: a series born at its first
        call would hide each worker's first call of each tool there."""
        ToolRegistryProxy(FakeRegistry(FakeTool("a"), FakeTool("b")), metrics)
        assert {(n, a) for n in ("a", "b") for a in ("lean", "legacy")} == {
            (s["tool_name"], s["agent_type"])
            for s in series(metrics, "taskforce_tool_duration_seconds")
        }
        assert {} == samples(metrics, "taskforce_tool_duration_seconds")

    def test_a_tool_registered_later_too(self, metrics: MetricSet) -> None:
        """register() makes the new tool's series at zero as well."""
        proxy = ToolRegistryProxy(FakeRegistry(), metrics)
        proxy.register(FakeTool("late"))
        assert _at_zero("late") == _call_series(metrics)

    def test_no_overflow_past_the_registered_tools_share(self) -> None:
        """Past nine tenths of the cap, names wait for their first call; nothing overflows."""
        metrics = MetricSet(max_label_values=10)
        tools = [FakeTool(f"t{i}") for i in range(12)]
        ToolRegistryProxy(FakeRegistry(*tools), metrics)
        assert _at_zero(*(f"t{i}" for i in range(9))) == _call_series(metrics)
        assert {} == samples(metrics, "taskforce_metrics_label_overflow_total")

    def test_a_registry_that_cannot_list_is_wrapped_all_the_same(self, metrics: MetricSet) -> None:
        """list_tools raising at wrap time is a fault, not a failed build."""

        class _Unlisted(FakeRegistry):
            def list_tools(self) -> list[Any]:
                raise RuntimeError("no list")

        proxy = ToolRegistryProxy(_Unlisted(FakeTool("a")), metrics)
        assert isinstance(proxy.get("a"), ToolProxy)
        assert set() == _call_series(metrics)
        assert {"registry": 1} == faults(metrics)
