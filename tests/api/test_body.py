"""Strict JSON bodies: what Python's json takes but the API refuses, each with its reason."""

from __future__ import annotations

import json

import pytest

from taskforce.api._body import MAX_JSON_DEPTH, parse_strict_json


class TestParseStrictJSON:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (b'{"mission": "hi"}', {"mission": "hi"}),
            (b'{"m": "\\ud83d\\ude00 caf\\u00e9"}', {"m": "\U0001f600 café"}),
            (b'{"n": [1.5, -2e10, 3]}', {"n": [1.5, -2e10, 3]}),
            (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, json.loads("[" * 32 + "]" * 32)),
        ],
    )
    def test_plain_json_passes(self, body: bytes, expected: object) -> None:
        """Valid JSON within the limits parses as json.loads would."""
        assert expected == parse_strict_json(body)

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b'{"mission": NaN}', "NaN is not a JSON number"),
            (b'{"mission": -Infinity}', "-Infinity is not a JSON number"),
            (b'{"x": 1e999}', "out of range"),
            (b'{"mission": "\\ud800"}', "unpaired surrogate \\ud800"),
            (b'{"\\udfff": 1}', "unpaired surrogate \\udfff"),
            (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested deeper"),
            (b"[" * 200_000 + b"]" * 200_000, "nested deeper"),
            (b'{"mission": "\xff\xfe"}', "not valid UTF-8"),
            (b'{"x": ' + b"9" * 5000 + b"}", "Exceeds the limit"),
            (b'{"mission": ', "Expecting value"),
        ],
    )
    def test_hostile_json_refused_with_reason(self, body: bytes, reason: str) -> None:
        """Each hostile body raises JSONDecodeError whose msg says what is wrong."""
        with pytest.raises(json.JSONDecodeError) as info:
            parse_strict_json(body)
        assert reason in info.value.msg
        assert len(info.value.msg) < 100
