"""The PostgreSQL state store's schema: its tables, its version, and the statements the store runs.

Each session is one row of ``taskforce_sessions`` (the state without its
``missions``, as JSON text); each mission record is one row of
``taskforce_mission_records``. Records are JSON *text*, not ``jsonb``: ``jsonb``
refuses ``\\u0000`` and lone surrogates, which a tool's output may carry.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "APPEND_RECORD",
    "CREATE_SCHEMA",
    "DELETE_RECORDS",
    "DELETE_SESSION",
    "ENCODING_QUERY",
    "EXPIRE_SESSIONS",
    "INSERT_RECORD",
    "ISOLATION",
    "LOAD_SESSION",
    "MIGRATIONS",
    "RECORD_VERSION",
    "SCHEMA_IS_COMPLETE",
    "SCHEMA_LOCK",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_QUERY",
    "TRIM_RECORDS",
    "UNVERSIONED_SCHEMA",
    "UPSERT_SESSION",
    "can_migrate",
    "encoding_refusal",
    "unversioned_refusal",
    "version_refusal",
]

#: The schema this code reads and writes; a later change adds a step to MIGRATIONS.
SCHEMA_VERSION = 1

#: The statements that take the schema of each version to the next: a start-up on an
#: older schema runs them in order, under the schema lock, recording each version it
#: reaches. Version 1 is the first schema, so there are none yet.
MIGRATIONS: dict[int, str] = {}

#: The isolation of every transaction of the store, whatever the database's
#: ``default_transaction_isolation``: each statement must see what the transaction it
#: waited for committed (the schema version, a session row's new counts). Under
#: REPEATABLE READ or SERIALIZABLE concurrent appends to one session fail instead.
ISOLATION: Final[Literal["read_committed"]] = "read_committed"

#: The database encodings that hold every character a record may carry: UTF8, and
#: SQL_ASCII, which keeps the bytes it is given unchecked. Any other refuses a save
#: of text outside its character set (an emoji, Cyrillic or CJK under LATIN1).
ENCODINGS = ("UTF8", "SQL_ASCII")

# The database the DSN names, its encoding (the server's, for this database), and the
# encoding of the connection, in which the driver encodes what it sends.
ENCODING_QUERY = """
SELECT current_database() AS database, current_setting('server_encoding') AS encoding,
       current_setting('client_encoding') AS client_encoding
"""

#: The advisory lock that orders replicas creating the schema at the same time.
SCHEMA_LOCK = 0x7A5CF04CE

CREATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS taskforce_schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS taskforce_sessions (
    session_id text PRIMARY KEY,
    state text NOT NULL DEFAULT '{}',
    has_missions boolean NOT NULL DEFAULT true,
    records integer NOT NULL DEFAULT 0,
    size_bytes bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS taskforce_mission_records (
    session_id text NOT NULL REFERENCES taskforce_sessions (session_id) ON DELETE CASCADE,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    record text NOT NULL,
    size_bytes integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX IF NOT EXISTS taskforce_sessions_updated_at ON taskforce_sessions (updated_at);
INSERT INTO taskforce_schema_version (version) VALUES (1) ON CONFLICT DO NOTHING;
"""

# The version, and the schema the version table is in (where the search path found it).
SCHEMA_VERSION_QUERY = """
SELECT (SELECT max(version) FROM taskforce_schema_version) AS version,
       (SELECT c.relnamespace::regnamespace::text FROM pg_class c
        WHERE c.oid = to_regclass('taskforce_schema_version')) AS schema
"""

RECORD_VERSION = "INSERT INTO taskforce_schema_version (version) VALUES ($1)"

# Whether the version table exists where the search path puts it (a query of a missing
# table would be logged as an error by the server).
VERSION_TABLE_EXISTS = "SELECT to_regclass('taskforce_schema_version') IS NOT NULL"

