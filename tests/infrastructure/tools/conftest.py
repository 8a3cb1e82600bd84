"""Fixtures of the tool tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(name="workspace")
def fixture_workspace(tmp_path: Path) -> Path:
    """A workspace directory path that does not exist yet (the tools create it)."""
    return tmp_path / "workspace"
