"""The aspect changes nothing, checked on generated hostile parts: bare against proxied.

A seeded generator (no dependency of its own: ``random.Random`` with a fixed seed, so
every run checks the same cases) makes providers, streams, tools, registries, state
stores and executors whose calls return or raise hostile values: mappings whose
``get``, ``[]``, ``keys``, ``len``, truth, ``==`` or hash raise, values whose ``str``,
``repr`` or ``__class__`` raise, huge, negative, fractional and non-finite counts,
exceptions whose message, ``args`` or attributes raise, and ``BaseException`` of every
kind (``SystemExit``, ``GeneratorExit``, ``KeyboardInterrupt`` and ``CancelledError``,
theirs and subclasses of their own). Each case calls one bare object and one proxied
object that behave alike, and compares: the same object returned or raised (``is``),
the same calls into the object, no fault of the instrumentation raised; the scrape
still parses after every case, and promtool accepts it at the end.

A read of the instrumentation's own may hit such a value; what it raises is a fault
(counted, logged once), never the caller's: only a ``KeyboardInterrupt`` itself goes on.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from taskforce.errors import ToolNotFoundError
from taskforce.observability.metrics import MetricSet
from taskforce.observability.proxies import (
    ExecutorProxy,
    StateStoreProxy,
    ToolProxy,
    ToolRegistryProxy,
    observe_llm_provider,
)
from tests.observability.metric_samples import faults
from tests.support.binaries import require_binary

SEED = 20261127
CASES = 150  # per protocol


class Hostile(Exception):
    """What a hostile value's methods raise (unless a BaseException was drawn)."""


class OwnInterrupt(KeyboardInterrupt):
    """A KeyboardInterrupt of a part's own: no signal raises it."""


class OwnExit(SystemExit):
    """A SystemExit of a part's own."""


class OwnCancel(asyncio.CancelledError):
    """A CancelledError of a part's own, while nobody cancelled the task."""


class OwnBase(BaseException):
    """A BaseException of a part's own."""


class UnprintableError(Exception):
    """An exception whose message and repr cannot be read."""

    def __str__(self) -> str:
        raise Hostile("str")

    def __repr__(self) -> str:
        raise Hostile("repr")


class NoArgsError(Exception):
    """An exception whose ``args`` raise."""

    @property
    def args(self) -> Any:  # type: ignore[override]
        raise Hostile("args")


class RaisingAttributesError(Exception):
    """An exception whose named attributes (``__class__`` too) raise when read."""

    def __init__(self, names: frozenset[str]) -> None:
        super().__init__("attributes")
        self.names = names

    def __getattribute__(self, name: str) -> Any:
        if name != "names" and name in object.__getattribute__(self, "names"):
            raise Hostile(name)
        return object.__getattribute__(self, name)


_NUMBERS = [0, 1, 7, -1, 10**400, -(10**30), 2**53, 2**64, 1.5, 12.0, -0.0, 1e308]
_SCALARS: list[Any] = [
    *_NUMBERS,
    float("nan"),
    float("inf"),
    -float("inf"),
    True,
    False,
    None,
    "12",
    "",
    [],
    {},
]


