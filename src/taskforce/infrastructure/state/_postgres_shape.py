"""What the PostgreSQL store's tables must be like, checked once at start-up.

A relation of one of the store's names that is no table (a view, a foreign table), the
three tables found in different schemas of the search path, a column missing, renamed
or of another type, the sessions' key or the records' cascade gone: each lets start-up
pass and then fails every call that touches it (or, without the cascade, hands an
expired session's records to the next session of its id). Start-up stops instead, with
one line naming the table and what to do. Row level security whose policies hide rows
from the user (or refuse its writes) is a refusal of the user's (:class:`Refusal`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from taskforce.infrastructure.state._postgres_access import (
    EXPIRY_PRIVILEGES,
    TABLE_PRIVILEGES,
    Refusal,
)

__all__ = [
    "COLUMNS",
    "TABLES",
    "Column",
    "Shape",
    "layout_problem",
    "read_shape",
    "row_security_refusal",
    "shape_problem",
    "version_column_problem",
]

#: The store's tables, in the order they are checked and named.
TABLES = ("taskforce_schema_version", "taskforce_sessions", "taskforce_mission_records")


class Column(NamedTuple):
    """A column the store reads or writes: the types it works with (the first is the one
    it creates) and the default an insert that leaves it out takes (None: it is always
    written; ``"identity"``: an identity column, or any default that numbers rows)."""

    types: tuple[str, ...]
    default: str | None = None


_TEXT = ("text", "character varying")
_INTEGER = ("integer", "bigint")
_TIME = ("timestamp with time zone",)

#: Each table's columns, as the schema of ``SCHEMA_VERSION`` creates them.
COLUMNS: dict[str, dict[str, Column]] = {
    "taskforce_schema_version": {
        "version": Column(("integer", "bigint", "smallint")),
        "applied_at": Column(_TIME, "now()"),
    },
    "taskforce_sessions": {
        "session_id": Column(_TEXT),
        "state": Column(_TEXT, "'{}'"),
        "has_missions": Column(("boolean",), "true"),
        "records": Column(_INTEGER),
        "size_bytes": Column(("bigint",)),
        "created_at": Column(_TIME, "now()"),
        "updated_at": Column(_TIME, "now()"),
    },
    "taskforce_mission_records": {
        "session_id": Column(_TEXT),
        "seq": Column(("bigint",), "identity"),
        "record": Column(_TEXT),
        "size_bytes": Column(_INTEGER),
        "created_at": Column(_TIME, "now()"),
    },
}

# Where the search path finds each table: what it is, in which schema, and the commands
# (SELECT, INSERT, UPDATE, DELETE) whose rows row level security filters for the user.
# It filters none for a superuser, nor for the owner unless forced, nor where the user's
# policies let every row through: a permissive one of USING (true) and WITH CHECK (true)
# (or none, which takes USING's) for the command, of the user, a role it has the
# privileges of, or PUBLIC, and no restrictive one that is not as open.
_TABLES = """
WITH policies AS (
    SELECT p.polrelid AS relid, p.polpermissive AS permissive, p.polcmd::text AS code,
           pg_get_expr(p.polqual, p.polrelid) AS using_sql,
           pg_get_expr(p.polwithcheck, p.polrelid) AS check_sql
    FROM pg_policy p
    WHERE p.polrelid IN (SELECT to_regclass(name) FROM unnest($1::text[]) AS wanted (name))
      AND EXISTS (
          SELECT 1 FROM unnest(p.polroles) AS r (role)
          WHERE CASE WHEN r.role = 0 THEN true ELSE pg_has_role(r.role, 'USAGE') END
      )
)
SELECT wanted.name, c.relkind::text AS kind, n.nspname AS schema,
       quote_ident(n.nspname) AS schema_sql, current_user,
       CASE WHEN c.relkind IN ('r', 'p') AND row_security_active(c.oid) THEN array(
           SELECT command.name
           FROM (VALUES (1, 'SELECT', 'r'), (2, 'INSERT', 'a'), (3, 'UPDATE', 'w'),
                        (4, 'DELETE', 'd')) AS command (n, name, code)
           WHERE NOT EXISTS (
                   SELECT 1 FROM policies p
                   WHERE p.relid = c.oid AND p.permissive AND p.code IN ('*', command.code)
                     AND (command.code = 'a' OR p.using_sql = 'true')
                     AND (command.code IN ('r', 'd')
                          OR coalesce(p.check_sql, p.using_sql) = 'true')
               )
              OR EXISTS (
                   SELECT 1 FROM policies p
                   WHERE p.relid = c.oid AND NOT p.permissive AND p.code IN ('*', command.code)
                     AND NOT ((command.code = 'a' OR coalesce(p.using_sql, 'true') = 'true')
                              AND (command.code IN ('r', 'd')
                                   OR coalesce(p.check_sql, p.using_sql, 'true') = 'true'))
               )
           ORDER BY command.n
       ) END AS hidden_from
