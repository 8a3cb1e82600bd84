"""The README's two set-up lines are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


class TestReadme:
    def test_two_setup_lines(self) -> None:
        """The set-up section has exactly two one-line commands: serve, then test."""
        lines = _setup_lines()
        assert 2 == len(lines)
        assert "taskforce serve" in lines[0]
        assert "pytest" in lines[1]

    def test_ci_runs_the_readme_test_line(self) -> None:
        """.ci/run executes the README's test line verbatim."""
        script = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        assert _setup_lines()[1] in script
