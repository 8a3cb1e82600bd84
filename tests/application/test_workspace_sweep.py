"""The sweep removes expired sessions' workspace folders: idle ones only, never one in use."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.application.container import build_container
from taskforce.application.executor import AgentExecutor
from taskforce.application.sweep import SessionSweeper
from taskforce.config import Settings
from taskforce.core.interfaces.state import SessionExpiry
from taskforce.infrastructure.tools import (
    SessionFolders,
    ToolThreadPool,
    _session_folders,
    session_folder_name,
)
from tests.core.domain.fakes import EchoLLM, FakeRegistry, FakeTool, MemoryStateStore, ok_handler
from tests.support.held_folder import held_folder

_TTL = 3600
_OLD = time.time() - 2 * _TTL


class _Store:
    """A store with a TTL whose sweeps delete nothing (another replica deleted the rows)."""

    backend = "fake"
    session_ttl_seconds = _TTL

    async def expire_sessions(self) -> SessionExpiry:
        return SessionExpiry(0)


@pytest.fixture(name="pool")
async def fixture_pool() -> AsyncIterator[ToolThreadPool]:
    pool = ToolThreadPool(2)
    yield pool
    pool.close()


def _folders(root: Path, pool: ToolThreadPool) -> SessionFolders:
    return SessionFolders(root, _TTL, pool)


def _age(path: Path, when: float = _OLD) -> None:
    """Set ``path`` and everything in it (never through a symlink) as modified at ``when``."""
    for folder, folders, files in os.walk(path, topdown=False):
        for name in folders + files:
            os.utime(Path(folder) / name, (when, when), follow_symlinks=False)
        os.utime(folder, (when, when))


def _session(root: Path, session_id: str, *, old: bool = True) -> Path:
    folder = root / session_folder_name(session_id)
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "a.txt").write_text("a")
    if old:
        _age(folder)
    return folder


async def _sweep(folders: SessionFolders) -> list[MutableMapping[str, Any]]:
    with capture_logs() as logs:
        await SessionSweeper(_Store(), 60, folders).sweep()
    return [log for log in logs if log["event"] == "state.session_folders.removed"]


async def _in_flight(
    folders: SessionFolders, session_id: str
) -> tuple[asyncio.Task[Any], asyncio.Event]:
    """A mission of ``session_id`` started and held in its first model call until the
    event returned is set."""
    gate = asyncio.Event()
    llm = EchoLLM(gate=gate)
    registry = FakeRegistry(FakeTool("echo", ok_handler))
    executor = AgentExecutor(llm, registry, MemoryStateStore(), session_folders=folders)
    mission = asyncio.create_task(executor.execute_mission("m", session_id=session_id))
    await llm.entered.wait()
    return mission, gate


class TestFolderSweep:
    async def test_an_old_idle_folder_goes_and_a_recent_one_stays(
        self, tmp_path: Path, pool: ToolThreadPool
    ) -> None:
        """Old folders (odd names too) are removed and counted; a folder with one recent
        file deep inside stays, though the folder itself is old."""
        old = [
            _session(tmp_path, "s-old"),
            _session(tmp_path, "a/b é"),
            _session(tmp_path, "x" * 200),
        ]
        recent = _session(tmp_path, "s-recent")
        (recent / "notes" / "new.txt").write_text("fresh")  # the rest of it stays old
        logs = await _sweep(_folders(tmp_path, pool))
        assert [False, False, False] == [folder.exists() for folder in old]
        assert (recent / "notes" / "new.txt").exists()
        assert [(3, 0, None, "info", "state", _TTL)] == [
            (e["removed"], e["failed"], e["error"], e["log_level"], e["category"], e["ttl_seconds"])
            for e in logs
        ]

    async def test_names_that_are_no_session_folder_stay(
        self, tmp_path: Path, pool: ToolThreadPool
    ) -> None:
        """A file, a symlink to a folder, and folders named outside the alphabet stay."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (tmp_path / "ws").mkdir()
        root = tmp_path / "ws"
        others = [root / ".hidden", root / "a.b", root / "%zz", root / "~short"]
        for folder in others:
            folder.mkdir()
        (root / "file").write_text("x")
        (root / "link").symlink_to(outside, target_is_directory=True)
        (root / ".taskforce-write-0123456789abcdef.tmp").write_text("x")
        _age(root)
        assert [] == await _sweep(_folders(root, pool))
        assert 7 == len(os.listdir(root))

    async def test_a_symlink_inside_is_removed_as_a_link_and_its_target_survives(
        self, tmp_path: Path, pool: ToolThreadPool
    ) -> None:
        root, outside = tmp_path / "ws", tmp_path / "outside"
        (outside / "deep").mkdir(parents=True)
        (outside / "deep" / "keep.txt").write_text("keep")
        folder = _session(root, "s1", old=False)
        (folder / "to-dir").symlink_to(outside, target_is_directory=True)
        (folder / "to-file").symlink_to(outside / "deep" / "keep.txt")
        _age(folder)
        _age(outside, time.time())  # the target is recent: it must not keep the folder
        await _sweep(_folders(root, pool))
        assert not folder.exists()
        assert "keep" == (outside / "deep" / "keep.txt").read_text()

    async def test_a_folder_that_cannot_be_removed_is_logged_and_tried_again(
        self, tmp_path: Path, pool: ToolThreadPool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import shutil

        folder = _session(tmp_path, "s1")
        real = shutil.rmtree

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied", "/secret/path")

        monkeypatch.setattr(shutil, "rmtree", refuse)
        folders = _folders(tmp_path, pool)
        logs = await _sweep(folders)
        # Gone from the session's name at once, whole; what is left is tried again.
        assert not folder.exists()
        [tombstone] = os.listdir(tmp_path)
        assert "a" == (tmp_path / tombstone / "notes" / "a.txt").read_text()
        assert [(0, 1, "PermissionError: Permission denied", "warning")] == [
            (e["removed"], e["failed"], e["error"], e["log_level"]) for e in logs
        ]
        monkeypatch.setattr(shutil, "rmtree", real)
        assert [1] == [e["removed"] for e in await _sweep(folders)]
        assert [] == os.listdir(tmp_path)

    async def test_a_tombstone_is_removed_unless_another_pass_is_removing_it(
        self, tmp_path: Path, pool: ToolThreadPool
    ) -> None:
        """What a pass renamed but could not delete (it failed, its process was killed)
        goes at the next; one another pass holds is left to it, not counted as failed."""
        import fcntl

        tombstone = tmp_path / ".taskforce-swept-0123456789abcdef"
        (tombstone / "deep").mkdir(parents=True)
        (tombstone / "deep" / "a.txt").write_text("a")
        folders = _folders(tmp_path, pool)
        other_pass = os.open(tombstone, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(other_pass, fcntl.LOCK_EX)
            assert [] == await _sweep(folders)
            assert tombstone.exists()
        finally:
            os.close(other_pass)
        assert [(1, 0)] == [(e["removed"], e["failed"]) for e in await _sweep(folders)]
        assert [] == os.listdir(tmp_path)

    async def test_a_workspace_that_cannot_be_listed_is_logged_not_raised(
        self, tmp_path: Path, pool: ToolThreadPool
    ) -> None:
        (tmp_path / "file").write_text("x")
        logs = await _sweep(_folders(tmp_path / "file", pool))
        assert [(0, 1, "NotADirectoryError: Not a directory")] == [
            (e["removed"], e["failed"], e["error"]) for e in logs
        ]
        assert [] == await _sweep(_folders(tmp_path / "missing", pool))


class TestMissions:
    async def test_a_folder_with_a_mission_in_flight_stays(
        self, tmp_path: Path, pool: ToolThreadPool
    ) -> None:
        """A mission running in this process keeps its session's folder, even one that
        aged since it started; it goes at the sweep after the mission ended."""
        folder = _session(tmp_path, "s1")
        folders = _folders(tmp_path, pool)
        mission, gate = await _in_flight(folders, "s1")
        _age(folder)  # as if it ran for longer than the TTL without writing
        assert [] == await _sweep(folders)
        assert folder.exists()
        gate.set()
        assert "completed" == (await mission).status
        _age(folder)
        assert [1] == [e["removed"] for e in await _sweep(folders)]

    async def test_a_new_mission_touches_its_folder(
        self, tmp_path: Path, pool: ToolThreadPool
    ) -> None:
        """An old folder whose session has just run a mission (that wrote nothing) stays;
        another session's old folder goes."""
        folder, other = _session(tmp_path, "s1"), _session(tmp_path, "s2")
        folders = _folders(tmp_path, pool)
        registry = FakeRegistry(FakeTool("echo", ok_handler))
        executor = AgentExecutor(EchoLLM(), registry, MemoryStateStore(), session_folders=folders)
        assert "completed" == (await executor.execute_mission("m", session_id="s1")).status
        await folders.touched()
        assert [1] == [e["removed"] for e in await _sweep(folders)]
        assert folder.exists()
        assert not other.exists()
        assert not folders.is_in_use(session_folder_name("s1"))

    async def test_a_full_tool_pool_holds_no_mission_up(self, tmp_path: Path) -> None:
        """The touch waits for a tool thread in the background: a mission starts and ends
        while every thread is taken, and its folder is touched once one is free."""
        folder = _session(tmp_path, "s1")
        pool = ToolThreadPool(1)
        release = threading.Event()
        try:
            held = asyncio.ensure_future(pool.run(release.wait))
            await asyncio.sleep(0)  # held is submitted: any later call queues behind it
            folders = _folders(tmp_path, pool)
            registry = FakeRegistry(FakeTool("echo", ok_handler))
            store = MemoryStateStore()
            executor = AgentExecutor(EchoLLM(), registry, store, session_folders=folders)
            assert "completed" == (await executor.execute_mission("m", session_id="s1")).status
            release.set()
            await held
            await folders.touched()
            assert [] == await _sweep(folders)
            assert folder.exists()
        finally:
            release.set()
            pool.close()

    async def test_with_no_ttl_nothing_is_swept_and_missions_do_nothing(
        self, tmp_path: Path
    ) -> None:
        """TTL 0 (the default): the container has no session folders, its sweeper no task."""
        settings = Settings(workspace_dir=tmp_path / "ws", state_dir=tmp_path / "state")
        folder = _session(settings.workspace_dir, "s1")
        container = build_container(settings, llm_provider=EchoLLM())
        try:
            assert container.session_folders is None
            sweeper = SessionSweeper(container.state_store, 60, container.session_folders)
            assert None is await sweeper.sweep()
            sweeper.start()
            assert not sweeper.is_running
            assert folder.exists()
        finally:
            await container.aclose()

    async def test_with_a_ttl_the_container_wires_the_folders(self, tmp_path: Path) -> None:
        settings = Settings(
            workspace_dir=tmp_path / "ws",
            state_dir=tmp_path / "state",
            state={"session_ttl_seconds": _TTL},
        )
        folder = _session(settings.workspace_dir, "s1")
        container = build_container(settings, llm_provider=EchoLLM())
        try:
            assert container.session_folders is not None
            sweeper = SessionSweeper(container.state_store, 60, container.session_folders)
            await sweeper.sweep()
            assert not folder.exists()
        finally:
            await container.aclose()


class TestOtherProcesses:
    """Missions of other processes on the same workspace (other workers, replicas)."""

    async def test_a_folder_another_process_holds_stays_until_its_mission_ends(
        self, tmp_path: Path, pool: ToolThreadPool
    ) -> None:
        """Before, only the touch at the start of the other process's mission kept its
        folder: aged past the TTL, it went while the mission ran."""
        root = tmp_path / "ws"
        folder = _session(root, "s1")
        idle = _session(root, "s2")
        folders = _folders(root, pool)
        with held_folder(root, "s1", _TTL) as said:
            assert "held" == said
            _age(folder)  # as if the mission ran for longer than the TTL without writing
            assert [1] == [e["removed"] for e in await _sweep(folders)]
            assert not idle.exists()
            assert "a" == (folder / "notes" / "a.txt").read_text()
        _age(folder)
        assert [1] == [e["removed"] for e in await _sweep(folders)]
        assert not folder.exists()

    async def test_a_mission_that_starts_while_the_sweep_walks_its_folder_keeps_it(
        self, tmp_path: Path, pool: ToolThreadPool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A mission of another process starts (touches the folder) after the sweep found
        the folder idle, before it removed it: the check under the lock sees the touch."""
        folder = _session(tmp_path, "s1")
        real = _session_folders._is_idle

        def walked_then_touched(*args: Any) -> bool:
            idle = real(*args)
            os.utime(folder)  # what the other process's mission does when it starts
            return idle

        monkeypatch.setattr(_session_folders, "_is_idle", walked_then_touched)
        assert [] == await _sweep(_folders(tmp_path, pool))
        assert "a" == (folder / "notes" / "a.txt").read_text()

    async def test_a_folder_is_renamed_away_before_it_is_deleted(
        self, tmp_path: Path, pool: ToolThreadPool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A mission that starts while a folder is deleted finds no folder, never half of
        one: the deleting happens under another name."""
        import shutil

        folder = _session(tmp_path, "s1")
        real = shutil.rmtree
        seen: list[bool] = []

        def rmtree(*args: Any, **kwargs: Any) -> None:
            seen.append(folder.exists())
            real(*args, **kwargs)

        monkeypatch.setattr(shutil, "rmtree", rmtree)
        assert [1] == [e["removed"] for e in await _sweep(_folders(tmp_path, pool))]
        assert [False] == seen
        assert [] == os.listdir(tmp_path)

    async def test_a_mission_in_flight_touches_its_folder_again(
        self, tmp_path: Path, pool: ToolThreadPool
    ) -> None:
        """Every quarter of the TTL, the folder of a mission in flight is touched again,
        which another host's sweep sees; when the mission ends its lock is released."""
        folder = _session(tmp_path, "s1")
        folders = SessionFolders(tmp_path, 0.2, pool)
        mission, gate = await _in_flight(folders, "s1")
        await folders.touched()
        assert folders.is_held(folder.name)
        _age(folder)
        # The bound only keeps a regression from hanging the suite; nothing is timed.
        for _ in range(500):
            if folder.stat().st_mtime > _OLD + _TTL:
                break
            await asyncio.sleep(0.02)
        assert folder.stat().st_mtime > _OLD + _TTL
        gate.set()
        assert "completed" == (await mission).status
        assert not folders.is_held(folder.name)
        assert not folders.is_in_use(folder.name)

    async def test_closing_releases_the_locks(self, tmp_path: Path, pool: ToolThreadPool) -> None:
        folder = _session(tmp_path, "s1")
        folders = _folders(tmp_path, pool)
        folders.enter("s1")
        await folders.touched()
        assert folders.is_held(folder.name)
        other = _folders(tmp_path, pool)  # another process's sweep, as the lock sees it
        _age(folder)
        assert [] == await _sweep(other)
        folders.close()
        assert not folders.is_held(folder.name)
        assert [1] == [e["removed"] for e in await _sweep(other)]


class TestWallClockSteps:
    async def test_a_step_forward_of_the_wall_clock_removes_no_folder_early(
        self, tmp_path: Path, pool: ToolThreadPool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The wall clock steps 10 TTLs forward after the folders were made: the folder
        written just now stays, the one idle for two TTLs before the step still goes."""
        folders = _folders(tmp_path, pool)
        old = _session(tmp_path, "s-old")
        recent = _session(tmp_path, "s-recent", old=False)
        wall = time.time
        monkeypatch.setattr(time, "time", lambda: wall() + 10 * _TTL)

        logs = await _sweep(folders)

        assert (False, True) == (old.exists(), recent.exists())
        assert [1] == [e["removed"] for e in logs]
