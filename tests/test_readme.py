"""The README's two set-up lines are the ones CI and users run."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.support.processes import PORT_RANGE_VARIABLE, free_ports

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

    def test_port_range_is_the_only_source_of_named_ports(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With TEST_PORT_RANGE set, a named port never comes from outside it."""
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            port = held.getsockname()[1]
            monkeypatch.setenv(PORT_RANGE_VARIABLE, f"{port}-{port}")
            with pytest.raises(RuntimeError, match="no 1 consecutive free ports"):
                free_ports(1)  # the range's one port is taken: no port elsewhere instead

    def test_every_example_is_named(self) -> None:
        """The README points at each file of examples/, so a reader finds them."""
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        examples = sorted(p.name for p in (ROOT / "examples").iterdir() if p.name[0] not in "._")
        assert examples
        assert [] == [
            name
            for name in examples
            if f"examples/{name}" not in readme and f"`{name}`" not in readme
        ]
