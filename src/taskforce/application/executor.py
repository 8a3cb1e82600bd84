"""The mission edge: ``AgentExecutor`` validates a request, runs one agent and records the mission.

Missions of one session are serialised by a per-session lock in the process;
missions of different sessions run fully concurrently. Every mission appends a
record to its session's state, also a cancelled one (best-effort), with
``StateStoreProtocol.append``: atomic in the store, so missions of one session
on other processes or replicas lose nothing either.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
import weakref
from collections.abc import AsyncGenerator, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import structlog

from taskforce.application._mission_support import (
    new_id,
    now_iso,
    record_fields,
    seconds_since,
    step_dict,
    to_the_end,
)
from taskforce.application._record_writes import RecordWrites
from taskforce.config import AgentSettings
from taskforce.core.domain import (
    MISSION_RUNS,
    Agent,
    AgentOutcome,
    EventCallback,
    LeanAgent,
    MissionRun,
    crash_error,
    deadline_outcome,
)
from taskforce.core.interfaces.context import enter_mission, exit_mission
from taskforce.core.interfaces.executor import (
    STREAM_END,
    AgentType,
    ExecutionResult,
    MissionRequest,
    ProgressEvent,
    check_mission_request,
)
from taskforce.core.interfaces.llm import LLMProviderProtocol
from taskforce.core.interfaces.log import text_fields
from taskforce.core.interfaces.outcome import (
    MISSION_TIMEOUT,
    class_error_type,
    exception_message,
)
from taskforce.core.interfaces.state import StateStoreProtocol
from taskforce.core.interfaces.tools import ToolRegistryProtocol
from taskforce.errors import StateStoreError

if TYPE_CHECKING:
    from taskforce.infrastructure.tools import SessionFolders

__all__ = ["RECORD_SECONDS", "AgentExecutor"]

_LOG = structlog.get_logger(__name__)
_T = TypeVar("_T")
_DONE = object()
#: How long a cancelled mission waits for its record (``cancelled``, or the result it
#: was saving when the cancellation came); past it the mission ends as cancelled and
#: the write goes on on its own (``state.save.late``). ``drain`` waits as long again
#: for the writes still under way, then gives them up (``state.save.abandoned``).
RECORD_SECONDS = 5.0


_Ended = TypeVar("_Ended", AgentOutcome, ExecutionResult)
#: The outcome of an agent that raised itself: nothing of its run is known.
_NO_OUTCOME = AgentOutcome("failed", "")


async def _failed(
    ended: _Ended, error: str, error_type: str, on_event: EventCallback | None
) -> _Ended:
    """``ended`` as failed with ``error`` and ``error_type``, which a stream hears first.

    The last resorts of a mission: an agent that raised itself (``_NO_OUTCOME``, its
    error from ``crash_error``: the caller still gets a result, not a 500, and the session
    a record), and a record that could not be saved (the result, its ``error_type`` the
    class name of what the store raised). A stream hears it as its (last) ``error`` event
    first, so that event and the final ``result`` agree, also after an earlier ``error``
    event of the mission itself.
    """
    if on_event is not None:
        await on_event(ProgressEvent(kind="error", data={"error": error, "error_type": error_type}))
    return dataclasses.replace(ended, status="failed", error=error, error_type=error_type)


async def _within_deadline(
    run: Coroutine[Any, Any, AgentOutcome],
    seconds: float,
    runs: list[MissionRun],
    events: _Backlog | None,
) -> AgentOutcome:
    """Await the agent's ``run`` for ``seconds`` at most (``agent.mission_timeout_seconds``).

    Past them the run is cancelled where it waits (an LLM call, a tool call, a stream's
    backpressure), as any cancelled call is, and the mission fails as ``mission_timeout``,
    which a stream hears as its ``error`` event. ``asyncio.timeout`` tells its own
    cancellation from anyone else's by the task's cancellation count: the caller's (a
    client that left, a shutdown), also one that comes with the deadline, still raises
    ``CancelledError``, and the mission is cancelled as without a deadline.

    Raises:
        asyncio.CancelledError: The mission was cancelled by its caller.
        Exception: What the run raised (a ``TimeoutError`` of its own too).
    """
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await run
    except TimeoutError:
        if not deadline.expired():
            raise  # the run's own: a crash below the agent, not the deadline
    outcome = deadline_outcome(runs, seconds)
    return await _failed(outcome, outcome.error or "", MISSION_TIMEOUT, _told(events))


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel a stream's mission ``task`` and wait for its record, at most RECORD_SECONDS.

    The mission may be writing its record (shielded): it is waited for however often
    the consumer is cancelled meanwhile (that cancellation is raised after the wait). The
    anyio shield keeps a cancel scope (Starlette's streaming response) from re-delivering
    its cancellation on every turn of the loop while we wait.
    """
    if not task.done():
        task.cancel()
        with anyio.CancelScope(shield=True):
            await to_the_end(asyncio.wait([task], timeout=RECORD_SECONDS))


