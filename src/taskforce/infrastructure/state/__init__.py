"""Session state persistence."""

from __future__ import annotations

from taskforce.infrastructure.state._file_store import FileStateStore

__all__ = ["FileStateStore"]