# Whether all three tables exist where the search path puts them: a start on a complete
# schema runs no CREATE, so a user with only SELECT, INSERT, UPDATE and DELETE on the
# tables (no CREATE on the schema) can start once the schema exists.
SCHEMA_IS_COMPLETE = """
SELECT to_regclass('taskforce_schema_version') IS NOT NULL
   AND to_regclass('taskforce_sessions') IS NOT NULL
   AND to_regclass('taskforce_mission_records') IS NOT NULL
"""

# The schema of session or record tables the search path finds without a version table
# beside them (no row when there are none, or the version table is there).
UNVERSIONED_SCHEMA = """
SELECT c.relnamespace::regnamespace::text FROM pg_class c
WHERE to_regclass('taskforce_schema_version') IS NULL
  AND c.oid IN (to_regclass('taskforce_sessions'), to_regclass('taskforce_mission_records'))
LIMIT 1
"""

# Whether the row ``s`` of a session is alive under the time to live $N (seconds, 0:
# for good): written no longer ago than that, by the database's clock.
_ALIVE = "({ttl}::float8 = 0 OR s.updated_at >= now() - make_interval(secs => {ttl}::float8))"

# The upsert takes the session row's lock until commit: appends to one session
# are ordered across every replica, appends to different sessions never wait.
# A session expired under the time to live $3 is locked but not updated, and no row
# returned: the caller deletes it (DELETE_SESSION) and appends again, to a new one.
APPEND_RECORD = f"""
INSERT INTO taskforce_sessions AS s (session_id, records, size_bytes)
VALUES ($1, 1, $2::bigint + 2)
ON CONFLICT (session_id) DO UPDATE SET
    records = s.records + 1,
    size_bytes = s.size_bytes + $2::bigint,
    has_missions = true,
    updated_at = now()
WHERE {_ALIVE.format(ttl="$3")}
RETURNING records, size_bytes, octet_length(state) AS overhead
"""

# Its records go with it (ON DELETE CASCADE).
DELETE_SESSION = "DELETE FROM taskforce_sessions WHERE session_id = $1"

# At most $2 sessions not written for longer than $1 seconds, with their records (ON
# DELETE CASCADE), in one statement; found through the index on ``updated_at``, so a
# sweep reads the expired rows, not the whole table. A row another transaction holds (an append, a
# save, another replica's sweep) is skipped, not waited for: the next sweep takes it if
# it is still expired then. One written since this statement began is not expired any
# more when its lock is taken (READ COMMITTED looks at the row again), and stays.
EXPIRE_SESSIONS = """
WITH doomed AS (
    SELECT session_id FROM taskforce_sessions
    WHERE updated_at < now() - make_interval(secs => $1::float8)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM taskforce_sessions s USING doomed d
    WHERE s.session_id = d.session_id
    RETURNING 1
)
SELECT count(*) FROM gone
"""

INSERT_RECORD = """
INSERT INTO taskforce_mission_records (session_id, record, size_bytes) VALUES ($1, $2, $3)
"""

# Keeps the newest records that fit $2 (records) and $4 (bytes, with $3 of state
# besides the records); the newest is always kept.
TRIM_RECORDS = """
WITH ranked AS (
    SELECT seq, row_number() OVER w AS rn, sum(size_bytes) OVER w AS newer_bytes
    FROM taskforce_mission_records WHERE session_id = $1
    WINDOW w AS (ORDER BY seq DESC)
), gone AS (
    DELETE FROM taskforce_mission_records m USING ranked r
    WHERE m.session_id = $1 AND m.seq = r.seq
      AND r.rn > 1 AND (r.rn > $2 OR r.newer_bytes + $3 > $4)
    RETURNING m.size_bytes
)
UPDATE taskforce_sessions SET
    records = records - (SELECT count(*) FROM gone),
    size_bytes = size_bytes - (SELECT coalesce(sum(size_bytes), 0) FROM gone)
WHERE session_id = $1
RETURNING records, size_bytes, (SELECT count(*) FROM gone) AS dropped
"""

UPSERT_SESSION = """
INSERT INTO taskforce_sessions AS s (session_id, state, has_missions, records, size_bytes)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (session_id) DO UPDATE SET
    state = EXCLUDED.state,
    has_missions = EXCLUDED.has_missions,
    records = EXCLUDED.records,
    size_bytes = EXCLUDED.size_bytes,
    updated_at = now()
"""

