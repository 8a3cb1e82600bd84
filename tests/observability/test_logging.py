"""Log set-up: JSON lines with event/category/level/timestamp, category filter, secret redaction."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from io import BufferedReader
from pathlib import Path

import pytest
import structlog

from taskforce.observability._faults import count_log_faults_in
from taskforce.observability.logs._logging import REDACTED, configure_logging, resolve_format
from taskforce.observability.metrics import MetricSet
from tests.observability.metric_samples import value


@pytest.fixture(name="_restore_stdlib_logging")
def fixture_restore_stdlib_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _head(line: dict[str, object]) -> tuple[object, ...]:
    """A line's event, category, level and error type."""
    return line["event"], line["category"], line["level"], line["error_type"]


@pytest.fixture(name="_restore_uvicorn_loggers")
def fixture_restore_uvicorn_loggers() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    yield
    for lg, (handlers, propagate, level) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.propagate = handlers, propagate
        lg.setLevel(level)


@pytest.fixture(name="_restore_excepthooks")
def fixture_restore_excepthooks() -> Iterator[None]:
    hooks = sys.excepthook, threading.excepthook, sys.unraisablehook
    yield
    sys.excepthook, threading.excepthook, sys.unraisablehook = hooks


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line]


@pytest.mark.usefixtures("_restore_stdlib_logging")
class TestJsonLogs:
    def test_required_fields(self) -> None:
        """Each event is one JSON object with event, category, level and timestamp."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf)
        structlog.get_logger("t").info("mission.completed", category="mission", steps=3)
        (line,) = _lines(buf)
        assert "mission.completed" == line["event"]
        assert "mission" == line["category"]
        assert "info" == line["level"]
        assert str(line["timestamp"]).endswith("Z")
        assert 3 == line["steps"]

    def test_one_write_per_line(self) -> None:
        """Each event, structlog's or the stdlib's, reaches the stream in one write() call.

        Workers of one service share stderr: a line written in two calls (the JSON, then
        the newline) can be split by another process's line.
        """

        class Writes(io.StringIO):
            def __init__(self) -> None:
                super().__init__()
                self.calls: list[str] = []

            def write(self, text: str) -> int:
                self.calls.append(text)
                return super().write(text)

        buf = Writes()
        configure_logging(fmt="json", stream=buf)
        structlog.get_logger("t").info("mission.completed", category="mission")
        logging.getLogger("uvicorn.error").warning("stdlib line")
        assert 2 == len(buf.calls)
        for call in buf.calls:
            assert call.endswith("\n") and 1 == call.count("\n")
            json.loads(call)

    def test_context_fields_merged(self) -> None:
        """Fields bound in structlog contextvars (session, mission) appear in every event."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf)
        with structlog.contextvars.bound_contextvars(session_id="s-1", mission_id="m-1"):
            structlog.get_logger("t").info("tool.call.completed", category="tool")
        (line,) = _lines(buf)
        assert ("s-1", "m-1") == (line["session_id"], line["mission_id"])

    def test_category_inferred_from_event_name(self) -> None:
        """An event without a valid category gets one from its dotted prefix."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf)
        log = structlog.get_logger("t")
        log.info("llm.request.failed")
        log.info("something.else", category="bogus")
        first, second = _lines(buf)
        assert "llm" == first["category"]
        assert "lifecycle" == second["category"]
        assert "bogus" == second["category_unknown"]

    def test_category_filter(self) -> None:
        """Only the configured categories are written."""
        buf = io.StringIO()
        configure_logging(fmt="json", categories=("security",), stream=buf)
        log = structlog.get_logger("t")
        log.info("mission.completed", category="mission")
        log.warning("tool.path.refused", category="security")
        assert ["tool.path.refused"] == [line["event"] for line in _lines(buf)]

    def test_level_filter(self) -> None:
        """Events below the configured level are dropped."""
        buf = io.StringIO()
        configure_logging(fmt="json", level="warning", stream=buf)
        log = structlog.get_logger("t")
        log.info("mission.completed")
        log.error("mission.failed")
        assert ["mission.failed"] == [line["event"] for line in _lines(buf)]

    def test_secrets_redacted(self) -> None:
        """Secret fields and known secret values never reach a log line."""
        buf = io.StringIO()
        configure_logging(fmt="json", secrets=["sk-live-123"], stream=buf)
        # lifecycle: free text is allowed there (tests/support/log_audit.py), secrets never
        structlog.get_logger("t").warning(
            "server.config.checked",
            category="lifecycle",
            authorization="Bearer abc",
            detail="client sent sk-live-123",
            nested={"api_key": "k", "ok": "fine"},
        )
        text = buf.getvalue()
        assert "sk-live-123" not in text
        assert "abc" not in text
        (line,) = _lines(buf)
        assert REDACTED == line["authorization"]
        assert {"api_key": REDACTED, "ok": "fine"} == line["nested"]

    def test_a_field_named_as_a_secret_is_redacted_however_spelled(self) -> None:
        """A header's or a token's name in any spelling (a tool of one's own logging what
        it sent) hides its value, at any depth; a name that only holds such a word does not."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf)
        structlog.get_logger("t").warning(
            "server.config.checked",
            category="lifecycle",
            access_token="at-LEAKCHECK-1",
            headers={"X-Api-Key": "xk-LEAKCHECK-2", "api-key": "ak-LEAKCHECK-3", "Accept": "a/b"},
            clientSecret="cs-LEAKCHECK-4",
            token_type="bearer",
            max_tokens=5,
        )
        (line,) = _lines(buf)
        assert "LEAKCHECK" not in buf.getvalue()
        assert (REDACTED, REDACTED) == (line["access_token"], line["clientSecret"])
        assert {"X-Api-Key": REDACTED, "api-key": REDACTED, "Accept": "a/b"} == line["headers"]
        assert ("bearer", 5) == (line["token_type"], line["max_tokens"])

    def test_a_secret_encoded_the_clients_way_is_redacted(self) -> None:
        """An access line's path holding the token in lower-case or needless escapes."""
        buf = io.StringIO()
        configure_logging(fmt="json", secrets=["tok/LONG+secret"], stream=buf)
        for path in ("/x?t=tok%2fLONG%2bsecret", "/x?t=%74ok%2FLONG%2Bsecret"):
            structlog.get_logger("t").warning(
                "server.config.checked", category="lifecycle", path=path
            )
        assert [f"/x?t={REDACTED}"] * 2 == [line["path"] for line in _lines(buf)]

    def test_a_short_secret_leaves_the_names_alone(self) -> None:
        """A one-letter token is redacted where it stands alone, not inside every word."""
        buf = io.StringIO()
        configure_logging(fmt="json", secrets=["e"], stream=buf)
        structlog.get_logger("t").warning(
            "server.config.checked", category="lifecycle", agent_type="lean", detail="token=e sent"
        )
        (line,) = _lines(buf)
        assert ("server.config.checked", "lifecycle") == (line["event"], line["category"])
        assert ("lean", f"token={REDACTED} sent") == (line["agent_type"], line["detail"])

    def test_a_traceback_is_redacted_too(self) -> None:
        """An exception's message in a formatted traceback loses its secrets, for structlog
        and for stdlib records (uvicorn's "Exception in ASGI application") alike."""
        buf = io.StringIO()
        configure_logging(fmt="json", secrets=["sk-LONGSECRET-1", "abc"], stream=buf)
        try:
            raise RuntimeError("upstream said sk-LONGSECRET-1 Bearer abc")
        except RuntimeError:
            structlog.get_logger("t").error("server.config.checked", exc_info=True)
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        text = buf.getvalue()
        assert 2 == text.count("RuntimeError: upstream said *** Bearer ***")
        assert "sk-LONGSECRET-1" not in text and "Bearer abc" not in text

    def test_fixed_fields_are_never_rewritten(self) -> None:
        """A short secret that is a word (a category's name) leaves the category alone."""
        buf = io.StringIO()
        configure_logging(fmt="json", secrets=["lifecycle"], stream=buf)
        structlog.get_logger("t").warning("server.config.checked", category="lifecycle")
        (line,) = _lines(buf)
        assert ("lifecycle", "warning") == (line["category"], line["level"])

    def test_http_client_request_lines_are_quiet(self) -> None:
        """The HTTP client's one info line per request is dropped; its warnings are kept."""
        buf = io.StringIO()
        configure_logging(fmt="json", level="info", stream=buf)
        for name in ("httpx", "httpx2", "openai"):
            logging.getLogger(name).info("HTTP Request: POST http://x/v1/chat/completions")
            logging.getLogger(name).warning("Retrying request")
        assert ["Retrying request"] * 3 == [line["message"] for line in _lines(buf)]

    def test_an_access_line_keeps_its_path_cut(self) -> None:
        """uvicorn's access line keeps max_path_chars of the path, marked, redacted first:
        a cut inside a secret leaves no part of it."""
        buf = io.StringIO()
        secret = "s3cr3t-token-of-24-chars"
        configure_logging(fmt="json", stream=buf, secrets=[secret], max_path_chars=64)
        access = logging.getLogger("uvicorn.access")
        line = '%s - "%s %s HTTP/%s" %d'
        access.info(line, "127.0.0.1:5000", "GET", "/" + "x" * 99, "1.1", 404)
        # cut as it came, this path would end inside the secret (which starts at 57)
        access.info(
            line, "127.0.0.1:5000", "GET", "/" + "a" * 53 + "?t=" + secret + "&b=1", "1.1", 200
        )
        access.info(line, "127.0.0.1:5000", "GET", "/health", "1.1", 200)
        first, second, short = (str(entry["message"]) for entry in _lines(buf))
        assert f'127.0.0.1:5000 - "GET /{"x" * 63}...[+36 chars] HTTP/1.1" 404' == first
        assert f'127.0.0.1:5000 - "GET /{"a" * 53}?t={REDACTED}&b=1 HTTP/1.1" 200' == second
        assert '127.0.0.1:5000 - "GET /health HTTP/1.1" 200' == short
        assert secret[:4] not in buf.getvalue()

    def test_an_access_line_hides_the_credentials_a_client_put_in_the_query(self) -> None:
        """A client's ``?token=`` or ``?api_key=`` is no configured secret: its value goes too."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf, secrets=["sk-LEAKCHECK-123"])
        access = logging.getLogger("uvicorn.access")
        line = '%s - "%s %s HTTP/%s" %d'
        target = "/api/v1/tools?token=tok-LEAKCHECK-1&api_key=key-LEAKCHECK-2&page=2"
        access.info(line, "127.0.0.1:5000", "GET", target, "1.1", 401)
        (entry,) = _lines(buf)
        assert (
            f'127.0.0.1:5000 - "GET /api/v1/tools?token={REDACTED}&api_key={REDACTED}&page=2 '
            'HTTP/1.1" 401'
        ) == entry["message"]
        assert "LEAKCHECK" not in buf.getvalue()

    def test_other_stdlib_lines_are_left_whole(self) -> None:
        """Only access lines are cut; another line's arguments are formatted, never listed."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf, max_path_chars=64)
        logging.getLogger("uvicorn.error").warning("bad request to %s", "/" + "x" * 99)
        (entry,) = _lines(buf)
        assert "bad request to /" + "x" * 99 == entry["message"]
        assert "positional_args" not in entry

    def test_stdlib_records_share_format(self) -> None:
        """uvicorn's stdlib records come out as JSON lines with a category too."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf)
        logging.getLogger("uvicorn.error").info("Started server process")
        (line,) = _lines(buf)
        assert ("Started server process", "lifecycle") == (line["message"], line["category"])

    def test_stdlib_records_get_a_dotted_event(self) -> None:
        """Every stdlib record's event is the dotted ``<logger>.logged`` (uvicorn's start-up
        and access lines, a driver's, the root logger's); its text is the ``message``."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf)
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 7)
        logging.getLogger("uvicorn.access").info('%s - "%s"', "127.0.0.1:1", "GET / HTTP/1.1")
        logging.getLogger("asyncpg.pool").warning("connection lost")
        logging.getLogger().warning("a root line")
        assert [
            ("uvicorn.error.logged", "lifecycle", "Started server process [7]"),
            ("uvicorn.access.logged", "http", '127.0.0.1:1 - "GET / HTTP/1.1"'),
            ("asyncpg.pool.logged", "state", "connection lost"),
            ("root.logged", "lifecycle", "a root line"),
        ] == [(line["event"], line["category"], line["message"]) for line in _lines(buf)]

    def test_the_database_drivers_lines_are_state(self) -> None:
        """The PostgreSQL driver's own lines (its pool failing to reconnect) are in the
        ``state`` category, with the store's other events, not ``lifecycle``."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf)
        logging.getLogger("asyncpg.pool").warning("Failed to restore the pool connection floor")
        logging.getLogger("asyncpg").warning("connection lost")
        assert ["state", "state"] == [line["category"] for line in _lines(buf)]

    def test_python_warnings_are_log_lines(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A Python warning (a library's ``UserWarning``, a ``ResourceWarning`` under
        ``-X dev``) is one JSON line of the log, ``py.warnings.logged`` in ``lifecycle``
        at warning level, redacted like any line, never plain text on standard error."""
        buf = io.StringIO()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            configure_logging(fmt="json", stream=buf, secrets=("sk-warned-secret-1",))
            warnings.warn("old API used with key sk-warned-secret-1", UserWarning, stacklevel=1)
        assert "" == capsys.readouterr().err
        (line,) = _lines(buf)
        assert ("py.warnings.logged", "lifecycle", "warning") == (
            line["event"],
            line["category"],
            line["level"],
        )
        message = str(line["message"])
        assert "UserWarning: old API used with key ***" in message
        assert "sk-warned-secret-1" not in buf.getvalue()

    @pytest.mark.usefixtures("_restore_excepthooks")
    def test_an_uncaught_exception_is_a_log_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An exception nothing caught, in the main thread or another, is one JSON line,
        ``process.exception.uncaught`` with its traceback, redacted, never Python's plain
        traceback on standard error; a thread's ``SystemExit`` stays silent."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf, secrets=("sk-uncaught-secret-1",))
        try:
            raise RuntimeError("bad key sk-uncaught-secret-1")
        except RuntimeError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)

        def fail() -> None:
            raise ValueError("in a thread")

        for target in (fail, sys.exit):
            thread = threading.Thread(target=target, name="worker-thread")
            thread.start()
            thread.join()
        assert "" == capsys.readouterr().err
        main, in_thread = _lines(buf)
        assert ("process.exception.uncaught", "lifecycle", "error", "RuntimeError") == _head(main)
        assert "RuntimeError: bad key ***" in str(main["exception"])
        assert "sk-uncaught-secret-1" not in buf.getvalue()
        assert ("ValueError", "worker-thread") == (in_thread["error_type"], in_thread["thread"])
        assert "ValueError: in a thread" in str(in_thread["exception"])

    @pytest.mark.usefixtures("_restore_excepthooks")
    def test_an_ignored_exception_is_a_log_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An exception Python can only ignore (raised in a ``__del__``, a callback at
        collection) is one JSON line, ``process.exception.ignored`` with its traceback,
        redacted, never Python's plain ``Exception ignored in:`` on standard error."""
        buf = io.StringIO()
        configure_logging(fmt="json", stream=buf, secrets=("sk-ignored-secret-1",))

        class Leaky:
            def __del__(self) -> None:
                raise OSError("close failed for sk-ignored-secret-1")

        Leaky()  # collected at once: its __del__ raises where nothing can catch it
        assert "" == capsys.readouterr().err
        (line,) = _lines(buf)
        assert ("process.exception.ignored", "lifecycle", "warning", "OSError") == _head(line)
        assert "Leaky.__del__" in str(line["where"])
        assert "OSError: close failed for ***" in str(line["exception"])
        assert "sk-ignored-secret-1" not in buf.getvalue()

    def test_unknown_inputs_rejected(self) -> None:
        """An unknown level or category is refused with ValueError."""
        with pytest.raises(ValueError, match="level"):
            configure_logging(level="loud")
        with pytest.raises(ValueError, match="categories"):
            configure_logging(categories=("nope",))


