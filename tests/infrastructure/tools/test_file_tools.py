"""Tests of the workspace file tools: round trips, listings and every refused escape."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import socket
import stat
import tempfile
import time
import types
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from taskforce import _atomic_write
from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.core.interfaces.log import quoted, text_fields
from taskforce.infrastructure.tools import (
    FileReadTool,
    FileWriteTool,
    ListDirTool,
    ToolThreadPool,
    _files,
    _quota,
)
from taskforce.infrastructure.tools._workspace import Failure, Workspace
from tests.support.processes import run_python


@pytest.fixture(name="outside")
def fixture_outside(tmp_path: Path) -> Path:
    """A directory beside the workspace holding a secret file."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    return outside


def _refused(path: str) -> dict[str, object]:
    return {
        "success": False,
        "error": f"path {quoted(path)} is outside the workspace",
        "error_type": "PathOutsideWorkspace",
    }


def _container(tmp_path: Path, **tools: int) -> Container:
    """The service's container with these ``tools`` settings."""
    settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws", tools=tools)
    return build_container(settings)


def _write_in_a_process(
    workspace: Path,
    prepare: str,
    path: str,
    content: str,
    *,
    append: bool = False,
    exit_code: int = 0,
) -> str:
    """Call file_write in a Python process of its own, after ``prepare`` ran there.

    Args:
        workspace: The tool's workspace.
        prepare: Lines run once the tool is made (a limit, another user); ``os``,
            ``resource`` and ``signal`` are imported.
        path: The call's path.
        content: The call's content.
        append: The call's ``append``.
        exit_code: How the process must end (``-signal.SIGKILL``: ``prepare`` kills it).

    Returns:
        The result's ``error_type``, ``"None"`` for a success.
    """
    script = (
        "import asyncio, os, resource, signal, sys\n"
        "from pathlib import Path\n"
        "from taskforce.infrastructure.tools import FileWriteTool\n"
        "tool = FileWriteTool(Path(sys.argv[1]))\n"
        f"{prepare}"
        f"result = asyncio.run(tool.execute(path={path!r}, content={content!r}, append={append}))\n"
        "print(result.get('error_type'))\n"
    )
    done = run_python(script, str(workspace))
    assert exit_code == done.returncode, done.stderr
    return done.stdout.strip()


