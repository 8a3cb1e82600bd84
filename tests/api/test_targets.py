"""The Prometheus file_sd targets file: whole-file replacement and shared registration."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from taskforce.api._targets import (
    SERVICE_LABEL,
    advertised_host,
    register_target,
    replace_own_targets,
    service_name,
    unregister_target,
)

_OWN = [("127.0.0.1", 9100), ("127.0.0.1", 9101)]
#: The label of a discovered target that Prometheus scrapes it at (its own name for it).
_PATH_LABEL = "__metrics_path__"


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

    @pytest.mark.parametrize("write", ["serve", "foreign worker"])
    def test_a_metrics_path_of_its_own_is_in_each_entry(self, tmp_path: Path, write: str) -> None:
        """A metrics.path other than Prometheus' default /metrics is named in each entry
        (`__metrics_path__`, which wins over the job's metrics_path), so a job that names
        no path scrapes the one the service serves; the default adds no label."""
        path = tmp_path / "targets.json"
        for metrics_path in ("/internal/metrics", "/metrics"):
            if write == "serve":
                replace_own_targets(path, _OWN[:1], {"0": _OWN[0]}, metrics_path=metrics_path)
            else:
                register_target(path, *_OWN[0], "0", metrics_path=metrics_path)
            groups = _read(path)
            assert isinstance(groups, list)
            assert [None if metrics_path == "/metrics" else metrics_path] == [
                g["labels"].get(_PATH_LABEL) for g in groups
            ]

    def test_replaces_without_leaving_temporary_files(self, tmp_path: Path) -> None:
        """A rewrite replaces the file whole and leaves nothing else in the folder."""
        path = tmp_path / "targets.json"
        replace_own_targets(path, _OWN, {"0": ("127.0.0.1", 9100)})
        replace_own_targets(path, _OWN, {})
        assert [] == _read(path)
        assert {"targets.json", "targets.json.lock"} == {p.name for p in tmp_path.iterdir()}

    @pytest.mark.parametrize("write", ["serve", "foreign worker"])
    def test_a_crashs_new_file_is_removed_and_logged_and_no_other(
        self, tmp_path: Path, write: str
    ) -> None:
        """A new file of the targets file's that a crash left (between its write and its
        rename) is removed by the first write, as taskforce serve and a worker of uvicorn
        or gunicorn make at start-up, and logged; other files' and other names are kept,
        and so is anything of its name that is no regular file."""
        path = tmp_path / "targets.json"
        leftover = tmp_path / ".targets.json.0123456789abcdef.tmp"
        leftover.write_text("[{half a fi", encoding="utf-8")
        kept = {
            ".other.json.0123456789abcdef.tmp",  # another targets file's
            ".targets.json.backup.tmp",  # not a name the writes give
            "targets.json.0123456789abcdef.tmp",
            ".targets.json.0123456789ABCDEF.tmp",
        }
        for name in kept:
            (tmp_path / name).write_text("x", encoding="utf-8")
        fifo = ".targets.json.fedcba9876543210.tmp"
        os.mkfifo(tmp_path / fifo)
        with capture_logs() as logs:
            if write == "serve":
                replace_own_targets(path, _OWN, {"0": ("127.0.0.1", 9100)})
            else:
                register_target(path, "127.0.0.1", 9100, "0")
        assert {"targets.json", "targets.json.lock", fifo, *kept} == {
            p.name for p in tmp_path.iterdir()
        }
        assert [("metrics.targets.tempfiles.removed", "warning", 1, 11)] == [
            (log["event"], log["log_level"], log["files"], log["bytes"])
            for log in logs
            if "tempfiles" in log["event"]
        ]

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


class TestServiceOwnership:
    """A service's entries carry its name: a restart on another metrics.port takes them back."""

    _A = "box-a/127.0.0.1:8000"

    def test_a_restart_on_another_metrics_port_takes_back_the_earlier_entries(
        self, tmp_path: Path
    ) -> None:
        """A run on 9100-9101 was killed (its entries kept); started again on 9300, the
        service lists only 9300; another API port's entries, another machine's and one
        written by hand stay. Before, 9100 and 9101 stayed listed, down for good."""
        path = tmp_path / "targets.json"
        replace_own_targets(path, _OWN, {"0": _OWN[0], "1": _OWN[1]}, service=self._A)
        others = {
            "box-a/127.0.0.1:8001": ("127.0.0.1", 9200),  # another API port
            "box-b/127.0.0.1:8000": ("127.0.0.2", 9100),  # another machine's
        }
        for service, endpoint in others.items():
            replace_own_targets(path, [endpoint], {"0": endpoint}, service=service)
        hand = {"targets": ["127.0.0.1:9500"], "labels": {"job": "node"}}
        path.write_text(json.dumps([*_read(path), hand]), encoding="utf-8")  # type: ignore[misc]
        new = ("127.0.0.1", 9300)
        replace_own_targets(path, [new], {"0": new}, first=new, service=self._A)
        listed = {(g["labels"].get(SERVICE_LABEL), g["targets"][0]) for g in _read(path)}  # type: ignore[attr-defined]
        kept = {(s, f"{h}:{p}") for s, (h, p) in others.items()} | {(None, "127.0.0.1:9500")}
        assert kept | {(self._A, "127.0.0.1:9300")} == listed
        replace_own_targets(path, [new], {}, first=new, service=self._A)  # stopped
        listed = {(g["labels"].get(SERVICE_LABEL), g["targets"][0]) for g in _read(path)}  # type: ignore[attr-defined]
        assert kept == listed

    def test_each_entry_names_its_service(self, tmp_path: Path) -> None:
        """The label Prometheus drops after discovery, so no series changes."""
        path = tmp_path / "targets.json"
        replace_own_targets(path, _OWN[:1], {"0": _OWN[0]}, service=self._A)
        labels = {"worker": "0", SERVICE_LABEL: self._A}
        assert [{"targets": ["127.0.0.1:9100"], "labels": labels}] == _read(path)
        assert SERVICE_LABEL.startswith("__")

    def test_the_name_is_the_machine_and_the_api_address(self) -> None:
        """Two containers serving port 8000 each, sharing one file, have names of their own."""
        assert f"{socket.gethostname()}/0.0.0.0:8000" == service_name("0.0.0.0", 8000)
        assert f"{socket.gethostname()}/[::1]:8000" == service_name("::1", 8000)


