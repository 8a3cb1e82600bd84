"""Recognising uvicorn's and gunicorn's multi-process supervisors from inside a worker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from taskforce.api._foreign import (
    ForeignSupervisor,
    detect_supervisor,
    own_uvicorn_host,
    own_uvicorn_port,
)


def _fake_proc(tmp_path: Path, *argv: str) -> Path:
    """A /proc stand-in where the parent's command line is ``argv``."""
    folder = tmp_path / str(os.getppid())
    folder.mkdir()
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    return tmp_path


def _call_from(module: str, function: str, body: str, **local: Any) -> Any:
    """Run ``detect_supervisor`` inside a function that looks like it belongs to ``module``."""
    namespace: dict[str, Any] = {"__name__": module, "detect": detect_supervisor, "Path": Path}
    exec(f"def {function}({', '.join(local)}):\n    {body}\n", namespace)
    return namespace[function](**local)


class _Config:
    workers = 3
    host = "0.0.0.0"


class _Cfg:
    workers = 4
    bind = ["10.0.0.5:8000"]


class _Worker:
    cfg = _Cfg()


class TestFromStack:
    def test_uvicorn_subprocess(self, tmp_path: Path) -> None:
        """Inside uvicorn's subprocess_started, workers and host come from its config."""
        found = _call_from(
            "uvicorn._subprocess",
            "subprocess_started",
            "return detect(Path(proc))",
            config=_Config(),
            proc=str(tmp_path),
        )
        assert ForeignSupervisor("uvicorn", 3, "0.0.0.0") == found
        assert found.is_multiprocess

    def test_gunicorn_worker(self, tmp_path: Path) -> None:
        """Inside a gunicorn method, workers and the bind host come from ``self.cfg``."""
        found = _call_from(
            "gunicorn.workers.base",
            "load_wsgi",
            "return detect(Path(proc))",
            self=_Worker(),
            proc=str(tmp_path),
        )
        assert ForeignSupervisor("gunicorn", 4, "10.0.0.5", 8000) == found

    @pytest.mark.parametrize(
        ("bind", "host", "port"),
        [
            (":9000", "0.0.0.0", 9000),  # every interface (gunicorn -b :$PORT)
            ("0.0.0.0", "0.0.0.0", 8000),  # a host alone: port 8000
            ("tcp://0.0.0.0:9000", "0.0.0.0", 9000),
            ("tcp://[::1]:9000", "::1", 9000),
            ("[::]:9000", "::", 9000),
            ("[::1]", "::1", 8000),
            ("LOCALHOST:9000", "localhost", 9000),  # gunicorn lowers the host
            ("unix:/run/taskforce.sock", None, None),
            ("fd://3", None, None),
        ],
    )
    def test_gunicorn_bind_is_read_as_gunicorn_reads_it(
        self, tmp_path: Path, bind: str, host: str | None, port: int | None
    ) -> None:
        """The API's address is the one gunicorn binds, in every form it takes."""
        worker = _Worker()
        worker.cfg = _Cfg()
        worker.cfg.bind = [bind]
        found = _call_from(
            "gunicorn.workers.base",
            "load_wsgi",
            "return detect(Path(proc))",
            self=worker,
            proc=str(tmp_path),
        )
        assert ForeignSupervisor("gunicorn", 4, host, port) == found

    @pytest.mark.parametrize(
        ("workers", "is_reload"),
        [(1, False), (2, True)],  # --reload; with --workers 2 or WEB_CONCURRENCY=2 too
    )
    def test_uvicorn_reload_is_single_process(
        self, tmp_path: Path, workers: int, is_reload: bool
    ) -> None:
        """uvicorn --reload runs one worker through the same function, ignoring any count."""
        config = _Config()
        config.workers = workers
        config.should_reload = is_reload  # type: ignore[attr-defined]
        found = _call_from(
            "uvicorn._subprocess",
            "subprocess_started",
            "return detect(Path(proc))",
            config=config,
            proc=str(tmp_path),
        )
        assert not found.is_multiprocess


