"""The taskforce command line: serve runs the HTTP service, run runs one mission."""

# (The docstring is --help's description.) This module imports only the standard
# library, taskforce.errors and the stop signals' module when it is loaded: `taskforce
# run` and `taskforce serve` take their stop signals over first thing, and load
# settings, logging and asyncio only then, so that a signal sent right after the start
# is answered too.

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import functools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import aclosing
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from taskforce import __version__
from taskforce.api._stop_signals import STOP_SIGNALS, held_signals
from taskforce.errors import (
    ConfigurationError,
    MissionError,
    StartupError,
    StateStoreError,
)

if TYPE_CHECKING:
    import asyncio

    from taskforce.config import Settings
    from taskforce.core.interfaces import ExecutionResult, ExecutorProtocol

__all__ = ["main"]

_NOT_STARTED = "stopped before the mission started"
_EX_IOERR = 74  # sysexits.h: an error occurred while doing I/O on some file
#: The last line of ``run --stream --json`` when a stop signal cancelled its mission.
_CANCELLED_EVENT = {
    "kind": "error",
    "error": "the mission was cancelled",
    "error_type": "cancelled",
    "is_final": True,
}


class _Terminated(BaseException):
    """SIGTERM came before ``run``'s event loop took it over; a BaseException, as Ctrl-C's is."""


class _Run:
    """How far ``run`` got: whether a stop signal found a mission to cancel, and which one."""

    __slots__ = ("has_mission", "has_result", "interrupts", "stopped_by")

    def __init__(self) -> None:
        self.has_mission = False
        self.has_result = False  # the mission ended: a stop signal finds nothing to stop
        self.interrupts = 0  # Ctrl-Cs the event loop took
        self.stopped_by: signal.Signals | None = None  # the first stop signal it took


class _OutputFailed(Exception):
    """Standard output did not take ``run``'s result: its reader went away (``| head -n 1``),
    or a write failed otherwise (a full disk)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


def _say(text: str = "", end: str = "\n") -> None:
    """Print ``text`` on standard output and flush it, so that a failed write shows here.

    Standard output is block-buffered when it is not a terminal: unflushed, the result
    would fail only at the interpreter's exit, with a traceback and exit code 120.

    Raises:
        _OutputFailed: standard output did not take ``text``, or was closed (``>&-``).
    """
    if sys.stdout is None:  # closed before the start: print() would drop the result unsaid
        raise _OutputFailed(OSError(errno.EBADF, os.strerror(errno.EBADF)))
    try:
        print(_printable(text), end=end, flush=True)
    except UnicodeEncodeError:  # an output encoding that is not UTF-8 (PYTHONIOENCODING)
        encoding = sys.stdout.encoding
        _say(text.encode(encoding, "backslashreplace").decode(encoding), end)
    except OSError as exc:
        raise _OutputFailed(exc) from exc


def _printable(text: str) -> str:
    """``text`` with each lone surrogate as its ``\\uXXXX`` escape.

    A tool's argument (a JSON escape) or a file name that is not UTF-8 puts lone
    surrogates in a result and its events. Printed as they are, one stops ``run`` with
    a traceback, or goes out as a byte that is not UTF-8 (``surrogateescape``); as
    ``\\udcff`` it is a valid JSON escape inside a string, and readable text.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _is_ignored(sent: signal.Signals) -> bool:
    """Whether ``sent`` is ignored, as it came from the parent (``taskforce run ... &`` in a
    script ignores SIGINT, ``trap '' TERM`` SIGTERM): ``run`` leaves it so, as Python does
    with an ignored SIGINT, rather than be stopped by a signal it was meant to survive."""
    return signal.getsignal(sent) is signal.SIG_IGN


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    """Stop ``run`` where it is, as Python's own SIGINT handler does with KeyboardInterrupt."""
    raise _Terminated


