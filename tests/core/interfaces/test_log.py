"""Free text in log lines: text_fields, and no mission text or tool argument at info or above."""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.core.interfaces.executor import AgentType
from taskforce.core.interfaces.log import (
    DIGEST_HEX_CHARS,
    REDACTED,
    SHORT_SECRET_CHARS,
    cut_text,
    quoted,
    redact_secret_parameters,
    secret_scrubber,
    text_fields,
)
from tests.support.odd_values import (
    HugeRepr,
    Unprintable,
    Unrepresentable,
    UnrepresentableText,
)

CANARY = "ZQX-canary-7731"


class TestSecretScrubber:
    @pytest.mark.parametrize(
        ("secrets", "text", "expected"),
        [
            # long secrets go wherever they are, the longest first
            (["sk-live-12345678"], "key=sk-live-12345678x", "key=***x"),
            (["sk-live-1234", "sk-live-12345678"], "a sk-live-12345678 b", "a *** b"),
            # short ones only where no letter or digit touches them
            (["e"], "mission.started e", "mission.started ***"),
            (["EMPTY"], "Bearer EMPTY, EMPTYING", "Bearer ***, EMPTYING"),
            (["pw1"], "user:pw1@host pw12 _pw1_", "user:***@host pw12 _***_"),
            (["a.b"], "a.b axb", "*** axb"),  # regex characters are literal
            # as a URL's query carries them: percent-encoded, a %-escape before a short one
            (["abc"], "?auth=Bearer%20abc&k=key%3Dabc", "?auth=Bearer%20***&k=key%3D***"),
            (["tok-LONG/SECRET 77"], "?u=tok-LONG%2FSECRET%2077", "?u=***"),
            (["tok-LONG/SECRET 77"], "?u=tok-LONG%2FSECRET+77", "?u=***"),
            # encoded as the client liked: lower-case escapes, escapes of plain letters
            (["tok-LONG/SECRET 77"], "/p%20q?u=tok-LONG%2fSECRET%2077", "/p q?u=***"),
            (["tok-LONG/SECRET 77"], "?u=%74ok-LONG/SECRET+77", "?u=***"),
            (["abc"], "?auth=Bearer%20%61bc", "?auth=Bearer ***"),
            (["abc"], "?q=100%25 abcd", "?q=100%25 abcd"),  # nothing hidden: left as it is
            ([], "nothing to hide", "nothing to hide"),
            ([""], "an empty secret hides nothing", "an empty secret hides nothing"),
        ],
    )
    def test_replaces_each_secret(self, secrets: list[str], text: str, expected: str) -> None:
        """Every known secret becomes REDACTED; short ones only where they stand alone."""
        assert expected.replace("***", REDACTED) == secret_scrubber(secrets)(text)

    def test_the_short_limit(self) -> None:
        """A secret of SHORT_SECRET_CHARS characters is replaced inside words too."""
        secret = "k" * SHORT_SECRET_CHARS
        assert f"x{REDACTED}x" == secret_scrubber([secret])(f"x{secret}x")
        assert f"x{secret[1:]}x" == secret_scrubber([secret[1:]])(f"x{secret[1:]}x")


