"""Fixtures shared by the whole suite: clean structlog state, isolated settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from taskforce.config import Settings


@pytest.fixture(autouse=True, name="_reset_structlog")
def fixture_reset_structlog() -> Iterator[None]:
    """Every test starts and ends with default structlog config and empty contextvars."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture(autouse=True, name="_clean_env")
def fixture_clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TASKFORCE_* variable of the developer's shell leaks into a test."""
    import os

    for key in list(os.environ):
        if key.startswith("TASKFORCE_"):
            monkeypatch.delenv(key)


@pytest.fixture(name="settings")
def fixture_settings(tmp_path: Path) -> Settings:
    """Default settings with state and workspace under the test's tmp dir."""
    return Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "workspace")