class Gen:
    """The seeded generator of hostile values; ``raised`` draws what a hostile method raises."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def raised(self) -> BaseException:
        """What a method of a hostile value raises: mostly an Exception, else any BaseException."""
        kinds: list[Callable[[], BaseException]] = [
            lambda: Hostile("read"),
            lambda: Hostile("read"),
            SystemExit,
            GeneratorExit,
            OwnInterrupt,
            OwnExit,
            OwnCancel,
            OwnBase,
        ]
        return self.rng.choice(kinds)()

    def raising_method(self) -> Callable[..., Any]:
        """A method that raises what ``raised`` draws, anew on every call."""
        error = self.raised

        def method(*args: Any, **kwargs: Any) -> Any:
            raise error()

        return method

    def mapping(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base``, as a plain dict or a dict subclass some of whose methods raise."""
        if self.rng.random() < 0.4:
            return dict(base)
        names = self.rng.sample(
            [
                "get",
                "__getitem__",
                "keys",
                "values",
                "items",
                "__len__",
                "__bool__",
                "__eq__",
                "__contains__",
                "__iter__",
                "copy",
                "__hash__",
            ],
            self.rng.randint(1, 3),
        )
        cls: Any = type("HostileMapping", (dict,), {name: self.raising_method() for name in names})
        mapping: dict[str, Any] = cls.__new__(cls)
        dict.update(mapping, base)
        return mapping

    def odd_object(self) -> Any:
        """An object whose str, repr, truth, ``==`` or ``__class__`` raise."""
        kind = self.rng.randrange(4)
        method = self.raising_method()
        if kind == 0:
            return type("NoText", (), {"__str__": method, "__repr__": method})()
        if kind == 1:
            return type("NoClass", (), {"__class__": property(method), "__repr__": method})()
        if kind == 2:
            return type("NoTruth", (), {"__bool__": method})()
        methods = {"__eq__": method, "__bool__": method, "__hash__": str.__hash__}
        return type("NoEqualText", (str,), methods)("x")

    def scalar(self) -> Any:
        """A count, size or label value of every odd kind."""
        if self.rng.random() < 0.2:
            return self.odd_object()
        return self.rng.choice(_SCALARS)

    def exception(self) -> BaseException:
        """What a part's call raises."""
        kind = self.rng.randrange(13)
        if kind == 0:
            error: BaseException = UnprintableError()
        elif kind == 1:
            error = NoArgsError()
        elif kind == 2:
            attributes = ["error_type", "attempts", "usage", "model", "args", "__class__"]
            error = RaisingAttributesError(frozenset(self.rng.sample(attributes, 2)))
        elif kind == 3:
            error = odd = cast(Any, Hostile("with odd attributes"))
            odd.error_type = self.scalar()
            odd.attempts = self.rng.choice([None, (1, 2, 3), self.odd_object()])
            odd.usage = self.mapping({"prompt_tokens": self.scalar()})
            odd.model = self.scalar()
        else:
            choices: list[Callable[[], BaseException]] = [
                lambda: Hostile("call"),
                KeyboardInterrupt,
                OwnInterrupt,
                lambda: SystemExit(3),
                OwnExit,
                asyncio.CancelledError,
                OwnCancel,
                OwnBase,
                GeneratorExit,
                TimeoutError,
            ]
            error = self.rng.choice(choices)()
        return error

    def outcome(self, value: Callable[[], Any]) -> Outcome:
        """A call's outcome: an exception to raise (a third of them) or a value to return."""
        if self.rng.random() < 0.35:
            return Outcome(self.exception(), raises=True)
        return Outcome(value(), raises=False)

    def usage(self) -> Any:
        """A token report."""
        if self.rng.random() < 0.2:
            return self.scalar()
        return self.mapping({"prompt_tokens": self.scalar(), "completion_tokens": self.scalar()})

    def llm_result(self) -> Any:
        """What ``complete`` or ``generate`` returns."""
        if self.rng.random() < 0.1:
            return self.scalar()
        rng = self.rng
        result: dict[str, Any] = {"success": rng.choice([True, True, False, None, self.scalar()])}
        optional: dict[str, Callable[[], Any]] = {
            "content": lambda: rng.choice(["hi", "", None, 3, self.odd_object()]),
            "usage": self.usage,
            "model": lambda: rng.choice(["m", "", "x" * 300, "\udcff", self.scalar()]),
            "attempts": self.attempts,
            "error_type": lambda: rng.choice(["timeout", "rate_limited", self.scalar()]),
            "tool_calls": lambda: rng.choice([[], [{"name": "t"}], [self.mapping({"name": "t"})]]),
        }
        for key, make in optional.items():
            if rng.random() < 0.5:
                result[key] = make()
        return self.mapping(result)

    def attempts(self) -> Any:
        """An attempt report, of attempts whose fields are odd."""
        attempt = type("Attempt", (), {})
        made = []
        for _ in range(self.rng.randint(0, 3)):
            one = attempt()
            one.error_type = self.rng.choice(["rate_limited", self.scalar()])
            one.waited_seconds = self.scalar()
            one.duration_seconds = self.scalar()
            made.append(one)
        return self.rng.choice([made, tuple(made), self.scalar(), self.mapping({})])

    def chunk(self) -> Any:
        """A streamed chunk."""
        if self.rng.random() < 0.1:
            return self.scalar()
        chunk: dict[str, Any] = {}
        if self.rng.random() < 0.5:
            chunk["content"] = self.rng.choice(["tok", "", 3, None, self.odd_object()])
        if self.rng.random() < 0.3:
            chunk.update(done=self.scalar(), usage=self.usage(), model=self.scalar())
        if self.rng.random() < 0.2:
            chunk["attempts"] = self.attempts()
        return self.mapping(chunk)

    def tool_result(self) -> Any:
        """What a tool's ``execute`` returns."""
        if self.rng.random() < 0.15:
            return self.scalar()
        result: dict[str, Any] = {"success": self.rng.choice([True, False, None, 1])}
        if self.rng.random() < 0.5:
            result["output"] = self.rng.choice(
                ["o", [[[]]], self.odd_object(), self.mapping({"a": 1}), float("nan")]
            )
        if self.rng.random() < 0.4:
            result["error_type"] = self.rng.choice(["boom", "", "unknown_tool", self.scalar()])
        return self.mapping(result)

    def name(self) -> Any:
        """A tool's name: text, odd text, or what reading it raises."""
        return self.rng.choice(["t", "t", "", "x" * 300, "\udcff", self.scalar(), self.raised()])


