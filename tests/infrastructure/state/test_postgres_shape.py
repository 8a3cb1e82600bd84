"""The columns the start-up check expects are the ones the schema creates (no database)."""

from __future__ import annotations

import re

from taskforce.infrastructure.state._postgres_schema import CREATE_SCHEMA
from taskforce.infrastructure.state._postgres_shape import COLUMNS, TABLES

# CREATE TABLE's spellings of a type -> format_type()'s, which the check compares
_CANONICAL = {"timestamptz": "timestamp with time zone"}


def _created() -> dict[str, dict[str, str]]:
    """Each table CREATE_SCHEMA creates -> its columns -> the type they are created with."""
    tables: dict[str, dict[str, str]] = {}
    for table, body in re.findall(
        r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", CREATE_SCHEMA, re.S
    ):
        columns = dict(re.findall(r"^    (\w+) (\w+)", body, re.M))
        columns.pop("PRIMARY", None)
        tables[table] = {name: _CANONICAL.get(kind) or kind for name, kind in columns.items()}
    return tables


def test_the_checked_columns_are_the_created_ones() -> None:
    """Every table and column the schema creates is checked, first with the type it is
    created with, so a column added to CREATE_SCHEMA without its check fails here."""
    created = _created()
    assert list(TABLES) == list(created)
    expected = {table: {n: c.types[0] for n, c in cols.items()} for table, cols in COLUMNS.items()}
    assert created == expected


def test_the_checked_defaults_are_the_created_ones() -> None:
    """A column the check says an insert leaves to its default has one in CREATE_SCHEMA."""
    for table, body in re.findall(
        r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", CREATE_SCHEMA, re.S
    ):
        for name, column in COLUMNS[table].items():
            line = re.search(rf"^    {name} .*$", body, re.M)
            assert line is not None, (table, name)
            if column.default == "identity":
                assert "GENERATED ALWAYS AS IDENTITY" in line.group(0)
            elif column.default is not None:
                assert f"DEFAULT {column.default}" in line.group(0), (table, name)
