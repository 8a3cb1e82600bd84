"""Reading what a server says about a retry: ``retry-after-ms`` (milliseconds, first),
``Retry-After`` (delay seconds in ASCII digits, or an HTTP date), ``x-should-retry``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, formatdate

import httpx
import pytest

from taskforce.infrastructure.llm._openai_failures import _hint_in, _retry_said, _wait_asked
from taskforce.infrastructure.llm._retry import RetryHint


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


def _sent(**headers: str) -> httpx.Headers:
    """Response headers as a server sends them (``retry_after_ms`` is ``retry-after-ms``)."""
    return httpx.Headers([(n.replace("_", "-").encode(), v.encode()) for n, v in headers.items()])


@pytest.mark.parametrize(
    ("millis", "seconds"),
    [("1500", 1.5), (" 20 ", 0.02), ("0", 0.0), ("0.5", 0.0005), ("600000", 600.0)],
)
def test_retry_after_ms_is_read_before_retry_after(millis: str, seconds: float) -> None:
    """``retry-after-ms``, in milliseconds, is the wait when readable, whatever
    ``Retry-After`` says (as the official openai client reads them)."""
    assert seconds == _wait_asked(_sent(retry_after_ms=millis, retry_after="7"))
    assert seconds == _wait_asked(_sent(retry_after_ms=millis))


@pytest.mark.parametrize(
    "millis", ["soon", "-5", "+5", "1e3", "inf", "nan", "\u0663", "9" * 400, ""]
)
def test_a_retry_after_ms_that_cannot_be_read_leaves_retry_after(millis: str) -> None:
    """A ``retry-after-ms`` that is no delay in ASCII digits is ignored: ``Retry-After``
    (seconds or a date) is read, else there is no hint."""
    assert 7.0 == _wait_asked(_sent(retry_after_ms=millis, retry_after="7"))
    ahead = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    waited = _wait_asked(_sent(retry_after_ms=millis, retry_after=ahead))
    assert waited is not None and 100 < waited <= 120
    assert None is _wait_asked(_sent(retry_after_ms=millis))


@pytest.mark.parametrize(
    ("value", "said"),
    [("true", True), ("false", False), (" false ", False)],
)
def test_x_should_retry_says_true_or_false(value: str, said: bool) -> None:
    assert said is _retry_said(_sent(x_should_retry=value))


@pytest.mark.parametrize("value", ["True", "FALSE", "yes", "1", "0", "", "true, false"])
def test_any_other_x_should_retry_says_nothing(value: str) -> None:
    """Only ``true`` and ``false`` count (as the official openai client reads them); any
    other value, two of them among them, is no say: the error type decides."""
    assert None is _retry_said(_sent(x_should_retry=value))
    assert None is _retry_said(_sent())


def test_the_hint_of_headers_holds_the_wait_and_the_say() -> None:
    headers = _sent(retry_after_ms="250", retry_after="9", x_should_retry="false")

    assert RetryHint(0.25, False) == _hint_in(headers)
    assert RetryHint() == _hint_in(_sent()) == _hint_in(None)


@pytest.mark.parametrize("skew", [-600, 600], ids=["clock-behind", "clock-ahead"])
def test_a_date_is_measured_from_the_responses_own_date(skew: int) -> None:
    """A ``Retry-After`` date 20 s past the response's ``Date`` asks for 20 s, however
    far this host's clock is off the server's (10 minutes either way here)."""
    server_now = datetime.now(UTC) - timedelta(seconds=skew)
    headers = _sent(
        date=format_datetime(server_now, usegmt=True),
        retry_after=format_datetime(server_now + timedelta(seconds=20), usegmt=True),
    )

    assert 20.0 == _wait_asked(headers)


def test_an_unreadable_date_header_leaves_this_hosts_clock() -> None:
    """A ``Date`` that is no HTTP date is passed over: the wait is until the hint, here."""
    ahead = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)

    waited = _wait_asked(_sent(date="yesterday", retry_after=ahead))

    assert waited is not None and 100 < waited <= 120
