"""The built-in tool set every container starts with."""

from __future__ import annotations

from pathlib import Path

from taskforce.infrastructure.tools._calculator import CalculatorTool
from taskforce.infrastructure.tools._files import FileReadTool, FileWriteTool, ListDirTool
from taskforce.infrastructure.tools._registry import ToolRegistry
from taskforce.infrastructure.tools._sleep import SleepTool

__all__ = ["build_default_registry"]


def build_default_registry(workspace_dir: Path) -> ToolRegistry:
    """Build a registry holding the five built-in tools.

    Args:
        workspace_dir: The directory the file tools are confined to; created on first use.

    Returns:
        A registry with ``calculator``, ``file_read``, ``file_write``, ``list_dir`` and ``sleep``.
    """
    return ToolRegistry(
        [
            CalculatorTool(),
            FileReadTool(workspace_dir),
            FileWriteTool(workspace_dir),
            ListDirTool(workspace_dir),
            SleepTool(),
        ]
    )
