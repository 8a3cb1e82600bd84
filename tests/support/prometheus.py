"""Run the ``prometheus`` binary on 127.0.0.1 for a test, and read it back through its HTTP API."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.binaries import require_binary
from tests.support.processes import free_ports

READY_SECONDS = 30.0


@contextlib.contextmanager
def run_prometheus(root: Path, config: dict[str, Any]) -> Iterator[str]:
    """Run Prometheus with ``config`` (written as JSON, which is YAML) under ``root``.

    Yields its base URL once ``/-/ready`` answers; stops it however the block ends.
    Rule files named in ``config`` are read relative to ``root``.
    """
    binary = require_binary("prometheus")
    root.mkdir(parents=True, exist_ok=True)
    path = root / "prometheus.yml"
    path.write_text(json.dumps(config), encoding="utf-8")
    port = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log = root / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=root,
        )
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {log.read_text(errors='replace')}")
            with contextlib.suppress(httpx.HTTPError):
                if 200 == httpx.get(f"{url}/-/ready", timeout=1.0).status_code:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready: {log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def api_get(prometheus_url: str, path: str, **params: str) -> Any:
    """GET ``/api/v1/<path>``; return its ``data`` (fails on an API error)."""
    response = httpx.get(f"{prometheus_url}/api/v1/{path}", params=params, timeout=5.0)
    response.raise_for_status()
    body = response.json()
    assert "success" == body["status"], body
    return body["data"]


def query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    """Evaluate an instant PromQL query; return its vector (metric labels and value)."""
    result: list[dict[str, Any]] = api_get(prometheus_url, "query", query=expr)["result"]
    return result
