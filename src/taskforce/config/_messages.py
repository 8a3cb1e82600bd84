"""The start-up error messages: a value that fails to parse or validate becomes one
:class:`~taskforce.errors.ConfigurationError` naming the setting, where it came from and,
unless it is a secret, the value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError

from taskforce.config._names import section_keys, section_suggestion, settings_index, suggestion
from taskforce.config._settings import ENV_PREFIX
from taskforce.core.interfaces.log import redact_secret_parameters
from taskforce.errors import ConfigurationError


def source_error(exc: Exception, config_file: str | None) -> ConfigurationError:
    """Name where a value that could not even be parsed came from: a variable or the file.

    Args:
        exc: What pydantic-settings or the TOML reader raised.
        config_file: The config file read, if any.

    Returns:
        The error to stop start-up with.
    """
    text = str(exc)
    # pydantic-settings' words for a whole section given as JSON (TASKFORCE_LLM='{...')
    section = re.search(
        r'error parsing value for field "(\w+)" from source "\w*EnvSettingsSource"', text
    )
    if section is not None:
        name = section.group(1)
        cause = exc.__cause__
        reason = "not a JSON object"
        if isinstance(cause, json.JSONDecodeError) and cause.msg.startswith("duplicate key"):
            reason = f"{cause.msg} in its JSON (which one would count?)"
        return ConfigurationError(name, reason, source=f"{ENV_PREFIX}{name}".upper())
    if config_file:
        return ConfigurationError("config", text, source=f"in {config_file}")
    return ConfigurationError("config", text)


NESTED_REASON = "nested too deeply to be read"
"""The reason given for a value whose JSON or TOML nests past its parser's depth."""


def _depth(text: str) -> int:
    """The deepest nesting of brackets and braces in ``text``, strings included."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def nesting_error(environ: Mapping[str, str], config_file: str | None) -> ConfigurationError:
    """Name the source whose value nested past a parser's depth (a ``RecursionError``).

    The parser does not say which value it was reading: the source that nests deepest
    is named, a ``TASKFORCE_*`` variable or the config file. Its value is not shown.

    Args:
        environ: The environment the settings were read from.
        config_file: The config file read, if any.

    Returns:
        The error to stop start-up with.
    """
    index = {variable: name for name, (variable, _) in settings_index().items()}
    sources: dict[str, tuple[str, str]] = {}
    for name, text in environ.items():
        variable = name.upper()
        if variable.startswith(ENV_PREFIX):
            setting = index.get(variable, variable.removeprefix(ENV_PREFIX).lower())
            sources[variable] = (setting, text)
    if config_file:
        try:
            with open(config_file, encoding="utf-8", errors="replace") as handle:
                sources[f"in {config_file}"] = ("config", handle.read())
        except OSError:
            pass
    if not sources:
        return ConfigurationError("config", NESTED_REASON)
    where = max(sources, key=lambda source: _depth(sources[source][1]))
    return ConfigurationError(sources[where][0], NESTED_REASON, source=where)


def configuration_error(
    exc: ValidationError, environ: Mapping[str, str], config_file: str | None
) -> ConfigurationError:
    """Turn the first validation error into a message naming setting, source and value.

    Args:
        exc: The validation failure of :class:`~taskforce.config.Settings`.
        environ: The environment the settings were read from.
        config_file: The config file read, if any.

    Returns:
        The error to stop start-up with; a secret's value is never in it.
    """
    first = exc.errors()[0]
    setting = ".".join(str(part) for part in first["loc"]) or "settings"
    index = settings_index()
    reason = first["msg"].removeprefix("Value error, ")
    # a key inside a setting's value (llm.prices.gpt-4o.input) comes from that setting's source
    parts = [str(part) for part in first["loc"]]
    known = next(
        (".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in index),
        setting,
    )
    env_names = {name.upper() for name in environ}
    section = f"{ENV_PREFIX}{parts[0]}".upper()
    # A missing key's input is the table that lacks it: named, not shown.
    is_missing = first["type"] == "missing"
    # a section's JSON variable is named only when it holds the key (or the table that
    # lacks it), else the file is
    in_section = json_holds(environ, section, parts[1:-1] if is_missing else parts[1:])
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
    variable, is_secret = index.get(known, (f"{ENV_PREFIX}{setting}".upper(), False))
    # A section given as something else than a table (state = "postgresql://u:pw@h/db")
    # may hold any of its secrets: only the type of what was given is named.
    given = first.get("input")
    kind = type(given).__name__
    shown = _shown(given) if known in index else f"<{'an' if kind[0] in 'aeiou' else 'a'} {kind}>"
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


# A URL's user and password: everything from '//' to the last '@', as a password may
# hold a space, '/' or '@' not percent-encoded (a path's '@' is hidden too: no harm)
_USERINFO = re.compile(r"(?<=//).*@", re.DOTALL)


def _redacted(text: str) -> str:
    return redact_secret_parameters(_USERINFO.sub("***@", text))


def _shown(given: object) -> str:
    """A refused value as the message shows it: its ``repr``, cut at 80 characters.

    A URL's user and password, and the value of a query parameter that names a secret
    (``?api-key=...``), are not repeated: both are taken out before the cut, which could
    otherwise leave a part of them behind (a value that is no text too: a list of URLs).
    """
    if isinstance(given, str):
        return f"{_redacted(given)!r:.80}"
    return f"{_redacted(repr(given)):.80}"


def _unknown_key(parts: list[str], given: Any, index: Collection[str]) -> tuple[str, str | None]:
    """Say what an unknown key of the file (or a section's JSON) is, and what is close.

    Returns ``("section", "metrics")`` for a table under a name no section has
    (``[metric]``), else ``("key", "llm.model")``: for a key in a section, only that
    section's keys are compared; for one at the top, every setting.
    """
    if len(parts) == 2:
        found = section_suggestion(parts[0], parts[1])
        return "key", None if found is None or found[1] is None else f"{found[0]}.{found[1]}"
    if isinstance(given, dict):
        return "section", suggestion(parts[0], section_keys())
    return "key", suggestion(parts[0], index)


def json_holds(environ: Mapping[str, str], variable: str, keys: list[str]) -> bool:
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
