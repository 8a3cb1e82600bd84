"""The ``taskforce`` console script: ``run`` for both flows, ``serve``, and bad settings."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import CALC_WRITE_MISSION

pytestmark = pytest.mark.integration


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFORCE_")}
    env.update(
        TASKFORCE_STATE_DIR=str(tmp_path / "state"),
        TASKFORCE_WORKSPACE_DIR=str(tmp_path / "ws"),
        TASKFORCE_LOGGING__FORMAT="json",
        **extra,
    )
    return env


def _taskforce(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskforce", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestRun:
    @pytest.mark.parametrize("agent", ["lean", "legacy"])
    def test_mission_completes(self, tmp_path: Path, agent: str) -> None:
        """`taskforce run --json` runs calculator then file_write then answers, exit 0."""
        proc = _taskforce(
            "run", CALC_WRITE_MISSION, "--agent", agent, "--json", env=_env(tmp_path), cwd=tmp_path
        )
        assert 0 == proc.returncode, proc.stderr
        result = json.loads(proc.stdout)
        assert ("completed", agent, 2) == (
            result["status"],
            result["agent_type"],
            result["tool_calls"],
        )
        assert "42" == (tmp_path / "ws" / "answer.txt").read_text(encoding="utf-8")
        logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
        completed = [line for line in logs if line["event"] == "mission.completed"]
        assert 1 == len(completed)
        assert result["session_id"] == completed[0]["session_id"]

    def test_failed_mission_exit_code(self, tmp_path: Path) -> None:
        """A failed mission prints its error and exits 1."""
        proc = _taskforce("run", "llm:error", env=_env(tmp_path), cwd=tmp_path)
        assert 1 == proc.returncode
        assert "status: failed" in proc.stdout

    def test_invalid_setting_names_it(self, tmp_path: Path) -> None:
        """An invalid setting stops the CLI with exit 2 and the setting's name."""
        env = _env(tmp_path, TASKFORCE_METRICS__MAX_LABEL_VALUES="-3")
        proc = _taskforce("run", "hi", env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        assert "metrics.max_label_values" in proc.stderr
        assert not (tmp_path / "state").exists()


class TestServe:
    def test_serve_answers_health_and_metrics(self, tmp_path: Path) -> None:
        """`taskforce serve` starts the service on the given port, metrics on by default."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskforce", "serve", "--port", str(port)],
            env=_env(tmp_path),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert 200 == health.status_code
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert 200 == metrics.status_code
            assert "taskforce_build_info" in metrics.text
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=15)
        assert "server.started" in stderr

    def test_serve_bad_config_file(self, tmp_path: Path) -> None:
        """`taskforce serve --config missing.toml` refuses to start and says why."""
        proc = _taskforce(
            "serve", "--config", str(tmp_path / "missing.toml"), env=_env(tmp_path), cwd=tmp_path
        )
        assert 2 == proc.returncode
        assert "config" in proc.stderr
