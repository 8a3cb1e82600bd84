"""Structured logging set-up: categories, redaction, one format for structlog and stdlib."""

from __future__ import annotations

from taskforce.observability.logs._logging import configure_logging
from taskforce.observability.logs._sink import share_log_stream

__all__ = ["configure_logging", "share_log_stream"]