class TestRedactSecretParameters:
    @pytest.mark.parametrize(
        ("target", "expected"),
        [
            ("/h?token=t1&key=k1&password=p1&ok=1", "/h?token=***&key=***&password=***&ok=1"),
            # the last word of the name counts, in any case, however it is separated
            ("/h?api_key=a;X-Api-Key=b&apikey=c", "/h?api_key=***;X-Api-Key=***&apikey=***"),
            (
                "/h?access_token=a&accessToken=b&dbPassword=c",
                "/h?access_token=***&accessToken=***&dbPassword=***",
            ),
            (
                "/h?client_secret=a&auth=b&sig=c&signature=d",
                "/h?client_secret=***&auth=***&sig=c&signature=***",
            ),
            ("/h?%74oken=a&to%6Ben=b", "/h?%74oken=***&to%6Ben=***"),  # a name's escapes decoded
            ("/h?xApiKey=a&APIKey=b&sessionToken=c", "/h?xApiKey=***&APIKey=***&sessionToken=***"),
            # other names, values that merely mention a secret word, the path: left alone
            ("/h?monkey=1&tokens=2&q=token=3", "/h?monkey=1&tokens=2&q=token=3"),
            ("/token/abc?x=1#token=2", "/token/abc?x=1#token=2"),
            ("/h?token", "/h?token"),
            ("/h", "/h"),
            # a value ends at a space: the rest of a line that quotes the target stays
            ('"GET /h?token=abc HTTP/1.1" 200', '"GET /h?token=*** HTTP/1.1" 200'),
        ],
    )
    def test_replaces_values_of_secret_names(self, target: str, expected: str) -> None:
        """The value of a parameter that names a secret becomes REDACTED, nothing else."""
        assert expected.replace("***", REDACTED) == redact_secret_parameters(target)

    @pytest.mark.parametrize("run", ["?", "a?", "?a&?;"], ids=["marks", "words", "mixed"])
    def test_a_long_query_without_values_is_read_in_linear_time(self, run: str) -> None:
        """A query of many ``?`` (allowed in a name) and no ``=``, as long as a request head
        allows, is redacted at once: no start inside a name is tried again. Before, each
        was scanned to its end, and one request held the event loop for seconds."""
        target = "/h?" + run * (30_000 // len(run)) + "&token=abc"
        started = time.perf_counter()
        redacted = redact_secret_parameters(target)
        assert time.perf_counter() - started < 1.0
        assert target.removesuffix("abc") + REDACTED == redacted

    def test_keeps_no_long_name_a_client_sent(self) -> None:
        """Names as long as a request line allows are not held after the line is redacted.

        Each access line's parameter names are the client's: fifty distinct ones of 10,000
        characters must not stay in memory (a remembered answer per name would keep them).
        """
        chars = 10_000
        tracing = tracemalloc.is_tracing()  # PYTHONTRACEMALLOC set: leave it on
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for index in range(50):
                redact_secret_parameters(f"/h?{index:05d}{'n' * chars}_token=1")
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            if not tracing:
                tracemalloc.stop()
        assert kept < 5 * chars  # fewer than five of the fifty names


class TestCutText:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", ""),
            ("abcd", "abcd"),
            ("abcde", "abcd...[+1 chars]"),
            ("x" * 10, "xxxx...[+6 chars]"),
        ],
    )
    def test_cut_and_marked(self, text: str, expected: str) -> None:
        """A text longer than the limit keeps that many characters and says how many went."""
        assert expected == cut_text(text, 4)

    def test_limit_below_one_refused(self) -> None:
        """A limit of 0 would cut everything: refused, naming the value."""
        with pytest.raises(ValueError, match="got 0"):
            cut_text("abc", 0)


