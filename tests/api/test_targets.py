"""The Prometheus file_sd targets file: whole-file replacement and shared registration."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from taskforce.api._targets import (
    advertised_host,
    register_target,
    replace_own_targets,
    unregister_target,
)

_OWN = [("127.0.0.1", 9100), ("127.0.0.1", 9101)]


def _read(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


class TestReplaceOwnTargets:
    def test_one_group_per_worker_with_its_label(self, tmp_path: Path) -> None:
        """Each endpoint is a group with a `worker` label, in worker order."""
        path = tmp_path / "targets.json"
        replace_own_targets(path, _OWN, {"1": ("127.0.0.1", 9101), "0": ("127.0.0.1", 9100)})
        assert [
            {"targets": ["127.0.0.1:9100"], "labels": {"worker": "0"}},
            {"targets": ["127.0.0.1:9101"], "labels": {"worker": "1"}},
        ] == _read(path)

    def test_replaces_without_leaving_temporary_files(self, tmp_path: Path) -> None:
        """A rewrite replaces the file whole and leaves nothing else in the folder."""
        path = tmp_path / "targets.json"
        replace_own_targets(path, _OWN, {"0": ("127.0.0.1", 9100)})
        replace_own_targets(path, _OWN, {})
        assert [] == _read(path)
        assert {"targets.json", "targets.json.lock"} == {p.name for p in tmp_path.iterdir()}

    def test_readable_by_all_whatever_the_umask(self, tmp_path: Path) -> None:
        """Prometheus often runs as another user: the file is 0o644 even under umask 077."""
        path = tmp_path / "targets.json"
        old = os.umask(0o077)
        try:
            replace_own_targets(path, _OWN, {"0": ("127.0.0.1", 9100)})
        finally:
            os.umask(old)
        assert 0o644 == stat.S_IMODE(os.stat(path).st_mode)

    def test_two_services_share_one_file(self, tmp_path: Path) -> None:
        """A second replica given the same file adds its workers; stopping takes only its own."""
        path = tmp_path / "targets.json"
        other = [("127.0.0.1", 9200), ("127.0.0.1", 9201)]
        replace_own_targets(path, _OWN, {"0": _OWN[0], "1": _OWN[1]})
        replace_own_targets(path, other, {"0": other[0], "1": other[1]})
        listed = sorted(g["targets"][0] for g in _read(path))  # type: ignore[attr-defined]
        assert ["127.0.0.1:9100", "127.0.0.1:9101", "127.0.0.1:9200", "127.0.0.1:9201"] == listed
        replace_own_targets(path, other, {})  # the second stops
        listed = sorted(g["targets"][0] for g in _read(path))  # type: ignore[attr-defined]
        assert ["127.0.0.1:9100", "127.0.0.1:9101"] == listed

    def test_a_restart_with_fewer_workers_takes_back_the_earlier_ones(self, tmp_path: Path) -> None:
        """A run of four workers failed (its entries kept), the next runs two: the entries of
        workers 2 and 3 go, another service's (base 9102, next to ours) stay."""
        path = tmp_path / "targets.json"
        four = [("127.0.0.1", 9100 + i) for i in range(4)]
        replace_own_targets(path, four, {str(i): four[i] for i in range(4)})
        register_target(path, "127.0.0.1", 9102, "0")  # another service's worker 0
        replace_own_targets(path, _OWN, {"0": _OWN[0], "1": _OWN[1]}, first=_OWN[0])
        listed = sorted((g["labels"]["worker"], g["targets"][0]) for g in _read(path))  # type: ignore[attr-defined]
        assert [
            ("0", "127.0.0.1:9100"),
            ("0", "127.0.0.1:9102"),
            ("1", "127.0.0.1:9101"),
        ] == listed


class TestAdvertisedHost:
    def test_wildcards_become_the_host_name(self) -> None:
        """0.0.0.0 and :: cannot be scraped; the machine's name stands in."""
        assert socket.getfqdn() == advertised_host("0.0.0.0") == advertised_host("::")

    def test_ipv6_is_bracketed(self) -> None:
        """An IPv6 address gets brackets so host:port stays readable."""
        assert "[::1]" == advertised_host("::1")


