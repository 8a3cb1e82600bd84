"""A file state store whose appends wait until the test lets them go.

For tests of what happens while a mission's record is being written: slower than
any bound the executor or the server puts on that wait.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from taskforce.infrastructure.state import FileStateStore

__all__ = ["HeldStore"]


class HeldStore(FileStateStore):
    """The file store, whose ``append`` waits for ``released``.

    A subclass, not a wrapper that forwards through ``__getattr__``: from Python 3.12 on,
    ``isinstance`` against a runtime-checkable Protocol looks attributes up statically,
    so such a wrapper would not be a ``StateStoreProtocol``.

    Attributes:
        appending: Set when an append starts (the mission ended; its record is on its way).
        released: Set by the test to let the append go on.
        landed: Set once the append is over (written or failed).
    """

    def __init__(self, state_dir: Path) -> None:
        """Hold the appends of a file store in ``state_dir``."""
        super().__init__(state_dir)
        self.appending = asyncio.Event()
        self.released = asyncio.Event()
        self.landed = asyncio.Event()

    async def append(self, session_id: str, record: Any) -> Any:
        """Append once the test released the store; ``landed`` is set however it ends."""
        self.appending.set()
        await self.released.wait()
        try:
            return await super().append(session_id, record)
        finally:
            self.landed.set()
