"""What a reader copies from docs/ and the README runs: every ``taskforce`` command line
parses, every jq recipe runs over log lines and finds what it looks for, and no sentence
denies an index the PostgreSQL schema makes."""

from __future__ import annotations

import argparse
import codecs
import hashlib
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.support.binaries import require_binary

ROOT = Path(__file__).resolve().parents[1]
_PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

#: Command lines the docs show being refused, with the exit code they say it has.
_REFUSED_COMMANDS = {"taskforce serve --version": 2}
#: A word of a command line that stands for a value the reader gives (`--workers N`).
_PLACEHOLDER = re.compile(r"^(?:[A-Z]+|\.\.\.|<[^>]*>)$")


def _shell_lines(text: str) -> list[str]:
    """The lines of the page's ```sh blocks, a line continued with ``\\`` joined."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def _code_spans(text: str) -> list[str]:
    """The page's inline code spans outside its fenced blocks, ``\\|`` read as ``|`` (a
    table cell's escape), white space folded."""
    prose = " ".join(re.sub(r"```.*?```", "", text, flags=re.S).split())
    return [span.replace("\\|", "|") for span in re.findall(r"`([^`]+)`", prose)]


def _ansi_c(match: re.Match[str]) -> str:
    """A bash ``$'...'`` word as a plain shell word (its escapes decoded)."""
    return shlex.quote(codecs.decode(match.group(1), "unicode_escape"))


def _command_words(line: str) -> list[str] | None:
    """The words of the ``taskforce`` command on ``line`` (environment assignments, a
    ``pip install ... &&`` before it and a comment after it left out), or None when the
    line runs none."""
    line = re.sub(r"\$'((?:[^'\\]|\\.)*)'", _ansi_c, line)
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    if "&&" in words:
        words = words[len(words) - words[::-1].index("&&") :]
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]
    return words if words[:1] == ["taskforce"] else None


