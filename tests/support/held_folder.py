"""A second process that holds a session's workspace folder as a mission of it would."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import clean_env

# The calls AgentExecutor makes around a mission: enter when it starts, leave when it ends.
_HOLD = """
import asyncio, sys
from pathlib import Path
from taskforce.infrastructure.tools import SessionFolders, ToolThreadPool

async def main() -> None:
    pool = ToolThreadPool(1)
    folders = SessionFolders(Path(sys.argv[1]), float(sys.argv[3]), pool)
    name = folders.enter(sys.argv[2])
    await folders.touched()
    print("held" if folders.is_held(name) else "not held", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    folders.leave(name)
    folders.close()
    pool.close()

asyncio.run(main())
"""


@contextlib.contextmanager
def held_folder(workspace: Path, session_id: str, ttl_seconds: float) -> Iterator[str]:
    """Run a process whose mission of ``session_id`` is in flight while the block runs.

    Yields:
        What it said once its mission had started: ``held`` when it holds the folder's
        lock, ``not held`` when not (there is no folder, or no lock to take).
    """
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(workspace), session_id, str(ttl_seconds)],
        env=clean_env(workspace.parent),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        yield process.stdout.readline().strip()
    finally:
        process.stdin.close()
        # The timeout only keeps a regression from hanging the suite; nothing is timed.
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
