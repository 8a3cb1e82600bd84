"""Settings of taskforce, read once at start-up from defaults, a TOML file and the environment.

Precedence is init arguments > environment (``TASKFORCE_*``, nested with ``__``)
> the TOML file named by ``TASKFORCE_CONFIG`` or ``--config`` > defaults.
:func:`load_settings` turns every validation failure into one
:class:`~taskforce.errors.ConfigurationError` naming the setting.

The modules, each with one job:

- ``_sections``: the sections (``llm``, ``metrics``, ...), their fields and bounds;
- ``_validators``: the checks of one value the sections share;
- ``_dsn``: a PostgreSQL DSN's ``sslmode`` and ``connect_timeout``, and what of it stays secret;
- ``_settings``: the root :class:`Settings` and its sources;
- ``_names``: every setting's name and variable, and the closest to a typo;
- ``_environment``: refusing a ``TASKFORCE_*`` variable that names no setting;
- ``_messages``: the start-up error messages;
- ``_loading``: :func:`load_settings`;
- ``_checks``: :func:`check_directories`, :func:`check_targets_file`,
  :func:`given_in`, :func:`given_as` and :func:`ignored_settings`.
"""

from __future__ import annotations

from taskforce.config._checks import (
    check_directories,
    check_targets_file,
    given_as,
    given_in,
    ignored_settings,
)
from taskforce.config._dsn import dsn_secrets, split_connect_timeout
from taskforce.config._loading import load_settings
from taskforce.config._sections import (
    AgentSettings,
    ApiSettings,
    LLMSettings,
    LoggingSettings,
    MetricsSettings,
    ModelPrice,
    ServerSettings,
    StateSettings,
    ToolSettings,
)
from taskforce.config._settings import Settings

__all__ = [
    "AgentSettings",
    "ApiSettings",
    "LLMSettings",
    "LoggingSettings",
    "MetricsSettings",
    "ModelPrice",
    "ServerSettings",
    "Settings",
    "StateSettings",
    "ToolSettings",
    "check_directories",
    "check_targets_file",
    "dsn_secrets",
    "given_as",
    "given_in",
    "ignored_settings",
    "load_settings",
    "split_connect_timeout",
]
