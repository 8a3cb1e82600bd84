"""Logging set-up from the settings, for every way the service starts.

``taskforce serve`` and ``taskforce run`` call it before anything logs; the app
factory calls it when a foreign server (``uvicorn --factory``, gunicorn) builds the
app and nothing has set logging up yet.
"""

from __future__ import annotations

from taskforce.config import Settings

__all__ = ["configure_from_settings"]

_LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_from_settings(settings: Settings, *, at_least: str = "debug") -> None:
    """Configure structlog and stdlib logging as ``settings.logging`` says.

    Args:
        settings: The settings; their secrets are redacted from every line.
        at_least: A floor for the level (``taskforce run`` keeps its output to warnings).
    """
    from taskforce.observability import configure_logging

    level = max(settings.logging.level, at_least, key=_LEVELS.index)
    configure_logging(
        fmt=settings.logging.format,
        level=level,
        categories=settings.logging.categories,
        secrets=settings.secret_values(),
        cache_loggers=True,
    )