FROM unnest($1::text[]) WITH ORDINALITY AS wanted (name, n)
LEFT JOIN pg_class c ON c.oid = to_regclass(wanted.name)
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY wanted.n
"""

# "character varying(64)" keeps its length: a bounded one refuses longer values.
_COLUMNS = """
SELECT c.relname::text AS table, a.attname::text AS name,
       format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null, a.atthasdef AS has_default, a.attidentity <> '' AS identity
FROM unnest($1::text[]) AS wanted (name)
JOIN pg_class c ON c.oid = to_regclass(wanted.name)
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# An append's and a save's ON CONFLICT (session_id) needs a unique index on that column
# alone, whole and checked at once; a deleted session's records go by the cascade.
_KEYS = """
SELECT
    EXISTS (
        SELECT 1 FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = to_regclass('taskforce_sessions') AND i.indisunique
          AND i.indimmediate AND i.indisvalid AND i.indnkeyatts = 1
          AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = 'session_id'
    ) AS has_key,
    EXISTS (
        SELECT 1 FROM pg_constraint k
        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
        JOIN pg_attribute b ON b.attrelid = k.confrelid AND b.attnum = k.confkey[1]
        WHERE k.contype = 'f' AND k.confdeltype = 'c' AND cardinality(k.conkey) = 1
          AND k.conrelid = to_regclass('taskforce_mission_records')
          AND k.confrelid = to_regclass('taskforce_sessions')
          AND a.attname = 'session_id' AND b.attname = 'session_id'
    ) AS cascades
"""

_KINDS = {
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "S": "a sequence",
    "i": "an index",
    "I": "an index",
    "c": "a composite type",
    "t": "a TOAST table",
}

_ASIDE = (
    "move the taskforce_ tables aside (ALTER ... SET SCHEMA, or RENAME) or name another "
    "schema with ?search_path= in state.dsn, and start again to create them"
)


class Shape(NamedTuple):
    """What the database holds under the store's names, as read by :func:`read_shape`."""

    tables: list[Any]
    columns: list[Any]
    has_key: bool
    cascades: bool


async def read_shape(conn: Any) -> Shape:
    """Read where the store's tables are, what they are and their columns and keys.

    Args:
        conn: a connection of the store's pool, in the start-up transaction, once the
            tables exist.
    """
    tables = await conn.fetch(_TABLES, list(TABLES))
    columns = await conn.fetch(_COLUMNS, list(TABLES))
    keys = await conn.fetchrow(_KEYS)
    return Shape(list(tables), list(columns), keys["has_key"], keys["cascades"])


def layout_problem(shape: Shape) -> str | None:
    """Why the relations of the store's names are not its tables, or None when they are.

    Returns:
        The first relation that is no table, or where the three are split over
        schemas, with what to do.
    """
    for row in shape.tables:
        if row["kind"] is not None and row["kind"] not in ("r", "p"):
            kind = _KINDS.get(row["kind"], f"a relation of kind {row['kind']!r}")
            return (
                f"the state table {row['name']} in schema {row['schema']!r} is {kind}, "
                f"not a table: {_ASIDE}"
            )
    schemas: dict[str, list[str]] = {}
    for row in shape.tables:
        schemas.setdefault(row["schema"], []).append(row["name"])
    if len(schemas) > 1:
        found = "; ".join(f"{', '.join(names)} in {schema!r}" for schema, names in schemas.items())
        return (
            f"the search path finds the state tables in different schemas ({found}): "
            "the store needs all three in one; move them together, or name that schema "
            "alone with ?search_path= in state.dsn"
        )
    return None


def version_column_problem(shape: Shape) -> str | None:
    """Why the version table cannot tell the schema's version, or None when it can."""
    return _said(shape, _table_problems(shape, "taskforce_schema_version"))


