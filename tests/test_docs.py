"""docs/ stays true: settings, log categories, the command line, and every module path,
name, metric, route and variable a page mentions are what the code has."""

from __future__ import annotations

import argparse
import ast
import fnmatch
import re
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from taskforce.config import ModelPrice, Settings
from taskforce.core.interfaces.log import LOG_CATEGORIES, SECRET_NAME_WORDS, is_secret_name
from tests.support import source, yaml_files
from tests.support.log_audit import documented_levels

DOCS = Path(__file__).resolve().parents[1] / "docs"
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _setting_names(model: type[BaseModel], prefix: str = "") -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _setting_names(annotation, f"{prefix}{name}.")
        else:
            names.add(prefix + name)
    return names


def _setting_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    fields: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields |= _setting_fields(annotation, f"{prefix}{name}.")
        else:
            fields[prefix + name] = field
    return fields


#: (lowest, whether the lowest is excluded, highest) of a numeric setting.
Bounds = tuple[float, bool, float]

_UNITS = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_NUMBER = r"[0-9][0-9,.]*(?: [KMGT]iB)?"
# "(1 to 1000", "; 0 to 600,000 ms", "(above 0, at most 3600 seconds", "(1 KiB to 1 TiB"
_RANGE = re.compile(rf"(?:\(|; )(above )?({_NUMBER})(?: to |, at most )({_NUMBER})")


def _bounds(field: FieldInfo) -> Bounds | None:
    low: float | None = None
    high: float | None = None
    above = False
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = float(str(item.ge))
        elif isinstance(item, annotated_types.Gt):
            low, above = float(str(item.gt)), True
        elif isinstance(item, annotated_types.Le):
            high = float(str(item.le))
    return None if low is None or high is None else (low, above, high)


def _number(text: str) -> float:
    figure, _, unit = text.partition(" ")
    return float(figure.replace(",", "")) * _UNITS.get(unit, 1)


def _documented_ranges(row: str) -> list[Bounds]:
    return [(_number(low), bool(above), _number(high)) for above, low, high in _RANGE.findall(row)]


#: Settings whose unset value (``None``) the table describes: what they fall back to.
_DESCRIBED_DEFAULTS = {
    "metrics.host": "the service's host (`--host`)",
    "api.max_connections": "half the open-file limit",
}


def _default_cell(cell: str) -> str:
    """The default a table cell states: its first code span, else its text (``none``)."""
    found = re.match(r"`([^`]*)`", cell.strip())
    return found.group(1) if found else cell.strip()


def _documented_default(value: object) -> str:
    """How the configuration table writes ``value`` as a default."""
    if value is None or value == {}:
        return "none"
    if value == LOG_CATEGORIES:
        return "all"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class TestConfigurationDoc:
    def test_every_setting_documented(self) -> None:
        """docs/configuration.md has one table row per setting, with its env var."""
        text = (DOCS / "configuration.md").read_text(encoding="utf-8")
        rows = dict(re.findall(r"^\| `([a-z_.]+)` \| `(TASKFORCE_[A-Z_]+)` \|", text, re.M))
        expected = _setting_names(Settings)
        assert expected == set(rows)
        for name, env in rows.items():
            assert "TASKFORCE_" + name.upper().replace(".", "__") == env

    def test_every_default_documented(self) -> None:
        """Each setting's row states the default Settings has, in the default column."""
        text = (DOCS / "configuration.md").read_text(encoding="utf-8")
        rows = dict(
            re.findall(r"^\| `([a-z_.]+)` \| `TASKFORCE_[A-Z_]+` \| ([^|]*) \|", text, re.M)
        )
        fields = _setting_fields(Settings)
        assert set(fields) == set(rows)
        for name, field in fields.items():
            default = field.get_default(call_default_factory=True)
            if name in _DESCRIBED_DEFAULTS:
                assert (None, _DESCRIBED_DEFAULTS[name]) == (default, rows[name].strip())
            else:
                assert _documented_default(default) == _default_cell(rows[name]), name

    def test_every_range_documented(self) -> None:
        """Each bounded setting's row states the range config enforces, and only that one."""
        text = (DOCS / "configuration.md").read_text(encoding="utf-8")
        rows = dict(re.findall(r"^\| `([a-z_.]+)` \| (.*)$", text, re.M))
        expected = {name: _bounds(field) for name, field in _setting_fields(Settings).items()}
        # a price's range is the same for input and output, and stated in the prices row
        (price,) = {_bounds(field) for field in ModelPrice.model_fields.values()}
        expected["llm.prices"] = price
        bounded = {name: bounds for name, bounds in expected.items() if bounds is not None}
        assert len(bounded) > 20  # the scan finds the bounds, so this test can fail
        documented = {name: _documented_ranges(rows[name]) for name in expected}
        assert {name: [bounds] for name, bounds in bounded.items()} == {
            name: ranges for name, ranges in documented.items() if ranges
        }

    def test_every_choice_documented(self) -> None:
        """A setting with a closed set of values (a ``Literal``) names each in its row."""
        text = (DOCS / "configuration.md").read_text(encoding="utf-8")
        rows = dict(re.findall(r"^\| `([a-z_.]+)` \| (.*)$", text, re.M))

        def choices(annotation: Any) -> list[Any]:
            if typing.get_origin(annotation) is typing.Literal:
                return list(typing.get_args(annotation))
            return [value for arg in typing.get_args(annotation) for value in choices(arg)]

        closed = {
            name: choices(field.annotation)
            for name, field in _setting_fields(Settings).items()
            if choices(field.annotation)
        }
        assert len(closed) >= 4  # the scan finds them, so this test can fail
        missing = [
            (name, value)
            for name, values in closed.items()
            for value in values
            if f"`{value}`" not in rows[name]
        ]
        assert [] == missing


_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def _log_calls() -> dict[str, set[tuple[str | None, str | None]]]:
    """Every literal dotted event name logged under src/, with the (level, category) of
    each call: the level ``None`` where a call picks its method at run time
    (``(_LOG.info if ok else _LOG.error)(...)``, ``log = _LOG.warning ...; log(...)``,
    ``getattr(_LOG, level)(...)``), the category ``None`` where the call names none."""
    src = DOCS.parent / "src" / "taskforce"
    found: dict[str, set[tuple[str | None, str | None]]] = {}
    for path in source.modules(src):
        for node in source.nodes(path):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            level: str | None = None
            if isinstance(func, ast.Attribute) and func.attr in _LOG_METHODS:
                level = "error" if func.attr == "exception" else func.attr
            elif not (
                (
                    isinstance(func, ast.IfExp)
                    and all(
                        isinstance(branch, ast.Attribute) and branch.attr in _LOG_METHODS
                        for branch in (func.body, func.orelse)
                    )
                )
                or (isinstance(func, ast.Name) and func.id == "log")
                or (
                    isinstance(func, ast.Call)
                    and isinstance(func.func, ast.Name)
                    and func.func.id == "getattr"
                )
            ):
                continue
            first = node.args[0]
            names = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            category = next(
                (
                    keyword.value.value
                    for keyword in node.keywords
                    if keyword.arg == "category"
                    and isinstance(keyword.value, ast.Constant)
                    and isinstance(keyword.value.value, str)
                ),
                None,
            )
            for name in names:
                if (
                    isinstance(name, ast.Constant)
                    and isinstance(name.value, str)
                    and "." in name.value
                ):
                    found.setdefault(name.value, set()).add((level, category))
    return found


