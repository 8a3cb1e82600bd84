"""The executor's record writes: each in a task of its own, kept until it ends.

A write outlives the mission's wait for it (``RECORD_SECONDS``), so something must
hold it, wait for it at a shutdown and say when it is given up
(``state.save.abandoned``): a record lost without a word is what this prevents.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import structlog

from taskforce.application._mission_support import now_iso, seconds_since, store_failure_fields
from taskforce.core.interfaces.outcome import is_caller_cancelled, raise_as_failure
from taskforce.core.interfaces.state import StateStoreProtocol

__all__ = ["RecordWrites"]

_LOG = structlog.get_logger("taskforce.application.executor")


class RecordWrites:
    """Appends mission records, each in a task that no cancellation of its mission reaches.

    Only :meth:`abandon` and the end of the event loop (``asyncio.run`` after a second
    Ctrl-C, whose ``KeyboardInterrupt`` may land in the write itself) stop a write, and
    each write given up is logged once. For one event loop.
    """

    def __init__(self, state_store: StateStoreProtocol) -> None:
        """Write to ``state_store``."""
        self._state = state_store
        # each write under way -> the fields of its state.save.abandoned line
        self._writes: dict[asyncio.Task[None], dict[str, str]] = {}

    def start(
        self,
        session_id: str,
        record: dict[str, Any],
        *,
        lock: asyncio.Lock | None = None,
        is_best_effort: bool = False,
    ) -> asyncio.Task[None]:
        """Start appending ``record`` to the session's state.

        Args:
            session_id: The session to append to.
            record: The mission's record (``mission_id`` and ``status`` are logged).
            lock: The session's lock, to take first (the caller does not hold it).
            is_best_effort: Swallow what the store raised (it is logged): the record of
                a cancelled mission, whose cancellation is what must go on.

        Returns:
            The write's task; it raises what the store raised.
        """
        fields = {
            "session_id": session_id,
            "mission_id": record["mission_id"],
            "status": record["status"],
        }
        write = asyncio.create_task(self._write(session_id, record, lock, is_best_effort))
        self._writes[write] = fields
        write.add_done_callback(self._forget)
        return write

    def pending(self) -> list[asyncio.Task[None]]:
        """The writes still under way."""
        return [write for write in self._writes if not write.done()]

    def abandon(self) -> None:
        """Give up every write still under way: log it, then cancel it (its record may be lost)."""
        for write, fields in list(self._writes.items()):
            del self._writes[write]  # logged here: its own cancellation logs nothing more
            _LOG.warning("state.save.abandoned", category="state", **fields)
            write.cancel()

    def _forget(self, write: asyncio.Task[None]) -> None:
        self._writes.pop(write, None)

    async def _write(
        self,
        session_id: str,
        record: dict[str, Any],
        lock: asyncio.Lock | None,
        is_best_effort: bool,
    ) -> None:
        try:
            if lock is None:
                await self._append(session_id, record)
            else:
                async with lock:
                    await self._append(session_id, record)
        except Exception:
            if not is_best_effort:
                raise
        except BaseException:
            # Given up, but not by abandon(), which logged it: the event loop is ending
            # (a cancellation), or a second Ctrl-C, which asyncio.run raises as a
            # KeyboardInterrupt wherever the loop is, landed in this write itself.
            fields = self._writes.pop(cast(asyncio.Task[None], asyncio.current_task()), None)
            if fields is not None:
                _LOG.warning("state.save.abandoned", category="state", **fields)
            raise

    async def _append(self, session_id: str, record: dict[str, Any]) -> None:
        """Append the record to the session's state; logs the save, any drop, any failure."""
        started = time.perf_counter()
        try:
            saved = await self._state.append(session_id, {**record, "finished_at": now_iso()})
        except BaseException as exc:
            if not isinstance(exc, Exception) and is_caller_cancelled(exc):
                raise  # given up (abandon, the loop ending): _write says so
            _LOG.error(
                "state.save.failed",
                category="state",
                **store_failure_fields(exc),
                duration_ms=seconds_since(started) * 1000,
            )
            # a store's own SystemExit out of this task would stop the event loop
            raise_as_failure(exc)
        records, size_bytes, dropped = _reported(saved)
        _LOG.debug(
            "state.saved",
            category="state",
            records=records,
            size_bytes=size_bytes,
            duration_ms=seconds_since(started) * 1000,
        )
        if dropped:
            _LOG.info(
                "state.records.dropped",
                category="state",
                dropped=dropped,
                records=records,
                size_bytes=size_bytes,
            )


#: The counts of an ``AppendResult``, in the order :func:`_reported` returns them.
_REPORTED = ("records", "size_bytes", "dropped")


def _reported(saved: object) -> tuple[int | None, int | None, int]:
    """The records, size and dropped records an append reported, for its log lines.

    The append returned, so the record is written: what a store of one's own hands back
    instead of an ``AppendResult`` (``None``, a dict) or a count that is no ``int`` is
    left out (``None``; no record dropped), never a failure of the write.
    """
    counts: list[int | None] = []
    for name in _REPORTED:
        try:
            count = getattr(saved, name, None)
        except Exception:  # a property of the store's own that raises
            count = None
        counts.append(count if type(count) is int else None)
    records, size_bytes, dropped = counts
    return records, size_bytes, dropped or 0