class _FailingStream(io.StringIO):
    """A log sink that refuses every write, as a pipe whose reader went away does."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


class TestFailingSink:
    def test_a_line_the_sink_refuses_is_dropped_and_counted(self, metrics: MetricSet) -> None:
        """A log call whose line the stream refuses returns normally, structlog's and the
        stdlib's alike, and each lost line counts once as a fault of stage ``log``."""
        count_log_faults_in(metrics)
        configure_logging(fmt="json", stream=_FailingStream())
        structlog.get_logger("t").error("mission.failed", category="mission")
        logging.getLogger("uvicorn.error").warning("stdlib line")
        assert 2 == value(metrics, "taskforce_metrics_errors_total", stage="log")

    def test_a_closed_stream_is_a_failing_sink(self, metrics: MetricSet) -> None:
        """A stream closed under the logger (ValueError on write) drops the line too."""
        count_log_faults_in(metrics)
        stream = io.StringIO()
        configure_logging(fmt="json", stream=stream)
        stream.close()
        structlog.get_logger("t").info("mission.completed", category="mission")
        assert 1 == value(metrics, "taskforce_metrics_errors_total", stage="log")

    def test_a_sink_that_raises_anything_else_is_a_failing_sink(self, metrics: MetricSet) -> None:
        """A stream that fails otherwise (a binary one given text: TypeError) drops and
        counts the line too; the code that logged goes on."""
        count_log_faults_in(metrics)
        configure_logging(fmt="json", stream=io.BytesIO())
        structlog.get_logger("t").error("mission.failed", category="mission")
        logging.getLogger("uvicorn.error").warning("stdlib line")
        assert 2 == value(metrics, "taskforce_metrics_errors_total", stage="log")

    def test_no_standard_error_drops_lines_off_standard_output(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With standard error closed at start (``sys.stderr`` is None), lines are
        dropped: they do not go to standard output, where ``taskforce run`` prints."""
        monkeypatch.setattr("sys.stderr", None)
        configure_logging(fmt="json")
        structlog.get_logger("t").error("mission.failed", category="mission")
        assert "" == capsys.readouterr().out


@pytest.mark.usefixtures("_restore_stdlib_logging")
class TestForkedWriters:
    def test_the_long_lines_of_forked_processes_stay_whole_on_a_pipe(self) -> None:
        """Processes forked after the set-up (``serve --workers N``) share its stream. On a
        pipe only a write of up to 4 KiB (PIPE_BUF) is atomic: while the reader lags, a
        longer line goes in in pieces, and another process's line could land between
        them. Every line of 4 writers (20,000 characters each) is read back whole."""
        read_fd, write_fd = os.pipe()
        stream = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115  # closed below
        configure_logging(fmt="json", level="debug", stream=stream)
        children = []
        for writer in range(4):
            pid = os.fork()
            if pid == 0:  # pragma: no cover  # the child's coverage is not collected
                try:
                    # stdlib lines: the handler's lock is made anew in a fork (structlog's
                    # path passes the suite's log audit, whose lock another thread may hold)
                    for _ in range(10):
                        logging.getLogger("t").warning("%s", str(writer) * 20_000)
                finally:
                    os._exit(0)
            children.append(pid)
        stream.close()
        chunks = []
        with open(read_fd, "rb") as reader:
            # a slow reader: the pipe stays full, so the writers wait for room mid-line
            while chunk := reader.read1(4096):
                chunks.append(chunk)
                time.sleep(0.001)
        for pid in children:
            os.waitpid(pid, 0)
        lines = b"".join(chunks).decode().splitlines()
        pads = sorted(json.loads(line)["message"] for line in lines)
        assert sorted(str(writer) * 20_000 for writer in range(4) for _ in range(10)) == pads

    def test_the_lines_of_the_forking_process_stay_whole_beside_its_forks(self) -> None:
        """The process that forked (the supervisor of ``serve --workers N``) writes the
        same pipe as its forks: its own long lines stay whole among theirs too."""
        read_fd, write_fd = os.pipe()
        stream = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115  # closed below
        configure_logging(fmt="json", level="debug", stream=stream)
        pid = os.fork()
        if pid == 0:  # pragma: no cover  # the child's coverage is not collected
            try:
                for _ in range(10):
                    logging.getLogger("t").warning("%s", "c" * 20_000)
            finally:
                os._exit(0)
        chunks: list[bytes] = []
        reader = threading.Thread(target=_read_slowly, args=(read_fd, chunks))
        reader.start()
        for _ in range(10):
            logging.getLogger("t").warning("%s", "p" * 20_000)
        stream.close()
        os.waitpid(pid, 0)
        reader.join()
        lines = b"".join(chunks).decode().splitlines()
        pads = sorted(json.loads(line)["message"] for line in lines)
        assert ["c" * 20_000] * 10 + ["p" * 20_000] * 10 == pads

    def test_a_writer_killed_mid_line_does_not_stall_the_others(self) -> None:
        """A worker killed (SIGKILL, the OOM killer) while it writes a line holds the lock
        no more: the kernel releases a dead process's record locks, and the next
        process's line goes out whole (after the dead one's piece, which stays cut)."""
        read_fd, write_fd = os.pipe()
        stream = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115  # closed below
        configure_logging(fmt="json", level="debug", stream=stream)
        killed = os.fork()
        if killed == 0:  # pragma: no cover  # the child's coverage is not collected
            try:  # a line far longer than the pipe holds: it waits for room, locked
                logging.getLogger("t").warning("%s", "k" * 1_000_000)
            finally:
                os._exit(0)
        with open(read_fd, "rb") as reader:
            first = reader.read1(4096)  # the line is under way: its writer holds the lock
            os.kill(killed, signal.SIGKILL)
            os.waitpid(killed, 0)
            after = os.fork()
            if after == 0:  # pragma: no cover  # the child's coverage is not collected
                try:
                    logging.getLogger("t").warning("after the kill")
                finally:
                    os._exit(0)
            stream.close()
            rest = _read_until_end(reader)
        os.waitpid(after, 0)
        assert first.startswith(b"{")
        last = (first + rest).decode().splitlines()[-1]
        assert last.endswith("}")
        assert "after the kill" == json.loads(last[last.rindex('{"event"') :])["message"]

    @pytest.mark.slow
    def test_the_long_lines_of_a_worker_uvicorn_spawned_stay_whole_on_a_pipe(
        self, tmp_path: Path
    ) -> None:
        """A worker that uvicorn ``--workers`` spawned (a fresh interpreter, no fork), or
        that gunicorn forked before it imported taskforce (no ``--preload``), shares
        standard error without a fork of its own to tell it: the app it builds sees the
        server, and its long lines stay whole beside another process's. The child
        builds it as uvicorn does, from its worker start (``subprocess_started``)."""
        read_fd, write_fd = os.pipe()
        stream = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115  # closed below
        configure_logging(fmt="json", level="debug", stream=stream)
        os.waitpid(_fork_idle(), 0)  # this process shares its streams, as a fork does
        env = {
            **os.environ,
            "TASKFORCE_STATE_DIR": str(tmp_path / "state"),
            "TASKFORCE_WORKSPACE_DIR": str(tmp_path / "workspace"),
            "TASKFORCE_METRICS__ENABLED": "false",
            "TASKFORCE_LOGGING__FORMAT": "json",
        }
        child = subprocess.Popen(  # this interpreter, a fixed program
            [sys.executable, "-c", _UVICORN_WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=write_fd,
            env=env,
            cwd=tmp_path,
        )
        chunks: list[bytes] = []
        try:  # the child has built its app; then both write at once
            assert child.stdout is not None and b"ready\n" == child.stdout.readline()
            assert child.stdin is not None
            child.stdin.close()
            reader = threading.Thread(target=_read_slowly, args=(read_fd, chunks))
            reader.start()
            for _ in range(10):
                logging.getLogger("t").warning("%s", "p" * 20_000)
            stream.close()
            reader.join()
        finally:
            assert 0 == child.wait()
        lines = b"".join(chunks).decode().splitlines()
        pads = sorted(
            str(message)
            for line in lines
            if (message := json.loads(line).get("message", "")).startswith(("u", "p"))
        )
        assert ["p" * 20_000] * 10 + ["u" * 20_000] * 10 == pads

    @pytest.mark.usefixtures("_restore_uvicorn_loggers")
    def test_a_fork_takes_uvicorns_lines_back_from_a_gunicorn_worker_set_up(self) -> None:
        """gunicorn ``--preload`` builds the app (which sets logging up) in its arbiter,
        then makes each worker there before its fork: a ``UvicornWorker`` hands uvicorn's
        loggers to gunicorn's own handlers. The fork takes them back, so uvicorn's lines
        are JSON lines and its access lines are written. Before, its start-up lines were
        gunicorn's plain text, and no access line was written at all."""
        from gunicorn.config import Config
        from gunicorn.glogging import Logger

        with warnings.catch_warnings():  # uvicorn.workers is deprecated (uvicorn-worker)
            warnings.simplefilter("ignore", DeprecationWarning)
            from uvicorn.workers import UvicornWorker

        read_fd, write_fd = os.pipe()
        stream = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115  # closed below
        configure_logging(fmt="json", stream=stream)
        cfg = Config()
        UvicornWorker(1, os.getpid(), [], None, 30, cfg, Logger(cfg))  # as the arbiter does
        pid = os.fork()
        if pid == 0:  # pragma: no cover  # the child's coverage is not collected
            try:
                logging.getLogger("uvicorn.error").info("Started server process [1]")
                logging.getLogger("uvicorn.access").info("%s", "GET /health")
            finally:
                os._exit(0)
        stream.close()
        with open(read_fd, "rb") as reader:
            lines = reader.read().decode().splitlines()
        os.waitpid(pid, 0)
        events = [(line["event"], line["message"]) for line in map(json.loads, lines)]
        assert [
            ("uvicorn.error.logged", "Started server process [1]"),
            ("uvicorn.access.logged", "GET /health"),
        ] == events

    def test_a_process_that_shares_nothing_takes_no_lock(self) -> None:
        """A process that never forked, and was started as no server's worker, writes
        its lines without a lock (and opens no file for one); once it forked, its
        child shares the pipe and each line to it is locked, but a line to a stream in
        memory, which no other process can write, still is not."""
        out = subprocess.run(  # this interpreter, a fixed program
            [sys.executable, "-c", _LOCK_COUNTS],
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        ).stdout
        assert {"files": 0, "alone": 0, "shared": 3, "in_memory": 0} == json.loads(out)


