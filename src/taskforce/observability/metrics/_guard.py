"""The label guard: caps free-form label values and makes them safe for the text exposition.

aioprometheus 23.12 writes label values between quotes as they are (claws/aioprometheus
PR #106, which would escape them, is still open), so one quote, backslash or newline in
a tool name would break the whole scrape. The guard therefore hands aioprometheus values
that are already escaped for the Prometheus text format 0.0.4: whatever renders the
registry, ours or aioprometheus' own, emits a valid exposition.

Hazard: the guard holds mutable state and has no locks; use it from the event-loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from taskforce.core.interfaces.outcome import MAX_ERROR_TYPE_LENGTH, label_safe
from taskforce.observability.metrics._catalog import OTHER

__all__ = [
    "MAX_VALUE_LENGTH",
    "LabelGuard",
    "escape_label_value",
    "normalize_label_value",
    "unescape_label_value",
]

#: Characters kept of a label value; longer values are cut (so 10,000 characters are one value).
#: The cut the outcome functions give an ``error_type``, so its log line and label agree.
MAX_VALUE_LENGTH = MAX_ERROR_TYPE_LENGTH

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n"}
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def escape_label_value(value: str) -> str:
    """Escape ``value`` for use between the quotes of a text-format label.

    Args:
        value: A raw label value.

    Returns:
        ``value`` with ``\\`` as ``\\\\``, ``"`` as ``\\"`` and a newline as ``\\n``.
    """
    if "\\" in value or '"' in value or "\n" in value:
        return "".join(_ESCAPES.get(char, char) for char in value)
    return value


def unescape_label_value(value: str) -> str:
    """Invert :func:`escape_label_value`.

    Args:
        value: A label value as it appears between the quotes of the exposition.

    Returns:
        The raw value.

    Raises:
        ValueError: ``value`` holds an escape sequence the text format does not define.
    """
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, "")
        if escaped not in _UNESCAPES:
            raise ValueError(f"invalid escape sequence \\{escaped} in {value!r}")
        out.append(_UNESCAPES[escaped])
    return "".join(out)


def normalize_label_value(value: object) -> str:
    """Stringify, cut to :data:`MAX_VALUE_LENGTH` characters, make valid UTF-8 and escape.

    ``200`` and ``"200"`` give the same result. A lone surrogate (not encodable as UTF-8)
    becomes ``?`` so the scrape still encodes.

    Args:
        value: Any label value.

    Returns:
        The exposition-safe form stored in the registry.
    """
    # cut and repair as the outcome functions do their error_type (one definition)
    return escape_label_value(label_safe(value if type(value) is str else str(value)))


@dataclass(slots=True)
class _LabelState:
    admitted: set[str] = field(default_factory=set)
    # raw str -> normalized value; bounded, only an optimisation of normalize_label_value
    memo: dict[str, str] = field(default_factory=dict)


class LabelGuard:
    """Admit at most ``max_label_values`` distinct values per label per metric.

    Every further value becomes ``other`` and is reported through ``on_overflow(metric,
    label)`` once per occurrence. ``other`` itself is always admitted and does not take
    a slot, so a guarded label has at most ``max_label_values + 1`` values.
    """

    def __init__(
        self,
        max_label_values: int,
        on_overflow: Callable[[str, str], None] | None = None,
    ) -> None:
        """Create an empty guard.

        Args:
            max_label_values: The cap per label per metric (>= 1).
            on_overflow: Called with ``(metric, label)`` each time a value is mapped to
                ``other``.

        Raises:
            ValueError: ``max_label_values`` is below 1.
        """
        if max_label_values < 1:
            raise ValueError(f"max_label_values must be >= 1, got {max_label_values!r}")
        self.max_label_values = max_label_values
        self._on_overflow = on_overflow
        self._states: dict[tuple[str, str], _LabelState] = {}
        self._memo_limit = 4 * max_label_values + 64

    def admit(self, metric: str, label: str, value: object) -> str:
        """Return the exposition-safe value to store for ``value``, or ``other``.

        Args:
            metric: The metric's full name.
            label: The label name.
            value: The raw value (anything; it is stringified).

        Returns:
            The normalized value (see :func:`normalize_label_value`) when it is already
            admitted or a slot is free, else ``other``.
        """
        state = self._states.get((metric, label))
        if state is None:
            state = self._states.setdefault((metric, label), _LabelState())
        memo_key: str | None = None
        if type(value) is str:
            safe = state.memo.get(value)
            if safe is None:
                safe = normalize_label_value(value)
                memo_key = value
        else:
            # never memoised: 1, 1.0 and True are equal dict keys but different labels
            safe = normalize_label_value(value)
        if safe != OTHER and safe not in state.admitted:
            if len(state.admitted) >= self.max_label_values:
                if self._on_overflow is not None:
                    self._on_overflow(metric, label)
                return OTHER
            state.admitted.add(safe)
        if memo_key is not None and len(state.memo) < self._memo_limit:
            state.memo[memo_key] = safe
        return safe

    def admitted(self, metric: str, label: str) -> frozenset[str]:
        """Return the values admitted so far for ``label`` of ``metric`` (escaped form)."""
        state = self._states.get((metric, label))
        return frozenset(state.admitted) if state is not None else frozenset()
