"""The ``taskforce`` console script: ``run`` for both flows, ``serve``, and bad settings."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskforce.infrastructure.tools import session_folder_name
from tests.api.conftest import CALC_WRITE_MISSION
from tests.support.processes import free_ports, started, wait_until_up

pytestmark = pytest.mark.integration


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFORCE_")}
    env.update(
        TASKFORCE_STATE_DIR=str(tmp_path / "state"),
        TASKFORCE_WORKSPACE_DIR=str(tmp_path / "ws"),
        TASKFORCE_LOGGING__FORMAT="json",
        **extra,
    )
    return env


def _python(
    *argv: str,
    env: dict[str, str],
    cwd: Path,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
) -> subprocess.CompletedProcess[str]:
    """`python ARGV`, its output captured; or written to the descriptor ``stdout`` or
    ``stderr`` names, or closed (``>&-``, ``2>&-``) where that is None."""
    command = [sys.executable, *argv]
    closed = " ".join(f"{fd}>&-" for fd, sink in ((1, stdout), (2, stderr)) if sink is None)
    if closed:
        command = ["sh", "-c", f'exec "$@" {closed}', "sh", *command]
    return subprocess.run(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL if stdout is None else stdout,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
        text=True,
        timeout=60,
        check=False,
    )


def _taskforce(
    *args: str, env: dict[str, str], cwd: Path, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return _python("-m", "taskforce", *args, env=env, cwd=cwd, stdout=stdout)


def _buffered_env(tmp_path: Path) -> dict[str, str]:
    """:func:`_env` where output is buffered, as a console script's is by default when it
    is not a terminal (the tests' own environment may set PYTHONUNBUFFERED)."""
    env = _env(tmp_path)
    env.pop("PYTHONUNBUFFERED", None)
    return env


@contextlib.contextmanager
def _unwritable(sink: str) -> Iterator[int | None]:
    """Where every write fails: ``gone``, a pipe whose reader left (EPIPE); ``full``,
    /dev/full (ENOSPC); ``closed``, None (see :func:`_python`)."""
    if sink == "closed":
        yield None
        return
    if sink == "full":
        write = os.open("/dev/full", os.O_WRONLY)
    else:
        read, write = os.pipe()
        os.close(read)
    try:
        yield write
    finally:
        os.close(write)


def _recorded_status(tmp_path: Path) -> str:
    """The status of the one mission recorded under ``tmp_path``'s state directory."""
    (saved,) = (tmp_path / "state").glob("*.json")
    (record,) = json.loads(saved.read_text(encoding="utf-8"))["missions"]
    return str(record["status"])


# The child of a test: sends itself a signal (argv[1]) when a module (argv[2]) is first
# imported, then runs the taskforce CLI with the rest of argv.
_SIGNAL_WHILE_LOADING = """
import os, signal, sys

# Ctrl-C as at a terminal, however the tests were started: a shell starts a background
# job with SIGINT ignored, and a process keeps an ignored signal ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
sent, loading = signal.Signals[sys.argv[1]], sys.argv[2]


class SignalOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == loading:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), sent)
        return None


sys.meta_path.insert(0, SignalOnImport())
from taskforce.api.cli import main

main(sys.argv[3:])
"""


# Runs a command as PID 1 of a PID namespace of its own (as a container's first process
# without an init), and kills it if unshare itself is killed (a test's timeout).
_AS_INIT = ["unshare", "--user", "--map-root-user", "--pid", "--kill-child"]


# The child of a test: `taskforce run` (argv[2:]) whose state store, for argv[1] "hold"
# or "release", says "appending" on stderr when a record's write starts, waits until
# `run` is stopped (its task cancelled) and says "stopped"; then it writes the record
# ("release") or never does ("hold"). For "at-close" it writes as usual, and sends the
# process SIGTERM and two Ctrl-Cs as the container closes, after the mission ended.
_STOPPED_WHILE_SAVING = """
import asyncio, os, signal, sys

from taskforce.application import container as built
from taskforce.api.cli import main


class StoppedWhileSaving:
    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    # spelled out: from Python 3.12 on, isinstance against a runtime Protocol does not
    # see what __getattr__ forwards
    async def load(self, session_id):
        return await self._store.load(session_id)

    async def save(self, session_id, state):
        return await self._store.save(session_id, state)

    async def append(self, session_id, record):
        if sys.argv[1] == "at-close":
            return await self._store.append(session_id, record)
        print("appending", file=sys.stderr, flush=True)
        while not any(task.cancelling() for task in asyncio.all_tasks()):
            await asyncio.sleep(0.01)
        print("stopped", file=sys.stderr, flush=True)
        if sys.argv[1] == "hold":
            await asyncio.Event().wait()
        return await self._store.append(session_id, record)

    async def aclose(self):
        if sys.argv[1] == "at-close":
            for sent in (signal.SIGTERM, signal.SIGINT, signal.SIGINT):
                os.kill(os.getpid(), sent)
            await asyncio.sleep(0.05)  # turns of the loop for anything the signals scheduled
        close = getattr(self._store, "aclose", None)
        if close is not None:
            await close()


build = built.build_container
built.build_container = lambda settings, **kw: build(
    settings, state_store=StoppedWhileSaving(built.make_state_store(settings)), **kw
)
main(sys.argv[2:])
"""


# The child of a test: `taskforce run` (argv[1:]) with a state store of one's own whose
# append raises a RuntimeError (a bug in it).
_BUGGY_STORE = """
import sys

from taskforce.application import container as built
from taskforce.api.cli import main


class BuggyStore:
    async def load(self, session_id):
        return None

    async def save(self, session_id, state):
        return None

    async def append(self, session_id, record):
        raise RuntimeError("/srv/secret/state broke")


build = built.build_container
built.build_container = lambda settings, **kw: build(settings, state_store=BuggyStore(), **kw)
main(sys.argv[1:])
"""


# A tool of one's own whose output JSON has no form for: a NaN, a set, a tuple key.
_ODD_TOOL = """
import sys

from taskforce.application import container as built
from taskforce.api.cli import main


class OddTool:
    name = "odd"
    description = "output JSON cannot hold as it is"
    parameters_schema = {"type": "object", "properties": {}}

    async def execute(self, **params):
        return {"success": True, "output": {"nan": float("nan"), "set": {1}, (1, 2): "k"}}


class WithOddTool:
    def __init__(self, built_container):
        self.built = built_container

    async def __aenter__(self):
        container = await self.built.__aenter__()
        container.tool_registry.register(OddTool())
        return container

    async def __aexit__(self, *exc_info):
        return await self.built.__aexit__(*exc_info)


build = built.build_container
built.build_container = lambda settings, **kw: WithOddTool(build(settings, **kw))
main(sys.argv[1:])
"""


def _strict_json(text: str) -> Any:
    """``text`` as JSON, refusing ``NaN`` and ``Infinity`` as a strict reader does."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _asleep_in_its_tool(
    tmp_path: Path, seconds: int, ignoring: signal.Signals | None = None, *flags: str
) -> subprocess.Popen[str]:
    """`taskforce run` of a mission asleep in its tool for ``seconds``, once the tool runs;
    started with ``ignoring`` ignored, as a parent (a shell's ``&``) may leave a signal."""

    def ignore() -> None:
        if ignoring is not None:
            signal.signal(ignoring, signal.SIG_IGN)

    mission = f'tool:sleep {{"seconds": {seconds}}}'
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskforce", "run", mission, "--verbose", *flags],
        env=_env(tmp_path, TASKFORCE_LOGGING__LEVEL="debug"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the tool is running: the mission is under way
        if '"tool.call.started"' in line:
            break
    return proc


def _stopped_while_saving(
    tmp_path: Path, hold: str, args: list[str], signals: list[signal.Signals]
) -> tuple[int, str, str]:
    """Run the child above; send each of ``signals`` once it said "appending", then "stopped".

    Returns:
        The exit code, stdout and the stderr lines that are not JSON log lines.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", _STOPPED_WHILE_SAVING, hold, "run", *args],
        env=_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    for sent, wanted in zip(signals, ("appending", "stopped"), strict=False):
        for line in proc.stderr:
            lines.append(line)
            if line.strip() == wanted:
                break
        proc.send_signal(sent)
    stdout, stderr = proc.communicate(timeout=30)
    return proc.returncode, stdout, "".join(lines) + stderr


class TestRun:
    @pytest.mark.parametrize("agent", ["lean", "legacy"])
    def test_mission_completes(self, tmp_path: Path, agent: str) -> None:
        """`taskforce run --json --verbose` runs calculator, file_write, answers; logs at info."""
        proc = _taskforce(
            "run",
            CALC_WRITE_MISSION,
            "--agent",
            agent,
            "--json",
            "--verbose",
            env=_env(tmp_path),
            cwd=tmp_path,
        )
        assert 0 == proc.returncode, proc.stderr
        result = json.loads(proc.stdout)
        assert ("completed", agent, 2) == (
            result["status"],
            result["agent_type"],
            result["tool_calls"],
        )
        answer = tmp_path / "ws" / session_folder_name(result["session_id"]) / "answer.txt"
        assert "42" == answer.read_text(encoding="utf-8")
        logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
        completed = [line for line in logs if line["event"] == "mission.completed"]
        assert 1 == len(completed)
        assert result["session_id"] == completed[0]["session_id"]

    def test_failed_mission_exit_code(self, tmp_path: Path) -> None:
        """A failed mission prints its error and exits 1."""
        proc = _taskforce("run", "llm:error", env=_env(tmp_path), cwd=tmp_path)
        assert 1 == proc.returncode
        assert "status: failed" in proc.stdout

    def test_failed_mission_prints_no_blank_answer(self, tmp_path: Path) -> None:
        """A mission that failed without an answer ends on its error, not on an empty line."""
        proc = _taskforce("run", "llm:error", env=_env(tmp_path), cwd=tmp_path)
        assert 1 == proc.returncode
        assert proc.stdout.endswith("\n") and not proc.stdout.endswith("\n\n")
        assert proc.stdout.splitlines()[-1].startswith("error: ")

    @pytest.mark.parametrize("flags", [[], ["--stream"]])
    def test_a_store_of_ones_own_that_raises_fails_the_mission(
        self, tmp_path: Path, flags: list[str]
    ) -> None:
        """A store that raises a RuntimeError on append: the mission's failed result and exit
        1, no traceback; its message stays in the log."""
        proc = _python("-c", _BUGGY_STORE, "run", "hi", *flags, env=_env(tmp_path), cwd=tmp_path)
        assert 1 == proc.returncode, proc.stderr
        lines = proc.stdout.splitlines()
        assert "status: failed" in lines
        assert "error: could not save the session state (RuntimeError)" in lines
        assert "Traceback" not in proc.stderr
        logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
        failed = [line["error_type"] for line in logs if line["event"] == "mission.failed"]
        assert ["RuntimeError"] == failed

    @pytest.mark.parametrize("flags", [[], ["--json"], ["--stream"], ["--stream", "--json"]])
    def test_closed_output_exits_141(self, tmp_path: Path, flags: list[str]) -> None:
        """A reader that went away (`| head`): a line, no traceback, 128 + SIGPIPE; the
        mission is recorded (a stream's may be cancelled when its output fails)."""
        with _unwritable("gone") as write:  # no reader: the first write fails with EPIPE
            proc = subprocess.run(
                [sys.executable, "-m", "taskforce", "run", "hi", "--session", "s", *flags],
                env=_env(tmp_path),
                cwd=tmp_path,
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
            )
        assert (141, "taskforce: standard output was closed before all was printed") == (
            proc.returncode,
            proc.stderr.splitlines()[-1],
        )
        assert "Traceback" not in proc.stderr
        state = json.loads((tmp_path / "state" / "s.json").read_text(encoding="utf-8"))
        assert 1 == len(state["missions"])

    @pytest.mark.parametrize(
        ("sink", "code", "reason"),
        [
            ("gone", 141, "standard output was closed before all was printed"),
            pytest.param(
                "full",
                74,
                "cannot write the result to standard output: No space left on device",
                marks=pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full"),
            ),
            ("closed", 74, "cannot write the result to standard output: Bad file descriptor"),
        ],
    )
    @pytest.mark.parametrize(
        ("args", "status"),
        [
            (["say hi"], "completed"),
            (["say hi", "--json"], "completed"),
            # the first event cannot be printed: the mission, asleep in its tool, is cancelled
            (['tool:sleep {"seconds": 30}', "--stream", "--json"], "cancelled"),
        ],
    )
    def test_a_result_that_cannot_be_written_is_one_line(
        self, tmp_path: Path, sink: str, code: int, reason: str, args: list[str], status: str
    ) -> None:
        """Standard output that takes no result, buffered as it is by default: a reader
        gone is 141, as SIGPIPE; a full disk or a closed descriptor is 74 (EX_IOERR), not
        1 as for a mission that did not complete. One line, no traceback, and not a
        failed flush at exit (``Exception ignored``, exit 120)."""
        with _unwritable(sink) as stdout:
            proc = _taskforce(
                "run", *args, env=_buffered_env(tmp_path), cwd=tmp_path, stdout=stdout
            )
        assert (code, f"taskforce: {reason}") == (proc.returncode, proc.stderr.splitlines()[-1])
        assert "Traceback" not in proc.stderr
        assert "Exception ignored" not in proc.stderr
        assert status == _recorded_status(tmp_path)

    @pytest.mark.parametrize("stderr", ["closed", "gone"])
    @pytest.mark.parametrize(
        ("argv", "stdout", "code"),
        [
            (["-m", "taskforce", "run"], None, 2),  # argparse's refusal: no mission
            (["-m", "taskforce", "run", ""], None, 2),
            (["-c", _SIGNAL_WHILE_LOADING, "SIGINT", "pydantic", "run", "hi"], None, 130),
            (["-c", _SIGNAL_WHILE_LOADING, "SIGTERM", "pydantic", "run", "hi"], None, 143),
            (["-m", "taskforce", "run", "say hi"], "gone", 141),
            (["-m", "taskforce", "run", "say hi"], "full", 74),
            # nor do log lines standard error cannot take
            (["-m", "taskforce", "run", "say hi", "--verbose"], None, 0),
        ],
    )
    def test_standard_error_that_takes_nothing_keeps_the_exit_code(
        self, tmp_path: Path, argv: list[str], stdout: str | None, code: int, stderr: str
    ) -> None:
        """Standard error closed (`2>&-`) or its reader gone: the line it cannot take is
        dropped, not printed on standard output, and the exit code stays what it is (it
        became 1, a failed mission's, or 120 from the interpreter's flush at exit)."""
        out = _unwritable(stdout) if stdout else contextlib.nullcontext(subprocess.PIPE)
        with _unwritable(stderr) as err, out as into:
            proc = _python(
                *argv, env=_buffered_env(tmp_path), cwd=tmp_path, stdout=into, stderr=err
            )
        assert code == proc.returncode
        assert "taskforce:" not in (proc.stdout or "")

    @pytest.mark.parametrize(("sent", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
    def test_a_stop_signal_cancels_and_records_the_mission(
        self, tmp_path: Path, sent: signal.Signals, code: int
    ) -> None:
        """Ctrl-C or SIGTERM: the mission is cancelled and recorded, one line, 128 + signal."""
        proc = _asleep_in_its_tool(tmp_path, 30)
        proc.send_signal(sent)
        stdout, stderr = proc.communicate(timeout=30)
        assert (code, "") == (proc.returncode, stdout)
        assert stderr.splitlines()[-1] == f"taskforce: {sent.name}: the mission was cancelled"
        assert "Traceback" not in stderr
        (saved,) = (tmp_path / "state").glob("*.json")
        (record,) = json.loads(saved.read_text(encoding="utf-8"))["missions"]
        assert ("cancelled", "cancelled") == (record["status"], record["error_type"])

    @pytest.mark.parametrize(("sent", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
    def test_a_stop_signal_ends_the_json_stream_with_a_final_error(
        self, tmp_path: Path, sent: signal.Signals, code: int
    ) -> None:
        """`run --stream --json` stopped: its last line is a final `error` event
        (`cancelled`), as the SSE route ends a stream a shutdown cut, not the last event
        the mission had made."""
        proc = _asleep_in_its_tool(tmp_path, 30, None, "--stream", "--json")
        proc.send_signal(sent)
        stdout, _ = proc.communicate(timeout=30)
        events = [json.loads(line) for line in stdout.splitlines()]
        assert code == proc.returncode
        assert {"kind": "error", "error_type": "cancelled", "is_final": True}.items() <= events[
            -1
        ].items()

    @pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
    def test_a_stop_signal_ignored_from_the_start_stays_ignored(
        self, tmp_path: Path, sent: signal.Signals
    ) -> None:
        """A stop signal `run` was started with ignored (`taskforce run ... &` in a script
        ignores Ctrl-C): the mission goes on to its end and exit 0, as Python leaves an
        ignored SIGINT, rather than be cancelled with 130 or 143."""
        proc = _asleep_in_its_tool(tmp_path, 1, ignoring=sent)
        proc.send_signal(sent)
        stdout, stderr = proc.communicate(timeout=30)
        assert (0, "status: completed") == (proc.returncode, stdout.splitlines()[0]), stderr
        (saved,) = (tmp_path / "state").glob("*.json")
        (record,) = json.loads(saved.read_text(encoding="utf-8"))["missions"]
        assert "completed" == record["status"]

    @pytest.mark.parametrize(
        ("sent", "code", "loading"),
        [
            (signal.SIGTERM, 143, "pydantic"),
            (signal.SIGINT, 130, "pydantic"),
            (signal.SIGTERM, 143, "structlog"),
            # the event loop runs, the container is being built: still no mission
            (signal.SIGTERM, 143, "taskforce.application.container"),
            (signal.SIGINT, 130, "taskforce.application.container"),
        ],
    )
    def test_a_stop_signal_before_the_mission_ends_it_with_one_line(
        self, tmp_path: Path, sent: signal.Signals, code: int, loading: str
    ) -> None:
        """A signal while `run` still loads its settings and logging, or builds its
        container: one line saying no mission started, 128 + signal, nothing recorded.

        The child sends the signal to itself as ``loading`` is first imported, so it
        comes before the mission every time, without racing a sleep.
        """
        proc = _python(
            "-c", _SIGNAL_WHILE_LOADING, sent.name, loading, "run", "say hi",
            env=_env(tmp_path), cwd=tmp_path,
        )  # fmt: skip
        assert (code, "") == (proc.returncode, proc.stdout), proc.stderr
        assert [f"taskforce: {sent.name}: stopped before the mission started"] == (
            proc.stderr.splitlines()
        )
        assert [] == list((tmp_path / "state").glob("*.json"))  # no mission: nothing recorded

    def test_stream_stopped_while_its_result_is_saved_prints_that_result(
        self, tmp_path: Path
    ) -> None:
        """SIGTERM while `run --stream` saves its completed result: the save ends, and
        `run` prints that result and exits 0, as plain `run` does; the record agrees."""
        code, stdout, stderr = _stopped_while_saving(
            tmp_path, "release", ["say hello", "--stream"], [signal.SIGTERM]
        )
        assert 0 == code, stderr
        assert ["Scripted answer: say hello", "status: completed"] == stdout.splitlines()[:2]
        (saved,) = (tmp_path / "state").glob("*.json")
        (record,) = json.loads(saved.read_text(encoding="utf-8"))["missions"]
        assert "completed" == record["status"]

    def test_stop_signals_after_the_mission_ended_change_nothing(self, tmp_path: Path) -> None:
        """SIGTERM and two Ctrl-Cs once the mission ended (its container closing): `run`
        prints the result and exits with the mission's code; no stop line, no traceback."""
        proc = _python(
            "-c", _STOPPED_WHILE_SAVING, "at-close", "run", "say hello",
            env=_env(tmp_path), cwd=tmp_path,
        )  # fmt: skip
        assert (0, "status: completed") == (proc.returncode, proc.stdout.splitlines()[0])
        assert "taskforce:" not in proc.stderr
        assert "Traceback" not in proc.stderr
        (saved,) = (tmp_path / "state").glob("*.json")
        (record,) = json.loads(saved.read_text(encoding="utf-8"))["missions"]
        assert "completed" == record["status"]

    def test_a_second_ctrl_c_logs_the_record_it_gives_up(self, tmp_path: Path) -> None:
        """Ctrl-C twice while the result is saved: `run` stops at once, and the record
        it gives up is logged (state.save.abandoned, with its ids and status)."""
        code, _, stderr = _stopped_while_saving(
            tmp_path, "hold", ["say hello", "--verbose"], [signal.SIGINT, signal.SIGINT]
        )
        assert 130 == code, stderr
        logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        (abandoned,) = [log for log in logs if log["event"] == "state.save.abandoned"]
        (started,) = [log for log in logs if log["event"] == "mission.started"]
        assert ("warning", "completed") == (abandoned["level"], abandoned["status"])
        ids = ("session_id", "mission_id")
        assert [started[k] for k in ids] == [abandoned[k] for k in ids]
        assert "taskforce: SIGINT: the mission was cancelled" == stderr.splitlines()[-1]

    def test_a_setting_without_effect_is_warned_about(self, tmp_path: Path) -> None:
        """metrics.port with metrics off: the run goes on, one config.ignored warning says so."""
        env = _env(tmp_path, TASKFORCE_METRICS__ENABLED="false", TASKFORCE_METRICS__PORT="9464")
        proc = _taskforce("run", "hi", env=env, cwd=tmp_path)
        assert 0 == proc.returncode
        (warned,) = [json.loads(line) for line in proc.stderr.splitlines()]
        assert ("config.ignored", "metrics.port", "warning") == (
            warned["event"],
            warned["setting"],
            warned["level"],
        )

    def test_prints_only_its_result(self, tmp_path: Path) -> None:
        """Without --verbose stdout holds the result alone and stderr no info line."""
        proc = _taskforce("run", CALC_WRITE_MISSION, "--json", env=_env(tmp_path), cwd=tmp_path)
        assert 0 == proc.returncode, proc.stderr
        assert "completed" == json.loads(proc.stdout)["status"]
        assert "" == proc.stderr

    def test_warnings_still_reach_stderr(self, tmp_path: Path) -> None:
        """Without --verbose a failing mission's warnings and errors still go to stderr."""
        proc = _taskforce("run", "llm:error", env=_env(tmp_path), cwd=tmp_path)
        levels = {json.loads(line)["level"] for line in proc.stderr.splitlines()}
        assert levels and levels <= {"warning", "error", "critical"}

    @pytest.mark.parametrize(
        "args",
        [
            [""],
            ["  \n "],
            ["\u200b\ufeff \t"],  # invisible characters only (argv cannot hold a NUL)
            ["\x07\x1b"],
            ["hi", "--session", "../x"],
            ["hi", "--session", "a b"],
            ["x" * 9],
            ["hi \udcff"],  # a byte that is not UTF-8 in argv, as the API refuses "\udcff"
        ],
    )
    def test_invalid_mission_one_line_exit_2(self, tmp_path: Path, args: list[str]) -> None:
        """An empty, invisible, too long or not UTF-8 mission or a bad session id: one line,
        no traceback, exit 2."""
        env = _env(tmp_path, TASKFORCE_AGENT__MAX_MISSION_CHARS="8")
        proc = _taskforce("run", *args, env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        assert ("", 1) == (proc.stdout, len(proc.stderr.splitlines()))
        assert proc.stderr.startswith("taskforce: ")
        assert [] == list((tmp_path / "state").glob("*"))

    def test_invalid_session_names_the_flag(self, tmp_path: Path) -> None:
        """A bad `--session` is refused with a line that names `--session`, the flag the
        user typed, not `session_id`, the API's field."""
        proc = _taskforce("run", "hi", "--session", "../x", env=_env(tmp_path), cwd=tmp_path)
        assert (2, "") == (proc.returncode, proc.stdout)
        assert proc.stderr.startswith("taskforce: --session must be 1 to 128 of"), proc.stderr

    @pytest.mark.parametrize(
        ("command", "names"),
        [
            ("run", {"--agent", "--session", "--json", "--stream", "--verbose", "--config"}),
            ("serve", {"--host", "--port", "--config"}),
        ],
    )
    def test_help_is_plain_and_states_defaults(
        self, tmp_path: Path, command: str, names: set[str]
    ) -> None:
        """`--help` has no reST markup and every option states its default."""
        top = _taskforce("--help", env=_env(tmp_path), cwd=tmp_path)
        proc = _taskforce(command, "--help", env=_env(tmp_path), cwd=tmp_path)
        assert (0, 0) == (top.returncode, proc.returncode)
        assert "``" not in top.stdout + proc.stdout
        options = proc.stdout.split("options:")[1].split("\n  -")[2:]  # after -h/--help
        assert names <= {"-" + option.split()[0] for option in options}
        for option in options:
            assert "default" in " ".join(option.split()), option

    @pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["--version"]])
    def test_help_to_a_reader_gone_exits_141(self, tmp_path: Path, args: list[str]) -> None:
        """Help or the version into a reader that went away, buffered as a console script's
        output is: one line, 128 + SIGPIPE as for run's result, and not a failed flush at
        exit (``Exception ignored``, exit 120)."""
        with _unwritable("gone") as stdout:
            proc = _taskforce(*args, env=_buffered_env(tmp_path), cwd=tmp_path, stdout=stdout)
        assert (141, ["taskforce: standard output was closed before all was printed"]) == (
            proc.returncode,
            proc.stderr.splitlines(),
        )

    @pytest.mark.parametrize(
        "args", [["--help"], ["run", "--help"], ["serve", "--help"], ["--version"]]
    )
    def test_help_with_standard_output_closed_exits_74(
        self, tmp_path: Path, args: list[str]
    ) -> None:
        """Help or the version with no standard output at all (`>&-`): 74 and one line, as
        for run's result; not the text on standard error and exit 0."""
        proc = _taskforce(*args, env=_env(tmp_path), cwd=tmp_path, stdout=None)
        assert (
            74,
            ["taskforce: cannot write the result to standard output: Bad file descriptor"],
        ) == (
            proc.returncode,
            proc.stderr.splitlines(),
        )

    @pytest.mark.parametrize("args", [[], ["run"], ["run", "hi", "--agent", "x"], ["--bogus"]])
    def test_a_usage_error_with_standard_error_closed_prints_nothing(
        self, tmp_path: Path, args: list[str]
    ) -> None:
        """With standard error closed (`2>&-`), a usage error still exits 2 and prints
        nothing on standard output (argparse's own printed its usage there)."""
        proc = _python("-m", "taskforce", *args, env=_env(tmp_path), cwd=tmp_path, stderr=None)
        assert (2, "") == (proc.returncode, proc.stdout)

    def test_a_usage_error_says_usage_and_reason_on_standard_error(self, tmp_path: Path) -> None:
        """A usage error: the usage and the reason on standard error, nothing on standard
        output, exit 2."""
        proc = _taskforce("run", env=_env(tmp_path), cwd=tmp_path)
        assert (2, "") == (proc.returncode, proc.stdout)
        assert proc.stderr.startswith("usage: taskforce run ")
        assert proc.stderr.endswith(
            "taskforce run: error: the following arguments are required: mission\n"
        )

    def test_unknown_variable_stops_start_up(self, tmp_path: Path) -> None:
        """A misspelt TASKFORCE_* variable exits 2 naming it and the closest setting."""
        env = _env(tmp_path, TASKFORCE_METRICS_ENABLED="false")
        proc = _taskforce("run", "hi", env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        assert "TASKFORCE_METRICS_ENABLED" in proc.stderr
        assert "TASKFORCE_METRICS__ENABLED (metrics.enabled)" in proc.stderr

    def test_stream_prints_tokens_then_the_result(self, tmp_path: Path) -> None:
        """`run --stream` prints the streamed answer, then the result lines: the answer once."""
        proc = _taskforce("run", "say hello", "--stream", env=_env(tmp_path), cwd=tmp_path)

        assert 0 == proc.returncode, proc.stderr
        lines = proc.stdout.splitlines()
        assert "Scripted answer: say hello" == lines[0]
        assert "status: completed" == lines[1]
        assert 1 == proc.stdout.count("Scripted answer: say hello")

    def test_stream_of_the_legacy_flow_prints_the_answer_once(self, tmp_path: Path) -> None:
        """The legacy flow streams no tokens: the answer is printed with the result lines."""
        proc = _taskforce(
            "run", "say hello", "--stream", "--agent", "legacy", env=_env(tmp_path), cwd=tmp_path
        )

        assert 0 == proc.returncode, proc.stderr
        assert "status: completed" == proc.stdout.splitlines()[0]
        assert 1 == proc.stdout.count("Scripted answer: say hello")

    def test_stream_json_prints_every_event(self, tmp_path: Path) -> None:
        """`run --stream --json` prints one JSON event per line: tokens, then the result last."""
        proc = _taskforce(
            "run", CALC_WRITE_MISSION, "--stream", "--json", env=_env(tmp_path), cwd=tmp_path
        )

        assert 0 == proc.returncode, proc.stderr
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        assert ("mission_started", "result") == (events[0]["kind"], events[-1]["kind"])
        tokens = "".join(e["content"] for e in events if e["kind"] == "token")
        assert events[-1]["result"]["final_message"] == tokens

    def test_stream_json_is_one_line_an_event_for_any_splitter(self, tmp_path: Path) -> None:
        """`run --stream --json` writes NEL, LINE and PARAGRAPH SEPARATOR as JSON escapes, as
        the SSE route does: `str.splitlines` finds one event a line, not a cut one."""
        mission = "say a\x85b\u2028c\u2029d"
        proc = _taskforce("run", mission, "--stream", "--json", env=_env(tmp_path), cwd=tmp_path)

        assert 0 == proc.returncode, proc.stderr
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        assert f"Scripted answer: {mission}" == events[-1]["result"]["final_message"]

    @pytest.mark.parametrize("agent", ["lean", "legacy"])
    def test_stream_json_writes_output_json_cannot_hold(self, tmp_path: Path, agent: str) -> None:
        """`run --stream --json` writes a tool's NaN as null and a set as its text, as the
        SSE route does: strict JSON lines and exit 0, not a traceback."""
        proc = _python(
            "-c", _ODD_TOOL, "run", "tool:odd {}", "--agent", agent, "--stream", "--json",
            env=_env(tmp_path),
            cwd=tmp_path,
        )  # fmt: skip

        assert 0 == proc.returncode, proc.stderr
        assert "Traceback" not in proc.stderr
        events = [_strict_json(line) for line in proc.stdout.splitlines()]
        (output,) = [e["output"] for e in events if e["kind"] == "tool_result"]
        assert {"nan": None, "set": "{1}", "(1, 2)": "k"} == output
        assert "completed" == events[-1]["result"]["status"]

    @pytest.mark.parametrize("flags", [["--json"], ["--stream", "--json"]])
    def test_json_on_an_ascii_output_is_json(self, tmp_path: Path, flags: list[str]) -> None:
        """`--json` on an output encoding that is not UTF-8 (`PYTHONIOENCODING=ascii`): a
        character past U+FFFF is a JSON escape, not Python's `\\U0001f600` a reader refuses."""
        env = _env(tmp_path, PYTHONIOENCODING="ascii")
        proc = _taskforce("run", "say \U0001f600 \u00e9", *flags, env=env, cwd=tmp_path)

        assert 0 == proc.returncode, proc.stderr
        proc.stdout.encode("ascii")  # all of it went out as ASCII
        if "--stream" in flags:
            result = _strict_json(proc.stdout.splitlines()[-1])["result"]
        else:
            result = _strict_json(proc.stdout)
        assert "Scripted answer: say \U0001f600 \u00e9" == result["final_message"]

    @pytest.mark.parametrize("flags", [[], ["--json"], ["--stream"], ["--stream", "--json"]])
    def test_lone_surrogates_are_printed_as_escapes(self, tmp_path: Path, flags: list[str]) -> None:
        """A file name that is not UTF-8 and a tool argument's lone surrogate escape leave as
        `\\uXXXX` escapes: UTF-8 output, JSON lines that parse, no traceback."""
        mission = (
            'tool:file_write {"path": "\\udcff.txt", "content": "x"}\n'
            "tool:list_dir {}\n"
            'tool:calculator {"expression": "\\ud800"}'
        )
        env = _env(tmp_path, PYTHONIOENCODING="utf-8")  # strict, as in a UTF-8 locale
        proc = subprocess.run(
            [sys.executable, "-m", "taskforce", "run", mission, *flags],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
            check=False,
        )

        assert 1 == proc.returncode, proc.stderr  # the calculator failed the mission
        assert b"Traceback" not in proc.stderr
        out = proc.stdout.decode("utf-8")  # no byte that is not UTF-8 either
        if flags == ["--stream", "--json"]:
            events = [json.loads(line) for line in out.splitlines()]
            assert "result" == events[-1]["kind"]
            args = [e["args"] for e in events if e["kind"] == "tool_call"]
            assert {"expression": "\ud800"} == args[-1]
            assert "\\udcff.txt" in out

    def test_an_output_encoding_short_of_the_result_gets_escapes(self, tmp_path: Path) -> None:
        """Standard output in ASCII (PYTHONIOENCODING) gets `\\xe9` for what it cannot take."""
        env = _env(tmp_path, PYTHONIOENCODING="ascii")
        proc = _taskforce("run", "say caf\u00e9", env=env, cwd=tmp_path)

        assert 0 == proc.returncode, proc.stderr
        assert "Scripted answer: say caf\\xe9" == proc.stdout.splitlines()[-1]

    def test_invalid_setting_names_it(self, tmp_path: Path) -> None:
        """An invalid setting stops the CLI with exit 2 and the setting's name."""
        env = _env(tmp_path, TASKFORCE_METRICS__MAX_LABEL_VALUES="-3")
        proc = _taskforce("run", "hi", env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        assert "metrics.max_label_values" in proc.stderr
        assert "TASKFORCE_METRICS__MAX_LABEL_VALUES='-3'" in proc.stderr
        assert not (tmp_path / "state").exists()

    @pytest.mark.parametrize(
        ("variable", "value", "setting"),
        [
            ("TASKFORCE_API__MAX_HEADER_BYTES", "512", "api.max_header_bytes"),
            ("TASKFORCE_TOOLS__MAX_DIR_ENTRIES", "0", "tools.max_dir_entries"),
            ("TASKFORCE_AGENT__MAX_RESULT_DEPTH", "251", "agent.max_result_depth"),
            ("TASKFORCE_STATE__SESSION_TTL_SECONDS", "-1", "state.session_ttl_seconds"),
            ("TASKFORCE_SERVER__MAX_FAILED_RESTARTS", "0", "server.max_failed_restarts"),
            (
                "TASKFORCE_SERVER__MAX_RESTART_PAUSE_SECONDS",
                "0",
                "server.max_restart_pause_seconds",
            ),
        ],
    )
    def test_invalid_limit_stops_serve(
        self, tmp_path: Path, variable: str, value: str, setting: str
    ) -> None:
        """`serve` with a limit out of bounds exits 2 naming the variable and the setting."""
        env = _env(tmp_path, **{variable: value})
        proc = _taskforce("serve", "--port", "0", env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        assert f"{variable}={value!r}" in proc.stderr
        assert setting in proc.stderr

    def test_a_sections_json_that_repeats_a_key_stops_it(self, tmp_path: Path) -> None:
        """TASKFORCE_LLM with a key twice: one line naming the variable and the key, exit 2."""
        env = _env(tmp_path, TASKFORCE_LLM='{"model": "a", "model": "b"}')
        proc = _taskforce("run", "hi", env=env, cwd=tmp_path)
        assert (2, "") == (proc.returncode, proc.stdout)
        assert [
            "taskforce: invalid setting 'llm' (TASKFORCE_LLM): duplicate key 'model' in its"
            " JSON (which one would count?)"
        ] == proc.stderr.splitlines()

    def test_a_state_dir_that_is_a_file_stops_it(self, tmp_path: Path) -> None:
        """A state_dir that is a file: one line naming the variable, exit 2, no traceback."""
        taken = tmp_path / "taken"
        taken.write_text("x", encoding="utf-8")
        env = {**_env(tmp_path), "TASKFORCE_STATE_DIR": str(taken)}
        proc = _taskforce("run", "hi", env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        assert [
            f"taskforce: invalid setting 'state_dir' (TASKFORCE_STATE_DIR={str(taken)!r}): "
            "cannot use it as a directory: not a directory"
        ] == proc.stderr.splitlines()


class TestServe:
    def test_serve_answers_health_and_metrics(self, tmp_path: Path) -> None:
        """`taskforce serve` starts the service on the given port, metrics on by default."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskforce", "serve", "--port", str(port)],
            env=_env(tmp_path, TASKFORCE_LOGGING__LEVEL="debug"),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert 200 == health.status_code
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert 200 == metrics.status_code
            assert "taskforce_build_info" in metrics.text
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=15)
        assert "server.started" in stderr

    @pytest.mark.parametrize(
        ("loading", "as_init"),
        [
            pytest.param("uvicorn", False, id="loading-the-app"),
            pytest.param("structlog", True, id="pid-1-before-logging"),
        ],
    )
    def test_a_stop_signal_while_serve_starts_ends_it_cleanly(
        self, tmp_path: Path, loading: str, as_init: bool
    ) -> None:
        """SIGTERM while `serve` still loads its logging or the app's modules: it ends as
        soon as they have loaded, exit 0, server.stopped naming the signal, nothing served.

        Its default action would end the process without a line; as PID 1 of a container
        without an init, the kernel drops a signal the process has no handler for, and the
        service would start and serve until killed. The second case runs the child as
        PID 1 of a PID namespace of its own, where ``unshare`` can make one.
        """
        command = [sys.executable, "-c", _SIGNAL_WHILE_LOADING, "SIGTERM", loading]
        if as_init:
            command = [*_AS_INIT, *command]
            if (
                shutil.which("unshare") is None
                or subprocess.run([*_AS_INIT, "true"], capture_output=True, check=False).returncode
            ):
                pytest.skip("unshare cannot make a PID namespace here")
        proc = subprocess.run(
            [*command, "serve", "--port", str(free_ports(1))],
            env=_env(tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,  # a guard: the old code, as PID 1, served until killed here
            check=False,
        )
        logged = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
        lifecycle = [
            (e["event"], e.get("signal")) for e in logged if e["event"].startswith("server.")
        ]
        assert (0, [("server.stopped", "SIGTERM")]) == (proc.returncode, lifecycle), proc.stderr

    def test_server_started_says_where_it_listens(self, tmp_path: Path) -> None:
        """`serve --port 0` binds a free port; server.started names it in its url, which
        answers (nothing else would tell the port)."""
        with started(["serve", "--port", "0"], _env(tmp_path), tmp_path) as child:
            deadline = time.monotonic() + 60  # a guard: the service starts in seconds
            while '"server.started"' not in child.stderr():
                assert child.process.poll() is None, child.stderr()
                assert time.monotonic() < deadline, child.stderr()
                time.sleep(0.05)
            (line,) = [line for line in child.stderr().splitlines() if "server.started" in line]
            url = json.loads(line)["url"]
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":0"), url
            assert 200 == httpx.get(f"{url}/health", timeout=5).status_code

    def test_access_lines_keep_a_long_path_cut(self, tmp_path: Path) -> None:
        """A request path past logging.max_path_chars (1024) is logged cut, and says so;
        a secret in the query is redacted before the cut, which leaves none of it."""
        token = "Zq7Xw9Kp2Lm4Nv6Rt8Yb1Hc3"
        port = free_ports(1)
        long_path = "/" + "x" * 4999
        # cut as it came, the path would end inside the token (which starts at 1019)
        secret_path = "/" + "a" * 1015 + "?t=" + token + "&" + "b" * 100
        env = _env(tmp_path, TASKFORCE_API__AUTH_TOKEN=token)
        with started(["serve", "--port", str(port)], env, tmp_path) as child:
            wait_until_up(child, [f"http://127.0.0.1:{port}/health"])
            for path in (long_path, secret_path):
                assert 404 == httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code
        stderr = child.stderr()
        lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        access = [line["message"] for line in lines if line.get("logger") == "uvicorn.access"]
        assert f'"GET {long_path[:1024]}...[+3976 chars] HTTP/1.1" 404' in access[-2]
        redacted = secret_path.replace(token, "***")
        assert f'"GET {redacted[:1024]}...[+99 chars] HTTP/1.1" 404' in access[-1]
        assert token[:4] not in stderr

    def test_uvicorn_lines_keep_their_documented_levels(self, tmp_path: Path) -> None:
        """A request uvicorn's parser refuses, and an upgrade it cannot serve, make it log
        warnings: docs/logging.md names every level its lines come at."""
        docs = (Path(__file__).resolve().parents[2] / "docs" / "logging.md").read_text()
        (row,) = [line for line in docs.splitlines() if line.startswith("| (uvicorn's lines) |")]
        documented = {level.strip() for level in row.split("|")[2].split(",")}
        port = free_ports(1)
        upgrade = (
            b"GET /health HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        )
        with started(["serve", "--port", str(port)], _env(tmp_path), tmp_path) as child:
            wait_until_up(child, [f"http://127.0.0.1:{port}/health"])
            for head in (upgrade, b"G\x01T / HTTP/1.1\r\nHost: x\r\n"):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(head + b"Connection: close\r\n\r\n")
                    while sock.recv(65536):
                        pass
        lines = [json.loads(line) for line in child.stderr().splitlines() if line.startswith("{")]
        levels = {line["level"] for line in lines if line.get("logger", "").startswith("uvicorn")}
        assert "warning" in levels
        assert levels <= documented

    def test_access_lines_name_the_metrics_path_scraped(self, tmp_path: Path) -> None:
        """A scrape of the bare metrics path is logged with the path the scraper asked
        for, not with the slash the mount serves it under."""
        port = free_ports(1)
        with started(["serve", "--port", str(port)], _env(tmp_path), tmp_path) as child:
            wait_until_up(child, [f"http://127.0.0.1:{port}/health"])
            for path in ("/metrics", "/metrics/", "/metrics?a=1"):
                assert 200 == httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code
        lines = [json.loads(line) for line in child.stderr().splitlines() if line.startswith("{")]
        access = [line["message"] for line in lines if line.get("logger") == "uvicorn.access"]
        scrapes = [line.split('"')[1] for line in access if "/metrics" in line]
        assert [
            "GET /metrics HTTP/1.1",
            "GET /metrics/ HTTP/1.1",
            "GET /metrics?a=1 HTTP/1.1",
        ] == scrapes

    def test_access_lines_stay_with_a_metrics_port(self, tmp_path: Path) -> None:
        """The metrics listener of metrics.port keeps its scrapes out of the access log,
        without silencing the API's own access lines."""
        api_port = free_ports(2)
        metrics_port = api_port + 1
        env = _env(tmp_path, TASKFORCE_METRICS__PORT=str(metrics_port))
        with started(["serve", "--port", str(api_port)], env, tmp_path) as child:
            wait_until_up(child, [f"http://127.0.0.1:{api_port}/health"])
            assert (
                200 == httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).status_code
            )
            assert 404 == httpx.get(f"http://127.0.0.1:{api_port}/nowhere", timeout=5).status_code
        lines = [json.loads(line) for line in child.stderr().splitlines() if line.startswith("{")]
        access = [line["message"] for line in lines if line.get("logger") == "uvicorn.access"]
        assert any('"GET /nowhere HTTP/1.1" 404' in line for line in access), access
        assert not any("/metrics" in line for line in access)

    def test_serve_bad_config_file(self, tmp_path: Path) -> None:
        """`taskforce serve --config missing.toml` refuses to start and says why."""
        proc = _taskforce(
            "serve", "--config", str(tmp_path / "missing.toml"), env=_env(tmp_path), cwd=tmp_path
        )
        assert 2 == proc.returncode
        assert "config" in proc.stderr

    @pytest.mark.parametrize("args", [["--config", ""], ["--config", " "]])
    def test_an_empty_config_name_is_refused(self, tmp_path: Path, args: list[str]) -> None:
        """`--config ''` (an unset shell variable) stops start-up instead of reading no file."""
        for command in (["serve", "--port", "1"], ["run", "hi"]):
            proc = _taskforce(*command, *args, env=_env(tmp_path), cwd=tmp_path)
            assert 2 == proc.returncode
            assert f"(--config={args[1]!r}): names no file" in proc.stderr
        env = _env(tmp_path, TASKFORCE_CONFIG="")
        proc = _taskforce("run", "hi", env=env, cwd=tmp_path)
        assert (2, 1) == (proc.returncode, len(proc.stderr.splitlines()))
        assert "(TASKFORCE_CONFIG='')" in proc.stderr

    @pytest.mark.parametrize("port", ["0", "65536", "x"])
    def test_metrics_port_out_of_range_is_bad_usage(self, tmp_path: Path, port: str) -> None:
        """`--metrics-port` is checked as the flag it is, not as the variable it is not."""
        env = _env(tmp_path, TASKFORCE_METRICS__PORT="9464")
        proc = _taskforce("serve", f"--metrics-port={port}", env=env, cwd=tmp_path)
        assert 2 == proc.returncode
        assert f"argument --metrics-port: invalid port '{port}'" in proc.stderr
        assert "TASKFORCE_METRICS__PORT" not in proc.stderr

    @pytest.mark.parametrize(("workers", "metrics_port"), [("1", 0), ("3", -2)])
    def test_metrics_port_on_the_api_port_is_refused(
        self, tmp_path: Path, workers: str, metrics_port: int
    ) -> None:
        """Metrics ports that take the API port: one line saying so, not 'address in use'."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        args = ["--port", str(port), "--workers", workers]
        args += ["--metrics-port", str(port + metrics_port)]
        proc = _taskforce("serve", *args, env=_env(tmp_path), cwd=tmp_path)
        assert (2, 1) == (proc.returncode, len(proc.stderr.splitlines()))
        assert f"the API port {port} is also" in proc.stderr

    def test_a_metrics_port_in_use_names_the_flag_that_set_it(self, tmp_path: Path) -> None:
        """`--metrics-port P` with P taken: one line naming the flag, not a variable unset."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            args = ["--port", "0", "--metrics-port", str(port)]
            proc = _taskforce("serve", *args, env=_env(tmp_path), cwd=tmp_path)
        assert (2, 1) == (proc.returncode, len(proc.stderr.splitlines()))
        assert (
            f"cannot listen on 127.0.0.1:{port} for worker 0's metrics (--host, --metrics-port)"
            in proc.stderr
        )
        assert "TASKFORCE_METRICS__" not in proc.stderr

    @pytest.mark.parametrize("given_in", ["file", "section"])
    def test_a_metrics_port_not_from_its_variable_is_named_where_it_was_given(
        self, tmp_path: Path, given_in: str
    ) -> None:
        """metrics.port from the config file or TASKFORCE_METRICS's JSON: the start-up
        errors name that source, not TASKFORCE_METRICS__PORT, which nobody set."""
        port = free_ports(2)
        taken_port = port + 1
        config = tmp_path / "app.toml"
        env = _env(tmp_path)

        def given(metrics: dict[str, object]) -> list[str]:
            if given_in == "section":
                env["TASKFORCE_METRICS"] = json.dumps(metrics)
                return []
            table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in metrics.items())
            config.write_text(f"[metrics]\n{table}", encoding="utf-8")
            return ["--config", str(config)]

        where = f"in {config}" if given_in == "file" else "TASKFORCE_METRICS"
        args = given({"port": port})
        proc = _taskforce("serve", "--port", str(port), *args, env=env, cwd=tmp_path)
        assert (2, 1) == (proc.returncode, len(proc.stderr.splitlines()))
        assert f"the API port {port} is also metrics.port ({where}):" in proc.stderr
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", taken_port))
            taken.listen()
            args = given({"port": taken_port, "host": "127.0.0.1"})
            proc = _taskforce("serve", "--port", str(port), *args, env=env, cwd=tmp_path)
        assert (2, 1) == (proc.returncode, len(proc.stderr.splitlines()))
        assert f"for worker 0's metrics ({where}): address already in use" in proc.stderr
        assert "TASKFORCE_METRICS__" not in proc.stderr

    @pytest.mark.parametrize("host", ["", " "])
    def test_a_blank_host_is_bad_usage(self, tmp_path: Path, host: str) -> None:
        """`--host ''` exits 2 at once naming the wildcards (no resolver takes a blank name)."""
        proc = _taskforce("serve", f"--host={host}", env=_env(tmp_path), cwd=tmp_path)
        assert 2 == proc.returncode
        assert f"invalid host {host!r}: give an address or a name (0.0.0.0 or ::" in proc.stderr

    @pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
    def test_no_descriptor_left_to_start_is_one_line(self, tmp_path: Path) -> None:
        """An open-file limit too low for the event loop to start (every descriptor in
        use) stops serve with one line naming the limit, exit 2: it was an uncaught
        ``OSError`` and exit 1. (``run`` goes through the same clause.)"""
        start = (
            "import os, resource, sys\n"
            "import taskforce.api.cli as cli, taskforce.api.server, taskforce.api._supervisor\n"
            "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "in_use = len(os.listdir('/proc/self/fd')) - 1\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (in_use, hard))\n"
            "cli.main(sys.argv[1:])\n"
        )
        proc = _python("-c", start, "serve", "--port", "0", env=_env(tmp_path), cwd=tmp_path)
        assert 2 == proc.returncode, proc.stderr
        line = "taskforce: cannot start: Too many open files (the open-file limit, ulimit -n, is"
        assert line in proc.stderr
        assert "process.exception.uncaught" not in proc.stderr

    @pytest.mark.parametrize("port", ["65536", "99999", "-1"])
    def test_serve_port_out_of_range_is_bad_usage(self, tmp_path: Path, port: str) -> None:
        """A port outside 0 to 65535 exits 2 at once (the socket would wrap it, 99999 to 34463)."""
        proc = _taskforce("serve", f"--port={port}", env=_env(tmp_path), cwd=tmp_path)
        assert 2 == proc.returncode
        assert f"invalid port '{port}'" in proc.stderr
