"""PostgresStateStore against a real server: its schema, its version, its errors and secrets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from taskforce.application._mission_support import store_failure_fields
from taskforce.application.sweep import SessionSweeper
from taskforce.core.interfaces.state import AppendResult, SessionExpiry, StateStoreHealth
from taskforce.errors import (
    ConfigurationError,
    StateCorruptedError,
    StateStoreError,
    StateStorePermissionError,
    StateStoreUnavailableError,
)
from taskforce.infrastructure.state import FileStateStore, PostgresStateStore
from taskforce.infrastructure.state import _postgres_schema as schema_module
from taskforce.infrastructure.state._common import StateLimits
from taskforce.infrastructure.state._postgres_schema import APPEND_RECORD, SCHEMA_VERSION
from taskforce.infrastructure.state._postgres_store import _ABANDONED, _in_own_context
from tests.support.freezable_relay import FreezableRelay
from tests.support.postgres import PostgresServer, create_user, running_standby
from tests.support.processes import free_ports

pytestmark = pytest.mark.integration


async def _fetch(dsn: str, query: str) -> list[tuple[object, ...]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


class TestSchema:
    async def test_created_once_by_replicas_starting_together(self, postgres_dsn: str) -> None:
        """Five stores opening at once create the schema once, with version 1 recorded."""
        stores = [PostgresStateStore(postgres_dsn, pool_size=1) for _ in range(5)]
        await asyncio.gather(*(store.open() for store in stores))
        await asyncio.gather(*(store.aclose() for store in stores))
        tables = await _fetch(
            postgres_dsn,
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name LIKE 'taskforce_%' ORDER BY 1",
        )
        assert [
            ("taskforce_mission_records",),
            ("taskforce_schema_version",),
            ("taskforce_sessions",),
        ] == tables
        assert [(SCHEMA_VERSION,)] == await _fetch(
            postgres_dsn, "SELECT version FROM taskforce_schema_version"
        )

    async def test_reopening_keeps_the_data(self, postgres_dsn: str) -> None:
        """A second start (a new store on the same database) finds the sessions of the first."""
        async with PostgresStateStore(postgres_dsn) as first:
            await first.append("kept", {"n": 1})
        async with PostgresStateStore(postgres_dsn) as second:
            assert {"missions": [{"n": 1}]} == await second.load("kept")

    async def test_the_sweep_finds_expired_sessions_through_an_index(
        self, postgres_dsn: str
    ) -> None:
        """Among 20,000 live sessions, the sweep's statement reaches the 3 expired ones through
        the index on updated_at the schema creates, not by reading the whole table."""
        import asyncpg

        async with PostgresStateStore(postgres_dsn):
            pass
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(
                "INSERT INTO taskforce_sessions (session_id, updated_at) "
                "SELECT 'live-' || n, now() FROM generate_series(1, 20000) AS n "
                "UNION ALL SELECT 'old-' || n, now() - interval '2 days' "
                "FROM generate_series(1, 3) AS n"
            )
            await conn.execute("ANALYZE taskforce_sessions")
            plan = await conn.fetchval(
                "EXPLAIN (FORMAT JSON) " + schema_module.EXPIRE_SESSIONS, 3600.0, 100
            )
        finally:
            await conn.close()
        assert "taskforce_sessions_updated_at" in str(plan)
        assert "Seq Scan" not in str(plan)

    async def test_a_start_blocked_by_a_lock_on_a_table_says_it_checks_the_schema(
        self, postgres_dsn: str
    ) -> None:
        """A start on a schema that exists only checks it: when another client's lock on a
        table holds that check past state.timeout_seconds, the line says it could not
        create or check the schema, not that it could not create it, and writes nothing."""
        import asyncpg

        async with PostgresStateStore(postgres_dsn):
            pass
        holder = await asyncpg.connect(postgres_dsn)
        try:
            async with holder.transaction():
                await holder.execute("LOCK TABLE taskforce_schema_version IN ACCESS EXCLUSIVE MODE")
                with pytest.raises(StateStoreUnavailableError) as info:
                    await PostgresStateStore(postgres_dsn, timeout_seconds=1).open()
        finally:
            await holder.close()
        assert str(info.value).startswith("cannot create or check the state schema: ")
        assert "no answer within 1 s (state.timeout_seconds)" in str(info.value)
        assert [(SCHEMA_VERSION,)] == await _fetch(
            postgres_dsn, "SELECT version FROM taskforce_schema_version"
        )

    async def test_a_newer_schema_without_a_table_of_ours_is_refused_by_its_version(
        self, postgres_dsn: str
    ) -> None:
        """A newer release's schema that renamed a table and put a view in its place (a
        rollback after an upgrade): the service's user, which may not CREATE, is told the
        version, not that it lacks CREATE for a first start or to move a view aside; the
        owner too, and neither creates a table."""
        async with PostgresStateStore(postgres_dsn):
            pass
        user = await create_user(postgres_dsn)

        async def refused_by_its_version() -> None:
            for dsn in (user.dsn, postgres_dsn):
                with pytest.raises(StateStoreError) as info:
                    await PostgresStateStore(dsn).open()
                assert not isinstance(info.value, StateStorePermissionError), str(info.value)
                assert (
                    "the state database has schema version 2; this taskforce knows version 1"
                ) == str(info.value)

        await _fetch(postgres_dsn, "INSERT INTO taskforce_schema_version (version) VALUES (2)")
        await _fetch(
            postgres_dsn, "ALTER TABLE taskforce_mission_records RENAME TO taskforce_records_v2"
        )
        await refused_by_its_version()
        await _fetch(
            postgres_dsn,
            "CREATE VIEW taskforce_mission_records AS SELECT * FROM taskforce_records_v2",
        )
        await refused_by_its_version()
        assert [("v",)] == await _fetch(
            postgres_dsn,
            "SELECT relkind::text FROM pg_class "
            "WHERE oid = to_regclass('taskforce_mission_records')",
        )

    async def test_newer_schema_is_refused(self, postgres_dsn: str) -> None:
        """A database migrated by a newer taskforce stops this one with a clear error."""
        async with PostgresStateStore(postgres_dsn):
            pass
        import asyncpg

        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute("INSERT INTO taskforce_schema_version (version) VALUES (99)")
        finally:
            await conn.close()
        with pytest.raises(StateStoreError, match="schema version 99"):
            await PostgresStateStore(postgres_dsn).open()

    async def test_an_empty_version_table_says_what_was_found_and_what_to_do(
        self, postgres_dsn: str
    ) -> None:
        """The tables exist but taskforce_schema_version has no row: start-up stops saying
        so and how to mend it, not 'schema version None'; the tables are left as they are."""
        async with PostgresStateStore(postgres_dsn) as store:
            await store.append("kept", {"n": 1})
        await _fetch(postgres_dsn, "DELETE FROM taskforce_schema_version")
        store = PostgresStateStore(postgres_dsn)
        with pytest.raises(StateStoreError) as info:
            await store.open()
        assert (
            f"the state tables in schema {_schema(postgres_dsn)!r} have no schema version: "
            "taskforce_schema_version is empty; if they hold this taskforce's tables "
            f"(version {SCHEMA_VERSION}), insert it: INSERT INTO taskforce_schema_version "
            f"(version) VALUES ({SCHEMA_VERSION}); else move the taskforce_ tables aside "
            "and start again to create them"
        ) == str(info.value)
        assert "None" not in str(info.value)
        assert None is store._pool
        assert [(1,)] == await _fetch(postgres_dsn, "SELECT count(*) FROM taskforce_sessions")
        assert [] == await _fetch(postgres_dsn, "SELECT * FROM taskforce_schema_version")

    @pytest.mark.parametrize("kept", ["taskforce_sessions", "taskforce_mission_records"])
    async def test_state_tables_without_a_version_table_are_not_taken_for_version_1(
        self, postgres_dsn: str, kept: str
    ) -> None:
        """State tables whose version table is gone (dropped, or not restored with them):
        start-up stops saying so and how to mend it, as for an empty one; it creates no
        version table, so none of them is taken for this version's."""
        async with PostgresStateStore(postgres_dsn) as store:
            await store.append("kept", {"n": 1})
        gone = {"taskforce_sessions", "taskforce_mission_records"} - {kept}
        await _fetch(postgres_dsn, f"DROP TABLE taskforce_schema_version, {gone.pop()} CASCADE")
        store = PostgresStateStore(postgres_dsn)
        with pytest.raises(StateStoreError) as info:
            await store.open()
        assert str(info.value).startswith(
            f"the state tables in schema {_schema(postgres_dsn)!r} have no schema version: "
            "taskforce_schema_version is missing; if they hold this taskforce's tables "
            f"(version {SCHEMA_VERSION}), create it: CREATE TABLE taskforce_schema_version "
        )
        assert None is store._pool
        regclass = "SELECT to_regclass('taskforce_schema_version') IS NULL"
        assert [(True,)] == await _fetch(postgres_dsn, regclass)
        assert [(1,)] == await _fetch(postgres_dsn, f"SELECT count(*) FROM {kept}")

    async def test_the_remedy_for_a_missing_version_table_is_enough(
        self, postgres_dsn: str
    ) -> None:
        """Running the statements the refusal gives brings the tables back into use."""
        async with PostgresStateStore(postgres_dsn) as store:
            await store.append("kept", {"n": 1})
        await _fetch(postgres_dsn, "DROP TABLE taskforce_schema_version")
        with pytest.raises(StateStoreError) as info:
            await PostgresStateStore(postgres_dsn).open()
        remedy = str(info.value).split("create it: ", 1)[1].split("; else ", 1)[0]
        import asyncpg

        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(remedy)
        finally:
            await conn.close()
        async with PostgresStateStore(postgres_dsn) as store:
            assert {"missions": [{"n": 1}]} == await store.load("kept")


async def _changed(dsn: str, *statements: str) -> None:
    """A store's first start on ``dsn`` (one session recorded), then ``statements``."""
    async with PostgresStateStore(dsn) as store:
        await store.append("kept", {"n": 1})
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _stopped(dsn: str) -> str:
    """The message a start-up on ``dsn`` stops with; no pool is left open."""
    store = PostgresStateStore(dsn)
    with pytest.raises(StateStoreError) as info:
        await store.open()
    assert None is store._pool
    assert not isinstance(info.value, StateStoreUnavailableError)
    return str(info.value)


_NOT_AS_USED = "the state tables in schema {schema!r} are not as this taskforce uses them: "


