"""Developer sessions: `nox -s lint typecheck tests` is the gate; `nox -s bench` prints figures;
`nox -s fast` runs the fast loop on Python 3.12 and 3.13."""

from __future__ import annotations

import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

#: The Pythons past 3.11 (the sessions' own) that the trove classifiers of pyproject.toml
#: name, and `nox -s fast` runs the fast loop on.
NEWER_PYTHONS = ["3.12", "3.13"]


def _dev_pin(name: str) -> str:
    """The exact requirement of ``name`` in the dev extra (lint runs without the package)."""
    pyproject = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
    for requirement in pyproject["project"]["optional-dependencies"]["dev"]:
        if requirement.partition("==")[0] == name:
            return str(requirement)
    raise LookupError(f"{name} is not pinned with == in the dev extra")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Run the whole test suite (integration tests need prometheus and promtool on PATH)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session(python=NEWER_PYTHONS)
def fast(session: nox.Session) -> None:
    """The fast loop on each newer Python the package supports (CI runs 3.11 only)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "not integration and not slow", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over the package, tests, benchmarks and examples."""
    session.install(_dev_pin("ruff"))
    paths = ["src", "tests", "benchmarks", "examples", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy: --strict on src/, check_untyped_defs on tests/ (pyproject [tool.mypy])."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Run the benchmarks; each prints its figures as ratios against an in-run baseline."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/overhead.py", *session.posargs)
    session.run("python", "benchmarks/scrape.py")
    session.run("python", "benchmarks/throughput.py")
    session.run("python", "benchmarks/llm_floor.py")
    session.run("python", "benchmarks/hot_paths.py")
    session.run("python", "benchmarks/stuck_tools.py")
    session.run("python", "benchmarks/llm_deadline.py")
    session.run("python", "benchmarks/state_store.py")
    session.run("python", "benchmarks/body_limit.py")
    session.run("python", "benchmarks/shutdown.py")


@nox.session(python="3.11")
def counts(session: nox.Session) -> None:
    """Count what metrics add to a mission: calls, bytecodes; with valgrind, instructions."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/instructions.py", *session.posargs)
