"""The state store's part of ``/health``: one check in flight at a time, each answer by a deadline.

Holds the check in flight (a task of the app's event loop) between requests: a
check that outlives its requests' deadlines is joined by the next ones rather
than started again, so a database or a filesystem that hangs is asked once, not
once per probe.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, cast

from taskforce.core.interfaces.outcome import (
    OwnBaseException,
    no_answer_within,
    raise_as_failure,
    retrieve_outcome,
)
from taskforce.core.interfaces.state import HealthCheckingStateStoreProtocol, StateStoreHealth

__all__ = ["StateStoreCheck"]


class StateStoreCheck:
    """Checks the state store for ``/health``, sharing one check among concurrent requests.

    Args:
        store: the container's state store (a proxy forwards ``check_health``); one
            without ``check_health`` and a ``backend`` name is not reported.
        deadline_seconds: how long one request waits for the check, above 0.

    Raises:
        ValueError: ``deadline_seconds`` is not above 0.
    """

    def __init__(self, store: object, deadline_seconds: float) -> None:
        if not deadline_seconds > 0:
            raise ValueError(f"deadline_seconds must be above 0, got {deadline_seconds!r}")
        is_checked = hasattr(store, "check_health") and isinstance(
            getattr(store, "backend", None), str
        )
        self._store = cast(HealthCheckingStateStoreProtocol, store) if is_checked else None
        self._deadline = deadline_seconds
        self._in_flight: asyncio.Task[StateStoreHealth] | None = None

    async def report(self) -> dict[str, Any] | None:
        """The ``state_store`` field of ``/health``; ``None`` for a store without a check.

        Returns:
            ``{"backend": ..., "reachable": bool}``, with ``"error"`` (a short reason)
            when not reachable; a check still running at the deadline reads
            ``TimeoutError: no answer within N s (state.health_timeout_seconds)``, a check
            that raised its error's class
            (``TypeError`` for one that is not the protocol's). Raises nothing, so
            ``/health`` answers whatever the store does.
        """
        store = self._store
        if store is None:
            return None
        backend = str(store.backend)
        task = self._in_flight
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            # A context of its own: the check serves every request that joins it, not
            # the first one's (whose request id a log line of the store would carry).
            task = asyncio.create_task(_checked(store), context=contextvars.Context())
            task.add_done_callback(retrieve_outcome)
            self._in_flight = task
        # asyncio.wait, not wait_for: a request that gives up (or is cancelled) leaves
        # the shared check running for the requests that joined it.
        done, _ = await asyncio.wait({task}, timeout=self._deadline)
        if not done:
            said = no_answer_within(self._deadline, "state.health_timeout_seconds")
            return {"backend": backend, "reachable": False, "error": f"TimeoutError: {said}"}
        health = _outcome(task)
        body: dict[str, Any] = {"backend": backend, "reachable": health.is_reachable is True}
        if not body["reachable"]:
            body["error"] = str(health.error or "unknown")
        return body

    async def aclose(self) -> None:
        """Cancel a check still in flight (the app is stopping); waits for it by the deadline."""
        task, self._in_flight = self._in_flight, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=self._deadline)


async def _checked(store: HealthCheckingStateStoreProtocol) -> StateStoreHealth:
    """Run ``store``'s check, called and awaited inside the task: a store of one's own whose
    ``check_health`` is not the protocol's (synchronous, or answering something else than a
    ``StateStoreHealth``) fails it with a ``TypeError`` instead of failing ``/health``."""
    try:
        health = await store.check_health()
    except BaseException as exc:
        # a store's own SystemExit out of this task would stop the event loop
        raise_as_failure(exc)
    if not isinstance(health, StateStoreHealth):
        raise TypeError(f"check_health returned {type(health).__name__}, not StateStoreHealth")
    return health


def _outcome(task: asyncio.Task[StateStoreHealth]) -> StateStoreHealth:
    """What a finished check found; one cancelled (by ``aclose``, the app stopping while a
    request waited) or raising (against its contract) is unreachable by that class."""
    if task.cancelled():
        return StateStoreHealth(is_reachable=False, error="CancelledError")
    try:
        return task.result()
    except OwnBaseException as exc:  # a SystemExit of the store's own, say
        return StateStoreHealth(is_reachable=False, error=type(exc.raised).__name__)
    except Exception as exc:
        return StateStoreHealth(is_reachable=False, error=type(exc).__name__)