class Outcome:
    """One behaviour, shared by the bare part and the proxied one: the same object."""

    def __init__(self, value: Any, *, raises: bool) -> None:
        self.value = value
        self.raises = raises

    def act(self) -> Any:
        if self.raises:
            raise self.value
        return self.value


async def _ended(call: Callable[[], Awaitable[Any]]) -> tuple[str, Any]:
    try:
        return ("returned", await call())
    except BaseException as exc:  # what the call raised, whatever it is
        return ("raised", exc)


def _check_scrape(metrics: MetricSet) -> None:
    """The scrape still renders, every sample a number (the full parse, 20 ms a scrape, runs
    once per protocol: ``_run_cases``)."""
    for line in metrics.render().decode().splitlines():
        if not line.startswith("#"):
            float(line.rpartition(" ")[2])


async def _compare(
    metrics: MetricSet,
    bare: Callable[[], Awaitable[Any]],
    proxied: Callable[[], Awaitable[Any]],
    calls: tuple[list[str], list[str]],
) -> None:
    """The same object returned or raised, the same calls made, the scrape readable."""
    expected, got = await _ended(bare), await _ended(proxied)
    assert expected[0] == got[0], (expected, got)
    assert expected[1] is got[1], (expected, got)
    assert calls[0] == calls[1]
    _check_scrape(metrics)


def _same_items(
    metrics: MetricSet,
    expected: tuple[str, Any],
    got: tuple[str, Any],
    calls: tuple[list[str], list[str]],
) -> None:
    """A stream read bare and proxied: the same exception, or the same items (``is``)."""
    assert expected[0] == got[0], (expected, got)
    if expected[0] == "raised":
        assert expected[1] is got[1]
    else:
        assert list(map(id, expected[1])) == list(map(id, got[1]))
    assert calls[0] == calls[1]
    _check_scrape(metrics)


async def _compare_call(
    metrics: MetricSet,
    make: Callable[[list[str]], Any],
    observe: Callable[[Any, MetricSet], Any],
    operation: str,
    args: tuple[Any, ...],
) -> None:
    """``_compare`` one call of two parts ``make`` makes alike, the second observed."""
    bare_calls: list[str] = []
    proxied_calls: list[str] = []
    bare, proxied = make(bare_calls), observe(make(proxied_calls), metrics)
    await _compare(
        metrics,
        lambda: getattr(bare, operation)(*args),
        lambda: getattr(proxied, operation)(*args),
        (bare_calls, proxied_calls),
    )


class _Part:
    """A part whose calls act out one outcome, with one attribute whose read may raise."""

    def __init__(self, outcome: Outcome, attribute: Any, calls: list[str]) -> None:
        self.outcome = outcome
        self.attribute = attribute
        self.calls = calls

    def _read(self) -> Any:
        if isinstance(self.attribute, BaseException):
            raise self.attribute
        return self.attribute

    def _act(self, call: str) -> Any:
        self.calls.append(call)
        return self.outcome.act()


class Provider(_Part):
    """A provider whose ``model`` may raise."""

    @property
    def model(self) -> Any:
        return self._read()

    async def complete(self, messages: Any, model: Any = None, tools: Any = None) -> Any:
        return self._act("complete")

    async def generate(self, prompt: Any, context: Any = None, model: Any = None) -> Any:
        return self._act("generate")


class StreamingProvider(Provider):
    """A provider whose ``stream`` hands out one planned async generator."""

    def __init__(self, plan: Callable[[list[str]], Any], calls: list[str]) -> None:
        super().__init__(Outcome(None, raises=False), "m", calls)
        self.plan = plan

    def stream(self, messages: Any, model: Any = None, tools: Any = None) -> Any:
        self.calls.append("stream")
        return self.plan(self.calls)