#: Fields every line or every mission's line has (see "Fields"), and logging's own keys.
_COMMON_FIELDS = {"category", "exc_info", "stack_info", "session_id", "mission_id", "agent_type"}
#: What the helpers that make several fields at once give a line.
_FIELD_HELPERS = {"store_failure_fields": {"error_type", "error", "detail"}}


def _spread_fields(value: ast.expr) -> set[str] | None:
    """The field names ``**value`` gives a log call, or None where the scan cannot tell
    (a variable): ``text_fields("x", ...)`` is ``x_chars`` and ``x_sha256``."""
    if isinstance(value, ast.IfExp):
        branches = [_spread_fields(value.body), _spread_fields(value.orelse)]
        return None if None in branches else set().union(*(b for b in branches if b))
    if isinstance(value, ast.Dict):
        names: set[str] = set()
        for key, item in zip(value.keys, value.values, strict=True):
            if key is None:
                spread = _spread_fields(item)
                if spread is None:
                    return None
                names |= spread
            elif isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
        return names
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        name = value.args[0] if value.args else None
        if value.func.id == "text_fields" and isinstance(name, ast.Constant):
            return {f"{name.value!s}_chars", f"{name.value!s}_sha256"}
        return _FIELD_HELPERS.get(value.func.id)
    return None


def _logged_fields() -> dict[str, set[str]]:
    """Each literal dotted event name logged under src/, with the fields its calls give it
    by name (``tool=name``, ``**text_fields("error", ...)``), the common ones left out.

    A call that picks its event by a condition (``"a" if ok else "b"``) and its fields by
    the same condition (``**({} if ok else {...})``) gives each event its own branch."""
    logged = _logged_events()
    found: dict[str, set[str]] = {}
    for path in source.modules(_SRC):
        for node in source.nodes(path):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            first = node.args[0]
            branches = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            for index, name in enumerate(branches):
                if not (isinstance(name, ast.Constant) and name.value in logged):
                    continue
                fields = {keyword.arg for keyword in node.keywords if keyword.arg}
                for keyword in node.keywords:
                    value = keyword.value
                    if keyword.arg is not None:
                        continue
                    if (
                        isinstance(first, ast.IfExp)
                        and isinstance(value, ast.IfExp)
                        and ast.dump(value.test) == ast.dump(first.test)
                    ):
                        value = (value.body, value.orelse)[index]
                    fields |= _spread_fields(value) or set()
                found.setdefault(name.value, set()).update(fields - _COMMON_FIELDS)
    return found


def _logged_events() -> set[str]:
    """Every literal dotted event name logged under src/."""
    return set(_log_calls())