class TestSharedRegistration:
    def test_processes_add_and_remove_only_their_own_entry(self, tmp_path: Path) -> None:
        """Register two endpoints, re-register one, withdraw one: the other stays."""
        path = tmp_path / "targets.json"
        register_target(path, "127.0.0.1", 9101, "1")
        register_target(path, "127.0.0.1", 9100, "0")
        register_target(path, "127.0.0.1", 9100, "0")
        assert ["0", "1"] == [g["labels"]["worker"] for g in _read(path)]  # type: ignore[attr-defined]
        unregister_target(path, "127.0.0.1", 9100)
        assert [{"targets": ["127.0.0.1:9101"], "labels": {"worker": "1"}}] == _read(path)

    def test_unreadable_file_is_started_afresh(self, tmp_path: Path) -> None:
        """A corrupt file is replaced rather than blocking the registration."""
        path = tmp_path / "targets.json"
        path.write_text("{not json", encoding="utf-8")
        register_target(path, "127.0.0.1", 9100, "0")
        assert [{"targets": ["127.0.0.1:9100"], "labels": {"worker": "0"}}] == _read(path)


class TestForeignWorkersRestart:
    """Workers of uvicorn or gunicorn register themselves; a killed server cannot withdraw."""

    def test_a_restart_with_fewer_workers_withdraws_the_ones_nothing_listens_on(
        self, tmp_path: Path
    ) -> None:
        """Four workers were killed (their entries kept); the first of two new ones registers:
        the entries of ports nothing listens on go, one still held stays, another service's too."""
        path = tmp_path / "targets.json"
        base = _free_base(5)
        with _listening(base + 1), _listening() as another:  # worker 1 still runs
            for worker in range(4):
                register_target(path, "127.0.0.1", base + worker, str(worker))
            other = another.getsockname()[1]
            register_target(path, "127.0.0.1", other, "0")  # another service's worker 0
            register_target(path, "127.0.0.1", base, "0", first=base)
            listed = {(g["labels"]["worker"], g["targets"][0]) for g in _read(path)}  # type: ignore[attr-defined]
        expected = {("0", f"127.0.0.1:{base}"), ("1", f"127.0.0.1:{base + 1}")}
        assert expected | {("0", f"127.0.0.1:{other}")} == listed

    def test_an_entry_whose_port_is_held_stays(self, tmp_path: Path) -> None:
        """A worker of the running server (its port listening) is never withdrawn."""
        path = tmp_path / "targets.json"
        with _listening() as sock:
            port = sock.getsockname()[1]
            register_target(path, "127.0.0.1", port, "0")
            register_target(path, "127.0.0.1", port + 1, "1", first=port)
        assert ["0", "1"] == [g["labels"]["worker"] for g in _read(path)]  # type: ignore[attr-defined]

    def test_a_label_too_long_for_a_port_is_not_read(self, tmp_path: Path) -> None:
        """A label of another writer that is no port offset is kept, and breaks nothing."""
        path = tmp_path / "targets.json"
        huge = "9" * 5000  # int() of it raises ValueError
        path.write_text(
            json.dumps([{"targets": ["127.0.0.1:1"], "labels": {"worker": huge}}]),
            encoding="utf-8",
        )
        register_target(path, "127.0.0.1", 9100, "0", first=9100)
        replace_own_targets(path, _OWN, {"0": _OWN[0]}, first=_OWN[0])
        assert huge in [g["labels"]["worker"] for g in _read(path)]  # type: ignore[attr-defined]


@contextlib.contextmanager
def _listening(port: int = 0) -> Iterator[socket.socket]:
    """A socket listening on ``port`` of 127.0.0.1 (0: a free one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock


def _free_base(count: int) -> int:
    """A port from which ``count`` ports in a row can be bound (nothing listens on them)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count < 65536 and all(_bindable(base + i) for i in range(count)):
            return base
    raise AssertionError("no run of free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