def _port(text: str, lowest: int = 0) -> int:
    """A TCP port number (the socket layer would silently wrap 99999 to 34463)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: must be {lowest} to 65535")
    return port


def _host(text: str) -> str:
    """An address or host name to bind: not blank (no resolver takes one; 0.0.0.0 and ::
    are the wildcards)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"invalid host {text!r}: give an address or a name (0.0.0.0 or :: for every address)"
        )
    return text


def _metrics_port(text: str) -> int:
    """A metrics port: no 0 (metrics.port names a port to scrape, not any free one)."""
    return _port(text, lowest=1)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that writes through ``_say`` and ``_complain``.

    argparse drops a failed write and leaves its buffer to the interpreter's flush at
    exit (exit code 120), and with standard error closed prints its usage error on
    standard output: here help and ``--version`` fail as ``run``'s result does, and a
    usage error goes to standard error or nowhere.
    """

    def _print_message(self, message: str, file: Any = None) -> None:
        # The one place argparse writes: help and --version to standard output, the rest
        # (exit's message) to standard error. A standard output closed before the start
        # (``>&-``) comes as None, as sys.stdout is: help and --version then fail as
        # ``run``'s result does, rather than go to standard error and exit 0.
        if not message:
            return
        if file is not None and file is sys.stderr:
            _complain(message.rstrip("\n"))
        else:
            _say(message, end="")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # argparse's own sends its message through _print_message with sys.stderr, which
        # is None too when standard error is closed: said here, it never reaches stdout.
        if message:
            _complain(message.rstrip("\n"))
        sys.exit(status)

    def error(self, message: str) -> NoReturn:
        # argparse's own would print the usage on standard output when standard error is
        # closed (print_usage's fallback); the exit code stays 2.
        _complain(f"{self.format_usage()}{self.prog}: error: {message}")
        self.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="taskforce", description=__doc__)
    parser.add_argument("--version", action="version", version=f"taskforce {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument(
        "--host",
        type=_host,
        default="127.0.0.1",
        help="address to bind, :: for every IPv6 and IPv4 address (default 127.0.0.1)",
    )
    serve.add_argument("--port", type=_port, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--config", default=None, help="TOML settings file (default: TASKFORCE_CONFIG, or none)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes sharing the port, 1 to 256 (default $WEB_CONCURRENCY, else 1)",
    )
    serve.add_argument(
        "--metrics-port",
        type=_metrics_port,
        default=None,
        help="serve metrics on this port instead of the API port (default metrics.port)",
    )

    run = sub.add_parser(
        "run",
        help="run one mission and print its result",
        description="Run one mission and print only its result on standard output. "
        "Logs go to standard error: warnings and errors only, unless --verbose.",
    )
    run.add_argument("mission", help="the mission text (directives allowed, see README)")
    run.add_argument(
        "--agent",
        choices=("lean", "legacy"),
        default="lean",
        help="agent flow, lean or legacy (default lean)",
    )
    run.add_argument(
        "--session", default=None, help="session id to continue (default: a new session)"
    )
    run.add_argument(
        "--json", action="store_true", help="print the result as JSON (default: plain text)"
    )
    run.add_argument(
        "--stream",
        action="store_true",
        help="print the answer's tokens as they arrive; with --json every event as one "
        "JSON line (default off)",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        help="log at logging.level instead of warning and above (default off)",
    )
    run.add_argument(
        "--config", default=None, help="TOML settings file (default: TASKFORCE_CONFIG, or none)"
    )
    return parser


async def _check_state_store(settings: Settings, received: list[signal.Signals]) -> None:
    """Open and close the state store once, so an unreachable database (or a ``state_dir``
    whose lock files this process cannot use) stops start-up.

    The check may wait for the database up to ``state.timeout_seconds``: a stop signal
    of ``serve`` ends it at once, and is added to ``received`` (the list of
    :func:`held_signals` that ``serve`` holds them in from its start). One that came
    before the check (in ``received`` already) ends it as it starts.
    """
    import asyncio

    from taskforce.application.container import make_state_store

    async def open_and_close() -> None:
        store = make_state_store(settings)
        try:
            await store.open()  # type: ignore[attr-defined]
        finally:
            await store.aclose()  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    check = asyncio.create_task(open_and_close())

    def stop(signum: int, frame: FrameType | None) -> None:
        # Run between two bytecodes, as held_signals' own handler is: the check's task
        # is cancelled from the loop, which the call wakes from its wait.
        received.append(signal.Signals(signum))
        loop.call_soon_threadsafe(check.cancel)

    # Handlers of the signal module, not of the loop: the loop's, once removed, leave
    # the default action, which would end the process (or, as PID 1, drop the signal)
    # until the server takes them over; here held_signals' handler is back at once.
    previous = {sent: signal.signal(sent, stop) for sent in STOP_SIGNALS}
    if received:  # one came before the handler above was in
        check.cancel()
    try:
        await check
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        for sent, handler in previous.items():
            signal.signal(sent, handler)


def _stopped_before_serving(received: Sequence[signal.Signals]) -> int:
    """Log that a stop signal ended ``serve`` before it bound anything; return 0."""
    import structlog

    # Nothing was bound or listed yet: a stop during the start-up is a stop, exit 0.
    structlog.get_logger("taskforce.api").info(
        "server.stopped", category="lifecycle", signal=received[0].name
    )
    return 0


def _serve(args: argparse.Namespace, settings: Settings, received: list[signal.Signals]) -> int:
    """Check the directories and the state database, then serve; return the exit code.

    ``received`` holds the stop signals taken since ``serve`` started (see
    :func:`held_signals`): one that came while the modules loaded or the database was
    checked ends it before anything is bound, one that comes later once it serves.
    """
    import asyncio

    if received:  # while the settings and logging loaded: the app's modules are not needed
        return _stopped_before_serving(received)

    from taskforce.api._supervisor import resolve_workers, serve
    from taskforce.config import check_directories

    check_directories(settings, args.config)
    if not received:
        asyncio.run(_check_state_store(settings, received))
    if received:  # while the app's modules loaded, or the check ran
        return _stopped_before_serving(received)
    workers = resolve_workers(args.workers)
    has_flag = args.metrics_port is not None
    return serve(
        settings,
        args.host,
        args.port,
        workers,
        has_metrics_port_flag=has_flag,
        config_file=args.config,
        received=received,
    )


async def _run_mission(args: argparse.Namespace, settings: Settings, run: _Run) -> int:
    import asyncio

    # SIGTERM and Ctrl-C cancel the run, taken over from main's handler (and from
    # asyncio.run's) first of all, so that one arriving while the container's modules
    # load is answered too; once the mission runs, it is cancelled, recorded in its
    # session, the container closed. The handler runs between two bytecodes, as
    # asyncio.run's own does, so the cancellation lands at once (a handler of the loop's
    # would wait for its next turn, and a mission may start, or even end, before). A
    # second Ctrl-C stops at once: raised from a callback of the loop, not (as
    # asyncio.run's handler would) in whatever task code runs when it comes, so the
    # writes still under way are given up and logged.
    task = asyncio.current_task()
    if task is None:  # not under asyncio.run: nothing to cancel
        return await _mission(args, settings, run)
    # Kept until asyncio.run is over (its shutdown included): _command then restores
    # the default disposition, as the process is about to exit.
    stop = functools.partial(_stop, run, task, asyncio.get_running_loop())
    for sent in _STOP_SIGNALS:
        if not _is_ignored(sent):
            signal.signal(sent, stop)
    return await _mission(args, settings, run)


async def _mission(args: argparse.Namespace, settings: Settings, run: _Run) -> int:
    """Build the container, run the mission, print its result; return the exit code."""
    from taskforce.application.container import build_container
    from taskforce.config import check_directories
    from taskforce.core.interfaces import check_session_id, has_visible_character

    if not has_visible_character(args.mission):
        # Refused before anything is built: no state directory for a mission that cannot run.
        raise MissionError("the mission is empty: it has no visible character")
    check_session_id(args.session, "--session")  # named as the user wrote it, not session_id
    check_directories(settings, args.config)
    has_tokens = False  # the answer already went out as it streamed
    async with build_container(settings) as container:
        # From here a cancellation finds a mission: the executor starts it (logs it, will
        # record it) before one can land (execute_mission before its first await, a
        # stream's mission task before its consumer's first wait can end).
        run.has_mission = True
        if args.stream:
            result, has_tokens = await _stream_mission(args, container.executor)
        else:
            result = await container.executor.execute_mission(
                args.mission, agent_type=args.agent, session_id=args.session
            )
        run.has_result = True  # ended: its result is printed and its code returned
    if args.json and args.stream:
        pass  # the result went out as the last event
    elif args.json:
        _say(_json_writer(indent=2)(result.to_dict()))
    else:
        _say(f"status: {result.status}")
        _say(f"session: {result.session_id}  mission: {result.mission_id}")
        for step in result.steps:
            tools = f" [{', '.join(step.tool_calls)}]" if step.tool_calls else ""
            _say(f"  step {step.index} {step.status}: {step.description}{tools}")
        if result.error:
            _say(f"error: {result.error}")
        if not has_tokens and result.final_message:
            _say(result.final_message)
    return 0 if result.status == "completed" else 1


def _json_writer(**options: Any) -> Callable[[Any], str]:
    """The function ``--json`` writes a result or an event with, as the API writes them.

    Strict JSON: a tool's output JSON cannot hold (a NaN, a set) must neither stop ``run``
    with a traceback nor print what a strict reader refuses. On an output encoding other
    than UTF-8 (``PYTHONIOENCODING=ascii``) every character past ASCII is its ``\\uXXXX``
    escape: the backslash escape ``_say`` falls back to is no JSON for one past U+FFFF.
    """
    from taskforce.core.interfaces.jsonable import json_writer

    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    is_utf8 = codecs.lookup(encoding).name == "utf-8"
    return json_writer(is_finite=True, ensure_ascii=not is_utf8, **options)


def _stop(
    run: _Run, task: asyncio.Task[int], loop: asyncio.AbstractEventLoop, signum: int, _: object
) -> None:
    """Cancel ``run``'s task on a stop signal; a second Ctrl-C interrupts the loop instead."""
    if run.has_result or loop.is_closed():
        return  # the mission ended: run prints its result and exits with its code
    sent = signal.Signals(signum)
    run.stopped_by = run.stopped_by or sent
    if sent == signal.SIGINT:
        run.interrupts += 1
        if run.interrupts > 1:
            loop.call_soon_threadsafe(_interrupt)
            return
    task.cancel()
    loop.call_soon_threadsafe(_wake)  # the loop may wait in select() with a long timeout


