"""Logging set-up from the settings, for every way the service starts.

``taskforce serve`` and ``taskforce run`` call it before anything logs; the app
factory calls it when a foreign server (``uvicorn --factory``, gunicorn) builds the
app and nothing has set logging up yet.
"""

from __future__ import annotations

import structlog

from taskforce.config import Settings, ignored_settings

__all__ = ["configure_from_settings"]

_LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_from_settings(settings: Settings, *, at_least: str = "debug") -> None:
    """Configure structlog and stdlib logging as ``settings.logging`` says.

    Then warn (``config.ignored``) about each setting given that the others leave
    without effect, such as ``metrics.port`` with metrics off.

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
        max_path_chars=settings.logging.max_path_chars,
        cache_loggers=True,
    )
    log = structlog.get_logger(__name__)
    for setting, why in ignored_settings(settings):
        # a warning, not an error: the service runs as the other settings say
        log.warning("config.ignored", category="lifecycle", setting=setting, because=why)
