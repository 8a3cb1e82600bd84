"""Closing what the protocols hand out: an async iterator that may or may not have ``aclose``."""

from __future__ import annotations

__all__ = ["aclose_iterator"]


async def aclose_iterator(iterator: object) -> None:
    """Close an async iterator the way ``contextlib.aclosing`` does, if it can be closed.

    ``aclosing`` fails on an async iterator without ``aclose()`` (the protocols
    promise only ``AsyncIterator``). Closing an async generator on purpose matters: an
    abandoned one stays open until the event loop ends; closing it twice does no harm.

    Args:
        iterator: A ``stream``-like method's result, or anything else with ``aclose``.

    Raises:
        Exception: Whatever the iterator's ``aclose()`` raises.
    """
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