def _value_options() -> set[str]:
    """The options of ``taskforce serve`` and ``run`` that take a value (``--port``)."""
    from taskforce.api.cli import _parser

    commands = next(
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    return {
        option
        for command in commands.choices.values()
        for action in command._actions
        if action.nargs != 0
        for option in action.option_strings
    }


def _documented_commands() -> list[tuple[str, str]]:
    """(page, command) for each concrete ``taskforce`` command a page shows: a line of a
    shell block or a code span, not a synopsis (``[--port PORT]``) or one with a
    placeholder (``--workers N``, ``...``) or a pipe."""
    value_options = _value_options()
    found: list[tuple[str, str]] = []
    for page in _PAGES:
        text = page.read_text(encoding="utf-8")
        lines = [(line, True) for line in _shell_lines(text)]
        for line, whole in [*lines, *((span, False) for span in _code_spans(text))]:
            words = _command_words(line)
            if (
                words is None
                or len(words) < 2
                or any(_PLACEHOLDER.match(word) or word in {"|", "&"} for word in words)
                or any(word.startswith("[") for word in words)
                # a span that names `run`, or an option that takes a value, in a sentence
                or (not whole and (words[-1] == "run" or words[-1] in value_options))
                or (not whole and words[1] == "run" and words[-1].startswith("-"))
            ):
                continue
            found.append((page.name, shlex.join(words)))
    return found


class TestCommandLinesTheDocsShow:
    def test_every_command_line_parses(self) -> None:
        """Each concrete ``taskforce serve``/``run`` line of the pages (the README's set-up
        and drills, the guide's workers and Kubernetes lines) is one the command line
        takes, and a line the docs show being refused is refused with its exit code."""
        from taskforce.api.cli import _parser

        commands = _documented_commands()
        assert len(commands) > 10  # the scan finds the lines, so this test can fail
        wrong = []
        for page, command in commands:
            expected = _REFUSED_COMMANDS.get(command, 0)
            try:
                _parser().parse_args(shlex.split(command)[1:])
                status = 0
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            if status != expected:
                wrong.append((page, command, status))
        assert [] == wrong
        assert set(_REFUSED_COMMANDS) <= {command for _, command in commands}


#: What a reader sets before the recipe that hashes a client's error text.
_ERROR = "tool 'calculator' failed: sqrt() cannot be computed: math domain error"
#: The session id the guide's first recipe looks for.
_SESSION = "3f2a9c0e1b7d4e58a61c0d9b2e4f7a13"


def _log_lines() -> list[dict[str, object]]:
    """Log lines as ``taskforce serve`` writes them: one of each kind a recipe of the docs
    looks for (a failed mission and its session, a failed auth key, a refused path, a
    metrics fault, a state store failure, a mission stopped at its deadline)."""
    mission = {"session_id": _SESSION, "mission_id": "9102f75cbc4c45dc", "agent_type": "lean"}
    digest = hashlib.sha256(_ERROR.encode()).hexdigest()[:16]
    failed = {"error_type": "MathDomainError", "error_chars": len(_ERROR), "error_sha256": digest}
    at = {"timestamp": "2026-11-27T19:52:45.415505Z"}
    return [
        {"event": "mission.started", "category": "mission", "level": "info", **mission, **at},
        {
            "event": "mission.failed",
            "category": "mission",
            "level": "error",
            "duration_seconds": 0.01,
            "steps": 1,
            "tool_calls": 1,
            **failed,
            **mission,
            **at,
        },
        {"event": "mission.duration.measured", "category": "performance", "level": "info"},
        {"event": "llm.call.failed", "category": "llm", "level": "warning", "error_type": "auth"},
        {"event": "tool.call.failed", "category": "tool", "level": "warning", "tool": "x"},
        {"event": "tool.path.refused", "category": "security", "level": "warning"},
        {"event": "metrics.fault", "category": "metrics", "level": "warning", "stage": "log"},
        {"event": "state.save.failed", "category": "state", "level": "error"},
        {
            "event": "agent.deadline.reached",
            "category": "agent",
            "level": "warning",
            "mission_timeout_seconds": 300.0,
            **mission,
        },
    ]


def _jq_recipes() -> list[tuple[str, str]]:
    """(page, command) for each jq recipe of the pages: a shell block's ``jq`` line, or a
    code span that starts with ``jq`` (a table cell's ``\\|`` read as ``|``)."""
    found: list[tuple[str, str]] = []
    for page in _PAGES:
        text = page.read_text(encoding="utf-8")
        lines = [line.strip() for line in _shell_lines(text) if line.strip().startswith("jq ")]
        spans = [span for span in _code_spans(text) if span.startswith("jq ")]
        found += [(page.name, command) for command in [*lines, *spans]]
    return found


class TestLogRecipesTheDocsShow:
    @pytest.mark.integration
    def test_every_jq_recipe_runs_and_finds_its_lines(self, tmp_path: Path) -> None:
        """Each jq recipe, run by the shell as written (on ``taskforce.log``, or on its
        standard input where it names no file), exits 0 and prints something for log lines
        of the kind it looks for; one that looks for a placeholder (``"..."``) only runs."""
        jq = require_binary("jq", package="jq")
        recipes = _jq_recipes()
        assert len(recipes) > 10  # the scan finds the recipes, so this test can fail
        log = tmp_path / "taskforce.log"
        log.write_text("".join(json.dumps(line) + "\n" for line in _log_lines()), "utf-8")
        wrong = []
        for page, command in recipes:
            with log.open("rb") as stdin:
                ran = subprocess.run(
                    ["bash", "-c", command],
                    stdin=stdin,
                    cwd=tmp_path,
                    env={"PATH": str(Path(jq).parent) + ":/usr/bin:/bin", "ERROR": _ERROR},
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
            if ran.returncode != 0 or not (ran.stdout.strip() or '"..."' in command):
                wrong.append((page, command, ran.returncode, ran.stderr.strip()[:200]))
        assert [] == wrong


class TestSchemaDoc:
    def test_no_sentence_denies_an_index_the_schema_makes(self) -> None:
        """The pages name each index the PostgreSQL store creates, and none says a column
        it indexes has no index (the sweep's sizing once did, after the index came)."""
        from taskforce.infrastructure.state._postgres_schema import CREATE_SCHEMA

        indexes = re.findall(
            r"CREATE INDEX IF NOT EXISTS (\w+) ON \w+ \((\w+)\)", CREATE_SCHEMA, re.S
        )
        assert indexes  # the scan finds the indexes, so this test can fail
        text = " ".join(" ".join(page.read_text(encoding="utf-8").split()) for page in _PAGES)
        assert [] == [name for name, _ in indexes if f"`{name}`" not in text]
        assert [] == [
            column
            for _, column in indexes
            if re.search(rf"\bno index (?:on|of) `?{column}\b", text, re.I)
        ]