class Tool(_Part):
    """A tool whose ``name`` may raise."""

    description = "a generated tool"
    parameters_schema: dict[str, Any] = {"type": "object"}

    @property
    def name(self) -> Any:
        return self._read()

    async def execute(self, **params: Any) -> Any:
        return self._act("execute")


class Registry(_Part):
    """A registry whose ``get`` acts out its outcome, and ``list_tools`` the attribute's."""

    def get(self, name: str) -> Any:
        return self._act("get")

    def list_tools(self) -> Any:
        self.calls.append("list_tools")
        return self.attribute.act()

    def register(self, tool: Any) -> None:
        self.calls.append("register")

    def openai_schemas(self) -> list[Any]:
        return []


class Store(_Part):
    """A state store whose calls act out one outcome."""

    async def load(self, session_id: str) -> Any:
        return self._act("load")

    async def save(self, session_id: str, state: Any) -> Any:
        return self._act("save")

    async def append(self, session_id: str, record: Any) -> Any:
        return self._act("append")


class Executor(_Part):
    """An executor whose mission acts out one outcome; its stream yields the attribute's
    events, raising at the index of its failure (``(events, (index, exception) or None)``)."""

    async def execute_mission(self, mission: str, agent_type: Any = "lean", **kwargs: Any) -> Any:
        return self._act("execute_mission")

    async def execute_mission_streaming(
        self, mission: str, agent_type: Any = "lean", **kwargs: Any
    ) -> Any:
        self.calls.append("execute_mission_streaming")
        events, failure = self.attribute
        for index, event in enumerate([*events, None]):
            if failure is not None and failure[0] == index:
                raise failure[1]
            if event is None:
                return
            self.calls.append("yield")
            yield event


class StreamObject:
    """A provider's own stream object: its chunks, raising ``error`` at index ``failure``;
    its ``aclose`` raises ``on_close`` (if any) every time."""

    def __init__(
        self, chunks: list[Any], failure: tuple[int | None, Any], on_close: Any, calls: list[str]
    ) -> None:
        self.chunks = iter([*chunks, None])
        self.failure = failure
        self.on_close = on_close
        self.calls = calls
        self.index = 0

    def __aiter__(self) -> StreamObject:
        return self

    async def __anext__(self) -> Any:
        self.calls.append("anext")
        index, error = self.failure
        if self.index == index:
            raise error
        self.index += 1
        chunk = next(self.chunks, None)
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self.calls.append("aclose")
        if self.on_close is not None:
            raise self.on_close


class Record:
    """An ``ExecutionResult`` or ``AppendResult`` look-alike whose fields are odd."""

    def __init__(self, gen: Gen) -> None:
        self.status = gen.rng.choice(["completed", "failed", gen.scalar()])
        self.steps = gen.rng.choice([[], [1, 2], gen.scalar(), gen.mapping({"a": 1})])
        self.tool_calls = gen.scalar()
        self.size_bytes = gen.scalar()


class Event:
    """A progress event whose kind and result may be odd."""

    def __init__(self, gen: Gen) -> None:
        self.kind = gen.rng.choice(["result", "token", gen.scalar()])
        self.result = gen.rng.choice([Record(gen), None, gen.scalar()])


async def _consume(stream: Any, stop: int, how: str, thrown: BaseException) -> list[Any]:
    """Read ``stream``; at chunk ``stop``, close it or throw into it (``how``)."""
    got: list[Any] = []
    iterator = stream.__aiter__()
    while True:
        if len(got) == stop and how == "aclose":
            await stream.aclose()
            return got
        try:
            step = iterator.athrow(thrown) if len(got) == stop and how == "athrow" else None
            got.append(await (step or iterator.__anext__()))
        except StopAsyncIteration:
            return got


async def _provider_case(gen: Gen, metrics: MetricSet) -> None:
    outcome = gen.outcome(gen.llm_result)
    model = gen.rng.choice(["default", None, gen.scalar(), gen.raised()])
    operation = gen.rng.choice(["complete", "generate"])
    if operation == "complete":
        plain = [{"role": "user", "content": "hi"}] * gen.rng.choice([1, 70])
        odd = [gen.mapping({"role": "user", "content": gen.scalar()})]
        sent = gen.rng.choice([plain, odd, gen.scalar(), gen.mapping({})])
        args: tuple[Any, ...] = (sent, gen.rng.choice([None, "m", gen.scalar()]))
    else:
        args = (gen.rng.choice(["p", gen.scalar()]), gen.rng.choice([None, "c", gen.scalar()]))
    await _compare_call(
        metrics, partial(Provider, outcome, model), observe_llm_provider, operation, args
    )


