"""The proxies' base class against the range of wrapt it is installed with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import taskforce.observability.proxies._base as base

#: wrapt 2.2 and later type ``BaseObjectProxy`` so (their ``wrapt-stubs``): runtime
#: subscripting arrived then, with a ``__class_getitem__`` that returns a GenericAlias.
#: ``pip install`` picks the newest wrapt 2, so a fresh install type-checks against this.
_WRAPT_2_2_STUB = """\
from types import GenericAlias
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")

class BaseObjectProxy(Generic[_T]):
    __wrapped__: _T
    def __init__(self, wrapped: _T) -> None: ...
    def __getattr__(self, name: str) -> Any: ...
    def __class_getitem__(cls, item: Any, /) -> GenericAlias: ...
    def __enter__(self) -> Any: ...
    async def __aenter__(self) -> Any: ...
"""


@pytest.mark.slow
class TestTyping:
    def test_the_base_type_checks_against_wrapts_own_stubs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """mypy --strict passes on the base with the stubs of wrapt 2.2 and later, not only
        with wrapt 2.1's (the project's ``nox -s typecheck`` on a fresh install)."""
        from mypy import api

        (tmp_path / "wrapt").mkdir()
        (tmp_path / "wrapt" / "__init__.pyi").write_text(_WRAPT_2_2_STUB, encoding="utf-8")
        monkeypatch.setenv("MYPYPATH", str(tmp_path))
        # mypy raises the interpreter's recursion limit for good: the tests after this one
        # (the parsers' deep-nesting ones) need the limit they started with
        limit = sys.getrecursionlimit()
        try:
            report, errors, status = api.run(
                [
                    "--strict",
                    "--follow-imports=skip",
                    "--no-incremental",
                    "--cache-dir",
                    str(tmp_path / "cache"),
                    "--config-file",
                    "",
                    str(Path(base.__file__)),
                ]
            )
        finally:
            sys.setrecursionlimit(limit)
        assert (0, "") == (status, errors), report