DELETE_RECORDS = "DELETE FROM taskforce_mission_records WHERE session_id = $1"

# No row for a session expired under the time to live $2, swept away or not yet.
LOAD_SESSION = f"""
SELECT s.state, s.has_missions,
       array(SELECT m.record FROM taskforce_mission_records m
             WHERE m.session_id = s.session_id ORDER BY m.seq) AS records
FROM taskforce_sessions s WHERE s.session_id = $1 AND {_ALIVE.format(ttl="$2")}
"""


def unversioned_refusal(schema: str) -> str:
    """Why this code does not use state tables that have no version table beside them.

    Not made by a start-up, which creates the version table with them, or it was dropped:
    the tables may be anything, so nothing is guessed or written, as for an empty one.

    Args:
        schema: the schema the tables are in.
    """
    return (
        f"the state tables in schema {schema!r} have no schema version: "
        "taskforce_schema_version is missing; if they hold this taskforce's tables "
        f"(version {SCHEMA_VERSION}), create it: CREATE TABLE taskforce_schema_version "
        "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); "
        f"INSERT INTO taskforce_schema_version (version) VALUES ({SCHEMA_VERSION}); "
        "else move the taskforce_ tables aside and start again to create them"
    )


def encoding_refusal(encoding: str, database: str, client_encoding: str = "UTF8") -> str | None:
    """Why this code cannot keep records in a database of ``encoding``, or None.

    Args:
        encoding: the database's encoding, as ``server_encoding`` names it.
        database: the database's name.
        client_encoding: the connection's encoding: the driver asks for UTF8, which
            only a ``client_encoding`` parameter in the DSN overrides.
    """
    lost = (
        "which cannot hold every character a mission record may carry (the save of one "
        "it cannot hold fails, and its mission with it)"
    )
    if encoding not in ENCODINGS:
        return (
            f"the state database {database!r} is encoded {encoding}, {lost}: create a "
            "database with ENCODING 'UTF8' (CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE "
            "template0) and point state.dsn at it"
        )
    if client_encoding != "UTF8":
        return (
            f"the connections to the state database {database!r} use client_encoding "
            f"{client_encoding}, {lost}: remove client_encoding from state.dsn (the store "
            "then connects in UTF8)"
        )
    return None


def version_refusal(version: int | None, schema: str) -> str | None:
    """Why this code cannot use the tables whose schema version the database holds.

    Args:
        version: the highest version in ``taskforce_schema_version``; None when it is empty.
        schema: the schema the tables are in.

    Returns:
        What was found and what to do, or None for the version this code knows or
        migrates from (:func:`can_migrate`).
    """
    if version is None:
        # Not made by a start-up, which records the version with the tables, or its row
        # was deleted: the tables may be anything, so nothing is guessed or written.
        return (
            f"the state tables in schema {schema!r} have no schema version: "
            "taskforce_schema_version is empty; if they hold this taskforce's tables "
            f"(version {SCHEMA_VERSION}), insert it: INSERT INTO taskforce_schema_version "
            f"(version) VALUES ({SCHEMA_VERSION}); else move the taskforce_ tables aside "
            "and start again to create them"
        )
    if version > SCHEMA_VERSION:
        return (
            f"the state database has schema version {version}; "
            f"this taskforce knows version {SCHEMA_VERSION}"
        )
    if version < SCHEMA_VERSION and not can_migrate(version):
        return (
            f"the state database has schema version {version}, which this taskforce "
            f"(version {SCHEMA_VERSION}) cannot migrate: start a release that migrates it "
            "first, or move the taskforce_ tables aside and start "
            "again to create them"
        )
    return None


def can_migrate(version: int) -> bool:
    """Whether :data:`MIGRATIONS` takes a schema of ``version`` to :data:`SCHEMA_VERSION`."""
    return all(step in MIGRATIONS for step in range(version, SCHEMA_VERSION))