async def _stream_case(gen: Gen, metrics: MetricSet) -> None:
    chunks = [gen.chunk() for _ in range(gen.rng.randint(0, 4))]
    failure = gen.rng.choice([None, None, gen.rng.randint(0, len(chunks))])
    error = gen.exception()
    on_close = gen.exception() if gen.rng.random() < 0.2 else None
    as_object = gen.rng.random() < 0.5  # a stream object of the provider's own, else a generator
    how = gen.rng.choice(["drain", "aclose"] if as_object else ["drain", "aclose", "athrow"])
    stop = gen.rng.randint(0, len(chunks) + 1)
    thrown = gen.exception()

    def plan(calls: list[str]) -> Any:
        if as_object:
            return StreamObject(chunks, (failure, error), on_close, calls)

        async def stream() -> Any:
            try:
                for index, chunk in enumerate([*chunks, None]):
                    if index == failure:
                        raise error
                    if chunk is None:
                        return
                    calls.append("yield")
                    yield chunk
            finally:
                calls.append("finally")
                if on_close is not None:
                    raise on_close

        return stream()

    bare_calls: list[str] = []
    proxied_calls: list[str] = []
    bare = StreamingProvider(plan, bare_calls)
    proxied: Any = observe_llm_provider(cast(Any, StreamingProvider(plan, proxied_calls)), metrics)
    expected = await _ended(lambda: _consume(bare.stream([]), stop, how, thrown))
    got = await _ended(lambda: _consume(proxied.stream([]), stop, how, thrown))
    _same_items(metrics, expected, got, (bare_calls, proxied_calls))


async def _tool_case(gen: Gen, metrics: MetricSet) -> None:
    outcome = gen.outcome(gen.tool_result)
    name = gen.name()
    bare_calls: list[str] = []
    proxied_calls: list[str] = []
    bare = Tool(outcome, name, bare_calls)
    proxied = ToolProxy(Tool(outcome, name, proxied_calls), metrics)
    params = {"a": gen.scalar()}
    await _compare(
        metrics,
        lambda: bare.execute(**params),
        lambda: proxied.execute(**params),
        (bare_calls, proxied_calls),
    )
    refused = await _ended(lambda: _now(proxied.call_refused, gen.tool_result()))
    assert ("returned", None) == refused  # a tool without the hook: nothing raises
    _check_scrape(metrics)


async def _registry_case(gen: Gen, metrics: MetricSet) -> None:
    tools = [Tool(gen.outcome(gen.tool_result), gen.name(), []) for _ in range(2)]
    got = gen.outcome(lambda: gen.rng.choice([tools[0], gen.scalar(), gen.odd_object()]))
    if got.raises and gen.rng.random() < 0.3:
        got = Outcome(ToolNotFoundError("nope"), raises=True)
    listed = gen.outcome(
        lambda: gen.rng.choice([list(tools), tuple(tools), gen.scalar(), [gen.odd_object()]])
    )
    bare_calls: list[str] = []
    proxied_calls: list[str] = []
    bare = Registry(got, listed, bare_calls)
    try:
        proxied = ToolRegistryProxy(Registry(got, listed, proxied_calls), metrics)
    except KeyboardInterrupt as interrupt:  # a KeyboardInterrupt itself goes on
        assert type(interrupt) is KeyboardInterrupt
        return
    proxied_calls.clear()  # the proxy lists the tools once, for its series at zero

    async def proxied_get() -> Any:
        tool = proxied.get("t")
        return cast(Any, tool).__wrapped__ if issubclass(type(tool), ToolProxy) else tool

    await _compare(metrics, lambda: _now(bare.get, "t"), proxied_get, (bare_calls, proxied_calls))
    listing = await _ended(lambda: _now(proxied.list_tools))
    expected = await _ended(lambda: _now(bare.list_tools))
    assert expected[0] == listing[0]
    if expected[0] == "raised" or not hasattr(expected[1], "__iter__"):
        assert expected[1] is listing[1]  # raised, or no listing at all: as it came
    elif isinstance(expected[1], list | tuple):  # observed, item by item (the docstring)
        assert list(map(id, expected[1])) == [id(getattr(t, "__wrapped__", t)) for t in listing[1]]
    assert bare_calls == proxied_calls
    _check_scrape(metrics)


