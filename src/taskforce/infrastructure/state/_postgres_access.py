"""What the PostgreSQL store's database user may do, checked once at start-up.

A user that may not write at all (a standby, or read-only transactions by default),
may not create the store's tables (on the first start) or lacks a privilege on them
(on any start) stops start-up with one line that names the user and what it lacks,
instead of failing each mission's write later on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "EXPIRY_PRIVILEGES",
    "TABLE_PRIVILEGES",
    "Refusal",
    "creation_refusal",
    "use_refusal",
    "write_refusal",
]

#: The privileges the store uses on each of its tables once they exist.
TABLE_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "taskforce_schema_version": ("SELECT",),
    "taskforce_sessions": ("SELECT", "INSERT", "UPDATE"),
    "taskforce_mission_records": ("SELECT", "INSERT", "DELETE"),
}

#: What a store whose sessions expire (``state.session_ttl_seconds``) uses besides: it
#: deletes session rows, and their records go with them (the foreign key's cascade,
#: which runs with the table owner's privileges).
EXPIRY_PRIVILEGES: dict[str, tuple[str, ...]] = {"taskforce_sessions": ("DELETE",)}

# current_schema() is where CREATE TABLE puts a table: the first schema of the search
# path that exists and that the user may use (USAGE), or NULL when there is none.
_WHERE_TO_CREATE = """
SELECT current_user, current_schema(), current_setting('search_path'),
       has_schema_privilege(current_schema(), 'CREATE')
"""

_LACKING = """
SELECT current_user, wanted.name, wanted.privilege,
       (SELECT c.relnamespace::regnamespace::text FROM pg_class c
        WHERE c.oid = to_regclass(wanted.name)) AS schema
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS wanted (name, privilege, n)
WHERE NOT has_table_privilege(wanted.name, wanted.privilege)
ORDER BY wanted.n
"""


# What every transaction of the store starts as: a standby takes no writes, and
# default_transaction_read_only makes each transaction read-only unless it says otherwise.
_WRITABLE = """
SELECT current_user, current_database(), pg_is_in_recovery() AS is_standby,
       s.setting = 'on' AS is_read_only, s.source,
       quote_ident(current_user) AS user_sql, quote_ident(current_database()) AS database_sql
FROM pg_settings s WHERE s.name = 'default_transaction_read_only'
"""

_SETTING = "default_transaction_read_only"
_FOR_THE_USER = f"ALTER ROLE {{user_sql}} SET {_SETTING} = off"

# pg_settings.source of default_transaction_read_only -> where it was set, what to do;
# {database} and {source} are filled in, and {user_sql} and {database_sql}: the names
# quoted for SQL, so a statement shown can be run as it is.
_READ_ONLY_SOURCES = {
    "user": (
        "for the role",
        f"reset it (ALTER ROLE {{user_sql}} RESET {_SETTING}), or give state.dsn a user without it",
    ),
    "database": (
        "for the database {database!r}",
        f"reset it (ALTER DATABASE {{database_sql}} RESET {_SETTING}), "
        f"or turn it off for the user ({_FOR_THE_USER})",
    ),
    "database user": (
        "for the role in the database {database!r}",
        f"reset it (ALTER ROLE {{user_sql}} IN DATABASE {{database_sql}} RESET {_SETTING})",
    ),
    # the driver reads no PGOPTIONS: an option of the connection is in the DSN
    "client": ("by the connection (an option in state.dsn)", "remove it there"),
}
_ELSEWHERE = ("in the server's {source}", f"turn it off there, or for the user ({_FOR_THE_USER})")


class Refusal(NamedTuple):
    """What the database refuses its user: who, what it lacks, and what to do about it."""

    user: str
    refusal: str
    remedy: str


async def creation_refusal(conn: Any) -> Refusal | None:
    """Why the user may not create the store's tables, or None when it may.

    Args:
        conn: a connection of the store's pool, in the start-up transaction.

    Returns:
        The refusal: no schema of the search path it may use, or no CREATE on the one
        the tables would go in.
    """
    user, schema, search_path, may_create = await conn.fetchrow(_WHERE_TO_CREATE)
    if schema is None:
        return Refusal(
            user,
            f"may use no schema of its search_path ({search_path})",
            "create the schema or grant the user USAGE on it, "
            "or name another with ?search_path= in state.dsn",
        )
    if not may_create:
        return Refusal(
            user,
            f"lacks CREATE on schema {schema!r}, which the first start needs to create "
            "the state tables",
            "grant it, or start once with a user that has it (the schema's owner); "
            "later starts need only the privileges on the tables",
        )
    return None


async def use_refusal(conn: Any, *, expires: bool = False) -> Refusal | None:
    """Which privileges on the store's tables the user lacks, or None when it has them all.

    Args:
        conn: a connection of the store's pool, in the start-up transaction, once
            the tables exist.
        expires: the store's sessions expire: it needs ``EXPIRY_PRIVILEGES`` too.

    Returns:
        The refusal, naming every privilege missing on each table.
    """
    wanted = [(name, p) for name, privileges in TABLE_PRIVILEGES.items() for p in privileges]
    if expires:
        wanted += [(name, p) for name, privileges in EXPIRY_PRIVILEGES.items() for p in privileges]
    rows = await conn.fetch(_LACKING, [name for name, _ in wanted], [p for _, p in wanted])
    if not rows:
        return None
    lacking: dict[str, list[str]] = {}
    for row in rows:
        lacking.setdefault(row["name"], []).append(row["privilege"])
    said = "; ".join(f"{', '.join(missing)} on {name}" for name, missing in lacking.items())
    them = "it" if len(rows) == 1 else "them"
    refusal = f"lacks {said} (in schema {rows[0]['schema']!r})"
    if expires and "DELETE" in lacking.get("taskforce_sessions", ()):
        refusal += "; state.session_ttl_seconds deletes expired sessions"
    return Refusal(
        rows[0]["current_user"], refusal, f"grant {them}, or give state.dsn a user that has {them}"
    )


async def write_refusal(conn: Any) -> Refusal | None:
    """Why no transaction of the store's may write, or None when they may.

    Args:
        conn: a connection of the store's pool, in the start-up transaction.

    Returns:
        The refusal: the server is a standby (``pg_is_in_recovery()``), or
        ``default_transaction_read_only`` is on, with where it was set and how to undo it.
    """
    row = await conn.fetchrow(_WRITABLE)
    user, database = row["current_user"], row["current_database"]
    if row["is_standby"]:
        return Refusal(
            user,
            "is connected to a standby server (pg_is_in_recovery() is true), which takes no writes",
            "point state.dsn at the primary (with several hosts, add target_session_attrs=primary)",
        )
    if not row["is_read_only"]:
        return None
    source = row["source"]
    where, remedy = _READ_ONLY_SOURCES.get(source, _ELSEWHERE)
    names = {
        "database": database,
        "source": source,
        "user_sql": row["user_sql"],
        "database_sql": row["database_sql"],
    }
    return Refusal(
        user,
        f"gets read-only transactions: {_SETTING} is on, set {where.format(**names)}",
        remedy.format(**names),
    )