class TestFromParent:
    def test_plain_process_is_none(self, tmp_path: Path) -> None:
        """A parent that is a shell is no supervisor."""
        assert detect_supervisor(_fake_proc(tmp_path, "/bin/bash")) is None

    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (
                ("/usr/bin/python3", "/usr/local/bin/uvicorn", "--workers", "2", "a:b"),
                ForeignSupervisor("uvicorn", 2, "127.0.0.1", 8000),
            ),
            (
                ("python", "-m", "uvicorn", "--workers=3", "--host", "0.0.0.0", "--port=81", "a:b"),
                ForeignSupervisor("uvicorn", 3, "0.0.0.0", 81),
            ),
            (
                ("/usr/bin/python3", "/usr/bin/gunicorn", "-w", "4", "-b", "10.1.2.3:80", "a:b"),
                ForeignSupervisor("gunicorn", 4, "10.1.2.3", 80),
            ),
            (("gunicorn: master [a:b]",), ForeignSupervisor("gunicorn", None, None)),
            (
                ("uvicorn", "--workers", "2", "--uds", "/run/t.sock", "a:b"),
                ForeignSupervisor("uvicorn", 2, "127.0.0.1", None),
            ),
        ],
    )
    def test_recognised_parents(
        self, tmp_path: Path, argv: tuple[str, ...], expected: ForeignSupervisor
    ) -> None:
        """uvicorn with --workers and any gunicorn master are recognised from the parent."""
        assert expected == detect_supervisor(_fake_proc(tmp_path, *argv))

    def test_uvicorn_without_workers_flag_is_not_a_supervisor(self, tmp_path: Path) -> None:
        """Plain `uvicorn app` runs the app in the same process: not a foreign supervisor."""
        assert detect_supervisor(_fake_proc(tmp_path, "python", "-m", "uvicorn", "a:b")) is None

    def test_uvicorn_reload_with_workers_flag_is_not_a_supervisor(self, tmp_path: Path) -> None:
        """`uvicorn --reload --workers 2` runs one process: uvicorn ignores the flag."""
        proc = _fake_proc(tmp_path, "uvicorn", "--reload", "--workers", "2", "a:b")
        assert detect_supervisor(proc) is None

    def test_unknown_worker_count_counts_as_many(self) -> None:
        """A gunicorn whose worker count cannot be read is treated as multi-process."""
        assert ForeignSupervisor("gunicorn", None).is_multiprocess

    def test_gunicorn_with_one_worker_counts_as_many(self) -> None:
        """gunicorn -w 1 can grow at run time (TTIN): its shared port never serves metrics."""
        assert ForeignSupervisor("gunicorn", 1).is_multiprocess
        assert not ForeignSupervisor("uvicorn", 1).is_multiprocess


class TestOwnUvicornHost:
    @pytest.mark.parametrize(
        ("argv", "environ", "host"),
        [
            (["/venv/bin/uvicorn", "--factory", "--host", "0.0.0.0", "a:b"], {}, "0.0.0.0"),
            (["/venv/bin/uvicorn", "--host=10.0.0.7", "a:b"], {}, "10.0.0.7"),
            (["/x/uvicorn/__main__.py", "a:b"], {"UVICORN_HOST": "::"}, "::"),
            (["/venv/bin/uvicorn", "a:b"], {}, None),  # uvicorn's default: the fallback
            (["/venv/bin/taskforce", "serve", "--host", "0.0.0.0"], {}, None),  # not uvicorn
        ],
    )
    def test_the_host_a_plain_uvicorn_serves_on(
        self, argv: list[str], environ: dict[str, str], host: str | None
    ) -> None:
        """A single uvicorn's metrics listener follows its --host (or UVICORN_HOST)."""
        assert host == own_uvicorn_host(argv, environ)


class TestOwnUvicornPort:
    @pytest.mark.parametrize(
        ("argv", "environ", "port"),
        [
            (["/venv/bin/uvicorn", "--factory", "--port", "9000", "a:b"], {}, 9000),
            (["/x/uvicorn/__main__.py", "a:b"], {"UVICORN_PORT": "9001"}, 9001),
            (["/venv/bin/uvicorn", "a:b"], {}, 8000),  # uvicorn's default
            (["/venv/bin/uvicorn", "--uds", "/run/t.sock", "a:b"], {}, None),
            (["/venv/bin/uvicorn", "--fd=3", "a:b"], {}, None),
            (["/venv/bin/uvicorn", "a:b"], {"UVICORN_UDS": "/run/t.sock"}, None),
            (["/venv/bin/taskforce", "serve", "--port", "9000"], {}, None),  # not uvicorn
        ],
    )
    def test_the_port_a_plain_uvicorn_serves_on(
        self, argv: list[str], environ: dict[str, str], port: int | None
    ) -> None:
        """The API's TCP port under a single uvicorn; none for a socket it was handed."""
        assert port == own_uvicorn_port(argv, environ)
