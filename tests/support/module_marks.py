"""Tell, from its text alone, that ``-m`` deselects every test of a test module.

A module whose tests all go through a real server says so once, in a module-level
``pytestmark = pytest.mark.integration``: every test it holds carries that mark, and
``-m "not integration and not slow"`` (the fast loop) deselects them all. pytest still
imports such a module, rewrites its asserts and builds its items before deselecting
them; for the 30-odd modules of that kind that is a second of each fast loop. The
suite's ``pytest_ignore_collect`` (tests/conftest.py) asks :func:`deselects_module` and
leaves them out. Only a plain assignment of bare marks is read; anything else (a mark
with arguments, a second assignment, marks on the tests alone) is collected as before.
"""

from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path

from _pytest.mark.expression import Expression

__all__ = ["deselected_whatever_else", "deselects_module", "module_marks"]

_ASSIGNMENT = re.compile(r"^pytestmark\b.*$", re.M)
_BARE_MARKS = re.compile(
    r"pytestmark = (?:pytest\.mark\.\w+|\[pytest\.mark\.\w+(?:, pytest\.mark\.\w+)*,?\])"
)
_MARK = re.compile(r"pytest\.mark\.(\w+)")
#: Beyond this many mark names in one ``-m`` expression, no module is left out.
_MAX_NAMES = 8


def module_marks(text: str) -> frozenset[str] | None:
    """The marks a module's ``pytestmark`` gives every test of it, or None if unsure.

    Args:
        text: The module's source.

    Returns:
        The names of the marks when the module assigns ``pytestmark`` once, at the top
        level, one bare mark or a list of bare marks on one line; else None.
    """
    lines = _ASSIGNMENT.findall(text)
    if len(lines) != 1 or _BARE_MARKS.fullmatch(lines[0].rstrip()) is None:
        return None
    return frozenset(_MARK.findall(lines[0]))


class _Unsure(Exception):
    """The expression matches on a mark's arguments (``-m "name(key=value)"``)."""


@functools.cache
def deselected_whatever_else(markexpr: str, marks: frozenset[str]) -> bool:
    """Whether ``markexpr`` deselects every test that carries ``marks``, whatever else it carries.

    The expression is evaluated for each set of the other mark names it asks about
    (found as it is evaluated), until a pass finds no new name: none makes it true.

    Args:
        markexpr: The ``-m`` expression.
        marks: Marks every test of the module carries.

    Returns:
        True when no test carrying ``marks`` can be selected; False when one could, or
        the expression asks for mark arguments or about too many names to try them all.
    """
    expression = Expression.compile(markexpr)
    names: set[str] = set()

    def selects(extra: frozenset[str]) -> bool:
        def matcher(name: str, /, **kwargs: object) -> bool:
            if kwargs:
                raise _Unsure(name)
            if name not in marks:
                names.add(name)
            return name in marks or name in extra

        return expression.evaluate(matcher)

    try:
        while True:
            known = frozenset(names)
            if len(known) > _MAX_NAMES:
                return False
            for size in range(len(known) + 1):
                for extra in itertools.combinations(sorted(known), size):
                    if selects(frozenset(extra)):
                        return False
            if names == known:
                return True
    except _Unsure:
        return False


def deselects_module(path: Path, markexpr: str) -> bool:
    """Whether ``-m markexpr`` deselects every test of the test module at ``path``.

    Args:
        path: A ``test_*.py`` file.
        markexpr: The ``-m`` expression (not empty).

    Returns:
        True only when the module's ``pytestmark`` (see :func:`module_marks`) makes the
        expression false for each of its tests.
    """
    marks = module_marks(path.read_text(encoding="utf-8"))
    return marks is not None and deselected_whatever_else(markexpr, marks)
