"""The CLI with the PostgreSQL state store: start-up refusal when unreachable, missions when up."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from taskforce.infrastructure.state import PostgresStateStore
from tests.api.test_cli import _env, _taskforce
from tests.support.postgres import create_user
from tests.support.processes import clean_env, free_ports, started

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestStartUp:
    @pytest.mark.parametrize("command", [["serve", "--port", "0"], ["run", "hello"]])
    def test_unreachable_database_exits_2_naming_the_setting(
        self, tmp_path: Path, command: list[str]
    ) -> None:
        """An unreachable database: exit 2, one line naming state.dsn, the DSN never shown."""
        pytest.importorskip("asyncpg")
        dsn = f"postgresql://app:hunter2-secret@127.0.0.1:{_closed_port()}/nodb"
        env = _env(
            tmp_path,
            TASKFORCE_STATE__BACKEND="postgres",
            TASKFORCE_STATE__DSN=dsn,
            TASKFORCE_STATE__TIMEOUT_SECONDS="5",
        )
        proc = _taskforce(*command, env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        lines = proc.stderr.strip().splitlines()
        assert 1 == len(lines), proc.stderr
        assert lines[0].startswith(
            "taskforce: state.dsn (TASKFORCE_STATE__DSN): cannot reach the state database"
        )
        assert "hunter2-secret" not in proc.stderr + proc.stdout
        assert dsn not in proc.stderr + proc.stdout

    @pytest.mark.parametrize("given_in", ["file", "section"])
    def test_an_unreachable_dsn_not_from_its_variable_is_named_where_it_was_given(
        self, tmp_path: Path, given_in: str
    ) -> None:
        """state.dsn from the config file or TASKFORCE_STATE's JSON: the line names that
        source, not TASKFORCE_STATE__DSN, which nobody set; the DSN is still never shown."""
        pytest.importorskip("asyncpg")
        state = {
            "backend": "postgres",
            "dsn": f"postgresql://app:hunter2-secret@127.0.0.1:{_closed_port()}/nodb",
            "timeout_seconds": 5,
        }
        env, args = _env(tmp_path), []
        config = tmp_path / "app.toml"
        if given_in == "section":
            env["TASKFORCE_STATE"] = json.dumps(state)
        else:
            table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in state.items())
            config.write_text(f"[state]\n{table}", encoding="utf-8")
            args = ["--config", str(config)]
        proc = _taskforce("run", "hello", *args, env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        where = f"in {config}" if given_in == "file" else "TASKFORCE_STATE"
        assert [f"taskforce: state.dsn ({where}): cannot reach the state database"] == [
            line.partition(": ConnectionRefusedError")[0] for line in proc.stderr.splitlines()
        ]
        assert "hunter2-secret" not in proc.stderr + proc.stdout

    @pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
    def test_a_stop_signal_during_the_database_check_stops_serve_cleanly(
        self, tmp_path: Path, sent: signal.Signals
    ) -> None:
        """A stop signal while serve waits for the database: exit 0, server.stopped logged.

        The database here accepts the connection and never answers, as one that hangs
        does: the start-up check would wait state.timeout_seconds for it.
        """
        pytest.importorskip("asyncpg")
        with socket.socket() as database:
            database.bind(("127.0.0.1", 0))
            database.listen(8)
            database.settimeout(60)
            env = clean_env(
                tmp_path,
                TASKFORCE_STATE__BACKEND="postgres",
                TASKFORCE_STATE__DSN=f"postgresql://app:pw@127.0.0.1:{database.getsockname()[1]}/db",
                TASKFORCE_STATE__TIMEOUT_SECONDS="600",
            )
            args = ["serve", "--host", "127.0.0.1", "--port", str(free_ports(1))]
            with started(args, env, tmp_path) as child:
                connection, _ = database.accept()  # the check is connecting
                with connection:
                    code = child.stop(sent)
        logged = [json.loads(line) for line in child.stderr().splitlines() if line.startswith("{")]
        assert 0 == code, child.stderr()
        assert [("server.stopped", sent.name)] == [
            (e["event"], e.get("signal")) for e in logged if e["event"] == "server.stopped"
        ]
        assert "Traceback" not in child.stderr()

    @pytest.mark.parametrize("command", [["serve", "--port", "0"], ["run", "hello"]])
    def test_a_refused_libpq_variable_exits_2_naming_it_not_the_dsn(
        self, tmp_path: Path, command: list[str]
    ) -> None:
        """PGSSLMODE=bogus: exit 2, one line naming PGSSLMODE, not state.dsn."""
        pytest.importorskip("asyncpg")
        env = _env(
            tmp_path,
            TASKFORCE_STATE__BACKEND="postgres",
            TASKFORCE_STATE__DSN=f"postgresql://app:hunter2-secret@127.0.0.1:{_closed_port()}/db",
            PGSSLMODE="bogus",
        )
        proc = _taskforce(*command, env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        lines = proc.stderr.strip().splitlines()
        assert 1 == len(lines), proc.stderr
        assert lines[0].startswith(
            "taskforce: cannot reach the state database: "
            "the driver refuses the environment variable PGSSLMODE: "
        )
        assert "state.dsn" not in lines[0]
        assert "hunter2-secret" not in proc.stderr + proc.stdout

    @pytest.mark.parametrize("command", [["serve", "--port", "0"], ["run", "hello"]])
    @pytest.mark.parametrize(
        ("change", "said"),
        [
            (
                "INSERT INTO taskforce_schema_version (version) VALUES (99)",
                "the state database has schema version 99; this taskforce knows version 1",
            ),
            (
                "DELETE FROM taskforce_schema_version",
                "the state tables in schema {schema!r} have no schema version: "
                "taskforce_schema_version is empty; if they hold this taskforce's tables "
                "(version 1), insert it: INSERT INTO taskforce_schema_version (version) "
                "VALUES (1); else move the taskforce_ tables aside and start again to create them",
            ),
        ],
        ids=["newer", "empty"],
    )
    async def test_a_schema_version_it_cannot_use_exits_2_in_one_line(
        self, tmp_path: Path, postgres_dsn: str, command: list[str], change: str, said: str
    ) -> None:
        """A database a newer taskforce migrated, or whose version row is gone: exit 2 and
        one line saying what was found, not a traceback or 'schema version None'."""
        import asyncpg

        async with PostgresStateStore(postgres_dsn):
            pass  # creates the schema
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(change)
        finally:
            await conn.close()
        env = _env(tmp_path, TASKFORCE_STATE__BACKEND="postgres", TASKFORCE_STATE__DSN=postgres_dsn)
        proc = _taskforce(*command, env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        schema = postgres_dsn.rsplit("search_path=", 1)[1]
        assert [
            "taskforce: state: " + said.format(schema=schema)
        ] == proc.stderr.strip().splitlines()

    async def test_a_renamed_column_stops_serve_with_exit_2_in_one_line(
        self, tmp_path: Path, postgres_dsn: str
    ) -> None:
        """A column of the store's an operator renamed: serve stops with exit 2 and one line
        naming the table, the column and what to do (before, it started, and every mission
        failed to save and every session read was a 500)."""
        import asyncpg

        async with PostgresStateStore(postgres_dsn):
            pass  # creates the schema
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute("ALTER TABLE taskforce_sessions RENAME COLUMN records TO counted")
        finally:
            await conn.close()
        env = _env(tmp_path, TASKFORCE_STATE__BACKEND="postgres", TASKFORCE_STATE__DSN=postgres_dsn)
        proc = _taskforce("serve", "--port", "0", env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        schema = postgres_dsn.rsplit("search_path=", 1)[1]
        assert [
            f"taskforce: state: the state tables in schema {schema!r} are not as this taskforce "
            "uses them: taskforce_sessions has no column records (integer); if one was renamed "
            "(this taskforce does not know counted), rename it back: ALTER TABLE "
            f"{schema}.taskforce_sessions RENAME COLUMN ... TO ..."
        ] == proc.stderr.strip().splitlines()

    @pytest.mark.parametrize("command", [["serve", "--port", "0"], ["run", "hello"]])
    async def test_a_user_lacking_privileges_exits_2_naming_the_setting_and_user(
        self, tmp_path: Path, postgres_dsn: str, command: list[str]
    ) -> None:
        """The tables exist and the user of state.dsn may only read them: exit 2 and one line
        naming the setting, the user and what it lacks, never its password; no mission runs."""
        async with PostgresStateStore(postgres_dsn):
            pass  # another user creates the schema
        tables = "taskforce_schema_version, taskforce_sessions, taskforce_mission_records"
        grants = [
            "GRANT USAGE ON SCHEMA {schema} TO {role}",
            f"GRANT SELECT ON {tables} TO {{role}}",
        ]
        user = await create_user(postgres_dsn, grants=grants)
        env = _env(tmp_path, TASKFORCE_STATE__BACKEND="postgres", TASKFORCE_STATE__DSN=user.dsn)
        proc = _taskforce(*command, env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        schema = user.dsn.rsplit("search_path=", 1)[1]
        assert [
            "taskforce: state.dsn (TASKFORCE_STATE__DSN): cannot use the state database: "
            f"the database user {user.role!r} lacks INSERT, UPDATE on taskforce_sessions; "
            f"INSERT, DELETE on taskforce_mission_records (in schema {schema!r}): "
            "grant them, or give state.dsn a user that has them"
        ] == proc.stderr.strip().splitlines()
        password = user.dsn.split("@", 1)[0].rsplit(":", 1)[1]
        assert password not in proc.stderr + proc.stdout

    @pytest.mark.parametrize("command", [["serve", "--port", "0"], ["run", "hello"]])
    async def test_a_read_only_user_exits_2_naming_the_setting(
        self, tmp_path: Path, postgres_dsn: str, command: list[str]
    ) -> None:
        """The user of state.dsn gets read-only transactions: exit 2 and one line naming
        default_transaction_read_only and how to undo it, never the password; no mission
        runs (it used to start and fail every save)."""
        import asyncpg

        async with PostgresStateStore(postgres_dsn):
            pass  # another user creates the schema
        user = await create_user(postgres_dsn)
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f"ALTER ROLE {user.role} SET default_transaction_read_only = on")
        finally:
            await conn.close()
        env = _env(tmp_path, TASKFORCE_STATE__BACKEND="postgres", TASKFORCE_STATE__DSN=user.dsn)
        proc = _taskforce(*command, env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        assert [
            "taskforce: state.dsn (TASKFORCE_STATE__DSN): cannot use the state database: "
            f"the database user {user.role!r} gets read-only transactions: "
            "default_transaction_read_only is on, set for the role: reset it (ALTER ROLE "
            f"{user.role} RESET default_transaction_read_only), or give state.dsn a user "
            "without it"
        ] == proc.stderr.strip().splitlines()
        password = user.dsn.split("@", 1)[0].rsplit(":", 1)[1]
        assert password not in proc.stderr + proc.stdout


class TestRunOnPostgres:
    async def test_two_runs_share_the_session(self, tmp_path: Path, postgres_dsn: str) -> None:
        """Two `taskforce run` processes on one database: the session holds both records."""
        env = _env(tmp_path, TASKFORCE_STATE__BACKEND="postgres", TASKFORCE_STATE__DSN=postgres_dsn)
        ids = []
        for mission in ("first", "second"):
            proc = _taskforce(
                "run", mission, "--session", "shared", "--json", env=env, cwd=tmp_path
            )
            assert 0 == proc.returncode, proc.stderr
            result = json.loads(proc.stdout)
            assert "completed" == result["status"]
            ids.append(result["mission_id"])
            password = postgres_dsn.split(":")[2].split("@")[0]
            assert password not in proc.stderr + proc.stdout
        assert not (tmp_path / "state").exists()
        async with PostgresStateStore(postgres_dsn) as store:
            state = await store.load("shared") or {}
        assert ids == [record["mission_id"] for record in state["missions"]]


class TestCrashLeftovers:
    def test_run_removes_temp_files_and_says_so(self, tmp_path: Path) -> None:
        """Temp files a killed save left are gone after the next start, with a warning line."""
        state = tmp_path / "state"
        state.mkdir()
        (state / "s.json").write_text('{"missions": []}')
        (state / ".s.k1ll3d00.tmp").write_bytes(b"{half a sta")
        proc = _taskforce("run", "hello", "--session", "s", env=_env(tmp_path), cwd=tmp_path)
        assert 0 == proc.returncode, proc.stderr
        assert [] == list(state.glob("*.tmp"))
        (line,) = [json.loads(x) for x in proc.stderr.splitlines() if "tempfiles" in x]
        assert ("state.tempfiles.removed", 1, "warning") == (
            line["event"],
            line["files"],
            line["level"],
        )


class TestLockFiles:
    @pytest.mark.parametrize(
        ("command", "given_in"),
        [(["serve", "--port", "0"], "variable"), (["run", "hello"], "variable"),
         (["run", "hello"], "file")],
    )  # fmt: skip
    def test_a_lock_folder_it_cannot_use_exits_2_naming_the_setting(
        self, tmp_path: Path, command: list[str], given_in: str
    ) -> None:
        """A state_dir whose ``.locks`` is no directory (every write of a session takes a
        lock file in it): exit 2 with one line naming state_dir and where it was given
        (TASKFORCE_STATE_DIR, or the config file), before serving."""
        state = tmp_path / "state"
        state.mkdir()
        (state / ".locks").write_text("")
        env, where = _env(tmp_path), "TASKFORCE_STATE_DIR"
        if given_in == "file":
            config = tmp_path / "app.toml"
            config.write_text(f"state_dir = {json.dumps(str(state))}\n", encoding="utf-8")
            del env["TASKFORCE_STATE_DIR"]
            command, where = [*command, "--config", str(config)], f"in {config}"
        proc = _taskforce(*command, env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        assert [
            f"taskforce: state_dir ({where}): cannot use the state directory: "
            "NotADirectoryError: state_dir/.locks is not a directory"
        ] == [line for line in proc.stderr.splitlines() if not line.startswith("{")]
        assert "server.started" not in proc.stderr


class TestServeOnPostgres:
    def test_serve_records_and_reads_a_session(self, tmp_path: Path, postgres_dsn: str) -> None:
        """`taskforce serve` on PostgreSQL: a mission's record is read back by the session route."""
        port = _closed_port()
        env = _env(tmp_path, TASKFORCE_STATE__BACKEND="postgres", TASKFORCE_STATE__DSN=postgres_dsn)
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskforce", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{base}/health", timeout=1)
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            body = {"mission": "hello", "session_id": "served"}
            done = httpx.post(f"{base}/api/v1/execute", json=body, timeout=30).json()
            session = httpx.get(f"{base}/api/v1/sessions/served", timeout=30)
            metrics = httpx.get(f"{base}/metrics", timeout=30).text
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=30)
        assert 200 == session.status_code
        assert [done["mission_id"]] == [m["mission_id"] for m in session.json()["missions"]]
        assert "taskforce_state_size_bytes_count 1" in metrics
        password = postgres_dsn.split(":")[2].split("@")[0]
        assert password not in stderr + metrics
