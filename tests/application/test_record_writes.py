"""The executor's record writes: a write given up is logged, however it was given up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.application._record_writes import RecordWrites


class _Interrupted:
    """A store whose append is where a second Ctrl-C lands: asyncio.run raises it there."""

    async def append(self, session_id: str, record: Any) -> Any:
        raise KeyboardInterrupt


def test_a_write_a_second_ctrl_c_lands_in_is_logged_as_abandoned() -> None:
    """The KeyboardInterrupt goes on up, and the record given up is logged with its ids."""
    writes = RecordWrites(_Interrupted())  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    started: list[asyncio.Task[None]] = []

    async def mission() -> None:
        started.append(writes.start("s-1", {"mission_id": "m-1", "status": "completed"}))
        await asyncio.sleep(60)

    main = loop.create_task(mission())
    try:
        with capture_logs() as logs, pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(main)
    finally:
        main.cancel()
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        loop.close()
    assert isinstance(started[0].exception(), KeyboardInterrupt)
    abandoned = [
        (log["session_id"], log["mission_id"], log["status"], log["log_level"])
        for log in logs
        if log["event"] == "state.save.abandoned"
    ]
    assert [("s-1", "m-1", "completed", "warning")] == abandoned
    assert [] == writes.pending()
