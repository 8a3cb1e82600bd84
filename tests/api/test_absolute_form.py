"""A request target in absolute form (RFC 9112 section 3.2.2), routed as its origin form."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskforce.api._absolute_form import origin_form
from taskforce.api.server import create_app
from taskforce.config import Settings
from tests.support.live_server import serve
from tests.support.processes import free_ports


def _get(port: int, target: str) -> tuple[int, bytes]:
    """Send ``GET target HTTP/1.1`` to 127.0.0.1:``port`` as it is written; the answer's
    status code and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode("ascii"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.integration
def test_an_absolute_form_target_is_routed_and_counted_as_its_path(tmp_path: Path) -> None:
    """`GET http://127.0.0.1:PORT/health` on a real server answers as `GET /health` does,
    and the HTTP metrics count it under its route, not `unmatched`; the metrics listener
    takes the absolute form of its path too. Before, both answered 404."""
    settings = Settings(
        state_dir=tmp_path / "state",
        workspace_dir=tmp_path / "workspace",
        metrics={"port": free_ports(1), "host": "127.0.0.1"},
    )
    metrics_port = settings.metrics.port
    assert metrics_port is not None
    with serve(create_app(settings)) as live:
        assert 200 == _get(live.port, "/health")[0]
        assert 200 == _get(live.port, f"http://127.0.0.1:{live.port}/health")[0]
        assert 200 == _get(live.port, f"HTTP://127.0.0.1:{live.port}/health?probe=1")[0]
        assert 404 == _get(live.port, f"http://127.0.0.1:{live.port}/api/v1/sessions/none")[0]
        code, body = _get(metrics_port, f"http://127.0.0.1:{metrics_port}/metrics")
    assert 200 == code
    counted = {
        (sample.labels["route"], sample.labels["status_code"]): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
        if sample.name == "taskforce_http_requests_total"
    }
    assert {("/health", "200"): 3, ("/api/v1/sessions/{session_id}", "404"): 1} == counted


@pytest.mark.parametrize(
    ("root", "target", "expected"),
    [
        ("", "http://h:1/a%20b", ("/a b", b"/a%20b")),
        ("", "https://h", ("/", b"/")),
        ("/api", "http://h/x", ("/api/x", b"/api/x")),
        ("", "http://h%2Fx/y", ("/y", b"/y")),
    ],
)
def test_the_path_is_what_follows_the_authority(
    root: str, target: str, expected: tuple[str, bytes]
) -> None:
    """The path after the scheme and authority, ``/`` for none, after ``root_path`` as
    uvicorn writes it; read from ``raw_path`` (an authority's ``%2F`` is no slash)."""
    raw = root.encode("ascii") + target.encode("ascii")
    scope = {"type": "http", "root_path": root, "path": root + target, "raw_path": raw}
    changed = origin_form(scope)
    assert expected == (changed["path"], changed["raw_path"])
    assert root + target == scope["path"]  # the server's own scope is left as it was


@pytest.mark.parametrize("target", ["/health", "*", "ftp://h/health", "/http://h/x"])
def test_any_other_target_is_left_as_it_came(target: str) -> None:
    """Origin form, asterisk form and another scheme's URI: the scope itself, unchanged."""
    scope = {"type": "http", "root_path": "", "path": target, "raw_path": target.encode()}
    assert scope is origin_form(scope)