class TestHandEdits:
    """Groups another writer or a person added, of any shape, are kept and break nothing."""

    _ODD = [
        {"targets": ["other:9100"], "labels": None},
        {"targets": ["other:9101"], "labels": ["x"]},
        {"labels": {"worker": "7"}},
        {"targets": [5], "labels": {"worker": "0"}},
        {"targets": "127.0.0.1:9100"},
        "not a group",
    ]

    def test_odd_groups_are_kept_by_every_writer(self, tmp_path: Path) -> None:
        """Before, a group with labels null or no targets made the write raise (the
        supervisor's start with it), and a non-object item was dropped."""
        path = tmp_path / "targets.json"
        path.write_text(json.dumps(self._ODD), encoding="utf-8")
        replace_own_targets(path, _OWN, {"0": _OWN[0]}, first=_OWN[0], service="b/h:1")
        register_target(path, "127.0.0.1", 9101, "1", first=9100)
        unregister_target(path, "127.0.0.1", 9101)
        replace_own_targets(path, _OWN, {}, first=_OWN[0], service="b/h:1")
        listed = _read(path)
        assert len(self._ODD) == len(listed)  # type: ignore[arg-type]
        assert all(group in listed for group in self._ODD)  # type: ignore[operator]

    def test_a_group_of_several_targets_keeps_the_others(self, tmp_path: Path) -> None:
        """A hand-written group listing one of this service's ports among others loses only
        that target. Before, the whole group went, the other machine's target with it."""
        path = tmp_path / "targets.json"
        group = {"targets": ["127.0.0.1:9100", "other:9100"], "labels": {"job": "x"}}
        path.write_text(json.dumps([group]), encoding="utf-8")
        replace_own_targets(path, _OWN, {"0": _OWN[0]})
        assert {"targets": ["other:9100"], "labels": {"job": "x"}} in _read(path)  # type: ignore[operator]
        register_target(path, "127.0.0.1", 9100, "0")
        unregister_target(path, "127.0.0.1", 9100)
        assert [{"targets": ["other:9100"], "labels": {"job": "x"}}] == _read(path)


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

    @pytest.mark.parametrize("text", ['[{"targets": ["other:1"]},', "{}", "\udcff"])
    def test_a_file_that_is_no_json_list_is_left_as_it_is(self, tmp_path: Path, text: str) -> None:
        """A hand edit saved half way: the write fails (logged by the caller), the file stays.

        Before, it was replaced by this writer's entry alone: every other service's
        entries (and the hand-written ones) vanished from Prometheus without an alert.
        """
        path = tmp_path / "targets.json"
        data = text.encode("utf-8", "surrogateescape")
        path.write_bytes(data)
        own = [("127.0.0.1", 9100)]
        with pytest.raises(OSError, match="not a targets file"):
            register_target(path, "127.0.0.1", 9100, "0")
        with pytest.raises(OSError, match="not a targets file"):
            replace_own_targets(path, own, {"0": own[0]}, service="box/127.0.0.1:8000")
        with pytest.raises(OSError, match="not a targets file"):
            unregister_target(path, "127.0.0.1", 9100)
        assert data == path.read_bytes()

    def test_an_empty_file_is_started(self, tmp_path: Path) -> None:
        """An empty file (as start-up accepts it) is a file with no entries yet."""
        path = tmp_path / "targets.json"
        path.write_text(" \n", encoding="utf-8")
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

    def test_a_restart_on_another_port_withdraws_the_services_entries_nothing_listens_on(
        self, tmp_path: Path
    ) -> None:
        """A server killed on ports base, base + 1 (its entries kept) starts again on other
        ports: its first worker withdraws the entry nothing listens on, keeps the one still
        held, and another service's. Before, both stayed, one down for good."""
        path = tmp_path / "targets.json"
        base, service = _free_base(3), "box/127.0.0.1:8000"
        with _listening(base + 1), _listening() as new:  # the old worker 1 still drains
            for worker in (0, 1):
                register_target(path, "127.0.0.1", base + worker, str(worker), service=service)
            register_target(path, "127.0.0.1", base + 2, "0", service="box/127.0.0.1:8001")
            port = new.getsockname()[1]
            register_target(path, "127.0.0.1", port, "0", first=port, service=service)
        listed = {g["targets"][0] for g in _read(path)}  # type: ignore[attr-defined]
        assert {f"127.0.0.1:{p}" for p in (base + 1, base + 2, port)} == listed
        assert [service] == [
            g["labels"][SERVICE_LABEL]
            for g in _read(path)  # type: ignore[attr-defined]
            if g["targets"] == [f"127.0.0.1:{port}"]
        ]

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
