"""Settings of taskforce, read once at start-up from defaults, a TOML file and the environment.

Precedence is init arguments > environment (``TASKFORCE_*``, nested with ``__``)
> the TOML file named by ``TASKFORCE_CONFIG`` or ``--config`` > defaults.
:func:`load_settings` turns every validation failure into one
:class:`~taskforce.errors.ConfigurationError` naming the setting.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import json
import os
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from taskforce.core.interfaces.log import LOG_CATEGORIES, MAX_PATH_CHARS
from taskforce.errors import ConfigurationError, UnknownSettingError

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
    "load_settings",
]

_ENV_PREFIX = "TASKFORCE_"
_CONFIG_VARIABLE = "TASKFORCE_CONFIG"
_RESERVED_PREFIXES = ("/api", "/health", "/docs", "/redoc", "/openapi.json")
#: The values libpq and the asyncpg driver accept for a DSN's ``sslmode`` (in this case only).
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _non_empty_secret(unset_means: str) -> Callable[[SecretStr | None], SecretStr | None]:
    """A validator refusing a blank secret; the message says what unsetting it means."""

    def check(value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(f"must not be empty (unset it {unset_means})")
        return value

    return check


class _Section(BaseModel):
    # allow_inf_nan=False: NaN would otherwise fail with a misleading bound ("<= 600000")
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _lower(value: Any) -> Any:
    """A choice (``JSON``, ``Postgres``) is read in any case, without spaces around it."""
    return value.strip().lower() if isinstance(value, str) else value


def _refuse_blank(message: str) -> Callable[[Any], Any]:
    """A before-validator refusing a blank string with ``message`` (an empty path would
    silently mean the working directory, an empty name nothing)."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError(message)
        return value

    return check


_not_blank = _refuse_blank("must not be blank")


class ModelPrice(_Section):
    """What a model costs, in USD per million tokens: numbers, never strings or booleans."""

    input: float = Field(ge=0, le=1_000_000, allow_inf_nan=False, strict=True)
    output: float = Field(ge=0, le=1_000_000, allow_inf_nan=False, strict=True)


class LLMSettings(_Section):
    """Which LLM provider to use, how to reach it, how hard to retry, and what it costs."""

    provider: Literal["scripted", "openai"] = "scripted"
    model: str = Field(default="scripted-1", min_length=1)
    base_url: str | None = Field(default=None, validate_default=True)
    api_key: SecretStr | None = None
    scripted_latency_ms: float = Field(default=0.0, ge=0, le=600_000)
    scripted_first_chunk_delay_ms: float = Field(default=0.0, ge=0, le=600_000)
    scripted_chunk_delay_ms: float = Field(default=0.0, ge=0, le=600_000)
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_after_max_seconds: float = Field(default=30.0, ge=0, le=3600)
    #: The most bytes one attempt's answer may have (a stream's whole body, SSE included).
    max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1024**4)
    prices: Annotated[dict[str, ModelPrice], NoDecode] = Field(default_factory=dict)

    _choice = field_validator("provider", mode="before")(_lower)

    @field_validator("model", mode="before")
    @classmethod
    def _check_model(cls, value: Any) -> Any:
        # spaces around a name are a slip (a quoted variable), never part of a model's name
        return _not_blank(value).strip() if isinstance(value, str) else value

    _api_key_given = field_validator("api_key")(_non_empty_secret("for none"))

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = value.strip() if value is not None else None
        if not value:
            if info.data.get("provider") == "openai":
                raise ValueError("is required when llm.provider is 'openai'")
            return None
        parts = urlsplit(value)
        try:
            port = parts.port  # out of range or not a number: ValueError
        except ValueError:
            port = -1
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or port in (-1, 0)
            or any(c.isspace() for c in value)
        ):
            raise ValueError("must be an http:// or https:// URL with a host (http://host:8000/v1)")
        return value

    @field_validator("prices", mode="before")
    @classmethod
    def _decode_prices(cls, value: Any) -> Any:
        # Decoded here rather than by pydantic-settings, whose error names no setting.
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    'must be a JSON object like {"gpt-4o": {"input": 2.5, "output": 10}}'
                    f" ({exc.msg})"
                ) from exc
        if isinstance(value, dict) and any(not str(name).strip() for name in value):
            raise ValueError("a model name must not be empty")
        return value