#: A worker uvicorn spawned: builds the app as uvicorn does, says so, waits for its go (its
#: standard input closed), then logs ten lines of 20,000 characters.
_UVICORN_WORKER = """
import logging, sys, types
from taskforce.api.server import create_app

namespace = {"__name__": "uvicorn._subprocess", "create_app": create_app}
exec("def subprocess_started(config):\\n    return create_app()", namespace)
namespace["subprocess_started"](types.SimpleNamespace(workers=2, host="127.0.0.1", port=8000))
print("ready", flush=True)
sys.stdin.read()
for _ in range(10):
    logging.getLogger("t").warning("%s", "u" * 20_000)
"""

#: Counts the record locks a process takes on its log stream, and the files it opens.
_LOCK_COUNTS = """
import fcntl, io, json, logging, os
from taskforce.observability import configure_logging

calls = []
real_lockf = fcntl.lockf
fcntl.lockf = lambda fd, op, *a: (calls.append(op), real_lockf(fd, op, *a))[1]
read_fd, write_fd = os.pipe()
stream = open(write_fd, "w")
before = len(os.listdir("/proc/self/fd"))
configure_logging(fmt="json", stream=stream)
files = len(os.listdir("/proc/self/fd")) - before
for _ in range(3):
    logging.getLogger("t").warning("alone")
alone = sum(op == fcntl.LOCK_EX for op in calls)
if os.fork() == 0:  # a fork shares the stream with this process from now on
    os._exit(0)
os.wait()
for _ in range(3):
    logging.getLogger("t").warning("shared")
shared = sum(op == fcntl.LOCK_EX for op in calls) - alone
configure_logging(fmt="json", stream=io.StringIO())
logging.getLogger("t").warning("in memory")
in_memory = sum(op == fcntl.LOCK_EX for op in calls) - alone - shared
print(json.dumps({"files": files, "alone": alone, "shared": shared, "in_memory": in_memory}))
"""


