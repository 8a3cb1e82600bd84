"""Start-up checks of loaded settings: the directories they name, and the settings that
others leave without effect.

:func:`check_directories` and :func:`check_targets_file` create directories on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from taskforce.config._messages import json_holds
from taskforce.config._settings import CONFIG_VARIABLE, ENV_PREFIX, Settings
from taskforce.errors import ConfigurationError, setting_variable

# Settings that another one makes pointless: (section, names, the condition, why).
_IGNORED_WHEN: tuple[tuple[str, tuple[str, ...], Callable[[Settings], bool], str], ...] = (
    ("metrics", ("port", "host", "path", "auth_token", "targets_file", "max_label_values"),
     lambda s: not s.metrics.enabled, "metrics.enabled is false"),
    # prices feed only the LLM cost counter, which metrics off does not build
    ("llm", ("prices",), lambda s: not s.metrics.enabled, "metrics.enabled is false"),
    ("metrics", ("host",),
     lambda s: s.metrics.enabled and s.metrics.port is None, "metrics.port is not set"),
    ("state", ("dsn", "pool_size", "timeout_seconds", "pool_idle_seconds"),
     lambda s: s.state.backend == "file", "state.backend is 'file'"),
    ("state", ("threads",),
     lambda s: s.state.backend != "file", "state.backend is not 'file'"),
    ("state", ("sweep_interval_seconds",),
     lambda s: s.state.session_ttl_seconds == 0, "state.session_ttl_seconds is 0"),
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


def check_directories(
    settings: Settings, config_file: str | os.PathLike[str] | None = None
) -> None:
    """Create the directories the settings name, or stop start-up naming the one that fails.

    ``state_dir`` (for the file store) and ``workspace_dir`` are made if missing; each
    must then be a directory this process can write in, as must the folder of
    ``metrics.targets_file`` (see :func:`check_targets_file`). When a check fails, the
    directories this call made are removed again (those that existed are kept).

    Args:
        settings: The service's settings.
        config_file: The TOML file they were read from (``--config``); by default
            ``TASKFORCE_CONFIG``'s.

    Raises:
        ConfigurationError: a path exists and is not a directory, or cannot be made
            or written in, or ``metrics.targets_file`` is a directory or a file that is
            not a targets file; the message names the setting, the path and where it
            was given: its variable, or the file (the variable to set, for a default).
    """
    names = ["workspace_dir"] + (["state_dir"] if settings.state.backend == "file" else [])
    directories = [(name, getattr(settings, name)) for name in names]
    in_file = {name for name in names if name in settings.model_fields_set}
    if "targets_file" in settings.metrics.model_fields_set:
        in_file.add("metrics.targets_file")
    where = _Where(config_file, in_file)
    if "state_dir" in names:
        _check_state_outside_workspace(settings.state_dir, settings.workspace_dir, where)
    _prepare(directories, settings.metrics.targets_file, where)


def check_targets_file(path: Path) -> None:
    """Make the folder of ``metrics.targets_file``, or stop start-up naming the setting.

    The file is replaced whole at every change, so its folder must take a new file, and
    an existing file must be one a service wrote (a JSON list) or empty: anything else is
    a mistyped path, kept as it is. A folder this call made is removed again if it fails.

    Args:
        path: The targets file, read from the environment or ``TASKFORCE_CONFIG``'s file.

    Raises:
        ConfigurationError: the folder cannot be made or written in, or ``path`` is a
            directory or a file that is not a targets file; the message names the
            setting, the path and its variable or the file.
    """
    _prepare([], path, _Where(None, {"metrics.targets_file"}))


class _Where:
    """Where a path setting came from, for the message that refuses it."""

    def __init__(self, config_file: str | os.PathLike[str] | None, given: set[str]) -> None:
        config_file = os.environ.get(CONFIG_VARIABLE) if config_file is None else config_file
        self.config_file = os.fspath(config_file) if config_file else None
        self.given = given  # the settings given by some source, not defaulted

    def source(self, name: str, value: object) -> str:
        """``VARIABLE='value'``, the section's JSON variable, or ``in FILE: 'value'``.

        A value nobody gave (a default) names the variable that would set it.
        """
        where, shown = self.given_in(name), repr(str(value))
        if where.startswith("in "):
            return f"{where}: {shown}"
        if where == f"{ENV_PREFIX}{name.rpartition('.')[0]}".upper():
            return f"{where}, {name}={shown}"
        return f"{where}={shown}"

    def given_in(self, name: str) -> str:
        """``VARIABLE``, the section's JSON variable, or ``in FILE``: what gave ``name``.

        A setting nobody gave (a default) names the variable that would set it.
        """
        variable = setting_variable(name)
        if variable in {key.upper() for key in os.environ}:
            return variable
        section, _, key = name.rpartition(".")
        section_variable = f"{ENV_PREFIX}{section}".upper()
        if section and json_holds(os.environ, section_variable, [key]):
            return section_variable
        if self.config_file and name in self.given:
            return f"in {self.config_file}"
        return variable


def given_in(
    settings: Settings, name: str, config_file: str | os.PathLike[str] | None = None
) -> str:
    """Where a setting was given, as a start-up message names it (``metrics.port (...)``).

    Args:
        settings: The loaded settings.
        name: The setting, ``section.key`` (``metrics.port``).
        config_file: The TOML file they were read from (``--config``); by default
            the one :func:`~taskforce.config.load_settings` read them from, else
            ``TASKFORCE_CONFIG``'s.

    Returns:
        Its variable (``TASKFORCE_METRICS__PORT``), its section's JSON variable
        (``TASKFORCE_METRICS``) or ``in FILE``; for a setting nobody gave, the
        variable that would set it.
    """
    return _where(settings, name, config_file).given_in(name)


def given_as(
    settings: Settings, name: str, config_file: str | os.PathLike[str] | None = None
) -> str:
    """Where a setting was given, with its value, as a refusal names them (its ``source``).

    Args:
        settings: The loaded settings.
        name: The setting, ``section.key`` (``metrics.port``).
        config_file: As for :func:`given_in`.

    Returns:
        ``TASKFORCE_METRICS__PORT='9100'``, ``TASKFORCE_METRICS, metrics.port='9100'``
        or ``in FILE: '9100'``; for a setting nobody gave, its variable and value.
    """
    section, _, key = name.rpartition(".")
    value = getattr(getattr(settings, section) if section else settings, key)
    return _where(settings, name, config_file).source(name, value)


def _where(settings: Settings, name: str, config_file: str | os.PathLike[str] | None) -> _Where:
    section, _, key = name.rpartition(".")
    part: BaseModel = getattr(settings, section) if section else settings
    if config_file is None:
        config_file = settings._config_file
    return _Where(config_file, {name} if key in part.model_fields_set else set())


def _check_state_outside_workspace(state_dir: Path, workspace_dir: Path, where: _Where) -> None:
    """Refuse a ``state_dir`` inside ``workspace_dir`` (as the paths resolve).

    Each session's file tools work in a folder of the workspace named after it, so the
    session whose folder holds the state could read and rewrite every session's records.
    """
    try:
        state, workspace = state_dir.resolve(), workspace_dir.resolve()
    except (OSError, RuntimeError, ValueError):  # a loop, a NUL byte: _prepare names it
        return
    if state != workspace and state.is_relative_to(workspace):
        raise ConfigurationError(
            "state_dir",
            f"is inside workspace_dir ({str(workspace_dir)!r}), where a session's file tools "
            "could read and rewrite every session's state; give it a directory beside the "
            "workspace",
            source=where.source("state_dir", state_dir),
        )


def _prepare(directories: list[tuple[str, Path]], targets_file: Path | None, where: _Where) -> None:
    """Make ``directories`` and the folder of ``targets_file``, then check that file."""
    # (setting, the directory to make, the path the setting gave)
    folders = [(name, path, path) for name, path in directories]
    if targets_file is not None:
        # the file is replaced atomically: its folder must take a new file
        folders.append(("metrics.targets_file", targets_file.parent, targets_file))
    made: list[Path] = []
    try:
        for name, path, given in folders:
            what = "it" if path == given else f"its folder {str(path)!r}"
            try:
                # the missing folders, outermost first: removed again if start-up stops
                made.extend(reversed([p for p in (path, *path.parents) if not p.exists()]))
                path.mkdir(parents=True, exist_ok=True)
                if not os.access(path, os.W_OK | os.X_OK):
                    raise PermissionError(13, "not writable")
            except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
                raise ConfigurationError(
                    name,
                    f"cannot use {what} as a directory: {_why_not(path, exc)}",
                    source=where.source(name, given),
                ) from exc
        if targets_file is not None:
            _check_targets_file(targets_file, where)
    except ConfigurationError:
        # nothing starts half-way: no folder made for a start-up that did not happen
        for folder in reversed(made):
            with contextlib.suppress(OSError, ValueError):
                folder.rmdir()
        raise


def _why_not(path: Path, exc: OSError | ValueError) -> str:
    """Why ``path`` cannot be a directory: a file is there, or what the system said."""
    if isinstance(exc, ValueError):
        return str(exc)  # "embedded null byte"
    with contextlib.suppress(OSError):  # a name too long fails these calls too
        if path.exists() and not path.is_dir():
            return "not a directory"
    return exc.strerror or str(exc)


def _is_json_list(text: str) -> bool:
    try:
        return isinstance(json.loads(text), list)
    except ValueError:
        return False


def _unusable(path: Path) -> str | None:
    """Why no targets file can be at ``path``, told before anything opens it, else ``None``."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except ValueError as exc:  # "embedded null byte"
        return f"no file can have this name: {exc}"
    except OSError as exc:  # a name too long for the filesystem
        return f"no file can have this name: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return "is a directory; name a file in it"
    if not stat.S_ISREG(mode):  # reading a FIFO would wait; a device would be replaced
        return "is not a regular file (a FIFO, device or socket); name a file"
    return None


def _check_targets_file(path: Path, where: _Where) -> None:
    """Refuse a targets file path the service would fail to write, or write over another file.

    The file is replaced whole at every change, so an existing file must be one a service
    wrote (a JSON list) or empty: anything else is a mistyped path, kept as it is.
    """
    reason = _unusable(path)
    if reason is None and path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:
            reason = f"cannot read it: {exc}"
        else:
            if text.strip() and not _is_json_list(text):
                reason = "is not a targets file (a JSON list); it would be overwritten"
    if reason is not None:
        setting = "metrics.targets_file"
        raise ConfigurationError(setting, reason, source=where.source(setting, path))
