"""Tests of FileStateStore: round trips, corruption, atomic saves and session id checks."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from structlog.testing import capture_logs

from taskforce.core.interfaces.state import (
    ExpiryProgress,
    SessionExpiry,
    StateStoreHealth,
    StateStoreProtocol,
)
from taskforce.errors import StateCorruptedError, StateStoreError
from taskforce.infrastructure.state import FileStateStore, StateLimits
from taskforce.infrastructure.state._file_io import LOCK_DIR, expire_files, stripe_lock


def _listing(directory: Path) -> list[str]:
    """The directory's entries but the lock folder, sorted."""
    return sorted(name for name in os.listdir(directory) if name != LOCK_DIR)


@pytest.fixture(name="state_dir")
def fixture_state_dir(tmp_path: Path) -> Path:
    """A state directory that does not exist yet."""
    return tmp_path / "state"


@pytest.fixture(name="store")
def fixture_store(state_dir: Path) -> FileStateStore:
    """A store over the test's state directory."""
    return FileStateStore(state_dir)


class TestRoundTrip:
    def test_satisfies_protocol(self, store: FileStateStore) -> None:
        """The store is a StateStoreProtocol at runtime."""
        typed: StateStoreProtocol = store
        assert isinstance(typed, StateStoreProtocol)

    async def test_save_then_load(self, store: FileStateStore) -> None:
        """A saved state loads back equal, including non-ASCII text and nesting."""
        state = {"history": [{"role": "user", "content": "grüß dich ✓"}], "n": 3, "ok": True}
        await store.save("s1", state)
        assert state == await store.load("s1")

    async def test_unknown_session_loads_none(self, store: FileStateStore) -> None:
        """Loading a session that was never saved returns None without creating anything."""
        assert None is await store.load("never")
        assert not store.state_dir.exists()

    async def test_save_creates_dir_and_one_file(self, store: FileStateStore) -> None:
        """The first save creates the directory and writes <session_id>.json."""
        await store.save("abc", {"a": 1})
        assert ["abc.json"] == _listing(store.state_dir)

    async def test_file_is_sorted_utf8_json(self, store: FileStateStore) -> None:
        """The file holds sorted-key JSON with non-ASCII characters unescaped."""
        await store.save("s", {"b": "é", "a": 1})
        assert '{"a": 1, "b": "é"}' == (store.state_dir / "s.json").read_text(encoding="utf-8")

    async def test_save_replaces_whole_state(self, store: FileStateStore) -> None:
        """A second save replaces the state; no key of the first survives."""
        await store.save("s", {"old": 1})
        await store.save("s", {"new": 2})
        assert {"new": 2} == await store.load("s")

    async def test_sessions_are_independent(self, store: FileStateStore) -> None:
        """Each session has its own state."""
        await store.save("a", {"v": "a"})
        await store.save("b", {"v": "b"})
        assert {"v": "a"} == await store.load("a")
        assert {"v": "b"} == await store.load("b")

    async def test_fifty_concurrent_saves(self, store: FileStateStore) -> None:
        """Fifty concurrent saves of different sessions all land, whole, with no temp files."""
        await asyncio.gather(*(store.save(f"s{i}", {"i": i}) for i in range(50)))
        loaded = await asyncio.gather(*(store.load(f"s{i}") for i in range(50)))
        assert [{"i": i} for i in range(50)] == loaded
        assert sorted(f"s{i}.json" for i in range(50)) == sorted(_listing(store.state_dir))

    async def test_concurrent_saves_of_one_session_leave_one_whole(
        self, store: FileStateStore
    ) -> None:
        """Racing saves of one session leave exactly one of the states, never a mix."""
        states = [{"writer": i, "blob": "x" * 10_000} for i in range(20)]
        await asyncio.gather(*(store.save("same", state) for state in states))
        assert await store.load("same") in states
        assert ["same.json"] == _listing(store.state_dir)


