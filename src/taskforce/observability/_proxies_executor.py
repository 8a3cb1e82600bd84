"""Proxy for the executor: the mission boundary, where the mission scope opens and closes.

``ExecutorProxy`` gives each mission its ids (when the caller gave none, it
makes them and passes them on, so the executor, the logs and the metrics all
use the same ones), sets the mission context (see ``_context``), and records
the mission exactly once however it ends:

- ``completed``/``failed``/``cancelled`` as the returned ``ExecutionResult``
  says (a failed mission is *returned*, per ``ExecutorProtocol``);
- ``failed`` when the executor raises an ``Exception``;
- ``cancelled`` on ``asyncio.CancelledError`` (or any other ``BaseException``)
  and, for the streaming form, when the consumer stops before the ``result``
  event: ``aclose()``, a disconnecting client, a cancelled task.

A call whose ``agent_type`` is not one of ``AGENT_TYPES`` is not a mission:
the executor refuses it (``MissionError``) before anything runs. It passes
straight through and is not counted, so a client's typo can neither create a
series with a free-form ``agent_type`` nor raise the mission failure rate.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from os import urandom
from time import perf_counter
from typing import Any, TypeVar

from taskforce.core.interfaces.executor import (
    AGENT_TYPES,
    MISSION_STATUSES,
    AgentType,
    ExecutionResult,
    ExecutorProtocol,
    ProgressEvent,
)
from taskforce.observability._context import enter_mission, exit_mission, mission_scope
from taskforce.observability._proxy_base import ObservingProxy, aclose_iterator, report_fault

__all__ = ["ExecutorProxy"]

_ExecutorT = TypeVar("_ExecutorT", bound=ExecutorProtocol)

_AGENT_LABELS: dict[object, str] = {agent_type: agent_type for agent_type in AGENT_TYPES}
_Outcome = tuple[str, int | None, int | None]


def _new_id() -> str:
    # 32 random hex digits, the shape of uuid4().hex at a quarter of its cost
    # (UUID() construction dominates; this runs twice per mission).
    return urandom(16).hex()


def _agent_label(agent_type: object) -> str | None:
    try:
        return _AGENT_LABELS.get(agent_type)
    except TypeError:  # unhashable: certainly not an agent type
        return None


class ExecutorProxy(ObservingProxy[_ExecutorT]):
    """An executor whose missions are counted, timed and run inside the mission context."""

    async def execute_mission(
        self,
        mission: str,
        agent_type: AgentType = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
        **kwargs: Any,
    ) -> ExecutionResult:
        """Run one mission through the wrapped executor inside its mission scope.

        Args:
            mission: Passed unchanged.
            agent_type: Passed unchanged; also the ``agent_type`` label.
            session_id: Passed on; generated (32 random hex digits) when ``None``.
            mission_id: Passed on; generated (32 random hex digits) when ``None``.
            **kwargs: Passed unchanged.

        Returns:
            Exactly what the wrapped executor returned.

        Raises:
            Exception: Exactly what the wrapped executor raised (the same object).
            asyncio.CancelledError: When the mission is cancelled.
        """
        label = _agent_label(agent_type)
        wrapped = self.__wrapped__
        if label is None:
            return await wrapped.execute_mission(
                mission, agent_type, session_id=session_id, mission_id=mission_id, **kwargs
            )
        if session_id is None:
            session_id = _new_id()
        if mission_id is None:
            mission_id = _new_id()
        # enter/exit rather than ``with mission_scope``: a generator-based context
        # manager costs ~2 us, and this runs once per mission.
        tokens = enter_mission(session_id, mission_id, label)
        try:
            self._self_record_started(label)
            started = perf_counter()
            outcome: _Outcome = ("cancelled", None, None)  # unless it returns or raises
            try:
                result = await wrapped.execute_mission(
                    mission, agent_type, session_id=session_id, mission_id=mission_id, **kwargs
                )
            except Exception:
                outcome = ("failed", None, None)
                raise
            else:
                outcome = self._self_outcome(result)
            finally:
                self._self_record_finished(label, outcome, started)
            return result
        finally:
            exit_mission(tokens)

    async def execute_mission_streaming(
        self,
        mission: str,
        agent_type: AgentType = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[ProgressEvent, None]:
        """Stream one mission's progress events from the wrapped executor inside its scope.

        The mission context is set around every step of the inner stream (an
        async generator runs in its consumer's context, one step at a time),
        and the inner stream is closed as soon as this one is.

        Args:
            mission: Passed unchanged.
            agent_type: Passed unchanged; also the ``agent_type`` label.
            session_id: Passed on; generated (32 random hex digits) when ``None``.
            mission_id: Passed on; generated (32 random hex digits) when ``None``.
            **kwargs: Passed unchanged.

        Yields:
            Exactly the events of the wrapped stream.

        Raises:
            Exception: Exactly what the wrapped stream raised (the same object).
        """
        label = _agent_label(agent_type)
        if label is None:
            inner = self.__wrapped__.execute_mission_streaming(
                mission, agent_type, session_id=session_id, mission_id=mission_id, **kwargs
            )
            try:
                async for event in inner:
                    yield event
            finally:
                await aclose_iterator(inner)
            return
        session_id = _new_id() if session_id is None else session_id
        mission_id = _new_id() if mission_id is None else mission_id
        with mission_scope(session_id, mission_id, label):
            self._self_record_started(label)
        started = perf_counter()
        outcome: _Outcome | None = None  # from the ``result`` event
        status = "cancelled"  # unless the stream ends or raises
        events: Any = None
        try:
            with mission_scope(session_id, mission_id, label):
                events = self.__wrapped__.execute_mission_streaming(
                    mission, agent_type, session_id=session_id, mission_id=mission_id, **kwargs
                )
            while True:
                with mission_scope(session_id, mission_id, label):
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        break
                if getattr(event, "kind", None) == "result":
                    outcome = self._self_outcome(event.result)
                yield event
            # A stream that ends without its result event broke the protocol.
            status = "failed" if outcome is None else outcome[0]
        except Exception:
            status = "failed"
            raise
        finally:
            try:
                if events is not None:
                    with mission_scope(session_id, mission_id, label):
                        await aclose_iterator(events)
            finally:
                if status == "cancelled" and outcome is not None:
                    status = outcome[0]  # stopped after the result: the mission had ended
                steps, tool_calls = (None, None) if outcome is None else outcome[1:]
                self._self_record_finished(label, (status, steps, tool_calls), started)

    def _self_record_started(self, label: str) -> None:
        try:
            self._self_metrics.record_mission_started(label)
        except Exception as exc:
            report_fault(self._self_metrics, "ExecutorProxy", "mission.start", exc)

    def _self_outcome(self, result: Any) -> _Outcome:
        try:
            status = result.status if result.status in MISSION_STATUSES else "failed"
            return status, len(result.steps), int(result.tool_calls)
        except Exception as exc:
            report_fault(self._self_metrics, "ExecutorProxy", "mission.result", exc)
            return "completed", None, None

    def _self_record_finished(self, label: str, outcome: _Outcome, started: float) -> None:
        duration = perf_counter() - started
        status, steps, tool_calls = outcome
        try:
            # record_mission_finished records a negative duration as 0
            self._self_metrics.record_mission_finished(label, status, duration, steps, tool_calls)
        except Exception as exc:
            report_fault(self._self_metrics, "ExecutorProxy", "mission.finish", exc)
