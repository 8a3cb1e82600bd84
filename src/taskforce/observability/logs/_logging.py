"""Structured logging set-up: every event gets a category from a closed set, secrets are redacted.

This configures structlog *and* the standard library's root logger (so uvicorn's
own lines come out in the same format, an access line's path cut to length), Python's
warnings and the exceptions nothing caught or Python ignores (so no plain-text line
breaks a JSON log), also in a fork that a server's worker set-up ran in first (gunicorn
``--preload``); it holds process-wide state, so call it once at start-up, from
the CLI or the app factory, never from library code.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, MutableMapping
from types import TracebackType
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from taskforce.core.interfaces.log import (
    LOG_CATEGORIES,
    MAX_PATH_CHARS,
    REDACTED,
    cut_text,
    is_secret_name,
    redact_secret_parameters,
    secret_scrubber,
)
from taskforce.observability.logs._sink import SinkStream

__all__ = ["REDACTED", "configure_logging", "resolve_format"]

# HTTP client libraries whose info lines are one per request (the LLM provider's).
_QUIET_LIBRARIES = ("httpx", "httpx2", "httpcore", "httpcore2", "openai")

# Fields whose values the code sets from closed sets, never from input: not scrubbed, so
# a short secret that happens to be a word ("mission") cannot rewrite them.
_FIXED_FIELDS = frozenset({"category", "level", "log_level", "timestamp", "logger"})

# Events without an explicit category get one from the first segment of their dotted name.
_PREFIX_CATEGORY = {c: c for c in LOG_CATEGORIES} | {
    "startup": "lifecycle",
    "shutdown": "lifecycle",
    "server": "lifecycle",
    "config": "lifecycle",
    "uvicorn": "lifecycle",
}
# Foreign loggers whose lines belong to a category of their own: the access lines, and
# the PostgreSQL driver's (its pool failing to reconnect), which are the state store's.
_LOGGER_CATEGORY = {"uvicorn.access": "http"}
_LOGGER_PREFIX_CATEGORY = {"asyncpg": "state"}

# Whether configure_logging set this process's logging up (a fork takes uvicorn's lines back).
_is_configured = False

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def resolve_format(fmt: str, stream: Any = None) -> Literal["console", "json"]:
    """Turn ``auto`` into ``console`` on a TTY and ``json`` elsewhere."""
    if fmt in ("console", "json"):
        return fmt  # type: ignore[return-value]  # narrowed by the membership test
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "console" if callable(isatty) and isatty() else "json"


def _add_category(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    category = event_dict.get("category")
    if category not in LOG_CATEGORIES:
        event = str(event_dict.get("event", ""))
        prefix = event.split(".", 1)[0]
        logger_name = str(event_dict.get("logger", ""))
        logger_prefix = logger_name.split(".", 1)[0]
        inferred = (
            _LOGGER_CATEGORY.get(logger_name)
            or _LOGGER_PREFIX_CATEGORY.get(logger_prefix)
            or _PREFIX_CATEGORY.get(prefix)
            or _PREFIX_CATEGORY.get(logger_prefix, "lifecycle")
        )
        if category is not None:
            # An unknown category is kept visible instead of silently dropped.
            event_dict["category_unknown"] = str(category)
        event_dict["category"] = inferred
    return event_dict


class _CategoryFilter:
    """Drops events whose category is not among the configured ones."""

    def __init__(self, categories: Iterable[str]) -> None:
        self._keep = frozenset(categories)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("category") not in self._keep:
            raise structlog.DropEvent
        return event_dict


class _Redactor:
    """Replaces secret fields, and any known secret inside any string value, with ``***``.

    A field is a secret's by its name (:func:`is_secret_name`: ``api_key``,
    ``Authorization``, ``x-api-key``, ``access_token``), at any depth of the event.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.scrub_text = secret_scrubber(secrets)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, MutableMapping):
            return {k: self._field(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def _field(self, key: str, value: Any) -> Any:
        if value is not None and is_secret_name(key):
            return REDACTED
        return self._scrub(value)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        for key in list(event_dict):
            if key not in _FIXED_FIELDS:
                event_dict[key] = self._field(key, event_dict[key])
        return event_dict


class _AccessLinePaths:
    """Redacts and cuts what a client wrote into uvicorn's access lines (the path and query).

    uvicorn formats the whole path into the line, and only the head's limit bounds it. The
    line is formatted again from the record's arguments: the value of each query
    parameter that names a secret replaced (``redact_secret_parameters``: a client's
    ``?token=...`` is no configured secret the redactor knows), each text longer than
    the limit redacted of the configured secrets, so that a cut never leaves part of a
    secret behind, then cut (``cut_text``). Every other stdlib line passes unchanged (its
    arguments are dropped: the message is formatted with them already).
    """

    def __init__(self, max_chars: int, scrub: Callable[[str], str]) -> None:
        self._max_chars = max_chars
        self._scrub = scrub

    def _shown(self, text: str) -> str:
        text = redact_secret_parameters(text)
        if len(text) > self._max_chars:
            return cut_text(self._scrub(text), self._max_chars)
        return text

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        args = event_dict.pop("positional_args", None)
        record = event_dict.get("_record")
        if record is None or record.name != "uvicorn.access" or not isinstance(args, tuple):
            return event_dict
        shown = tuple(self._shown(a) if isinstance(a, str) else a for a in args)
        if shown == args:
            return event_dict
        try:
            event_dict["event"] = str(record.msg) % shown
        except (TypeError, ValueError):  # a format of a later uvicorn: the line itself
            event_dict["event"] = self._shown(str(event_dict["event"]))
        return event_dict


def _name_stdlib_line(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Give a stdlib record a dotted event, ``<logger>.logged``; its text goes to ``message``.

    Every line then has a dotted ``event`` as CONTRACT.md asks, uvicorn's and the
    drivers' included, and the free text (an access line, a start-up line) stays whole.
    """
    event_dict["message"] = event_dict.get("event")
    event_dict["event"] = f"{event_dict.get('logger') or 'root'}.logged"
    return event_dict


# What a terminal acts on or a reader splits a line at: C0, DEL, C1 (CSI is 0x9B), and the
# line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The fields the console prints on lines of their own: their line feeds stay.
_MULTILINE_FIELDS = frozenset({"exception", "stack"})


class _Escaped:
    """A console value holding control characters, printed as its ``repr`` (escaped)."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = repr(text)

    def __repr__(self) -> str:
        return self._text

    __str__ = __repr__


def _escape_line_feed_kept(match: re.Match[str]) -> str:
    char = match.group()
    return char if char == "\n" else repr(char)[1:-1]


def _escape_controls(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Write a console line's control characters out, as JSON lines escape them.

    A value a model or a client chose (a tool name, a stdlib line's text) may hold an
    escape sequence the operator's terminal would act on, or a line break that makes
    a line of its own: such a value is printed as its ``repr``, as the console prints a
    value with a space in it; a traceback keeps its line feeds, nothing else.
    """
    for key, value in event_dict.items():
        if not isinstance(value, str) or _CONTROL.search(value) is None:
            continue
        if key in _MULTILINE_FIELDS:
            event_dict[key] = _CONTROL.sub(_escape_line_feed_kept, value)
        else:
            event_dict[key] = _Escaped(value)
    return event_dict


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]  # stream type is Any here
    """A stream handler that honours structlog's ``DropEvent`` for stdlib records."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
        except structlog.DropEvent:
            return
        try:
            self.stream.write(msg + self.terminator)
            self.flush()
        except Exception:  # the stdlib's own policy for a failing stream
            self.handleError(record)


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` that logs: a warning is a ``py.warnings`` line, not plain text.

    Python prints warnings (a library's ``UserWarning``, a ``ResourceWarning`` under
    ``-X dev``) straight on standard error, which would break a JSON log. As
    ``logging.captureWarnings`` does, but set again on every configuration.
    """
    del file  # the line goes where the log goes
    text = warnings.formatwarning(message, category, filename, lineno, line)
    logging.getLogger("py.warnings").warning("%s", text.rstrip("\n"))


def _log_uncaught(
    exc_type: type[BaseException],
    exc: BaseException | None,
    tb: TracebackType | None,
    thread: str | None = None,
) -> None:
    """Log an exception nothing caught as ``process.exception.uncaught``, traceback included.

    ``sys.excepthook`` and ``threading.excepthook`` print it as plain text on standard
    error, which would break a JSON log; this line is redacted like any other.
    """
    fields: dict[str, Any] = {"thread": thread} if thread is not None else {}
    structlog.get_logger(__name__).error(
        "process.exception.uncaught",
        category="lifecycle",
        error_type=exc_type.__name__,
        exc_info=(exc_type, exc, tb),
        **fields,
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook`` that logs; a thread's ``SystemExit`` stays silent, as ever."""
    if issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else None
    _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback, thread=name)


def _log_ignored(unraisable: sys.UnraisableHookArgs) -> None:
    """``sys.unraisablehook`` that logs ``process.exception.ignored``, traceback included.

    Python prints an exception it can only ignore (raised in a ``__del__``, a callback at
    collection) as plain ``Exception ignored in:`` lines on standard error otherwise.
    """
    try:
        where = f"{unraisable.err_msg or 'Exception ignored in'}: {unraisable.object!r}"
    except Exception:  # a repr that raises: the hook itself must not
        where = unraisable.err_msg or "Exception ignored"
    exc_type = unraisable.exc_type
    structlog.get_logger(__name__).warning(
        "process.exception.ignored",
        category="lifecycle",
        error_type=exc_type.__name__,
        where=where,
        exc_info=(exc_type, unraisable.exc_value, unraisable.exc_traceback),
    )


def configure_logging(
    *,
    fmt: str = "auto",
    level: str = "info",
    categories: Iterable[str] = LOG_CATEGORIES,
    secrets: Iterable[str] = (),
    stream: Any = None,
    max_path_chars: int = MAX_PATH_CHARS,
    cache_loggers: bool = False,
) -> None:
    """Configure structlog and stdlib logging for the process.

    Args:
        fmt: ``json``, ``console`` or ``auto`` (console on a TTY, else JSON).
        level: minimum level name.
        categories: the categories to keep; events of the others are dropped.
        secrets: values that must never appear in a log line (API keys, tokens).
        stream: where lines go; standard error by default.
        max_path_chars: the longest request path (query included) an access line keeps;
            a longer one is cut and marked ``...[+N chars]``.
        cache_loggers: let each module logger keep its configured pipeline after its
            first use (saves rebuilding it on every log call; what the CLI does). Leave it off when
            logging may be reconfigured later in the process (tests, embedding).

    Raises:
        ValueError: an unknown level or category, or ``max_path_chars`` below 1.
    """
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    categories = tuple(categories)
    unknown = set(categories) - set(LOG_CATEGORIES)
    if unknown:
        raise ValueError(f"unknown log categories {sorted(unknown)}")
    if max_path_chars < 1:
        raise ValueError(f"max_path_chars must be at least 1, got {max_path_chars}")
    out = sys.stderr if stream is None else stream
    sink = SinkStream(out)
    renderer: Processor
    escaping: list[Processor] = []  # JSON escapes control characters itself
    if resolve_format(fmt, out) == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        escaping.append(_escape_controls)
    redactor = _Redactor(secrets)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_category,
        _CategoryFilter(categories),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # before the redactor: a traceback may quote a secret (an exception's message)
        structlog.processors.format_exc_info,
        redactor,
    ]
    structlog.configure(
        processors=[*shared, *escaping, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # one write() per line, whole between forked workers sharing stderr (see SinkStream)
        logger_factory=structlog.WriteLoggerFactory(file=sink),  # type: ignore[arg-type]  # a TextIO in what WriteLogger uses
        cache_logger_on_first_use=cache_loggers,
    )
    handler = _Handler(sink)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                _AccessLinePaths(max_path_chars, redactor.scrub_text),
                structlog.stdlib.add_logger_name,
                _name_stdlib_line,
                *shared,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *escaping,
                renderer,
            ],
            # the access lines' arguments, for _AccessLinePaths (which drops them)
            pass_foreign_args=True,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    warnings.showwarning = _log_warning
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    sys.unraisablehook = _log_ignored
    root.setLevel(_LEVELS[level])
    for name in _QUIET_LIBRARIES:
        # their per-request info lines ("HTTP Request: POST ...") repeat what the llm.*
        # events say, without a category of their own: warnings and worse only
        logging.getLogger(name).setLevel(max(_LEVELS[level], logging.WARNING))
    global _is_configured
    _is_configured = True
    _route_uvicorn_lines()


def _route_uvicorn_lines() -> None:
    """uvicorn installs its own handlers; route its records through ours instead."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers[:] = []
        uv.propagate = True
        uv.setLevel(logging.NOTSET)  # the configured level applies to them too
        uv.disabled = False


def _route_uvicorn_lines_in_fork() -> None:
    """Take uvicorn's lines back in a fork of a process whose logging is set up.

    gunicorn ``--preload`` builds the app (which sets logging up) in its arbiter, then
    makes each worker there, before its fork: a ``UvicornWorker`` hands uvicorn's loggers
    to gunicorn's own handlers (plain text, the access lines to gunicorn's access log,
    none by default), and the fork would keep them so.
    """
    if _is_configured:
        _route_uvicorn_lines()


os.register_at_fork(after_in_child=_route_uvicorn_lines_in_fork)
