"""Find external binaries (prometheus, promtool); missing ones skip locally and fail under CI."""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str) -> str:
    """Return the path of ``name``; skip the test outside CI, fail it under ``CI=true``."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install prometheus)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path
