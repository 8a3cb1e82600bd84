"""Settings of taskforce, read once at start-up from defaults, a TOML file and the environment.

Precedence is init arguments > environment (``TASKFORCE_*``, nested with ``__``)
> the TOML file named by ``TASKFORCE_CONFIG`` or ``--config`` > defaults.
:func:`load_settings` turns every validation failure into one
:class:`~taskforce.errors.ConfigurationError` naming the setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from taskforce.core.interfaces.log import LOG_CATEGORIES
from taskforce.errors import ConfigurationError

__all__ = [
    "AgentSettings",
    "LLMSettings",
    "LoggingSettings",
    "MetricsSettings",
    "Settings",
    "load_settings",
]

_RESERVED_PREFIXES = ("/api", "/health", "/docs", "/redoc", "/openapi.json")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LLMSettings(_Section):
    """Which LLM provider to use and how to reach it."""

    provider: Literal["scripted", "openai"] = "scripted"
    model: str = Field(default="scripted-1", min_length=1)
    base_url: str | None = None
    api_key: SecretStr | None = None
    scripted_latency_ms: float = Field(default=0.0, ge=0, le=600_000)
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    max_retries: int = Field(default=2, ge=0, le=10)


class AgentSettings(_Section):
    """Limits of the agent loops."""

    max_steps: int = Field(default=20, ge=1, le=1000)
    tool_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    fail_on_tool_error: bool = True


class MetricsSettings(_Section):
    """The Prometheus metrics aspect and its ``/metrics`` endpoint."""

    enabled: bool = True
    path: str = "/metrics"
    auth_token: SecretStr | None = None
    max_label_values: int = Field(default=100, ge=1, le=100_000)

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or value == "/" or value.endswith("/"):
            raise ValueError("must start with '/', name a path and not end with '/'")
        if any(c.isspace() or c in "?#{}" for c in value):
            raise ValueError("must not contain spaces, '?', '#' or braces")
        for prefix in _RESERVED_PREFIXES:
            if value == prefix or value.startswith(prefix + "/"):
                raise ValueError(f"collides with the built-in route {prefix}")
        return value

    @field_validator("auth_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty (unset it to disable auth)")
        return value


class LoggingSettings(_Section):
    """Structured logging: output format, level and which categories to keep."""

    format: Literal["auto", "console", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    categories: Annotated[tuple[str, ...], NoDecode] = LOG_CATEGORIES

    @field_validator("level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("categories", mode="before")
    @classmethod
    def _split_categories(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            unknown = sorted(set(value) - set(LOG_CATEGORIES))
            if unknown:
                raise ValueError(
                    f"unknown categories {unknown}; known: {', '.join(LOG_CATEGORIES)}"
                )
            if not value:
                raise ValueError("must name at least one category")
            return tuple(value)
        return value


class Settings(BaseSettings):
    """All settings of a taskforce process (see CONTRACT.md for the public names)."""

    model_config = SettingsConfigDict(
        env_prefix="TASKFORCE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    llm: LLMSettings = LLMSettings()
    agent: AgentSettings = AgentSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()
    state_dir: Path = Path(".taskforce/state")
    workspace_dir: Path = Path(".taskforce/workspace")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("TASKFORCE_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def _setting_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "settings"


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment, an optional TOML file and overrides.

    Args:
        config_file: a TOML file; wins over ``TASKFORCE_CONFIG``.
        **overrides: values that beat every other source.

    Returns:
        The validated settings.

    Raises:
        ConfigurationError: a value is invalid or the config file is unreadable;
            the message names the setting.
    """
    previous = os.environ.get("TASKFORCE_CONFIG")
    if config_file is not None:
        os.environ["TASKFORCE_CONFIG"] = os.fspath(config_file)
    try:
        path = os.environ.get("TASKFORCE_CONFIG")
        if path and not Path(path).is_file():
            raise ConfigurationError("config", f"config file {path} does not exist")
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(_setting_name(first["loc"]), first["msg"]) from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigurationError("config", str(exc)) from exc
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop("TASKFORCE_CONFIG", None)
            else:
                os.environ["TASKFORCE_CONFIG"] = previous