def _event_rows() -> dict[str, list[str]]:
    """Each event of docs/logging.md's events table with the cells of its row."""
    text = (DOCS / "logging.md").read_text(encoding="utf-8")
    section = text.split("## Events", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = line.split(" | ")
        if line.startswith("| `") and len(cells) > 3:
            for name in re.findall(r"`([a-z_.]+\.[a-z_]+)`", cells[0]):
                rows[name] = cells
    return rows


class TestLoggingDoc:
    def test_every_event_documented(self) -> None:
        """Every event the code logs by a literal name has a row in docs/logging.md."""
        text = (DOCS / "logging.md").read_text(encoding="utf-8")
        section = text.split("## Events", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", section))
        events = _logged_events()
        assert len(events) > 20  # the scan finds the events, so this test can fail
        assert set() == events - documented

    def test_each_event_is_logged_at_its_documented_level_and_category(self) -> None:
        """Each call logging an event by a literal name uses a level of the event's row
        (where the call names its method) and a category of the row (the one it names, or
        the one its name's first segment gives it)."""
        from taskforce.observability.logs._logging import _PREFIX_CATEGORY

        categories = {
            name: set(re.findall(r"`(\w+)`", cells[2])) for name, cells in _event_rows().items()
        }
        levels = documented_levels(DOCS / "logging.md")
        calls = _log_calls()
        assert len(calls) > 20  # the scan finds the calls, so this test can fail
        wrong = {
            (event, level, category)
            for event, uses in calls.items()
            for level, category in uses
            if (level is not None and level not in levels.get(event, ()))
            or (category or _PREFIX_CATEGORY.get(event.split(".")[0], "lifecycle"))
            not in categories.get(event, ())
        }
        assert set() == wrong

    def test_every_documented_event_is_in_the_code(self) -> None:
        """Each event named in the first column of the events table is logged: by a log
        call that names it, or as the ``event`` a class or variable holds for one (the
        admission refusals), so the page lists no event that is never logged."""
        text = (DOCS / "logging.md").read_text(encoding="utf-8")
        section = text.split("## Events", 1)[1].split("\n## ", 1)[0]
        rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| ")]
        documented = {name for row in rows for name in re.findall(r"`([a-z_.]+\.[a-z_]+)`", row)}
        assert len(documented) > 20  # the scan finds the rows, so this test can fail
        held = {
            node.value.value
            for path in source.modules(_SRC)
            for node in source.nodes(path)
            if isinstance(node, ast.Assign)
            and any(
                isinstance(target, ast.Name) and target.id == "event" for target in node.targets
            )
            and isinstance(node.value, ast.Constant)
        }
        assert set() == documented - _logged_events() - held

    def test_each_field_a_call_logs_is_in_its_events_row(self) -> None:
        """Each field a log call gives an event by name (``workers=...``, and the
        ``x_chars``/``x_sha256`` pair of ``**text_fields("x", ...)``) is named in the
        event's row, so the table tells an operator every field a line can carry."""
        rows = {
            name: set(re.findall(r"`([a-z0-9_]+)`", " | ".join(cells[3:])))
            for name, cells in _event_rows().items()
        }
        fields = _logged_fields()
        assert sum(map(len, fields.values())) > 50  # the scan finds fields: it can fail
        missing = {
            (event, field)
            for event, names in fields.items()
            for field in names
            if event in rows and field not in rows[event]
        }
        assert set() == missing

    def test_the_log_queries_name_events_and_categories_that_exist(self) -> None:
        """A jq filter of the docs (`.event == "mission.failed"`, `.category == "security"`)
        names an event of the events table or a category of the closed set."""
        named = [
            (page.name, key, value)
            for page in sorted([*DOCS.glob("*.md"), DOCS.parent / "README.md"])
            for key, value in re.findall(
                r'\.(event|category) == \\?"([^"\\]+)\\?"', page.read_text(encoding="utf-8")
            )
        ]
        assert len(named) > 5  # the filters are found, so this test can fail
        known = {"event": set(_event_rows()), "category": set(LOG_CATEGORIES)}
        assert [] == [(page, value) for page, key, value in named if value not in known[key]]

    def test_every_category_documented(self) -> None:
        """docs/logging.md lists exactly the closed set of log categories."""
        text = (DOCS / "logging.md").read_text(encoding="utf-8")
        text = text.split("## Categories", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `([a-z]+)` \|", text, re.M))
        assert set(LOG_CATEGORIES) == documented

    def test_config_ignored_names_every_setting_the_check_names(self) -> None:
        """The ``config.ignored`` row lists each setting the start-up check can name, as
        ``section.name``, its bare name after one of its section, or ``section.prefix*``."""
        from taskforce.config._checks import _IGNORED_WHEN

        text = (DOCS / "logging.md").read_text(encoding="utf-8")
        row = next(line for line in text.splitlines() if line.startswith("| `config.ignored`"))
        listed = set(re.findall(r"`([a-z_.*]+)`", row))
        missing = {
            f"{section}.{name}"
            for section, names, _, _ in _IGNORED_WHEN
            for name in names
            if name not in listed
            and not any(fnmatch.fnmatch(f"{section}.{name}", pattern) for pattern in listed)
        }
        assert set() == missing

    def test_the_quiet_libraries_are_the_codes(self) -> None:
        """The HTTP client libraries logged at warning and above only are the set-up's."""
        from taskforce.observability.logs import _logging

        text = " ".join((DOCS / "logging.md").read_text(encoding="utf-8").split())
        quiet = re.search(r"libraries of the LLM provider \(((?:`\w+`(?:, )?)+)\)", text)
        assert quiet is not None
        assert set(_logging._QUIET_LIBRARIES) == set(re.findall(r"`(\w+)`", quiet.group(1)))

    def test_the_words_of_secret_names_are_the_codes(self) -> None:
        """The words that make a field's or a query parameter's value a secret."""
        text = " ".join((DOCS / "logging.md").read_text(encoding="utf-8").split())
        words = re.search(r"last word \(.*?\) is ((?:`\w+`(?:, | or )?)+), or ends in", text)
        assert words is not None
        assert SECRET_NAME_WORDS == set(re.findall(r"`(\w+)`", words.group(1)))

    @pytest.mark.parametrize(
        "name", ["api_key", "authorization", "x-api-key", "auth_token", "access_token"]
    )
    def test_the_secret_names_the_docs_give_are_secret(self, name: str) -> None:
        """Each example of a secret's name in the docs is one."""
        assert is_secret_name(name)


class TestMetricsDoc:
    def test_every_error_type_of_the_built_in_tools_is_listed(self) -> None:
        """Each CamelCase error type the built-in tools write (a string of their modules
        that names no class of theirs) has a row in "The built-in tools' error types"."""
        text = (DOCS / "metrics.md").read_text(encoding="utf-8")
        section = text.split("### The built-in tools' error types", 1)[1].split("\n## ", 1)[0]
        listed = {
            name
            for line in section.splitlines()
            if line.startswith("| `")
            for name in re.findall(r"`(\w+)`", line.split(" | ")[0])
        }
        tools = _SRC / "infrastructure" / "tools"
        defined = {name for module in source.modules(tools) for name in _definitions(module)}
        written = {
            node.value
            for module in source.modules(tools)
            for node in source.nodes(module)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"(?:[A-Z][a-z]+){2,}", node.value)
        } - defined
        assert len(written) > 15  # the scan finds the error types, so this test can fail
        assert set() == written - listed

    def test_process_series_count(self, tmp_path: Path) -> None:
        """docs/metrics.md says how many process series a scrape adds: the number served."""
        from fastapi.testclient import TestClient

        from taskforce.api.server import create_app

        settings = Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws")
        with TestClient(create_app(settings)) as client:
            text = client.get("/metrics").text
        served = sum(1 for line in text.splitlines() if line.startswith(("process_", "python_")))
        doc = (DOCS / "metrics.md").read_text(encoding="utf-8")
        found = re.search(r"They add (\d+) series per process", doc)
        assert found is not None
        assert served == int(found.group(1))

    def test_series_budget_figures(self) -> None:
        """The "Series budget" section's figures are the catalog's: the overflow counter's
        pairs, and the worst case of ``taskforce_http_requests_total`` at the default cap."""
        from taskforce.observability.metrics._catalog import guarded_pairs, metric

        doc = (DOCS / "metrics.md").read_text(encoding="utf-8")
        pairs = re.search(r"counts only its (\d+) real \(metric, label\) pairs", doc)
        assert pairs is not None
        assert len(guarded_pairs()) == int(pairs.group(1))
        cap = Settings().metrics.max_label_values
        http = re.search(r"`([\d x]+)` for\s+`taskforce_http_requests_total`", doc)
        assert http is not None
        factors = [int(factor) for factor in http.group(1).split(" x ")]
        spec = metric("taskforce_http_requests_total")
        assert [label.cardinality(cap) for label in spec.labels] == factors


#: A line that goes on the expression before it (a binary operator ends or starts it).
_CONTINUES = re.compile(r"^\s|^(?:or|and|unless)\b|^[-+*/^%<>=!]")
_ENDS_IN_OPERATOR = re.compile(r"(?:\bor|\band|\bunless|[-+*/^%<>=])\s*$")


def _promql_examples() -> list[tuple[str, str]]:
    """Every PromQL expression of the docs' ```promql blocks, with its page: a block holds
    one or more, each after its own comment or beginning at column 0 once the one before
    is whole (its parentheses closed and no operator left dangling)."""
    examples: list[tuple[str, str]] = []
    for page in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```promql\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            lines: list[str] = []
            for line in [*block.splitlines(), "#"]:
                text = "\n".join(lines)
                whole = text.count("(") == text.count(")") and (
                    not lines or not _ENDS_IN_OPERATOR.search(lines[-1])
                )
                ends = line.lstrip().startswith("#") or not line.strip()
                if lines and (ends or (whole and not _CONTINUES.match(line))):
                    examples.append((page.name, text))
                    lines = []
                if not ends:
                    lines.append(line)
    return examples


class TestPromQLExamples:
    def test_examples_read_only_series_and_labels_the_code_makes(self) -> None:
        """Each example names catalog metrics (or the process families, or `up`), labels
        those metrics carry, and values of closed labels the code produces."""
        from tests.integration import promql

        examples = _promql_examples()
        assert len(examples) > 30  # the blocks are found, so this test can fail
        wrong = [
            (page, problem)
            for page, expr in examples
            for problem in promql.problems(expr, allowed_series=frozenset({"up"}))
            + promql.closed_value_problems(expr)
        ]
        assert [] == wrong

    @pytest.mark.integration
    def test_examples_parse_with_promtool(self, tmp_path: Path) -> None:
        """`promtool check rules` accepts every example as a recording rule's expression."""
        from tests.support.binaries import check_expressions

        expressions = [expr for _, expr in _promql_examples()]
        checked = check_expressions("docs", expressions, tmp_path)
        assert 0 == checked.returncode, checked.stdout + checked.stderr
        assert f"SUCCESS: {len(expressions)} rules found" in checked.stdout


class TestProcessMetricsDoc:
    def test_the_table_is_the_process_catalog(self) -> None:
        """The "Process metrics" table has one row per family of ``PROCESS_CATALOG``, with
        its type and labels (and the closed values it gives)."""
        from taskforce.observability.metrics._catalog import PROCESS_CATALOG

        text = (DOCS / "metrics.md").read_text(encoding="utf-8")
        section = text.split("## Process metrics", 1)[1].split("\n## ", 1)[0]
        rows = re.findall(r"^\| `(\w+)` \| (\w+)[^|]* \| ([^|]*) \|", section, re.M)
        documented = {
            name: (kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows
        }
        assert {spec.name: (spec.kind, spec.label_names) for spec in PROCESS_CATALOG} == (
            documented
        )
        values = {label.name: label.values for spec in PROCESS_CATALOG for label in spec.labels}
        for _, _, labels in rows:
            for label, listed in re.findall(r"`(\w+)` \{([^}]*)\}", labels):
                assert values[label] == tuple(value.strip() for value in listed.split(","))


class TestOperatorGuideLimits:
    def _section(self, start: str, end: str) -> str:
        text = (DOCS / "operator-guide.md").read_text(encoding="utf-8")
        return " ".join(text[text.index(start) : text.index(end)].split())

    def test_the_scrape_drain_is_documented(self) -> None:
        """How long a stopping process lets a scrape under way finish is in "Stopping"."""
        from taskforce.api._listener import SCRAPE_DRAIN_SECONDS

        stopping = self._section("### Stopping", "### uvicorn")
        assert f"a scrape under way gets up to {SCRAPE_DRAIN_SECONDS} s" in stopping

    def test_the_listen_backlog_is_documented(self) -> None:
        """The connections a socket holds while no worker accepts them are in "Workers"."""
        from taskforce.api._listener import _BACKLOG

        workers = self._section("### Workers", "### Stopping")
        assert f"a backlog of {_BACKLOG:,} connections" in workers

    def test_the_supervisor_and_shutdown_figures_are_documented(self) -> None:
        """The restart pause's cap, a quick death, the crash-loop count, the record wait
        and the supervisor's kill deadline are the code's."""
        from taskforce.api import _supervisor
        from taskforce.application.executor import RECORD_SECONDS
        from taskforce.config import Settings

        numbers = {1: "a second", 5: "five"}
        workers = self._section("### Workers", "### Stopping")
        stopping = self._section("### Stopping", "### uvicorn")
        assert f"dies within {numbers[int(_supervisor._QUICK_DEATH_SECONDS)]} of its start" in (
            workers
        )
        server = Settings().server
        pause = f"up to {server.max_restart_pause_seconds:g} s, `server.max_restart_pause_seconds`)"
        assert pause in workers
        assert f"or {numbers[server.max_failed_restarts]} replacements in a row" in workers
        assert f"waits at most {RECORD_SECONDS:g} s for its record" in stopping
        assert f"up to {RECORD_SECONDS:g} s more for the record writes" in stopping
        margin = _supervisor._KILL_MARGIN_SECONDS
        assert f"still alive {margin:g} s after that sum" in stopping
        assert f"give your process manager {margin:g} s more than the sum there" in stopping

    def test_the_workspace_quota_is_documented_and_not_denied(self) -> None:
        """The workspace section gives the quota's walks as the code does, and no sentence
        of the guide says that nothing bounds the workspace as a whole, which it did, or
        that an emptyDir's sizeLimit fails a write."""
        from taskforce.infrastructure.tools._quota import RECHECK_SECONDS, RECOUNT_SECONDS

        workspace = self._section(
            "## The workspace and the tool threads", "The file tools run their blocking IO"
        )
        assert f"whenever the count is {RECOUNT_SECONDS:g} s old" in workspace
        assert f"on a count at least {RECHECK_SECONDS:g} s old" in workspace
        guide = " ".join((DOCS / "operator-guide.md").read_text(encoding="utf-8").split())
        assert "bounds the workspace as a whole" not in guide
        # nor offers an emptyDir's sizeLimit (an eviction) as a quota that fails writes
        assert "an `emptyDir` with a `sizeLimit`, a PersistentVolumeClaim" not in guide

    def test_a_mission_longer_than_the_ttl_is_warned_of(self) -> None:
        """A session is renewed by a mission's record, written when the mission ends: the
        guide says a mission longer than the TTL loses the session, not that a session in
        use never expires."""
        expiry = self._section("**What expires.**", "**The sweep.**")
        assert "never expires" not in expiry
        assert "a mission that ends more than the TTL after its session's last write" in expiry

    def test_the_lingering_close_is_documented(self) -> None:
        """How long and how much a refused request's connection is read before it closes."""
        from taskforce.api._read_deadline import LINGER_BYTES, LINGER_SECONDS

        refuses = self._section("## What the API refuses", "### Streams")
        mib = LINGER_BYTES // 1024**2
        assert f"dropped for up to {LINGER_SECONDS:g} s and {mib} MiB" in refuses


def _fixed_limits() -> dict[str, str]:
    """The "Fixed limits" table of docs/configuration.md: each row's first cell -> value."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    section = text[text.index("## Fixed limits") : text.index("## The command line")]
    return dict(re.findall(r"^\| (.+?) \| (.+?) \| .+ \|$", section, re.M)[1:])


#: Module-level names of src/ that read as a limit (``MAX``, ``LIMIT``) but need no row of
#: "Fixed limits": a setting's default, another name of a listed one, or no limit at all.
_NOT_FIXED_LIMITS = {
    # the defaults of settings (their rows are in the settings table)
    "DEFAULT_MAX_DIR_ENTRIES",
    "DEFAULT_MAX_EXPRESSION_CHARS",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_SLEEP_SECONDS",
    "DEFAULT_MAX_TOOL_CALLS_PER_TURN",
    "DEFAULT_MAX_WORKSPACE_BYTES",
    "DEFAULT_MAX_WORKSPACE_ENTRIES",
    "MAX_PATH_CHARS",
    "MAX_RESULT_DEPTH",
    # the label guard's name for MAX_ERROR_TYPE_LENGTH
    "MAX_VALUE_LENGTH",
    # how much of a value a log line or error message renders (MAX_QUOTED_CHARS is listed)
    "_MAX_PLAIN_DEPTH",
    "_MAX_PLAIN_INT_BITS",
    "_MAX_PLAIN_SIZE",
    # libpq's own integer range, which a DSN's connect_timeout is read with
    "_INT_MAX",
    # no limits: a metric, error types, a context variable, a size above which work moves
    "PROCESS_MAX_FDS",
    "STEP_LIMIT",
    "STEP_LIMIT_ERROR",
    "STEP_TURN_LIMIT",
    "TOOL_CALL_LIMIT",
    "TOOL_TIME_LIMIT",
    "SCAN_LIMIT",
    "_GZIP_INLINE_LIMIT",
}


class TestFixedLimitsDoc:
    def test_each_fixed_limit_is_the_codes(self) -> None:
        """Every value the "Fixed limits" table states is the code's constant."""
        from taskforce.api import _body, _errors, _listener, _read_deadline, _supervisor
        from taskforce.application.executor import RECORD_SECONDS
        from taskforce.config._sections import POSTGRES_MAX_BYTES
        from taskforce.config._validators import MAX_SETTING_DEPTH
        from taskforce.core.domain._parsing import (
            MAX_JSON_SCAN,
            MAX_JSON_TRIES,
            MIN_JSON_SCAN_CHARS,
        )
        from taskforce.core.interfaces.executor import SESSION_ID_PATTERN
        from taskforce.core.interfaces.jsonable import MAX_WRITTEN_DEPTH
        from taskforce.core.interfaces.log import MAX_QUOTED_CHARS
        from taskforce.core.interfaces.outcome import MAX_ERROR_TYPE_LENGTH
        from taskforce.infrastructure.llm import _directives, _openai
        from taskforce.infrastructure.state._postgres_store import EXPIRY_BATCH
        from taskforce.infrastructure.tools import _base, _calculator, _files, _quota, _workspace
        from taskforce.observability.metrics._children import MAX_COUNT
        from taskforce.observability.proxies import _context_pack, _llm, _shape, _tools

        rows = _fixed_limits()

        def value(name: str) -> str:
            (found,) = [cell for limit, cell in rows.items() if f"`{name}`" in limit]
            return found

        longest_id = int(re.findall(r"\{0,(\d+)\}", SESSION_ID_PATTERN.pattern)[-1]) + 1
        min_args, max_args = _calculator._FUNCTIONS["min"][1:]
        assert _calculator._FUNCTIONS["max"][1:] == (min_args, max_args)
        caches = {
            _tools._MAX_CACHED_TOOLS,
            _tools._MAX_BUNDLES,
            _llm._MAX_BUNDLES,
            _shape._MAX_TYPES,
            _openai._MAX_RESOLVED,
        }
        assert 1 == len(caches)
        assert 2 ** (MAX_COUNT.bit_length() - 1) == MAX_COUNT
        expected = {
            "MAX_JSON_DEPTH": f"{_body.MAX_JSON_DEPTH} levels",
            "MAX_SETTING_DEPTH": f"{MAX_SETTING_DEPTH} levels",
            "MAX_ERRORS": f"the first {_errors.MAX_ERRORS} errors, {_errors.ECHO_CHARS} "
            "characters of the input each",
            "SESSION_ID_PATTERN": f"1 to {longest_id} characters of `A-Z a-z 0-9 _ . -`",
            "_MAX_NAME": f"{_workspace._MAX_NAME} characters",
            "MAX_PROBLEMS_NAMED": f"{_base.MAX_PROBLEMS_NAMED}",
            "_MAX_MAGNITUDE": "±" + f"{_calculator._MAX_MAGNITUDE:.0e}".replace("e+", "e"),
            "_MAX_ROUND_DIGITS": f"±{_calculator._MAX_ROUND_DIGITS}",
            "_FUNCTIONS": f"{min_args} to {max_args} arguments",
            "MAX_JSON_TRIES": f"{MAX_JSON_TRIES}",
            "MAX_JSON_SCAN": f"{MAX_JSON_SCAN} times the reply, at least "
            f"{MIN_JSON_SCAN_CHARS:,} characters",
            "MAX_WRITTEN_DEPTH": f"{MAX_WRITTEN_DEPTH} levels",
            "_MAX_FAILURES": f"`llm:fail` 1 to {_directives._MAX_FAILURES} times, delays 0 to "
            f"{_directives._MAX_DELAY_MS:,.0f} ms, results quoted to "
            f"{_directives._RESULT_LIMIT} characters",
            "MAX_QUOTED_CHARS": f"{MAX_QUOTED_CHARS} characters",
            "MAX_ERROR_TYPE_LENGTH": f"{MAX_ERROR_TYPE_LENGTH} characters",
            "MAX_COUNT": f"2^{MAX_COUNT.bit_length() - 1}",
            "_MAX_CACHED_TOOLS": f"{caches.pop()} entries "
            f"({_context_pack._MAX_CONVERSATIONS} conversations)",
            "LINGER_SECONDS": f"{_read_deadline.LINGER_SECONDS:g} s and "
            f"{_read_deadline.LINGER_BYTES // 1024**2} MiB",
            "MAX_LINGERING_REFUSALS": f"{_read_deadline.MAX_LINGERING_REFUSALS} per listener",
            "MAX_WORKERS": f"1 to {_supervisor.MAX_WORKERS} workers",
            "_BACKLOG": f"{_listener._BACKLOG:,} per listening socket",
            "RECORD_SECONDS": f"{RECORD_SECONDS:g} s for a cancelled mission's record, "
            f"{RECORD_SECONDS:g} s more for the writes under way, "
            f"{_listener.SCRAPE_DRAIN_SECONDS} s for a scrape",
            "POSTGRES_MAX_BYTES": f"{POSTGRES_MAX_BYTES // 1024**2} MiB",
            "_PATH_MAX": f"{_workspace._PATH_MAX:,} bytes",
            "APPEND_LOCK_WAIT_SECONDS": f"{_files.APPEND_LOCK_WAIT_SECONDS:g} s",
            "LEFTOVER_SECONDS": f"{_files.LEFTOVER_SECONDS:g} s",
            "_APPEND_ATTEMPTS": f"{_files._APPEND_ATTEMPTS}",
            "RECOUNT_SECONDS": f"a count {_quota.RECOUNT_SECONDS:g} s old, "
            f"{_quota.RECHECK_SECONDS:g} s before a refusal",
            "EXPIRY_BATCH": f"{EXPIRY_BATCH}",
        }
        assert expected == {name: value(name) for name in expected}
        assert len(expected) == len(rows)  # every row is checked

    def test_every_limit_named_in_the_code_is_a_setting_or_listed(self) -> None:
        """A module-level name of src/ with ``MAX`` or ``LIMIT`` in it is a setting's
        default, in the "Fixed limits" table, or known to be no limit (so a new bound
        cannot be added without a setting or a row)."""
        listed = " ".join(_fixed_limits())
        src = Path(__file__).resolve().parents[1] / "src" / "taskforce"
        unlisted = set()
        for path in source.modules(src):
            for node in source.tree(path).body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                if isinstance(node, ast.AnnAssign):
                    targets = [node.target]
                for target in targets:
                    name = target.id if isinstance(target, ast.Name) else ""
                    is_limit = re.search(r"MAX|LIMIT", name) and name not in _NOT_FIXED_LIMITS
                    if is_limit and f"`{name}`" not in listed:
                        unlisted.add(f"{name} in {path.relative_to(src).as_posix()}")
        assert set() == unlisted


class TestTargetsFileExamples:
    def test_every_example_targets_file_is_found_by_the_example_scrape_config(self) -> None:
        """Each targets file the docs suggest matches a file_sd glob of the example configs.

        An operator who copies both must get the workers scraped, not an empty job.
        """
        texts = [path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.md"))]
        texts.append((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
        globs = {
            name.strip().strip("\"'")
            for text in texts
            for listed in re.findall(r"files: \[([^\]]*)\]", text)
            for name in listed.split(",")
        }
        examples = {
            path.replace("$(hostname)", "web1")
            for text in texts
            for path in re.findall(
                r'(?:TASKFORCE_METRICS__TARGETS_FILE=|targets_file = ")(/[^\s"`]+)', text
            )
        }
        assert globs and examples
        unmatched = {p for p in examples if not any(fnmatch.fnmatch(p, g) for g in globs)}
        assert set() == unmatched


