"""Values a user's misbehaving tool, provider or store may hand back: each fails when read."""

from __future__ import annotations

from typing import Any

__all__ = [
    "HugeRepr",
    "InterruptOfItsOwn",
    "NoItems",
    "NoMembership",
    "RaisingGet",
    "Unequal",
    "UnequalArgument",
    "Unprintable",
    "UnprintableText",
    "Unrepresentable",
    "UnrepresentableText",
]


class RaisingGet(dict[str, Any]):
    """A mapping whose ``get`` fails."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("get failed")


class NoMembership(dict[str, Any]):
    """A mapping whose ``in`` fails."""

    def __contains__(self, key: object) -> bool:
        raise RuntimeError("membership failed")


class NoItems(dict[str, Any]):
    """A mapping whose ``[key]`` fails."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("item failed")


class Unequal(str):
    """A text whose comparisons and truth value fail."""

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq failed")

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("ne failed")

    def __bool__(self) -> bool:
        raise RuntimeError("bool failed")


class UnequalArgument:
    """An object whose comparisons fail (and which has no hash)."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq failed")


class UnprintableText(str):
    """A text that cannot be printed."""

    def __str__(self) -> str:
        raise RuntimeError("no text")


class Unprintable(Exception):
    """An exception whose message cannot be read."""

    def __str__(self) -> str:
        raise RuntimeError("no message")


class InterruptOfItsOwn(KeyboardInterrupt):
    """What a tool or provider may raise; no signal raises a subclass of KeyboardInterrupt."""


class Unrepresentable:
    """A value whose ``repr``, and even its ``__class__``, fail."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    @property  # type: ignore[misc]  # on purpose: isinstance() reads it
    def __class__(self) -> type:
        raise RuntimeError("no class")


class UnrepresentableText(str):
    """A text whose ``repr``, ``len``, slices and iteration fail."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __len__(self) -> int:
        raise RuntimeError("no len")

    def __getitem__(self, key: Any) -> str:
        raise RuntimeError("no item")

    def __iter__(self) -> Any:
        raise RuntimeError("no iter")


class HugeRepr:
    """A value whose ``repr`` is ten million characters long; counts how often it is asked."""

    calls = 0

    def __repr__(self) -> str:
        HugeRepr.calls += 1
        return "x" * 10_000_000
