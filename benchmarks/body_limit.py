"""Peak server memory while eight clients each send a 50 MB body, with and without the limit.

What is measured: ``taskforce serve`` runs as a subprocess (one worker, scripted
LLM, logs off). Eight clients at once send ``POST /api/v1/execute`` with a JSON
body of 50 MB (``--quick``: 5 MB), then read the answer. The server's resident
memory is read from ``/proc/<pid>/status``: ``VmRSS`` before (idle) and after,
``VmHWM`` (the peak) after. Three conditions, each a fresh server:

- ``declared, limit 1 MiB``: the default ``api.max_body_bytes``; the body's
  ``Content-Length`` is sent, so the 413 comes before any body byte is read;
- ``chunked, limit 1 MiB``: no ``Content-Length``; the body is read up to the
  limit, then the 413;
- ``declared, limit 1 GiB``: as if there were no limit (the largest setting
  allowed): the whole body is read, parsed and validated (a 422).

Reading the output: MiB per condition, and the peak against the idle figure of
the same server. The ``VERDICT`` line checks that with the default limit the peak
stays within 1.5x of idle. Verdicts are printed, never asserted: the script exits 0.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _bench
import httpx

CLIENTS = 8
TARGET_RATIO = 1.5
MIB = 1024 * 1024


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _send(port: int, body_bytes: int, *, chunked: bool) -> str:
    """Send one large body; return the status line the server answered with."""
    prefix, suffix = b'{"mission": "', b'"}'
    fill = body_bytes - len(prefix) - len(suffix)
    block = b"a" * MIB
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        head = b"POST /api/v1/execute HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        if chunked:
            head += b"Transfer-Encoding: chunked\r\n\r\n"
        else:
            head += f"Content-Length: {body_bytes}\r\n\r\n".encode()
        try:
            sock.sendall(head)
            parts = [prefix] + [block] * (fill // MIB) + [b"a" * (fill % MIB), suffix]
            for part in parts:
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: what the limit is for
        try:
            answer = sock.recv(200)
        except ConnectionResetError:
            return "reset"
    return answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"


def _condition(root: Path, limit: int, body_bytes: int, *, chunked: bool) -> list[float | str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFORCE_")}
    env.update(
        TASKFORCE_API__MAX_BODY_BYTES=str(limit),
        TASKFORCE_LOGGING__LEVEL="critical",
        TASKFORCE_STATE_DIR=str(root / "state"),
        TASKFORCE_WORKSPACE_DIR=str(root / "ws"),
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "taskforce", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        idle = _status_mib(server.pid, "VmRSS")
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            jobs = [pool.submit(_send, port, body_bytes, chunked=chunked) for _ in range(CLIENTS)]
            answers = sorted({job.result() for job in jobs})
        peak = _status_mib(server.pid, "VmHWM")
        after = _status_mib(server.pid, "VmRSS")
    finally:
        server.terminate()
        server.wait(30)
    return [idle, peak, after, ", ".join(answers)]


def main(config: _bench.Config) -> None:
    """Run the three conditions and print the table."""
    body_bytes = (5 if config.quick else 50) * 1000 * 1000
    rows: list[list[str]] = []
    peaks: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="taskforce-bench-") as tmp:
        for label, limit, chunked in [
            ("declared, limit 1 MiB", MIB, False),
            ("chunked, limit 1 MiB", MIB, True),
            ("declared, limit 1 GiB", 1024 * MIB, False),
        ]:
            idle, peak, after, answers = _condition(Path(tmp), limit, body_bytes, chunked=chunked)
            assert isinstance(idle, float) and isinstance(peak, float) and isinstance(after, float)
            peaks[label] = (idle, peak)
            rows.append(
                [
                    label,
                    f"{idle:.0f}",
                    f"{peak:.0f}",
                    f"{after:.0f}",
                    _bench.ratio(peak, idle),
                    str(answers),
                ]
            )
    print(f"{CLIENTS} clients at once, {body_bytes / 1e6:.0f} MB each")
    _bench.print_table(
        ["condition", "idle MiB", "peak MiB", "after MiB", "peak vs idle", "answers"], rows
    )
    idle, peak = peaks["declared, limit 1 MiB"]
    chunked_idle, chunked_peak = peaks["chunked, limit 1 MiB"]
    worst = max(peak / idle, chunked_peak / chunked_idle)
    _bench.verdict(
        "peak RSS under 8 concurrent large bodies",
        worst <= TARGET_RATIO,
        f"peak at most {worst:.2f}x idle with the default limit, target {TARGET_RATIO:g}x",
    )


if __name__ == "__main__":
    cfg = _bench.parse_args(__doc__.splitlines()[0])
    _bench.print_environment("request body limit")
    main(cfg)
