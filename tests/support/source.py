"""The modules of src/taskforce, read and parsed once per run for the tests that scan them.

The architecture, docs and packaging tests walk the syntax trees of every module, many
times over: the trees are cached here and shared, so a caller only reads them, never
changes them.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "taskforce"


@functools.cache
def modules(folder: Path = SRC) -> tuple[Path, ...]:
    """The ``.py`` files under ``folder``, sorted."""
    return tuple(sorted(folder.rglob("*.py")))


@functools.cache
def text(path: Path) -> str:
    """The source of the module at ``path``."""
    return path.read_text(encoding="utf-8")


@functools.cache
def tree(path: Path) -> ast.Module:
    """The syntax tree of the module at ``path`` (shared: do not change it)."""
    return ast.parse(text(path), filename=str(path))


@functools.cache
def nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every node of the module at ``path``, in ``ast.walk`` order."""
    return tuple(ast.walk(tree(path)))


def clear() -> None:
    """Let go of every tree (the suite's hooks call it at the end of the run).

    The trees of the whole package are about 160,000 objects that the garbage
    collector walks at each full collection, five of them at pytest's exit.
    """
    for cached in (modules, text, tree, nodes):
        cached.cache_clear()