class TestFileWriteAndRead:
    async def test_round_trip(self, workspace: Path) -> None:
        """Text written with file_write is read back unchanged; the byte count is returned."""
        text = "héllo\nwörld"
        written = await FileWriteTool(workspace).execute(path="notes.txt", content=text)
        assert {"success": True, "output": len(text.encode("utf-8"))} == written
        assert {"success": True, "output": text} == await FileReadTool(workspace).execute(
            path="notes.txt"
        )

    async def test_write_creates_parent_dirs(self, workspace: Path) -> None:
        """Missing parent directories inside the workspace are created."""
        await FileWriteTool(workspace).execute(path="a/b/c.txt", content="x")
        assert "x" == (workspace / "a" / "b" / "c.txt").read_text()

    async def test_write_replaces_by_default(self, workspace: Path) -> None:
        """Without append, a second write replaces the file."""
        tool = FileWriteTool(workspace)
        await tool.execute(path="f.txt", content="first")
        await tool.execute(path="f.txt", content="2nd")
        assert "2nd" == (workspace / "f.txt").read_text()

    async def test_append(self, workspace: Path) -> None:
        """With append=true, content is added to the end of the file."""
        tool = FileWriteTool(workspace)
        await tool.execute(path="log.txt", content="one\n")
        result = await tool.execute(path="log.txt", content="two\n", append=True)
        assert {"success": True, "output": 4} == result
        assert "one\ntwo\n" == (workspace / "log.txt").read_text()

    async def test_absolute_path_inside_workspace_allowed(self, workspace: Path) -> None:
        """An absolute path that lies inside the workspace is fine."""
        target = workspace / "abs.txt"
        await FileWriteTool(workspace).execute(path=str(target), content="ok")
        assert {"success": True, "output": "ok"} == await FileReadTool(workspace).execute(
            path=str(target)
        )

    async def test_symlink_inside_workspace_allowed(self, workspace: Path) -> None:
        """A symlink whose target stays inside the workspace may be read."""
        workspace.mkdir()
        (workspace / "real.txt").write_text("real")
        (workspace / "link.txt").symlink_to(workspace / "real.txt")
        assert {"success": True, "output": "real"} == await FileReadTool(workspace).execute(
            path="link.txt"
        )

    async def test_missing_file(self, workspace: Path) -> None:
        """Reading a file that does not exist gives a clear error result."""
        assert {
            "success": False,
            "error": "path 'nope.txt' does not exist",
            "error_type": "FileNotFound",
        } == await FileReadTool(workspace).execute(path="nope.txt")

    async def test_read_directory(self, workspace: Path) -> None:
        """Reading a directory gives an error result, not an exception."""
        (workspace / "sub").mkdir(parents=True)
        result = await FileReadTool(workspace).execute(path="sub")
        assert "IsADirectory" == result["error_type"]

    async def test_write_over_directory(self, workspace: Path) -> None:
        """Writing to a path that is a directory gives an error result."""
        (workspace / "sub").mkdir(parents=True)
        result = await FileWriteTool(workspace).execute(path="sub", content="x")
        assert "IsADirectory" == result["error_type"]

    @pytest.mark.parametrize("path", ["f.txt/x", "f.txt/sub/x"], ids=["child", "grandchild"])
    async def test_write_below_a_file_is_not_a_directory(self, workspace: Path, path: str) -> None:
        """A path that runs through a file fails a write as it fails a read: NotADirectory,
        not FileExistsError from the folders the write would make."""
        (workspace / "f.txt").parent.mkdir(parents=True)
        (workspace / "f.txt").write_text("x", encoding="utf-8")
        written = await FileWriteTool(workspace).execute(path=path, content="x")
        read = await FileReadTool(workspace).execute(path=path)
        assert ("NotADirectory", "NotADirectory") == (written["error_type"], read["error_type"])
        assert read["error"] == written["error"]

    @pytest.mark.parametrize("path", ["notes/", "notes/.", "deep/notes//"])
    async def test_write_to_a_folder_path_makes_no_file(self, workspace: Path, path: str) -> None:
        """A path ending in a slash names a folder: a write refuses it as a directory, as
        open(2) does, instead of making a file of that name that later writes below fail on."""
        result = await FileWriteTool(workspace).execute(path=path, content="x")
        assert ("IsADirectory", f"path {quoted(path)} is a directory") == (
            result["error_type"],
            result["error"],
        )
        assert [] == list(workspace.rglob("notes"))

    @pytest.mark.parametrize("path", ["f.txt/", "f.txt/."])
    async def test_a_file_named_as_a_folder_is_not_a_directory(
        self, workspace: Path, path: str
    ) -> None:
        """A file's name with a trailing slash is not a directory, for a read and a write,
        and the file is left as it was."""
        workspace.mkdir()
        (workspace / "f.txt").write_text("old", encoding="utf-8")
        written = await FileWriteTool(workspace).execute(path=path, content="new")
        read = await FileReadTool(workspace).execute(path=path)
        assert ("NotADirectory", "NotADirectory") == (written["error_type"], read["error_type"])
        assert "old" == (workspace / "f.txt").read_text(encoding="utf-8")

    async def test_folder_path_of_a_folder_still_lists(self, workspace: Path) -> None:
        """``list_dir`` takes a folder with its trailing slash, and a missing file read with
        one does not exist."""
        (workspace / "sub").mkdir(parents=True)
        assert (await ListDirTool(workspace).execute(path="sub/"))["success"] is True
        assert "FileNotFound" == (await FileReadTool(workspace).execute(path="nope/"))["error_type"]

    async def test_binary_file_refused(self, workspace: Path) -> None:
        """A file that is not UTF-8 text is refused with a clear error."""
        workspace.mkdir()
        (workspace / "blob.bin").write_bytes(b"\xff\xfe\x00\x01")
        assert {
            "success": False,
            "error": "path 'blob.bin' is binary, not UTF-8 text",
            "error_type": "BinaryFile",
        } == await FileReadTool(workspace).execute(path="blob.bin")

    async def test_nul_bytes_refused_as_binary(self, workspace: Path) -> None:
        """Valid UTF-8 containing NUL bytes still counts as binary."""
        workspace.mkdir()
        (workspace / "nul.txt").write_bytes(b"abc\x00def")
        result = await FileReadTool(workspace).execute(path="nul.txt")
        assert "BinaryFile" == result["error_type"]

    async def test_large_file_refused(self, workspace: Path) -> None:
        """A file over 1 MiB is refused rather than read into the context."""
        workspace.mkdir()
        (workspace / "big.txt").write_bytes(b"a" * (1024 * 1024 + 1))
        result = await FileReadTool(workspace).execute(path="big.txt")
        assert "FileTooLarge" == result["error_type"]

    async def test_file_of_exactly_1_mib_allowed(self, workspace: Path) -> None:
        """The size cap is inclusive: 1 MiB exactly is read."""
        workspace.mkdir()
        (workspace / "edge.txt").write_bytes(b"a" * (1024 * 1024))
        result = await FileReadTool(workspace).execute(path="edge.txt")
        assert 1024 * 1024 == len(result["output"])

    async def test_max_file_bytes_bounds_reads(self, workspace: Path) -> None:
        """max_file_bytes moves the read cap: 10 bytes read, 11 refused naming the setting."""
        workspace.mkdir()
        (workspace / "ten.txt").write_bytes(b"a" * 10)
        (workspace / "eleven.txt").write_bytes(b"a" * 11)
        tool = FileReadTool(workspace, max_file_bytes=10)
        assert {"success": True, "output": "a" * 10} == await tool.execute(path="ten.txt")
        refused = await tool.execute(path="eleven.txt")
        assert ("FileTooLarge", True) == (
            refused["error_type"],
            "tools.max_file_bytes" in refused["error"],
        )

    async def test_a_write_over_the_limit_changes_nothing(self, workspace: Path) -> None:
        """A write or an append that would leave a file over max_file_bytes is refused whole."""
        tool = FileWriteTool(workspace, max_file_bytes=10)
        assert {"success": True, "output": 6} == await tool.execute(path="f.txt", content="é" * 3)
        too_long = await tool.execute(path="new/g.txt", content="x" * 11)
        appended = await tool.execute(path="f.txt", content="12345", append=True)
        replaced = await tool.execute(path="f.txt", content="y" * 11)
        assert ["FileTooLarge"] * 3 == [r["error_type"] for r in (too_long, appended, replaced)]
        assert "é" * 3 == (workspace / "f.txt").read_text(encoding="utf-8")
        assert not (workspace / "new").exists()
        assert {"success": True, "output": 4} == await tool.execute(
            path="f.txt", content="1234", append=True
        )
        assert {"success": True, "output": 10} == await tool.execute(path="f.txt", content="z" * 10)
        assert "z" * 10 == (workspace / "f.txt").read_text(encoding="utf-8")

    @pytest.mark.slow  # file_write in a Python process of its own: its start-up and imports
    @pytest.mark.parametrize("append", [False, True], ids=["replace", "append"])
    def test_a_write_that_fails_part_way_leaves_the_file_as_it_was(
        self, tmp_path: Path, append: bool
    ) -> None:
        """A write or an append the disk cuts short fails its call; the old content stays
        (an append's first bytes are cut off again), no leftovers.

        A file size limit (``RLIMIT_FSIZE``, in a process of its own) makes the write
        fail after its first bytes, as a full disk would.
        """
        workspace = tmp_path / "ws"
        workspace.mkdir()
        (workspace / "f.txt").write_text("old content")
        limit = (
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))\n"
        )
        error_type = _write_in_a_process(workspace, limit, "f.txt", "x" * 100, append=append)
        assert "OSError" == error_type
        assert "old content" == (workspace / "f.txt").read_text()
        assert ["f.txt"] == os.listdir(workspace)

    @pytest.mark.slow  # file_write in a Python process of its own: its start-up and imports
    def test_an_append_that_fails_part_way_leaves_no_file_it_made(self, tmp_path: Path) -> None:
        """An append to a file that was not there, cut short by the disk, leaves none (it
        left an empty file, which the quota no longer counted)."""
        workspace = tmp_path / "ws"
        workspace.mkdir()
        limit = (
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))\n"
        )
        error_type = _write_in_a_process(workspace, limit, "new.txt", "x" * 100, append=True)
        assert ("OSError", []) == (error_type, os.listdir(workspace))

    @pytest.mark.slow  # file_write in a Python process of its own: its start-up and imports
    def test_an_append_killed_part_way_leaves_the_file_as_it_was(self, tmp_path: Path) -> None:
        """A process killed (SIGKILL) half way through an append leaves the file with its old
        content under its name, the cut-off rest only in a temp file the next start removes.
        Before, the append wrote in place and the file kept the half it had written."""
        workspace = tmp_path / "ws"
        workspace.mkdir()
        (workspace / "f.txt").write_text("old content")
        dying = (  # the kernel cuts a large write at a page boundary when the process is killed
            "real = os.write\n"
            "def dying(fd, data):\n"
            "    if len(data) >= 8192:\n"
            "        real(fd, bytes(data)[:4096])\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return real(fd, data)\n"
            "os.write = dying\n"
        )
        killed = -signal.SIGKILL
        _write_in_a_process(workspace, dying, "f.txt", "x" * 8192, append=True, exit_code=killed)
        assert "old content" == (workspace / "f.txt").read_text()
        left = [name for name in os.listdir(workspace) if name != "f.txt"]
        assert [True] == [bool(_files._TEMPORARY_FILE.fullmatch(name)) for name in left]

    async def test_a_hard_link_keeps_the_old_content(self, workspace: Path, outside: Path) -> None:
        """A write replaces the file: a hard link to it, made outside, is not written through."""
        workspace.mkdir()
        os.link(outside / "secret.txt", workspace / "linked.txt")
        result = await FileWriteTool(workspace).execute(path="linked.txt", content="changed")
        assert {"success": True, "output": 7} == result
        assert "top secret" == (outside / "secret.txt").read_text()
        assert "changed" == (workspace / "linked.txt").read_text()

    async def test_an_append_to_a_hard_link_keeps_the_old_content(
        self, workspace: Path, outside: Path
    ) -> None:
        """An append to a file with another name (a hard link made outside) is not written
        through either: the workspace's name gets old content and new, the other the old."""
        workspace.mkdir()
        os.link(outside / "secret.txt", workspace / "linked.txt")
        os.chmod(workspace / "linked.txt", 0o640)
        result = await FileWriteTool(workspace).execute(
            path="linked.txt", content=" appended", append=True
        )
        assert {"success": True, "output": 9} == result
        assert "top secret" == (outside / "secret.txt").read_text()
        assert "top secret appended" == (workspace / "linked.txt").read_text()
        assert 0o640 == stat.S_IMODE(os.stat(workspace / "linked.txt").st_mode)
        appended = await FileWriteTool(workspace).execute(
            path="linked.txt", content="!", append=True
        )
        assert ({"success": True, "output": 1}, 1) == (
            appended,
            os.stat(workspace / "linked.txt").st_nlink,
        )
        assert "top secret appended!" == (workspace / "linked.txt").read_text()

    @pytest.mark.slow  # file_write in a Python process of its own: its start-up and imports
    def test_a_read_only_file_is_not_replaced(self) -> None:
        """A file the service may not write (mode 0o444) stays as it is: PermissionDenied.

        Run as an unprivileged user (``nobody`` when the tests run as root, for whom
        every file is writable), in a process of its own.
        """
        workspace = Path(tempfile.mkdtemp())  # a folder nobody can reach, unlike tmp_path
        try:
            (workspace / "ro.txt").write_text("keep")
            os.chmod(workspace / "ro.txt", 0o444)
            os.chmod(workspace, 0o777)
            nobody = "if os.geteuid() == 0:\n    os.setgid(65534)\n    os.setuid(65534)\n"
            error_type = _write_in_a_process(workspace, nobody, "ro.txt", "changed")
            assert "PermissionDenied" == error_type
            assert "keep" == (workspace / "ro.txt").read_text()
        finally:
            shutil.rmtree(workspace)

    async def test_a_write_keeps_the_mode_of_the_file_it_replaces(self, workspace: Path) -> None:
        """A replaced file keeps its permission bits; a new one gets the usual 0o644 and umask."""
        workspace.mkdir()
        (workspace / "private.txt").write_text("p")
        os.chmod(workspace / "private.txt", 0o600)
        tool = FileWriteTool(workspace)
        await tool.execute(path="private.txt", content="still private")
        await tool.execute(path="new.txt", content="n")
        umask = os.umask(0)
        os.umask(umask)
        modes = [stat.S_IMODE(os.stat(workspace / n).st_mode) for n in ("private.txt", "new.txt")]
        assert [0o600, 0o644 & ~umask] == modes

    @pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file to another user")
    async def test_a_replaced_file_stays_its_owners(self, workspace: Path) -> None:
        """A file of another user (a shared workspace) is still theirs once replaced."""
        workspace.mkdir()
        (workspace / "theirs.txt").write_text("t")
        os.chown(workspace / "theirs.txt", 65534, 65534)
        result = await FileWriteTool(workspace).execute(path="theirs.txt", content="changed")
        assert {"success": True, "output": 7} == result
        written = os.stat(workspace / "theirs.txt")
        assert (65534, 65534) == (written.st_uid, written.st_gid)

    async def test_a_replaced_file_loses_its_set_id_bits(self, workspace: Path) -> None:
        """New content never runs as the file's owner: set-user-ID and set-group-ID go,
        the other permission bits stay."""
        workspace.mkdir()
        (workspace / "tool.sh").write_text("#!/bin/sh\n")
        os.chmod(workspace / "tool.sh", 0o6750)
        await FileWriteTool(workspace).execute(path="tool.sh", content="#!/bin/sh\nid\n")
        assert 0o750 == stat.S_IMODE(os.stat(workspace / "tool.sh").st_mode)

    @pytest.mark.parametrize(
        "path", ["../" + "p" * 10_000, "d/" * 5_000 + "x"], ids=["outside", "too-long"]
    )
    async def test_a_long_path_is_quoted_by_its_start(self, workspace: Path, path: str) -> None:
        """A path of any length: the error quotes its first 80 characters, and how many more."""
        result = await FileReadTool(workspace).execute(path=path)
        assert False is result["success"]
        assert f"{path[:80]!r}...[+{len(path) - 80} chars]" in str(result["error"])
        assert len(str(result["error"])) < 300

    async def test_nul_in_path_refused(self, workspace: Path) -> None:
        """A path with a NUL byte gives an InvalidPath error result."""
        result = await FileReadTool(workspace).execute(path="a\x00b")
        assert "InvalidPath" == result["error_type"]

    async def test_a_surrogate_in_a_path_is_named_not_the_server_s_path(
        self, tmp_path: Path
    ) -> None:
        """A lone surrogate no file name can hold is an InvalidPath that says where the
        path holds it, the same whatever the workspace's own path (whose length a position
        in the whole path would tell), for every tool."""
        errors = set()
        for workspace in (tmp_path / "w", tmp_path / ("long" * 20)):
            for tool in (FileWriteTool, FileReadTool, ListDirTool):
                args = {"path": "ab/\ud800", "content": "x"} if tool is FileWriteTool else {}
                result = await tool(workspace).execute(**{"path": "ab/\ud800", **args})
                errors.add((result["error_type"], result["error"]))
        assert {
            (
                "InvalidPath",
                "invalid path 'ab/\\ud800': character 3 is an unpaired surrogate, "
                "which no file name holds",
            )
        } == errors

    @pytest.mark.parametrize("path", ["a" * 256, "d/" + "a" * 300 + "/x"], ids=["file", "folder"])
    async def test_a_name_too_long_is_an_invalid_path(self, workspace: Path, path: str) -> None:
        """A name past the filesystem's 255 bytes is the model's mistake, InvalidPath for
        every tool, not an OSError that reads like the disk's trouble."""
        results = [
            await FileWriteTool(workspace).execute(path=path, content="x"),
            await FileReadTool(workspace).execute(path=path),
            await ListDirTool(workspace).execute(path=path),
        ]
        assert [("InvalidPath", True)] * 3 == [
            (r["error_type"], r["error"].endswith("the path or a name in it is too long"))
            for r in results
        ]

    async def test_deeply_nested_path_refused(self, workspace: Path) -> None:
        """A path of thousands of folders, past PATH_MAX (4096 bytes) once resolved, is an
        InvalidPath, not an interpreter error, and nothing is made; one of hundreds of
        folders within it is written like any other."""
        result = await FileWriteTool(workspace).execute(path="d/" * 2100 + "x", content="x")
        assert ("InvalidPath", "the path or a name in it is too long") == (
            result["error_type"],
            result["error"].rsplit(": ", 1)[-1],
        )
        assert [] == os.listdir(workspace)
        deep = "d/" * 300 + "x"
        assert {"success": True, "output": 1} == await FileWriteTool(workspace).execute(
            path=deep, content="x"
        )
        assert {"success": True, "output": "x"} == await FileReadTool(workspace).execute(path=deep)

    @pytest.mark.parametrize(
        "params",
        [{}, {"path": "a"}, {"path": 1, "content": "x"}, {"path": "a", "content": "x", "mode": 1}],
    )
    async def test_write_bad_arguments(self, workspace: Path, params: dict[str, object]) -> None:
        """Missing, wrong-typed or extra arguments give an InvalidArguments result."""
        result = await FileWriteTool(workspace).execute(**params)
        assert "InvalidArguments" == result["error_type"]
        assert not workspace.exists() or [] == list(workspace.iterdir())

    @pytest.mark.parametrize("content", ["\ud800", "ok \udcff"], ids=["high", "low"])
    async def test_content_that_is_not_utf8_text_is_invalid_arguments(
        self, workspace: Path, content: str
    ) -> None:
        """Content with a lone surrogate (a JSON escape) cannot be written as UTF-8: the
        call fails as InvalidArguments saying where, and nothing is made."""
        result = await FileWriteTool(workspace).execute(path="a.txt", content=content)
        assert ("InvalidArguments", False) == (result["error_type"], result["success"])
        assert f"character {content.index(content[-1])}" in result["error"]
        assert not (workspace / "a.txt").exists()


