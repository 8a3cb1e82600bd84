"""docs/ stays true: every setting and every log category is documented, nothing more."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from taskforce.config import ModelPrice, Settings
from taskforce.core.interfaces.log import LOG_CATEGORIES

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
_DESCRIBED_DEFAULTS = {"metrics.host": "the service's host (`--host`)"}


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


def _logged_events() -> set[str]:
    """Every literal dotted event name passed to a log method under src/."""
    src = DOCS.parent / "src" / "taskforce"
    methods = {"debug", "info", "warning", "error", "exception", "critical"}
    found: set[str] = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in methods
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and "." in node.args[0].value
            ):
                found.add(node.args[0].value)
    return found


def _string_constants() -> set[str]:
    """Every string literal under src/."""
    src = DOCS.parent / "src" / "taskforce"
    return {
        node.value
        for path in src.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


class TestLoggingDoc:
    def test_every_event_documented(self) -> None:
        """Every event the code logs by a literal name has a row in docs/logging.md."""
        text = (DOCS / "logging.md").read_text(encoding="utf-8")
        section = text.split("## Events", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", section))
        events = _logged_events()
        assert len(events) > 20  # the scan finds the events, so this test can fail
        assert set() == events - documented

    def test_every_documented_event_is_in_the_code(self) -> None:
        """Each event named in the first column of the events table is a name the code
        writes (a string in src/), so the page lists no event that is never logged."""
        text = (DOCS / "logging.md").read_text(encoding="utf-8")
        section = text.split("## Events", 1)[1].split("\n## ", 1)[0]
        rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| ")]
        documented = {name for row in rows for name in re.findall(r"`([a-z_.]+\.[a-z_]+)`", row)}
        assert len(documented) > 20  # the scan finds the rows, so this test can fail
        assert set() == documented - _string_constants()

    def test_every_category_documented(self) -> None:
        """docs/logging.md lists exactly the closed set of log categories."""
        text = (DOCS / "logging.md").read_text(encoding="utf-8")
        text = text.split("## Categories", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `([a-z]+)` \|", text, re.M))
        assert set(LOG_CATEGORIES) == documented


class TestMetricsDoc:
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


class TestOperatorGuideLimits:
    def _section(self, start: str, end: str) -> str:
        text = (DOCS / "operator-guide.md").read_text(encoding="utf-8")
        return " ".join(text[text.index(start) : text.index(end)].split())

    def test_the_scrape_drain_is_documented(self) -> None:
        """How long a stopping process lets a scrape under way finish is in "Stopping"."""
        from taskforce.api._listener import _SCRAPE_DRAIN_SECONDS

        stopping = self._section("### Stopping", "### uvicorn")
        assert f"a scrape under way gets up to {_SCRAPE_DRAIN_SECONDS} s" in stopping

    def test_the_listen_backlog_is_documented(self) -> None:
        """The connections a socket holds while no worker accepts them are in "Workers"."""
        from taskforce.api._listener import _BACKLOG

        workers = self._section("### Workers", "### Stopping")
        assert f"a backlog of {_BACKLOG:,} connections" in workers


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
