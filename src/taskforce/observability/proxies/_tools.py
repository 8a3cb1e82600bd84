"""Proxies for tools and the tool registry: every tool handed out is an observed tool.

``ToolRegistryProxy`` hands out ``ToolProxy`` objects from ``get`` and
``list_tools``, so a tool registered after the container was built (a user's
own tool) is observed like the built-in ones without any code of its own.

Outcomes of ``ToolProxy.execute`` (the tool calls, failures and duration
families) are decided by ``core.interfaces.outcome``, the same functions the tool runner
uses, so the metrics, the mission and the ``tool.call.failed`` log line agree:

- a result that ``classify_tool_result`` calls a success: ``success``;
- a failed result: ``error`` with the tool's own ``error_type``, else
  ``tool_error``; anything but a dict with a boolean ``success``, or one nested
  too deep for JSON: ``error``/``invalid_result`` (returned as it came all the same);
- raises: ``error``, ``error_type`` from ``tool_exception_error_type``:
  ``timeout`` when the time limit fired (the runner's ``TOOL_TIME_LIMIT`` says
  so), also when the tool caught that cancellation and returned or raised
  anyway, as the agents count it; else the class name (``timeout`` for
  timeouts), for anything the tool raised itself, a ``CancelledError`` or
  ``SystemExit`` of its own included;
- a call the tool runner refused before the tool ran (its arguments are no JSON
  object), told through ``call_refused``: ``error``/``InvalidArguments``, duration 0,
  as the result fed back to the model and the ``tool.call.failed`` line say;
- a cancellation of the mission (the task's cancellation count above what it
  was when the call started, besides the limit's own request) or a
  ``KeyboardInterrupt`` itself (a subclass is the tool's own: a failure): nothing
  is recorded. The call has no outcome of its
  own, and counting it as a tool error would let client disconnects raise the
  tool failure rate; the mission is counted ``cancelled`` instead.
- a result or an exception the outcome functions fail to read (a mapping whose
  ``get`` raises, say): a fault of the proxy (stage ``tool``), and the call goes
  on exactly as without it: the same result returned, the same exception raised.

``ToolRegistryProxy.get`` of a name that is not registered counts a failed
call of that (guarded) tool name with ``error_type="unknown_tool"``, duration
0: the model asked for a tool, and the mission feeds the error back to it.
Such names are free text from the model (or from whoever wrote the mission), so
they get a budget of their own: at most a tenth of ``max_label_values`` distinct
ones per registry (none below 10); later ones are counted as ``other``. A client
that sends many made-up names therefore cannot use up the guard's cap and push
the registered tools' own names into ``other``: up to nine tenths of the cap
are theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import is_
from time import perf_counter
from typing import Any, TypeVar, cast

from taskforce.core.interfaces.context import current_agent_type
from taskforce.core.interfaces.jsonable import MAX_RESULT_DEPTH
from taskforce.core.interfaces.outcome import (
    TIMEOUT,
    UNKNOWN_TOOL,
    classify_tool_result,
    is_unknown_tool_error,
    tool_exception_error_type,
)
from taskforce.core.interfaces.tools import (
    TOOL_TIME_LIMIT,
    RefusedCallProtocol,
    ToolProtocol,
    ToolRegistryProtocol,
    ToolResult,
)
from taskforce.observability.metrics import CounterChild, Family, HistogramChild, MetricSet
from taskforce.observability.metrics._catalog import (
    AGENT_TYPES,
    CALL_STATUSES,
    OTHER,
    TOOL_CALLS,
    TOOL_DURATION,
    TOOL_FAILURES,
    MetricSpec,
)
from taskforce.observability.proxies._base import ObservingProxy, passthrough, report_fault

__all__ = ["ToolProxy", "ToolRegistryProxy"]

_ToolT = TypeVar("_ToolT", bound=ToolProtocol)
_RegistryT = TypeVar("_RegistryT", bound=ToolRegistryProtocol)

_STAGE = "tool.execute"
# Bounds the proxy cache of a registry whose get() builds a new tool each time.
_MAX_CACHED_TOOLS = 1024
# Bundles of children kept per proxy; more and the cache starts over.
_MAX_BUNDLES = 1024


class _ToolFamilies:
    """The families a tool call writes to, the children of recent label sets, and the
    deepest result the calls may return (``agent.max_result_depth``, as the runner's)."""

    __slots__ = ("bundles", "calls", "duration", "failures", "max_depth")

    def __init__(self, metrics: MetricSet, max_depth: int) -> None:
        # bound here, at build time: read with the families, no lookup of its own per call
        self.max_depth = max_depth
        self.calls: Family[CounterChild] = metrics.counter(TOOL_CALLS)
        self.failures: Family[CounterChild] = metrics.counter(TOOL_FAILURES)
        self.duration: Family[HistogramChild] = metrics.histogram(TOOL_DURATION)
        self.bundles: dict[tuple[Any, str, str], _CallChildren] = {}

    def children(self, tool_name: Any, agent_type: str, status: str) -> _CallChildren:
        """Return the calls and duration children of one (tool, agent_type, status)."""
        key = (tool_name, agent_type, status)
        found = self.bundles.get(key)
        if found is None:
            found = _CallChildren(
                self.calls.labels(tool_name, agent_type, status),
                self.duration.labels(tool_name, agent_type),
            )
            # an overflowed name is never kept: it must take the slow path (and count) each time
            if self.calls.is_cached(*key) and self.duration.is_cached(tool_name, agent_type):
                if len(self.bundles) >= _MAX_BUNDLES:
                    self.bundles.clear()
                self.bundles[key] = found
        return found


class _CallChildren:
    """The children every call of one (tool, agent_type, status) writes."""

    __slots__ = ("calls", "duration")

    def __init__(self, calls: CounterChild, duration: HistogramChild) -> None:
        self.calls = calls
        self.duration = duration


class ToolProxy(ObservingProxy[_ToolT]):
    """A tool whose ``execute`` calls are counted and timed.

    Everything else (``name``, ``description``, ``parameters_schema``, ...)
    is the wrapped tool's own.
    """

    def __init__(
        self,
        wrapped: _ToolT,
        metrics: MetricSet,
        *,
        max_result_depth: int = MAX_RESULT_DEPTH,
        _families: _ToolFamilies | None = None,
    ) -> None:
        """Wrap ``wrapped`` so its calls are recorded in ``metrics``.

        Args:
            wrapped: The plain tool; it stays reachable as ``__wrapped__``.
            metrics: The container's metric set.
            max_result_depth: The deepest result a call may return before it counts as
                ``invalid_result``: the tool runner's (``agent.max_result_depth``).
            _families: The families and cache of children of the registry that hands
                it out, shared by all its tools (``max_result_depth`` is theirs then);
                ``None``: its own, looked up in ``metrics``.
        """
        super().__init__(wrapped, metrics)
        self._self_families = (
            _ToolFamilies(metrics, max_result_depth) if _families is None else _families
        )
        # The name ToolRegistryProxy.get last handed it out for: its calls are labelled
        # with it, as the tool runner's log line names them, whatever the tool's ``name``
        # says by then (None: the tool's ``name``, read at the call's end).
        self._self_name: str | None = None

    # The legacy agent reads these three of every tool for each mission's prompt.
    name = passthrough("name")
    description = passthrough("description")
    parameters_schema = passthrough("parameters_schema")

    async def execute(self, /, **params: Any) -> ToolResult:
        """Run the wrapped tool's ``execute`` and record the call's outcome.

        Args:
            **params: Passed to the wrapped tool unchanged.

        Returns:
            Exactly what the wrapped tool returned.

        Raises:
            Exception: Exactly what the wrapped tool raised (the same object).
            asyncio.CancelledError: When the call is cancelled.
        """
        # Read the proxy's own attributes once each: the hot path runs per tool call.
        wrapped = self.__wrapped__
        families = self._self_families
        name = self._self_name  # before the call: another get() may hand it out meanwhile
        started = perf_counter()
        try:
            result = await wrapped.execute(**params)
        except BaseException as exc:  # always re-raised: only the outcome is read here
            _record_raised(self, wrapped, name, started, exc)
            raise
        try:
            error_type = classify_tool_result(result, families.max_depth)
            limit = TOOL_TIME_LIMIT.get()
            if limit is not None and limit.expired:  # it caught the timeout's cancellation
                error_type = TIMEOUT
        except BaseException as exc:  # the result is returned as it came, whatever reading it did
            report_fault(self._self_metrics, "ToolProxy", _STAGE, exc)
            return result
        if error_type is not None:
            _record_failure(self, wrapped, name, started, error_type)
            return result
        # A success is recorded here, not in a helper: one call less on the path most calls take.
        duration = perf_counter() - started
        try:
            tool_name = name or wrapped.name
            agent_type = current_agent_type()
            children = families.bundles.get(
                (tool_name, agent_type, "success")
            ) or families.children(tool_name, agent_type, "success")
            children.calls.inc()
            children.duration.observe(duration)
        except BaseException as exc:  # a name of the tool's own that raises, SystemExit too
            report_fault(self._self_metrics, "ToolProxy", _STAGE, exc)
        return result

    def call_refused(self, result: ToolResult) -> None:
        """Record a call the tool runner refused before ``execute`` ran, then tell the tool.

        Args:
            result: The failed result the runner returned for the call.

        Raises:
            Exception: What the wrapped tool's own ``call_refused`` raised, if it has one.
        """
        wrapped = self.__wrapped__
        started = perf_counter()
        try:
            error_type = classify_tool_result(result)
        except BaseException as exc:
            report_fault(self._self_metrics, "ToolProxy", _STAGE, exc)
        else:
            if error_type is not None:
                _record_failure(self, wrapped, self._self_name, started, error_type)
        if isinstance(wrapped, RefusedCallProtocol):  # as the runner would without the proxy
            wrapped.call_refused(result)


def _record_raised(
    proxy: ToolProxy[Any], tool: Any, name: str | None, started: float, exc: BaseException
) -> None:
    """Record a call that raised ``exc``; a fault here is counted, never raised over ``exc``."""
    try:
        failed = tool_exception_error_type(exc, TOOL_TIME_LIMIT.get())
    except BaseException as fault:
        report_fault(proxy._self_metrics, "ToolProxy", _STAGE, fault)
        return
    if failed is not None:  # None: the mission was cancelled, the call has no outcome
        _record_failure(proxy, tool, name, started, failed)


def _record_failure(
    proxy: ToolProxy[Any] | ToolRegistryProxy[Any],
    tool: Any,
    tool_name: Any,
    started: float,
    error_type: str,
) -> None:
    """Record one failed call (a success is recorded by ``ToolProxy.execute`` itself).

    ``tool_name`` labels it; ``None``: the ``name`` of ``tool``.
    """
    duration = perf_counter() - started
    try:
        if tool_name is None:
            tool_name = tool.name
        agent_type = current_agent_type()
        families = proxy._self_families
        children = families.children(tool_name, agent_type, "error")
        families.failures.labels(tool_name, agent_type, error_type).inc()
        children.calls.inc()
        children.duration.observe(duration)
    except BaseException as exc:  # a name of the tool's own that raises, SystemExit too
        report_fault(proxy._self_metrics, "ToolProxy", _STAGE, exc)


class ToolRegistryProxy(ObservingProxy[_RegistryT]):
    """A tool registry that hands out :class:`ToolProxy` objects.

    One proxy is cached per tool object, so repeated ``get`` calls allocate
    nothing. ``register`` stores the plain tool: given a ``ToolProxy`` it
    registers the tool inside, so the registry never holds a proxy bound to
    another container's metrics, and tools are observed exactly once, here.
    """

    def __init__(
        self, wrapped: _RegistryT, metrics: MetricSet, *, max_result_depth: int = MAX_RESULT_DEPTH
    ) -> None:
        """Wrap a registry so every tool it hands out is observed.

        Args:
            wrapped: The plain registry.
            metrics: The container's metric set.
            max_result_depth: Given to every :class:`ToolProxy` it hands out.
        """
        super().__init__(wrapped, metrics)
        self._self_families = _ToolFamilies(metrics, max_result_depth)
        # id(tool) -> (tool, proxy); holding the tool keeps its id from being reused.
        self._self_tools: dict[int, tuple[ToolProtocol, Any]] = {}
        # what list_tools() last listed, and the proxies it handed out for them
        self._self_listed: tuple[list[ToolProtocol], list[ToolProtocol]] = ([], [])
        # names no tool has that were counted under their own name (see the module doc)
        self._self_unknown: set[str] = set()
        self._self_unknown_budget = metrics.max_label_values // 10
        try:
            self._self_at_zero(wrapped.list_tools())
        except BaseException as exc:
            # A registry of one's own that cannot list: nothing at zero. Whatever it raises
            # (SystemExit, a KeyboardInterrupt of its own too) was raised to the proxy's own
            # call, made only for this, not to the service: its listings later raise it as
            # they would without metrics. A KeyboardInterrupt itself is raised again.
            report_fault(metrics, "ToolRegistryProxy", "registry", exc)

    # The lean agent reads it before every LLM call.
    openai_schemas = passthrough("openai_schemas")

    # A registry one can iterate or index hands out observed tools that way too; these
    # are used only for a registry that has the method (``ObservingProxy.__new__``).
    _self_protocols = {
        "__iter__": lambda proxy: map(proxy._self_handed_out, iter(proxy.__wrapped__)),
        "__getitem__": lambda proxy, key: proxy._self_handed_out(proxy.__wrapped__[key]),
    }

    def register(self, tool: ToolProtocol) -> None:
        """Register a tool with the wrapped registry (the plain tool, see the class doc).

        Args:
            tool: A tool, plain or already observed.

        Raises:
            ValueError: A tool of that name is already registered.
        """
        if isinstance(tool, ObservingProxy):
            tool = tool.__wrapped__
        self.__wrapped__.register(tool)
        try:
            self._self_at_zero([tool])
        except BaseException as exc:  # a name that cannot be read: its series come with its calls
            report_fault(self._self_metrics, "ToolRegistryProxy", "registry", exc)

    def _self_at_zero(self, tools: Sequence[ToolProtocol]) -> None:
        """Create the call counters and duration histograms of ``tools`` at zero, for both
        flows (and both outcomes).

        A series that first appears above zero is counted by ``increase()`` and
        ``rate()`` only from its second sample: without these, every worker (and every
        replacement of one) would hide each tool's first calls and failures from the
        failure ratio alert, and its first call from the tool duration panel. Names past
        the registered tools' share of the guard's cap (nine tenths) are left to their
        first call, so nothing overflows here.
        """
        families = self._self_families
        room = self._self_metrics.max_label_values - self._self_unknown_budget
        for tool in tools:
            name = tool.name
            if type(name) is not str:
                continue
            for agent_type in AGENT_TYPES[:2]:  # lean, legacy: the flows that call tools
                if self._self_has_room(TOOL_CALLS, name, room):
                    for status in CALL_STATUSES:
                        families.calls.labels(name, agent_type, status)
                if self._self_has_room(TOOL_DURATION, name, room):
                    families.duration.labels(name, agent_type)

    def _self_has_room(self, spec: MetricSpec, name: str, room: int) -> bool:
        """Whether ``name`` is a ``tool_name`` of ``spec`` already, or the share has room."""
        admitted = self._self_metrics.guard.admitted(spec.name, "tool_name")
        return name in admitted or len(admitted) < room

    def get(self, name: str) -> ToolProtocol:
        """Return the observed tool registered under ``name``.

        Args:
            name: The tool's name.

        Returns:
            A :class:`ToolProxy` around the registered tool.

        Raises:
            taskforce.errors.ToolNotFoundError: No tool of that name is registered.
        """
        try:
            tool = self.__wrapped__.get(name)
        except Exception as exc:
            try:
                unknown = is_unknown_tool_error(exc)  # reads its class: an error's own may raise
            except BaseException as fault:
                report_fault(self._self_metrics, "ToolRegistryProxy", "registry", fault)
                unknown = False
            if unknown:
                label = self._self_unknown_label(name)
                _record_failure(self, None, label, perf_counter(), UNKNOWN_TOOL)
            raise
        # the cache holds the tool, so its id names no other object while cached
        cached = self._self_tools.get(id(tool))
        observed: ToolProtocol = cached[1] if cached is not None else self._self_observed(tool)
        if issubclass(type(observed), ToolProxy):  # not isinstance: a tool's own class may raise
            # its next call is labelled with the name it was asked for (see ToolProxy)
            observed._self_name = name if type(name) is str else None  # type: ignore[attr-defined]
        return observed  # not cast(): a call on every tool call

    def list_tools(self) -> Sequence[ToolProtocol]:
        """Return every registered tool, observed, in registration order.

        Returns:
            A list (a tuple if the wrapped registry returns one) of :class:`ToolProxy`.
        """
        tools = self.__wrapped__.list_tools()
        try:
            return self._self_listing(tools)
        except BaseException as exc:  # a listing that is no sequence of tools: as it came
            report_fault(self._self_metrics, "ToolRegistryProxy", "registry", exc)
            return tools

    def _self_listing(self, tools: Sequence[ToolProtocol]) -> Sequence[ToolProtocol]:
        """The observed listing of what the wrapped ``list_tools`` returned."""
        if type(tools) is list:
            listed, observed = self._self_listed
            # The same tool objects as last time (the usual case: the legacy agent
            # lists them for every mission): the same proxies, without a lookup each.
            if len(tools) != len(listed) or not all(map(is_, tools, listed)):
                listed, observed = tools.copy(), [self._self_observed(tool) for tool in tools]
                self._self_listed = (listed, observed)
            return observed.copy()  # a new list per call, as the registry's own
        observed = [self._self_observed(tool) for tool in tools]
        return tuple(observed) if isinstance(tools, tuple) else observed

    def _self_unknown_label(self, name: object) -> str:
        """The ``tool_name`` of a name no tool has: itself while the budget lasts, else other."""
        unknown = self._self_unknown
        if type(name) is str:  # else not a name any registry could hold: nothing to keep
            if name in unknown:
                return name
            if len(unknown) < self._self_unknown_budget:
                unknown.add(name)
                return name
        # folded like any value past the guard's cap, and counted so (the overflow alert)
        metrics = self._self_metrics
        for spec in (TOOL_CALLS, TOOL_FAILURES, TOOL_DURATION):
            metrics.record_overflow(spec.name, "tool_name")
        return OTHER

    def _self_handed_out(self, item: object) -> object:
        """``item`` observed if it is a tool (a registry may iterate its names instead)."""
        try:
            if isinstance(item, ToolProtocol):
                return self._self_observed(item)
        except BaseException as exc:  # an item that cannot say: handed out as it is
            report_fault(self._self_metrics, "ToolRegistryProxy", "registry", exc)
        return item

    def _self_observed(self, tool: ToolProtocol) -> ToolProtocol:
        try:
            if isinstance(tool, ObservingProxy):  # reads the class: a tool's own may raise
                return tool
        except BaseException as exc:  # a tool that cannot say what it is: handed out as it is
            report_fault(self._self_metrics, "ToolRegistryProxy", "registry", exc)
            return tool
        cached = self._self_tools.get(id(tool))
        if cached is not None:
            return cast(ToolProtocol, cached[1])
        # One cache of children for every tool it hands out, as they share their series:
        # a registry whose tools are new objects each time keeps 1024 label sets, not
        # 1024 per proxy; and no proxy looks the families up again.
        proxy: ToolProxy[Any] = ToolProxy(tool, self._self_metrics, _families=self._self_families)
        if len(self._self_tools) >= _MAX_CACHED_TOOLS:
            self._self_tools.clear()
            self._self_listed = ([], [])
        self._self_tools[id(tool)] = (tool, proxy)
        return cast(ToolProtocol, proxy)