class TestListDir:
    async def test_lists_sorted_with_types(self, workspace: Path) -> None:
        """Entries come sorted by name, each typed file, dir or symlink."""
        (workspace / "b_dir").mkdir(parents=True)
        (workspace / "a.txt").write_text("a")
        (workspace / "c.txt").write_text("c")
        (workspace / "d_link").symlink_to(workspace / "a.txt")
        assert {
            "success": True,
            "output": [
                {"name": "a.txt", "type": "file"},
                {"name": "b_dir", "type": "dir"},
                {"name": "c.txt", "type": "file"},
                {"name": "d_link", "type": "symlink"},
            ],
        } == await ListDirTool(workspace).execute()

    async def test_creates_empty_workspace(self, workspace: Path) -> None:
        """Listing a workspace that does not exist yet creates it and lists nothing."""
        assert {"success": True, "output": []} == await ListDirTool(workspace).execute(path=".")
        assert workspace.is_dir()

    async def test_subdirectory(self, workspace: Path) -> None:
        """A relative subdirectory is listed."""
        (workspace / "sub").mkdir(parents=True)
        (workspace / "sub" / "x.txt").write_text("x")
        assert {"success": True, "output": [{"name": "x.txt", "type": "file"}]} == (
            await ListDirTool(workspace).execute(path="sub")
        )

    async def test_missing_and_not_a_directory(self, workspace: Path) -> None:
        """Listing a missing path or a file gives error results."""
        workspace.mkdir()
        (workspace / "f.txt").write_text("f")
        tool = ListDirTool(workspace)
        assert "FileNotFound" == (await tool.execute(path="nope"))["error_type"]
        assert "NotADirectory" == (await tool.execute(path="f.txt"))["error_type"]


