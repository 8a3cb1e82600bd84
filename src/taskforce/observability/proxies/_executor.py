"""Proxy for the executor: the mission boundary, where missions are counted and timed.

The executor owns the mission: it validates the request, makes the ids and
sets the mission context (``core.interfaces.context``). ``ExecutorProxy``
only counts and times, exactly once however the mission ends:

- ``completed``/``failed``/``cancelled`` as the returned ``ExecutionResult``
  says (a failed mission is *returned*, per ``ExecutorProtocol``);
- ``failed`` when the executor raises an ``Exception``;
- ``cancelled`` on ``asyncio.CancelledError`` (or any other ``BaseException``)
  and, for the streaming form, when the consumer stops before the ``result``
  event (``aclose()``, a disconnecting client, a cancelled task) and the mission
  did not end: one that ended anyway, its record saved, counts as it ended (the
  executor says so through ``STREAM_END``, ``core.interfaces.executor``).

A request the executor refuses is not a mission and is counted nowhere,
neither in the missions counter nor in the in-progress gauge, so a client's
mistake can neither create a series with a free-form ``agent_type`` nor raise
the mission failure rate. The proxy does not validate the request itself (the
executor is its one judge, ``check_mission_request``); it relies on the
protocol's promise that a refusal raises ``MissionError`` before anything
runs:

- an ``agent_type`` outside ``AGENT_TYPES`` cannot be a label: the call
  passes straight through, for the executor to refuse;
- for any other request the in-progress gauge goes up, and a ``MissionError``
  takes it back down and counts nothing. The executor raises it before its
  first ``await``, in the same step of the event loop, so no scrape sees the
  gauge move.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from time import perf_counter
from typing import Any, TypeVar

from taskforce.core.interfaces.executor import (
    AGENT_TYPES,
    MISSION_STATUSES,
    STREAM_END,
    AgentType,
    ExecutionResult,
    ExecutorProtocol,
    MissionError,
    ProgressEvent,
    StreamEnd,
)
from taskforce.observability.metrics import (
    CounterChild,
    Family,
    GaugeChild,
    HistogramChild,
    MetricSet,
    as_count,
)
from taskforce.observability.metrics._catalog import (
    MISSION_DURATION,
    MISSION_STEPS,
    MISSION_TOOL_CALLS,
    MISSIONS,
    MISSIONS_IN_PROGRESS,
)
from taskforce.observability.proxies._base import (
    ObservingProxy,
    aclose_iterator,
    raise_interrupt,
    report_fault,
)

__all__ = ["ExecutorProxy"]

_ExecutorT = TypeVar("_ExecutorT", bound=ExecutorProtocol)


def _label(agent_type: object) -> str | None:
    """The ``agent_type`` label of a request: itself if it is a flow, else ``None``."""
    try:
        return agent_type if agent_type in AGENT_TYPES else None
    except BaseException as exc:  # an object whose == raises is no flow: the executor judges it
        raise_interrupt(exc)
        return None


class _MissionChildren:
    """The series a finished mission of one flow and final status writes."""

    __slots__ = ("count", "duration", "steps", "tool_calls")

    def __init__(self, metrics: MetricSet, agent_type: str, status: str) -> None:
        self.count: CounterChild = metrics.counter(MISSIONS).labels(agent_type, status)
        self.duration: HistogramChild = metrics.histogram(MISSION_DURATION).labels(
            agent_type, status
        )
        self.steps: HistogramChild = metrics.histogram(MISSION_STEPS).labels(agent_type)
        self.tool_calls: HistogramChild = metrics.histogram(MISSION_TOOL_CALLS).labels(agent_type)


class ExecutorProxy(ObservingProxy[_ExecutorT]):
    """An executor whose missions are counted and timed."""

    def __init__(self, wrapped: _ExecutorT, metrics: MetricSet) -> None:
        """Wrap ``wrapped`` so its missions are recorded in ``metrics``.

        Args:
            wrapped: The plain executor; it stays reachable as ``__wrapped__``.
            metrics: The container's metric set.
        """
        super().__init__(wrapped, metrics)
        self._self_in_progress: Family[GaugeChild] = metrics.gauge(MISSIONS_IN_PROGRESS)
        # agent_type -> its in-progress child: a closed set, so at most two entries
        self._self_gauges: dict[str, GaugeChild] = {}
        # (agent_type, status) -> children: both closed sets, so at most nine entries
        self._self_finished: dict[tuple[str, str], _MissionChildren] = {}

    async def execute_mission(
        self,
        /,
        mission: str,
        agent_type: AgentType = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
        **kwargs: Any,
    ) -> ExecutionResult:
        """Run one mission through the wrapped executor, counting and timing it.

        Args:
            mission: Passed unchanged.
            agent_type: Passed unchanged; also the ``agent_type`` label.
            session_id: Passed unchanged.
            mission_id: Passed unchanged.
            **kwargs: Passed unchanged.

        Returns:
            Exactly what the wrapped executor returned.

        Raises:
            Exception: Exactly what the wrapped executor raised (the same object).
            asyncio.CancelledError: When the mission is cancelled.
        """
        wrapped = self.__wrapped__
        label = _label(agent_type)
        if label is None:
            return await wrapped.execute_mission(
                mission, agent_type, session_id=session_id, mission_id=mission_id, **kwargs
            )
        gauge = self._self_gauges.get(label) or self._self_record_started(label)
        if gauge is not None:
            gauge.inc()
        started = perf_counter()
        status: str | None = "cancelled"  # unless it returns (None: read the result) or raises
        result: ExecutionResult | None = None
        try:
            result = await wrapped.execute_mission(
                mission, agent_type, session_id=session_id, mission_id=mission_id, **kwargs
            )
            status = None
        except MissionError:
            status = "refused"  # not a mission
            raise
        except Exception:
            status = "failed"
            raise
        finally:
            if status != "refused":
                self._self_record_finished(label, gauge, started, status, result)
            elif gauge is not None:
                gauge.dec()  # the refusal came in the same step of the loop: no scrape saw it
        return result

    async def execute_mission_streaming(
        self,
        /,
        mission: str,
        agent_type: AgentType = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[ProgressEvent, None]:
        """Stream one mission's progress events from the wrapped executor, counting and timing it.

        The inner stream is closed as soon as this one is.

        Args:
            mission: Passed unchanged.
            agent_type: Passed unchanged; also the ``agent_type`` label.
            session_id: Passed unchanged.
            mission_id: Passed unchanged.
            **kwargs: Passed unchanged.

        Yields:
            Exactly the events of the wrapped stream.

        Raises:
            Exception: Exactly what the wrapped stream raised (the same object).
        """
        events = self.__wrapped__.execute_mission_streaming(
            mission, agent_type, session_id=session_id, mission_id=mission_id, **kwargs
        )
        label = _label(agent_type)
        if label is None:
            try:
                async for event in events:
                    yield event
            finally:
                await aclose_iterator(events)
            return
        gauge = self._self_gauges.get(label) or self._self_record_started(label)
        if gauge is not None:
            gauge.inc()
        started = perf_counter()
        final: Any = None  # the ExecutionResult of the ``result`` event
        # unless the stream ends (None: the result's own status) or raises
        status: str | None = "cancelled"
        started_events = False
        # Filled in by the executor if the mission ended though its result went unread.
        end = StreamEnd()
        end_token = STREAM_END.set(end)
        try:
            try:
                async for event in events:
                    started_events = True
                    try:
                        if getattr(event, "kind", None) == "result":
                            final = event.result
                    except BaseException as exc:  # an event of its own whose read raises
                        report_fault(self._self_metrics, "ExecutorProxy", "mission.result", exc)
                    yield event
            finally:
                await aclose_iterator(events)
                with contextlib.suppress(ValueError):  # closed from another context
                    STREAM_END.reset(end_token)
                if final is None and end.result is not None:
                    final = end.result  # it ended as its record says: not cancelled
            # A stream that ends without its result event broke the protocol.
            status = "failed" if final is None else None
        except MissionError:
            # refused before its first event: not a mission
            status = "failed" if started_events else "refused"
            raise
        except Exception:
            status = "failed"
            raise
        finally:
            if status == "refused":
                if gauge is not None:
                    gauge.dec()
            else:
                if status == "cancelled" and final is not None:
                    status = None  # stopped after the result: the mission had ended
                self._self_record_finished(label, gauge, started, status, final)

    def _self_record_started(self, label: str) -> GaugeChild | None:
        """The in-progress child of ``label``, kept for the next mission; None after a fault."""
        try:
            gauge = self._self_in_progress.labels(label)
        except Exception as exc:
            report_fault(self._self_metrics, "ExecutorProxy", "mission.start", exc)
            return None
        self._self_gauges[label] = gauge
        return gauge

    def _self_record_finished(
        self,
        label: str,
        gauge: GaugeChild | None,
        started: float,
        status: str | None,
        result: Any,
    ) -> None:
        """Record a finished mission.

        Args:
            label: The mission's flow.
            gauge: Its in-progress child, None if taking it up was a fault.
            started: ``perf_counter()`` when it started.
            status: How it ended, or None to read the status off ``result``.
            result: The ``ExecutionResult``, if one came back: its steps and tool calls.
        """
        duration = perf_counter() - started
        steps = tool_calls = None
        if status is None or result is not None:
            try:
                if status is None:
                    status = result.status if result.status in MISSION_STATUSES else "failed"
                steps, tool_calls = len(result.steps), as_count(int(result.tool_calls))
                if tool_calls is None:  # negative, or past what a sample holds
                    raise ValueError("the result's tool_calls is not a count")
            except BaseException as exc:  # a result of its own may raise SystemExit too
                report_fault(self._self_metrics, "ExecutorProxy", "mission.result", exc)
                steps = tool_calls = None
                status = status or "completed"  # a result that cannot be read: it did return
        try:
            if gauge is not None:  # None: the start was a fault, there is nothing to take back
                gauge.dec()
            children = self._self_finished.get((label, status))
            if children is None:
                children = _MissionChildren(self._self_metrics, label, status)
                self._self_finished[(label, status)] = children
            children.duration.observe(duration)  # a negative duration is observed as 0
            if steps is not None:
                children.steps.observe(steps)
            if tool_calls is not None:
                children.tool_calls.observe(tool_calls)
            children.count.inc()
        except Exception as exc:
            report_fault(self._self_metrics, "ExecutorProxy", "mission.finish", exc)
