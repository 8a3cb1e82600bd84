"""Always-encodable JSON: lone surrogates, non-finite numbers, odd objects, server paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskforce.api._encoding import PathRedactor, SafeJSONResponse, json_bytes, sse_event


class TestJsonBytes:
    def test_lone_surrogate_becomes_escape(self) -> None:
        """A lone surrogate (a non-UTF-8 file name) leaves as a JSON escape that decodes back."""
        data = {"name": "poison/\udcff.txt", "ok": "café"}
        encoded = json_bytes(data)
        encoded.decode("utf-8")  # strict UTF-8
        assert b"\\udcff" in encoded
        assert "café".encode() in encoded
        assert data == json.loads(encoded)

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
    def test_non_finite_becomes_null(self, value: float) -> None:
        """NaN and infinities become null; the document is strict JSON."""
        encoded = json_bytes({"x": [value, 1.5], "y": {"z": value}})
        assert {"x": [None, 1.5], "y": {"z": None}} == json.loads(
            encoded, parse_constant=lambda name: pytest.fail(name)
        )

    def test_non_finite_key_is_written_as_json_spells_it(self) -> None:
        """A NaN or infinite key (a tool's output may have one) is written as json.dumps
        writes it for the model, in strict JSON, the rest of the document kept."""
        data = {"out": {float("nan"): 1, float("-inf"): float("inf"), 2.5: "x"}}
        assert {"out": {"NaN": 1, "-Infinity": None, "2.5": "x"}} == json.loads(
            json_bytes(data), parse_constant=lambda name: pytest.fail(name)
        )

    def test_unknown_objects_as_text(self) -> None:
        """An object json cannot encode is written as its str()."""
        assert {"p": "a/b"} == json.loads(json_bytes({"p": Path("a/b")}))

    def test_safe_response_renders_surrogates(self) -> None:
        """SafeJSONResponse renders what JSONResponse cannot."""
        response = SafeJSONResponse({"detail": "\ud800", "n": float("nan")})
        assert {"detail": "\ud800", "n": None} == json.loads(bytes(response.body))


class TestSseEvent:
    def test_one_event_one_data_line(self) -> None:
        """An event is an event line and one data line, whatever newlines the data holds."""
        raw = sse_event("tool_result", {"output": "a\nb\r\nc\udcff"})
        lines = raw.decode("utf-8").split("\n")
        assert ["event: tool_result", lines[1], "", ""] == lines
        assert {"output": "a\nb\r\nc\udcff"} == json.loads(lines[1].removeprefix("data: "))

    def test_unicode_line_ends_are_escaped_too(self) -> None:
        """NEL, LINE and PARAGRAPH SEPARATOR leave as JSON escapes: a client that splits
        lines as ``str.splitlines`` does (httpx's ``aiter_lines``) still reads one data line."""
        text = "a\x85b\u2028c\u2029d \\\u2028 é"
        lines = sse_event("token", {"content": text}).decode("utf-8").splitlines()
        assert ["event: token", lines[1], ""] == lines
        assert {"content": text} == json.loads(lines[1].removeprefix("data: "))


class TestPathRedactor:
    def test_configured_directories_replaced(self, tmp_path: Path) -> None:
        """Absolute forms of the configured directories become <setting>, longest first."""
        state = tmp_path / "state"
        redact = PathRedactor({"state_dir": state, "workspace_dir": tmp_path})
        text = json.dumps(f"cannot save {state}/s1.json: [Errno 13] {tmp_path}/x")
        assert '"cannot save <state_dir>/s1.json: [Errno 13] <workspace_dir>/x"' == redact(text)

    def test_relative_directory_redacted_in_resolved_form(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A relative setting is redacted where the store writes it: resolved against cwd."""
        monkeypatch.chdir(tmp_path)
        redact = PathRedactor({"state_dir": Path(".taskforce/state")})
        resolved = (tmp_path / ".taskforce/state/a.json").as_posix()
        assert "at <state_dir>/a.json" == redact(f"at {resolved}")
        assert "at .taskforce/state/a.json" == redact("at .taskforce/state/a.json")