class TestSchemaShape:
    """Tables of the store's names it cannot use stop start-up with what is wrong and what
    to do, instead of starting and failing every call that touches them."""

    @pytest.mark.parametrize(
        ("statements", "said"),
        [
            (
                ["ALTER TABLE taskforce_sessions RENAME COLUMN records TO record_count"],
                "taskforce_sessions has no column records (integer); if one was renamed "
                "(this taskforce does not know record_count), rename it back: ALTER TABLE "
                "{schema}.taskforce_sessions RENAME COLUMN ... TO ...",
            ),
            (
                ["ALTER TABLE taskforce_sessions DROP COLUMN has_missions"],
                "taskforce_sessions has no column has_missions (boolean); move the taskforce_ "
                "tables aside (ALTER ... SET SCHEMA, or RENAME) or name another schema with "
                "?search_path= in state.dsn, and start again to create them",
            ),
            (
                [
                    "ALTER TABLE taskforce_mission_records "
                    "ALTER COLUMN record TYPE jsonb USING record::jsonb"
                ],
                "taskforce_mission_records.record is jsonb, not text: ALTER TABLE "
                "{schema}.taskforce_mission_records ALTER COLUMN record TYPE text "
                "USING record::text",
            ),
            (
                ["ALTER TABLE taskforce_sessions ALTER COLUMN session_id TYPE varchar(8)"],
                "taskforce_sessions.session_id is character varying(8), not text: ALTER TABLE "
                "{schema}.taskforce_sessions ALTER COLUMN session_id TYPE text "
                "USING session_id::text",
            ),
            (
                ["ALTER TABLE taskforce_sessions ALTER COLUMN state DROP DEFAULT"],
                "taskforce_sessions.state has no default, which an insert leaves it to: "
                "ALTER TABLE {schema}.taskforce_sessions ALTER COLUMN state SET DEFAULT '{{}}'",
            ),
            (
                ["ALTER TABLE taskforce_mission_records ALTER COLUMN seq DROP IDENTITY"],
                "taskforce_mission_records.seq has no default, which an insert leaves it to: "
                "ALTER TABLE {schema}.taskforce_mission_records ALTER COLUMN seq ADD GENERATED "
                "ALWAYS AS IDENTITY, then restart it past the highest seq",
            ),
            (
                [
                    "ALTER TABLE taskforce_sessions ADD COLUMN tenant text NOT NULL DEFAULT 'a'",
                    "ALTER TABLE taskforce_sessions ALTER COLUMN tenant DROP DEFAULT",
                ],
                "taskforce_sessions.tenant is NOT NULL without a default, and this taskforce "
                "does not write it: ALTER TABLE {schema}.taskforce_sessions ALTER COLUMN "
                "tenant DROP NOT NULL",
            ),
            (
                [
                    "ALTER TABLE taskforce_mission_records "
                    "DROP CONSTRAINT taskforce_mission_records_session_id_fkey",
                    "ALTER TABLE taskforce_sessions DROP CONSTRAINT taskforce_sessions_pkey",
                ],
                "taskforce_sessions has no primary key on session_id, which every append and "
                "save needs: ALTER TABLE {schema}.taskforce_sessions ADD PRIMARY KEY "
                "(session_id); taskforce_mission_records has no foreign key to "
                "taskforce_sessions with ON DELETE CASCADE, so a deleted or expired session "
                "would leave its records to the next session of its id: delete the records "
                "whose session is gone, then ALTER TABLE {schema}.taskforce_mission_records "
                "ADD FOREIGN KEY (session_id) REFERENCES {schema}.taskforce_sessions "
                "(session_id) ON DELETE CASCADE",
            ),
            (
                ["ALTER TABLE taskforce_schema_version ALTER COLUMN version TYPE text"],
                "taskforce_schema_version.version is text, not integer: ALTER TABLE "
                "{schema}.taskforce_schema_version ALTER COLUMN version TYPE integer "
                "USING version::integer",
            ),
        ],
        ids=[
            "renamed",
            "dropped",
            "jsonb",
            "bounded",
            "no-default",
            "no-identity",
            "own-column",
            "no-keys",
            "version-text",
        ],
    )
    async def test_a_table_not_as_the_store_uses_it_stops_start_up(
        self, postgres_dsn: str, statements: list[str], said: str
    ) -> None:
        """A column renamed, dropped, of another type or without its default, one of the
        operator's own that an insert fails on, the session key or the records' cascade
        gone: start-up stops naming each, with the statement that mends it; nothing is
        written (before, it started and every append, save or load failed)."""
        await _changed(postgres_dsn, *statements)
        schema = _schema(postgres_dsn)
        assert (_NOT_AS_USED + said).format(schema=schema) == await _stopped(postgres_dsn)
        assert [(1,)] == await _fetch(postgres_dsn, "SELECT count(*) FROM taskforce_sessions")

    async def test_the_remedy_given_is_enough(self, postgres_dsn: str) -> None:
        """Running the statement a refusal gives brings the tables back into use."""
        await _changed(
            postgres_dsn,
            "ALTER TABLE taskforce_mission_records "
            "ALTER COLUMN record TYPE jsonb USING record::jsonb",
        )
        remedy = (await _stopped(postgres_dsn)).split("not text: ", 1)[1]
        await _fetch(postgres_dsn, remedy)
        async with PostgresStateStore(postgres_dsn) as store:
            await store.append("kept", {"text": "a\u0000b"})
            assert {"missions": [{"n": 1}, {"text": "a\u0000b"}]} == await store.load("kept")

    async def test_a_view_of_a_tables_name_is_not_taken_for_it(self, postgres_dsn: str) -> None:
        """A view where the search path finds taskforce_sessions is named for what it is."""
        await _changed(
            postgres_dsn,
            "ALTER TABLE taskforce_sessions RENAME TO kept_sessions",
            "CREATE VIEW taskforce_sessions AS SELECT * FROM kept_sessions",
        )
        assert (
            f"the state table taskforce_sessions in schema {_schema(postgres_dsn)!r} is a view, "
            "not a table: move the taskforce_ tables aside (ALTER ... SET SCHEMA, or RENAME) or "
            "name another schema with ?search_path= in state.dsn, and start again to create them"
        ) == await _stopped(postgres_dsn)

    async def test_a_foreign_table_of_a_tables_name_is_not_taken_for_it(
        self, postgres_dsn: str
    ) -> None:
        """A foreign table of the records' name (no table of its own, no cascade from the
        sessions): start-up stops naming it, not the first append's foreign server."""
        schema = _schema(postgres_dsn)
        await _changed(
            postgres_dsn,
            f"CREATE EXTENSION IF NOT EXISTS file_fdw SCHEMA {schema}",
            f"CREATE SERVER {schema}_files FOREIGN DATA WRAPPER file_fdw",
            "DROP TABLE taskforce_mission_records",
            "CREATE FOREIGN TABLE taskforce_mission_records (session_id text, seq bigint, "
            f"record text, size_bytes integer, created_at timestamptz) SERVER {schema}_files "
            "OPTIONS (filename '/nonexistent')",
        )
        assert (await _stopped(postgres_dsn)).startswith(
            f"the state table taskforce_mission_records in schema {schema!r} is a foreign "
            "table, not a table: "
        )

    async def test_tables_split_over_the_search_path_are_refused(self, postgres_dsn: str) -> None:
        """A schema first in the search path holding a stray taskforce_sessions: the store
        would write sessions there and records beside the other one, each append failing on
        the records' foreign key. Start-up names where it found each table."""
        schema = _schema(postgres_dsn)
        await _changed(
            postgres_dsn,
            f"CREATE SCHEMA {schema}_first",
            f"CREATE TABLE {schema}_first.taskforce_sessions "
            "(LIKE taskforce_sessions INCLUDING ALL)",
        )
        split = postgres_dsn.replace(
            f"search_path={schema}", f"search_path={schema}_first,{schema}"
        )
        assert (
            "the search path finds the state tables in different schemas "
            f"(taskforce_schema_version, taskforce_mission_records in {schema!r}; "
            f"taskforce_sessions in '{schema}_first'): the store needs all three in one; move "
            "them together, or name that schema alone with ?search_path= in state.dsn"
        ) == await _stopped(split)

    async def test_a_dropped_sessions_table_stops_start_up_on_the_cascade_it_took(
        self, postgres_dsn: str
    ) -> None:
        """DROP TABLE taskforce_sessions CASCADE takes the records' foreign key with it:
        start-up stops on the cascade it cannot restore, and leaves the schema as it was,
        the table it would create included (before, it created the table and then an
        expired session's records came back in the next session of its id)."""
        await _changed(postgres_dsn, "DROP TABLE taskforce_sessions CASCADE")
        said = await _stopped(postgres_dsn)
        assert said.startswith(
            _NOT_AS_USED.format(schema=_schema(postgres_dsn))
            + "taskforce_mission_records has no foreign key to taskforce_sessions with ON "
            "DELETE CASCADE"
        )
        regclass = "SELECT to_regclass('taskforce_sessions') IS NULL"
        assert [(True,)] == await _fetch(postgres_dsn, regclass)

    async def test_row_level_security_that_applies_to_the_user_is_refused(
        self, postgres_dsn: str
    ) -> None:
        """Row level security on the sessions (no policy: it hides every row and refuses
        every write) stops a user it applies to, naming the user; the owner, whom it
        spares, still starts."""
        await _changed(postgres_dsn, "ALTER TABLE taskforce_sessions ENABLE ROW LEVEL SECURITY")
        user = await create_user(postgres_dsn)
        refused = await _refused(user.dsn)
        schema = _schema(postgres_dsn)
        assert (
            f"cannot use the state database: the database user {user.role!r} is subject to row "
            f"level security on taskforce_sessions (in schema {schema!r}), which hides rows "
            "from the store and refuses its writes: disable it (ALTER TABLE "
            f"{schema}.taskforce_sessions DISABLE ROW LEVEL SECURITY), or give state.dsn a user "
            "it does not apply to (the owner of it, or a role with BYPASSRLS)"
        ) == str(refused)
        async with PostgresStateStore(postgres_dsn) as store:
            assert {"missions": [{"n": 1}]} == await store.load("kept")

    async def test_row_level_security_whose_policies_let_the_user_through_starts(
        self, postgres_dsn: str
    ) -> None:
        """Row level security on every table with policies that let the user read and
        write every row (for it, and for PUBLIC; one per command on the records) hides
        nothing: the user starts, appends and reads, with expiry too (before, start-up
        refused it as rows hidden, where the store worked the day before)."""
        await _changed(postgres_dsn)
        user = await create_user(postgres_dsn)
        await _changed(
            postgres_dsn,
            *(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY" for table in _TABLES.split(", ")),
            f"CREATE POLICY own ON taskforce_schema_version FOR SELECT TO {user.role} USING (true)",
            "CREATE POLICY every ON taskforce_sessions USING (true)",
            *(
                f"CREATE POLICY may_{command.lower()} ON taskforce_mission_records FOR {command} "
                f"TO {user.role} {clause}"
                for command, clause in (
                    ("SELECT", "USING (true)"),
                    ("INSERT", "WITH CHECK (true)"),
                    ("DELETE", "USING (true)"),
                )
            ),
        )
        async with PostgresStateStore(user.dsn, limits=_DAY) as store:
            assert 3 == (await store.append("kept", {"n": 2})).records
            assert {"missions": [{"n": 1}, {"n": 1}, {"n": 2}]} == await store.load("kept")

    @pytest.mark.parametrize(
        "policies",
        [
            ["CREATE POLICY others ON taskforce_sessions USING (session_id <> 'kept')"],
            [
                "CREATE POLICY every ON taskforce_sessions USING (true)",
                "CREATE POLICY no_updates ON taskforce_sessions AS RESTRICTIVE FOR UPDATE "
                "USING (false)",
            ],
            ["CREATE POLICY reads ON taskforce_sessions FOR SELECT USING (true)"],
        ],
        ids=["filtered", "restricted-update", "no-write-policy"],
    )
    async def test_row_level_security_whose_policies_hide_rows_is_refused(
        self, postgres_dsn: str, policies: list[str]
    ) -> None:
        """Policies that filter the user's rows, or let it read but not write, stop it."""
        await _changed(postgres_dsn, "ALTER TABLE taskforce_sessions ENABLE ROW LEVEL SECURITY")
        user = await create_user(postgres_dsn)
        await _changed(postgres_dsn, *policies)
        refused = await _refused(user.dsn)
        assert f"{user.role!r} is subject to row level security on taskforce_sessions " in str(
            refused
        )


class TestMigration:
    async def test_an_older_schema_is_migrated_once_and_recorded(
        self, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A taskforce whose schema is one step newer migrates the tables it finds, keeps
        their rows, records the version, and a second start migrates nothing."""
        await _changed(postgres_dsn)
        monkeypatch.setattr(schema_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        step = "ALTER TABLE taskforce_sessions ADD COLUMN note text"
        monkeypatch.setitem(schema_module.MIGRATIONS, SCHEMA_VERSION, step)
        for _ in range(2):
            async with PostgresStateStore(postgres_dsn, pool_size=1) as store:
                assert {"missions": [{"n": 1}]} == await store.load("kept")
        assert [(SCHEMA_VERSION,), (SCHEMA_VERSION + 1,)] == await _fetch(
            postgres_dsn, "SELECT version FROM taskforce_schema_version ORDER BY 1"
        )
        assert [(None,)] == await _fetch(postgres_dsn, "SELECT note FROM taskforce_sessions")

    async def test_an_older_schema_without_a_migration_stops_start_up(
        self, postgres_dsn: str
    ) -> None:
        """A version below any this code migrates from says so, and what to do."""
        await _changed(
            postgres_dsn,
            "UPDATE taskforce_schema_version SET version = 0",
        )
        assert (
            "the state database has schema version 0, which this taskforce (version "
            f"{SCHEMA_VERSION}) cannot migrate: start a release that migrates it first, or move "
            "the taskforce_ tables aside and start again to create them"
        ) == await _stopped(postgres_dsn)


@contextlib.asynccontextmanager
async def _database(server: PostgresServer, encoding: str) -> AsyncIterator[str]:
    """A new database of ``encoding`` on ``server``, dropped after; yields its DSN."""
    import asyncpg

    name = f"enc_{secrets.token_hex(4)}"
    owner = await asyncpg.connect(server.dsn())
    try:
        await owner.execute(
            f"CREATE DATABASE {name} ENCODING '{encoding}' LOCALE 'C' TEMPLATE template0"
        )
        yield server.dsn(name)
    finally:
        await owner.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await owner.close()


class TestEncoding:
    async def test_a_database_that_cannot_hold_every_character_stops_start_up(
        self, postgres_server: PostgresServer
    ) -> None:
        """A LATIN1 database would fail the save of every record with a character it
        lacks (an emoji, Cyrillic): start-up stops naming its encoding, and makes no table."""
        async with _database(postgres_server, "LATIN1") as dsn:
            with pytest.raises(StateStoreError) as info:
                await PostgresStateStore(dsn, timeout_seconds=10).open()
            assert str(info.value).startswith(
                f"the state database {dsn.rsplit('/', 1)[1]!r} is encoded LATIN1, "
            )
            assert "ENCODING 'UTF8'" in str(info.value)
            tables = "SELECT relname FROM pg_class WHERE relname LIKE 'taskforce%'"
            assert [] == await _fetch(dsn, tables)

    @pytest.mark.parametrize("encoding", ["latin1", "SQL_ASCII"])
    async def test_a_client_encoding_in_the_dsn_that_cannot_carry_every_character_stops_start_up(
        self, postgres_dsn: str, encoding: str
    ) -> None:
        """The driver encodes what it sends in the connection's client_encoding: one other
        than UTF8 would fail every save of a character it lacks."""
        with pytest.raises(StateStoreError) as info:
            await PostgresStateStore(f"{postgres_dsn}&client_encoding={encoding}").open()
        assert (
            f"the connections to the state database 'postgres' use client_encoding "
            f"{encoding.upper()}, "
        ) in str(info.value)
        assert "remove client_encoding from state.dsn" in str(info.value)

    async def test_a_sql_ascii_database_keeps_every_character(
        self, postgres_server: PostgresServer
    ) -> None:
        """SQL_ASCII keeps the bytes it is given: it starts, and records round-trip."""
        record = {"text": "\U0001f600 \u0436 \u4e2d \u00e9"}
        async with (
            _database(postgres_server, "SQL_ASCII") as dsn,
            PostgresStateStore(dsn, timeout_seconds=10) as store,
        ):
            await store.append("any", record)
            assert {"missions": [record]} == await store.load("any")


# The operator guide's query of the records (docs/operator-guide.md, "the schema").
_GUIDE_QUERY = (
    "SELECT regexp_replace(record, '\\\\u(0000|d[89a-f][0-9a-f]{2})', '\\\\ufffd', 'gi')::jsonb"
    "->>'status' AS status, count(*)\nFROM taskforce_mission_records GROUP BY 1 ORDER BY 1;"
)


def _guide_block(after: str, language: str = "python") -> str:
    """The first fenced code block in ``language`` of the operator guide after the text
    ``after``."""
    guide = (Path(__file__).resolve().parents[3] / "docs" / "operator-guide.md").read_text()
    assert after in guide
    return guide.split(after, 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


class TestSwitchingStores:
    async def test_the_guides_script_copies_the_file_stores_sessions(
        self, postgres_dsn: str, tmp_path: Path
    ) -> None:
        """The operator guide's script, run as it is, copies every session file into the
        PostgreSQL store (its other state and its records in their order, replacing a
        session of that id already there), names a corrupt file and exits 1, and leaves
        the files and temp files as they were."""
        script = tmp_path / "copy_sessions.py"
        script.write_text(_guide_block("**Switching the store.**"))
        state_dir = tmp_path / "state"
        files = FileStateStore(state_dir)
        for n in range(3):
            await files.append("a", {"status": "completed", "n": n})
        await files.save("b", {"note": "kept", "missions": [{"status": "failed"}]})
        await files.aclose()
        (state_dir / "c.json").write_text("{bad")
        (state_dir / ".a.x1y2.tmp").write_text("half")
        async with PostgresStateStore(postgres_dsn) as store:
            await store.append("b", {"status": "completed", "n": "replaced"})
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src"),
            "TASKFORCE_STATE_DIR": str(state_dir),
            "TASKFORCE_STATE__DSN": postgres_dsn,
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 1 == done.returncode, done.stderr
        assert done.stdout.startswith("copied 2 sessions\nc.json: state of session 'c' is corrupt")
        async with PostgresStateStore(postgres_dsn) as store:
            assert await FileStateStore(state_dir).load("a") == await store.load("a")
            assert {"note": "kept", "missions": [{"status": "failed"}]} == await store.load("b")
            assert await store.load("c") is None
        assert "{bad" == (state_dir / "c.json").read_text()
        assert "half" == (state_dir / ".a.x1y2.tmp").read_text()


class TestRecordQuery:
    async def test_the_guides_query_reads_every_record(self, postgres_dsn: str) -> None:
        """The operator guide's query of the records as JSON counts them all, also records
        that hold what PostgreSQL's json refuses (NUL, a lone surrogate) and one whose text
        only looks like such an escape; it is the query the guide shows."""
        guide = Path(__file__).resolve().parents[3] / "docs" / "operator-guide.md"
        assert _GUIDE_QUERY in guide.read_text()
        async with PostgresStateStore(postgres_dsn) as store:
            for text in ("nul\x00", "lone\udcff", "pair \U0001f600 \udcff", "\\u0000", "plain"):
                await store.append("q", {"status": "completed", "note": text})
            await store.append("q", {"status": "failed", "note": "\x00"})
        assert [("completed", 5), ("failed", 1)] == await _fetch(postgres_dsn, _GUIDE_QUERY)


class TestCorruption:
    @pytest.mark.parametrize(
        ("column", "text", "reason"),
        [
            ("state", "{bad", "Expecting property name"),
            ("state", "[]", "the state is not a JSON object"),
            ("record", "not json", "Expecting value"),
            ("record", "[" * 100_000 + "]" * 100_000, "nested too deeply to be read"),
            ("record", '{"status": NaN}', "NaN is not JSON"),
            ("state", '{"note": -Infinity}', "-Infinity is not JSON"),
        ],
        ids=[
            "state-not-json",
            "state-not-object",
            "record-not-json",
            "record-too-deep",
            "record-nan",
            "state-infinity",
        ],
    )
    async def test_a_hand_edited_row_fails_its_session_alone(
        self, postgres_dsn: str, column: str, text: str, reason: str
    ) -> None:
        """A session whose row or record text was edited into something the store cannot
        read raises StateCorruptedError naming that session and why, a record nested deeper
        than Python's parser goes and NaN or Infinity (no JSON) included, as the file store
        says them; the row is left as it is and another session still loads."""
        import asyncpg

        table = "taskforce_sessions" if column == "state" else "taskforce_mission_records"
        async with PostgresStateStore(postgres_dsn) as store:
            for session_id in ("edited", "other"):
                await store.append(session_id, {"status": "completed"})
            conn = await asyncpg.connect(postgres_dsn)
            try:
                await conn.execute(
                    f"UPDATE {table} SET {column} = $1 WHERE session_id = 'edited'", text
                )
            finally:
                await conn.close()
            with pytest.raises(StateCorruptedError) as info:
                await store.load("edited")
            assert reason in str(info.value)
            assert "'edited'" in str(info.value)
            assert [(text,)] == await _fetch(
                postgres_dsn, f"SELECT {column} FROM {table} WHERE session_id = 'edited'"
            )
            assert [{"status": "completed"}] == (await store.load("other") or {})["missions"]


def _pg_dump(
    server: PostgresServer,
    database: str,
    args: list[str],
    user: tuple[str, str] | None = None,
    program: str = "pg_dump",
) -> subprocess.CompletedProcess[str]:
    """Run ``pg_dump`` (or ``program``) with ``args`` on ``database`` of ``server``, as its
    superuser or as ``user`` (a name and its password)."""
    role, password = user or ("taskforce", server.password)
    where = ["-h", "127.0.0.1", "-p", str(server.port), "-U", role, "-d", database]
    return subprocess.run(
        [str(server.bindir / program), *args, *where],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": password},
        timeout=60,
        check=False,
    )


class TestBackup:
    async def test_the_guides_pg_dump_commands_dump_the_tables_where_they_are(
        self, postgres_server: PostgresServer
    ) -> None:
        """Each pg_dump command of the operator guide dumps the state tables of the schema it
        names, with their records: those in public, and, the DSN's search_path naming a
        schema of their own, those there (``name`` in the guide)."""
        guide = Path(__file__).resolve().parents[3] / "docs" / "operator-guide.md"
        commands = re.findall(r"`(pg_dump [^`]*)`", " ".join(guide.read_text().split()))
        database = f"backup_{secrets.token_hex(4)}"
        await _fetch(postgres_server.dsn(), f"CREATE DATABASE {database}")
        public = postgres_server.dsn(database)
        await _fetch(public, "CREATE SCHEMA own")
        for schema, dsn in (("public", public), ("own", f"{public}?search_path=own")):
            async with PostgresStateStore(dsn) as store:
                await store.append("kept", {"note": f"record-in-{schema}"})
        dumped: dict[str, set[str]] = {}
        for command in commands:
            args = shlex.split(command.replace("'name.", "'own."))
            done = await asyncio.to_thread(_pg_dump, postgres_server, database, args[1:])
            assert 0 == done.returncode, (command, done.stderr)
            tables = set(re.findall(r"^CREATE TABLE (\w+)\.(taskforce_\w+)", done.stdout, re.M))
            assert len({schema for schema, _ in tables}) == 1, (command, tables)
            schema = next(iter(tables))[0]
            assert f"record-in-{schema}" in done.stdout
            dumped[schema] = {table for _, table in tables}
        every = {"taskforce_schema_version", "taskforce_sessions", "taskforce_mission_records"}
        assert {"public": every, "own": every} == dumped

    async def test_a_backup_user_granted_as_the_guide_says_dumps_and_the_dump_restores(
        self, postgres_server: PostgresServer, tmp_path: Path
    ) -> None:
        """The service's user with the guide's least privileges cannot dump the tables (no
        SELECT on the records' sequence); a user given the guide's backup grants can, and
        the dump, restored with the guide's psql command into a database with the schema
        and without the tables, starts a store that reads every session and appends
        after them."""
        token = secrets.token_hex(4)
        database, restored = f"backup_{token}", f"restored_{token}"
        for name in (database, restored):
            await _fetch(postgres_server.dsn(), f"CREATE DATABASE {name}")
            await _fetch(postgres_server.dsn(name), "CREATE SCHEMA taskforce")
        dsn = f"{postgres_server.dsn(database)}?search_path=taskforce"
        async with PostgresStateStore(dsn) as store:
            for n in range(3):
                await store.append("kept", {"n": n})
        service = await create_user(dsn)
        backup = (f"backup_{token}", "pw-" + secrets.token_hex(8))
        await _fetch(dsn, f"CREATE ROLE {backup[0]} LOGIN PASSWORD '{backup[1]}'")
        for grant in _guide_block("**Backups.**", "sql").split(";"):
            if grant.strip():
                await _fetch(dsn, grant.replace(" TO backup", f" TO {backup[0]}"))
        service_login = (service.role, service.dsn.split(":")[2].split("@")[0])
        tables = ["-t", "taskforce.taskforce_*"]
        refused = await asyncio.to_thread(
            _pg_dump, postgres_server, database, tables, service_login
        )
        assert "permission denied for sequence taskforce_mission_records_seq_seq" in refused.stderr
        dumped = await asyncio.to_thread(_pg_dump, postgres_server, database, tables, backup)
        assert 0 == dumped.returncode, dumped.stderr
        (tmp_path / "dump.sql").write_text(dumped.stdout)
        psql = ["-X", "-v", "ON_ERROR_STOP=1", "-f", str(tmp_path / "dump.sql")]
        done = await asyncio.to_thread(_pg_dump, postgres_server, restored, psql, program="psql")
        assert 0 == done.returncode, done.stderr
        async with PostgresStateStore(
            f"{postgres_server.dsn(restored)}?search_path=taskforce"
        ) as store:
            assert 4 == (await store.append("kept", {"n": 3})).records
            assert {"missions": [{"n": n} for n in range(4)]} == await store.load("kept")


class TestSecrets:
    async def test_wrong_password_names_no_secret(self, postgres_dsn: str) -> None:
        """A refused login is StateStoreUnavailableError; neither message nor detail has it."""
        password = postgres_dsn.split(":")[2].split("@")[0]
        wrong = postgres_dsn.replace(password, "not-the-pw-xyzzy")
        with pytest.raises(StateStoreUnavailableError) as info:
            await PostgresStateStore(wrong, timeout_seconds=5).open()
        for text in (str(info.value), info.value.detail, repr(info.value)):
            assert "not-the-pw-xyzzy" not in text
            assert wrong not in text

    def test_repr_shows_no_dsn(self, postgres_dsn: str) -> None:
        """The store's repr names its pool size only."""
        assert "<PostgresStateStore pool_size=3>" == repr(
            PostgresStateStore(postgres_dsn, pool_size=3)
        )

    @pytest.mark.parametrize(
        "dsn",
        [
            "postgresql://u:secret-xyzzy@127.0.0.1:99999/x",
            "postgresql://u:secret-xyzzy@127.0.0.1:-1/x",
            "postgresql://u:secret-xyzzy@127.0.0.1:abc/x",
            "postgresql://u:secret-xyzzy@[::1/x",
            # a password with a character a URL reserves, not percent-encoded: the parser
            # splits inside it and its message quoted a piece of the password
            "postgresql://u:secret/xyzzy9@127.0.0.1:5432/x",
            "postgresql://u:secret#xyzzy9@127.0.0.1:5432/x",
            "postgresql://u:secret?xyzzy9@127.0.0.1:5432/x",
        ],
    )
    async def test_malformed_dsn_is_unavailable_not_a_crash(self, dsn: str) -> None:
        """A DSN the driver cannot even parse (bad port, broken address) stops start-up cleanly."""
        pytest.importorskip("asyncpg")
        with pytest.raises(StateStoreUnavailableError) as info:
            await PostgresStateStore(dsn, timeout_seconds=2).open()
        for text in (str(info.value), info.value.detail, repr(info.value)):
            assert "secret" not in text
            assert "xyzzy" not in text

    async def test_a_refused_sslmode_in_the_dsn_is_named_not_blamed_on_encoding(self) -> None:
        """A bad sslmode in the DSN is named as such; no percent-encoding advice."""
        pytest.importorskip("asyncpg")
        dsn = "postgresql://u:secret-xyzzy@127.0.0.1:1/x?sslmode=bogus"
        with pytest.raises(StateStoreUnavailableError) as info:
            await PostgresStateStore(dsn, timeout_seconds=2).open()
        assert info.value.detail.startswith("the driver refuses a connection parameter: ")
        assert "`sslmode` parameter must be one of: disable, allow, prefer" in str(info.value)
        assert None is info.value.variable
        assert "percent-encode" not in str(info.value)
        assert "xyzzy" not in str(info.value)

    @pytest.mark.parametrize(
        ("dsn", "environment", "variable", "reason"),
        [
            (
                "postgresql://u:secret-xyzzy@127.0.0.1:1/x",
                {"PGSSLMODE": "bogus"},
                "PGSSLMODE",
                "the driver refuses the environment variable PGSSLMODE: ClientConfigurationError: "
                "`sslmode` parameter must be one of: disable, allow, prefer",
            ),
            (
                "postgresql://u:secret-xyzzy@127.0.0.1:1/x",
                {"PGPORT": "abc"},
                "PGPORT",
                "the driver refuses the environment variable PGPORT: not a port from 1 to 65535",
            ),
            (
                "postgresql://u:secret-xyzzy@127.0.0.1/x",
                {"PGPORT": "99999"},
                "PGPORT",
                "the driver refuses the environment variable PGPORT: not a port from 1 to 65535",
            ),
            (
                "postgresql://u:secret-xyzzy@127.0.0.1:1/x?sslmode=verify-ca",
                {"PGSSLROOTCERT": "/nonexistent/root.crt"},
                "PGSSLROOTCERT",
                "the driver cannot read the file PGSSLROOTCERT names: FileNotFoundError",
            ),
        ],
        ids=["PGSSLMODE", "PGPORT-abc", "PGPORT-99999", "PGSSLROOTCERT"],
    )
    async def test_a_libpq_variable_the_driver_refuses_is_named_not_the_dsn(
        self,
        monkeypatch: pytest.MonkeyPatch,
        dsn: str,
        environment: dict[str, str],
        variable: str,
        reason: str,
    ) -> None:
        """A value the driver read from a libpq variable (PGSSLMODE, PGPORT, PGSSLROOTCERT)
        and refused names that variable, not the DSN or its percent-encoding."""
        pytest.importorskip("asyncpg")
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(StateStoreUnavailableError) as info:
            await PostgresStateStore(dsn, timeout_seconds=2).open()
        assert variable == info.value.variable
        assert info.value.detail.startswith(reason), info.value.detail
        assert f"cannot reach the state database: {info.value.detail}" == str(info.value)
        assert "percent-encode" not in str(info.value)
        assert "xyzzy" not in str(info.value)

    @pytest.mark.parametrize("in_dsn", [False, True], ids=["PGSSLMODE", "state.dsn"])
    async def test_tls_the_server_refuses_names_where_sslmode_was_given(
        self, monkeypatch: pytest.MonkeyPatch, postgres_dsn: str, in_dsn: bool
    ) -> None:
        """A server without TLS refuses a connection whose sslmode requires it: the line
        names PGSSLMODE when the driver read require from it, state.dsn when the DSN says
        it (it named state.dsn either way, whose text then held no sslmode)."""
        monkeypatch.setenv("PGSSLMODE", "require")
        dsn = f"{postgres_dsn}&sslmode=require" if in_dsn else postgres_dsn
        with pytest.raises(StateStoreUnavailableError) as info:
            await PostgresStateStore(dsn, timeout_seconds=5).open()
        assert "rejected SSL upgrade" in str(info.value)
        if in_dsn:
            assert None is info.value.variable
            assert "PGSSLMODE" not in str(info.value)
        else:
            assert "PGSSLMODE" == info.value.variable
            assert str(info.value).startswith(
                "cannot reach the state database: the server refuses TLS, which the "
                "environment variable PGSSLMODE asks for: ConnectionError: "
            )
        assert _password(postgres_dsn) not in str(info.value)

    async def test_a_refusal_on_several_lines_is_said_on_one(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """``sslmode=verify-ca`` without a root certificate: the driver's reason and its
        ``HINT:`` line come as one line, as every start-up error does."""
        pytest.importorskip("asyncpg")
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt there
        dsn = "postgresql://u:secret-xyzzy@127.0.0.1:1/x?sslmode=verify-ca"
        with pytest.raises(StateStoreUnavailableError) as info:
            await PostgresStateStore(dsn, timeout_seconds=2).open()
        assert "\n" not in str(info.value)
        assert "root certificate file" in str(info.value)
        assert "HINT: Provide the certificate file" in str(info.value)

    async def test_no_user_under_a_uid_without_a_name_says_what_to_add(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A DSN that names no user, PGUSER unset, in a process whose uid has no name: the
        Kubernetes base runs as uid 10001, which an image's /etc/passwd seldom lists, and
        the driver's fallback (the process's user name) fails there. Start-up stops naming
        state.dsn and what to add, not with a KeyError's traceback."""
        pytest.importorskip("asyncpg")
        import pwd

        def no_entry(uid: int) -> pwd.struct_passwd:
            raise KeyError(f"getpwuid(): uid not found: {uid}")

        for name in ("PGUSER", "LOGNAME", "USER", "LNAME", "USERNAME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(pwd, "getpwuid", no_entry)
        store = PostgresStateStore("postgresql://127.0.0.1:1/x", timeout_seconds=2)
        for _ in range(2):  # a call after a failed start opens again, and fails alike
            with pytest.raises(StateStoreUnavailableError) as info:
                await store.open()
            assert info.value.variable is None  # the DSN is what to fix
            assert info.value.detail.startswith("the connection string names no user"), (
                info.value.detail
            )
            assert "PGUSER" in info.value.detail
            assert f"uid {os.getuid()}" in info.value.detail
            assert info.value.start_up_line().startswith("state.dsn (TASKFORCE_STATE__DSN): ")

    async def test_a_server_that_never_answers_says_so(self) -> None:
        """A connection that gets no answer names the wait and its setting, not an empty reason."""
        pytest.importorskip("asyncpg")
        import socket

        with socket.socket() as silent:  # accepts (in the backlog), never speaks
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            port = silent.getsockname()[1]
            store = PostgresStateStore(
                f"postgresql://u:secret-xyzzy@127.0.0.1:{port}/x", timeout_seconds=0.3
            )
            with pytest.raises(StateStoreUnavailableError) as info:
                await store.open()
        assert "no answer within 0.3 s (state.timeout_seconds)" in info.value.detail
        assert "xyzzy" not in str(info.value)


class TestSizes:
    async def test_sizes_are_utf8_bytes(self, postgres_dsn: str) -> None:
        """Non-ASCII state counts its UTF-8 bytes, in a save and in the append after it."""
        from taskforce.infrastructure.state._common import dumps

        state = {"note": "é" * 100, "missions": []}
        async with PostgresStateStore(postgres_dsn) as store:
            saved = await store.save("utf8", state)
            assert len(dumps({"note": "é" * 100})) == saved  # 2 bytes an é, not 1
            appended = await store.append("utf8", {"n": 1})
        assert saved + len(dumps({"n": 1})) == appended.size_bytes


class TestIsolation:
    """The store keeps its guarantees whatever isolation the database defaults to."""

    @pytest.mark.parametrize("level", ["repeatable%20read", "serializable"])
    async def test_concurrent_appends_lose_nothing_under_a_stricter_default(
        self, postgres_dsn: str, level: str
    ) -> None:
        """Two replicas appending to one session at once all succeed, under a database
        whose default_transaction_isolation is stricter than READ COMMITTED."""
        dsn = f"{postgres_dsn}&default_transaction_isolation={level}"
        stores = [PostgresStateStore(dsn, pool_size=5) for _ in range(2)]
        try:
            for store in stores:  # one after the other: only the appends run at once
                await store.open()
            await asyncio.gather(*(stores[i % 2].append("strict", {"n": i}) for i in range(40)))
            state = await stores[0].load("strict")
        finally:
            await asyncio.gather(*(store.aclose() for store in stores))
        assert state is not None
        assert list(range(40)) == sorted(record["n"] for record in state["missions"])

    async def test_replicas_starting_together_under_a_stricter_default(
        self, postgres_dsn: str
    ) -> None:
        """Replicas creating the schema at once all start when transactions default to
        SERIALIZABLE: the one that waited for the lock sees the schema version committed."""
        dsn = f"{postgres_dsn}&default_transaction_isolation=serializable"
        stores = [PostgresStateStore(dsn, pool_size=1) for _ in range(5)]
        try:
            await asyncio.gather(*(store.open() for store in stores))
        finally:
            await asyncio.gather(*(store.aclose() for store in stores))


class TestTransactionPooling:
    """Behind PgBouncer in transaction mode, as the operator guide advises beyond
    ``max_connections``, each transaction may run on another server session, which has
    none of the statements an earlier one prepared."""

    async def test_calls_need_no_statement_prepared_by_an_earlier_one(
        self, postgres_dsn: str
    ) -> None:
        """With its server session's prepared statements gone between calls, the store's
        pooled connection still appends, loads and answers the health check."""
        async with PostgresStateStore(postgres_dsn, pool_size=1) as store:
            await store.append("pooled", {"n": 1})
            await store.load("pooled")
            assert StateStoreHealth(is_reachable=True) == await store.check_health()
            assert store._pool is not None
            async with store._pool.acquire() as conn:  # the pool's one connection
                await conn.execute("DEALLOCATE ALL")  # another server session's view
            await store.append("pooled", {"n": 2})
            state = await store.load("pooled")
            health = await store.check_health()
        assert {"missions": [{"n": 1}, {"n": 2}]} == state
        assert StateStoreHealth(is_reachable=True) == health


# pg_locks is read afresh on every call (pg_stat_activity keeps one snapshot per transaction).
_UNTIL_A_LOCK_IS_AWAITED = """
DO $$ BEGIN
    WHILE NOT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted) LOOP
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$
"""


_TABLES = "taskforce_schema_version, taskforce_sessions, taskforce_mission_records"
_USAGE = "GRANT USAGE ON SCHEMA {schema} TO {role}"
#: The least privileges the operator guide names (once the tables exist).
_LEAST_GRANTS = (
    _USAGE,
    "GRANT SELECT ON taskforce_schema_version TO {role}",
    "GRANT SELECT, INSERT, UPDATE ON taskforce_sessions TO {role}",
    "GRANT SELECT, INSERT, DELETE ON taskforce_mission_records TO {role}",
)


class TestLeastPrivilege:
    async def test_a_user_without_create_starts_on_an_existing_schema(
        self, postgres_dsn: str
    ) -> None:
        """Once the schema exists, a user with only SELECT, INSERT, UPDATE, DELETE on the
        three tables (no CREATE on the schema) starts, appends and reads, as the guide says."""
        async with PostgresStateStore(postgres_dsn):  # the first start, by the owner
            pass
        dsn = (await create_user(postgres_dsn)).dsn
        async with PostgresStateStore(dsn) as store:
            await store.append("least", {"n": 1})
            assert {"missions": [{"n": 1}]} == await store.load("least")

    async def test_the_privileges_the_store_uses_are_enough(self, postgres_dsn: str) -> None:
        """SELECT on the version table, SELECT, INSERT, UPDATE on the sessions and SELECT,
        INSERT, DELETE on the records (the least the guide names) pass the start-up check
        and serve every call: append past the limits, save, load."""
        async with PostgresStateStore(postgres_dsn):
            pass
        user = await create_user(postgres_dsn, grants=_LEAST_GRANTS)
        async with PostgresStateStore(user.dsn, limits=StateLimits(max_history=1)) as store:
            await store.append("least", {"n": 1})
            assert 1 == (await store.append("least", {"n": 2})).dropped
            await store.save("saved", {"note": 1, "missions": [{"n": 3}]})
            assert {"note": 1, "missions": [{"n": 3}]} == await store.load("saved")
            assert {"missions": [{"n": 2}]} == await store.load("least")

    @pytest.mark.parametrize(
        ("grants", "lacks", "them"),
        [
            (
                [_USAGE],
                "SELECT on taskforce_schema_version; SELECT, INSERT, UPDATE on "
                "taskforce_sessions; SELECT, INSERT, DELETE on taskforce_mission_records",
                "them",
            ),
            (
                [_USAGE, f"GRANT SELECT ON {_TABLES} TO {{role}}"],
                "INSERT, UPDATE on taskforce_sessions; INSERT, DELETE on taskforce_mission_records",
                "them",
            ),
            (
                [_USAGE, f"GRANT SELECT, INSERT, UPDATE ON {_TABLES} TO {{role}}"],
                "DELETE on taskforce_mission_records",
                "it",
            ),
        ],
        ids=["no-grant", "select-only", "no-delete"],
    )
    async def test_a_user_lacking_privileges_on_the_tables_is_refused_at_start_up(
        self, postgres_dsn: str, grants: list[str], lacks: str, them: str
    ) -> None:
        """The tables exist (another user made them) but this user lacks privileges the
        store uses on them: opening stops with one line naming the user and every privilege
        it lacks, never the password; not the first mission's write."""
        async with PostgresStateStore(postgres_dsn):
            pass
        user = await create_user(postgres_dsn, grants=grants)
        refused = await _refused(user.dsn)
        reason = (
            f"the database user {user.role!r} lacks {lacks} (in schema {_schema(postgres_dsn)!r}): "
            f"grant {them}, or give state.dsn a user that has {them}"
        )
        assert (f"cannot use the state database: {reason}", reason) == (
            str(refused),
            refused.detail,
        )
        assert user.role == refused.user
        assert _password(user.dsn) not in str(refused)

    async def test_a_user_without_create_on_a_new_schema_is_refused_at_start_up(
        self, postgres_dsn: str
    ) -> None:
        """No tables yet and no CREATE on the schema: start-up names the user, the schema
        and the privilege the first start needs, not the driver's 'permission denied'."""
        user = await create_user(postgres_dsn, grants=[_USAGE])
        refused = await _refused(user.dsn)
        assert (
            f"cannot use the state database: the database user {user.role!r} lacks CREATE on "
            f"schema {_schema(postgres_dsn)!r}, which the first start needs to create the state "
            "tables: grant it, or start once with a user that has it (the schema's owner); "
            "later starts need only the privileges on the tables"
        ) == str(refused)

    async def test_a_user_that_may_use_no_schema_is_refused_at_start_up(
        self, postgres_dsn: str
    ) -> None:
        """No USAGE on the schema of its search_path (the tables in it unseen): start-up says
        so, not the driver's 'no schema has been selected to create in'."""
        async with PostgresStateStore(postgres_dsn):
            pass
        user = await create_user(postgres_dsn, grants=[])
        refused = await _refused(user.dsn)
        assert (
            f"cannot use the state database: the database user {user.role!r} may use no schema "
            f"of its search_path ({_schema(postgres_dsn)}): create the schema or grant the user "
            "USAGE on it, or name another with ?search_path= in state.dsn"
        ) == str(refused)

    async def test_a_privilege_revoked_while_running_fails_the_call_not_the_store(
        self, postgres_dsn: str
    ) -> None:
        """INSERT revoked once the store runs: an append fails with the usual StateStoreError
        (the database's words in its detail), reads go on, and once INSERT is granted again
        appends do too (pins the behaviour before start-up checked privileges)."""
        async with PostgresStateStore(postgres_dsn):
            pass
        user = await create_user(postgres_dsn)
        async with PostgresStateStore(user.dsn) as store:
            await _fetch(postgres_dsn, f"REVOKE INSERT ON taskforce_sessions FROM {user.role}")
            with pytest.raises(StateStoreError) as info:
                await store.append("revoked", {"n": 1})
            assert None is await store.load("revoked")
            await _fetch(postgres_dsn, f"GRANT INSERT ON taskforce_sessions TO {user.role}")
            assert 1 == (await store.append("revoked", {"n": 2})).records
        assert StateStoreError is type(info.value)
        assert "cannot save state of session 'revoked': InsufficientPrivilegeError" == str(
            info.value
        )
        assert "permission denied for table taskforce_sessions" in info.value.detail


class TestReadOnly:
    """A database that takes no writes stops start-up, naming why, not the first save."""

    @pytest.mark.parametrize(
        ("alter", "where", "remedy"),
        [
            (
                "ALTER ROLE {role} SET default_transaction_read_only = on",
                "for the role",
                "reset it (ALTER ROLE {role} RESET default_transaction_read_only), "
                "or give state.dsn a user without it",
            ),
            (
                "ALTER ROLE {role} IN DATABASE postgres SET default_transaction_read_only = on",
                "for the role in the database 'postgres'",
                "reset it (ALTER ROLE {role} IN DATABASE postgres RESET "
                "default_transaction_read_only)",
            ),
        ],
        ids=["role", "role-in-database"],
    )
    async def test_a_user_with_read_only_transactions_is_refused_at_start_up(
        self, postgres_dsn: str, alter: str, where: str, remedy: str
    ) -> None:
        """default_transaction_read_only on for the store's user: opening stops naming the
        user, the setting, where it is set and how to undo it, never the password; nothing
        is written."""
        async with PostgresStateStore(postgres_dsn) as owner:
            await owner.append("kept", {"n": 1})
        user = await create_user(postgres_dsn)
        await _fetch(postgres_dsn, alter.format(role=user.role))
        refused = await _refused(user.dsn)
        assert (
            f"cannot use the state database: the database user {user.role!r} gets read-only "
            f"transactions: default_transaction_read_only is on, set {where}: "
            + remedy.format(role=user.role)
        ) == str(refused)
        assert _password(user.dsn) not in str(refused)
        assert [(1,)] == await _fetch(postgres_dsn, "SELECT count(*) FROM taskforce_sessions")

    async def test_the_remedy_quotes_a_name_sql_would_misread(self, postgres_dsn: str) -> None:
        """A user whose name needs quoting in SQL (capitals, a dash): the remedy's statement
        quotes it, so it can be run as shown."""
        role, password = f"Read-Only-{secrets.token_hex(2)}", "pw-" + secrets.token_hex(8)
        await _fetch(postgres_dsn, f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        await _fetch(postgres_dsn, f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
        dsn = postgres_dsn.replace("//taskforce:", f"//{role}:").replace(
            _password(postgres_dsn), password
        )
        refused = await _refused(dsn)
        assert str(refused).endswith(
            f'reset it (ALTER ROLE "{role}" RESET default_transaction_read_only), '
            "or give state.dsn a user without it"
        )
        assert role == refused.user

    async def test_a_read_only_database_is_refused_before_any_table_is_made(
        self, postgres_server: PostgresServer
    ) -> None:
        """A database with default_transaction_read_only on: the first start stops naming the
        database and the setting, not the driver's 'cannot execute CREATE TABLE in a
        read-only transaction'."""
        admin = postgres_server.dsn()
        name = f"ro_{secrets.token_hex(4)}"
        await _fetch(admin, f"CREATE DATABASE {name}")
        try:
            await _fetch(admin, f"ALTER DATABASE {name} SET default_transaction_read_only = on")
            refused = await _refused(postgres_server.dsn(name))
            tables = await _fetch(
                postgres_server.dsn(name), "SELECT to_regclass('taskforce_sessions')"
            )
        finally:
            await _fetch(admin, f"DROP DATABASE {name} WITH (FORCE)")
        assert (
            "cannot use the state database: the database user 'taskforce' gets read-only "
            f"transactions: default_transaction_read_only is on, set for the database {name!r}: "
            f"reset it (ALTER DATABASE {name} RESET default_transaction_read_only), or turn it "
            "off for the user (ALTER ROLE taskforce SET default_transaction_read_only = off)"
        ) == str(refused)
        assert [(None,)] == tables

    async def test_read_only_set_by_the_connection_is_named_so(self, postgres_dsn: str) -> None:
        """default_transaction_read_only=on among the DSN's options: the line says the
        connection sets it, without showing the DSN."""
        refused = await _refused(f"{postgres_dsn}&default_transaction_read_only=on")
        assert str(refused).endswith(
            "default_transaction_read_only is on, set by the connection (an option in "
            "state.dsn): remove it there"
        )
        assert _password(postgres_dsn) not in str(refused)

    async def test_pgoptions_is_not_read(
        self, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """PGOPTIONS, which psql and libpq read, is not the driver's: read-only transactions
        set there leave the store writable, so no line may send an operator to it."""
        monkeypatch.setenv("PGOPTIONS", "-c default_transaction_read_only=on")
        async with PostgresStateStore(postgres_dsn) as store:
            assert 1 == (await store.append("pgoptions", {"n": 1})).records

    async def test_the_connection_turning_it_off_is_enough(self, postgres_dsn: str) -> None:
        """A user whose role is read-only, with default_transaction_read_only=off in the DSN:
        its transactions may write, so the store starts and appends."""
        async with PostgresStateStore(postgres_dsn):
            pass
        user = await create_user(postgres_dsn)
        await _fetch(postgres_dsn, f"ALTER ROLE {user.role} SET default_transaction_read_only = on")
        async with PostgresStateStore(f"{user.dsn}&default_transaction_read_only=off") as store:
            assert 1 == (await store.append("written", {"n": 1})).records

    async def test_a_standby_is_refused_at_start_up(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """A DSN that points at a hot standby (in recovery, its tables replicated): opening
        stops saying it is a standby and to point state.dsn at the primary."""
        async with PostgresStateStore(postgres_dsn) as primary:
            await primary.append("kept", {"n": 1})
        with running_standby(postgres_server) as standby:
            dsn = postgres_dsn.replace(f":{postgres_server.port}/", f":{standby.port}/")
            refused = await _refused(dsn)
        assert (
            "cannot use the state database: the database user 'taskforce' is connected to a "
            "standby server (pg_is_in_recovery() is true), which takes no writes: point "
            "state.dsn at the primary (with several hosts, add target_session_attrs=primary)"
        ) == str(refused)
        assert _password(dsn) not in str(refused)


async def _refused(dsn: str) -> StateStorePermissionError:
    """What opening a store on ``dsn`` raised; the store is closed whatever happened."""
    store = PostgresStateStore(dsn)
    try:
        with pytest.raises(StateStorePermissionError) as info:
            await store.open()
    finally:
        await store.aclose()
    return info.value


def _schema(dsn: str) -> str:
    return dsn.rsplit("search_path=", 1)[1]


def _password(dsn: str) -> str:
    return dsn.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]


class TestRefusedConnection:
    async def test_a_connection_refused_while_running_is_unavailable(
        self, postgres_dsn: str
    ) -> None:
        """A new connection the server refuses once the store runs (too many connections)
        is StateStoreUnavailableError, as at start-up: the session route answers 503."""
        import asyncpg

        async with PostgresStateStore(postgres_dsn):
            pass
        dsn = (await create_user(postgres_dsn, limit=1)).dsn
        owner, watch = await asyncpg.connect(postgres_dsn), await asyncpg.connect(postgres_dsn)
        try:
            async with PostgresStateStore(dsn, pool_size=2) as store:
                await owner.execute("BEGIN")
                await owner.execute("INSERT INTO taskforce_sessions (session_id) VALUES ('held')")
                held = asyncio.create_task(store.append("held", {"n": 1}))
                # the append holds the user's one connection, waiting for our row's lock
                await watch.execute(_UNTIL_A_LOCK_IS_AWAITED, timeout=60)
                with pytest.raises(StateStoreUnavailableError) as info:
                    await store.load("other")
                await owner.execute("ROLLBACK")
                assert 1 == (await held).records
        finally:
            await owner.close()
            await watch.close()
        assert "TooManyConnectionsError" in info.value.detail


def _with(dsn: str, parameter: str) -> str:
    """``dsn`` with one more query parameter."""
    return f"{dsn}{'&' if '?' in dsn else '?'}{parameter}"


class TestConnectTimeout:
    """libpq's ``?connect_timeout=N`` in the DSN, which the driver does not know."""

    async def test_the_store_connects_with_it(self, postgres_dsn: str) -> None:
        """A DSN with connect_timeout starts the store and serves calls (the server never
        sees it as a setting of its own)."""
        async with PostgresStateStore(_with(postgres_dsn, "connect_timeout=10")) as store:
            await store.append("timed", {"n": 1})
            assert {"missions": [{"n": 1}]} == await store.load("timed")

    async def test_it_limits_connecting_within_the_calls_deadline(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """A database that does not answer a new connection fails start-up once the
        DSN's connect_timeout, shorter than state.timeout_seconds, has passed."""
        async with FreezableRelay(postgres_server.port) as relay:
            dsn = postgres_dsn.replace(f":{postgres_server.port}/", f":{relay.port}/")
            relay.freeze()
            store = PostgresStateStore(_with(dsn, "connect_timeout=2"), timeout_seconds=4)
            with pytest.raises(StateStoreUnavailableError) as info:
                await store.open()
            relay.thaw()
        assert "TimeoutError: no answer within 2 s (connect_timeout in state.dsn)" == (
            info.value.detail
        )

    async def test_a_call_that_cannot_connect_names_it(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """A call whose new connection gets no answer within connect_timeout fails naming
        it, not state.timeout_seconds, which had not passed."""
        async with FreezableRelay(postgres_server.port) as relay:
            dsn = postgres_dsn.replace(f":{postgres_server.port}/", f":{relay.port}/")
            async with PostgresStateStore(
                _with(dsn, "connect_timeout=2"), timeout_seconds=4
            ) as store:
                assert store._pool is not None
                await store._pool.expire_connections()  # the next call connects anew
                relay.freeze()
                with pytest.raises(StateStoreUnavailableError) as info:
                    await store.load("timed")
                relay.thaw()
        assert "TimeoutError: no answer within 2 s (connect_timeout in state.dsn)" == (
            info.value.detail
        )

    def test_a_value_libpq_refuses_names_the_setting_not_the_dsn(self, postgres_dsn: str) -> None:
        with pytest.raises(ConfigurationError) as info:
            PostgresStateStore(_with(postgres_dsn, "connect_timeout=soon"))
        assert "state.dsn" == info.value.setting
        assert _password(postgres_dsn) not in str(info.value)
        assert "soon" not in str(info.value)


async def _user_with(owner_dsn: str, session_id: str, setting: str) -> str:
    """The DSN of a new user of the store whose role has ``setting`` (``name = 'value'``),
    once the session holds one record."""
    import asyncpg

    async with PostgresStateStore(owner_dsn) as first:
        await first.append(session_id, {"n": 0})
    role, dsn = await create_user(owner_dsn)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute(f"ALTER ROLE {role} SET {setting}")
    finally:
        await owner.close()
    return dsn


class TestLockWait:
    @pytest.mark.parametrize("setting", ["lock_timeout", "statement_timeout"])
    async def test_a_session_row_held_past_the_roles_limit_is_unavailable(
        self, postgres_dsn: str, setting: str
    ) -> None:
        """Another transaction holds the session's row past the role's lock_timeout, as
        past its statement_timeout: the database is busy for now, so the append fails
        unavailable (503, the same error_type either way), and succeeds once it is free."""
        import asyncpg

        dsn = await _user_with(postgres_dsn, "held", f"{setting} = '200ms'")
        owner = await asyncpg.connect(postgres_dsn)
        try:
            async with PostgresStateStore(dsn) as store:
                async with owner.transaction():
                    await owner.execute(
                        "SELECT 1 FROM taskforce_sessions WHERE session_id = 'held' FOR UPDATE"
                    )
                    with pytest.raises(StateStoreError) as info:
                        await store.append("held", {"n": 1})
                appended = await store.append("held", {"n": 2})
        finally:
            await owner.close()
        assert "StateStoreUnavailableError" == store_failure_fields(info.value)["error_type"]
        assert "cannot save state of session 'held'" in str(info.value)
        assert 2 == appended.records

    async def test_the_guides_idle_timeout_frees_a_row_a_silent_replica_holds(
        self, postgres_dsn: str
    ) -> None:
        """A replica cut off mid-append (a partition) leaves its transaction open on the
        server, the session's row locked; with the operator guide's
        idle_in_transaction_session_timeout on the role, the server ends it, and another
        replica's append goes through after that time, not after its own deadline."""
        import asyncpg

        dsn = await _user_with(postgres_dsn, "cut", "idle_in_transaction_session_timeout = '1s'")
        silent = await asyncpg.connect(dsn)  # the cut-off replica: its append took the lock
        try:
            await silent.execute("BEGIN")
            await silent.execute(APPEND_RECORD, "cut", 10, 0.0)
            async with PostgresStateStore(dsn, timeout_seconds=5) as store:
                loop = asyncio.get_running_loop()
                started = loop.time()
                appended = await store.append("cut", {"n": 1})
                waited = loop.time() - started
        finally:
            silent.terminate()
        assert 2 == appended.records
        assert 0.5 < waited < 4


class TestLostConnection:
    async def test_a_connection_lost_mid_append_is_named_by_its_cause(
        self, postgres_dsn: str
    ) -> None:
        """The server ends the connection while an append waits: the error names that
        loss, not the driver's later complaint that the transaction cannot be closed."""
        import asyncpg

        owner, watch = await asyncpg.connect(postgres_dsn), await asyncpg.connect(postgres_dsn)
        try:
            async with PostgresStateStore(postgres_dsn) as store:
                await store.append("lost", {"n": 0})
                await owner.execute("BEGIN")
                await owner.execute("SELECT 1 FROM taskforce_sessions FOR UPDATE")
                waiting = asyncio.create_task(store.append("lost", {"n": 1}))
                await watch.execute(_UNTIL_A_LOCK_IS_AWAITED, timeout=60)
                await watch.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE NOT granted"
                )
                with pytest.raises(StateStoreUnavailableError) as info:
                    await waiting
                await owner.execute("ROLLBACK")
        finally:
            await owner.close()
            await watch.close()
        assert "Transaction.__aexit__" not in info.value.detail
        assert "terminating connection" in info.value.detail

    async def test_a_pooled_connection_the_server_ended_is_replaced(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """The server ends an idle pooled connection (a restart, pg_terminate_backend): its
        FATAL arrives before its close, and an append that takes the connection in between
        fails at its BEGIN, before any of its statements: it runs again on a new
        connection and is written once."""
        import asyncpg

        dsn = _with(postgres_dsn, "application_name=ended")
        async with FreezableRelay(postgres_server.port) as relay:
            relayed = dsn.replace(f":{postgres_server.port}/", f":{relay.port}/")
            async with PostgresStateStore(relayed, pool_size=1) as store:
                await store.append("ended", {"n": 0})
                relay.hold_server_close()
                watch = await asyncpg.connect(postgres_dsn)
                try:
                    ended = await watch.fetchval(_END_THE_APPLICATIONS_CONNECTIONS, "ended")
                finally:
                    await watch.close()
                await asyncio.sleep(0.1)  # the FATAL reaches the idle connection
                with structlog.testing.capture_logs() as logs:
                    appended = await store.append("ended", {"n": 1})
                relay.hold_server_close(False)
                loaded = await store.load("ended")
        assert 1 == ended
        assert (2, 0) == (appended.records, appended.dropped)
        assert {"missions": [{"n": 0}, {"n": 1}]} == loaded
        replaced = [e for e in logs if e["event"] == "state.connection.replaced"]
        assert [("save", "ended", "InternalClientError")] == [
            (e["action"], e["session_id"], e["error_type"]) for e in replaced
        ]


class TestConnectionsTheServerEnded:
    """The server ends the pool's idle connections (``pg_terminate_backend``, a restart,
    ``idle_session_timeout``) while the event loop is busy elsewhere, so the driver has not
    read their end when the next calls take them. A call whose transaction cannot have
    committed runs once more on a new connection: reads and a sweep, and a write that had
    sent none of its statements."""

    async def _ended(self, server: PostgresServer, store: PostgresStateStore) -> int:
        """Open two pooled connections, then end both from a second connection, blocking
        the loop meanwhile (as a busy loop would): the pool has not seen them end."""
        await asyncio.gather(store.load("warm"), store.load("warm"))
        command = [str(server.bindir / "psql"), "-h", "127.0.0.1", "-p", str(server.port)]
        command += ["-U", "taskforce", "-d", "postgres", "-Atc"]
        query = _END_THE_APPLICATIONS_CONNECTIONS.replace("$1", "'replaced'")
        done = subprocess.run(  # noqa: ASYNC221 - the loop must not run meanwhile
            [*command, query],
            env={**os.environ, "PGPASSWORD": server.password},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return int(done.stdout)

    @contextlib.asynccontextmanager
    async def _store(self, dsn: str, **options: Any) -> AsyncIterator[PostgresStateStore]:
        dsn = _with(dsn, "application_name=replaced")
        async with PostgresStateStore(dsn, pool_size=2, **options) as store:
            yield store

    async def test_a_load_and_an_append_succeed(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        async with self._store(postgres_dsn) as store:
            await store.append("kept", {"n": 0})
            ended = await self._ended(postgres_server, store)
            with structlog.testing.capture_logs() as logs:
                loaded = await store.load("kept")
                appended = await store.append("kept", {"n": 1})
            again = await store.load("kept")
        assert 2 == ended
        assert {"missions": [{"n": 0}]} == loaded
        assert 2 == appended.records  # written once
        assert {"missions": [{"n": 0}, {"n": 1}]} == again
        # the first call found its connection ended and had the pool's replaced
        assert ["load"] == [e["action"] for e in logs if e["event"] == "state.connection.replaced"]
        assert {"info"} == {e["log_level"] for e in logs}

    async def test_an_append_first_succeeds(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        async with self._store(postgres_dsn) as store:
            await store.append("kept", {"n": 0})
            await self._ended(postgres_server, store)
            appended = await store.append("kept", {"n": 1})
            loaded = await store.load("kept")
        assert 2 == appended.records
        assert {"missions": [{"n": 0}, {"n": 1}]} == loaded

    async def test_the_health_check_succeeds(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        async with self._store(postgres_dsn) as store:
            await self._ended(postgres_server, store)
            with structlog.testing.capture_logs() as logs:
                health = await store.check_health()
        assert StateStoreHealth(is_reachable=True) == health
        assert ["check"] == [e["action"] for e in logs if e["event"] == "state.connection.replaced"]

    async def test_a_sweep_succeeds(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        limits = StateLimits(session_ttl_seconds=60)
        async with self._store(postgres_dsn, limits=limits) as store:
            await store.append("old", {"n": 0})
            await _fetch(
                postgres_dsn, "UPDATE taskforce_sessions SET updated_at = now() - interval '1h'"
            )
            await self._ended(postgres_server, store)
            expired = await store.expire_sessions()
        assert SessionExpiry(1) == expired

    async def test_after_a_restart_the_next_calls_succeed(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """``pg_ctl restart -m fast`` while the loop is busy: no call fails for it."""
        async with self._store(postgres_dsn) as store:
            await store.append("kept", {"n": 0})
            await asyncio.gather(store.load("warm"), store.load("warm"))
            postgres_server.stop()
            postgres_server.start()
            outcomes = [
                await store.load("kept"),
                await store.append("kept", {"n": 1}),
                await store.check_health(),
            ]
        assert [
            {"missions": [{"n": 0}]},
            AppendResult(size_bytes=outcomes[1].size_bytes, records=2, dropped=0),  # type: ignore[union-attr]
            StateStoreHealth(is_reachable=True),
        ] == outcomes

    async def test_a_log_that_fails_does_not_fail_the_call(
        self,
        postgres_server: PostgresServer,
        postgres_dsn: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from taskforce.infrastructure.state import _postgres_store

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the log is broken")

        async with self._store(postgres_dsn) as store:
            await store.append("kept", {"n": 0})
            await self._ended(postgres_server, store)
            monkeypatch.setattr(_postgres_store._LOG, "info", broken)
            loaded = await store.load("kept")
        assert {"missions": [{"n": 0}]} == loaded

    async def test_a_write_under_way_is_not_run_again(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """An append whose connection the server ends after its first statement may have
        been written as far as the append knows: it fails, and the next one is written."""
        async with self._store(postgres_dsn) as store:
            await store.append("once", {"n": 0})
            original = store._transact

            async def ended_mid_append(*args: Any, **kwargs: Any) -> Any:
                work = args[2]

                async def then_end(conn: Any) -> Any:
                    await conn.fetchval("SELECT 1")
                    await _fetch(
                        postgres_dsn,
                        f"SELECT pg_terminate_backend({conn.get_server_pid()}, 10000)",
                    )
                    return await work(conn)

                return await original(args[0], args[1], then_end, *args[3:], **kwargs)

            store._transact = ended_mid_append  # type: ignore[method-assign]
            with pytest.raises(StateStoreUnavailableError):
                await store.append("once", {"n": 1})
            store._transact = original  # type: ignore[method-assign]
            loaded = await store.load("once")
        assert {"missions": [{"n": 0}]} == loaded

    async def test_connections_replaced_unanswered_leave_no_unread_error(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """The pool's other connection, ended too but not closed (a proxy in between),
        is closed in the background when its replacement is made: its close is never
        answered, and fails at its timeout unread by anyone; asyncio reports no task
        exception never retrieved."""
        import asyncpg

        loop = asyncio.get_running_loop()
        unread: list[dict[str, Any]] = []
        previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda _, context: unread.append(context))
        dsn = _with(postgres_dsn, "application_name=unanswered")
        try:
            async with FreezableRelay(postgres_server.port) as relay:
                relayed = dsn.replace(f":{postgres_server.port}/", f":{relay.port}/")
                store = PostgresStateStore(relayed, pool_size=2, timeout_seconds=1)
                async with store:
                    await asyncio.gather(store.load("warm"), store.load("warm"))
                    relay.hold_server_close()
                    watch = await asyncpg.connect(postgres_dsn)
                    try:
                        await watch.fetchval(_END_THE_APPLICATIONS_CONNECTIONS, "unanswered")
                    finally:
                        await watch.close()
                    await asyncio.sleep(0.1)  # the FATALs reach the idle connections
                    loaded = [await store.load("kept"), await store.load("kept")]
            gc.collect()
        finally:
            loop.set_exception_handler(previous)
        assert [None, None] == loaded
        assert [] == [context.get("message") for context in unread]


# Ends the server processes of one application's connections, and returns once they are
# gone (each has sent its FATAL), within 10 s.
_END_THE_APPLICATIONS_CONNECTIONS = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000))
FROM pg_stat_activity WHERE application_name = $1
"""


@contextlib.asynccontextmanager
async def _relayed(
    server: PostgresServer, dsn: str, **options: Any
) -> AsyncIterator[tuple[FreezableRelay, PostgresStateStore]]:
    """A relay to ``server``, and an open store on ``dsn`` that connects through it."""
    async with FreezableRelay(server.port) as relay:
        relayed = dsn.replace(f":{server.port}/", f":{relay.port}/")
        async with PostgresStateStore(relayed, **options) as store:
            yield relay, store


class TestLinkLostAfterTheCommit:
    """The server confirms a commit, then the link dies (a database restart, a network cut)
    before the pool has reset the connection to take it back: what was written stays
    written, so the call succeeds. Failing it would fail a mission whose record is stored,
    and a client retrying it would write the record twice."""

    async def test_an_append_the_server_committed_succeeds(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        async with _relayed(postgres_server, postgres_dsn) as (relay, store):
            await store.append("cut", {"n": 0})
            relay.cut_after(b"COMMIT\x00")
            appended = await store.append("cut", {"n": 1})
            relay.cut_after(None)
            assert 1 == relay.cuts
            assert {"missions": [{"n": 0}, {"n": 1}]} == await store.load("cut")
        assert (2, 0) == (appended.records, appended.dropped)

    async def test_a_save_and_a_load_the_server_answered_succeed(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        async with _relayed(postgres_server, postgres_dsn) as (relay, store):
            relay.cut_after(b"COMMIT\x00")
            size = await store.save("cut", {"k": 1, "missions": [{"n": 0}]})
            loaded = await store.load("cut")
            relay.cut_after(None)
            assert 2 == relay.cuts
        assert {"k": 1, "missions": [{"n": 0}]} == loaded
        assert size > 0

    async def test_a_link_silent_after_the_commit_is_no_timeout(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """The deadline passes while the pool waits to reset the connection: written, so
        the call returns what it wrote. The connection is closed behind it, and the pool's
        failure to reset it is read: asyncio reports no task exception never retrieved."""
        loop = asyncio.get_running_loop()
        unread: list[dict[str, Any]] = []
        previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda _, context: unread.append(context))
        try:
            async with _relayed(postgres_server, postgres_dsn, timeout_seconds=1) as (relay, store):
                await store.append("silent", {"n": 0})
                relay.cut_after(b"COMMIT\x00", hang=True)
                appended = await store.append("silent", {"n": 1})
                assert 1 == relay.cuts
                await asyncio.wait_for(relay.hung_up.wait(), 60)  # the driver closed it
                await asyncio.wait_for(asyncio.gather(*_ABANDONED, return_exceptions=True), 60)
                gc.collect()
        finally:
            loop.set_exception_handler(previous)
        assert [] == [context.get("message") for context in unread]
        assert 2 == appended.records
        async with PostgresStateStore(postgres_dsn) as direct:
            assert {"missions": [{"n": 0}, {"n": 1}]} == await direct.load("silent")


#: Triggers on the records that make an append slow before its COMMIT (``{before}`` s, in
#: the INSERT) and in it (``{during}`` s, a deferred trigger that runs at COMMIT and lets
#: no cancel request stop it, as a COMMIT the server has already done cannot be stopped).
_SLOW_COMMIT = """
CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep({before}); RETURN NEW; END $$;
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN PERFORM pg_sleep({during}); EXCEPTION WHEN query_canceled THEN NULL; END;
    RETURN NULL;
END $$;
CREATE TRIGGER slow_insert BEFORE INSERT ON taskforce_mission_records
    FOR EACH ROW EXECUTE FUNCTION slow_insert();
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON taskforce_mission_records
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
"""


class TestCommitAtTheDeadline:
    async def test_an_append_whose_commit_the_server_does_is_no_failure(
        self, postgres_dsn: str
    ) -> None:
        """The deadline passes while the append's COMMIT is under way (a lock released late,
        a slow disk), and the server commits it: the call returns what it wrote, as the
        database holds it. Cancelled at the deadline instead, it failed with TimeoutError
        while its record was stored: a mission failed whose record says completed, and a
        client retrying it would write the record twice."""
        import asyncpg

        async with PostgresStateStore(postgres_dsn) as first:
            await first.append("late", {"n": 0})
        owner = await asyncpg.connect(postgres_dsn)
        try:
            await owner.execute(_SLOW_COMMIT.format(before=1.2, during=1.5))
        finally:
            await owner.close()
        store = PostgresStateStore(postgres_dsn, timeout_seconds=2)
        try:
            appended = await store.append("late", {"n": 1})
            loaded = await store.load("late")
        finally:
            await store.aclose()
        assert {"missions": [{"n": 0}, {"n": 1}]} == loaded
        assert 2 == appended.records


class TestIdleConnections:
    """A load balancer or NAT between the store and the database forgets a flow idle
    longer than its idle timeout, and tells neither side: bytes sent on it are lost."""

    async def test_a_call_after_the_flow_was_forgotten_succeeds(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """A call after the pool's connection sat idle past what the network remembers
        gets a new connection, instead of failing at the deadline on the dead one."""
        async with FreezableRelay(postgres_server.port, idle_seconds=1) as relay:
            dsn = postgres_dsn.replace(f":{postgres_server.port}/", f":{relay.port}/")
            store = PostgresStateStore(dsn, timeout_seconds=2, pool_idle_seconds=0.5)
            try:
                await store.append("idle", {"n": 0})
                await asyncio.sleep(2)  # idle longer than the relay remembers a flow
                appended = await store.append("idle", {"n": 1})
                loaded = await store.load("idle")
            finally:
                await store.aclose()
        assert 2 == appended.records
        assert {"missions": [{"n": 0}, {"n": 1}]} == loaded
        assert 0 == relay.forgotten  # no connection was used after the network forgot it


class TestDriverContext:
    async def test_the_pools_own_work_names_no_finished_mission(
        self, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A connection opened during a mission and closed by the pool after it ended, for
        being idle: the pool's work carries no session or mission id (it had the ended one's)."""
        from asyncpg.connection import Connection

        contexts: list[dict[str, object]] = []
        closed = asyncio.Event()
        terminate = Connection.terminate

        def spy(conn: Connection) -> None:
            contexts.append(structlog.contextvars.get_contextvars())
            closed.set()
            terminate(conn)

        monkeypatch.setattr(Connection, "terminate", spy)
        store = PostgresStateStore(postgres_dsn, pool_idle_seconds=0.1)
        try:
            with structlog.contextvars.bound_contextvars(session_id="ended", mission_id="m1"):
                await store.load("ended")  # the pool and its connection are made here
            await asyncio.wait_for(closed.wait(), 60)  # left idle, the pool closes it
        finally:
            await store.aclose()
        assert {} == contexts[0]


class TestDeadline:
    async def test_an_append_to_a_hung_database_ends_within_the_timeout(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """state.timeout_seconds bounds the whole append, not each step of it: a database
        that stops answering mid-run fails the call after the timeout, not after the
        statement's timeout plus the wait for its cancel request."""
        timeout = 1.0
        async with FreezableRelay(postgres_server.port) as proxy:
            dsn = postgres_dsn.replace(f":{postgres_server.port}/", f":{proxy.port}/")
            store = PostgresStateStore(dsn, timeout_seconds=timeout)
            try:
                await store.append("hung", {"n": 0})
                proxy.freeze()
                started = asyncio.get_running_loop().time()
                with pytest.raises(StateStoreUnavailableError) as info:
                    await store.append("hung", {"n": 1})
                took = asyncio.get_running_loop().time() - started
            finally:
                await store.aclose()
        assert took < timeout * 1.5
        assert "TimeoutError" in str(info.value)
        assert "no answer within 1 s (state.timeout_seconds)" in info.value.detail

    @pytest.mark.parametrize("operation", ["append", "load"])
    async def test_a_call_no_pooled_connection_frees_up_for_says_so(
        self, postgres_dsn: str, operation: str
    ) -> None:
        """Every connection of state.pool_size in use for the whole deadline (calls before
        this one, stuck on a slow database): the call fails naming the pool it waited
        for, not a database that did not answer (it never reached one)."""
        store = PostgresStateStore(postgres_dsn, pool_size=1, timeout_seconds=0.5)
        try:
            await store.append("busy", {"n": 0})
            assert store._pool is not None
            async with store._pool.acquire():  # another call holding the only connection
                with pytest.raises(StateStoreUnavailableError) as info:
                    if operation == "append":
                        await store.append("waiting", {"n": 1})
                    else:
                        await store.load("busy")
            assert {"missions": [{"n": 0}]} == await store.load("busy")  # free again: it works
        finally:
            await store.aclose()
        action = "save" if operation == "append" else "load"
        assert f"cannot {action} state of session" in str(info.value)
        assert str(info.value).endswith(": TimeoutError")
        assert (
            "TimeoutError: no pooled connection free within 0.5 s (state.timeout_seconds): "
            "all 1 of state.pool_size in use"
        ) == info.value.detail

    async def test_a_call_waiting_for_a_connection_when_the_store_closes_is_unavailable(
        self, postgres_dsn: str
    ) -> None:
        """aclose() while a call waits for a pooled connection: the connection freed for
        it is the one the pool is closing, so the call runs nothing on it and fails as the
        database unavailable (a 503, not the driver's protocol error); nothing is written."""
        store = PostgresStateStore(postgres_dsn, pool_size=1)
        await store.append("closing", {"n": 0})
        pool = store._pool
        assert pool is not None
        held = await pool.acquire()  # another call holding the only connection
        waiting = asyncio.create_task(store.append("closing", {"n": 1}))
        await asyncio.sleep(0.05)  # the append waits for the pool
        closing = asyncio.create_task(store.aclose())
        await asyncio.sleep(0.05)  # the pool waits for its connection to be released
        await pool.release(held)
        await closing
        with pytest.raises(StateStoreUnavailableError) as info:
            await waiting
        try:
            assert {"missions": [{"n": 0}]} == await store.load("closing")  # a new pool
        finally:
            await store.aclose()
        assert "cannot save state of session 'closing': the state store was closed" == str(
            info.value
        )
        assert (
            "the state store was closed while the call waited for a pooled connection"
            == info.value.detail
        )


class TestCheckHealth:
    async def test_a_database_that_answers_is_reachable(self, postgres_dsn: str) -> None:
        """SELECT 1 answered: reachable, backend postgres; a store not opened yet connects."""
        store = PostgresStateStore(postgres_dsn)
        try:
            assert StateStoreHealth(is_reachable=True) == await store.check_health()
            assert "postgres" == store.backend
            assert None is await store.load("untouched")  # the check left the pool open
        finally:
            await store.aclose()

    async def test_a_closed_port_is_unreachable_by_its_class(self) -> None:
        """Nobody listening: unreachable, the reason the refusal's class, nothing of the DSN."""
        pytest.importorskip("asyncpg")
        port = free_ports(1)
        store = PostgresStateStore(f"postgresql://u:secret-xyzzy@127.0.0.1:{port}/x")
        health = await store.check_health()
        assert StateStoreHealth(is_reachable=False, error="ConnectionRefusedError") == health

    async def test_a_wrong_password_is_unreachable_without_it(self, postgres_dsn: str) -> None:
        """A refused login: unreachable, the driver's class of it; neither password is named."""
        password = postgres_dsn.split(":")[2].split("@")[0]
        wrong = postgres_dsn.replace(password, "not-the-pw-xyzzy")
        store = PostgresStateStore(wrong, timeout_seconds=5)
        health = await store.check_health()
        assert StateStoreHealth(is_reachable=False, error="InvalidPasswordError") == health

    async def test_a_user_lacking_privileges_is_unreachable_by_that_refusal(
        self, postgres_dsn: str
    ) -> None:
        """A user that may only read the tables: the store cannot be opened, so the check
        says unreachable with the refusal's class, not the user (the start-up line names it)."""
        async with PostgresStateStore(postgres_dsn):
            pass
        grants = [_USAGE, f"GRANT SELECT ON {_TABLES} TO {{role}}"]
        user = await create_user(postgres_dsn, grants=grants)
        store = PostgresStateStore(user.dsn)
        try:
            health = await store.check_health()
        finally:
            await store.aclose()
        assert StateStoreHealth(is_reachable=False, error="StateStorePermissionError") == health

    async def test_a_hung_database_is_unreachable_by_the_deadline(
        self, postgres_server: PostgresServer, postgres_dsn: str
    ) -> None:
        """A database that stops answering: the check ends at state.timeout_seconds, unreachable
        with the wait as its reason, and once it answers again it is reachable."""
        async with FreezableRelay(postgres_server.port) as relay:
            dsn = postgres_dsn.replace(f":{postgres_server.port}/", f":{relay.port}/")
            store = PostgresStateStore(dsn, timeout_seconds=0.5)
            try:
                assert True is (await store.check_health()).is_reachable
                relay.freeze()
                health = await store.check_health()
                relay.thaw()
                assert True is (await store.check_health()).is_reachable
            finally:
                await store.aclose()
        said = "TimeoutError: no answer within 0.5 s (state.timeout_seconds)"
        assert StateStoreHealth(is_reachable=False, error=said) == health


# The store's insert into taskforce_sessions waits for the advisory lock {statement};
# cancelled there (the driver's cancel request), it takes {clean_up} before it fails. The
# driver waits for a cancelled statement's end before it rolls back, so the call's
# clean-up is under way for as long as the test holds {clean_up}. The server may signal
# one cancel request twice (to the backend, then to its process group), so a second
# cancellation of the wait for {clean_up} is caught too.
_HOLD = """
CREATE FUNCTION taskforce_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({statement});
    RETURN NEW;
EXCEPTION WHEN query_canceled THEN
    LOOP
        BEGIN
            PERFORM pg_advisory_xact_lock({clean_up});
            EXIT;
        EXCEPTION WHEN query_canceled THEN
            NULL;
        END;
    END LOOP;
    RAISE query_canceled;
END $$;
CREATE TRIGGER taskforce_hold BEFORE INSERT ON taskforce_sessions
    FOR EACH ROW EXECUTE FUNCTION taskforce_hold();
"""

_UNTIL_AWAITED = """
DO $$ BEGIN
    WHILE NOT EXISTS (
        SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = {key}
    ) LOOP
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$
"""


class _Held:
    """A store of one pooled connection whose append the test holds (see _HOLD).

    Its locks are its own (advisory locks are the database's, which every test shares),
    so what one test leaves waiting cannot be mistaken for another's.
    """

    def __init__(self, store: PostgresStateStore, holder: Any, watch: Any) -> None:
        self.store = store
        self._holder = holder
        self._watch = watch
        self.statement = 2 * secrets.randbelow(2**30)
        self.clean_up = self.statement + 1

    async def hold(self) -> None:
        """Add the trigger and take both its locks."""
        await self._holder.execute(_HOLD.format(statement=self.statement, clean_up=self.clean_up))
        await self._holder.execute(
            "SELECT pg_advisory_lock($1), pg_advisory_lock($2)", self.statement, self.clean_up
        )

    async def append(self) -> asyncio.Task[AppendResult]:
        """Start an append to session 'held'; return it once its statement waits."""
        call = asyncio.create_task(self.store.append("held", {"n": 1}))
        await self._until_awaited(self.statement)
        return call

    async def until_cleaning_up(self) -> None:
        """Return once the cancelled statement holds its connection's clean-up up."""
        await self._until_awaited(self.clean_up)

    async def end_clean_up(self) -> None:
        """Let the cancelled statement end, and so its connection's clean-up."""
        await self._holder.execute("SELECT pg_advisory_unlock($1)", self.clean_up)

    async def next_append(self) -> AppendResult:
        """Let statements through and append again (on the pool's one connection)."""
        await self._holder.execute("SELECT pg_advisory_unlock($1)", self.statement)
        return await self.store.append("held", {"n": 2})

    async def _until_awaited(self, key: int) -> None:
        await self._watch.execute(_UNTIL_AWAITED.format(key=key), timeout=60)


@pytest.fixture(name="held")
async def fixture_held(postgres_dsn: str) -> AsyncIterator[_Held]:
    """A store on a fresh database whose appends wait until the test lets them go."""
    import asyncpg

    store = PostgresStateStore(postgres_dsn, pool_size=1)
    await store.open()
    holder, watch = await asyncpg.connect(postgres_dsn), await asyncpg.connect(postgres_dsn)
    try:
        held = _Held(store, holder, watch)
        await held.hold()
        yield held
    finally:
        await store.aclose()
        await holder.close()
        await watch.close()


@contextlib.contextmanager
def _loop_reports() -> Iterator[list[str]]:
    """What asyncio reports to the running loop meanwhile ("Task exception was never
    retrieved", "Task was destroyed but it is pending", the driver's complaints)."""
    loop = asyncio.get_running_loop()
    reports: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reports.append(str(context["message"])))
    try:
        yield reports
    finally:
        gc.collect()  # a task lost with its outcome unread is reported when collected
        loop.set_exception_handler(previous)


class TestCancellation:
    async def test_a_second_cancellation_leaves_the_clean_up_behind(self, held: _Held) -> None:
        """Cancelled, then cancelled again while its connection is being cleaned up: the
        call raises at once and does not pass the second cancellation on; the clean-up
        ends on its own and its task leaves _ABANDONED; the pool's one connection serves
        the next call; asyncio reports nothing."""
        before = set(_ABANDONED)
        with _loop_reports() as reports:
            call = await held.append()
            call.cancel()
            await held.until_cleaning_up()
            assert not call.done()  # a first cancellation waits for the clean-up
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            (clean_up,) = _ABANDONED - before
            assert not clean_up.done()
            await held.end_clean_up()
            await asyncio.wait({clean_up})
            assert before == _ABANDONED
            assert 1 == (await held.next_append()).records
            assert {"missions": [{"n": 2}]} == await held.store.load("held")
        assert [] == reports

    async def test_two_cancellations_at_once_are_one(self, held: _Held) -> None:
        """Two cancellations before the call runs again are one: it waits for its clean-up,
        then raises, leaving nothing behind (pins the behaviour before the fix)."""
        before = set(_ABANDONED)
        with _loop_reports() as reports:
            call = await held.append()
            call.cancel()
            call.cancel()
            await held.until_cleaning_up()
            assert not call.done()
            await held.end_clean_up()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert before == _ABANDONED
            assert 1 == (await held.next_append()).records
        assert [] == reports

    async def test_a_cancelled_call_waits_for_its_clean_up_until_its_deadline_only(
        self,
    ) -> None:
        """A call cancelled once waits for its work's clean-up no longer than the deadline of
        the whole call (state.timeout_seconds); the clean-up then goes on and ends behind it."""
        started, let_go, cleaned = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def work() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:  # a clean-up that takes as long as the test says
                await let_go.wait()
                cleaned.set()

        before = set(_ABANDONED)
        # only so that the code before the fix, which waits for the clean-up, ends
        unstick = asyncio.get_running_loop().call_later(30, let_go.set)
        try:
            with _loop_reports() as reports:
                call = asyncio.create_task(_in_own_context(work(), deadline=0.2))
                await started.wait()
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
                (clean_up,) = _ABANDONED - before
                assert not cleaned.is_set()
                let_go.set()
                await asyncio.wait({clean_up})
                assert cleaned.is_set()
                assert before == _ABANDONED
        finally:
            unstick.cancel()
        assert [] == reports


_DAY = StateLimits(session_ttl_seconds=86400)


async def _age_all(dsn: str, seconds: float) -> None:
    """Make every session look last written ``seconds`` ago."""
    await _fetch(
        dsn, f"UPDATE taskforce_sessions SET updated_at = now() - interval '{seconds} seconds'"
    )


async def _sweep_stopped_at(store: PostgresStateStore, reached: asyncio.Event) -> list[Any]:
    """Start a sweep of ``store``, stop it (as the app's shutdown does) once ``reached``
    is set, and return its log lines' event, ``expired`` and ``cancelled``."""
    sweeper = SessionSweeper(store, interval_seconds=60)
    with structlog.testing.capture_logs() as logs:
        sweeper.start()
        await asyncio.wait_for(reached.wait(), 5)
        await asyncio.wait_for(sweeper.aclose(), 5)
    return [(log["event"], log["expired"], log["cancelled"]) for log in logs]


class TestExpiry:
    async def test_a_row_another_transaction_holds_is_skipped_not_waited_for(
        self, postgres_dsn: str
    ) -> None:
        """A sweep takes no expired session whose row another transaction holds (an append,
        a save, another replica's sweep): it deletes the rest at once, with their records,
        and the held one at the next sweep."""
        import asyncpg

        async with PostgresStateStore(postgres_dsn, limits=_DAY) as store:
            for session in ("held", "free"):
                await store.append(session, {"n": 1})
                await store.append(session, {"n": 2})
            await _age_all(postgres_dsn, 2 * 86400)
            holder = await asyncpg.connect(postgres_dsn)
            try:
                async with holder.transaction():
                    await holder.execute(
                        "SELECT 1 FROM taskforce_sessions WHERE session_id = 'held' FOR UPDATE"
                    )
                    first = await asyncio.wait_for(store.expire_sessions(), 5)
            finally:
                await holder.close()
            second = await store.expire_sessions()
        assert (SessionExpiry(1), SessionExpiry(1)) == (first, second)
        assert [(0,), (0,)] == [
            *await _fetch(postgres_dsn, "SELECT count(*) FROM taskforce_sessions"),
            *await _fetch(postgres_dsn, "SELECT count(*) FROM taskforce_mission_records"),
        ]

    async def test_a_replica_whose_clock_is_off_expires_by_the_databases_clock(
        self, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Replica B's wall clock is a day ahead of replica A's and of the database's:
        its sweep and reads leave the session A wrote just now, and take only the one
        idle past the TTL by the database's clock."""
        import time

        async with PostgresStateStore(postgres_dsn, limits=_DAY) as a:
            await a.append("idle", {"n": 1})
            await _age_all(postgres_dsn, 2 * 86400)
            await a.append("live", {"n": 1})
            wall = time.time
            monkeypatch.setattr(time, "time", lambda: wall() + 86400)
            async with PostgresStateStore(postgres_dsn, limits=_DAY) as b:
                assert SessionExpiry(1) == await b.expire_sessions()
                assert {"missions": [{"n": 1}]} == await b.load("live")
                assert 2 == (await b.append("live", {"n": 2})).records

    async def test_batches_go_on_until_no_expired_session_is_left(
        self, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One sweep deletes every expired session however many batches it takes, each a
        transaction of its own; a session written since stays."""
        import taskforce.infrastructure.state._postgres_store as module

        monkeypatch.setattr(module, "EXPIRY_BATCH", 2)
        async with PostgresStateStore(postgres_dsn, limits=_DAY) as store:
            await asyncio.gather(*(store.append(f"s{i}", {"n": i}) for i in range(5)))
            await _age_all(postgres_dsn, 2 * 86400)
            await store.append("s4", {"n": 44})
            calls: list[str] = []
            run = store._run

            async def counted(action: str, *args: Any) -> Any:
                calls.append(action)
                return await run(action, *args)

            monkeypatch.setattr(store, "_run", counted)
            assert SessionExpiry(4) == await store.expire_sessions()
            assert ["expire", "expire", "expire"] == calls  # 2, 2, then 0: none left
            assert {"missions": [{"n": 44}]} == await store.load("s4")
        assert [("s4", 1)] == await _fetch(
            postgres_dsn,
            "SELECT session_id, count(*)::int FROM taskforce_mission_records GROUP BY 1",
        )

    async def test_a_sweep_whose_later_batch_fails_logs_what_it_deleted(
        self, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """DELETE revoked after the first batch committed: the second fails, and the
        failure line counts the first batch's sessions (they stay deleted)."""
        import taskforce.infrastructure.state._postgres_store as module

        monkeypatch.setattr(module, "EXPIRY_BATCH", 2)
        async with PostgresStateStore(postgres_dsn):
            pass
        user = await create_user(postgres_dsn)
        async with PostgresStateStore(user.dsn, limits=_DAY) as store:
            await asyncio.gather(*(store.append(f"s{i}", {"n": i}) for i in range(3)))
            await _age_all(postgres_dsn, 2 * 86400)
            run = store._run

            async def revoking_after_the_first(action: str, *args: Any) -> Any:
                if calls:
                    revoke = f"REVOKE DELETE ON taskforce_sessions FROM {user.role}"
                    await _fetch(postgres_dsn, revoke)
                calls.append(action)
                return await run(action, *args)

            calls: list[str] = []
            monkeypatch.setattr(store, "_run", revoking_after_the_first)
            with structlog.testing.capture_logs() as logs:
                assert None is await SessionSweeper(store, interval_seconds=60).sweep()
        assert [
            (
                "state.sessions.expiry.failed",
                2,
                "StateStoreError: cannot expire sessions: InsufficientPrivilegeError",
            )
        ] == [(log["event"], log["expired"], log["error"]) for log in logs]
        assert [(1,)] == await _fetch(postgres_dsn, "SELECT count(*) FROM taskforce_sessions")

    async def test_a_sweep_stopped_between_batches_logs_what_it_deleted(
        self, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The app's shutdown cancels a sweep after its first batch committed: the
        sessions that batch deleted are logged, as state.sessions.expired cancelled."""
        import taskforce.infrastructure.state._postgres_store as module

        monkeypatch.setattr(module, "EXPIRY_BATCH", 2)
        async with PostgresStateStore(postgres_dsn, limits=_DAY) as store:
            await asyncio.gather(*(store.append(f"s{i}", {"n": i}) for i in range(3)))
            await _age_all(postgres_dsn, 2 * 86400)
            run, second = store._run, asyncio.Event()

            async def stalling_at_the_second(action: str, *args: Any) -> Any:
                if calls:
                    second.set()
                    await asyncio.Event().wait()
                calls.append(action)
                return await run(action, *args)

            calls: list[str] = []
            monkeypatch.setattr(store, "_run", stalling_at_the_second)
            logged = await _sweep_stopped_at(store, second)
        assert [("state.sessions.expired", 2, True)] == logged
        assert [(1,)] == await _fetch(postgres_dsn, "SELECT count(*) FROM taskforce_sessions")

    async def test_a_batch_committed_as_the_sweep_is_stopped_is_counted(
        self, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Cancelled after its batch committed, while the connection goes back to the
        pool: the batch's sessions are gone, and logged."""
        async with PostgresStateStore(postgres_dsn, limits=_DAY) as store:
            await asyncio.gather(*(store.append(f"s{i}", {"n": i}) for i in range(3)))
            await _age_all(postgres_dsn, 2 * 86400)
            transact, committed = store._transact, asyncio.Event()

            async def slow_to_give_back(*args: Any) -> Any:
                result = await transact(*args)
                committed.set()
                await asyncio.Event().wait()  # the pool taking the connection back
                return result

            monkeypatch.setattr(store, "_transact", slow_to_give_back)
            logged = await _sweep_stopped_at(store, committed)
        assert [("state.sessions.expired", 3, True)] == logged
        assert [(0,)] == await _fetch(postgres_dsn, "SELECT count(*) FROM taskforce_sessions")

    async def test_a_user_without_delete_on_the_sessions_is_refused_only_with_a_ttl(
        self, postgres_dsn: str
    ) -> None:
        """The least privileges serve a store that keeps sessions for good; one whose
        sessions expire also needs DELETE on taskforce_sessions, and start-up says so."""
        async with PostgresStateStore(postgres_dsn):
            pass
        user = await create_user(postgres_dsn, grants=_LEAST_GRANTS)
        async with PostgresStateStore(user.dsn):
            pass
        store = PostgresStateStore(user.dsn, limits=_DAY)
        with pytest.raises(StateStorePermissionError) as info:
            await store.open()
        assert (
            f"cannot use the state database: the database user {user.role!r} lacks DELETE on "
            f"taskforce_sessions (in schema {_schema(postgres_dsn)!r}); "
            "state.session_ttl_seconds deletes expired sessions: grant it, or give state.dsn "
            "a user that has it"
        ) == str(info.value)

    async def test_a_failed_sweep_says_what_failed_and_deletes_nothing(
        self, postgres_dsn: str
    ) -> None:
        """DELETE revoked while the store runs: the sweep raises a StateStoreError naming
        no session (the database's words in its detail), and the sessions stay."""
        async with PostgresStateStore(postgres_dsn):
            pass
        user = await create_user(postgres_dsn)
        async with PostgresStateStore(user.dsn, limits=_DAY) as store:
            await store.append("s", {"n": 1})
            await _age_all(postgres_dsn, 2 * 86400)
            await _fetch(postgres_dsn, f"REVOKE DELETE ON taskforce_sessions FROM {user.role}")
            with pytest.raises(StateStoreError) as info:
                await store.expire_sessions()
        assert "cannot expire sessions: InsufficientPrivilegeError" == str(info.value)
        assert "permission denied for table taskforce_sessions" in info.value.detail
        assert [(1,)] == await _fetch(postgres_dsn, "SELECT count(*) FROM taskforce_sessions")