class TestListDirLimit:
    async def test_a_listing_past_the_limit_is_cut_and_says_so(self, workspace: Path) -> None:
        """Past max_entries: a success holding the first entries by name, how many were
        left out, and a note naming the setting."""
        (workspace / "d_dir").mkdir(parents=True)
        for name in ("e.txt", "b.txt", "a.txt", "c.txt"):
            (workspace / name).write_text(name)
        result = await ListDirTool(workspace, max_entries=3).execute()
        assert result["success"] is True
        output = result["output"]
        assert [
            {"name": "a.txt", "type": "file"},
            {"name": "b.txt", "type": "file"},
            {"name": "c.txt", "type": "file"},
        ] == output["entries"]
        assert 2 == output["omitted"]
        assert "listing cut at 3 entries (tools.max_dir_entries): 2 more" in output["note"]

    async def test_a_listing_at_the_limit_is_whole(self, workspace: Path) -> None:
        """Exactly max_entries entries: the plain list, nothing cut."""
        (workspace / "sub").mkdir(parents=True)
        for name in ("b", "a"):
            (workspace / "sub" / name).write_text(name)
        assert {
            "success": True,
            "output": [{"name": "a", "type": "file"}, {"name": "b", "type": "file"}],
        } == await ListDirTool(workspace, max_entries=2).execute(path="sub")

    async def test_the_default_limit_bounds_a_huge_directory(self, workspace: Path) -> None:
        """Without a limit given, a directory of more than the documented default is cut."""
        workspace.mkdir()
        count = _files.DEFAULT_MAX_DIR_ENTRIES + 5
        for n in range(count):
            (workspace / f"f{n:05d}").touch()
        output = (await ListDirTool(workspace).execute())["output"]
        assert 1000 == _files.DEFAULT_MAX_DIR_ENTRIES == len(output["entries"])
        assert (5, "f00000", "f00999") == (
            output["omitted"],
            output["entries"][0]["name"],
            output["entries"][-1]["name"],
        )

    def test_a_limit_below_one_is_refused(self, workspace: Path) -> None:
        """max_entries must be at least 1."""
        with pytest.raises(ValueError, match="max_entries"):
            ListDirTool(workspace, max_entries=0)

    async def test_a_mission_meets_the_limit_of_the_settings(self, tmp_path: Path) -> None:
        """tools.max_dir_entries reaches the container's list_dir."""
        async with _container(tmp_path, max_dir_entries=2) as container:
            mission = 'tool:file_write {"path": "d/a", "content": "a"}\n'
            mission += 'tool:file_write {"path": "d/b", "content": "b"}\n'
            mission += 'tool:file_write {"path": "d/c", "content": "c"}\n'
            mission += 'tool:list_dir {"path": "d"}'
            events = [e async for e in container.executor.execute_mission_streaming(mission)]
        listed = [
            e.data for e in events if e.kind == "tool_result" and e.data["tool"] == "list_dir"
        ]
        assert [(True, ["a", "b"], 1)] == [
            (
                data["success"],
                [entry["name"] for entry in data["output"]["entries"]],
                data["output"]["omitted"],
            )
            for data in listed
        ]
        assert "completed" == events[-1].result.status  # type: ignore[union-attr]


