"""The root :class:`Settings` and the sources it reads: arguments, environment, a TOML file.

Precedence is init arguments > environment (``TASKFORCE_*``, nested with ``__``)
> the TOML file named by ``TASKFORCE_CONFIG`` > defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from taskforce.config._dsn import dsn_secrets
from taskforce.config._sections import (
    AgentSettings,
    ApiSettings,
    LLMSettings,
    LoggingSettings,
    MetricsSettings,
    ServerSettings,
    StateSettings,
    ToolSettings,
)
from taskforce.config._validators import refuse_blank

ENV_PREFIX = "TASKFORCE_"
CONFIG_VARIABLE = "TASKFORCE_CONFIG"


class Settings(BaseSettings):
    """All settings of a taskforce process (see CONTRACT.md for the public names)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    llm: LLMSettings = LLMSettings()
    agent: AgentSettings = AgentSettings()
    tools: ToolSettings = ToolSettings()
    metrics: MetricsSettings = MetricsSettings()
    api: ApiSettings = ApiSettings()
    logging: LoggingSettings = LoggingSettings()
    server: ServerSettings = ServerSettings()
    state: StateSettings = StateSettings()
    state_dir: Path = Path(".taskforce/state")
    workspace_dir: Path = Path(".taskforce/workspace")

    _directory_named = field_validator("state_dir", "workspace_dir", mode="before")(
        refuse_blank("must name a directory, not be empty")
    )

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
        config_file = os.environ.get(CONFIG_VARIABLE)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    def secret_values(self) -> list[str]:
        """Return the values of every secret setting that is set (for log redaction).

        The state DSN counts whole, and its password alone (from ``user:password@``
        or a ``password=`` query parameter, as libpq accepts it), which a driver's
        message may quote without the rest.
        """
        values = [
            secret.get_secret_value()
            for secret in (
                self.llm.api_key,
                self.metrics.auth_token,
                self.api.auth_token,
                self.state.dsn,
            )
            if secret is not None
        ]
        if self.state.dsn is not None:
            values += dsn_secrets(self.state.dsn.get_secret_value())
        return values
