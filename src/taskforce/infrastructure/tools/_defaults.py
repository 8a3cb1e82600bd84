"""The built-in tool set every container starts with."""

from __future__ import annotations

from pathlib import Path

from taskforce.infrastructure.tools._calculator import DEFAULT_MAX_EXPRESSION_CHARS, CalculatorTool
from taskforce.infrastructure.tools._files import (
    DEFAULT_MAX_DIR_ENTRIES,
    DEFAULT_MAX_FILE_BYTES,
    FileReadTool,
    FileWriteTool,
    ListDirTool,
)
from taskforce.infrastructure.tools._quota import (
    DEFAULT_MAX_WORKSPACE_BYTES,
    DEFAULT_MAX_WORKSPACE_ENTRIES,
)
from taskforce.infrastructure.tools._registry import ToolRegistry
from taskforce.infrastructure.tools._sleep import DEFAULT_MAX_SLEEP_SECONDS, SleepTool
from taskforce.infrastructure.tools._thread_pool import ToolThreadPool

__all__ = ["build_default_registry"]


def build_default_registry(
    workspace_dir: Path,
    pool: ToolThreadPool | None = None,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_dir_entries: int = DEFAULT_MAX_DIR_ENTRIES,
    max_expression_chars: int = DEFAULT_MAX_EXPRESSION_CHARS,
    max_sleep_seconds: float = DEFAULT_MAX_SLEEP_SECONDS,
    max_workspace_bytes: int = DEFAULT_MAX_WORKSPACE_BYTES,
    max_workspace_entries: int = DEFAULT_MAX_WORKSPACE_ENTRIES,
) -> ToolRegistry:
    """Build a registry holding the five built-in tools.

    Args:
        workspace_dir: The directory the file tools are confined to; created on first use.
        pool: The thread pool the file tools share for their IO; one of the
            default size when not given.
        max_file_bytes: The largest file the file tools read or leave behind.
        max_dir_entries: The most entries one ``list_dir`` result holds.
        max_expression_chars: The longest expression ``calculator`` evaluates.
        max_sleep_seconds: The longest wait ``sleep`` takes.
        max_workspace_bytes: The most bytes the workspace's files may hold together.
        max_workspace_entries: The most files and folders the workspace may hold.

    Returns:
        A registry with ``calculator``, ``file_read``, ``file_write``, ``list_dir`` and ``sleep``.
    """
    pool = pool if pool is not None else ToolThreadPool()
    return ToolRegistry(
        [
            CalculatorTool(max_expression_chars=max_expression_chars),
            FileReadTool(workspace_dir, pool, max_file_bytes=max_file_bytes),
            FileWriteTool(
                workspace_dir,
                pool,
                max_file_bytes=max_file_bytes,
                max_workspace_bytes=max_workspace_bytes,
                max_workspace_entries=max_workspace_entries,
            ),
            ListDirTool(workspace_dir, pool, max_entries=max_dir_entries),
            SleepTool(max_seconds=max_sleep_seconds),
        ]
    )