class TestWorkspaceConfinement:
    @pytest.mark.parametrize("path", ["../outside/secret.txt", "sub/../../outside/secret.txt"])
    async def test_dotdot_escape_refused(self, workspace: Path, outside: Path, path: str) -> None:
        """A relative path climbing out of the workspace is refused."""
        assert _refused(path) == await FileReadTool(workspace).execute(path=path)

    async def test_absolute_path_outside_refused(self, workspace: Path, outside: Path) -> None:
        """An absolute path outside the workspace is refused."""
        path = str(outside / "secret.txt")
        assert _refused(path) == await FileReadTool(workspace).execute(path=path)

    async def test_symlinked_file_out_refused(self, workspace: Path, outside: Path) -> None:
        """A symlink in the workspace pointing at a file outside is refused for read and write."""
        workspace.mkdir()
        (workspace / "link.txt").symlink_to(outside / "secret.txt")
        assert _refused("link.txt") == await FileReadTool(workspace).execute(path="link.txt")
        assert _refused("link.txt") == await FileWriteTool(workspace).execute(
            path="link.txt", content="pwned"
        )
        assert "top secret" == (outside / "secret.txt").read_text()

    async def test_dangling_symlink_out_refused(self, workspace: Path, outside: Path) -> None:
        """Writing through a symlink to a not-yet-existing file outside is refused."""
        workspace.mkdir()
        (workspace / "new.txt").symlink_to(outside / "created.txt")
        assert _refused("new.txt") == await FileWriteTool(workspace).execute(
            path="new.txt", content="x"
        )
        assert not (outside / "created.txt").exists()

    async def test_symlinked_dir_out_refused(self, workspace: Path, outside: Path) -> None:
        """A symlinked parent directory leading outside is refused for read, write and list."""
        workspace.mkdir()
        (workspace / "door").symlink_to(outside, target_is_directory=True)
        assert _refused("door/secret.txt") == await FileReadTool(workspace).execute(
            path="door/secret.txt"
        )
        assert _refused("door/new.txt") == await FileWriteTool(workspace).execute(
            path="door/new.txt", content="x"
        )
        assert _refused("door") == await ListDirTool(workspace).execute(path="door")
        assert ["secret.txt"] == os.listdir(outside)

    @pytest.mark.parametrize("path", ["..", "/", "../outside"])
    async def test_list_outside_refused(self, workspace: Path, outside: Path, path: str) -> None:
        """list_dir refuses directories outside the workspace."""
        assert _refused(path) == await ListDirTool(workspace).execute(path=path)

    async def test_write_escape_refused_and_nothing_written(
        self, workspace: Path, outside: Path
    ) -> None:
        """file_write refuses `../` and creates nothing outside."""
        result = await FileWriteTool(workspace).execute(path="../outside/x.txt", content="x")
        assert _refused("../outside/x.txt") == result
        assert ["secret.txt"] == os.listdir(outside)

    async def test_refusal_logged_as_security_event(self, workspace: Path, outside: Path) -> None:
        """A refused path is logged as tool.path.refused (security), the path as a digest only."""
        with capture_logs() as logs:
            await FileReadTool(workspace).execute(path="../outside/secret.txt")
        assert [
            {
                "event": "tool.path.refused",
                "category": "security",
                "tool": "file_read",
                **text_fields("path", "../outside/secret.txt"),
                "log_level": "warning",
            }
        ] == logs

    async def test_symlink_loop_gives_error_result(self, workspace: Path) -> None:
        """A symlink loop gives an error result rather than an exception."""
        workspace.mkdir()
        (workspace / "loop").symlink_to(workspace / "loop")
        assert {
            "success": False,
            "error": "path 'loop' is a symlink loop",
            "error_type": "SymlinkLoop",
        } == await FileReadTool(workspace).execute(path="loop")

    @pytest.mark.parametrize(
        ("tool", "args"),
        [
            (FileReadTool, {"path": "loop"}),
            (FileReadTool, {"path": "loop/x"}),
            (ListDirTool, {"path": "loop"}),
            (FileWriteTool, {"path": "loop", "content": "x"}),
            (FileWriteTool, {"path": "loop/x", "content": "x"}),
        ],
    )
    async def test_a_loop_left_in_the_resolved_path_is_a_symlink_loop(
        self, workspace: Path, monkeypatch: pytest.MonkeyPatch, tool: type, args: dict[str, str]
    ) -> None:
        """Python 3.13's ``Path.resolve()`` hands a path through a symlink loop back with the
        loop left in it, where 3.11 raises: each file tool still answers ``SymlinkLoop``, not
        ``NotARegularFile`` nor a refusal as outside the workspace (a security event)."""
        workspace.mkdir()
        (workspace / "loop").symlink_to(workspace / "loop")
        resolve = Path.resolve

        def resolve_as_python_313(self: Path, strict: bool = False) -> Path:
            try:
                return resolve(self, strict)
            except RuntimeError:
                return Path(os.path.abspath(self))

        monkeypatch.setattr(Path, "resolve", resolve_as_python_313)
        with capture_logs() as logs:
            result = await tool(workspace).execute(**args)
        assert {
            "success": False,
            "error": f"path {quoted(args['path'])} is a symlink loop",
            "error_type": "SymlinkLoop",
        } == result
        assert [] == [entry for entry in logs if entry.get("category") == "security"]


