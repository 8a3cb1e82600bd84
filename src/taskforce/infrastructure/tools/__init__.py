"""Built-in tools and the tool registry."""

from __future__ import annotations

from taskforce.infrastructure.tools._base import BaseTool, error_result, ok_result
from taskforce.infrastructure.tools._calculator import CalculatorTool
from taskforce.infrastructure.tools._defaults import build_default_registry
from taskforce.infrastructure.tools._files import (
    LEFTOVER_SECONDS,
    FileReadTool,
    FileWriteTool,
    ListDirTool,
    remove_write_leftovers,
)
from taskforce.infrastructure.tools._registry import ToolRegistry
from taskforce.infrastructure.tools._session_folders import FolderRemoval, SessionFolders
from taskforce.infrastructure.tools._sleep import SleepTool
from taskforce.infrastructure.tools._thread_pool import DEFAULT_TOOL_THREADS, ToolThreadPool
from taskforce.infrastructure.tools._workspace import session_folder_name

__all__ = [
    "DEFAULT_TOOL_THREADS",
    "LEFTOVER_SECONDS",
    "BaseTool",
    "CalculatorTool",
    "FileReadTool",
    "FileWriteTool",
    "FolderRemoval",
    "ListDirTool",
    "SessionFolders",
    "SleepTool",
    "ToolRegistry",
    "ToolThreadPool",
    "build_default_registry",
    "error_result",
    "ok_result",
    "remove_write_leftovers",
    "session_folder_name",
]
