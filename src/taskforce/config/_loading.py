"""Loading the settings at start-up: the environment checked, the config file found, and
every failure turned into one :class:`~taskforce.errors.ConfigurationError`.

:func:`load_settings` sets ``TASKFORCE_CONFIG`` in the process environment while it
reads ``config_file``, and puts back the value it had.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskforce.config._environment import check_environment
from taskforce.config._messages import configuration_error, nesting_error, source_error
from taskforce.config._settings import CONFIG_VARIABLE, Settings
from taskforce.errors import ConfigurationError


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment, an optional TOML file and overrides.

    Args:
        config_file: a TOML file; wins over ``TASKFORCE_CONFIG``.
        **overrides: values that beat every other source.

    Returns:
        The validated settings.

    Raises:
        UnknownSettingError: a ``TASKFORCE_*`` variable names no setting; the message
            names it and the closest setting.
        ConfigurationError: a value is invalid, nests too deeply to be parsed, or the
            config file is unreadable; the message names the setting, the variable or
            file it came from and, unless the setting is a secret, the value.
    """
    previous = os.environ.get(CONFIG_VARIABLE)
    if config_file is not None:
        os.environ[CONFIG_VARIABLE] = os.fspath(config_file)
    path = os.environ.get(CONFIG_VARIABLE)
    try:
        check_environment(os.environ)
        # where the file was named, so the one line says which setting to correct
        where = f"{'--config' if config_file is not None else CONFIG_VARIABLE}={path!r}"
        if path is not None and not path.strip():
            raise ConfigurationError(
                "config", "names no file (leave it out for none)", source=where
            )
        if path and not Path(path).exists():
            raise ConfigurationError("config", "the file does not exist", source=where)
        if path and not Path(path).is_file():
            raise ConfigurationError("config", "it is not a file", source=where)
        settings = Settings(**overrides)
        settings._config_file = path or None
        return settings
    except ValidationError as exc:
        raise configuration_error(exc, os.environ, path) from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML, a section's bad JSON
        raise source_error(exc, path) from exc
    except RecursionError:  # JSON or TOML nested deeper than its parser goes
        raise nesting_error(os.environ, path) from None
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop(CONFIG_VARIABLE, None)
            else:
                os.environ[CONFIG_VARIABLE] = previous
