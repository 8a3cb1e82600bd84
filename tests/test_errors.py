"""The errors of ``taskforce.errors``: what each one carries besides its message."""

from __future__ import annotations

from taskforce.errors import LLMProviderError


class TestLLMProviderError:
    def test_usage_is_none_unless_given(self) -> None:
        """An error raised without ``usage`` reports none."""
        assert None is LLMProviderError("down").usage

    def test_usage_is_kept_as_given(self) -> None:
        """The usage a server reported before the failure rides on the error, a copy."""
        usage = {"prompt_tokens": 11, "completion_tokens": 7}

        error = LLMProviderError("cut", error_type="invalid_response", usage=usage)
        usage["prompt_tokens"] = 0

        assert {"prompt_tokens": 11, "completion_tokens": 7} == error.usage
        assert ("invalid_response", ()) == (error.error_type, error.attempts)


class TestHierarchyDrawing:
    def test_the_module_docstring_draws_the_class_tree(self) -> None:
        """Each class of the docstring's tree sits under its base class, and the tree
        names every exception class of the module."""
        import re

        import taskforce.errors as errors

        # a node: its name at the line's start or after a branch; its column is its depth
        drawn = [
            (found.start(1), found.group(1))
            for line in (errors.__doc__ or "").splitlines()
            if (found := re.match(r"^[ │]*(?:[├└]── )?(\w+Error)\b", line))
        ]
        assert len(drawn) > 10  # the scan finds the tree, so this test can fail
        stack: list[tuple[int, str]] = []
        parents: dict[str, str | None] = {}
        for depth, name in drawn:
            while stack and stack[-1][0] >= depth:
                stack.pop()
            parents[name] = stack[-1][1] if stack else None
            stack.append((depth, name))
        classes = {
            name: cls
            for name, cls in vars(errors).items()
            if isinstance(cls, type)
            and issubclass(cls, Exception)
            and cls.__module__ == errors.__name__
        }
        assert set(classes) == set(parents)
        actual = {
            name: (None if cls is errors.TaskforceError else cls.__bases__[0].__name__)
            for name, cls in classes.items()
        }
        assert actual == parents