def _interrupt() -> None:
    """Stop the event loop with KeyboardInterrupt (asyncio.run then cancels every task)."""
    raise KeyboardInterrupt


def _wake() -> None:
    """Nothing: a callback that makes a waiting event loop take its next turn."""


async def _stream_mission(
    args: argparse.Namespace, executor: ExecutorProtocol
) -> tuple[ExecutionResult, bool]:
    """Run the mission on the streaming path: tokens (or, with --json, events) as they come.

    Returns:
        The result, and whether answer tokens were printed (then the summary leaves
        the final message out rather than print it twice).
    """
    import asyncio

    write = _json_writer(is_one_line=True)  # one event a line, also for str.splitlines
    result: ExecutionResult | None = None
    has_tokens = False
    stream = executor.execute_mission_streaming(
        args.mission, agent_type=args.agent, session_id=args.session
    )
    try:
        async with aclosing(stream) as events:
            async for event in events:
                if args.json:
                    _say(write(event.to_dict()))
                elif event.kind == "token":
                    _say(event.data.get("content", ""), end="")
                    has_tokens = True
                if event.result is not None:
                    result = event.result
    except asyncio.CancelledError:
        if args.json:
            # Stopped (Ctrl-C, SIGTERM): the last line says so, as the SSE route's last
            # event does on a shutdown; the exit code stays the signal's.
            with contextlib.suppress(_OutputFailed):
                _say(write(_CANCELLED_EVENT))
        raise
    finally:
        if has_tokens:
            _say()  # ends the answer's line, also when the mission was cut short
    if result is None:  # the executor's contract: the last event is the result
        raise RuntimeError("the mission stream ended without a result")
    return result, has_tokens


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``taskforce`` console script.

    Exit codes: 0 success, 1 a mission that did not complete, 2 bad usage, an
    invalid mission, an invalid setting (one line on standard error says which), an
    unreachable state database (the line names state.dsn, or the libpq variable such as
    PGSSLMODE whose value the driver refused) or a start-up failure such
    as a port in use (the line names host and port) or no file descriptor left to start
    with (the line names the open-file limit); 130 and 143 when ``run`` is
    stopped by SIGINT (Ctrl-C) or SIGTERM, its mission cancelled, or before it started
    (a stop signal it was started with ignored stays ignored);
    141 when the standard output of ``run`` (or of ``--help``, ``--version``) is closed
    (a reader that went away), as SIGPIPE; 74 (``EX_IOERR``, one line) when it cannot be
    written otherwise (a full disk).
    A standard error that cannot be written (``2>&-``, its reader gone) changes none of
    them: the line is dropped.
    """
    try:
        sys.exit(_main(argv))
    finally:
        # A line standard error did not take (its reader gone) is still buffered: the
        # interpreter's flush at exit would fail on it, and exit 120 instead of our code.
        _flush_or_drop(sys.stderr)


def _main(argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run its command; return the exit code (see :func:`main`)."""
    try:
        args = _parser().parse_args(argv)
    except _OutputFailed as exc:  # --help or --version, and no reader for them
        return _output_failed(exc)
    if args.command == "serve":
        # Held from here until the server or the supervisor takes them over: a stop
        # signal while the settings, logging and the app's modules load ends serve as
        # soon as they have, exit 0. Their default action would end the process with no
        # line, or, as PID 1 of a container without an init, be dropped by the kernel:
        # the process would start and serve until killed.
        with held_signals() as received:
            return _command(args, received)
    # From here on SIGTERM stops `run` as Ctrl-C does, also while the settings, logging
    # and asyncio load: before the mission's event loop takes it over (_run_mission),
    # there is nothing to cancel or record, so one line and 143 it is. (Only the
    # interpreter's own start and `import taskforce` come before this handler.)
    if not _is_ignored(signal.SIGTERM):
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _command(args)
    except (KeyboardInterrupt, _Terminated) as exc:
        return _stopped(exc, _NOT_STARTED)


