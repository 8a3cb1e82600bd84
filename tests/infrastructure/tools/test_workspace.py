"""Tests of the per-session workspace: folder names, and one session never reaching another."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

from taskforce.core.interfaces.context import mission_scope
from taskforce.infrastructure.tools import (
    FileReadTool,
    FileWriteTool,
    ListDirTool,
    session_folder_name,
)

_FOLDER = re.compile(r"[A-Za-z0-9_%~-]{1,120}")


def in_session(session_id: str) -> contextlib.AbstractContextManager[None]:
    """Run the block as if inside a mission of ``session_id``."""
    return mission_scope(session_id, "m1", "lean")


_TRICKY_IDS = [
    "s1",
    "S1",
    "a.b",
    "a%2Eb",
    "a_b",
    ".",
    "..",
    "...",
    "../other",
    "a/b",
    "/etc",
    "a\\b",
    "a b",
    "a\x00b",
    "é",
    "%C3%A9",
    "\udcff",
    "~x",
    "x" * 120,
    "x" * 121,
    "y" * 4096,
]


class TestSessionFolderName:
    @pytest.mark.parametrize("session_id", _TRICKY_IDS)
    def test_safe_folder_name(self, session_id: str) -> None:
        """Every id maps to one path component without separators, dots or NUL."""
        assert _FOLDER.fullmatch(session_folder_name(session_id))

    def test_distinct_ids_distinct_folders(self) -> None:
        """No two different ids share a folder, however they are spelt."""
        names = [session_folder_name(s) for s in _TRICKY_IDS]
        assert len(_TRICKY_IDS) == len(set(names))

    @pytest.mark.parametrize("session_id", ["s1", "0f8c2b9e4d", "session_42-b"])
    def test_plain_ids_kept(self, session_id: str) -> None:
        """A generated hex id or a plain name is its own folder name, easy to find."""
        assert session_id == session_folder_name(session_id)

    def test_empty_refused(self) -> None:
        """An empty session id has no folder."""
        with pytest.raises(ValueError, match="must not be empty"):
            session_folder_name("")


class TestSessionIsolation:
    async def test_files_land_in_the_session_folder(self, workspace: Path) -> None:
        """Inside a mission, a relative path is taken inside the session's own folder."""
        with in_session("alice"):
            await FileWriteTool(workspace).execute(path="notes/a.txt", content="mine")
        assert "mine" == (workspace / "alice" / "notes" / "a.txt").read_text()

    async def test_other_session_cannot_read(self, workspace: Path) -> None:
        """Session bob does not see the file session alice wrote at the same path."""
        with in_session("alice"):
            await FileWriteTool(workspace).execute(path="secret.txt", content="alice only")
        with in_session("bob"):
            result = await FileReadTool(workspace).execute(path="secret.txt")
            listing = await ListDirTool(workspace).execute(path=".")
        assert "FileNotFound" == result["error_type"]
        assert {"success": True, "output": []} == listing

    @pytest.mark.parametrize(
        "path", ["../alice/secret.txt", "{root}/alice/secret.txt", "..", "{root}"]
    )
    async def test_other_session_folder_refused(self, workspace: Path, path: str) -> None:
        """Climbing or naming another session's folder, relatively or absolutely, is refused."""
        with in_session("alice"):
            await FileWriteTool(workspace).execute(path="secret.txt", content="alice only")
        path = path.format(root=workspace)
        with in_session("bob"):
            read = await FileReadTool(workspace).execute(path=path)
            listed = await ListDirTool(workspace).execute(path=path)
            written = await FileWriteTool(workspace).execute(path=path, content="bob was here")
        assert {"PathOutsideWorkspace"} == {
            read["error_type"],
            listed["error_type"],
            written["error_type"],
        }
        assert ["secret.txt"] == [p.name for p in (workspace / "alice").iterdir()]
        assert "alice only" == (workspace / "alice" / "secret.txt").read_text()

    async def test_hostile_session_id_stays_below_the_workspace(
        self, workspace: Path, tmp_path: Path
    ) -> None:
        """A session id such as '../x' gets an escaped folder inside the workspace."""
        with in_session("../escaped"):
            await FileWriteTool(workspace).execute(path="f.txt", content="x")
        assert not (tmp_path / "escaped").exists()
        assert [session_folder_name("../escaped")] == [p.name for p in workspace.iterdir()]

    async def test_outside_a_mission_the_root_is_the_workspace(self, workspace: Path) -> None:
        """Called directly, outside any mission, the tools work on the whole workspace."""
        with in_session("alice"):
            await FileWriteTool(workspace).execute(path="a.txt", content="a")
        result = await FileReadTool(workspace).execute(path="alice/a.txt")
        assert {"success": True, "output": "a"} == result
