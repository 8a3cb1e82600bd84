"""A small PromQL reader for the deploy files' checks: which metrics and labels an expression names.

It is not a parser (promtool checks syntax); it only finds the identifiers that a
typo in a metric or label name would change, so the dashboard and the alert rules
can be checked against the metric catalog without a Prometheus server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from taskforce.observability.metrics._catalog import CATALOG, PROCESS_CATALOG

#: Suffixes Prometheus adds to a histogram's series.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
#: Grafana's built-in variables and what stands in for them when an expression is checked.
GRAFANA_BUILTINS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "inf", "nan"})
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)", re.IGNORECASE
)
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")

#: The catalog and the process families every process exports beside it.
_LABELS = {spec.name: frozenset(spec.label_names) for spec in (*CATALOG, *PROCESS_CATALOG)}
#: (metric, label) -> the values a closed label can take.
_CLOSED = {
    (spec.name, label.name): frozenset(label.values)
    for spec in (*CATALOG, *PROCESS_CATALOG)
    for label in spec.labels
    if label.kind == "closed"
}
_EQUALITY = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
#: A regex matcher value made only of literal alternatives (``a|b``), which can be checked.
_LITERAL_ALTERNATIVES = re.compile(r"[\w-]+(\|[\w-]+)*")
_KINDS = {spec.name: spec.kind for spec in (*CATALOG, *PROCESS_CATALOG)}


@dataclass
class Expression:
    """What one PromQL expression names: series (metric -> matcher labels) and grouping labels."""

    series: dict[str, set[str]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)


def read(expr: str) -> Expression:
    """Return the metric names, matcher labels and grouping labels named in ``expr``."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)
    found = Expression()
    for match in _GROUPING.finditer(text):
        found.grouping |= {name.strip() for name in match.group(2).split(",") if name.strip()}
    text = _GROUPING.sub(" ", text)

    def selector(match: re.Match[str]) -> str:
        name = match.group(1) or ""
        found.series.setdefault(name, set()).update(_MATCHER_LABEL.findall(match.group(2)))
        return " "

    text = _SELECTOR.sub(selector, text)
    for match in _IDENTIFIER.finditer(text):
        name, is_call = match.group(1), match.group(2)
        if is_call or name.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        found.series.setdefault(name, set())
    return found


def catalog_metric(series_name: str) -> str | None:
    """Return the catalog metric a series name belongs to (histogram suffixes allowed), or None."""
    if series_name in _KINDS:
        return series_name
    for suffix in HISTOGRAM_SUFFIXES:
        base = series_name.removesuffix(suffix)
        if base != series_name and _KINDS.get(base) == "histogram":
            return base
    return None


def allowed_labels(series_name: str) -> frozenset[str]:
    """Return the labels a series of the catalog can carry once scraped."""
    metric = catalog_metric(series_name)
    if metric is None:
        return TARGET_LABELS
    extra = {"le"} if series_name.endswith("_bucket") else set()
    return _LABELS[metric] | TARGET_LABELS | extra


def problems(expr: str, *, allowed_series: frozenset[str] = frozenset()) -> list[str]:
    """Return what is wrong with the names in ``expr``: unknown metrics or labels.

    Args:
        expr: a PromQL expression (template variables already substituted).
        allowed_series: series names outside the catalog that are fine (``up``).

    Returns:
        One message per unknown metric, unknown matcher label or unknown grouping label.
    """
    found = read(expr)
    messages: list[str] = []
    known_labels: set[str] = set()
    for name, matcher_labels in found.series.items():
        if name == "":
            messages.append(f"selector without a metric name in {expr!r}")
            continue
        if catalog_metric(name) is None and name not in allowed_series:
            messages.append(f"unknown metric {name!r} in {expr!r}")
            continue
        labels = allowed_labels(name)
        known_labels |= labels
        for label in sorted(matcher_labels - labels):
            messages.append(f"{name} has no label {label!r} in {expr!r}")
    for label in sorted(found.grouping - known_labels):
        messages.append(f"grouping by unknown label {label!r} in {expr!r}")
    return messages


def metrics_named(expr: str) -> set[str]:
    """Return the catalog metrics ``expr`` reads."""
    return {m for m in map(catalog_metric, read(expr).series) if m is not None}


def closed_value_problems(expr: str) -> list[str]:
    """Return the matchers of ``expr`` that name a value a closed catalog label never takes.

    Only ``=``, ``!=`` and literal alternatives (``=~"a|b"``) are checked: a matcher on a
    value the code cannot produce selects nothing (or, negated, everything).
    """
    messages: list[str] = []
    for match in _SELECTOR.finditer(expr):
        metric = catalog_metric(match.group(1) or "")
        for label, op, value in _EQUALITY.findall(match.group(2)):
            allowed = _CLOSED.get((metric or "", label))
            if allowed is None or (op.endswith("~") and not _LITERAL_ALTERNATIVES.fullmatch(value)):
                continue
            for one in value.split("|") if op.endswith("~") else [value]:
                if one not in allowed:
                    messages.append(f"{metric} {label}={one!r} is never produced in {expr!r}")
    return messages