def _fork_idle() -> int:
    """Fork a child that exits at once; return its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover  # the child's coverage is not collected
        os._exit(0)
    return pid


def _read_slowly(read_fd: int, chunks: list[bytes]) -> None:
    """Read a pipe to its end as a lagging reader does: the pipe stays full, so each
    writer waits for room in the middle of its line."""
    with open(read_fd, "rb") as reader:
        while chunk := reader.read1(4096):
            chunks.append(chunk)
            time.sleep(0.001)


def _read_until_end(reader: BufferedReader) -> bytes:
    """What is left on a pipe until its last writer is gone, or 60 s without a byte."""
    chunks = []
    while select.select([reader], [], [], 60)[0] and (chunk := reader.read1(65536)):
        chunks.append(chunk)
    return b"".join(chunks)


class TestResolveFormat:
    def test_auto(self) -> None:
        """auto is console on a TTY and json elsewhere."""

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        assert "console" == resolve_format("auto", Tty())
        assert "json" == resolve_format("auto", io.StringIO())
        assert "json" == resolve_format("json", Tty())


#: Text a hostile model or client may put in a field: a terminal escape (colour, the OSC 52
#: clipboard write), C1's CSI, line breaks of every kind, and a forged JSON line.
_HOSTILE = 'ev\x1b[31mil\x1b]52;c;cm0gLXJm\x07\x9b2J\r\n{"level": "critical"}\u2028\x85\x7f'
#: The same without a space or a line break, which the console prints unquoted.
_BARE = "ev\x1b[31mil\x1b]52;c;cm0gLXJm\x07\x9b2J"


def _controls(text: str) -> list[str]:
    """The characters of ``text`` a terminal acts on, or that start a line, but LF."""
    return [
        c for c in text if c != "\n" and (ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c == "\u2028")
    ]


@pytest.mark.usefixtures("_restore_stdlib_logging")
class TestHostileText:
    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_a_field_cannot_reach_the_terminal_or_forge_a_line(self, fmt: str) -> None:
        """Values holding escape sequences and line breaks (a tool name a model made up, a
        client's text in a foreign line) stay on their line with no control character in
        it, in both formats; the JSON line's own fields are unchanged."""
        buf = io.StringIO()
        configure_logging(fmt=fmt, level="debug", stream=buf)
        log = structlog.get_logger("t")
        log.debug("tool.call.started", category="tool", tool=_HOSTILE)
        log.debug("tool.call.started", category="tool", tool=_BARE)
        logging.getLogger("uvicorn.error").warning("bad request: %s", _HOSTILE)
        lines = buf.getvalue().split("\n")
        assert (4, "") == (len(lines), lines[-1])
        assert [] == _controls(buf.getvalue())
        if fmt == "json":
            first, second, third = (json.loads(line) for line in lines[:3])
            assert (_HOSTILE, "debug", "tool") == (first["tool"], first["level"], first["category"])
            assert _BARE == second["tool"]
            assert ("bad request: " + _HOSTILE, "warning") == (third["message"], third["level"])
        else:
            assert lines[0].endswith(f"tool={_HOSTILE!r}")
            assert lines[1].endswith(f"tool={_BARE!r}")
            assert lines[2].endswith(f"message={'bad request: ' + _HOSTILE!r}")

    def test_a_traceback_keeps_its_lines_but_no_escape(self) -> None:
        """On the console a traceback is still printed on lines of its own; an escape
        sequence in its message (an exception quoting a model's text) is written out."""
        buf = io.StringIO()
        configure_logging(fmt="console", level="debug", stream=buf)
        try:
            raise ValueError(_HOSTILE)
        except ValueError:
            structlog.get_logger("t").error(
                "process.exception.uncaught",
                category="lifecycle",
                error_type="ValueError",
                exc_info=True,
            )
        text = buf.getvalue()
        assert "\nTraceback (most recent call last):\n" in text
        assert [] == _controls(text)
        assert "ValueError: ev\\x1b[31mil" in text
