"""The Prometheus text format 0.0.4: scrape-line prefixes built once, lines written per scrape.

A child's prefix (``name{labels} ``, for a histogram one per bucket plus ``_count`` and
``_sum``) is built here when the child is made, from label values the guard already
escaped; a scrape writes those bytes followed by the current values. The layout is
aioprometheus' own (labels sorted by name, ``le`` sorted in among them, bucket counts,
``_count`` and ``_sum`` as floats), so the exposition did not change when the write
path moved off aioprometheus' collectors.

Bytes throughout: one non-ASCII label value would make a joined ``str`` four bytes per
character.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import accumulate
from typing import Any

__all__ = [
    "CONTENT_TYPE",
    "escape_help",
    "format_le",
    "header_lines",
    "histogram_lines",
    "histogram_texts",
    "scalar_line",
    "series_text",
]

#: The content type of the text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_POS_INF = float("inf")
_NEG_INF = float("-inf")


def escape_help(text: str) -> str:
    """Escape ``# HELP`` text: ``\\`` as ``\\\\`` and a newline as ``\\n``.

    Args:
        text: The help string.

    Returns:
        The escaped help string.
    """
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_le(bound: float) -> str:
    """Return the ``le`` label value of a bucket bound (``+Inf`` for infinity)."""
    if bound == _POS_INF:
        return "+Inf"
    if bound == _NEG_INF:
        return "-Inf"
    return str(float(bound))


def header_lines(name: str, kind: str, help_text: str) -> tuple[bytes, bytes]:
    """Return the ``# HELP`` and ``# TYPE`` lines of a family."""
    return (f"# HELP {name} {escape_help(help_text)}".encode(), f"# TYPE {name} {kind}".encode())


def series_text(name: str, labels: dict[str, str]) -> bytes:
    """Return the prefix of a counter or gauge line: ``name{a="x",b="y"} ``.

    Args:
        name: The metric name.
        labels: Label name to value, values already escaped.

    Returns:
        The prefix, labels sorted by name.
    """
    if not labels:
        return f"{name} ".encode()
    text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{name}{{{text}}} ".encode()


def histogram_texts(
    name: str, labels: dict[str, str], bounds: Iterable[float]
) -> tuple[tuple[bytes, ...], bytes, bytes]:
    """Return the prefixes of a histogram series: one per bucket, then ``_count`` and ``_sum``.

    Args:
        name: The metric name.
        labels: Label name to value, values already escaped.
        bounds: The upper bounds, ``+Inf`` last.

    Returns:
        ``(bucket prefixes, count prefix, sum prefix)``.
    """
    pairs = sorted(labels.items())
    before = "".join(f'{key}="{value}",' for key, value in pairs if key < "le")
    after = "".join(f',{key}="{value}"' for key, value in pairs if key >= "le")
    buckets = tuple(
        f'{name}_bucket{{{before}le="{format_le(b)}"{after}}} '.encode() for b in bounds
    )
    if not pairs:
        return buckets, f"{name}_count ".encode(), f"{name}_sum ".encode()
    text = ",".join(f'{key}="{value}"' for key, value in pairs)
    return buckets, f"{name}_count{{{text}}} ".encode(), f"{name}_sum{{{text}}} ".encode()


def scalar_line(text: bytes, value: Any) -> bytes:
    """Return one counter or gauge line: the prefix, then the value as Python prints it."""
    return text + f"{value}".encode()


def histogram_lines(
    lines: list[bytes],
    texts: tuple[tuple[bytes, ...], bytes, bytes],
    counts: list[int],
    total: float,
) -> None:
    """Append the lines of one histogram series to ``lines``.

    Args:
        lines: Where the lines go.
        texts: The series' prefixes (see :func:`histogram_texts`).
        counts: Observations per bucket (not cumulative), aligned with the bucket prefixes.
        total: The sum of the observations.
    """
    buckets, count_text, sum_text = texts
    cumulative = list(accumulate(counts))
    # C-level loops: cumulative counts as floats, behind their cached prefixes
    lines.extend(map(bytes.__add__, buckets, map(str.encode, map(repr, map(float, cumulative)))))
    lines.append(count_text + repr(float(cumulative[-1])).encode())
    lines.append(sum_text + repr(float(total)).encode())