async def _now(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


async def _store_case(gen: Gen, metrics: MetricSet) -> None:
    operation = gen.rng.choice(["load", "save", "append"])
    outcome = gen.outcome(
        lambda: Record(gen) if operation == "append" and gen.rng.random() < 0.7 else gen.scalar()
    )
    state: dict[str, Any] = gen.rng.choice([{"a": 1}, {"a": float("nan")}, {"a": gen.odd_object()}])
    args: tuple[Any, ...] = ("s",) if operation == "load" else ("s", gen.mapping(state))
    await _compare_call(metrics, partial(Store, outcome, None), StateStoreProxy, operation, args)


async def _executor_case(gen: Gen, metrics: MetricSet) -> None:
    outcome = gen.outcome(lambda: gen.rng.choice([Record(gen), gen.scalar(), gen.odd_object()]))
    events = [Event(gen) for _ in range(gen.rng.randint(0, 3))]
    failure = gen.rng.choice([None, (gen.rng.randint(0, len(events)), gen.exception())])
    agent_type = gen.rng.choice(["lean", "legacy", "nope", gen.scalar()])
    bare_calls: list[str] = []
    proxied_calls: list[str] = []
    bare = Executor(outcome, (events, failure), bare_calls)
    proxied = ExecutorProxy(cast(Any, Executor(outcome, (events, failure), proxied_calls)), metrics)
    await _compare(
        metrics,
        lambda: bare.execute_mission("m", agent_type),
        lambda: proxied.execute_mission("m", agent_type),
        (bare_calls, proxied_calls),
    )
    how = gen.rng.choice(["drain", "aclose", "athrow"])
    stop, thrown = gen.rng.randint(0, len(events) + 1), gen.exception()
    expected = await _ended(
        lambda: _consume(bare.execute_mission_streaming("m", agent_type), stop, how, thrown)
    )
    got = await _ended(
        lambda: _consume(proxied.execute_mission_streaming("m", agent_type), stop, how, thrown)
    )
    _same_items(metrics, expected, got, (bare_calls, proxied_calls))


CASE_MAKERS: dict[str, Callable[[Gen, MetricSet], Awaitable[None]]] = {
    "provider": _provider_case,
    "stream": _stream_case,
    "tool": _tool_case,
    "registry": _registry_case,
    "store": _store_case,
    "executor": _executor_case,
}


async def _run_cases(protocol: str, metrics: MetricSet) -> None:
    gen = Gen(SEED + sorted(CASE_MAKERS).index(protocol))
    make = CASE_MAKERS[protocol]
    for case in range(CASES):
        try:
            await make(gen, metrics)
        except AssertionError as failed:
            raise AssertionError(f"{protocol} case {case} (seed {SEED}): {failed}") from None
        except BaseException as escaped:  # a KeyboardInterrupt of a part's own would stop pytest
            raise AssertionError(f"{protocol} case {case}: {escaped!r} escaped") from None
    assert list(text_string_to_metric_families(metrics.render().decode()))


@pytest.mark.parametrize("protocol", sorted(CASE_MAKERS))
async def test_generated_parts_behave_the_same_proxied(protocol: str, metrics: MetricSet) -> None:
    """150 generated cases per protocol: the proxy returns, raises and calls as the bare part;
    what it could not read is a fault, counted and logged as documented, never raised."""
    with capture_logs() as logs:
        await _run_cases(protocol, metrics)
    reported = [log for log in logs if log["event"] == "metrics.fault"]
    for line in reported:
        assert {"category", "proxy", "stage", "error_type", "error", "once"} <= line.keys()
        assert line["once"] is True
    counted = faults(metrics)
    assert bool(reported) == bool(counted)
    # logged once per component and stage, counted every time
    assert len(reported) <= sum(counted.values())


@pytest.mark.integration
def test_scrape_after_generated_cases_passes_promtool(metrics: MetricSet) -> None:
    """After every generated case of every protocol, promtool check metrics is clean."""
    promtool = require_binary("promtool")
    with capture_logs():
        for protocol in sorted(CASE_MAKERS):
            asyncio.run(_run_cases(protocol, metrics))
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics.render(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (0, b"", b"") == (result.returncode, result.stdout, result.stderr)
