"""The process families: /proc read as prometheus_client reads it, exported under its names."""

from __future__ import annotations

import gc
import os
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from taskforce.observability.metrics import MetricSet, observe_process
from taskforce.observability.metrics._catalog import PROCESS_CATALOG
from taskforce.observability.metrics._procfs import ProcessReader
from tests.support.binaries import require_binary

_BOOT = 1_700_000_000
# pid (comm with a space and a parenthesis) state ppid ... utime=250 stime=150 ...
# starttime=12345 vsize=987654321 rss=4321
_STAT = (
    "4242 (python (worker) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 "
    "12345 987654321 4321 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0 0\n"
)
_LIMITS = (
    "Limit                     Soft Limit           Hard Limit           Units     \n"
    "Max cpu time              unlimited            unlimited            seconds   \n"
    "Max open files            1024                 524288               files     \n"
)


@pytest.fixture(name="proc")
def fixture_proc(tmp_path: Path) -> Path:
    """A fake /proc: boot time, and a process with 7 open fds and a soft limit of 1024."""
    (tmp_path / "stat").write_text(f"cpu  1 2 3\nbtime {_BOOT}\nprocesses 9\n")
    me = tmp_path / "self"
    (me / "fd").mkdir(parents=True)
    (me / "stat").write_text(_STAT)
    (me / "limits").write_text(_LIMITS)
    for fd in range(7):
        (me / "fd" / str(fd)).touch()
    return tmp_path


def _reference(*collectors: object) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """What prometheus_client exports: family -> sorted labels -> value."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return _parse(generate_latest(registry).decode())


def _parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    parsed: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                key = tuple(sorted(sample.labels.items()))
                parsed.setdefault(sample.name, {})[key] = sample.value
    return parsed


class TestProcessReader:
    def test_same_figures_as_prometheus_client(self, proc: Path) -> None:
        """CPU, memory, start time and fds equal ProcessCollector's on the same /proc."""
        ours = ProcessReader(proc).read()
        ref = {
            name: next(iter(values.values()))
            for name, values in _reference(ProcessCollector(proc=str(proc), registry=None)).items()
        }
        assert ref == {
            "process_cpu_seconds_total": ours.cpu_seconds,
            "process_resident_memory_bytes": ours.resident_bytes,
            "process_virtual_memory_bytes": ours.virtual_bytes,
            "process_start_time_seconds": ours.start_time_seconds,
            "process_open_fds": ours.open_fds,
            "process_max_fds": ours.max_fds,
        }
        assert 7.0 == ours.open_fds

    def test_missing_sources_give_none(self, tmp_path: Path) -> None:
        """Without /proc nothing is available and every figure is None, nothing raises."""
        reader = ProcessReader(tmp_path)
        assert not reader.is_available
        assert (
            {None} == set(vars(reader.read()).values())
            if hasattr(reader.read(), "__dict__")
            else True
        )
        stats = reader.read()
        assert (None, None, None, None, None, None) == (
            stats.cpu_seconds,
            stats.resident_bytes,
            stats.virtual_bytes,
            stats.start_time_seconds,
            stats.open_fds,
            stats.max_fds,
        )

    def test_unlimited_fds_is_none(self, proc: Path) -> None:
        """A soft limit of 'unlimited' has no number: the family is left out, no error."""
        (proc / "self" / "limits").write_text(_LIMITS.replace("1024 ", "unlimited "))
        assert ProcessReader(proc).max_fds() is None

    def test_reads_this_process(self) -> None:
        """On the real /proc the figures are there and plausible for this process."""
        stats = ProcessReader().read()
        assert stats.open_fds is not None and stats.max_fds is not None
        assert 0 < stats.open_fds <= stats.max_fds
        assert stats.resident_bytes is not None and stats.resident_bytes > 0


class TestProcessFamilies:
    def test_names_types_help_and_labels_match_prometheus_client(self) -> None:
        """Every family is exported as prometheus_client's collectors export it."""
        metrics = MetricSet()
        observe_process(metrics)
        ours = {
            f.name: (f.type, f.documentation, sorted({k for s in f.samples for k in s.labels}))
            for f in text_string_to_metric_families(metrics.render().decode())
        }
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)
        reference = {
            f.name: (f.type, f.documentation, sorted({k for s in f.samples for k in s.labels}))
            for f in text_string_to_metric_families(generate_latest(registry).decode())
        }
        assert reference == {name: ours[name] for name in reference}
        assert {spec.name.removesuffix("_total") for spec in PROCESS_CATALOG} == set(reference)

    def test_values_are_read_at_scrape_time(self, proc: Path) -> None:
        """A change in /proc or in the GC shows in the next scrape, with nothing recorded."""
        metrics = MetricSet()
        observe_process(metrics, proc)
        first = _parse(metrics.render().decode())
        (proc / "self" / "fd" / "99").touch()
        gc.collect(0)
        second = _parse(metrics.render().decode())
        assert 7.0 == first["process_open_fds"][()]
        assert 8.0 == second["process_open_fds"][()]
        gen0 = (("generation", "0"),)
        assert (
            second["python_gc_collections_total"][gen0] > first["python_gc_collections_total"][gen0]
        )
        assert float(_BOOT) + 123.45 == second["process_start_time_seconds"][()]

    def test_a_forked_worker_counts_its_collections_from_the_fork(self) -> None:
        """A forked child's python_gc_collections_total starts near 0, not at its parent's
        count (which every worker would carry, and a replaced one bring back)."""
        metrics = MetricSet()
        observe_process(metrics)
        for _ in range(200):
            gc.collect(0)
        gen0 = (("generation", "0"),)
        parent = _parse(metrics.render().decode())["python_gc_collections_total"][gen0]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report its count, then leave at once
            try:
                seen = _parse(metrics.render().decode())["python_gc_collections_total"][gen0]
                os.write(write, str(seen).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            child = float(pipe.read())
        os.waitpid(pid, 0)
        assert parent >= 200
        assert child < 50

    def test_without_proc_only_python_families(self, tmp_path: Path) -> None:
        """Where /proc is missing, the process_* families are left out, python_* stay."""
        metrics = MetricSet()
        observe_process(metrics, tmp_path)
        names = {f.name for f in text_string_to_metric_families(metrics.render().decode())}
        assert "python_info" in names
        assert not {n for n in names if n.startswith("process_")}

    def test_twice_is_refused(self) -> None:
        """Adding the families twice to one set raises instead of exporting them twice."""
        metrics = MetricSet()
        observe_process(metrics)
        with pytest.raises(ValueError, match="exists already"):
            observe_process(metrics)


class TestProcessDoc:
    def test_table_matches_process_catalog(self) -> None:
        """docs/metrics.md lists every process family with its type and labels."""
        doc = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
        section = doc.read_text(encoding="utf-8").split("## Process metrics", 1)[1]
        section = section.split("\n## ", 1)[0]
        rows = re.findall(
            r"^\| `((?:process|python)_\w+)` \| (\w+)[^|]* \| (.*?) \|", section, re.M
        )
        documented = {
            name: (kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows
        }
        assert {spec.name: (spec.kind, spec.label_names) for spec in PROCESS_CATALOG} == documented


@pytest.mark.integration
class TestProcessLint:
    def test_promtool_check_metrics_is_clean(self) -> None:
        """promtool check metrics reports nothing on the catalog plus the process families."""
        metrics = MetricSet()
        observe_process(metrics)
        text = metrics.render().decode()
        assert "process_start_time_seconds " in text
        lint = subprocess.run(
            [require_binary("promtool"), "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (0, "") == (lint.returncode, lint.stdout + lint.stderr)
