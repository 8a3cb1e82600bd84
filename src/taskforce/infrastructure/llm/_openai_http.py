"""The HTTP client under the OpenAI-compatible provider's SDK: each answer capped and decoded.

Holds the client (``_http_client``), the response hook that bounds every body to
``llm.max_response_bytes`` and inflates gzip or deflate under that bound, the body
class that does it, and the HTTP library the SDK is built on (``_HTTP``), whose types
the body and the failure classification must use.
"""

from __future__ import annotations

import asyncio
import importlib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import ModuleType
from typing import Any

import openai

from taskforce.infrastructure.llm._openai_errors import _InvalidResponse

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "_HTTP", "_CappedBody", "_TooLarge", "_http_client"]


#: The most bytes one attempt's answer may have (``llm.max_response_bytes``).
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


def _sdk_http() -> ModuleType:
    """The HTTP library the installed openai SDK is built on: ``httpx``, or a successor.

    Its client and transports are that library's types, which the SDK checks for.
    """
    client = next(c for c in openai.DefaultAsyncHttpxClient.__mro__ if c.__name__ == "AsyncClient")
    return importlib.import_module(client.__module__.split(".", 1)[0])


_HTTP: Any = _sdk_http()


class _TooLarge(_InvalidResponse):
    """Internal: an answer longer than ``llm.max_response_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit} bytes (llm.max_response_bytes)")


# What an answer may be encoded with: it is asked for uncompressed ("identity"), but a
# server or proxy may compress anyway; these are inflated here, under the limit.
_GZIP_BITS = zlib.MAX_WBITS | 16
_INFLATED = {"gzip": _GZIP_BITS, "x-gzip": _GZIP_BITS, "deflate": 0}
#: The most bytes one inflation step turns out; between two steps other tasks run.
_INFLATED_PIECE_BYTES = 64 * 1024


def _coding(values: list[str]) -> str | None:
    """The one content coding to undo (``""``: none), or ``None`` for one not undone here."""
    codings = [c.strip().lower() for value in values for c in value.split(",")]
    codings = [c for c in codings if c not in ("", "identity")]
    if not codings:
        return ""
    return codings[0] if len(codings) == 1 and codings[0] in _INFLATED else None


def _deflate_bits(head: bytes) -> int:
    """``deflate`` is zlib-wrapped by the standard, raw in practice: tell by the header."""
    is_zlib = len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
    return zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS


class _CappedBody(_HTTP.AsyncByteStream):  # type: ignore[misc]  # the SDK's HTTP library
    """A response body that yields at most ``limit`` bytes, decoded, and reads at most
    about ``limit`` bytes as they come.

    A gzip or deflate body is inflated here, never past the bytes still allowed, so a
    small compressed body cannot unpack into gigabytes; and a bounded piece at a time,
    with a turn for the event loop after each: inflating up to the limit is real work,
    and every other request on the loop waits while it runs. A gzip body may be several
    members one after another (RFC 1952, 2.2: what ``cat a.gz b.gz`` and some proxies
    send): each is inflated in turn, zero bytes between or after them skipped as padding,
    as gzip itself does; anything else after a member, or a body that ends inside one (a
    deflate stream too), is a broken encoding. Past the
    limit, or at a broken encoding, an answer (``strict``) raises :class:`_TooLarge` or
    :class:`_InvalidResponse`; an error body is cut there instead, quietly, so that the
    error is still told by its status. The decoding state lives on the object: the SDK
    reads a stream's rest again after its end, and that must carry on, not start over.
    """

    def __init__(self, body: Any, limit: int, coding: str | None, *, strict: bool) -> None:
        self._body = body
        self._limit = limit
        self._coding = coding
        self._strict = strict
        self._seen = 0
        self._inflater: Any = None
        self._head = b""  # deflate: the first bytes, until its header can be told
        # Input read but not inflated yet, and whether the last step filled its room (output
        # may wait inside zlib): kept here, not in the reading loop, since a reader may stop
        # between two pieces (the SDK at [DONE]) and another read the rest.
        self._pending = b""
        self._is_full = False
        self._done = coding is None  # a coding not undone here: nothing to read
        # A compressed body is counted as it comes too, like a declared length: padding,
        # empty members or garbage inflate to little or nothing, and would otherwise be
        # read (and worked on) without end.
        self._wire = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self._body)
        chunk: bytes | None = b""  # first what an earlier reader left undecoded
        while not self._done:  # a coding not undone here, or read up to its cut or end
            for out in self._decoded(chunk or b"", end=chunk is None):
                yield out
                if self._inflater is not None:
                    # Yielding to our reader does not reach the loop (it asks for the next
                    # piece at once): hand the loop a turn before inflating another.
                    await asyncio.sleep(0)
            if chunk is None:
                self._done = True
                return
            chunk = await anext(chunks, None)
            if chunk and self._coding:
                self._wire += len(chunk)
                if self._wire > self._limit:
                    self._stop(_TooLarge(self._limit))
                    return

    def _decoded(self, chunk: bytes, *, end: bool = False) -> Iterator[bytes]:
        """Decode ``chunk`` after the input still pending; ``end``: the body ends after it."""
        if self._done:
            return
        if self._coding and self._inflater is None:
            self._head += chunk
            if len(self._head) < 2 and not (end and self._head):  # an empty body: nothing
                return
            bits = _INFLATED[self._coding] or _deflate_bits(self._head)
            self._inflater = zlib.decompressobj(bits)
            chunk, self._head = self._head, b""
        self._pending += chunk
        # A step that filled its room may leave output inside zlib with its input all
        # read (the rest of a long match): it is asked for again, input or not.
        while self._pending or self._is_full:
            if self._inflater is None:
                out, self._pending = self._pending, b""
            elif self._inflater.eof:
                self._is_full = False
                self._pending = self._next_member(self._pending)
                continue
            else:
                room = min(self._limit - self._seen + 1, _INFLATED_PIECE_BYTES)
                try:
                    out = self._inflater.decompress(self._pending, room)
                except zlib.error:
                    self._stop(self._broken_encoding())
                    return
                self._is_full = len(out) == room
                # what follows a member's end is kept apart from the input not yet inflated
                inflater = self._inflater
                self._pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            self._seen += len(out)
            if self._seen > self._limit:
                self._stop(_TooLarge(self._limit))
                out = out[: len(out) - (self._seen - self._limit)]
            if out:
                yield out
        if end and self._inflater is not None and not self._inflater.eof:
            # The body ends inside a member: one cut short, or bytes after the last
            # member too few for zlib to tell that they begin none (``\n``, ``\x1f``).
            self._stop(self._broken_encoding())

    def _stop(self, error: _InvalidResponse) -> None:
        """Read no further: an answer raises ``error``, an error body is cut here quietly."""
        self._done = True
        self._pending, self._is_full = b"", False
        if self._strict:
            raise error from None

    def _broken_encoding(self) -> _InvalidResponse:
        """What an answer whose encoding is broken fails with."""
        return _InvalidResponse(f"the answer's {self._coding} encoding is broken")

    def _next_member(self, rest: bytes) -> bytes:
        """Start on what follows a finished member; return the part left to inflate."""
        if self._coding == "deflate":  # one stream, no members: what follows it is ignored
            return b""
        rest = rest.lstrip(b"\0")
        if rest:
            self._inflater = zlib.decompressobj(_GZIP_BITS)
        return rest

    async def aclose(self) -> None:
        await self._body.aclose()


def _capping(limit: int) -> Callable[[Any], Awaitable[None]]:
    """The response hook that bounds every answer body to ``limit`` bytes, decoded.

    An answer (2xx) whose declared ``Content-Length`` is over the limit, or whose
    coding is not one undone here, is refused before its body; any other is cut as it
    passes the limit. An error body is only cut, so the error keeps its status. A hook,
    not a transport of our own: the SDK's client keeps its pool, proxies and the rest.
    """

    async def cap(response: Any) -> None:
        values = response.headers.get_list("content-encoding")
        coding = _coding(values)
        strict = response.status_code < 300
        declared = response.headers.get("content-length", "")
        refusal: _InvalidResponse | None = None
        if strict and coding is None:
            refusal = _InvalidResponse(
                f"the answer is encoded with {', '.join(values)!r}; identity, gzip or "
                "deflate expected"
            )
        elif strict and declared.isdigit() and int(declared) > limit:
            refusal = _TooLarge(limit)
        if refusal is not None:
            await response.aclose()
            raise refusal
        if values:  # decoded here (or dropped): the client must not decode it again
            del response.headers["content-encoding"]
            response.headers.pop("content-length", None)
        response.stream = _CappedBody(response.stream, limit, coding, strict=strict)

    return cap


def _http_client(max_response_bytes: int) -> openai.DefaultAsyncHttpxClient:
    """Return the HTTP client for the SDK: answers asked uncompressed, capped, not redirected.

    Args:
        max_response_bytes: the most bytes one answer body may have, decoded.

    Returns:
        The SDK's default client, with every answer body bounded by :func:`_capping`.
    """
    return openai.DefaultAsyncHttpxClient(
        event_hooks={"response": [_capping(max_response_bytes)]},
        headers={"accept-encoding": "identity"},
        # a redirect would re-send the conversation wherever Location points
        follow_redirects=False,
    )
