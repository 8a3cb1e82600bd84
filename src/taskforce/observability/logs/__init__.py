"""Structured logging set-up: categories, redaction, one format for structlog and stdlib."""

from __future__ import annotations

from taskforce.observability.logs._logging import configure_logging

__all__ = ["configure_logging"]