def shape_problem(shape: Shape) -> str | None:
    """Why the session and record tables are not as this code uses them, or None.

    Returns:
        Every column missing, of another type or without the default an insert needs,
        every column of their own an insert would fail on, and the sessions' key or the
        records' cascade if gone, each with what to do.
    """
    problems = [
        found
        for table in ("taskforce_sessions", "taskforce_mission_records")
        if (found := _table_problems(shape, table)) is not None
    ]
    schema_sql = shape.tables[0]["schema_sql"]
    if not shape.has_key:
        problems.append(
            f"taskforce_sessions has no primary key on session_id, which every append and "
            f"save needs: ALTER TABLE {schema_sql}.taskforce_sessions ADD PRIMARY KEY "
            "(session_id)"
        )
    if not shape.cascades:
        problems.append(
            "taskforce_mission_records has no foreign key to taskforce_sessions with ON "
            "DELETE CASCADE, so a deleted or expired session would leave its records to "
            "the next session of its id: delete the records whose session is gone, then "
            f"ALTER TABLE {schema_sql}.taskforce_mission_records ADD FOREIGN KEY "
            f"(session_id) REFERENCES {schema_sql}.taskforce_sessions (session_id) "
            "ON DELETE CASCADE"
        )
    return _said(shape, "; ".join(problems) if problems else None)


def _said(shape: Shape, problems: str | None) -> str | None:
    """The problems found in the tables as the line that stops start-up, or None."""
    if problems is None:
        return None
    schema = shape.tables[0]["schema"]
    return f"the state tables in schema {schema!r} are not as this taskforce uses them: {problems}"


def row_security_refusal(shape: Shape, *, expires: bool = False) -> Refusal | None:
    """Row level security that filters rows the store reads or writes for its user, or None.

    Args:
        shape: what :func:`read_shape` read.
        expires: the store's sessions expire: it deletes session rows too.
    """
    commands = {name: set(privileges) for name, privileges in TABLE_PRIVILEGES.items()}
    if expires:
        for name, privileges in EXPIRY_PRIVILEGES.items():
            commands[name] |= set(privileges)
    hidden = [
        row
        for row in shape.tables
        if commands.get(row["name"], set()) & set(row["hidden_from"] or ())
    ]
    if not hidden:
        return None
    names = ", ".join(row["name"] for row in hidden)
    them = "it" if len(hidden) == 1 else "them"
    statements = "; ".join(
        f"ALTER TABLE {row['schema_sql']}.{row['name']} DISABLE ROW LEVEL SECURITY"
        for row in hidden
    )
    return Refusal(
        hidden[0]["current_user"],
        f"is subject to row level security on {names} (in schema {hidden[0]['schema']!r}), "
        "which hides rows from the store and refuses its writes",
        f"disable it ({statements}), or give state.dsn a user it does not apply to "
        f"(the owner of {them}, or a role with BYPASSRLS)",
    )


def _table_problems(shape: Shape, table: str) -> str | None:
    """What is wrong with the columns of ``table``, or None."""
    schema_sql = shape.tables[0]["schema_sql"]
    where = f"{schema_sql}.{table}"
    wanted = COLUMNS[table]
    found = {row["name"]: row for row in shape.columns if row["table"] == table}
    problems = []
    missing = [name for name in wanted if name not in found]
    unknown = [name for name in found if name not in wanted]
    if missing:
        said = ", ".join(f"{name} ({wanted[name].types[0]})" for name in missing)
        problems.append(
            f"{table} has no column {said}"
            + (
                f"; if one was renamed (this taskforce does not know {', '.join(unknown)}), "
                f"rename it back: ALTER TABLE {where} RENAME COLUMN ... TO ..."
                if unknown
                else f"; {_ASIDE}"
            )
        )
    for name, column in wanted.items():
        row = found.get(name)
        if row is None:
            continue
        if row["type"] not in column.types:
            problems.append(
                f"{table}.{name} is {row['type']}, not {column.types[0]}: ALTER TABLE {where} "
                f"ALTER COLUMN {name} TYPE {column.types[0]} USING {name}::{column.types[0]}"
            )
        if column.default is not None and not row["has_default"] and not row["identity"]:
            remedy = (
                f"ADD GENERATED ALWAYS AS IDENTITY, then restart it past the highest {name}"
                if column.default == "identity"
                else f"SET DEFAULT {column.default}"
            )
            problems.append(
                f"{table}.{name} has no default, which an insert leaves it to: "
                f"ALTER TABLE {where} ALTER COLUMN {name} {remedy}"
            )
    for name in unknown:
        row = found[name]
        if row["not_null"] and not row["has_default"] and not row["identity"]:
            problems.append(
                f"{table}.{name} is NOT NULL without a default, and this taskforce does not "
                f"write it: ALTER TABLE {where} ALTER COLUMN {name} DROP NOT NULL"
            )
    return "; ".join(problems) if problems else None