class TestSwappedAfterTheCheck:
    """Someone else (a tool of the user's that can make symlinks, another process on the
    workspace) turns a folder on the way into a symlink out of the workspace after the path
    was checked and before the tool opens it: the tool must not follow it."""

    @pytest.fixture(name="swap")
    def fixture_swap(self, workspace: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        """Make ``sub`` a folder of the workspace that becomes a symlink to ``outside`` once
        the path is checked."""
        (workspace / "sub").mkdir(parents=True)
        (workspace / "sub" / "secret.txt").write_text("inside")
        resolve = Workspace.resolve

        def resolve_then_swap(self: Workspace, raw: str, root: Path) -> Path:
            resolved = resolve(self, raw, root)
            (workspace / "sub").rename(workspace / "moved")
            (workspace / "sub").symlink_to(outside, target_is_directory=True)
            return resolved

        monkeypatch.setattr(Workspace, "resolve", resolve_then_swap)
        return workspace

    async def test_a_write_does_not_follow(self, swap: Path, outside: Path) -> None:
        """Neither a replacing write nor an append lands outside."""
        written = await FileWriteTool(swap).execute(path="sub/new.txt", content="pwned")
        (swap / "sub").unlink()
        (swap / "moved").rename(swap / "sub")
        appended = await FileWriteTool(swap).execute(
            path="sub/secret.txt", content="pwned", append=True
        )
        assert [_refused("sub/new.txt"), _refused("sub/secret.txt")] == [written, appended]
        assert (["secret.txt"], "top secret") == (
            os.listdir(outside),
            (outside / "secret.txt").read_text(),
        )

    async def test_a_read_does_not_follow(self, swap: Path) -> None:
        """A read does not return the file outside."""
        assert _refused("sub/secret.txt") == await FileReadTool(swap).execute(path="sub/secret.txt")

    async def test_a_listing_does_not_follow(self, swap: Path) -> None:
        """list_dir does not list the folder outside."""
        assert _refused("sub") == await ListDirTool(swap).execute(path="sub")


@pytest.fixture(name="fifo")
def fixture_fifo(workspace: Path) -> Path:
    """A FIFO inside the workspace that nobody writes to or reads from."""
    workspace.mkdir()
    path = workspace / "pipe"
    os.mkfifo(path)
    return path


class TestNonRegularFiles:
    """Reading or writing a FIFO, socket or device would wait on a peer; the tools refuse them."""

    @staticmethod
    def _refused(path: str) -> dict[str, object]:
        return {
            "success": False,
            "error": f"path {path!r} is not a regular file (FIFO, device or socket)",
            "error_type": "NotARegularFile",
        }

    async def test_fifo_read_refused(self, workspace: Path, fifo: Path) -> None:
        """file_read of a FIFO without a writer returns a tool error instead of waiting."""
        # wait_for only keeps a regression from hanging the suite; no timing is asserted.
        result = await asyncio.wait_for(FileReadTool(workspace).execute(path="pipe"), 30)
        assert self._refused("pipe") == result

    async def test_fifo_write_refused(self, workspace: Path, fifo: Path) -> None:
        """file_write to a FIFO without a reader returns a tool error instead of waiting."""
        result = await asyncio.wait_for(
            FileWriteTool(workspace).execute(path="pipe", content="x"), 30
        )
        assert self._refused("pipe") == result

    async def test_fifo_write_with_a_reader_refused(self, workspace: Path, fifo: Path) -> None:
        """A FIFO that has a reader is refused as well, and nothing reaches the reader."""
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            result = await FileWriteTool(workspace).execute(path="pipe", content="x", append=True)
            assert self._refused("pipe") == result
            assert b"" == os.read(reader, 16)
        finally:
            os.close(reader)

    async def test_socket_refused(self, tmp_path: Path) -> None:
        """A Unix socket in the workspace is refused for read and write."""
        workspace = tmp_path / "w"  # short: a socket path is limited to about 100 bytes
        workspace.mkdir()
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(workspace / "sock"))
            assert self._refused("sock") == await FileReadTool(workspace).execute(path="sock")
            assert self._refused("sock") == await FileWriteTool(workspace).execute(
                path="sock", content="x"
            )

    @pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
    async def test_device_refused(self, workspace: Path) -> None:
        """A character device (a copy of /dev/zero) is refused without being read."""
        workspace.mkdir()
        os.mknod(workspace / "zero", 0o600 | stat.S_IFCHR, os.stat("/dev/zero").st_rdev)
        assert self._refused("zero") == await FileReadTool(workspace).execute(path="zero")

    async def test_fifo_swapped_in_after_the_check_refused(
        self, workspace: Path, fifo: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A FIFO that replaces a regular file after the lstat is caught on the open file."""
        (workspace / "regular.txt").write_text("r")
        regular = os.lstat(workspace / "regular.txt")
        monkeypatch.setattr(_files.os, "lstat", lambda _path, **_: regular)  # type: ignore[attr-defined]
        result = await asyncio.wait_for(FileReadTool(workspace).execute(path="pipe"), 30)
        assert self._refused("pipe") == result

    async def test_listed_as_other(self, workspace: Path, fifo: Path) -> None:
        """list_dir types a FIFO as other, so a model knows not to read it."""
        (workspace / "a.txt").write_text("a")
        assert {
            "success": True,
            "output": [{"name": "a.txt", "type": "file"}, {"name": "pipe", "type": "other"}],
        } == await ListDirTool(workspace).execute()


class TestMaxFileBytesSetting:
    async def test_a_mission_meets_the_limit_of_the_settings(self, tmp_path: Path) -> None:
        """tools.max_file_bytes reaches the container's file tools: a write past it fails."""
        async with _container(tmp_path, max_file_bytes=5) as container:
            small = await container.executor.execute_mission(
                'tool:file_write {"path": "a.txt", "content": "12345"}'
            )
            large = await container.executor.execute_mission(
                'tool:file_write {"path": "b.txt", "content": "123456"}'
            )
        assert ("completed", "failed") == (small.status, large.status)
        assert "FileTooLarge" == large.error_type


class TestConcurrentAppends:
    """Appends to one file from several pool threads at once (parallel calls, two missions
    of a session) never take it past max_file_bytes together."""

    async def test_concurrent_appends_keep_the_limit(
        self, workspace: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Four appends of 4 bytes to a file of 6, limit 10: one fits, three fail
        FileTooLarge, the file ends at 10 bytes. Every fstat is slowed, so without an
        exclusive section each append would size the file before any wrote."""
        workspace.mkdir()
        (workspace / "log.txt").write_text("123456")
        fstat = os.fstat

        def slow_fstat(fd: int) -> os.stat_result:
            result = fstat(fd)
            time.sleep(0.05)
            return result

        pool = ToolThreadPool(4)
        tool = FileWriteTool(workspace, pool, max_file_bytes=10)
        monkeypatch.setattr(_files.os, "fstat", slow_fstat)  # type: ignore[attr-defined]
        try:
            results = await asyncio.gather(
                *(tool.execute(path="log.txt", content="abcd", append=True) for _ in range(4))
            )
        finally:
            monkeypatch.undo()
            pool.close()
        assert ["FileTooLarge"] * 3 + [None] == sorted(
            (r.get("error_type") for r in results), key=lambda t: (t is None, t)
        )
        assert "123456abcd" == (workspace / "log.txt").read_text()


class TestAppendLock:
    async def test_a_lock_held_elsewhere_fails_the_append_in_time(
        self, workspace: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A process that holds a lock on the file for good (not an append of ours) cannot
        tie up a tool thread: the append gives up after a while, FileBusy, file unchanged."""
        monkeypatch.setattr(_files, "APPEND_LOCK_WAIT_SECONDS", 0.05, raising=False)
        workspace.mkdir()
        (workspace / "log.txt").write_text("kept")
        with open(workspace / "log.txt", "rb") as holder:  # noqa: ASYNC230 (set-up)
            fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
            # wait_for only keeps a regression from hanging the suite; no timing is asserted.
            result = await asyncio.wait_for(
                FileWriteTool(workspace).execute(path="log.txt", content="x", append=True), 10
            )
        assert ("FileBusy", "kept") == (result["error_type"], (workspace / "log.txt").read_text())


class TestWorkspaceQuota:
    """tools.max_workspace_bytes and tools.max_workspace_entries bound the workspace as a
    whole: many files each under max_file_bytes cannot fill the disk or its inodes."""

    async def test_bytes_past_the_quota_are_refused(self, workspace: Path) -> None:
        """A write or an append that would take the workspace's files past the bytes quota
        fails as WorkspaceFull and leaves nothing; one that shrinks a file always passes."""
        tool = FileWriteTool(workspace, max_workspace_bytes=10)
        assert {"success": True, "output": 6} == await tool.execute(path="a.txt", content="a" * 6)
        new = await tool.execute(path="d/b.txt", content="b" * 5)
        assert ("WorkspaceFull", True) == (
            new["error_type"],
            "past 10 bytes (tools.max_workspace_bytes)" in new["error"],
        )
        assert {"success": True, "output": 10} == await tool.execute(path="a.txt", content="x" * 10)
        appended = await tool.execute(path="a.txt", content="y", append=True)
        assert "WorkspaceFull" == appended["error_type"]
        assert ["a.txt"] == os.listdir(workspace)
        assert "x" * 10 == (workspace / "a.txt").read_text()
        assert {"success": True, "output": 2} == await tool.execute(path="a.txt", content="zz")
        assert {"success": True, "output": 8} == await tool.execute(path="b.txt", content="b" * 8)

    async def test_entries_past_the_quota_are_refused(self, workspace: Path) -> None:
        """Files and the folders a write makes count against the entries quota; a write
        into an existing file adds none."""
        tool = FileWriteTool(workspace, max_workspace_entries=3)
        assert True is (await tool.execute(path="d/e/f.txt", content=""))["success"]
        refused = await tool.execute(path="g.txt", content="")
        assert ("WorkspaceFull", True) == (
            refused["error_type"],
            "past 3 files and folders (tools.max_workspace_entries)" in refused["error"],
        )
        assert "WorkspaceFull" == (await tool.execute(path="d/h/i", content=""))["error_type"]
        assert (
            True is (await tool.execute(path="d/e/f.txt", content="more", append=True))["success"]
        )
        assert ["d"] == os.listdir(workspace)
        assert ["e"] == os.listdir(workspace / "d")

    async def test_all_sessions_and_files_already_there_count(self, workspace: Path) -> None:
        """The quota is the whole workspace's: files no tool wrote, in any session's folder."""
        (workspace / "other-session").mkdir(parents=True)
        (workspace / "other-session" / "big").write_bytes(b"x" * 8)
        tool = FileWriteTool(workspace, max_workspace_bytes=10)
        assert "WorkspaceFull" == (await tool.execute(path="a", content="abc"))["error_type"]
        assert True is (await tool.execute(path="a", content="ab"))["success"]

    async def test_a_workspace_dir_that_is_a_symlink_is_counted(self, tmp_path: Path) -> None:
        """workspace_dir may be a symlink to the real folder, as the tools follow it: its
        files count (before, the walk refused the symlink and found the workspace empty)."""
        real = tmp_path / "real"
        real.mkdir()
        (real / "big").write_bytes(b"x" * 8)
        (tmp_path / "link").symlink_to(real)
        tool = FileWriteTool(tmp_path / "link", max_workspace_bytes=10)
        assert "WorkspaceFull" == (await tool.execute(path="a", content="abc"))["error_type"]
        assert True is (await tool.execute(path="a", content="ab"))["success"]
        assert (10, 2) == _quota.measure(tmp_path / "link")

    async def test_concurrent_writes_keep_the_quota(self, workspace: Path) -> None:
        """Four writes of 4 bytes to four files at once, quota 10: two pass, two fail."""
        pool = ToolThreadPool(4)
        tool = FileWriteTool(workspace, pool, max_workspace_bytes=10)
        try:
            results = await asyncio.gather(
                *(tool.execute(path=f"f{n}", content="abcd") for n in range(4))
            )
        finally:
            pool.close()
        assert [None, None, "WorkspaceFull", "WorkspaceFull"] == sorted(
            (r.get("error_type") for r in results), key=lambda t: (t is not None, t or "")
        )
        assert 8 == sum(p.stat().st_size for p in workspace.iterdir())

    async def test_the_workspace_is_walked_once_not_per_write(
        self, workspace: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The count is kept and moved by each write: ten writes walk the workspace once."""
        walks: list[Path] = []
        measure = _quota.measure

        def counted(root: Path) -> tuple[int, int]:
            walks.append(root)
            return measure(root)

        monkeypatch.setattr(_quota, "measure", counted)
        tool = FileWriteTool(workspace)
        for n in range(10):
            assert True is (await tool.execute(path=f"d/f{n}", content="x"))["success"]
        assert [workspace] == walks
        assert (10, 11) == tool.quota.counted

    def test_a_slow_walk_is_not_repeated_by_every_write(
        self, workspace: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A walk that takes longer than RECOUNT_SECONDS (a huge workspace, a slow network
        filesystem) dates its count from its end: the next write does not walk again."""
        clock = [1000.0]
        walks: list[Path] = []

        def slow(root: Path) -> tuple[int, int]:
            walks.append(root)
            clock[0] += _quota.RECOUNT_SECONDS + 1
            return 0, 0

        monkeypatch.setattr(_quota, "measure", slow)
        monkeypatch.setattr(_quota, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
        quota = _quota.WorkspaceQuota(workspace, max_bytes=100, max_entries=100)
        for _ in range(3):
            quota.reserve(1, 1)
            quota.commit(1, 1)
        assert [workspace] == walks

    async def test_room_made_by_others_is_seen(
        self, workspace: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write the count would refuse walks the workspace first (once its count is
        RECHECK_SECONDS old), so files an operator removed make room again."""
        monkeypatch.setattr(_quota, "RECHECK_SECONDS", 0.0)
        tool = FileWriteTool(workspace, max_workspace_bytes=10)
        assert True is (await tool.execute(path="a", content="a" * 10))["success"]
        assert "WorkspaceFull" == (await tool.execute(path="b", content="b"))["error_type"]
        (workspace / "a").unlink()
        assert True is (await tool.execute(path="b", content="b"))["success"]

    def test_a_walk_keeps_the_writes_under_way_counted(
        self, workspace: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A walk while a write is under way (not yet on disk) keeps that write counted: a
        second write cannot pass the quota with it, and its failure takes back no more."""
        monkeypatch.setattr(_quota, "RECOUNT_SECONDS", 0.0)  # every reserve walks
        quota = _quota.WorkspaceQuota(workspace, max_bytes=150, max_entries=100)
        quota.reserve(100, 1)  # a write of 100 bytes under way
        with pytest.raises(Failure, match=r"tools\.max_workspace_bytes"):
            quota.reserve(60, 1)
        quota.reserve(0, 0)  # another walk, with the write still under way
        quota.release(100, 1)  # which then fails
        assert (0, 0) == quota.counted

    def test_limits_below_one_are_refused(self, workspace: Path) -> None:
        """Each workspace limit must be at least 1."""
        with pytest.raises(ValueError, match="workspace limits"):
            FileWriteTool(workspace, max_workspace_bytes=0)
        with pytest.raises(ValueError, match="workspace limits"):
            FileWriteTool(workspace, max_workspace_entries=0)

    async def test_a_mission_meets_the_quota_of_the_settings(self, tmp_path: Path) -> None:
        """tools.max_workspace_bytes reaches the container's file_write."""
        async with _container(tmp_path, max_workspace_bytes=5) as container:
            result = await container.executor.execute_mission(
                'tool:file_write {"path": "a.txt", "content": "123"}\n'
                'tool:file_write {"path": "b.txt", "content": "456"}'
            )
        assert ("failed", "WorkspaceFull") == (result.status, result.error_type)


def _leftover(folder: Path, name: str, content: bytes = b"x" * 10, age: float = 60.0) -> Path:
    """A write's temp file in ``folder``, last written ``age`` seconds ago."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


class TestCrashLeftovers:
    async def test_a_crash_s_temp_files_go_when_the_container_opens(self, tmp_path: Path) -> None:
        """The temp files a write killed mid-way left (any session's folder, any depth) are
        removed as the service starts, and logged; nothing else of the workspace is."""
        ws = tmp_path / "ws"
        _leftover(ws / "s1", ".taskforce-write-0123456789abcdef.tmp", b"x" * 100)
        _leftover(ws / "s2" / "deep", ".taskforce-write-fedcba9876543210.tmp", b"y" * 20)
        kept = [
            _leftover(ws / "s1", "notes.tmp"),
            _leftover(ws / "s1", ".taskforce-write-not-ours.tmp"),
            _leftover(ws / "s1", "a.txt"),
        ]
        with capture_logs() as logs:
            async with _container(tmp_path):
                pass
        assert sorted(kept) == sorted(p for p in ws.rglob("*") if p.is_file())
        removed = [e for e in logs if e["event"] == "tool.tempfiles.removed"]
        assert [(2, 120, "warning", "tool")] == [
            (e["files"], e["bytes"], e["log_level"], e["category"]) for e in removed
        ]

    async def test_one_written_just_before_the_start_goes_once_it_is_old_enough(
        self, tmp_path: Path
    ) -> None:
        """A worker killed during a write and replaced at once leaves a temp file written
        within LEFTOVER_SECONDS of the new one's start: the first look leaves it (a live
        write's may be as new), a second look while the container is open removes it.
        Before, it stayed until the next start, counted in the quota and listed."""
        ws = tmp_path / "ws"
        fresh = _leftover(ws / "s1", ".taskforce-write-0123456789abcdef.tmp", b"x" * 100, age=0)

        with capture_logs() as logs:
            async with _container(tmp_path) as container:
                # the bound only keeps a regression from hanging the suite; nothing is timed
                await asyncio.wait_for(asyncio.gather(*container._later), timeout=10)
                assert not fresh.exists()
        removed = [e for e in logs if e["event"] == "tool.tempfiles.removed"]
        assert [(1, 100)] == [(e["files"], e["bytes"]) for e in removed]

    async def test_a_live_or_fresh_temp_file_is_kept(self, tmp_path: Path) -> None:
        """One a live write holds locked, one written this instant, and a FIFO of such a
        name (never waited on) are left, and nothing is logged."""
        ws = tmp_path / "ws"
        fresh = _leftover(ws / "s", ".taskforce-write-00000000000000aa.tmp", age=0.0)
        locked = _leftover(ws / "s", ".taskforce-write-00000000000000bb.tmp")
        fifo = ws / "s" / ".taskforce-write-00000000000000cc.tmp"
        os.mkfifo(fifo)
        pool = ToolThreadPool(1)
        try:
            with open(locked, "rb") as handle:  # noqa: ASYNC230 (set-up, before the code under test)
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                with capture_logs() as logs:
                    await asyncio.wait_for(_files.remove_write_leftovers(ws, pool), timeout=10)
        finally:
            pool.close()
        assert fresh.exists() and locked.exists() and stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert [] == [e for e in logs if e["event"] == "tool.tempfiles.removed"]

    async def test_a_write_under_way_keeps_its_temp_file(
        self, workspace: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A clean-up of another process (a worker restarted) that runs while a write fills
        its temp file leaves it: the write still succeeds."""
        monkeypatch.setattr(_files, "LEFTOVER_SECONDS", -3600.0)  # no file is too fresh
        real_write_all = _atomic_write.write_all

        def clean_up_first(fd: int, data: bytes) -> None:
            # the leftover walk runs in another thread of the pool, as another process would
            assert (0, 0, False) == _files._remove_leftovers(workspace)
            real_write_all(fd, data)

        monkeypatch.setattr(_atomic_write, "write_all", clean_up_first)
        tool = FileWriteTool(workspace)
        assert True is (await tool.execute(path="f.txt", content="new"))["success"]
        assert "new" == (workspace / "f.txt").read_text()
