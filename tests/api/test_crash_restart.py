"""A ``taskforce serve`` killed outright (SIGKILL) mid-mission, then started again on the
same ``state_dir``, ``workspace_dir`` and database: what it left, and what the new one serves.

The kill lands while a mission of the session sleeps in a tool, after it wrote a file; the
temp files a kill during a write would leave are planted just before it (a kill inside
a write cannot be aimed), as new as such a file would be.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from taskforce.infrastructure.tools import session_folder_name
from tests.support.processes import Child, clean_env, free_ports, started, wait_until_up

pytestmark = pytest.mark.integration

# The bound only keeps a regression from hanging the suite; nothing is timed.
_WAIT_SECONDS = 60.0
_SESSION = "crashed"
_RECORD_KEYS = {
    "mission_id",
    "agent_type",
    "status",
    "started_at",
    "finished_at",
    "final_message",
    "error",
    "error_type",
    "tool_calls",
    "steps",
}


def _execute(port: int, mission: str) -> httpx.Response:
    body = {"mission": mission, "session_id": _SESSION}
    return httpx.post(f"http://127.0.0.1:{port}/api/v1/execute", json=body, timeout=_WAIT_SECONDS)


def _cut_off(port: int) -> None:
    """A mission that writes b.txt and then sleeps until the server is killed under it."""
    with contextlib.suppress(httpx.HTTPError):
        mission = 'tool:file_write {"path": "b.txt", "content": "b"}\ntool:sleep {"seconds": 60}'
        _execute(port, mission)


def _wait_for(what: str, done: Callable[[], bool], child: Child) -> None:
    deadline = time.monotonic() + _WAIT_SECONDS
    while not done():
        assert child.process.poll() is None, child.stderr()
        assert time.monotonic() < deadline, f"{what}:\n{child.stderr()}"
        time.sleep(0.05)


def _events(child: Child, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in child.stderr().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("event") == name]


@pytest.mark.parametrize("backend", ["file", "postgres"])
def test_a_killed_server_started_again_serves_the_session_at_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """After the kill: the session reads whole (its one finished record, not the killed
    mission's), its next mission completes, and the temp files a kill mid-write leaves
    (in the workspace, in ``state_dir``) are removed by the new process."""
    extra = {}
    if backend == "postgres":
        extra = {
            "TASKFORCE_STATE__BACKEND": "postgres",
            "TASKFORCE_STATE__DSN": request.getfixturevalue("postgres_dsn"),
        }
    env = clean_env(tmp_path, **extra)
    port = free_ports(1)
    folder = tmp_path / "workspace" / session_folder_name(_SESSION)
    leftovers = [folder / ".taskforce-write-0123456789abcdef.tmp"]
    if backend == "file":
        leftovers.append(tmp_path / "state" / f".{_SESSION}.0123456789abcdef.tmp")
    with started(["serve", "--port", str(port)], env, tmp_path) as first:
        wait_until_up(first, [f"http://127.0.0.1:{port}/health"])
        done = _execute(port, 'tool:file_write {"path": "a.txt", "content": "kept"}\nsay done')
        assert "completed" == done.json()["status"]
        cut = threading.Thread(target=_cut_off, args=(port,))
        cut.start()
        _wait_for("the mission's file", (folder / "b.txt").exists, first)
        for leftover in leftovers:
            leftover.write_bytes(b"half a writ")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=_WAIT_SECONDS)
        cut.join(timeout=_WAIT_SECONDS)
    with started(["serve", "--port", str(port)], env, tmp_path) as second:
        wait_until_up(second, [f"http://127.0.0.1:{port}/health"])
        read = httpx.get(f"http://127.0.0.1:{port}/api/v1/sessions/{_SESSION}", timeout=30)
        assert 200 == read.status_code, read.text
        (record,) = read.json()["missions"]
        assert (done.json()["mission_id"], "completed") == (record["mission_id"], record["status"])
        assert _RECORD_KEYS == set(record)
        assert "completed" == _execute(port, "say again").json()["status"]
        _wait_for("the leftovers gone", lambda: not any(p.exists() for p in leftovers), second)
        assert ["a.txt", "b.txt"] == sorted(os.listdir(folder))  # as list_dir shows it
        removed = {
            kind: [e["files"] for e in _events(second, f"{kind}.tempfiles.removed")]
            for kind in ("tool", "state")
        }
        assert {"tool": [1], "state": [1] if backend == "file" else []} == removed
