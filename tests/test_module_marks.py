"""tests/support/module_marks.py leaves a module out only when ``-m`` deselects all of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.module_marks import deselected_whatever_else, deselects_module, module_marks

_TESTS = Path(__file__).resolve().parent
_FAST_LOOP = "not integration and not slow"


class TestModuleMarks:
    @pytest.mark.parametrize(
        ("line", "marks"),
        [
            ("pytestmark = pytest.mark.integration", {"integration"}),
            ("pytestmark = [pytest.mark.integration, pytest.mark.slow]", {"integration", "slow"}),
            ("pytestmark = [pytest.mark.slow]", {"slow"}),
        ],
    )
    def test_bare_marks_are_read(self, line: str, marks: set[str]) -> None:
        text = f'"""Doc."""\n\nimport pytest\n\n{line}\n\n\ndef test(): ...\n'
        assert frozenset(marks) == module_marks(text)

    @pytest.mark.parametrize(
        "text",
        [
            "def test(): ...\n",
            "pytestmark = pytest.mark.skipif(True, reason='x')\n",
            "pytestmark = pytest.mark.integration\npytestmark = pytest.mark.slow\n",
            "pytestmark = [\n    pytest.mark.integration,\n]\n",
            "pytestmark = pytest.mark.integration if X else pytest.mark.slow\n",
            "if X:\n    pytestmark = pytest.mark.integration\n",
        ],
        ids=["none", "arguments", "twice", "over-lines", "conditional", "indented"],
    )
    def test_anything_else_is_unsure(self, text: str) -> None:
        assert None is module_marks(text)


class TestDeselectedWhateverElse:
    @pytest.mark.parametrize(
        ("markexpr", "marks"),
        [
            (_FAST_LOOP, {"integration"}),
            (_FAST_LOOP, {"slow"}),
            (_FAST_LOOP, {"integration", "slow"}),
            ("not (integration or slow)", {"slow"}),
            ("not integration", {"integration"}),
            ("slow and not slow", set()),
        ],
    )
    def test_no_test_with_the_marks_can_match(self, markexpr: str, marks: set[str]) -> None:
        assert deselected_whatever_else(markexpr, frozenset(marks))

    @pytest.mark.parametrize(
        ("markexpr", "marks"),
        [
            (_FAST_LOOP, set()),  # a module without marks may hold fast tests
            ("integration", {"slow"}),  # a test of it may be marked integration too
            ("integration or not slow", {"slow"}),
            ("not slow", {"integration"}),
            ("integration and asyncio", {"integration"}),
            ("not integration or slow", {"integration"}),
            ("integration(reason='x')", {"integration"}),  # matches on arguments: unsure
        ],
    )
    def test_a_test_with_the_marks_may_match(self, markexpr: str, marks: set[str]) -> None:
        assert not deselected_whatever_else(markexpr, frozenset(marks))


class TestTheSuitesModules:
    def test_the_fast_loop_leaves_out_a_module_of_integration_tests(self) -> None:
        assert deselects_module(_TESTS / "api" / "test_cli.py", _FAST_LOOP)
        assert not deselects_module(_TESTS / "api" / "test_cli.py", "integration")

    def test_the_fast_loop_keeps_a_module_with_fast_tests(self) -> None:
        assert not deselects_module(_TESTS / "integration" / "test_kubernetes.py", _FAST_LOOP)
        assert not deselects_module(_TESTS / "api" / "test_openapi.py", _FAST_LOOP)