def _open_file_limit() -> str:
    """The process's open-file limit, as a start-up failure for want of descriptors says it."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"the open-file limit, ulimit -n, is {soft}: raise it"


def _stopped(exc: BaseException, what: str, taken: signal.Signals | None = None) -> int:
    """Say that a stop signal ended ``run`` and ``what`` it found; return 128 + the signal.

    ``taken`` is the signal the event loop took, if it did; else ``exc`` says how the
    signal arrived: ``KeyboardInterrupt`` for SIGINT (Ctrl-C), else SIGTERM.
    """
    stopped_by = taken or (signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM)
    _complain(f"taskforce: {stopped_by.name}: {what}")
    return 128 + stopped_by


def _output_failed(exc: _OutputFailed) -> int:
    """Say that ``run``'s result was not written whole; return the exit code.

    A reader that went away is 128 + SIGPIPE, as the shell reports a program SIGPIPE
    stopped (Python ignores SIGPIPE and raises ``BrokenPipeError`` instead). Any other
    failure (a full disk) is ``EX_IOERR``, not 1: the mission may have completed.
    """
    _flush_or_drop(sys.stdout)
    if isinstance(exc.error, BrokenPipeError):
        _complain("taskforce: standard output was closed before all was printed")
        return 128 + getattr(signal, "SIGPIPE", 13)
    _complain(f"taskforce: cannot write the result to standard output: {exc}")
    return _EX_IOERR


def _complain(line: str) -> None:
    """Say ``line`` on standard error, if it can be written at all.

    A standard error that is closed (``2>&-``) or whose reader went away drops the line:
    the exit code it goes with stays what it is.
    """
    if sys.stderr is None:  # closed before the start: print() would write on standard output
        return
    with contextlib.suppress(OSError):  # what it still buffers, main() drops at the end
        print(line, file=sys.stderr, flush=True)


def _flush_or_drop(stream: TextIO | None) -> None:
    """Flush ``stream``; what it cannot take goes to the null device, as all it gets next.

    Else the interpreter's flush at exit fails on it again: ``Exception ignored`` and
    exit code 120 instead of ours.
    """
    if stream is None:
        return
    try:
        stream.flush()
    except (OSError, ValueError):  # ValueError: closed, so nothing left to flush at exit
        with contextlib.suppress(OSError, ValueError):  # no descriptor: nothing to send away
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, stream.fileno())
            finally:
                os.close(devnull)


def _command(args: argparse.Namespace, received: list[signal.Signals] | None = None) -> int:
    """Load the settings and run the command; return its exit code (see :func:`main`).

    ``received``: the stop signals ``serve`` holds since its start (see :func:`_serve`).
    """
    import asyncio

    from taskforce.api._logs import configure_from_settings
    from taskforce.config import given_in, load_settings

    is_quiet_run = args.command == "run" and not args.verbose
    run = _Run()
    overrides: dict[str, Any] = {}
    if getattr(args, "metrics_port", None) is not None:
        overrides["metrics"] = {"port": args.metrics_port}
    try:
        settings = load_settings(args.config, **overrides)
        configure_from_settings(settings, at_least="warning" if is_quiet_run else "debug")
    except ConfigurationError as exc:
        _complain(f"taskforce: {exc}")
        return 2
    try:
        if args.command == "serve":
            return _serve(args, settings, [] if received is None else received)
        try:
            return asyncio.run(_run_mission(args, settings, run))
        finally:
            # run is over: a signal from here on ends the process as it would any
            # program (not a KeyboardInterrupt or traceback during its exit)
            for sent in _STOP_SIGNALS:
                if not _is_ignored(sent):
                    signal.signal(sent, signal.SIG_DFL)
    except (ConfigurationError, MissionError, StartupError) as exc:
        _complain(f"taskforce: {exc}")
        return 2
    except StateStoreError as exc:
        # A database that cannot be reached (state.dsn named), or a store that opened but
        # cannot be used (a schema newer than this code knows): a start-up failure, one
        # line; the message names no path and no DSN.
        _complain(f"taskforce: {exc.start_up_line(functools.partial(given_in, settings))}")
        return 2
    except OSError as exc:
        # Out of descriptors before the event loop or the state store could even start
        # (a mission's own failures are its result): a start-up failure, one line.
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        _complain(f"taskforce: cannot start: {exc.strerror} ({_open_file_limit()})")
        return 2
    except _OutputFailed as exc:
        # Only `run` prints: its reader went away (`taskforce run ... | head -n 1`), or
        # the write failed (a full disk). A stream's mission still running is cancelled
        # (and logged so) when an event cannot be printed; one that ended is recorded as
        # it ended.
        return _output_failed(exc)
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        # Only `run` gets here (serve drains on its signals): the mission was cancelled
        # and recorded so, or none had started yet (the container was still being built).
        # The shell's convention: 128 + the signal's number.
        what = "the mission was cancelled" if run.has_mission else _NOT_STARTED
        return _stopped(exc, what, run.stopped_by)
