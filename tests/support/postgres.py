"""A throwaway PostgreSQL server for the tests: initdb and pg_ctl in a temp dir, on 127.0.0.1.

initdb refuses to run as root (CI runs as root), so there the server runs as
the ``postgres`` system user the Debian package creates, via ``runuser``.
Missing binaries skip the tests locally and fail them under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

__all__ = [
    "DML_GRANTS",
    "DatabaseUser",
    "PostgresServer",
    "create_user",
    "require_postgres",
    "running_postgres",
    "running_standby",
]

_USER = "taskforce"


def _is_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_postgres() -> Path:
    """Return the directory of initdb/pg_ctl; skip outside CI, fail under ``CI=true``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    path = Path(found[-1]).parent if found else None
    if path is None and shutil.which("initdb"):
        path = Path(shutil.which("initdb") or "").parent
    if path is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if _is_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        message = "asyncpg is not installed (pip install -e '.[dev]')"
        if _is_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temp dir, owned by an unprivileged user when we are root."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        # Tests need no durability; a benchmark measures the real thing.
        self.durable = durable
        self._as_postgres = os.geteuid() == 0
        # The postgres user must reach the directory: not under a root-only $TMPDIR.
        parent = "/tmp" if self._as_postgres else None
        self.root = Path(tempfile.mkdtemp(prefix="taskforce-pg-", dir=parent))
        self.data = self.root / "data"
        self.port = _free_port()
        self.password = "pw-" + secrets.token_hex(8)
        self._databases = 0
        if self._as_postgres:
            shutil.chown(self.root, user="postgres", group="postgres")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, check=check, capture_output=True, text=True, cwd=self.root, timeout=120
        )

    def init(self) -> None:
        """Create the cluster with a password-protected superuser ``taskforce``."""
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, user="postgres", group="postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            _USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
        )
        pwfile.unlink()

    def start(self) -> None:
        """Start (or restart) the server; returns once it accepts connections."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Stop the server at once, cutting its connections (``-m fast``)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def dsn(self, database: str = "postgres") -> str:
        """The connection URL of ``database`` (with the password)."""
        return f"postgresql://{_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty namespace (a schema, cheaper than a database); return its DSN."""
        self._databases += 1
        name = f"t{self._databases}"
        env = {**os.environ, "PGPASSWORD": self.password}
        subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                _USER,
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                f"CREATE SCHEMA {name}",
            ],
            check=True,
            capture_output=True,
            env=env,
            timeout=60,
        )
        # asyncpg passes unknown DSN parameters on as server settings.
        return self.dsn() + f"?search_path={name}"

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_standby(primary: PostgresServer) -> Iterator[PostgresServer]:
    """A started hot standby of ``primary`` (a base backup of it, in recovery), stopped and
    removed however the block ends; it has the primary's user, password and schemas."""
    standby = PostgresServer(primary.bindir)
    standby.password = primary.password
    try:
        conninfo = f"host=127.0.0.1 port={primary.port} user={_USER} password={primary.password}"
        standby._run(
            "pg_basebackup",
            "-d",
            conninfo,
            "-D",
            str(standby.data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        )
        standby.start()
        yield standby
    finally:
        standby.remove()


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started server, stopped and removed however the block ends."""
    server = PostgresServer(require_postgres())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


#: What the operator guide asks of the store's user once its tables exist.
DML_GRANTS = (
    "GRANT USAGE ON SCHEMA {schema} TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON taskforce_schema_version, taskforce_sessions, "
    "taskforce_mission_records TO {role}",
)


class DatabaseUser(NamedTuple):
    """A login user made by :func:`create_user`: its name and its DSN."""

    role: str
    dsn: str


async def create_user(
    owner_dsn: str, *, grants: Sequence[str] = DML_GRANTS, limit: int = -1
) -> DatabaseUser:
    """A new user on the server and in the schema of ``owner_dsn``, granted ``grants``.

    It is no superuser, so its privileges and ``limit`` (its connection limit) hold.
    Each grant is a statement with ``{role}`` and ``{schema}`` to fill in.
    """
    import asyncpg

    role, password = f"user_{secrets.token_hex(4)}", "pw-" + secrets.token_hex(8)
    owner = await asyncpg.connect(owner_dsn)
    try:
        schema = await owner.fetchval("SELECT current_schema()")
        await owner.execute(
            f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {limit} PASSWORD '{password}'"
        )
        for grant in grants:
            await owner.execute(grant.format(role=role, schema=schema))
    finally:
        await owner.close()
    server = re.sub("//[^@]*@", f"//{role}:{password}@", owner_dsn.split("?")[0], count=1)
    return DatabaseUser(role, f"{server}?search_path={schema}")