class TestCorruption:
    @pytest.mark.parametrize(
        "content",
        [
            b"{not json",
            b"",
            b"[1, 2]",
            b'"text"',
            b"\xff\xfe{}",
            b'{"missions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            b'{"missions": [], "x": NaN}',
            b'{"missions": [{"t": -Infinity}]}',
        ],
        ids=["bad-json", "empty", "list", "string", "not-utf8", "too-deep", "nan", "infinity"],
    )
    async def test_corrupt_file_raises_and_is_untouched(
        self, store: FileStateStore, content: bytes
    ) -> None:
        """Bad JSON or a non-object raises StateCorruptedError and leaves the file as it was."""
        store.state_dir.mkdir()
        path = store.state_dir / "broken.json"
        path.write_bytes(content)
        with pytest.raises(StateCorruptedError) as info:
            await store.load("broken")
        assert "broken" == info.value.session_id
        assert str(path) == info.value.path
        assert content == path.read_bytes()

    async def test_a_file_an_editor_saved_with_a_byte_order_mark_reads(
        self, store: FileStateStore
    ) -> None:
        """A session file saved by an editor that writes a UTF-8 byte order mark is read
        as without it, before and after an append (which took it already)."""
        await store.save("edited", {"missions": [{"n": 1}], "note": "é"})
        path = store.state_dir / "edited.json"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        assert {"missions": [{"n": 1}], "note": "é"} == await store.load("edited")
        await store.append("edited", {"n": 2})
        appended = await store.load("edited")
        assert appended is not None
        assert [{"n": 1}, {"n": 2}] == appended["missions"]

    async def test_unreadable_state_raises_store_error(self, store: FileStateStore) -> None:
        """A state path that cannot be read (here a directory) raises StateStoreError."""
        (store.state_dir / "dir.json").mkdir(parents=True)
        with pytest.raises(StateStoreError, match="cannot load state of session 'dir'"):
            await store.load("dir")

    @pytest.mark.parametrize("kind", ["fifo", "link-to-device"])
    async def test_a_file_that_is_not_regular_fails_at_once(
        self, store: FileStateStore, kind: str
    ) -> None:
        """A FIFO (or a link to /dev/zero) as a session's file fails its calls, never blocks.

        Reading either would block a thread of the store for good (a FIFO without a
        writer) or forever fill memory (/dev/zero); both get StateStoreError at once.
        """
        store.state_dir.mkdir()
        path = store.state_dir / "odd.json"
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to("/dev/zero")
        with pytest.raises(StateStoreError, match="not a regular file") as info:
            await asyncio.wait_for(store.load("odd"), 5)
        assert str(store.state_dir) not in str(info.value)  # the path stays in the log
        with pytest.raises(StateStoreError, match="not a regular file"):
            await asyncio.wait_for(store.append("odd", {"status": "completed"}), 5)
        assert 0 == store.threads_busy
        await store.aclose()


