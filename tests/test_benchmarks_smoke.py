"""The benchmarks of ``nox -s bench`` keep working: each runs with ``--quick`` and reports.

Timings are never asserted (they depend on the machine); what is checked is that
each script exits 0, measures every candidate (the taskforce one included) and
prints its tables and one verdict line per target.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# Each test runs a benchmark script in a subprocess for seconds: not part of the fast loop.
pytestmark = pytest.mark.slow

_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
_VERDICT = r"^VERDICT {target}: (PASS|FAIL|SKIP) \(.+\)$"

_OVERHEAD_CANDIDATES = (
    "plain",
    "taskforce",
    "proxy only",
    "aioprometheus",
    "prometheus_client",
    "opentelemetry",
)

RunBenchmark = Callable[..., str]


@pytest.fixture(name="run_benchmark")
def fixture_run_benchmark(tmp_path: Path) -> RunBenchmark:
    """Run ``benchmarks/<name>.py --quick`` (and ``flags``) in a subprocess; return its
    stdout after exit 0."""

    def run(name: str, *flags: str) -> str:
        env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run(
            [sys.executable, str(_BENCHMARKS / f"{name}.py"), "--quick", *flags],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=env,
            check=False,
        )
        assert 0 == done.returncode, done.stdout + done.stderr
        return done.stdout

    return run


def _has_verdict(output: str, target: str) -> bool:
    return re.search(_VERDICT.format(target=re.escape(target)), output, re.M) is not None


class TestOverheadBenchmark:
    """benchmarks/overhead.py."""

    def test_prints_every_candidate_and_both_verdicts(self, run_benchmark: RunBenchmark) -> None:
        """Both call tables list every candidate, the taskforce one measured; two verdicts."""
        # One round of each table, not --quick's three: what is checked is that every
        # candidate is measured and reported, not its figures; half this test's time.
        output = run_benchmark("overhead", "--repeats", "1")

        assert "SKIPPED" not in output
        header = r"^candidate\s+median us\s+min us\s+added us\s+added min\s+vs prom$"
        assert 2 == len(re.findall(header, output, re.M))
        for candidate in _OVERHEAD_CANDIDATES:
            assert 2 <= len(re.findall(rf"^{candidate}\s+\d", output, re.M)), candidate
        assert 2 == len(re.findall(r"^updates by\s+median us\s+min us\s+vs prom$", output, re.M))
        assert _has_verdict(output, "tool call added cost")
        assert _has_verdict(output, "LLM call added cost")


class TestScrapeBenchmark:
    """benchmarks/scrape.py."""

    def test_renders_the_same_series_three_ways(self, run_benchmark: RunBenchmark) -> None:
        """Both registries hold the same series, three renderers are timed; two verdicts."""
        output = run_benchmark("scrape")

        counts = re.search(r"taskforce (\d+), prometheus_client (\d+);", output)
        assert counts is not None
        assert counts.group(1) == counts.group(2)
        assert re.search(r"^renderer\s+median ms\s+min ms\s+vs generate_latest$", output, re.M)
        for renderer in ("taskforce", "aioprometheus", "prometheus_client"):
            assert re.search(rf"^{renderer}\s+\d+\.\d+\s+\d+\.\d+\s+\d+\.\d+x", output, re.M)
        assert _has_verdict(output, "scrape render time")
        assert _has_verdict(output, "scrape stall")
        for render in (r"render\(\) \(one piece\)", r"render_async\(\) \(slices\)"):
            for cache in ("cold", "warm"):
                assert re.search(rf"^{render}\s+{cache}\s+\d+\.\d+", output, re.M)
        assert _has_verdict(output, "promtool check metrics")


class TestThroughputBenchmark:
    """benchmarks/throughput.py."""

    def test_counts_every_mission_and_prints_both_flows(
        self, run_benchmark: RunBenchmark, tmp_path: Path
    ) -> None:
        """Metrics-on counts every mission it ran; rows and a verdict per flow; temp dir removed."""
        output = run_benchmark("throughput")

        counted = re.search(r"scrape: lean (\d+) of (\d+), legacy (\d+) of (\d+)$", output, re.M)
        assert counted is not None
        assert counted.group(2) == counted.group(1)
        assert counted.group(4) == counted.group(3)
        assert "metrics-off container has metrics: False" in output
        executors = ("on", "off", r"off \(A/A\)", "forward only", "prometheus_client")
        for flow in ("lean", "legacy"):
            for executor in (*executors, "opentelemetry"):
                assert re.search(rf"^{flow}\s+{executor}\s+\d+", output, re.M), (flow, executor)
            for latency in ("0 ms", "1 ms"):
                assert re.search(rf"^{latency}\s+{flow}\s+\d+\s+\d+", output, re.M), latency
            assert _has_verdict(output, f"per mission {flow} vs prometheus_client")
            assert _has_verdict(output, f"per mission {flow} vs opentelemetry")
        assert [] == list(tmp_path.glob("taskforce-bench-*"))


class TestLLMFloorBenchmark:
    """benchmarks/llm_floor.py."""

    def test_every_rung_runs_for_both_flows(
        self, run_benchmark: RunBenchmark, tmp_path: Path
    ) -> None:
        """One row per flow and wrapper (missions completed through each); temp dir removed."""
        output = run_benchmark("llm_floor")

        for flow in ("lean", "legacy"):
            assert re.search(rf"^{flow}\s+off\s+\d+\s+-\s+-", output, re.M), flow
            for rung in (r"off \(A/A\)", "forward", "time", "read", "extract", "proxy"):
                row = rf"^{flow}\s+{rung}\s+\d+\s+[+-]\d+\.\d+%\s+[+-]\d+\.\d+\s*$"
                assert re.search(row, output, re.M), (flow, rung)
        assert [] == list(tmp_path.glob("taskforce-bench-*"))


class TestStuckToolsBenchmark:
    """benchmarks/stuck_tools.py."""

    def test_every_condition_reported(self, run_benchmark: RunBenchmark, tmp_path: Path) -> None:
        """A row per condition: tool-pool missions complete, the old layout hangs; temp removed."""
        output = run_benchmark("stuck_tools")

        header = r"^condition\s+mission\s+missions\s+median ms\s+vs baseline\s+outcome\s*$"
        assert re.search(header, output, re.M)
        for condition in ("none stuck", "6 stuck in tool pool"):
            assert re.search(rf"^{condition}\s+normal\s+\d+\s+\d+\.\d\s+.*completed", output, re.M)
        assert re.search(r"^all \d+ stuck in tool pool\s+no file tools\s.*completed", output, re.M)
        assert re.search(
            r"^all \d+ stuck in tool pool\s+normal\s.*failed: .*timed out", output, re.M
        )
        # The state store has threads of its own: calls stuck in the default executor
        # no longer hold a mission's record back.
        assert re.search(r"^6 stuck in default executor\s.*completed", output, re.M)
        assert "6 concurrent file_read of a FIFO: ['NotARegularFile']" in output
        assert _has_verdict(output, "mission latency with six stuck tool calls")
        assert [] == list(tmp_path.glob("taskforce-bench-*"))


class TestLLMDeadlineBenchmark:
    """benchmarks/llm_deadline.py."""

    def test_every_condition_reported(self, run_benchmark: RunBenchmark, tmp_path: Path) -> None:
        """A row per condition and retry setting, each mission failed (cut), and a verdict."""
        output = run_benchmark("llm_deadline")

        for condition in ("headers", "body", "stream"):
            for retries in ("0", "2"):
                row = rf"^{condition}\s+{retries}\s+\d+\.\d\d\s+\d+\.\d\dx\s+\d+\s+failed"
                assert re.search(row, output, re.M), condition
        assert _has_verdict(output, "mission held by a trickling upstream")
        assert [] == list(tmp_path.glob("taskforce-bench-*"))


class TestBodyLimitBenchmark:
    """benchmarks/body_limit.py."""

    def test_every_condition_reported(self, run_benchmark: RunBenchmark, tmp_path: Path) -> None:
        """A row per condition: 413 under the default limit, 422 without it; temp removed."""
        output = run_benchmark("body_limit")

        for condition in ("declared, limit 1 MiB", "chunked, limit 1 MiB"):
            assert re.search(rf"^{condition}\s+\d+\s+\d+\s+\d+\s+\S+x\s+HTTP/1.1 413", output, re.M)
        assert re.search(
            r"^declared, limit 1 GiB\s+\d+\s+\d+\s+\d+\s+\S+x\s+HTTP/1.1 422", output, re.M
        )
        assert _has_verdict(output, "peak RSS under 8 concurrent large bodies")
        assert [] == list(tmp_path.glob("taskforce-bench-*"))


class TestStateStoreBenchmark:
    """benchmarks/state_store.py."""

    def test_every_table_reported(self, run_benchmark: RunBenchmark, tmp_path: Path) -> None:
        """Save latency, missions/s per store, metrics and concurrency, the big session."""
        output = run_benchmark("state_store")
        stores = ["file", "postgres"] if "postgres  " in output else ["file"]
        for store in stores:
            assert re.search(rf"^{store}\s+\d+\s+\d+\.\d+\s+\d+\.\d+", output, re.M)
            for metrics in ("off", "on"):
                for concurrency in (1, 20):
                    row = rf"^{store}\s+{metrics}\s+{concurrency}\s+\d+\s+\d+\s+\d+\.\d+x"
                    assert re.search(row, output, re.M), (store, metrics, concurrency)
            assert re.search(rf"^{store}\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+x", output, re.M)
        assert [] == list(tmp_path.glob("taskforce-bench-*"))


@pytest.mark.integration
class TestShutdownBenchmark:
    """benchmarks/shutdown.py (starts real servers)."""

    def test_every_condition_reported(self, run_benchmark: RunBenchmark, tmp_path: Path) -> None:
        """A row per condition and worker count, a verdict, and no temporary folder left."""
        output = run_benchmark("shutdown")

        for condition in ("idle", "in flight, grace", "in flight, 2nd signal"):
            for workers in ("1", "2"):
                row = rf"^{condition}\s+{workers}\s+\d+\.\d\d\s+\d+\.\d\d\s+\S+x"
                assert re.search(row, output, re.M), (condition, workers)
        assert _has_verdict(output, "shutdown with missions in flight")
        assert [] == list(tmp_path.glob("taskforce-bench-*"))


class TestHotPathsBenchmark:
    """benchmarks/hot_paths.py."""

    def test_both_estimates_at_both_sizes_and_both_route_reads(
        self, run_benchmark: RunBenchmark
    ) -> None:
        """A row per context-pack estimate and size, and per way of reading the route."""
        output = run_benchmark("hot_paths")

        assert re.search(r"^10 messages\s+full scan\s+\d+\.\d+\s+1\.00x", output, re.M)
        assert re.search(r"^200 messages\s+full scan\s+\d+\.\d+\s+1\.00x", output, re.M)
        assert 2 == len(re.findall(r"^\s+ours\s+-?\d+\.\d+\s+-?\d+\.\d+x", output, re.M))
        assert re.search(r"^\d+ routes\s+match every route\s+\d+\.\d+", output, re.M)
        assert re.search(r"^\s+read from the router\s+-?\d+\.\d+\s+-?\d+\.\d+x", output, re.M)


class TestInstructionsBenchmark:
    """benchmarks/instructions.py (its --quick run counts calls and bytecodes, never under
    valgrind)."""

    def test_counts_calls_for_every_executor_and_flow(self, run_benchmark: RunBenchmark) -> None:
        """Both flows: off counted, on and prometheus_client added to it, and their ratio."""
        output = run_benchmark("instructions")

        assert 2 == len(re.findall(r"^-- (lean|legacy) mission: per mission", output, re.M))
        assert 2 == len(re.findall(r"^off\s+\d+\s", output, re.M))
        for executor in ("on", "prometheus_client"):
            assert 2 == len(re.findall(rf"^{executor}\s+\+\d+\s", output, re.M)), executor
        # calls and bytecodes: both counted without valgrind
        ratios = re.findall(r"^on / prometheus_client\s+\d+\.\d+x\s+\d+\.\d+x", output, re.M)
        assert 2 == len(ratios)
