"""Recognise, from inside a worker, a multi-process server that taskforce does not control.

Recognised: uvicorn's ``--workers`` supervisor (``uvicorn._subprocess``) and gunicorn's
arbiter with uvicorn workers. Both build the app from a call stack that holds their
configuration, so the worker count is read from it; the parent's command line is the
fallback when the app is built elsewhere. Call :func:`detect_supervisor` from the code
that builds the app (``create_app``), not from a request or the lifespan task, whose
stacks no longer show the server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

__all__ = ["ForeignSupervisor", "detect_supervisor"]


@dataclass(frozen=True)
class ForeignSupervisor:
    """A multi-process server running this process; ``None`` fields are unknown."""

    name: str
    workers: int | None
    #: The host the server binds its shared port to.
    host: str | None = None
    #: That port (``None`` for a Unix socket or an inherited descriptor).
    port: int | None = None

    @property
    def is_multiprocess(self) -> bool:
        """True unless the server is known to run a single worker, and to keep it so.

        gunicorn always counts as many: its ``TTIN`` signal adds workers at run time, to
        a ``-w 1`` service too, and the shared port would then answer for either.
        """
        if self.name == "gunicorn":
            return True
        return self.workers is None or self.workers > 1


def _as_count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_port(value: object) -> int | None:
    port = _as_count(value)
    return port if port is not None and 0 < port < 65536 else None


def _bind_address(bind: object) -> tuple[str | None, int | None]:
    """The host and port of gunicorn's first ``bind`` address, read as gunicorn reads it.

    As ``gunicorn.util.parse_address``: ``HOST:PORT``, ``[V6]:PORT``, a bare ``HOST``
    (port 8000) and ``tcp://`` before any of them; an empty host (``:8000``, the
    form container platforms document) binds every interface, ``0.0.0.0``. A Unix
    socket (``unix:``) or an inherited descriptor (``fd://``) has neither: ``None``.
    """
    if not isinstance(bind, list | tuple) or not bind or not isinstance(bind[0], str):
        return None, None
    address = bind[0]
    if address.startswith(("unix:", "fd://")):
        return None, None
    address = address.removeprefix("tcp://")
    if "[" in address and "]" in address:
        host, port = address.split("]")[0][1:], address.partition("]:")[2]
    else:
        host, _, port = address.partition(":")
    digits = port or "8000"
    return host.lower() or "0.0.0.0", _as_port(int(digits)) if digits.isdecimal() else None


def _uvicorn_port(config: object) -> int | None:
    """The TCP port a uvicorn config serves on; ``None`` when it serves a socket it was given."""
    if getattr(config, "uds", None) is not None or getattr(config, "fd", None) is not None:
        return None
    return _as_port(getattr(config, "port", None))


def _from_frame(frame: FrameType) -> ForeignSupervisor | None:
    module = str(frame.f_globals.get("__name__", ""))
    if module == "uvicorn._subprocess" and frame.f_code.co_name == "subprocess_started":
        config = frame.f_locals.get("config")
        host = getattr(config, "host", None)
        # --reload runs one process through the same function; uvicorn ignores --workers
        # and WEB_CONCURRENCY then, but keeps them in its config.
        is_reload = getattr(config, "should_reload", False) is True
        return ForeignSupervisor(
            "uvicorn",
            1 if is_reload else _as_count(getattr(config, "workers", None)),
            host if isinstance(host, str) else None,
            _uvicorn_port(config),
        )
    if module.startswith("gunicorn."):
        cfg = getattr(frame.f_locals.get("self"), "cfg", None)
        workers = _as_count(getattr(cfg, "workers", None))
        return ForeignSupervisor("gunicorn", workers, *_bind_address(getattr(cfg, "bind", None)))
    return None


def _from_stack() -> ForeignSupervisor | None:
    frame: FrameType | None = sys._getframe(1)
    found: ForeignSupervisor | None = None
    while frame is not None:
        hit = _from_frame(frame)
        if hit is not None and (found is None or found.workers is None):
            found = hit
        frame = frame.f_back
    return found


def _flag(argv: list[str], flags: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in flags:
            return value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
        for flag in flags:
            if len(flag) == 2 and arg.startswith(flag) and len(arg) > 2:
                return arg[2:]
    return None


def _flag_count(argv: list[str], flags: tuple[str, ...]) -> int | None:
    raw = _flag(argv, flags)
    return int(raw) if raw is not None and raw.isdigit() else None


def _from_parent(proc: Path) -> ForeignSupervisor | None:
    try:
        raw = (proc / str(os.getppid()) / "cmdline").read_bytes()
    except OSError:
        return None
    argv = [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
    names = [os.path.basename(arg) for arg in argv[:3]]
    if any(name.startswith("gunicorn") for name in names) or "gunicorn" in argv[1:3]:
        workers = _flag_count(argv, ("-w", "--workers"))
        bind = _bind_address([_flag(argv, ("-b", "--bind"))])
        return ForeignSupervisor("gunicorn", workers, *bind)
    if any(name == "uvicorn" for name in names) or "uvicorn" in argv[1:3]:
        if "--reload" in argv:  # one process, whatever --workers says (see _from_frame)
            return None
        workers = _flag_count(argv, ("--workers",))
        host = _flag(argv, ("--host",)) or "127.0.0.1"
        port = _uvicorn_flag_port(argv, os.environ)
        return ForeignSupervisor("uvicorn", workers, host, port) if workers is not None else None
    return None


def _uvicorn_flag_port(argv: list[str], environ: Mapping[str, str]) -> int | None:
    """The port uvicorn's command line serves on: ``--port``, ``UVICORN_PORT`` or 8000.

    ``None`` when it serves a Unix socket or a descriptor it was given (``--uds``, ``--fd``).
    """
    uds = _flag(argv, ("--uds",)) or environ.get("UVICORN_UDS")
    fd = _flag(argv, ("--fd",)) or environ.get("UVICORN_FD")
    if uds or fd:
        return None
    raw = _flag(argv, ("--port",)) or environ.get("UVICORN_PORT") or "8000"
    return _as_port(int(raw)) if raw.isdecimal() else None


def _is_uvicorn(argv: list[str]) -> bool:
    """Whether ``argv`` is uvicorn's own command line (its script, or ``python -m uvicorn``)."""
    return bool(argv) and (
        os.path.basename(argv[0]) == "uvicorn" or argv[0].endswith("uvicorn/__main__.py")
    )


def own_uvicorn_host(argv: list[str], environ: Mapping[str, str]) -> str | None:
    """The ``--host`` of a plain (single-process) uvicorn running this process, if it is one.

    Args:
        argv: this process's command line (``sys.argv``).
        environ: its environment (uvicorn reads ``UVICORN_HOST`` too).

    Returns:
        The host uvicorn binds; ``None`` when this process is not uvicorn's.
    """
    if not _is_uvicorn(argv):
        return None
    return _flag(argv, ("--host",)) or environ.get("UVICORN_HOST") or None


def own_uvicorn_port(argv: list[str], environ: Mapping[str, str]) -> int | None:
    """The port a plain (single-process) uvicorn running this process serves the API on.

    Args:
        argv: this process's command line (``sys.argv``).
        environ: its environment (uvicorn reads ``UVICORN_PORT``, ``UVICORN_UDS`` and
            ``UVICORN_FD`` too).

    Returns:
        ``--port`` (8000 by default); ``None`` when this process is not uvicorn's, or
        it serves a Unix socket or a descriptor (``--uds``, ``--fd``).
    """
    return _uvicorn_flag_port(argv, environ) if _is_uvicorn(argv) else None


def detect_supervisor(proc: Path = Path("/proc")) -> ForeignSupervisor | None:
    """Return the foreign server running this process, or ``None`` when none is recognised.

    Args:
        proc: where the proc file system is mounted (tests point it elsewhere).

    Returns:
        ``ForeignSupervisor`` for uvicorn's ``--workers`` and gunicorn (any worker
        count, possibly unknown); ``None`` for a plain single process.
    """
    return _from_stack() or _from_parent(proc)