_PAGES = (*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md")
_SRC = DOCS.parent / "src" / "taskforce"


def _pages_text() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in _PAGES}


def _definitions(path: Path) -> set[str]:
    """The names a module defines at any depth: functions, classes, assigned names."""
    names: set[str] = set()
    for node in source.nodes(path):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _modules_named(path: str) -> list[Path]:
    """The files a page means by ``path``: from the repository root, else under src/taskforce
    (``api/_routes.py``, ``_faults.py``), matched by its end."""
    from_root = DOCS.parent / path
    if from_root.is_file():
        return [from_root]
    return [module for module in source.modules(_SRC) if module.as_posix().endswith("/" + path)]


class TestArchitectureDoc:
    def test_every_module_path_exists(self) -> None:
        """Every ``.py`` path a page or the README names is a file of the repository."""
        named = {
            (page, path)
            for page, text in _pages_text().items()
            for path in re.findall(r"(?<![\w/.-])((?:[\w.-]+/)*\w+\.py)\b", text)
        }
        assert len(named) > 40  # the scan finds the paths, so this test can fail
        assert set() == {(page, path) for page, path in named if not _modules_named(path)}

    def test_each_name_is_in_the_module_named_beside_it(self) -> None:
        """A name written as `` `Name` (`module.py` `` is defined in that module."""
        text = (DOCS / "architecture.md").read_text(encoding="utf-8")
        pairs = re.findall(r"`([A-Za-z_]\w*)(?:\([^`]*\))?`\s+\(`([\w/]+\.py)`", text)
        assert len(pairs) > 15  # the scan finds the pairs, so this test can fail
        missing = {
            (name, path)
            for name, path in pairs
            if not any(name in _definitions(module) for module in _modules_named(path))
        }
        assert set() == missing

    def test_the_observability_tree_lists_every_module(self) -> None:
        """The tree of "The observability package" lists exactly the package's modules,
        and each name it gives a module is defined in it."""
        text = (DOCS / "architecture.md").read_text(encoding="utf-8")
        tree = text.split("## The observability package", 1)[1].split("```", 2)[1]
        listed: set[str] = set()
        folder = ""
        for line in tree.splitlines()[2:]:
            found = re.match(r"([│ ]*)[├└]── ([\w./]+(?:, [\w./]+)*)\s*(.*)$", line)
            assert found is not None, line
            indent, names, description = found.groups()
            if not indent:
                folder = ""
            if names.endswith("/"):
                folder = names
                continue
            for name in names.split(", "):
                module = f"{folder}{name}"
                listed.add(module)
                defined = _definitions(_SRC / "observability" / module)
                # the names a line gives: CamelCase classes and snake_case functions
                for word in re.findall(
                    r"\b([A-Z]\w*[a-z]\w*[A-Z]\w*|[a-z]+_[a-z_]+)\b", description
                ):
                    assert word in defined, (module, word)
        modules = {
            path.relative_to(_SRC / "observability").as_posix()
            for path in source.modules(_SRC / "observability")
            if path.name != "__init__.py"
        }
        assert modules == listed

    def test_the_module_tree_lists_every_module(self) -> None:
        """The tree of "The modules" lists exactly the modules of src/taskforce outside the
        observability package (which has its own tree) and its packages' ``__init__.py``,
        and each name it gives a module is defined in it."""
        text = (DOCS / "architecture.md").read_text(encoding="utf-8")
        tree = text.split("## The modules", 1)[1].split("```", 2)[1]
        listed: set[str] = set()
        folders: list[str] = []
        for line in tree.splitlines()[2:]:
            found = re.match(r"([│ ]*)[├└]── ([\w./]+)\s*(.*)$", line)
            assert found is not None, line
            indent, name, description = found.groups()
            folders = folders[: len(indent) // 4]
            if name.endswith("/"):
                folders.append(name)
                continue
            module = "".join(folders) + name
            listed.add(module)
            defined = _definitions(_SRC / module)
            # the names a line gives: CamelCase classes, snake_case functions, CONSTANTS;
            # not a setting's dotted name
            for word in re.findall(
                r"(?<![\w.])([A-Z]\w*[a-z]\w*[A-Z]\w*|[a-z]+_[a-z_]+|[A-Z]+(?:_[A-Z]+)+)(?![\w.])",
                description,
            ):
                assert word in defined, (module, word)
        modules = {
            path.relative_to(_SRC).as_posix()
            for path in source.modules(_SRC)
            if path.name != "__init__.py" and not path.is_relative_to(_SRC / "observability")
        }
        assert len(modules) > 80  # the scan finds the modules, so this test can fail
        assert modules == listed

    def test_the_layer_table_says_what_each_package_imports(self) -> None:
        """Each package of the "Layers" table imports only what its row says it may
        (``errors`` and the root package, which import nothing of the project, aside)."""
        text = (DOCS / "architecture.md").read_text(encoding="utf-8")
        section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
        rows = re.findall(r"^\| `([\w/]+)/` \| .* \| ([^|]+) \|$", section, re.M)
        assert len(rows) == 7  # the scan finds the rows, so this test can fail
        for package, cell in rows:
            # "application, config, observability (container only)", "`core.interfaces` only"
            allowed = {
                re.sub(r"\(.*\)|\bonly\b|`", "", part).strip() for part in cell.split(",")
            } | {"errors", ""}
            top = package.replace("/", ".")
            imported: set[str] = set()
            for module in source.modules(_SRC / package):
                for node in source.nodes(module):
                    names: list[str] = []
                    if isinstance(node, ast.Import):
                        names = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                        names = [node.module]
                    for name in names:
                        if name == "taskforce" or name.startswith("taskforce."):
                            inner = name.removeprefix("taskforce").lstrip(".")
                            if not inner.startswith(top):
                                imported.add(inner)
            unexplained = {
                name
                for name in imported
                if not any(name == a or name.startswith(a + ".") for a in allowed)
            }
            assert set() == unexplained, package


def _option_rows(text: str, heading: str) -> dict[str, str]:
    """The rows of the option table under ``heading``: option (``--port``) -> default cell."""
    table = text.split(heading, 1)[1].split("\n\n", 2)[1]
    return {
        option: default.strip()
        for option, default in re.findall(r"^\| `([^`\s]+)[^|]* \| ([^|]+) \|", table, re.M)
    }


class TestCommandLineDoc:
    @pytest.mark.parametrize(
        ("command", "heading"),
        [("serve", "`taskforce serve [options]`:"), ("run", "`taskforce run [options] MISSION`")],
    )
    def test_every_option_documented(self, command: str, heading: str) -> None:
        """The option table of each command lists exactly its options (``--config``,
        which the page says both take, and ``--help`` aside), with the parser's default."""
        from taskforce.api.cli import _parser

        text = (DOCS / "configuration.md").read_text(encoding="utf-8")
        assert "Both take `--config FILE`" in text
        rows = _option_rows(text, heading)
        subcommands = next(
            action
            for action in _parser()._actions
            if isinstance(action, argparse._SubParsersAction)
        )
        actions = {
            (action.option_strings[-1] if action.option_strings else action.dest.upper()): action
            for action in subcommands.choices[command]._actions
            if action.dest not in ("help", "config")
        }
        assert set(actions) == set(rows)
        for option, action in actions.items():
            # "off" for a flag; a value when the parser has one (not a setting's fallback)
            if action.default is False:
                assert "off" == rows[option], option
            elif action.default is not None:
                assert str(action.default) == _default_cell(rows[option]), option


def _routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path template with its parameters as ``{}``) of every route the app serves."""
    from fastapi.routing import APIRoute

    from taskforce.api.server import create_app

    app = create_app(Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws"))
    served = {("GET", Settings().metrics.path)}
    for route in app.routes:
        path = re.sub(r"\{[^}]*\}", "{}", getattr(route, "path", ""))
        methods = route.methods if isinstance(route, APIRoute) else getattr(route, "methods", None)
        served |= {(method, path) for method in methods or ()}
    return served


class TestNamesInTheDocs:
    def test_every_metric_named_is_in_the_catalog(self) -> None:
        """Every ``taskforce_*`` name on any page or the README is a catalog metric (a
        histogram's ``_bucket``/``_sum``/``_count`` too; ``taskforce_x_*`` a prefix of one)
        or a table, index or identity sequence of the PostgreSQL store; a recording rule's
        ``job:taskforce_...`` aside."""
        from taskforce.infrastructure.state._postgres_schema import CREATE_SCHEMA
        from taskforce.observability.metrics._catalog import CATALOG

        known = {spec.name for spec in CATALOG}
        tables = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", CREATE_SCHEMA))
        assert len(tables) == 3
        tables |= set(re.findall(r"CREATE INDEX IF NOT EXISTS (\w+)", CREATE_SCHEMA))
        # the sequence PostgreSQL makes for an identity column: <table>_<column>_seq
        for table, body in re.findall(
            r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", CREATE_SCHEMA, re.S
        ):
            for column in re.findall(r"^ +(\w+) \w+ GENERATED ALWAYS AS IDENTITY", body, re.M):
                tables.add(f"{table}_{column}_seq")
        named = {
            (page, name)
            for page, text in _pages_text().items()
            for name in re.findall(r"(?<![\w:])taskforce_[a-z0-9_]*\*?", text)
        }
        assert len(named) > 50  # the scan finds the names, so this test can fail

        def exists(name: str) -> bool:
            if name.endswith(("*", "_")):  # `taskforce_state_*`, "the `taskforce_` prefix"
                return any(metric.startswith(name.rstrip("*")) for metric in known)
            return re.sub(r"_(bucket|sum|count)$", "", name) in known or name in tables

        assert set() == {(page, name) for page, name in named if not exists(name)}

    def test_every_panel_and_row_named_is_on_the_dashboard(self) -> None:
        """ "The X panel" and "the X row" in the docs name a panel or row of the Grafana
        dashboard by its title, so an operator finds what the page points at."""
        import json

        dashboard = json.loads((DEPLOY / "grafana" / "taskforce-dashboard.json").read_text())
        titles = {
            kind: {
                panel["title"]
                for panel in dashboard["panels"]
                if (panel["type"] == "row") == (kind == "row")
            }
            for kind in ("panel", "row")
        }
        named = [
            (page.name, title, kind)
            for page in sorted([*DOCS.glob("*.md"), DOCS.parent / "README.md"])
            for title, kind in re.findall(
                r"\bthe (?:dashboard's )?([A-Z][^.,:;`()]*?) (panel|row)\b",
                " ".join(page.read_text(encoding="utf-8").split()),
            )
        ]
        assert len(named) > 5  # the phrases are found, so this test can fail
        assert [] == [(page, title) for page, title, kind in named if title not in titles[kind]]

    def test_every_route_named_is_served(self, tmp_path: Path) -> None:
        """Every ``METHOD /path`` on any page or the README is a route of the app."""
        named = {
            (page, method, re.sub(r"\{[^}]*\}", "{}", path))
            for page, text in _pages_text().items()
            for method, path in re.findall(
                r"\b(GET|HEAD|POST|PUT|PATCH|DELETE) (/[\w/{}.-]*[\w}])", text
            )
        }
        assert len(named) > 5  # the scan finds the routes, so this test can fail
        served = _routes(tmp_path)
        assert set() == {(page, m, path) for page, m, path in named if (m, path) not in served}

    def test_the_state_tables_are_described_with_their_columns(self) -> None:
        """The operator guide's table of the PostgreSQL schema names every column of
        every table the store creates."""
        from taskforce.infrastructure.state._postgres_schema import CREATE_SCHEMA

        text = (DOCS / "operator-guide.md").read_text(encoding="utf-8")
        rows = dict(re.findall(r"^\| `(taskforce_\w+)` \| (.*) \|$", text, re.M))
        for table, body in re.findall(
            r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", CREATE_SCHEMA, re.S
        ):
            columns = set(re.findall(r"^    (\w+) ", body, re.M)) - {"PRIMARY"}
            assert columns, table
            assert set() == columns - set(re.findall(r"`(\w+)`", rows[table])), table

    def test_the_sweeps_cost_names_the_schemas_index(self) -> None:
        """Sizing the sweep, the operator guide says a PostgreSQL sweep goes through the
        index the schema creates on ``updated_at``, and nowhere that there is none."""
        from taskforce.infrastructure.state._postgres_schema import CREATE_SCHEMA

        text = " ".join((DOCS / "operator-guide.md").read_text(encoding="utf-8").split())
        found = re.search(
            r"CREATE INDEX IF NOT EXISTS (\w+) ON taskforce_sessions \(updated_at\)", CREATE_SCHEMA
        )
        assert found is not None
        sizing = text.split("**Sizing it.**", 1)[1].split("**PostgreSQL: the privilege.**", 1)[0]
        assert f"through the index `{found.group(1)}`" in sizing
        assert "no index on `updated_at`" not in text

    def test_the_session_id_pattern_is_the_codes(self) -> None:
        """The session id pattern the operator guide quotes is the one the API checks."""
        from taskforce.core.interfaces.executor import SESSION_ID_PATTERN

        text = (DOCS / "operator-guide.md").read_text(encoding="utf-8")
        found = re.search(r"\(the pattern `([^`]+)`; `SESSION_ID_PATTERN`", text)
        assert found is not None
        assert f"^{SESSION_ID_PATTERN.pattern}$" == found.group(1)

    def test_the_database_privileges_are_the_stores(self) -> None:
        """The privileges the operator guide says the database user needs on each table
        are the ones the store checks at start-up."""
        from taskforce.infrastructure.state._postgres_access import TABLE_PRIVILEGES

        text = " ".join((DOCS / "operator-guide.md").read_text(encoding="utf-8").split())
        sentence = text.split("and then, on every start, ", 1)[1].split(". ", 1)[0]
        documented = {
            table: tuple(privileges.split(", "))
            for privileges, table in re.findall(r"`([A-Z, ]+)` on `(taskforce_\w+)`", sentence)
        }
        assert TABLE_PRIVILEGES == documented


#: The variables docs/configuration.md shows being refused, as typos of a setting, each
#: with the value it is shown with (a service link is told by its value's shape).
_REFUSED_EXAMPLES = {
    "TASKFORCE_METRICS_ENABLED": "",
    "TASKFORCE_XYZZY": "",
    "TASKFORCE_LLM__PATH": "",
    "TASKFORCE_METRIC__PATH": "",
    "TASKFORCE_METRIC__XYZZY": "",
    "TASKFORCE_METRICS_PORT": "9100",
}
#: Values of the shapes a Kubernetes service-link variable may have.
_SERVICE_LINK_VALUES = ("", "10.96.0.10", "80", "tcp", "tcp://10.96.0.10:80")


class TestMetricsPathDoc:
    @pytest.mark.parametrize(
        ("path", "said"),
        [
            ("metrics", "must start with `/`"),
            ("/metrics/", "`/metrics/` is refused"),
            ("/api/metrics", "`/api`"),
            ("/a b", "spaces"),
            ("/a?b", "`?`"),
            ("/a%20", "`%`"),
            ("/a//b", "(`//`)"),
            ("/a/../b", "`.`/`..` segment"),
        ],
    )
    def test_each_refusal_of_a_metrics_path_is_in_its_row(self, path: str, said: str) -> None:
        """Every kind of metrics.path the settings refuse is one the row says is refused."""
        text = (DOCS / "configuration.md").read_text(encoding="utf-8")
        row = next(line for line in text.splitlines() if line.startswith("| `metrics.path` |"))
        assert said in row
        with pytest.raises(ValueError):
            Settings(metrics={"path": path})


#: the distribution a module is installed from, where the two names differ
_DISTRIBUTIONS = {"yaml": "pyyaml"}


class TestScriptsTheDocsRun:
    def test_a_script_that_needs_more_than_the_install_says_what(self) -> None:
        """Each ``python <script>.py`` a page runs imports only the standard library and
        the package's own dependencies (what the README's ``pip install -e .`` gives), or
        the page names the distribution to install (PyYAML for generate_prometheusrule.py)."""
        import sys
        import tomllib

        root = DOCS.parent
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
        installed = {"taskforce"} | {
            re.split(r"[<>=\[ ]", requirement)[0].lower().replace("-", "_")
            for requirement in project["project"]["dependencies"]
        }
        missing = set()
        for page in [root / "README.md", *sorted(DOCS.glob("*.md"))]:
            text = page.read_text(encoding="utf-8")
            for script in set(re.findall(r"python ([\w/]+\.py)", text)):
                tree = ast.parse((root / script).read_text(encoding="utf-8"))
                modules = {
                    (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
                    for node in ast.walk(tree)
                    if isinstance(node, ast.Import | ast.ImportFrom)
                    for alias in node.names
                }
                for module in {name.split(".")[0] for name in modules} - {""}:
                    dist = _DISTRIBUTIONS.get(module, module)
                    if (
                        module not in sys.stdlib_module_names
                        and module not in installed
                        and dist not in text.lower()
                    ):
                        missing.add((page.name, script, dist))
        assert set() == missing


class TestConfigurationExamples:
    def test_the_example_file_loads(self, tmp_path: Path) -> None:
        """The example TOML file of docs/configuration.md is a valid settings file."""
        from taskforce.config import load_settings

        text = (DOCS / "configuration.md").read_text(encoding="utf-8")
        example = re.search(r"Example file:\n\n```toml\n(.*?)```", text, re.S)
        assert example is not None
        path = tmp_path / "taskforce.toml"
        path.write_text(example.group(1), encoding="utf-8")
        settings = load_settings(config_file=path)
        assert ("openai", 200) == (settings.llm.provider, settings.state.max_history)

    def test_every_variable_named_is_read(self) -> None:
        """Every ``TASKFORCE_*`` variable a page or the README names is one start-up reads
        (a setting's, a whole section's, ``TASKFORCE_CONFIG``, a Kubernetes service link),
        but for the typos docs/configuration.md shows being refused, which are."""
        from taskforce.config._environment import check_environment
        from taskforce.errors import UnknownSettingError

        named = {
            name
            for text in _pages_text().values()
            for name in re.findall(r"\bTASKFORCE_[A-Z0-9_]*[A-Z0-9]", text)
        }
        # "TASKFORCE_METRICS__* (metrics.*)": a section's variables
        named |= {
            name + "PATH"
            for text in _pages_text().values()
            for name in re.findall(r"\b(TASKFORCE_[A-Z]+__)\*", text)
        }
        assert len(named) > 50  # the scan finds the names, so this test can fail

        def is_read(name: str, value: str) -> bool:
            try:
                check_environment({name: value})
            except UnknownSettingError:
                return False
            return True

        configuration = (DOCS / "configuration.md").read_text(encoding="utf-8")
        for name, value in _REFUSED_EXAMPLES.items():
            assert name in configuration
            assert not is_read(name, value), name
        unread = {
            name
            for name in named - set(_REFUSED_EXAMPLES)
            if not any(is_read(name, value) for value in _SERVICE_LINK_VALUES)
        }
        assert set() == unread


class TestErrorTypesDoc:
    def _table(self, heading: str) -> dict[str, list[str]]:
        text = (DOCS / "logging.md").read_text(encoding="utf-8")
        section = text.split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]
        return {
            cells[0]: cells[1:]
            for line in section.splitlines()
            if line.startswith("| `")
            for cells in [[cell.strip() for cell in line.strip().strip("|").split(" | ")]]
        }

    def test_llm_error_types(self) -> None:
        """The LLM error types table lists the closed set, says which are retried, and
        each HTTP status a row names is classified as that row's type."""
        from taskforce.core.interfaces.llm import (
            LLM_ERROR_TYPES,
            RETRYABLE_LLM_ERROR_TYPES,
            llm_error_type_of_status,
        )

        rows = self._table("LLM error types")
        assert {f"`{name}`" for name in LLM_ERROR_TYPES} == set(rows)
        checked = 0
        for first, (cause, retried) in rows.items():
            name = first.strip("`")
            assert (name in RETRYABLE_LLM_ERROR_TYPES) == (retried == "yes"), name
            statuses = re.findall(r"HTTP ((?:\d{3}(?: or )?)+)", cause)
            for status in (s for found in statuses for s in found.split(" or ")):
                assert name == llm_error_type_of_status(int(status)), (name, status)
                checked += 1
        assert checked >= 4  # 408, 429, 401, 403: the scan finds them

    def test_mission_error_types(self) -> None:
        """The mission error types table has a row for each type a mission fails with
        on its own (no failed call to blame), and no other named type."""
        from taskforce.core.interfaces.outcome import MISSION_ERROR_TYPES

        rows = self._table("Mission error types")
        assert {f"`{name}`" for name in MISSION_ERROR_TYPES} == set(rows)


