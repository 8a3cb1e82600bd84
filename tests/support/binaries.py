"""Find external binaries (prometheus, promtool, jq): a missing one skips locally, fails in CI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def require_binary(name: str, package: str = "prometheus") -> str:
    """Return the path of ``name``; skip the test outside CI, fail it under ``CI=true``.

    ``package``: the Debian package that installs it, named in the message.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {package})"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``promtool`` with ``args`` (see :func:`require_binary`); never raises on failure."""
    promtool = require_binary("promtool")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def check_expressions(
    name: str, expressions: list[str], directory: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``promtool check rules`` on ``expressions``, each the expression of a recording
    rule ``<name>:expr_<i>`` in one group of a rule file written to ``directory``."""
    rules = [{"record": f"{name}:expr_{i}", "expr": expr} for i, expr in enumerate(expressions)]
    rule_file = directory / f"{name}-rules.yml"
    # JSON is YAML: no YAML writer needed.
    rule_file.write_text(json.dumps({"groups": [{"name": name, "rules": rules}]}))
    return run_promtool("check", "rules", str(rule_file))
