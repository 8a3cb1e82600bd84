"""The root :class:`Settings` and the sources it reads: arguments, environment, a TOML file.

Precedence is init arguments > environment (``TASKFORCE_*``, nested with ``__``)
> the TOML file named by ``TASKFORCE_CONFIG`` > defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
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
from taskforce.config._validators import read_setting_json, refuse_blank

ENV_PREFIX = "TASKFORCE_"
CONFIG_VARIABLE = "TASKFORCE_CONFIG"


class UniqueKeysEnvSettingsSource(EnvSettingsSource):
    """The environment, where a section's JSON (``TASKFORCE_LLM='{...}'``) may not repeat a key.

    ``json.loads`` keeps the last of a key given twice, so ``{"model": "a", "model":
    "b"}`` would run with ``b`` and nothing would say so. A TOML file cannot repeat a
    key either: its reader refuses it. Nor may the JSON nest deeper than
    ``MAX_SETTING_DEPTH`` levels, the same bound on every Python.
    """

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        """Decode ``value`` as pydantic-settings does, refusing a key given twice.

        Raises:
            ValueError: the JSON does not parse, or an object in it repeats a key
                (a ``json.JSONDecodeError`` naming the key).
            RecursionError: the JSON nests deeper than ``MAX_SETTING_DEPTH`` levels.
        """
        decoded = super().decode_complex_value(field_name, field, value)
        if isinstance(value, str) and decoded is not value:  # read as JSON: read it again
            read_setting_json(value)
        return decoded


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
    # a factory: an unset format is read from stderr when the settings are made
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    server: ServerSettings = ServerSettings()
    state: StateSettings = StateSettings()
    state_dir: Path = Path(".taskforce/state")
    workspace_dir: Path = Path(".taskforce/workspace")
    # the TOML file these were read from (set by load_settings), which a start-up error
    # names for a setting it gave, in a worker too (forked without TASKFORCE_CONFIG)
    _config_file: str | None = PrivateAttr(default=None)

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
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            UniqueKeysEnvSettingsSource(settings_cls),
        ]
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