_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_NAMES = r"((?:`\w+`(?:, | and )?)+)"


def _alert_rules() -> dict[str, dict[str, Any]]:
    rules = yaml_files.load(DEPLOY / "prometheus" / "alerts.yml")
    return {
        rule["alert"]: rule
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


class TestAlertsDoc:
    def test_each_alert_has_its_severity(self) -> None:
        """The severity column of the operator guide's alert table is each rule's, and
        each alert has one row."""
        text = (DOCS / "operator-guide.md").read_text(encoding="utf-8")
        rows = re.findall(r"^\| `(Taskforce\w+)`[^|]*\| (\w+) \|", text, re.M)
        documented = dict(rows)
        assert len(documented) == len(rows)
        rules = _alert_rules()
        assert {name: rule["labels"]["severity"] for name, rule in rules.items()} == documented

    def test_the_alerts_a_sentence_names_are_those_it_describes(self) -> None:
        """The operator guide names the alerts that select ``job="taskforce"``, the ratio
        alerts (a ``scope`` label) and those that see a counter born above zero: each list,
        and the count before it, is what alerts.yml has."""
        text = " ".join((DOCS / "operator-guide.md").read_text(encoding="utf-8").split())
        rules = _alert_rules()
        kinds = {
            r"(\w+) alerts select `job=\"taskforce\"`: " + _NAMES: {
                name for name, rule in rules.items() if 'job="taskforce"' in str(rule["expr"])
            },
            r"The (\w+) ratio alerts \(" + _NAMES + r"\)": {
                name for name, rule in rules.items() if "scope" in rule["labels"]
            },
            r"(\w+) alerts must see a counter born above zero, since one event is enough "
            r"for them: " + _NAMES: {
                name
                for name, rule in rules.items()
                if "offset" in str(rule["expr"])
                and "process_start_time_seconds" in str(rule["expr"])
            },
        }
        for sentence, expected in kinds.items():
            found = re.search(sentence, text)
            assert found is not None, sentence
            count, names = found.groups()
            assert expected == set(re.findall(r"`(\w+)`", names)), sentence
            assert len(expected) == _NUMBERS[count.lower()], sentence
