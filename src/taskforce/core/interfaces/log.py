"""The closed set of log categories every structlog event carries in its ``category`` field."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["LOG_CATEGORIES", "LogCategory"]

LogCategory = Literal[
    "lifecycle",  # service start-up, shutdown, configuration
    "mission",  # a mission starts or ends
    "agent",  # agent loop decisions: plans, steps, parse failures
    "llm",  # calls to the LLM provider
    "tool",  # tool calls and their outcomes
    "state",  # session state persistence
    "http",  # HTTP requests served
    "performance",  # durations, sizes and other figures worth graphing
    "security",  # refused paths, failed authentication, redacted secrets
    "metrics",  # faults of the observability layer itself
]

LOG_CATEGORIES: tuple[str, ...] = get_args(LogCategory)
