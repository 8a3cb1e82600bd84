"""Refusing a ``TASKFORCE_*`` environment variable that names no setting, at start-up.

A typo must not pass silently; Kubernetes' service-link variables, which share
the prefix when a Service is named ``taskforce``, are let through.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Mapping

from taskforce.config._names import closest, section_keys, settings_index
from taskforce.config._settings import CONFIG_VARIABLE, ENV_PREFIX
from taskforce.config._validators import read_setting_json
from taskforce.errors import ConfigurationError, UnknownSettingError

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


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a ``TASKFORCE_*`` variable that names no setting (a typo must not pass silently).

    Kubernetes' service-link variables (see :func:`_is_service_link`) are let through.

    Args:
        environ: The environment to check.

    Raises:
        UnknownSettingError: a variable names no setting; the message names the
            closest one, if one is close.
        ConfigurationError: ``TASKFORCE_CONFIG`` is written in another case.
    """
    index = settings_index()
    by_variable = {variable: setting for setting, (variable, _) in index.items()}
    # a whole section as JSON (TASKFORCE_LLM='{...}') is understood by pydantic-settings too
    sections = {f"{ENV_PREFIX}{name}".upper() for name in section_keys()}
    known = set(by_variable) | sections | {CONFIG_VARIABLE}
    for variable in sorted(environ):
        upper = variable.upper()
        if upper == CONFIG_VARIABLE and variable != CONFIG_VARIABLE:
            raise ConfigurationError(
                "config", f"write {CONFIG_VARIABLE} in capitals: {variable} is not read"
            )
        if (
            upper.startswith(ENV_PREFIX)
            and upper not in known
            and not _is_service_link(variable, environ[variable])
        ):
            raise UnknownSettingError(variable, closest(upper, by_variable))
    _refuse_case_twins(environ, by_variable, sections)
    _refuse_twice_given(environ, sections)


def _refuse_case_twins(
    environ: Mapping[str, str], by_variable: Mapping[str, str], sections: set[str]
) -> None:
    """Refuse two variables that name one setting in different cases.

    Variables are read in any case, so ``TASKFORCE_LLM__MODEL=a`` with
    ``taskforce_llm__model=b`` both set ``llm.model``, and one would win without a word.

    Raises:
        ConfigurationError: two variables differ only in case; the message names both.
    """
    by_upper: dict[str, list[str]] = {}
    for variable in environ:
        if variable.upper() in by_variable or variable.upper() in sections:
            by_upper.setdefault(variable.upper(), []).append(variable)
    for upper, variables in sorted(by_upper.items()):
        if len(variables) > 1:
            first, second = sorted(variables)[:2]
            raise ConfigurationError(
                by_variable.get(upper, upper.removeprefix(ENV_PREFIX).lower()),
                f"given twice, as {first} and as {second} (names are read in any case): keep one",
                source=first,
            )


def _refuse_twice_given(environ: Mapping[str, str], sections: set[str]) -> None:
    """Refuse a setting given both in its section's JSON and in a variable of its own.

    ``TASKFORCE_LLM='{"model": "a"}'`` with ``TASKFORCE_LLM__MODEL=b``: the variable of
    its own would win without a word, and which one the operator meant cannot be told.

    Raises:
        ConfigurationError: a key of a section's JSON object has a variable of its own
            too; the message names both.
    """
    upper = {variable.upper(): variable for variable in environ}
    for section in sorted(sections & set(upper)):
        try:
            given = read_setting_json(environ[upper[section]])
        except ValueError:
            continue  # not JSON: the section's own validation says so, naming it
        if not isinstance(given, dict):
            continue
        for key in given:
            own = f"{section}__{key}".upper() if isinstance(key, str) else None
            if own in upper:
                setting = f"{section.removeprefix(ENV_PREFIX).lower()}.{key}"
                raise ConfigurationError(
                    setting,
                    f"given twice, in {upper[section]}'s JSON and as {upper[own]}: keep one",
                    source=upper[own],
                )
