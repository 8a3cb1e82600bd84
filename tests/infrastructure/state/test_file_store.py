"""Tests of FileStateStore: round trips, corruption, atomic saves and session id checks."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from taskforce.core.interfaces.state import StateStoreProtocol
from taskforce.errors import StateCorruptedError, StateStoreError
from taskforce.infrastructure.state import FileStateStore


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
        assert ["abc.json"] == os.listdir(store.state_dir)

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
        assert sorted(f"s{i}.json" for i in range(50)) == sorted(os.listdir(store.state_dir))

    async def test_concurrent_saves_of_one_session_leave_one_whole(
        self, store: FileStateStore
    ) -> None:
        """Racing saves of one session leave exactly one of the states, never a mix."""
        states = [{"writer": i, "blob": "x" * 10_000} for i in range(20)]
        await asyncio.gather(*(store.save("same", state) for state in states))
        assert await store.load("same") in states
        assert ["same.json"] == os.listdir(store.state_dir)


class TestCorruption:
    @pytest.mark.parametrize(
        "content",
        [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe{}"],
        ids=["bad-json", "empty", "list", "string", "not-utf8"],
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

    async def test_unreadable_state_raises_store_error(self, store: FileStateStore) -> None:
        """A state path that cannot be read (here a directory) raises StateStoreError."""
        (store.state_dir / "dir.json").mkdir(parents=True)
        with pytest.raises(StateStoreError, match="cannot load state of session 'dir'"):
            await store.load("dir")


class TestAtomicSave:
    async def test_no_temp_files_left(self, store: FileStateStore) -> None:
        """After several saves only the session files remain in the directory."""
        for i in range(5):
            await store.save("s", {"i": i})
        await store.save("t", {})
        assert ["s.json", "t.json"] == sorted(os.listdir(store.state_dir))

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
        assert ["s.json"] == os.listdir(store.state_dir)

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
        assert ["s.json"] == os.listdir(store.state_dir)
        assert {"v": 1} == await store.load("s")

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
