"""docs/ stays true: every setting and every log category is documented, nothing more."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from taskforce.config import Settings
from taskforce.core.interfaces.log import LOG_CATEGORIES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _setting_names(model: type[BaseModel], prefix: str = "") -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _setting_names(annotation, f"{prefix}{name}.")
        else:
            names.add(prefix + name)
    return names


class TestConfigurationDoc:
    def test_every_setting_documented(self) -> None:
        """docs/configuration.md has one table row per setting, with its env var."""
        text = (DOCS / "configuration.md").read_text(encoding="utf-8")
        rows = dict(re.findall(r"^\| `([a-z_.]+)` \| `(TASKFORCE_[A-Z_]+)` \|", text, re.M))
        expected = _setting_names(Settings)
        assert expected == set(rows)
        for name, env in rows.items():
            assert "TASKFORCE_" + name.upper().replace(".", "__") == env


class TestLoggingDoc:
    def test_every_category_documented(self) -> None:
        """docs/logging.md lists exactly the closed set of log categories."""
        text = (DOCS / "logging.md").read_text(encoding="utf-8")
        text = text.split("## Categories", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `([a-z]+)` \|", text, re.M))
        assert set(LOG_CATEGORIES) == documented
