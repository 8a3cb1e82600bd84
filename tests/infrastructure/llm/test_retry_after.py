"""Reading a server's ``Retry-After``: delay seconds in ASCII digits, or an HTTP date."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, formatdate

import httpx
import pytest

from taskforce.infrastructure.llm._openai_failures import _wait_asked


def _headers(hint: str) -> httpx.Headers:
    """Response headers as a server sends them: bytes, here UTF-8, which httpx decodes."""
    return httpx.Headers([(b"retry-after", hint.encode())])


@pytest.mark.parametrize(
    ("hint", "seconds"),
    [("12", 12.0), (" 3 ", 3.0), ("0", 0.0), ("0.25", 0.25), ("007", 7.0)],
)
def test_delay_seconds_are_read(hint: str, seconds: float) -> None:
    """ASCII digits (a fraction tolerated) are the seconds to wait."""
    assert seconds == _wait_asked(_headers(hint))


@pytest.mark.parametrize(
    "hint",
    [
        "\uff11\uff12",
        "\u0663",
        "1_0",
        "1e3",
        "inf",
        "nan",
        "-5",
        "+5",
        ".5",
        "5.",
        "9" * 400,
        "soon",
        "",
    ],
)
def test_what_is_neither_seconds_nor_a_date_asks_for_nothing(hint: str) -> None:
    """Other scripts' digits, float() spellings and words are no hint: our own backoff applies."""
    assert None is _wait_asked(_headers(hint))


def test_a_date_ahead_is_the_wait_until_it() -> None:
    """An HTTP date asks for the time until it; a date already past for none."""
    ahead = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=120), usegmt=True)

    waited = _wait_asked(_headers(ahead))

    assert waited is not None and 100 < waited <= 120
    assert 0.0 == _wait_asked(_headers(past))


@pytest.mark.parametrize(
    "form",
    ["%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"],
    ids=["imf-fixdate", "rfc850", "asctime"],
)
def test_every_http_date_form_is_read(form: str) -> None:
    """The three forms of an HTTP date RFC 9110 has a recipient accept, all in GMT."""
    ahead = (datetime.now(UTC) + timedelta(seconds=120)).strftime(form)

    waited = _wait_asked(_headers(ahead))

    assert waited is not None and 100 < waited <= 120


def test_a_date_without_a_zone_is_gmt() -> None:
    """``-0000`` (what ``email.utils.formatdate()`` writes) is GMT, as every HTTP date is."""
    ahead = formatdate(time.time() + 120)
    assert ahead.endswith("-0000")

    waited = _wait_asked(_headers(ahead))

    assert waited is not None and 100 < waited <= 120
