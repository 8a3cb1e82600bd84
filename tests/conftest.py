"""Fixtures shared by the whole suite: clean structlog state, isolated settings."""

from __future__ import annotations

import gc
import itertools
import logging
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from taskforce.config import Settings
from tests.support import source
from tests.support.log_audit import EventAudit
from tests.support.module_marks import deselects_module
from tests.support.postgres import PostgresServer, running_postgres

# A shell starts a background job (`bash .ci/run &`, a CI runner's step) with SIGINT
# ignored, and an ignored signal stays ignored in every child: a `taskforce` process a test
# sends Ctrl-C would then leave it ignored, as `run` keeps a signal ignored from its start,
# and never stop. The tests send Ctrl-C as at a terminal, so the suite takes it back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_AUDIT = EventAudit()

#: A memory file system most Linux machines mount; see :func:`_temp_root_in_memory`.
_SHM = Path("/dev/shm")
#: The room it must have free: the suite's databases, workspaces and bodies fit in it.
_SHM_MIN_FREE = 2 * 1024**3
#: New objects between two young-generation garbage collections while the tests run.
_YOUNG_COLLECTION_THRESHOLD = 10_000


def _temp_root_in_memory(config: pytest.Config) -> None:
    """Put the run's ``tmp_path`` directories on /dev/shm, unless told where they go.

    The file store fsyncs each record, its directory and each rename (about 2,000 fsyncs in
    the fast loop): where /tmp is on a disk they wait for it, several seconds of each run
    on a loaded machine, for a durability no test can observe. pytest takes the root of
    its base directory from ``PYTEST_DEBUG_TEMPROOT`` before ``tempfile``'s; layout and
    retention (``pytest-of-<user>/pytest-<n>``, the last three kept) stay pytest's.
    ``--basetemp``, ``PYTEST_DEBUG_TEMPROOT`` or ``TMPDIR`` set by the caller win, and a
    machine without a writable /dev/shm, or with less than 2 GiB free on it, keeps the
    default.
    """
    if config.option.basetemp or "PYTEST_DEBUG_TEMPROOT" in os.environ:
        return
    if "TMPDIR" in os.environ or not _SHM.is_dir() or not os.access(_SHM, os.W_OK | os.X_OK):
        return
    free = os.statvfs(_SHM)
    if free.f_bavail * free.f_frsize < _SHM_MIN_FREE:  # a container's small default (64 MiB)
        return
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(_SHM)


def pytest_configure(config: pytest.Config) -> None:
    """Check every log event of the session against docs/logging.md (see log_audit)."""
    _AUDIT.install()
    _temp_root_in_memory(config)
    # pytest, its plugins and what they imported live until the end of the run: leave
    # them out of every later garbage collection (see pytest_collection_finish).
    gc.freeze()
    # Collection imports the test modules and what they import, and builds the items:
    # the heap grows from start-up's size to several times it, and each growth by a
    # quarter made the collector walk all of it again (over a second of the fast
    # loop). It is switched off until collection ends, where one collection frees
    # what collection left (see pytest_collection_finish). No test runs meanwhile.
    gc.disable()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Leave the test modules and items out of the garbage collections the tests trigger.

    They live until the end of the run; walked again by every full collection, they
    cost a second of the fast loop. The garbage collection made is freed first, and
    the collector switched back on (pytest calls this even when collection fails).
    What a test makes is collected as before.
    """
    gc.collect()
    gc.freeze()
    # At the default threshold (700 new objects) the fast loop made about 1,400 young
    # and ten full collections besides its tests' own; most of a test's objects are
    # freed by reference counting before 10,000 are new. A test that needs its cycles
    # freed at a given point calls gc.collect() itself, as before.
    gc.set_threshold(_YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    gc.enable()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave out a test module whose every test ``-m`` deselects by its module-level marks.

    ``-m "not integration and not slow"`` would deselect all of, say, tests/api/test_cli.py
    (``pytestmark = pytest.mark.integration``) after importing it and building its items:
    see tests/support/module_marks.py. Without ``-m``, and for a module named on the
    command line, everything is collected as before.
    """
    markexpr = config.option.markexpr
    if not markexpr or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    return True if deselects_module(collection_path, markexpr) else None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Free what the run no longer needs, then leave what is left out of pytest's last collections.

    The syntax trees the source-scanning tests cached go first. pytest then runs five full
    collections at its exit, so that a ``__del__`` that raises in garbage is reported:
    the garbage is collected here instead, until a collection finds none (at most five),
    and what is still alive is frozen, so those five walk only what is made after this
    (this hook runs last, after the session's fixtures are torn down).
    """
    source.clear()
    for _ in range(5):
        if not gc.collect():
            break
    gc.freeze()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop checking log events."""
    _AUDIT.uninstall()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many log events the audit walked."""
    events = sum(_AUDIT.seen.values())
    kinds = len(_AUDIT.seen)
    terminalreporter.write_line(f"log audit: {events} events of {kinds} (event, level) kinds")


@pytest.fixture(autouse=True, name="_reset_structlog")
def fixture_reset_structlog() -> Iterator[None]:
    """Every test starts and ends with default structlog config and empty contextvars.

    The root logger's handlers and level are put back too: a test that configures logging
    onto a stream of its own (captured, then closed) must not leave a later test's stdlib
    log lines writing to that closed stream.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True, name="_log_audit")
def fixture_log_audit() -> Iterator[None]:
    """Every log event a test makes keeps docs/logging.md's promises (levels, no content)."""
    _AUDIT.take_problems()  # what a server thread logged between tests is not this test's
    yield
    assert [] == _AUDIT.take_problems()


@pytest.fixture(autouse=True, name="_clean_env")
def fixture_clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TASKFORCE_* variable of the developer's shell leaks into a test."""
    import os

    for key in list(os.environ):
        if key.startswith("TASKFORCE_"):
            monkeypatch.delenv(key)


_TMP_PATH_NUMBERS = itertools.count()


@pytest.fixture(name="tmp_path")
def fixture_tmp_path(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A new empty directory for the test under the run's base directory, as pytest's own.

    pytest numbers each one past the highest of its name by listing the whole base
    directory, and points a ``<name>current`` link at it: over a thousand tests made that
    quadratic. A counter of the run numbers them here, after the test's name as pytest
    writes it. ``tmp_path_retention_policy`` stays at its default (keep all).
    """
    name = re.sub(r"\W", "_", request.node.name)[:30]
    path = tmp_path_factory.getbasetemp() / f"{name}{next(_TMP_PATH_NUMBERS)}"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture(name="settings")
def fixture_settings(tmp_path: Path) -> Settings:
    """Default settings with state and workspace under the test's tmp dir."""
    return Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "workspace")


@pytest.fixture(scope="session", name="postgres_server")
def fixture_postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole run (skips outside CI when not installed)."""
    with running_postgres() as server:
        yield server


@pytest.fixture(name="postgres_dsn")
def fixture_postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a fresh, empty database on the shared server."""
    return postgres_server.create_database()
