"""The sections of the settings (``llm``, ``metrics``, ...): their fields, bounds, defaults.

Each section is a frozen model that refuses unknown keys. Checks of one value come
from :mod:`taskforce.config._validators` and :mod:`taskforce.config._dsn`; a check
that reads another field stays with its section.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import NoneType
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import NoDecode

from taskforce.config._dsn import check_dsn
from taskforce.config._validators import (
    check_http_url,
    check_metrics_path,
    check_utf8_secret,
    decode_prices,
    has_credentials,
    lower,
    non_empty_secret,
    not_blank,
    refuse_blank,
    resolve_auto_format,
    split_categories,
)
from taskforce.core.interfaces.jsonable import MAX_RESULT_DEPTH, MAX_WRITTEN_DEPTH
from taskforce.core.interfaces.log import LOG_CATEGORIES, MAX_PATH_CHARS


class _Section(BaseModel):
    # allow_inf_nan=False: NaN would otherwise fail with a misleading bound ("<= 600000")
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _number_not_boolean(cls, value: Any, info: ValidationInfo) -> Any:
        # A TOML or JSON true or false would read as 1 or 0 (max_retries = false): a slip,
        # never a count or a duration.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _is_number(field.annotation):
            raise ValueError("must be a number, not true or false")
        return value


def _is_number(annotation: Any) -> bool:
    """Whether a field of ``annotation`` holds a number (``int``, ``float``, or either or None)."""
    return annotation in (int, float) or set(get_args(annotation)) in (
        {int, NoneType},
        {float, NoneType},
    )


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

    _choice = field_validator("provider", mode="before")(lower)

    @field_validator("model", mode="before")
    @classmethod
    def _check_model(cls, value: Any) -> Any:
        # spaces around a name are a slip (a quoted variable), never part of a model's name
        return not_blank(value).strip() if isinstance(value, str) else value

    _api_key_given = field_validator("api_key")(non_empty_secret("for none", ascii_only=True))

    @field_validator("api_key")
    @classmethod
    def _check_one_credential(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        # The HTTP client sends a URL's user and password as Basic auth in place of the
        # key's Bearer header: the key would never be sent, and every call fail as auth.
        base_url = info.data.get("base_url")
        if value is not None and base_url and has_credentials(base_url):
            raise ValueError(
                "cannot be used with a user and password in llm.base_url: the HTTP client "
                "would send those (Basic auth) instead of the key; give only one of them"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = value.strip() if value is not None else None
        if not value:
            if info.data.get("provider") == "openai":
                raise ValueError("is required when llm.provider is 'openai'")
            return None
        return check_http_url(value)

    _prices_decoded = field_validator("prices", mode="before")(decode_prices)


class AgentSettings(_Section):
    """Limits of the agent loops."""

    max_steps: int = Field(default=20, ge=1, le=1000)
    #: The most LLM turns of one step of a legacy plan (the lean flow has no plan).
    max_turns_per_step: int = Field(default=8, ge=1, le=1000)
    #: The most tool calls one LLM turn of the lean flow may ask for.
    max_tool_calls_per_turn: int = Field(default=32, ge=1, le=1000)
    tool_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: The longest one mission's agent run (its LLM and tool calls) may take, from when it
    #: holds its session; past it the mission fails as ``mission_timeout``. 0: no deadline.
    mission_timeout_seconds: float = Field(default=0.0, ge=0, le=86_400)
    #: The longest mission text a request (HTTP or ``taskforce run``) may carry.
    max_mission_chars: int = Field(default=100_000, ge=1, le=10_000_000)
    #: The deepest nesting of a tool's result and arguments and of a legacy JSON reply;
    #: at most what the JSON writers keep whole.
    max_result_depth: int = Field(default=MAX_RESULT_DEPTH, ge=1, le=MAX_WRITTEN_DEPTH)
    fail_on_tool_error: bool = True
    #: The most progress events a streamed mission may have waiting for its reader
    #: (``POST /api/v1/execute/stream``, ``taskforce run --stream``); the mission then
    #: waits for the reader to take one.
    max_queued_events: int = Field(default=64, ge=1, le=1_000_000)


class ToolSettings(_Section):
    """How the built-in tools run their blocking work, and how much they read, write or take."""

    threads: int = Field(default=8, ge=1, le=256)
    #: The largest file ``file_read`` reads and ``file_write`` leaves (appends included).
    max_file_bytes: int = Field(default=1024 * 1024, ge=1, le=1024**4)
    #: The most entries one ``list_dir`` result holds; a longer listing is cut, and says so.
    max_dir_entries: int = Field(default=1000, ge=1, le=1_000_000)
    #: The longest expression ``calculator`` evaluates (it parses on the event loop).
    max_expression_chars: int = Field(default=1000, ge=1, le=100_000)
    #: The longest wait ``sleep`` takes; ``agent.tool_timeout_seconds`` still cuts a call.
    max_sleep_seconds: float = Field(default=300.0, gt=0, le=3600)
    #: The most bytes the workspace's files (every session's folder) may hold together.
    max_workspace_bytes: int = Field(default=1024**3, ge=1, le=1024**5)
    #: The most files, folders and other entries the workspace may hold.
    max_workspace_entries: int = Field(default=100_000, ge=1, le=100_000_000)


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

    _host_named = field_validator("host", mode="before")(not_blank)

    _targets_file_named = field_validator("targets_file", mode="before")(
        refuse_blank("must name a file, not be empty (unset it for none)")
    )

    @field_validator("targets_file")
    @classmethod
    def _targets_need_a_port(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # The file lists metrics listeners; without metrics.port there is none to list.
        if value is not None and info.data.get("port") is None:
            raise ValueError("lists the metrics listeners: it needs metrics.port")
        return value

    _path_servable = field_validator("path")(check_metrics_path)

    _token_given = field_validator("auth_token")(non_empty_secret("to disable auth"))


class ApiSettings(_Section):
    """Limits and optional protection of the HTTP API."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    #: The longest request head (request line and header fields); a longer one gets a 431.
    #: The default is 4 times h11's own limit, which long cookies or tokens can reach;
    #: nginx allows 32 KiB and Go 1 MiB.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: Longest a client may take to send one whole request, headers and body.
    read_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: Longest a client may leave an answer unread (the socket's send buffer full).
    write_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: A stream idle this long gets an SSE comment, so proxies do not cut it; 0: none.
    #: Under the 60 s idle timeout of nginx and of AWS load balancers, with room to spare.
    stream_keepalive_seconds: float = Field(default=15.0, ge=0, le=3600)
    auth_token: SecretStr | None = None
    docs_enabled: bool = True
    #: Missions this process runs at once; a request for one more gets a 503.
    max_missions_in_flight: int = Field(default=64, ge=1, le=10_000)
    #: Session reads (GET or HEAD of a session) this process serves at once; one more gets
    #: a 503. Each holds its session, loaded and encoded, until its answer is sent: the
    #: default leaves a 512 MiB process room for them beside a full load of missions on
    #: sessions at the default state.max_bytes.
    max_session_reads_in_flight: int = Field(default=16, ge=1, le=10_000)
    #: Connections one listener of this process holds open at once; one more gets a 503
    #: and is closed. None: half the process's open-file limit (``ulimit -n``) at start,
    #: so that a flood of idle connections leaves file descriptors for the state store and
    #: the tools (512 under the usual limit of 1024).
    max_connections: int | None = Field(default=None, ge=1, le=1_000_000)

    _token_given = field_validator("auth_token")(non_empty_secret("to disable auth"))


class ServerSettings(_Section):
    """How ``taskforce serve`` stops, and how its supervisor restarts workers that die."""

    #: After a stop signal, missions still running this long are cancelled.
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    #: Replacements of one worker in a row that die before they serve; then the service
    #: stops (a crash loop), as restarting them would loop for good.
    max_failed_restarts: int = Field(default=5, ge=1, le=1000)
    #: The longest pause before a worker that died soon after its start is restarted.
    max_restart_pause_seconds: float = Field(default=10.0, gt=0, le=3600)


#: The most ``state.max_bytes`` may be with PostgreSQL: half its 1 GB limit on one value,
#: leaving room for the newest record, which is kept whatever its size.
POSTGRES_MAX_BYTES = 512 * 1024 * 1024

#: The shortest ``state.session_ttl_seconds`` other than 0 (no expiry).
MIN_SESSION_TTL_SECONDS = 60


class StateSettings(_Section):
    """Where session state lives (``backend``), how much of it a session keeps, and how long.

    The file backend's directory stays the top-level ``state_dir`` setting.
    """

    backend: Literal["file", "postgres"] = "file"
    dsn: SecretStr | None = Field(default=None, validate_default=True)
    pool_size: int = Field(default=10, ge=1, le=1000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    #: Longest a PostgreSQL connection stays pooled unused: a load balancer or NAT
    #: forgets an idle flow without telling either side, and the next call on it hangs.
    pool_idle_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: Longest ``/health`` waits for its check of the store, then answers without it.
    health_timeout_seconds: float = Field(default=1.0, gt=0, le=600)
    max_history: int = Field(default=500, ge=1, le=1_000_000)
    max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1024**4)
    threads: int = Field(default=4, ge=1, le=256)
    #: A session not written for this long is gone: reads find none, and the sweep
    #: deletes it. 0 keeps every session for good (as before the setting existed); else
    #: at least a minute (see _a_minute_or_more), at most ten years of 365 days.
    session_ttl_seconds: int = Field(default=0, ge=0, le=10 * 365 * 86_400)
    #: How often each process sweeps expired sessions away (with a TTL set).
    sweep_interval_seconds: float = Field(default=300.0, gt=0, le=86_400)

    _choice = field_validator("backend", mode="before")(lower)

    @field_validator("backend")
    @classmethod
    def _driver_installed(cls, value: str) -> str:
        # checked with the settings, so the message names where the backend was chosen
        if value == "postgres" and importlib.util.find_spec("asyncpg") is None:
            raise ValueError("needs the driver: pip install 'pytaskforce[postgres]'")
        return value

    @field_validator("session_ttl_seconds")
    @classmethod
    def _a_minute_or_more(cls, value: int) -> int:
        # A session must outlive the call that writes it: one written by a mission that
        # ran a few seconds would otherwise be gone before its client could read it.
        if 0 < value < MIN_SESSION_TTL_SECONDS:
            raise ValueError(
                f"is 0 (sessions kept for good) or at least {MIN_SESSION_TTL_SECONDS} seconds"
            )
        return value

    @field_validator("max_bytes")
    @classmethod
    def _fits_one_value(cls, value: int, info: ValidationInfo) -> int:
        # PostgreSQL hands a session's records back as one array, and one value it
        # builds is at most 1 GB: a larger session could be saved but never loaded.
        if info.data.get("backend") == "postgres" and value > POSTGRES_MAX_BYTES:
            raise ValueError(
                f"is at most {POSTGRES_MAX_BYTES} (512 MiB) when state.backend is 'postgres' "
                "(PostgreSQL returns a session's records as one value of at most 1 GB)"
            )
        return value

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # The value is never echoed: it holds the database password.
        if value is None:
            if info.data.get("backend") == "postgres":
                raise ValueError("is required when state.backend is 'postgres'")
            return None
        check_dsn(check_utf8_secret(value.get_secret_value()))
        return value


class LoggingSettings(_Section):
    """Structured logging: output format, level, which categories to keep, how much path."""

    # "auto" (also the default) reads as the format stderr gets: console on a TTY, else json
    format: Literal["auto", "console", "json"] = Field(default="auto", validate_default=True)
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    categories: Annotated[tuple[str, ...], NoDecode] = LOG_CATEGORIES
    # the request path (query included) an access line keeps; a longer one is cut, marked
    max_path_chars: int = Field(default=MAX_PATH_CHARS, ge=64, le=1024 * 1024)

    _choice = field_validator("format", "level", mode="before")(lower)
    _format_auto = field_validator("format")(resolve_auto_format)

    _categories_split = field_validator("categories", mode="before")(split_categories)
