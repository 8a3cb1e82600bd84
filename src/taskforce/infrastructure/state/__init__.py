"""Session state persistence: the file store and the PostgreSQL store."""

from __future__ import annotations

from taskforce.infrastructure.state._common import StateLimits
from taskforce.infrastructure.state._file_store import FileStateStore
from taskforce.infrastructure.state._postgres_store import PostgresStateStore

__all__ = ["FileStateStore", "PostgresStateStore", "StateLimits"]
