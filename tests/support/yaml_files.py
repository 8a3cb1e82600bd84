"""YAML files of the repository (deploy/), parsed once per run with libyaml where installed.

PyYAML's pure-Python loader takes a tenth of a second for the alert rule tests, and
a dozen tests read the same files: each caller gets its own copy of the parsed data.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _parsed(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)


def load(path: Path) -> Any:
    """The document of the YAML file at ``path``, as ``yaml.safe_load`` reads it.

    Args:
        path: The file.

    Returns:
        A copy of the parsed document, the caller's to change.
    """
    return copy.deepcopy(_parsed(path))
