"""The names of the settings (dotted name, environment variable, section keys) and the
closest of them to a name that is none, for the start-up messages' "did you mean".
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

from taskforce.config._settings import ENV_PREFIX, Settings

#: How alike (difflib's ratio, 0 to 1) a name must be to a setting's to be suggested:
#: difflib's own default for a close match.
_SUGGESTION_CUTOFF = 0.6


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and SecretStr in typing.get_args(annotation)


def settings_index() -> dict[str, tuple[str, bool]]:
    """Map every setting's dotted name to ``(environment variable, is_secret)``."""
    index: dict[str, tuple[str, bool]] = {}
    for name, field in Settings.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for key, sub in section.model_fields.items():
                variable = f"{ENV_PREFIX}{name}__{key}".upper()
                index[f"{name}.{key}"] = (variable, _is_secret(sub.annotation))
        else:
            index[name] = (f"{ENV_PREFIX}{name}".upper(), _is_secret(field.annotation))
    return index


def section_keys() -> dict[str, tuple[str, ...]]:
    """Map every section's name (``metrics``) to the names of its keys."""
    return {
        name: tuple(field.annotation.model_fields)
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }


def suggestion(word: str, candidates: Collection[str]) -> str | None:
    """Return the candidate closest to ``word``, or None when none is close enough."""
    scored = [(difflib.SequenceMatcher(None, word, name).ratio(), name) for name in candidates]
    score, best = max(scored, key=lambda pair: pair[0], default=(0.0, ""))
    return best if score >= _SUGGESTION_CUTOFF else None


def section_suggestion(section: str, key: str) -> tuple[str, str | None] | None:
    """Return the ``(section, key)`` closest to ``section.key``, the key None if none is.

    A real section is kept and only its own keys are compared: a key of another
    section is never the fix for an unknown key in this one. An unknown section is
    what is wrong: the closest section, and its key closest to ``key`` if one is close.
    """
    sections = section_keys()
    if section in sections:
        best = suggestion(key, sections[section])
        return None if best is None else (section, best)
    other = suggestion(section, sections)
    return None if other is None else (other, suggestion(key, sections[other]))


def closest(variable: str, candidates: Mapping[str, str]) -> str | None:
    """Return ``"VARIABLE (setting)"`` of the setting close to ``variable``, if one is.

    The ``TASKFORCE_`` prefix every candidate shares is left out of the comparison.
    A variable with a section part (``TASKFORCE_METRIC__PATH``) is matched as
    :func:`section_suggestion` does; a section alone is ``TASKFORCE_METRICS__* (metrics.*)``.
    """
    word = variable.upper().removeprefix(ENV_PREFIX).lower()
    section, nested, key = word.partition("__")
    if not nested:
        # a top-level setting, a setting whose `__` was mistyped, or a section's JSON
        names = {name.removeprefix(ENV_PREFIX).lower(): name for name in candidates}
        sections = {name: f"{ENV_PREFIX}{name}".upper() for name in section_keys()}
        best = suggestion(word, names.keys() | sections.keys())
        if best is None:
            return None
        if best in sections:
            return f"{sections[best]} ({best})"
        return f"{names[best]} ({candidates[names[best]]})"
    found = section_suggestion(section, key)
    if found is None:
        return None
    section, best_key = found
    if best_key is None:
        return f"{ENV_PREFIX}{section.upper()}__* ({section}.*)"
    return f"{ENV_PREFIX}{section}__{best_key}".upper() + f" ({section}.{best_key})"
