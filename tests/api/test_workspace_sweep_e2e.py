"""The workspace sweep of a real ``taskforce serve``, beside a mission of another process.

The server sweeps every 0.2 s with a TTL of 60 s; folders are made old with
``os.utime`` instead of waiting for them to age.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pytest

from taskforce.infrastructure.tools import session_folder_name
from tests.support.held_folder import held_folder
from tests.support.processes import Child, clean_env, free_ports, started, wait_until_up

pytestmark = pytest.mark.integration

_TTL = 60
# The bound only keeps a regression from hanging the suite; nothing is timed.
_WAIT_SECONDS = 60.0


def _session(workspace: Path, session_id: str) -> Path:
    """A session folder with a file in it, new."""
    folder = workspace / session_folder_name(session_id)
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text(session_id, encoding="utf-8")
    return folder


def _age(folder: Path) -> None:
    """Set the folder and its file as modified two TTLs ago."""
    old = time.time() - 2 * _TTL
    os.utime(folder / "notes.txt", (old, old))
    os.utime(folder, (old, old))


def _passes(child: Child) -> list[int]:
    """The folders each of the server's sweeps removed, as it logged them."""
    lines = [json.loads(line) for line in child.stderr().splitlines() if line.startswith("{")]
    return [int(e["removed"]) for e in lines if e.get("event") == "state.session_folders.removed"]


def _wait_for(child: Child, passes: int) -> None:
    deadline = time.monotonic() + _WAIT_SECONDS
    while len(_passes(child)) < passes:
        assert child.process.poll() is None, child.stderr()
        assert time.monotonic() < deadline, child.stderr()
        time.sleep(0.05)


def test_an_idle_folder_goes_and_one_another_process_holds_stays(tmp_path: Path) -> None:
    """Another process's mission holds s-busy, aged past the TTL after it started, while
    s-idle is as old: the server's sweep removes s-idle only, and s-busy once the
    mission has ended. Before, both went in the first sweep."""
    workspace = tmp_path / "workspace"
    busy = _session(workspace, "s-busy")
    idle = _session(workspace, "s-idle")
    port = free_ports(1)
    env = clean_env(
        tmp_path,
        TASKFORCE_STATE__SESSION_TTL_SECONDS=str(_TTL),
        TASKFORCE_STATE__SWEEP_INTERVAL_SECONDS="0.2",
    )
    with contextlib.ExitStack() as stack:
        # The server starts while the other process's mission does.
        child = stack.enter_context(started(["serve", "--port", str(port)], env, tmp_path))
        with held_folder(workspace, "s-busy", _TTL) as said:
            assert "held" == said
            wait_until_up(child, [f"http://127.0.0.1:{port}/health"])
            # both as old, as if the mission had run past the TTL without writing
            _age(busy)
            _age(idle)
            _wait_for(child, 1)  # a whole pass, which met both folders
            assert [1] == _passes(child)
            assert not idle.exists()
            assert "s-busy" == (busy / "notes.txt").read_text(encoding="utf-8")
        # The mission has ended: a later sweep removes its folder.
        _wait_for(child, 2)
        assert [1, 1] == _passes(child)
        assert not busy.exists()
        assert [] == os.listdir(workspace)