class TestAtomicSave:
    async def test_no_temp_files_left(self, store: FileStateStore) -> None:
        """After several saves only the session files remain in the directory."""
        for i in range(5):
            await store.save("s", {"i": i})
        await store.save("t", {})
        assert ["s.json", "t.json"] == sorted(_listing(store.state_dir))

    async def test_a_session_file_is_the_services_alone(self, store: FileStateStore) -> None:
        """A session file holds missions and their answers: mode 0o600, no one else may read it."""
        await store.save("s", {"v": 1})
        await store.append("s", {"mission": "m"})
        assert 0o600 == stat.S_IMODE(os.stat(store.state_dir / "s.json").st_mode)

    @pytest.mark.parametrize(
        "bad",
        [
            {"when": object()},
            {"nan": float("nan")},
            {1: "int key", "a": "str key"},
        ],
        ids=["object", "nan", "mixed-keys"],
    )
    async def test_unserialisable_state_keeps_previous(
        self, store: FileStateStore, bad: dict[Any, Any]
    ) -> None:
        """A state that is not JSON raises TypeError and leaves the saved state intact."""
        await store.save("s", {"good": True})
        before = (store.state_dir / "s.json").read_bytes()
        with pytest.raises(TypeError):
            await store.save("s", bad)
        assert before == (store.state_dir / "s.json").read_bytes()
        assert ["s.json"] == _listing(store.state_dir)

    async def test_circular_state_is_type_error(self, store: FileStateStore) -> None:
        """A state that contains itself raises TypeError, not a half-written file."""
        state: dict[str, Any] = {}
        state["self"] = state
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            await store.save("s", state)
        assert not store.state_dir.exists()

    async def test_non_dict_state_is_type_error(self, store: FileStateStore) -> None:
        """Only a JSON object can be a session state."""
        with pytest.raises(TypeError, match="must be a dict"):
            await store.save("s", [1, 2])  # type: ignore[arg-type]

    async def test_failed_write_leaves_no_temp_file(
        self, store: FileStateStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the rename fails, StateStoreError is raised and the temp file is removed."""
        await store.save("s", {"v": 1})

        def failing_replace(src: str, dst: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(StateStoreError, match="cannot save state of session 's'"):
            await store.save("s", {"v": 2})
        monkeypatch.undo()
        assert ["s.json"] == _listing(store.state_dir)
        assert {"v": 1} == await store.load("s")

    async def test_a_state_dir_it_creates_is_synced_into_its_parent(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The folders a first write creates are fsynced into their parents, as the file is."""
        synced: list[str] = []
        real_fsync = os.fsync

        def recording_fsync(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", recording_fsync)
        store = FileStateStore(tmp_path / "a" / "state")
        try:
            await store.append("s", {"v": 1})
        finally:
            await store.aclose()
        made = tmp_path.resolve() / "a"
        assert {str(made.parent), str(made), str(made / "state")} <= set(synced)

    async def test_state_changed_after_save_call_is_not_saved(self, store: FileStateStore) -> None:
        """The saved snapshot is the state at the time of the call."""
        state = {"n": 1}
        pending = asyncio.ensure_future(store.save("s", state))
        await asyncio.sleep(0)
        state["n"] = 2
        await pending
        assert {"n": 1} == json.loads((store.state_dir / "s.json").read_text())


class TestSessionIds:
    @pytest.mark.parametrize("session_id", ["a", "A-b_c.d", "0" * 128, "session.v2", "x..y"])
    async def test_valid_ids(self, store: FileStateStore, session_id: str) -> None:
        """Ids of 1 to 128 safe characters not starting with a dot are accepted."""
        await store.save(session_id, {"id": session_id})
        assert {"id": session_id} == await store.load(session_id)

    @pytest.mark.parametrize(
        "session_id",
        ["", ".", "..", ".hidden", "../escape", "a/b", "a\\b", "a b", "0" * 129, "ü", "a\x00"],
    )
    async def test_invalid_ids_refused(self, store: FileStateStore, session_id: str) -> None:
        """Unsafe ids raise ValueError naming the id, for save and load, touching no file."""
        with pytest.raises(ValueError, match="invalid session id"):
            await store.save(session_id, {})
        with pytest.raises(ValueError, match="invalid session id"):
            await store.load(session_id)
        assert not store.state_dir.exists()

    async def test_non_string_id_refused(self, store: FileStateStore) -> None:
        """A session id that is not a string raises ValueError."""
        with pytest.raises(ValueError, match="invalid session id 42"):
            await store.load(42)  # type: ignore[arg-type]


class TestTempFiles:
    async def test_crash_leftovers_removed_at_open_and_logged(self, store: FileStateStore) -> None:
        """open() removes `.<id>.*.tmp` files a crash left, logs how many, keeps everything else."""
        await store.save("s", {"v": 1})
        leftovers = [".s.abc123_x.tmp", ".other.session.k9k9k9k9.tmp"]
        for name in leftovers:
            (store.state_dir / name).write_bytes(b"x" * 100)
        (store.state_dir / "notes.tmp").write_text("not ours")
        with capture_logs() as logs:
            await store.open()
        assert ["notes.tmp", "s.json"] == _listing(store.state_dir)
        removed = [e for e in logs if e["event"] == "state.tempfiles.removed"]
        assert [(2, 200, "warning", "state")] == [
            (e["files"], e["bytes"], e["log_level"], e["category"]) for e in removed
        ]
        assert {"v": 1} == await store.load("s")

    async def test_temp_file_of_a_live_writer_is_kept(self, store: FileStateStore) -> None:
        """A temp file another writer holds locked is left alone."""
        store.state_dir.mkdir()
        live = store.state_dir / ".s.live0001.tmp"
        with open(live, "wb") as handle:  # noqa: ASYNC230 (set-up, before the code under test)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            with capture_logs() as logs:
                await store.open()
            assert live.exists()
        assert [] == [e for e in logs if e["event"] == "state.tempfiles.removed"]

    async def test_temp_file_of_a_writer_yet_to_lock_it_is_kept(
        self, store: FileStateStore
    ) -> None:
        """A writer (another worker) that made its temp file under its session's stripe lock
        but has not locked the file yet keeps it: its record would be lost."""
        store.state_dir.mkdir()
        fresh = store.state_dir / ".my.session.fresh001.tmp"
        fresh.write_bytes(b"{}")
        with stripe_lock(store.state_dir, "my.session"):
            with capture_logs() as logs:
                await store.open()
            assert fresh.exists()
        assert [] == [e for e in logs if e["event"] == "state.tempfiles.removed"]
        await store.open()  # once no writer is under way there, it goes
        assert not fresh.exists()

    async def test_a_fifo_named_as_a_temp_file_is_left_without_waiting(
        self, store: FileStateStore
    ) -> None:
        """A FIFO with a temp file's name is no temp file: open() neither waits on it for a
        writer (which held start-up for good) nor removes it."""
        store.state_dir.mkdir()
        fifo = store.state_dir / ".s.fifo0001.tmp"
        os.mkfifo(fifo)
        (store.state_dir / ".s.crash001.tmp").write_bytes(b"x" * 10)
        try:
            with capture_logs() as logs:
                await asyncio.wait_for(store.open(), timeout=10)
        finally:  # on the old code: let the thread stuck in open(2) go
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert [".locks", ".s.fifo0001.tmp"] == sorted(p.name for p in store.state_dir.iterdir())
        removed = [e for e in logs if e["event"] == "state.tempfiles.removed"]
        assert [(1, 10)] == [(e["files"], e["bytes"]) for e in removed]

    async def test_open_without_directory(self, store: FileStateStore) -> None:
        """open() on a state_dir that does not exist yet does nothing."""
        await store.open()
        assert not store.state_dir.exists()


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` look last written ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


class TestExpiry:
    async def test_a_session_being_written_is_left_for_the_next_sweep(
        self, state_dir: Path
    ) -> None:
        """An expired session whose stripe lock is held (a write of it, in any process) is
        not waited for and not removed; the next sweep removes it."""
        store = FileStateStore(state_dir, limits=StateLimits(session_ttl_seconds=60))
        await store.append("busy", {"n": 1})
        _age(state_dir / "busy.json", 120)
        with stripe_lock(state_dir, "busy"):
            assert SessionExpiry(0) == await store.expire_sessions()
            assert (state_dir / "busy.json").exists()
        assert SessionExpiry(1) == await store.expire_sessions()
        assert not (state_dir / "busy.json").exists()

    async def test_a_session_written_while_the_sweep_waited_stays(self, state_dir: Path) -> None:
        """Under the lock the file is looked at again: one replaced by a write since the
        sweep first saw it expired is fresh, and stays."""
        store = FileStateStore(state_dir, limits=StateLimits(session_ttl_seconds=60))
        await store.append("s", {"n": 1})
        path = state_dir / "s.json"
        _age(path, 120)
        with os.scandir(state_dir) as entries:
            entry = next(e for e in entries if e.name == "s.json")
        entry.stat(follow_symlinks=False)  # the sweep's first look, cached in the entry
        os.utime(path)  # then written
        with mock.patch.object(os, "scandir", return_value=_Entries([entry])):
            assert SessionExpiry(0) == expire_files(
                state_dir, 60, threading.Event(), ExpiryProgress()
            )
        assert path.exists()

    async def test_a_pass_that_fails_part_way_reports_what_it_removed(
        self, state_dir: Path
    ) -> None:
        """state_dir fails to read after one file went: the call raises, and its
        progress holds the file removed."""
        store = FileStateStore(state_dir, limits=StateLimits(session_ttl_seconds=60))
        await store.append("s", {"n": 1})
        _age(state_dir / "s.json", 120)
        with os.scandir(state_dir) as found:
            (entry,) = [e for e in found if e.name == "s.json"]

        class _Failing(_Entries):
            def __iter__(self) -> Iterator[os.DirEntry[str]]:
                yield entry
                raise OSError(errno.EIO, "Input/output error")

        progress = ExpiryProgress()
        failing = mock.patch.object(os, "scandir", return_value=_Failing())
        with failing, pytest.raises(StateStoreError, match="Input/output error"):
            await store.expire_sessions(progress)
        assert (1, []) == (progress.expired, _listing(state_dir))

    async def test_only_session_files_are_touched(self, state_dir: Path) -> None:
        """Temp files, the lock folder, other names, folders and symlinks stay, however old."""
        store = FileStateStore(state_dir, limits=StateLimits(session_ttl_seconds=60))
        await store.append("s", {"n": 1})
        others = [".s.abc123_x.tmp", "notes.txt", "bad name.json", ".hidden.json"]
        for name in others:
            (state_dir / name).write_text("x")
        (state_dir / "folder.json").mkdir()
        (state_dir / "link.json").symlink_to(state_dir / "notes.txt")
        for name in [*others, "s.json", "folder.json", "link.json", LOCK_DIR]:
            _age(state_dir / name, 120)
        assert SessionExpiry(1) == await store.expire_sessions()
        expected = sorted([*others, "folder.json", "link.json"])
        assert expected == _listing(state_dir)

    async def test_a_file_it_cannot_remove_is_counted_and_passed_over(
        self, state_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One file that cannot be removed fails alone: the others go, and the result
        counts it with the first error's class and words, never its path."""
        store = FileStateStore(state_dir, limits=StateLimits(session_ttl_seconds=60))
        for session in ("a", "b", "stuck"):
            await store.append(session, {"n": 1})
            _age(state_dir / f"{session}.json", 120)
        unlink = os.unlink

        def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
            if str(path).endswith("stuck.json"):
                raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
            unlink(path, *args, **kwargs)

        monkeypatch.setattr(os, "unlink", refuse)
        done = await store.expire_sessions()
        assert SessionExpiry(2, 1, "PermissionError: Operation not permitted") == done
        assert ["stuck.json"] == _listing(state_dir)

    def test_a_stop_ends_the_pass(self, state_dir: Path) -> None:
        """A sweep told to stop (its call cancelled) removes nothing more."""
        state_dir.mkdir()
        (state_dir / "s.json").write_text("{}")
        _age(state_dir / "s.json", 120)
        stop = threading.Event()
        stop.set()
        assert SessionExpiry(0) == expire_files(state_dir, 60, stop, ExpiryProgress())
        assert ["s.json"] == _listing(state_dir)

    async def test_no_state_dir_yet_is_nothing_to_sweep(self, state_dir: Path) -> None:
        """A state_dir not made yet holds no session: nothing is made by the sweep."""
        store = FileStateStore(state_dir, limits=StateLimits(session_ttl_seconds=60))
        assert SessionExpiry(0) == await store.expire_sessions()
        assert not state_dir.exists()

    async def test_a_state_dir_it_cannot_read_is_a_store_error(self, state_dir: Path) -> None:
        """A file where the directory should be: StateStoreError, no path in its message."""
        state_dir.parent.mkdir(parents=True, exist_ok=True)
        state_dir.write_text("a file")
        store = FileStateStore(state_dir, limits=StateLimits(session_ttl_seconds=60))
        with pytest.raises(StateStoreError) as info:
            await store.expire_sessions()
        assert "cannot expire sessions: Not a directory" == str(info.value)
        assert str(state_dir) in info.value.detail

    async def test_the_sweep_runs_on_a_thread_of_its_own(self, state_dir: Path) -> None:
        """The pass runs on its own thread, not one of the store's (which serve requests)."""
        store = FileStateStore(state_dir, limits=StateLimits(session_ttl_seconds=60), threads=1)
        seen: list[str] = []

        def record(*args: object) -> SessionExpiry:
            seen.append(threading.current_thread().name)
            return SessionExpiry(0)

        with mock.patch("taskforce.infrastructure.state._file_store.expire_files", record):
            await store.expire_sessions()
        await store.aclose()
        assert [True] == [name.startswith("taskforce-state-sweep") for name in seen]
        assert 0 == store.threads_busy


class _Entries(list[os.DirEntry[str]]):
    """A scandir result made of given entries (a context manager, as scandir's is)."""

    def __enter__(self) -> _Entries:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class TestAppendLayout:
    async def test_append_to_an_old_single_line_file(self, store: FileStateStore) -> None:
        """A file written before records were kept one per line is appended to as well."""
        store.state_dir.mkdir()
        old = {"missions": [{"mission_id": "m0"}], "note": "x"}
        (store.state_dir / "s.json").write_text(json.dumps(old))
        await store.append("s", {"mission_id": "m1"})
        assert {**old, "missions": [{"mission_id": "m0"}, {"mission_id": "m1"}]} == (
            await store.load("s")
        )

    async def test_file_is_one_json_document(self, store: FileStateStore) -> None:
        """After appends the file is still one JSON object any JSON reader can parse."""
        for i in range(3):
            await store.append("s", {"i": i, "text": "line\nbreak"})
        text = (store.state_dir / "s.json").read_text(encoding="utf-8")
        assert {"missions": [{"i": i, "text": "line\nbreak"} for i in range(3)]} == json.loads(text)

    @pytest.mark.parametrize(
        "content",
        [
            b"{not json",
            b'{"x": NaN, "missions": [\n{"i": 0}\n]}',
            b'{"missions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            b"[" * 100_000 + b'"missions": [\n{"i": 0}\n]}',
        ],
        ids=["bad-json", "nan", "too-deep", "too-deep-head"],
    )
    async def test_corrupt_file_is_not_appended_to(
        self, store: FileStateStore, content: bytes
    ) -> None:
        """An append to an unparseable file raises StateCorruptedError and leaves it as is."""
        store.state_dir.mkdir()
        (store.state_dir / "s.json").write_bytes(content)
        with pytest.raises(StateCorruptedError):
            await store.append("s", {"i": 1})
        assert content == (store.state_dir / "s.json").read_bytes()


class TestBoundedHistory:
    @pytest.mark.slow
    async def test_two_hundred_big_missions_stay_bounded(self, tmp_path: Path) -> None:
        """200 records of 99 KB in one session: the file never exceeds max_bytes plus a record."""
        limit = 1024 * 1024
        store = FileStateStore(tmp_path / "state", limits=StateLimits(max_bytes=limit))
        sizes = []
        for i in range(200):
            result = await store.append("big", {"i": i, "final_message": "y" * 99_000})
            sizes.append(result.size_bytes)
        assert max(sizes) <= limit
        state = await store.load("big") or {}
        assert 199 == state["missions"][-1]["i"]
        assert len(state["missions"]) == sizes[-1] // 99_000


class TestMessages:
    async def test_errors_name_no_path_but_keep_detail(self, store: FileStateStore) -> None:
        """A write error's message has no path; its detail (for the log) has it."""
        store.state_dir.parent.mkdir(parents=True, exist_ok=True)
        store.state_dir.write_text("in the way")
        with pytest.raises(StateStoreError) as info:
            await store.save("s", {})
        assert str(store.state_dir) not in str(info.value)
        assert str(store.state_dir) in info.value.detail

    async def test_corrupt_message_names_no_path(self, store: FileStateStore) -> None:
        """A corrupt file's message names the session, not the file."""
        store.state_dir.mkdir()
        (store.state_dir / "s.json").write_bytes(b"[]")
        with pytest.raises(StateCorruptedError) as info:
            await store.load("s")
        assert str(store.state_dir) not in str(info.value)
        assert "'s'" in str(info.value)


class TestThreads:
    async def test_io_runs_on_the_stores_own_threads(self, tmp_path: Path) -> None:
        """File IO runs on the store's pool of ``threads`` threads, never the loop's default."""
        import threading

        store = FileStateStore(tmp_path, threads=2)
        names: set[str] = set()

        def note() -> None:
            names.add(threading.current_thread().name)

        await asyncio.gather(*(store._run(note) for _ in range(20)))
        await store.aclose()
        assert names and all(name.startswith("taskforce-state") for name in names)
        assert len(names) <= 2

    async def test_threads_are_daemons_and_counted_while_busy(self, tmp_path: Path) -> None:
        """A stuck call cannot keep the process alive at exit, and is seen as busy meanwhile."""
        import threading

        store = FileStateStore(tmp_path, threads=2)
        release, started = threading.Event(), threading.Semaphore(0)
        daemons: list[bool] = []

        def hold() -> None:
            daemons.append(threading.current_thread().daemon)
            started.release()
            release.wait()

        held = [store._run(hold) for _ in range(2)]
        for _ in range(2):
            await asyncio.to_thread(started.acquire)
        assert (2, 2) == (store.threads_busy, store.thread_count)
        release.set()
        await asyncio.gather(*held)
        assert 0 == store.threads_busy
        assert [True, True] == daemons
        await store.aclose()

    def test_threads_below_one_are_refused(self, tmp_path: Path) -> None:
        """A store without threads could never write: refused where it is made."""
        with pytest.raises(ValueError, match="threads"):
            FileStateStore(tmp_path, threads=0)


class TestCheckHealth:
    async def test_a_writable_directory_is_reachable(self, store: FileStateStore) -> None:
        """An existing directory the process may write in: reachable, backend ``file``."""
        store.state_dir.mkdir()
        assert StateStoreHealth(is_reachable=True) == await store.check_health()
        assert "file" == store.backend
        await store.aclose()

    async def test_a_directory_not_made_yet_is_reachable(self, store: FileStateStore) -> None:
        """A state_dir the first write will create is reachable, and the check creates nothing."""
        assert StateStoreHealth(is_reachable=True) == await store.check_health()
        assert not store.state_dir.exists()
        await store.aclose()

    async def test_a_file_in_its_place_is_unreachable(self, store: FileStateStore) -> None:
        """A regular file where state_dir should be: unreachable, the reason names no path."""
        store.state_dir.write_text("not a directory")
        health = await store.check_health()
        expected = StateStoreHealth(
            is_reachable=False, error="NotADirectoryError: state_dir is not a directory"
        )
        assert expected == health
        await store.aclose()

    async def test_a_directory_under_a_file_is_unreachable(self, tmp_path: Path) -> None:
        """A state_dir below a regular file can never be made: the OSError's class is the reason."""
        (tmp_path / "file").write_text("x")
        store = FileStateStore(tmp_path / "file" / "state")
        health = await store.check_health()
        assert StateStoreHealth(is_reachable=False, error="NotADirectoryError") == health
        assert str(tmp_path) not in str(health)
        await store.aclose()

    async def test_a_directory_it_may_not_write_is_unreachable(
        self, store: FileStateStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Not writable (a read-only mount reads so too, through os.access): unreachable."""
        store.state_dir.mkdir()
        asked: list[tuple[str, int]] = []

        def access(path: str | Path, mode: int) -> bool:
            asked.append((os.fspath(path), mode))
            return False

        monkeypatch.setattr(os, "access", access)
        health = await store.check_health()
        expected = StateStoreHealth(
            is_reachable=False, error="PermissionError: state_dir is not writable"
        )
        assert expected == health
        assert [(str(store.state_dir), os.W_OK | os.X_OK)] == asked
        await store.aclose()

    @pytest.mark.parametrize(
        ("left", "reachable"),
        [
            ({"f_bavail": 0, "f_bfree": 0}, False),
            ({"f_favail": 0, "f_ffree": 0}, False),
            ({"f_blocks": 0, "f_bavail": 0, "f_bfree": 0, "f_files": 0}, True),
            ({}, True),
        ],
        ids=["no-block", "no-inode", "no-counts", "room"],
    )
    async def test_a_full_file_system_is_unreachable(
        self,
        store: FileStateStore,
        monkeypatch: pytest.MonkeyPatch,
        left: dict[str, int],
        reachable: bool,
    ) -> None:
        """No block or no inode left: every save fails (ENOSPC), so the check says so
        rather than ``reachable``; a file system that keeps no counts is not judged."""
        store.state_dir.mkdir()
        real = os.statvfs(store.state_dir)
        counts = {name: getattr(real, name) for name in dir(real) if name.startswith("f_")}
        counts.update({"f_blocks": 1000, "f_files": 1000, "f_bavail": 10, "f_bfree": 10})
        counts.update({"f_favail": 10, "f_ffree": 10, **left})
        monkeypatch.setattr(os, "statvfs", lambda _: SimpleNamespace(**counts))
        error = None if reachable else "OSError: no space left on state_dir's file system"
        assert StateStoreHealth(is_reachable=reachable, error=error) == await store.check_health()
        await store.aclose()

    @pytest.mark.parametrize(
        ("spoil", "error"),
        [
            ("locks-file", "NotADirectoryError: state_dir/.locks is not a directory"),
            ("stripe-directory", "IsADirectoryError: state_dir/.locks/07 is a directory"),
            ("stripe-not-writable", "PermissionError: state_dir/.locks/07 is not writable"),
        ],
    )
    async def test_lock_files_it_cannot_use_are_unreachable(
        self, store: FileStateStore, monkeypatch: pytest.MonkeyPatch, spoil: str, error: str
    ) -> None:
        """A ``.locks`` that is no directory, or a stripe lock file this process may not
        open (another user's: a ``taskforce run`` under sudo), fails every write of its
        sessions: /health's check says so, and open() (start-up) refuses, naming the
        setting."""
        await store.save("s", {"v": 1})
        locks = store.state_dir / LOCK_DIR
        stripe = locks / "07"
        if spoil == "locks-file":
            for lock in locks.iterdir():
                lock.unlink()
            locks.rmdir()
            locks.write_text("")
        elif spoil == "stripe-directory":
            stripe.unlink(missing_ok=True)
            stripe.mkdir()
        else:
            stripe.touch()
            real_access = os.access
            monkeypatch.setattr(
                os, "access", lambda path, mode: Path(path) != stripe and real_access(path, mode)
            )
        assert StateStoreHealth(is_reachable=False, error=error) == await store.check_health()
        with pytest.raises(StateStoreError) as info:
            await store.open()
        assert f"cannot use the state directory: {error}" == str(info.value)
        assert "state_dir" == getattr(info.value, "setting", None)
        await store.aclose()

    async def test_checks_on_the_stores_own_threads(
        self, store: FileStateStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The check's file system calls run on a store thread, never on the event loop."""
        import threading

        threads: list[str] = []
        real_access = os.access

        def access(path: str, mode: int) -> bool:
            threads.append(threading.current_thread().name)
            return real_access(path, mode)

        monkeypatch.setattr(os, "access", access)
        await store.check_health()
        assert 1 == len(threads)
        assert threads[0].startswith("taskforce-state")
        await store.aclose()


class TestWallClockSteps:
    async def test_a_step_forward_of_the_wall_clock_expires_no_session_early(
        self, state_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The wall clock steps 10 minutes forward: a session written 30 s before, under a
        TTL of 60 s, is neither swept nor read as expired, and its next append keeps its
        history; one idle for 120 s before the step still goes."""
        store = FileStateStore(state_dir, limits=StateLimits(session_ttl_seconds=60))
        await store.append("live", {"n": 1})
        await store.append("idle", {"n": 1})
        _age(state_dir / "live.json", 30)
        _age(state_dir / "idle.json", 120)
        wall = time.time
        monkeypatch.setattr(time, "time", lambda: wall() + 600)

        assert SessionExpiry(1) == await store.expire_sessions()
        assert ["live.json"] == [n for n in _listing(state_dir) if n.endswith(".json")]
        assert await store.load("live") is not None
        assert 2 == (await store.append("live", {"n": 2})).records