class _Tokens:
    """Text deltas of one step, merged while their stream's backlog was full: one ``token``
    event when the consumer takes it (the pieces are joined once, then)."""

    __slots__ = ("data", "pieces")

    def __init__(self, data: dict[str, Any], pieces: list[str]) -> None:
        self.data = data
        self.pieces = pieces

    def event(self) -> ProgressEvent:
        return ProgressEvent(kind="token", data={**self.data, "content": "".join(self.pieces)})


def _same_step(event: ProgressEvent, data: dict[str, Any]) -> bool:
    """Whether ``event`` is a text delta that may join the token event whose data is ``data``."""
    if type(event.data.get("content")) is not str or type(data.get("content")) is not str:
        return False
    return event.data.keys() == data.keys() and all(
        value == data[key] for key, value in event.data.items() if key != "content"
    )


class _Backlog:
    """A stream's events on their way from its mission to its consumer.

    Backpressure: at most ``limit`` of the agent's events wait unread (``put``, its
    ``on_event``); one more waits until the consumer takes one, so that a consumer that
    reads slowly (a client taking a byte now and then, within ``api.write_timeout_seconds``)
    holds the mission back between its calls instead of letting its events pile up in
    memory.

    Except a text delta (``token``): it never waits, since it is sent from inside an LLM
    call, whose deadline covers its whole stream; a reader that lags must not turn the
    provider's answer into a ``timeout`` in the metrics and the mission. Once the backlog
    is full, a delta joins the newest queued ``token`` event of its step (the consumer gets
    the same text in fewer events), or is queued beyond the limit as the one later deltas
    join. Their text is bounded by the answer's (``llm.max_response_bytes``).

    ``tell`` never waits: the executor's own few events (``mission_started``, the last
    resorts' ``error``, the ``result``) and the end. None of them may become a point where a
    cancellation lands (a cancelled mission's record, or a saved result, would be lost),
    and the end must be put whatever the backlog.
    """

    __slots__ = ("_arrived", "_items", "_room")

    def __init__(self, limit: int) -> None:
        # each item: [the event (a _Tokens, or _DONE), whether it took room (``put``)]
        self._items: collections.deque[list[Any]] = collections.deque()
        self._room = asyncio.Semaphore(limit)
        self._arrived = asyncio.Event()

    async def put(self, event: ProgressEvent) -> None:
        """Queue one of the agent's events once fewer than ``limit`` of them wait unread
        (a text delta at once, see the class doc)."""
        if event.kind == "token" and self._room.locked():
            self._join(event)
            return
        await self._room.acquire()
        self._push(event, took_room=True)

    def _join(self, event: ProgressEvent) -> None:
        if self._items:
            newest = self._items[-1]
            queued = newest[0]
            if isinstance(queued, _Tokens):
                if _same_step(event, queued.data):
                    queued.pieces.append(event.data["content"])
                    return
            elif (
                isinstance(queued, ProgressEvent)
                and queued.kind == "token"
                and _same_step(event, queued.data)
            ):
                newest[0] = _Tokens(queued.data, [queued.data["content"], event.data["content"]])
                return
        self._push(event, took_room=False)

    async def tell(self, event: ProgressEvent) -> None:
        """Queue one of the executor's own events at once (an ``EventCallback``)."""
        self._push(event, took_room=False)

    def end(self) -> None:
        """Queue the end of the stream (:data:`_DONE`), whatever waits unread."""
        self._push(_DONE, took_room=False)

    def _push(self, item: object, *, took_room: bool) -> None:
        self._items.append([item, took_room])
        self._arrived.set()

    def __len__(self) -> int:
        """The items waiting unread."""
        return len(self._items)

    async def get(self) -> object:
        """Take the next event (or :data:`_DONE`), waiting for one."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        return self._taken(self._items.popleft())

    def get_nowait(self) -> object:
        """Take the next event (or :data:`_DONE`) of a mission that has ended.

        Raises:
            asyncio.QueueEmpty: Nothing waits.
        """
        if not self._items:
            raise asyncio.QueueEmpty
        return self._taken(self._items.popleft())

    def _taken(self, item: list[Any]) -> object:
        event, took_room = item
        if took_room:
            self._room.release()
        return event.event() if isinstance(event, _Tokens) else event


def _told(events: _Backlog | None) -> EventCallback | None:
    """What the executor's own events of a mission go to: its stream's ``tell``, if any."""
    return None if events is None else events.tell


def _has_ended(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` ended with its result: a stream's mission (its record saved), a
    mission's record write."""
    return task.done() and not task.cancelled() and task.exception() is None