class AgentSettings(_Section):
    """Limits of the agent loops."""

    max_steps: int = Field(default=20, ge=1, le=1000)
    tool_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: The longest mission text a request (HTTP or ``taskforce run``) may carry.
    max_mission_chars: int = Field(default=100_000, ge=1, le=10_000_000)
    fail_on_tool_error: bool = True


class ToolSettings(_Section):
    """How the built-in tools run their blocking work, and how large a file they handle."""

    threads: int = Field(default=8, ge=1, le=256)
    #: The largest file ``file_read`` reads and ``file_write`` leaves (appends included).
    max_file_bytes: int = Field(default=1024 * 1024, ge=1, le=1024**4)


class MetricsSettings(_Section):
    """The Prometheus metrics aspect and its ``/metrics`` endpoint."""

    enabled: bool = True
    path: str = "/metrics"
    auth_token: SecretStr | None = None
    max_label_values: int = Field(default=100, ge=1, le=100_000)
    #: A separate listener for ``path``; the API port then answers 404 for it.
    #: Worker ``i`` of ``taskforce serve --workers N`` listens on ``port + i``.
    port: int | None = Field(default=None, ge=1, le=65535)
    #: Address of that listener; ``None`` = the service's own host (``--host``).
    host: str | None = Field(default=None, min_length=1)
    #: A Prometheus ``file_sd`` file listing every worker's metrics endpoint.
    targets_file: Path | None = None

    _host_named = field_validator("host", mode="before")(_not_blank)

    _targets_file_named = field_validator("targets_file", mode="before")(
        _refuse_blank("must name a file, not be empty (unset it for none)")
    )

    @field_validator("targets_file")
    @classmethod
    def _targets_need_a_port(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # The file lists metrics listeners; without metrics.port there is none to list.
        if value is not None and info.data.get("port") is None:
            raise ValueError("lists the metrics listeners: it needs metrics.port")
        return value

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or value == "/" or value.endswith("/"):
            raise ValueError("must start with '/', name a path and not end with '/'")
        if any(c.isspace() or c in "?#{}%" for c in value):
            # '%': a request's path arrives decoded, so /m%20x could never be asked for
            raise ValueError("must not contain spaces, '?', '#', '%' or braces")
        for prefix in _RESERVED_PREFIXES:
            if value == prefix or value.startswith(prefix + "/"):
                raise ValueError(f"collides with the built-in route {prefix}")
        return value

    _token_given = field_validator("auth_token")(_non_empty_secret("to disable auth"))


class ApiSettings(_Section):
    """Limits and optional protection of the HTTP API."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    auth_token: SecretStr | None = None
    docs_enabled: bool = True

    _token_given = field_validator("auth_token")(_non_empty_secret("to disable auth"))


class ServerSettings(_Section):
    """How ``taskforce serve`` stops."""

    #: After a stop signal, missions still running this long are cancelled.
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, le=3600)


class StateSettings(_Section):
    """Where session state lives (``backend``) and how much of it a session keeps.

    The file backend's directory stays the top-level ``state_dir`` setting.
    """

    backend: Literal["file", "postgres"] = "file"
    dsn: SecretStr | None = Field(default=None, validate_default=True)
    pool_size: int = Field(default=10, ge=1, le=1000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    max_history: int = Field(default=500, ge=1, le=1_000_000)
    max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1024**4)
    threads: int = Field(default=4, ge=1, le=256)

    _choice = field_validator("backend", mode="before")(_lower)

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # The value is never echoed: it holds the database password.
        if value is None:
            if info.data.get("backend") == "postgres":
                raise ValueError("is required when state.backend is 'postgres'")
            return None
        dsn = value.get_secret_value()
        if not dsn.startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgresql:// connection URL")
        modes: list[str] = []
        with contextlib.suppress(ValueError):  # a URL that cannot be split: the driver says so
            modes = parse_qs(urlsplit(dsn).query).get("sslmode", [])
        # the driver reads verify_full as verify-full too: what it takes is not refused here
        if any(mode.replace("_", "-") not in _SSL_MODES for mode in modes):
            # the mode is not repeated: a password with an unencoded '?' could end up in it
            raise ValueError(f"its sslmode must be one of {', '.join(_SSL_MODES)}")
        return value


class LoggingSettings(_Section):
    """Structured logging: output format, level, which categories to keep, how much path."""

    format: Literal["auto", "console", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    categories: Annotated[tuple[str, ...], NoDecode] = LOG_CATEGORIES
    # the request path (query included) an access line keeps; a longer one is cut, marked
    max_path_chars: int = Field(default=MAX_PATH_CHARS, ge=64, le=1024 * 1024)

    _choice = field_validator("format", "level", mode="before")(_lower)

    @field_validator("categories", mode="before")
    @classmethod
    def _split_categories(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            value = [_lower(part) for part in value]  # choices, read in any case like the others
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
        env_prefix=_ENV_PREFIX,
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
        _refuse_blank("must name a directory, not be empty")
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
        config_file = os.environ.get(_CONFIG_VARIABLE)
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


def dsn_secrets(dsn: str) -> list[str]:
    """What of a connection string must never be shown, longest first.

    The DSN whole; its password raw and decoded, from ``user:password@`` or a
    ``password=`` query parameter (as libpq accepts it); and, for a password that
    holds a character a URL reserves (``/``, ``#``, ``?``) without percent-encoding
    it, the password as written and each of its pieces of 4 characters or more,
    since a parser's message may quote a piece of it.

    Args:
        dsn: The connection string.

    Returns:
        The strings to redact.
    """
    values = {dsn}
    passwords: list[str] = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(dsn)
        passwords += [parts.password or ""]
        passwords += parse_qs(parts.query).get("password", [])
    # userinfo as written: everything between the scheme and the last '@' (a host has none)
    rest = dsn.split("://", 1)[-1]
    if "@" in rest:
        userinfo = rest.rsplit("@", 1)[0]
        if ":" in userinfo:
            written = userinfo.split(":", 1)[1]
            passwords.append(written)
            passwords += [piece for piece in re.split(r"[/#?@:]", written) if len(piece) >= 4]
    for password in filter(None, passwords):
        values.update({password, unquote(password)})
    return sorted(values, key=len, reverse=True)


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and SecretStr in typing.get_args(annotation)


def _settings_index() -> dict[str, tuple[str, bool]]:
    """Map every setting's dotted name to ``(environment variable, is_secret)``."""
    index: dict[str, tuple[str, bool]] = {}
    for name, field in Settings.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for key, sub in section.model_fields.items():
                variable = f"{_ENV_PREFIX}{name}__{key}".upper()
                index[f"{name}.{key}"] = (variable, _is_secret(sub.annotation))
        else:
            index[name] = (f"{_ENV_PREFIX}{name}".upper(), _is_secret(field.annotation))
    return index


#: How alike (difflib's ratio, 0 to 1) a name must be to a setting's to be suggested:
#: difflib's own default for a close match.
_SUGGESTION_CUTOFF = 0.6


def _sections() -> dict[str, tuple[str, ...]]:
    """Map every section's name (``metrics``) to the names of its keys."""
    return {
        name: tuple(field.annotation.model_fields)
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }


def _suggestion(word: str, candidates: Collection[str]) -> str | None:
    """Return the candidate closest to ``word``, or None when none is close enough."""
    scored = [(difflib.SequenceMatcher(None, word, name).ratio(), name) for name in candidates]
    score, best = max(scored, key=lambda pair: pair[0], default=(0.0, ""))
    return best if score >= _SUGGESTION_CUTOFF else None


def _section_suggestion(section: str, key: str) -> tuple[str, str | None] | None:
    """Return the ``(section, key)`` closest to ``section.key``, the key None if none is.

    A real section is kept and only its own keys are compared: a key of another
    section is never the fix for an unknown key in this one. An unknown section is
    what is wrong: the closest section, and its key closest to ``key`` if one is close.
    """
    sections = _sections()
    if section in sections:
        best = _suggestion(key, sections[section])
        return None if best is None else (section, best)
    other = _suggestion(section, sections)
    return None if other is None else (other, _suggestion(key, sections[other]))


def _closest(variable: str, candidates: Mapping[str, str]) -> str | None:
    """Return ``"VARIABLE (setting)"`` of the setting close to ``variable``, if one is.

    The ``TASKFORCE_`` prefix every candidate shares is left out of the comparison.
    A variable with a section part (``TASKFORCE_METRIC__PATH``) is matched as
    :func:`_section_suggestion` does; a section alone is ``TASKFORCE_METRICS__* (metrics.*)``.
    """
    word = variable.upper().removeprefix(_ENV_PREFIX).lower()
    section, nested, key = word.partition("__")
    if not nested:
        # a top-level setting, a setting whose `__` was mistyped, or a section's JSON
        names = {name.removeprefix(_ENV_PREFIX).lower(): name for name in candidates}
        sections = {name: f"{_ENV_PREFIX}{name}".upper() for name in _sections()}
        best = _suggestion(word, names.keys() | sections.keys())
        if best is None:
            return None
        if best in sections:
            return f"{sections[best]} ({best})"
        return f"{names[best]} ({candidates[names[best]]})"
    found = _section_suggestion(section, key)
    if found is None:
        return None
    section, best_key = found
    if best_key is None:
        return f"{_ENV_PREFIX}{section.upper()}__* ({section}.*)"
    return f"{_ENV_PREFIX}{section}__{best_key}".upper() + f" ({section}.{best_key})"


# The variables Kubernetes gives a pod for every Service of its namespace (service
# links): a Service named ``taskforce`` (or ``taskforce-x``) yields TASKFORCE_SERVICE_HOST,
# TASKFORCE_SERVICE_PORT[_NAME], TASKFORCE_PORT and TASKFORCE_PORT_<n>_<PROTO>[_FIELD].
_SERVICE_LINK = re.compile(
    # the Service's name, dashes made underscores: never two underscores in a row
    r"TASKFORCE(?:_[A-Z0-9]+)*?_(?:"
    r"(?P<host>SERVICE_HOST)|(?P<port>SERVICE_PORT(?:_[A-Z0-9_]+)?)|(?P<url>PORT)"
    r"|PORT_[0-9]+_(?:TCP|UDP|SCTP)(?:_(?P<field>PROTO|PORT|ADDR))?(?P<bare>))"
)
_SERVICE_URL = re.compile(r"(?:tcp|udp|sctp)://\S+:[0-9]+")


def _is_service_link(variable: str, value: str) -> bool:
    """Tell whether ``variable=value`` is one of Kubernetes' service-link variables.

    Both the name and the shape of the value must match, so a typo such as
    ``TASKFORCE_METRICS_PORT=9100`` is still refused.
    """
    match = _SERVICE_LINK.fullmatch(variable)
    if match is None:
        return False
    if match["host"] or match["field"] == "ADDR":
        with contextlib.suppress(ValueError):
            return bool(ipaddress.ip_address(value))
        return False
    if match["port"] or match["field"] == "PORT":
        return value.isascii() and value.isdigit() and 0 < int(value) < 65536
    if match["field"] == "PROTO":
        return value in ("tcp", "udp", "sctp")
    return _SERVICE_URL.fullmatch(value) is not None  # TASKFORCE_PORT, ..._PORT_80_TCP


def _check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a ``TASKFORCE_*`` variable that names no setting (a typo must not pass silently).

    Kubernetes' service-link variables (see :func:`_is_service_link`) are let through.
    """
    index = _settings_index()
    by_variable = {variable: setting for setting, (variable, _) in index.items()}
    # a whole section as JSON (TASKFORCE_LLM='{...}') is understood by pydantic-settings too
    sections = {f"{_ENV_PREFIX}{name}".upper() for name in _sections()}
    known = set(by_variable) | sections | {_CONFIG_VARIABLE}
    for variable in sorted(environ):
        upper = variable.upper()
        if upper == _CONFIG_VARIABLE and variable != _CONFIG_VARIABLE:
            raise ConfigurationError(
                "config", f"write {_CONFIG_VARIABLE} in capitals: {variable} is not read"
            )
        if (
            upper.startswith(_ENV_PREFIX)
            and upper not in known
            and not _is_service_link(variable, environ[variable])
        ):
            raise UnknownSettingError(variable, _closest(upper, by_variable))


def _source_error(exc: Exception, config_file: str | None) -> ConfigurationError:
    """Name where a value that could not even be parsed came from: a variable or the file."""
    text = str(exc)
    # pydantic-settings' words for a whole section given as JSON (TASKFORCE_LLM='{...')
    section = re.search(
        r'error parsing value for field "(\w+)" from source "EnvSettingsSource"', text
    )
    if section is not None:
        name = section.group(1)
        return ConfigurationError(name, "not a JSON object", source=f"{_ENV_PREFIX}{name}".upper())
    if config_file:
        return ConfigurationError("config", text, source=f"in {config_file}")
    return ConfigurationError("config", text)


def _configuration_error(
    exc: ValidationError, environ: Mapping[str, str], config_file: str | None
) -> ConfigurationError:
    """Turn the first validation error into a message naming setting, source and value."""
    first = exc.errors()[0]
    setting = ".".join(str(part) for part in first["loc"]) or "settings"
    index = _settings_index()
    reason = first["msg"].removeprefix("Value error, ")
    # a key inside a setting's value (llm.prices.gpt-4o.input) comes from that setting's source
    parts = [str(part) for part in first["loc"]]
    known = next(
        (".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in index),
        setting,
    )
    env_names = {name.upper() for name in environ}
    section = f"{_ENV_PREFIX}{parts[0]}".upper()
    # A missing key's input is the table that lacks it: named, not shown.
    is_missing = first["type"] == "missing"
    # a section's JSON variable is named only when it holds the key (or the table that
    # lacks it), else the file is
    in_section = _json_holds(environ, section, parts[1:-1] if is_missing else parts[1:])
    if first["type"] == "extra_forbidden" and known == setting:
        where = section if in_section else f"in {config_file}" if config_file else None
        kind, closest = _unknown_key(parts, first.get("input"), index)
        hint = f"; did you mean {closest}?" if closest else ""
        return ConfigurationError(setting, f"unknown {kind}{hint}", source=where)
    if first["type"] == "model_type" and known not in index:
        reason = "must be a table of settings (a JSON object in a variable, a TOML table)"
    if first["type"] == "extra_forbidden":
        reason = "unknown key"
    if is_missing and parts[:2] == ["llm", "prices"] and len(parts) == 4:
        model, key = parts[2:]
        reason = f"model {model!r} has no {key!r} price (USD per million {key} tokens)"
    variable, is_secret = index.get(known, (f"{_ENV_PREFIX}{setting}".upper(), False))
    # A section given as something else than a table (state = "postgresql://u:pw@h/db")
    # may hold any of its secrets: only the type of what was given is named.
    given = first.get("input")
    kind = type(given).__name__
    shown = (
        _USERINFO.sub("***@", f"{given!r:.80}")  # a password in a URL is not repeated
        if known in index
        else f"<{'an' if kind[0] in 'aeiou' else 'a'} {kind}>"
    )
    value = "" if is_secret or is_missing or given is None else f"={shown}"
    source: str | None
    if variable in env_names and known == setting:
        source = f"{variable}{value}"
    elif variable in env_names:
        source = f"{variable}, {setting}{value}"
    elif in_section:
        source = f"{section}, {setting}{value}"
    elif config_file and given is not None:
        source = f"in {config_file}" + (f": {value[1:]}" if value else "")
    else:
        # nothing was given (a setting another one requires): name the variable to set
        source = variable
    return ConfigurationError(setting, reason, source=source)


_USERINFO = re.compile(r"(?<=//)[^/@\s]*@")


def _unknown_key(parts: list[str], given: Any, index: Collection[str]) -> tuple[str, str | None]:
    """Say what an unknown key of the file (or a section's JSON) is, and what is close.

    Returns ``("section", "metrics")`` for a table under a name no section has
    (``[metric]``), else ``("key", "llm.model")``: for a key in a section, only that
    section's keys are compared; for one at the top, every setting.
    """
    if len(parts) == 2:
        found = _section_suggestion(parts[0], parts[1])
        return "key", None if found is None or found[1] is None else f"{found[0]}.{found[1]}"
    if isinstance(given, dict):
        return "section", _suggestion(parts[0], _sections())
    return "key", _suggestion(parts[0], index)


def _json_holds(environ: Mapping[str, str], variable: str, keys: list[str]) -> bool:
    """Whether the section variable's JSON (``TASKFORCE_LLM='{...}'``) holds ``keys``."""
    text = next((v for k, v in environ.items() if k.upper() == variable), None)
    try:
        found: Any = json.loads(text) if text is not None else None
    except ValueError:
        return False
    for key in keys:
        if not isinstance(found, dict) or key not in found:
            return False
        found = found[key]
    return text is not None


# Settings that another one makes pointless: (section, names, the condition, why).
_IGNORED_WHEN: tuple[tuple[str, tuple[str, ...], Callable[[Settings], bool], str], ...] = (
    ("metrics", ("port", "host", "path", "auth_token", "targets_file", "max_label_values"),
     lambda s: not s.metrics.enabled, "metrics.enabled is false"),
    ("metrics", ("host",),
     lambda s: s.metrics.enabled and s.metrics.port is None, "metrics.port is not set"),
    ("state", ("dsn", "pool_size", "timeout_seconds"),
     lambda s: s.state.backend == "file", "state.backend is 'file'"),
    ("state", ("threads",),
     lambda s: s.state.backend != "file", "state.backend is not 'file'"),
    ("llm", ("base_url", "api_key", "max_response_bytes", "timeout_seconds",
             "retry_after_max_seconds"),
     lambda s: s.llm.provider == "scripted", "llm.provider is 'scripted'"),
    ("llm", ("scripted_latency_ms", "scripted_first_chunk_delay_ms", "scripted_chunk_delay_ms"),
     lambda s: s.llm.provider != "scripted", "llm.provider is not 'scripted'"),
)  # fmt: skip


def ignored_settings(settings: Settings) -> list[tuple[str, str]]:
    """The settings given (not defaulted) that the other settings leave without effect.

    Args:
        settings: The loaded settings.

    Returns:
        ``(setting, why)`` for each, e.g. ``("metrics.port", "metrics.enabled is false")``.
    """
    found = []
    for section, names, applies, why in _IGNORED_WHEN:
        part: BaseModel = getattr(settings, section)
        fields = type(part).model_fields
        if applies(settings):
            found += [
                (f"{section}.{name}", why)
                for name in names
                # given, and not as the default (an explicit null, the default's value)
                if name in part.model_fields_set
                and getattr(part, name) != fields[name].get_default(call_default_factory=True)
            ]
    return found


def check_directories(settings: Settings) -> None:
    """Create the directories the settings name, or stop start-up naming the one that fails.

    ``state_dir`` (for the file store) and ``workspace_dir`` are made if missing; each
    must then be a directory this process can write in.

    Args:
        settings: The service's settings.

    Raises:
        ConfigurationError: a path exists and is not a directory, or cannot be made
            or written in; the message names the setting, its variable and the path.
    """
    names = ["workspace_dir"] + (["state_dir"] if settings.state.backend == "file" else [])
    directories = [(name, getattr(settings, name)) for name in names]
    if settings.metrics.targets_file is not None:
        # the file is replaced atomically: its folder must take a new file
        directories.append(("metrics.targets_file", settings.metrics.targets_file.parent))
    for name, path in directories:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
        except OSError as exc:
            reason = "not a directory" if path.exists() and not path.is_dir() else exc.strerror
            variable = f"{_ENV_PREFIX}{name.replace('.', '__')}".upper()
            raise ConfigurationError(
                name, f"cannot use it as a directory: {reason}", source=f"{variable}={str(path)!r}"
            ) from exc


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
        ConfigurationError: a value is invalid or the config file is unreadable;
            the message names the setting, the variable or file it came from and,
            unless the setting is a secret, the value.
    """
    previous = os.environ.get(_CONFIG_VARIABLE)
    if config_file is not None:
        os.environ[_CONFIG_VARIABLE] = os.fspath(config_file)
    path = os.environ.get(_CONFIG_VARIABLE)
    try:
        _check_environment(os.environ)
        if path is not None and not path.strip():
            where = "--config" if config_file is not None else _CONFIG_VARIABLE
            raise ConfigurationError(
                "config", "names no file (leave it out for none)", source=f"{where}={path!r}"
            )
        if path and not Path(path).exists():
            raise ConfigurationError("config", f"config file {path} does not exist")
        if path and not Path(path).is_file():
            raise ConfigurationError("config", f"config file {path} is not a file")
        return Settings(**overrides)
    except ValidationError as exc:
        raise _configuration_error(exc, os.environ, path) from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML, a section's bad JSON
        raise _source_error(exc, path) from exc
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop(_CONFIG_VARIABLE, None)
            else:
                os.environ[_CONFIG_VARIABLE] = previous
