"""The workspace file tools ``file_read``, ``file_write`` and ``list_dir``.

Every path is resolved (following symlinks) and must land inside the workspace
directory; anything else is refused and logged as a security event. All file IO
runs in a worker thread so a large file never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from taskforce.core.interfaces.tools import ToolResult
from taskforce.infrastructure.tools._base import BaseTool, error_result, ok_result

__all__ = ["FileReadTool", "FileWriteTool", "ListDirTool"]

_MAX_READ_BYTES = 1024 * 1024
# Refuse to follow a symlink swapped in between the path check and the open.
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class _PathRefused(Exception):
    """The path resolves outside the workspace."""


class _Failure(Exception):
    """A file action that failed; the message completes the sentence ``path '<path>' ...``."""

    def __init__(self, message: str, error_type: str) -> None:
        self.error_type = error_type
        super().__init__(message)


class _Workspace:
    """The directory the file tools are confined to; created on first use.

    Args:
        root: The workspace directory. Relative paths given to the tools are
            taken relative to it.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def resolve(self, raw: str) -> Path:
        """Resolve a tool's path argument to a real path inside the workspace.

        Runs blocking filesystem calls: call it from a worker thread.

        Args:
            raw: The path as the model gave it, relative or absolute.

        Returns:
            The resolved path, with every symlink followed.

        Raises:
            _PathRefused: The resolved path is outside the workspace.
            _Failure: The path runs into a symlink loop.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        root = self.root.resolve(strict=True)
        # Non-strict resolution still follows every symlink that exists, including a
        # dangling final one, so a path that does not exist yet is checked as well.
        try:
            resolved = (root / raw).resolve()
        except (RuntimeError, OSError) as exc:
            # Python 3.11 reports a symlink loop as RuntimeError, 3.13 as OSError(ELOOP).
            if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
                raise
            raise _Failure("is a symlink loop", "SymlinkLoop") from exc
        if not resolved.is_relative_to(root):
            raise _PathRefused(raw)
        return resolved


class _WorkspaceTool(BaseTool):
    """A tool confined to a workspace; maps refusals and OS errors to error results.

    Args:
        workspace_dir: The workspace; created on the first call if missing.
    """

    def __init__(self, workspace_dir: Path) -> None:
        self.workspace = _Workspace(workspace_dir)

    async def _in_workspace(self, raw: str, action: Callable[[Path], Any]) -> ToolResult:
        def resolve_and_act() -> Any:
            return action(self.workspace.resolve(raw))

        try:
            return ok_result(await asyncio.to_thread(resolve_and_act))
        except _PathRefused:
            structlog.get_logger(__name__).warning(
                "tool.path.refused", category="security", tool=self.name, path=raw
            )
            return error_result(f"path {raw!r} is outside the workspace", "PathOutsideWorkspace")
        except _Failure as exc:
            return error_result(f"path {raw!r} {exc}", exc.error_type)
        except FileNotFoundError:
            return error_result(f"path {raw!r} does not exist", "FileNotFound")
        except IsADirectoryError:
            return error_result(f"path {raw!r} is a directory", "IsADirectory")
        except NotADirectoryError:
            return error_result(f"path {raw!r} is not a directory", "NotADirectory")
        except PermissionError:
            return error_result(f"permission denied for {raw!r}", "PermissionDenied")
        except ValueError as exc:  # e.g. an embedded NUL byte
            return error_result(f"invalid path {raw!r}: {exc}", "InvalidPath")
        except OSError as exc:
            return error_result(f"cannot access {raw!r}: {exc.strerror or exc}", type(exc).__name__)


def _read_text(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW)
    with open(fd, "rb") as handle:
        data = handle.read(_MAX_READ_BYTES + 1)
    if len(data) > _MAX_READ_BYTES:
        raise _Failure(f"is larger than {_MAX_READ_BYTES} bytes", "FileTooLarge")
    try:
        if b"\x00" in data:
            raise ValueError("NUL byte")
        return data.decode("utf-8")
    except ValueError as exc:
        raise _Failure("is binary, not UTF-8 text", "BinaryFile") from exc


class FileReadTool(_WorkspaceTool):
    """Reads a UTF-8 text file from the workspace (at most 1 MiB)."""

    name = "file_read"
    description = "Read a UTF-8 text file from the workspace and return its content."
    parameters_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path relative to the workspace."},
        },
        "required": ["path"],
        "additionalProperties": False,
    }

    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        """Read the file at ``args["path"]``.

        Args:
            args: ``{"path": str}``.

        Returns:
            The file's text, or an error result (outside, missing, binary, too large).
        """
        return await self._in_workspace(args["path"], _read_text)


def _writer(content: str, *, append: bool) -> Callable[[Path], int]:
    data = content.encode("utf-8")

    def write(path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | _O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
        with open(os.open(path, flags, 0o644), "wb") as handle:
            handle.write(data)
        return len(data)

    return write


class FileWriteTool(_WorkspaceTool):
    """Writes (or appends) UTF-8 text to a file in the workspace."""

    name = "file_write"
    description = (
        "Write UTF-8 text to a file in the workspace, creating parent directories; "
        "returns the number of bytes written."
    )
    parameters_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path relative to the workspace."},
            "content": {"type": "string", "description": "The text to write."},
            "append": {
                "type": "boolean",
                "description": "Append instead of replacing the file.",
                "default": False,
            },
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    }

    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        """Write ``args["content"]`` to ``args["path"]``.

        Args:
            args: ``{"path": str, "content": str, "append": bool = False}``.

        Returns:
            The number of bytes written, or an error result.
        """
        write = _writer(args["content"], append=args.get("append", False))
        return await self._in_workspace(args["path"], write)


def _list(path: Path) -> list[dict[str, str]]:
    entries = []
    with os.scandir(path) as scan:
        for entry in scan:
            if entry.is_symlink():
                kind = "symlink"
            elif entry.is_dir(follow_symlinks=False):
                kind = "dir"
            else:
                kind = "file"
            entries.append({"name": entry.name, "type": kind})
    return sorted(entries, key=lambda item: item["name"])


class ListDirTool(_WorkspaceTool):
    """Lists a directory of the workspace."""

    name = "list_dir"
    description = (
        "List a workspace directory: entries sorted by name, each with its type "
        "(file, dir or symlink)."
    )
    parameters_schema = {
        "type": "object",
        "properties": {
            "path": {
                "type": "string",
                "description": "Directory path relative to the workspace.",
                "default": ".",
            },
        },
        "required": [],
        "additionalProperties": False,
    }

    async def run(self, args: Mapping[str, Any]) -> ToolResult:
        """List the directory at ``args["path"]`` (default: the workspace root).

        Args:
            args: ``{"path": str = "."}``.

        Returns:
            ``[{"name": str, "type": "file" | "dir" | "symlink"}, ...]``, or an error result.
        """
        return await self._in_workspace(args.get("path", "."), _list)