class AgentExecutor:
    """Runs each mission with a fresh ``Agent`` or ``LeanAgent``; an ``ExecutorProtocol``.

    Safe to share between concurrent missions on one event loop.
    """

    def __init__(
        self,
        llm: LLMProviderProtocol,
        tools: ToolRegistryProtocol,
        state_store: StateStoreProtocol,
        *,
        agent_settings: AgentSettings | None = None,
        session_folders: SessionFolders | None = None,
    ) -> None:
        """Create an executor.

        Args:
            llm: the provider every agent uses.
            tools: the tools every agent may call.
            state_store: where each session's mission records are kept.
            agent_settings: the agents' limits; defaults to ``AgentSettings()``.
            session_folders: with a session TTL, the workspace's session folders: each
                mission locks and touches its session's folder, which keeps it from the
                sweeps of every process while it runs. ``None`` (no TTL) adds nothing to
                a mission.
        """
        self._llm = llm
        self._folders = session_folders
        self._tools = tools
        self._records = RecordWrites(state_store)
        self._agent_settings = agent_settings or AgentSettings()
        # Weak values: a session's lock lives only while a mission holds or awaits it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # The missions of streams, each in a task of its own (their consumer may be gone).
        self._background: set[asyncio.Task[Any]] = set()

    async def execute_mission(
        self,
        mission: str,
        agent_type: AgentType = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
    ) -> ExecutionResult:
        """Run one mission to its end.

        Args:
            mission: the mission text.
            agent_type: ``"lean"`` or ``"legacy"``.
            session_id: the session to record the mission in; generated when absent.
            mission_id: the mission's id; generated when absent.

        Returns:
            The result; a failed mission has ``status="failed"`` and an ``error``.

        Raises:
            MissionError: an argument is invalid (the message names it).
            asyncio.CancelledError: the mission was cancelled; it is recorded as such.
        """
        request = self._checked(mission, agent_type, session_id, mission_id)
        return await self._run(
            request.mission,
            request.agent_type,
            request.session_id or new_id(),
            request.mission_id or new_id(),
            None,
        )

    async def execute_mission_streaming(
        self,
        mission: str,
        agent_type: AgentType = "lean",
        session_id: str | None = None,
        mission_id: str | None = None,
    ) -> AsyncGenerator[ProgressEvent, None]:
        """Run one mission, yielding its progress events.

        The first event is ``mission_started``, the last ``result`` with the
        :class:`ExecutionResult`. While ``agent.max_queued_events`` of the agent's
        events wait unread, the mission waits for the consumer to take one
        (backpressure). The mission runs in a task of its own; when the
        consumer stops early (``aclose()``, ``break`` under ``aclosing``) or is
        cancelled, that task is cancelled and awaited before this generator ends.
        A consumer cancelled while the mission was saving its result, which it then
        saved, is not cancelled after all: it gets the rest of the events, the
        ``result`` last, as ``execute_mission`` returns that result.

        Args:
            mission: the mission text.
            agent_type: ``"lean"`` or ``"legacy"``.
            session_id: the session to record the mission in; generated when absent.
            mission_id: the mission's id; generated when absent.

        Yields:
            The progress events of the mission.

        Raises:
            MissionError: an argument is invalid (the message names it).
        """
        request = self._checked(mission, agent_type, session_id, mission_id)
        session_id = request.session_id or new_id()
        mission_id = request.mission_id or new_id()
        queue = _Backlog(self._agent_settings.max_queued_events)

        async def produce() -> ExecutionResult:
            try:
                result = await self._run(
                    request.mission, request.agent_type, session_id, mission_id, queue
                )
                await queue.tell(ProgressEvent(kind="result", result=result))
                return result
            finally:
                queue.end()

        task = asyncio.create_task(produce(), name=f"taskforce-mission-{mission_id}")
        # Kept until done: a consumer waits for the record below at most RECORD_SECONDS
        # (a slow store may take longer), and ``drain`` then waits at a shutdown.
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        is_read = False  # the end of the queue (_DONE) was taken
        try:
            try:
                while (item := await queue.get()) is not _DONE:
                    yield cast(ProgressEvent, item)
                is_read = True
                await task  # re-raises what ended the mission abnormally
            except asyncio.CancelledError:
                # another cancellation while the record is awaited is the same stop
                with contextlib.suppress(asyncio.CancelledError):
                    await _stop(task)
                if not _has_ended(task):
                    raise
                # It saved its result while the consumer was being cancelled: the mission
                # ended as its record, log line and metrics say, so the consumer is told
                # that, as execute_mission returns it, rather than "cancelled".
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
            # What the mission queued before it ended, its result last (it is done: no wait).
            while not is_read and (item := queue.get_nowait()) is not _DONE:
                yield cast(ProgressEvent, item)
        finally:
            try:
                await _stop(task)
            finally:
                if _has_ended(task):
                    # It ended (before or despite the consumer leaving): say how, to a
                    # consumer that asked (STREAM_END), since the result event went unread.
                    end = STREAM_END.get()
                    if end is not None:
                        end.result = task.result()

    def _checked(
        self, mission: object, agent_type: object, session_id: object, mission_id: object
    ) -> MissionRequest:
        """The request, checked against the protocol and this executor's limits."""
        return check_mission_request(
            mission,
            agent_type,
            session_id,
            mission_id,
            max_chars=self._agent_settings.max_mission_chars,
        )

    async def drain(self) -> None:
        """Cancel the missions still running in tasks of their own; wait for the records.

        For a shutdown, before the store closes: a stream whose consumer was cancelled
        cancels its mission, but may not be able to wait for its ``cancelled`` record.
        This waits, at most :data:`RECORD_SECONDS` in all and however often it is
        cancelled meanwhile, for those missions and for every record write still under
        way, also one its mission stopped waiting for (``state.save.late``). A write
        still under way after that is given up: cancelled, and logged
        ``state.save.abandoned`` (its record may be missing).

        Raises:
            asyncio.CancelledError: It was cancelled meanwhile (raised once it is done).
        """
        if not self._background and not self._records.pending():
            return  # nothing to wait for: no turn of the loop for a signal to land in
        for task in list(self._background):
            # a record being written is shielded, and waited for RECORD_SECONDS at most from
            # the mission's first cancellation: a second one does not extend that
            task.cancel()
        try:
            await to_the_end(self._settled(RECORD_SECONDS))
        finally:
            self._records.abandon()

    async def _settled(self, seconds: float) -> None:
        """Return once no mission task and no record write is left, or after ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            pending = [t for t in self._background if not t.done()] + self._records.pending()
            if not pending:
                return
            await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    async def _run(
        self,
        mission: str,
        agent_type: AgentType,
        session_id: str,
        mission_id: str,
        events: _Backlog | None,
    ) -> ExecutionResult:
        # The one place the mission context is set: the context variables every layer
        # reads, and the same keys in structlog's, both reset by token when it ends.
        mission_tokens = enter_mission(session_id, mission_id, agent_type)
        log_tokens = structlog.contextvars.bind_contextvars(
            session_id=session_id, mission_id=mission_id, agent_type=agent_type
        )
        folder: str | None = None
        try:
            if self._folders is not None:
                folder = self._folders.enter(session_id)
            started_at = now_iso()
            started = time.perf_counter()
            _LOG.info("mission.started", category="mission")
            if events is not None:
                data = {
                    "session_id": session_id,
                    "mission_id": mission_id,
                    "agent_type": agent_type,
                }
                await events.tell(ProgressEvent(kind="mission_started", data=data))
            status, steps, tool_calls = "cancelled", 0, 0
            # the agent's run, which a cancelled mission's record and log lines read
            runs: list[MissionRun] = []
            runs_token = MISSION_RUNS.set(runs)
            try:
                result = await self._run_locked(
                    mission, agent_type, session_id, mission_id, events, started_at, runs
                )
            except asyncio.CancelledError:
                if runs:  # the steps it finished, as its record keeps them
                    steps, tool_calls = len(runs[-1].steps), runs[-1].tool_calls
                _LOG.warning(
                    "mission.cancelled", category="mission", duration_seconds=seconds_since(started)
                )
                raise
            except Exception as exc:
                status = "failed"
                _LOG.error(
                    "mission.failed",
                    category="mission",
                    error_type=type(exc).__name__,
                    duration_seconds=seconds_since(started),
                    **text_fields("error", exc),
                )
                raise
            else:
                status, steps, tool_calls = result.status, len(result.steps), result.tool_calls
                is_completed = status == "completed"
                (_LOG.info if is_completed else _LOG.error)(
                    "mission.completed" if is_completed else "mission.failed",
                    category="mission",
                    steps=steps,
                    tool_calls=tool_calls,
                    duration_seconds=seconds_since(started),
                    **(
                        {}
                        if is_completed
                        else {"error_type": result.error_type, **text_fields("error", result.error)}
                    ),
                )
                return result
            finally:
                MISSION_RUNS.reset(runs_token)
                # The figures again under ``performance``, so they survive a category filter.
                _LOG.info(
                    "mission.duration.measured",
                    category="performance",
                    status=status,
                    steps=steps,
                    tool_calls=tool_calls,
                    duration_seconds=seconds_since(started),
                )
        finally:
            if folder is not None and self._folders is not None:
                self._folders.leave(folder)
            structlog.contextvars.reset_contextvars(**log_tokens)
            exit_mission(mission_tokens)

    async def _run_locked(
        self,
        mission: str,
        agent_type: AgentType,
        session_id: str,
        mission_id: str,
        events: _Backlog | None,
        started_at: str,
        runs: list[MissionRun],
    ) -> ExecutionResult:
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        cancelled_record: dict[str, Any] = {
            "mission_id": mission_id,
            "agent_type": agent_type,
            "status": "cancelled",
            "final_message": "",
            "error": "cancelled",
            # as the stream's final error event says it (api/_serving.py)
            "error_type": "cancelled",
            "steps": [],
            "started_at": started_at,
        }
        try:
            await lock.acquire()
        except asyncio.CancelledError:
            # Waiting for the lock could take as long as another mission: record
            # in the background rather than hold the cancellation up.
            self._records.start(session_id, cancelled_record, lock=lock, is_best_effort=True)
            raise
        try:
            try:
                # Only the streaming path (it has a listener) streams the LLM turns.
                agent = self._agent(agent_type, stream_llm=events is not None)
                run = agent.run(mission, on_event=None if events is None else events.put)
                seconds = self._agent_settings.mission_timeout_seconds
                if seconds:
                    outcome = await _within_deadline(run, seconds, runs, events)
                else:
                    outcome = await run
            except asyncio.CancelledError:
                if runs:  # the steps the run finished before the cancellation are kept
                    cancelled_record["steps"] = [step_dict(step) for step in runs[-1].steps]
                write = self._records.start(session_id, cancelled_record, is_best_effort=True)
                await self._await_record(write, "cancelled", is_cancelled=True)
                raise
            except Exception as exc:
                outcome = await _failed(_NO_OUTCOME, *crash_error(exc), _told(events))
            result = ExecutionResult(
                session_id,
                mission_id,
                agent_type,
                outcome.status,
                outcome.final_message,
                outcome.steps,
                outcome.tool_calls,
                outcome.error,
                outcome.error_type,
            )
            record = {**cancelled_record, **record_fields(result)}
            save = self._records.start(session_id, record)
            try:
                # Once the agent is done its record is saved whole, even if cancelled meanwhile
                # (then waited for at most RECORD_SECONDS: the mission ends as cancelled).
                await self._await_record(save, result.status)
            except asyncio.CancelledError:
                if not _has_ended(save):
                    raise
                # Saved: the mission ended as its record says, and the cancellation (a
                # client that left, a shutdown) came after that end. Its result, logs and
                # metrics say the same as the record, not "cancelled".
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                return result
            except Exception as exc:
                error_type = class_error_type(exc)
                if isinstance(exc, ValueError):
                    # The request was checked before the mission ran, so a store that still
                    # refuses the id fails the mission; MissionError means a refused request.
                    said = f": invalid session_id: {exception_message(exc)}"
                elif isinstance(exc, StateStoreError):
                    # The store's message names no path or DSN (the log has the detail).
                    said = f": {exception_message(exc)}"
                else:
                    # A store of one's own that raised anything else (a bug in it) fails this
                    # mission only. Its message may name a path or a DSN: only its class is
                    # said (state.save.failed has the message).
                    said = f" ({error_type})"
                error = f"could not save the session state{said}"
                return await _failed(result, error, error_type, _told(events))
            return result
        finally:
            lock.release()

    async def _await_record(
        self, write: asyncio.Future[Any], status: str, *, is_cancelled: bool = False
    ) -> None:
        """Await a mission's record ``write``; once the mission is cancelled, for RECORD_SECONDS.

        One bound for every caller (a request the server gives up, a stream's consumer
        gone, ``taskforce run`` stopped): a store slower than that cannot hold a shutdown
        up. The mission then ends as cancelled, in its result, log line and metrics alike;
        the write goes on on its own and may still land (``state.save.late`` says so).

        Raises:
            asyncio.CancelledError: The mission was cancelled (``is_cancelled``: already).
            Exception: What the write raised.
        """
        try:
            await to_the_end(
                write, at_most_once_cancelled=RECORD_SECONDS, is_cancelled=is_cancelled
            )
        finally:
            if not write.done():
                _LOG.warning(
                    "state.save.late",
                    category="state",
                    status=status,
                    waited_seconds=RECORD_SECONDS,
                )

    def _agent(self, agent_type: AgentType, *, stream_llm: bool) -> Agent | LeanAgent:
        settings = self._agent_settings
        limits: dict[str, Any] = {
            "max_steps": settings.max_steps,
            "tool_timeout_seconds": settings.tool_timeout_seconds,
            "fail_on_tool_error": settings.fail_on_tool_error,
            "max_result_depth": settings.max_result_depth,
        }
        if agent_type == "lean":
            return LeanAgent(
                self._llm,
                self._tools,
                stream_llm=stream_llm,
                max_tool_calls_per_turn=settings.max_tool_calls_per_turn,
                **limits,
            )
        # The legacy flow keeps ``complete``/``generate``, streaming or not.
        return Agent(
            self._llm, self._tools, max_turns_per_step=settings.max_turns_per_step, **limits
        )