class TestQuoted:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", "''"),
            ("abcd", "'abcd'"),
            ("abcde", "'abcd'...[+1 chars]"),
            ("it's" + "x" * 10, '"it\'s"...[+10 chars]'),
            (None, "None"),
            (["abcdef"], "['ab...[+6 chars]"),
        ],
    )
    def test_repr_cut_and_marked(self, text: object, expected: str) -> None:
        """A text is quoted as its repr; past the limit only its start, and how much went."""
        assert expected == quoted(text, 4)

    def test_default_is_80_characters(self) -> None:
        """A line of 100,000 characters is quoted by its first 80."""
        assert repr("x" * 80) + "...[+99920 chars]" == quoted("x" * 100_000)

    def test_limit_below_one_refused(self) -> None:
        """A limit of 0 would quote nothing: refused, naming the value."""
        with pytest.raises(ValueError, match="got 0"):
            quoted("abc", 0)

    def test_plain_data_is_quoted_as_its_repr(self) -> None:
        """JSON-like values of any nesting up to the limits: their repr, cut."""
        value = {"a": [1, 2.5, None, True, ("x", {"y": -(10**100)})]}
        assert repr(value) == quoted(value, 1000)
        assert cut_text(repr([[1] * 5000]), 80) == quoted([[1] * 5000])

    def test_no_code_of_the_value_runs(self) -> None:
        """A value of its own type is named, never asked for its repr or class; a text of
        its own type is quoted as the text it holds; a list holding either is named."""
        HugeRepr.calls = 0
        assert "<Unrepresentable object>" == quoted(Unrepresentable())
        assert "<HugeRepr object>" == quoted(HugeRepr())
        assert "<list of 2 items>" == quoted([1, HugeRepr()])
        assert "'ab'...[+1 chars]" == quoted(UnrepresentableText("abc"), 2)
        assert 0 == HugeRepr.calls

    def test_a_large_value_is_named_by_its_size(self) -> None:
        """Plain data too large to write out is named, by type and size (an int past 4300
        digits, whose repr raises, too)."""
        assert "<int of 16610 bits>" == quoted(10**5000)
        assert "<list of 1000000 items>" == quoted([0] * 1_000_000)
        assert "<dict of 1 items>" == quoted({"k": "x" * 1_000_000})

    def test_deep_or_cyclic_data_is_named(self) -> None:
        """Nesting past the depth limit, or a list that holds itself, never reaches repr's
        recursion limit nor loops: named."""
        deep: list[object] = []
        for _ in range(100_000):
            deep = [deep]
        loop: list[object] = []
        loop.append(loop)
        assert ("<list of 1 items>", "<list of 1 items>") == (quoted(deep), quoted(loop))


class TestTextFields:
    def test_length_and_digest(self) -> None:
        """The text is described by its length and the start of its SHA-256, never repeated."""
        text = f"path '../{CANARY}' is outside the workspace"
        digest = hashlib.sha256(text.encode()).hexdigest()[:DIGEST_HEX_CHARS]
        assert {"error_chars": len(text), "error_sha256": digest} == text_fields("error", text)

    def test_absent_text(self) -> None:
        """None is described as absent."""
        assert {"error_chars": None, "error_sha256": None} == text_fields("error", None)

    def test_lone_surrogate_and_objects(self) -> None:
        """A lone surrogate does not break it; an exception is described by its str()."""
        assert 3 == text_fields("path", "a\udcffb")["path_chars"]
        assert text_fields("reason", "boom") == text_fields("reason", ValueError("boom"))

    def test_an_object_that_cannot_print(self) -> None:
        """An exception whose str() raises is described by its placeholder, not raised."""
        placeholder = "<Unprintable that cannot be written>"
        assert text_fields("error", placeholder) == text_fields("error", Unprintable())


class TestNoMissionContentInLogs:
    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    @pytest.mark.parametrize(
        "mission",
        [
            f'tool:file_read {{"path": "../{CANARY}.txt"}}',
            f'tool:calculator {{"expression": "{CANARY} + 1"}}',
            f'tool:file_read {{"path": "{CANARY}-missing.txt"}}',
            f"llm:error\n{CANARY}",
            f'tool:{CANARY} {{"x": 1}}',
            f"Answer about {CANARY}.",
        ],
    )
    async def test_canary_only_at_debug(
        self, tmp_path: Path, agent_type: AgentType, mission: str
    ) -> None:
        """Mission text, tool arguments and errors quoting them stay out of info and above."""
        settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws")
        async with build_container(settings) as container:
            with capture_logs() as logs:
                result = await container.executor.execute_mission(mission, agent_type=agent_type)
        assert logs
        assert [] == [e for e in logs if e["log_level"] != "debug" and CANARY in repr(e)]
        if result.status == "failed":
            failed = [e for e in logs if e["event"] == "mission.failed"]
            assert [text_fields("error", result.error)["error_sha256"]] == [
                e["error_sha256"] for e in failed
            ]
