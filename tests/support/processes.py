"""Run ``taskforce serve`` (or another server command) as a child process on 127.0.0.1.

Every process started here is stopped (SIGTERM, then SIGKILL) when its context ends,
however the test ends; its stderr is kept in a file for the failure message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

import taskforce

#: The source tree the tests import taskforce from; children must run the same code.
_SOURCE_ROOT = str(Path(taskforce.__file__).resolve().parents[1])

START_SECONDS = 60.0


#: ``LOW-HIGH``: pick test ports in this range only (a machine shared by several runs).
PORT_RANGE_VARIABLE = "TEST_PORT_RANGE"


#: Where the next search in $TEST_PORT_RANGE starts: past the ports handed out last, so
#: two calls before either port is bound (an API port, then a metrics port) differ.
_range_cursor: list[int] = []


def _candidate_bases(host: str) -> Iterator[int]:
    """First ports to try: $TEST_PORT_RANGE round robin, else ports the system picks."""
    given = os.environ.get(PORT_RANGE_VARIABLE, "")
    if given:
        low, high = (int(part) for part in given.split("-"))
        start = _range_cursor[0] if _range_cursor and low <= _range_cursor[0] <= high else low
        yield from range(start, high + 1)
        yield from range(low, start)
        return
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((host, 0))
            port: int = probe.getsockname()[1]
        yield port  # closed first: the caller binds it again


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """Return the first of ``count`` consecutive ports that are free on ``host`` right now."""
    ceiling = 65535
    if given := os.environ.get(PORT_RANGE_VARIABLE, ""):
        ceiling = int(given.split("-")[1])
    for base in _candidate_bases(host):
        if base + count - 1 > ceiling:
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind((host, port))
            except OSError:
                continue
        _range_cursor[:] = [base + count]
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


def clean_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment without any TASKFORCE_*/WEB_CONCURRENCY, state under ``root``, ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TASKFORCE_") and k != "WEB_CONCURRENCY"
    }
    path = [_SOURCE_ROOT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        PYTHONPATH=os.pathsep.join(os.path.abspath(p) for p in path),
        TASKFORCE_STATE_DIR=str(root / "state"),
        TASKFORCE_WORKSPACE_DIR=str(root / "workspace"),
        TASKFORCE_LOGGING__FORMAT="json",
    )
    env.update(extra)
    return env


def run_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a Python process of its own that imports this taskforce.

    Args:
        script: The program, as for ``python -c``.
        *args: Its ``sys.argv[1:]``.

    Returns:
        The finished process, its output as text.
    """
    env = {**os.environ, "PYTHONPATH": _SOURCE_ROOT}
    # The timeout only keeps a regression from hanging the suite; nothing is timed.
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@dataclass
class Child:
    """A started server process and the file its stdout and stderr go to."""

    process: subprocess.Popen[bytes]
    log: Path

    def stderr(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig``, wait for the exit (SIGKILL after ``timeout``), return the exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def wait_until_up(child: Child, urls: list[str], timeout: float = START_SECONDS) -> None:
    """Return once every URL answers (any status); fail if the process exits first."""
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending:
        if child.process.poll() is not None:
            raise RuntimeError(f"server exited {child.process.returncode}:\n{child.stderr()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending} not up:\n{child.stderr()}")
        try:
            httpx.get(pending[0], timeout=1.0)
            pending.pop(0)
        except httpx.TransportError:
            time.sleep(0.05)


@contextlib.contextmanager
def started(
    args: list[str], env: Mapping[str, str], cwd: Path, *, module: str = "taskforce"
) -> Iterator[Child]:
    """Start ``python -m <module> <args>``; stop it (and its workers) when the block ends."""
    log = cwd / f"{module}-{len(list(cwd.glob('*.stderr')))}.stderr"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=dict(env),
            cwd=cwd,
            stdout=err,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # one process group: workers die with it
        )
    child = Child(process, log)
    try:
        yield child
    finally:
        child.stop()
        # Workers a crashed supervisor left behind share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
