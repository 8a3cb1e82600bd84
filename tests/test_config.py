"""Settings: defaults, precedence (env > file > defaults) and errors that name the setting."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskforce.config import Settings, check_directories, dsn_secrets, load_settings
from taskforce.config._validators import MAX_SETTING_DEPTH
from taskforce.core.interfaces.log import LOG_CATEGORIES
from taskforce.errors import ConfigurationError, UnknownSettingError


class TestDefaults:
    def test_contract_defaults(self) -> None:
        """Defaults are the ones CONTRACT.md lists."""
        s = Settings()
        assert "scripted" == s.llm.provider
        assert "scripted-1" == s.llm.model
        assert 0 == s.llm.scripted_latency_ms
        assert Path(".taskforce/state") == s.state_dir
        assert Path(".taskforce/workspace") == s.workspace_dir
        assert s.metrics.enabled is True
        assert "/metrics" == s.metrics.path
        assert s.metrics.auth_token is None
        assert 100 == s.metrics.max_label_values
        # CONTRACT.md: `console` on a TTY, else `json` (pytest's captured stderr is no TTY)
        assert "json" == s.logging.format
        assert "info" == s.logging.level
        assert LOG_CATEGORIES == s.logging.categories
        assert 1024 == s.logging.max_path_chars
        assert 1024 * 1024 == s.api.max_body_bytes
        assert 64 * 1024 == s.api.max_header_bytes
        assert s.api.auth_token is None
        assert s.api.docs_enabled is True
        assert 64 == s.api.max_missions_in_flight
        assert 16 == s.api.max_session_reads_in_flight
        assert s.api.max_connections is None  # half the open-file limit, at start
        assert 1000 == s.tools.max_dir_entries
        assert 1000 == s.tools.max_expression_chars
        assert 300 == s.tools.max_sleep_seconds
        assert 100 == s.agent.max_result_depth
        assert 32 == s.agent.max_tool_calls_per_turn
        assert 64 == s.agent.max_queued_events
        assert (1024**3, 100_000) == (s.tools.max_workspace_bytes, s.tools.max_workspace_entries)
        # docs/configuration.md's defaults for the supervisor of `taskforce serve --workers N`
        assert (30, 5, 10) == (
            s.server.shutdown_grace_seconds,
            s.server.max_failed_restarts,
            s.server.max_restart_pause_seconds,
        )


class TestLoggingFormatDefault:
    """CONTRACT.md's default for logging.format is `console` on a TTY, else `json`."""

    @pytest.mark.parametrize(("tty", "expected"), [(True, "console"), (False, "json")])
    def test_unset_reads_as_the_format_stderr_gets(
        self, monkeypatch: pytest.MonkeyPatch, tty: bool, expected: str
    ) -> None:
        monkeypatch.setattr(sys, "stderr", _Stream(tty))
        assert expected == Settings().logging.format

    @pytest.mark.parametrize(("tty", "expected"), [(True, "console"), (False, "json")])
    def test_auto_given_reads_the_same(
        self, monkeypatch: pytest.MonkeyPatch, tty: bool, expected: str
    ) -> None:
        monkeypatch.setattr(sys, "stderr", _Stream(tty))
        monkeypatch.setenv("TASKFORCE_LOGGING__FORMAT", "auto")
        assert expected == Settings().logging.format

    @pytest.mark.parametrize("given", ["console", "json"])
    def test_a_format_given_is_kept_whatever_stderr_is(
        self, monkeypatch: pytest.MonkeyPatch, given: str
    ) -> None:
        monkeypatch.setattr(sys, "stderr", _Stream(given == "json"))
        assert given == Settings(logging={"format": given}).logging.format


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


class TestPrecedence:
    def test_env_nested_delimiter(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKFORCE_SECTION__KEY sets a nested setting."""
        monkeypatch.setenv("TASKFORCE_METRICS__ENABLED", "false")
        monkeypatch.setenv("TASKFORCE_LLM__SCRIPTED_LATENCY_MS", "20")
        s = load_settings()
        assert s.metrics.enabled is False
        assert 20 == s.llm.scripted_latency_ms

    def test_missions_in_flight_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKFORCE_API__MAX_MISSIONS_IN_FLIGHT sets the per-process limit, spaces around it."""
        monkeypatch.setenv("TASKFORCE_API__MAX_MISSIONS_IN_FLIGHT", " 8 ")
        assert 8 == load_settings().api.max_missions_in_flight

    def test_session_reads_in_flight_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKFORCE_API__MAX_SESSION_READS_IN_FLIGHT sets the per-process limit of reads."""
        monkeypatch.setenv("TASKFORCE_API__MAX_SESSION_READS_IN_FLIGHT", "3")
        assert 3 == load_settings().api.max_session_reads_in_flight

    def test_stream_keepalive_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKFORCE_API__STREAM_KEEPALIVE_SECONDS sets the interval; 0 (off) is allowed."""
        assert 15 == load_settings().api.stream_keepalive_seconds
        monkeypatch.setenv("TASKFORCE_API__STREAM_KEEPALIVE_SECONDS", "0")
        assert 0 == load_settings().api.stream_keepalive_seconds

    def test_mission_timeout_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKFORCE_AGENT__MISSION_TIMEOUT_SECONDS sets the deadline; 0 (none) is the default,
        and a fraction of a second and a whole day are allowed."""
        assert 0 == load_settings().agent.mission_timeout_seconds
        for value, expected in (("0.25", 0.25), ("86400", 86_400), ("0", 0)):
            monkeypatch.setenv("TASKFORCE_AGENT__MISSION_TIMEOUT_SECONDS", value)
            assert expected == load_settings().agent.mission_timeout_seconds

    def test_env_beats_file_beats_defaults(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A TOML file overrides defaults; the environment overrides the file."""
        cfg = tmp_path / "taskforce.toml"
        cfg.write_text('[metrics]\npath = "/prom"\nmax_label_values = 7\n', encoding="utf-8")
        monkeypatch.setenv("TASKFORCE_METRICS__MAX_LABEL_VALUES", "9")
        s = load_settings(cfg)
        assert "/prom" == s.metrics.path
        assert 9 == s.metrics.max_label_values

    def test_config_env_var(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKFORCE_CONFIG names the TOML file when --config is not given."""
        cfg = tmp_path / "t.toml"
        cfg.write_text('[logging]\nlevel = "debug"\n', encoding="utf-8")
        monkeypatch.setenv("TASKFORCE_CONFIG", str(cfg))
        assert "debug" == load_settings().logging.level

    def test_categories_comma_list(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """logging.categories accepts a comma list from the environment."""
        monkeypatch.setenv("TASKFORCE_LOGGING__CATEGORIES", "security, performance")
        assert ("security", "performance") == load_settings().logging.categories


#: JSON nesting past what any Python's ``json`` reads: 3.13 reads 5,000 levels, where 3.11
#: and 3.12 stop at their recursion limit.
_PAST_ANY_PARSER = 20_000


def _refused_as_nested_too_deeply(setting: str, variable: str) -> None:
    """Start-up stops as nested too deeply, naming ``setting`` and ``variable``."""
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert (setting, variable, "nested too deeply to be read") == (
        info.value.setting,
        info.value.source,
        info.value.reason,
    )


class TestErrors:
    @pytest.mark.parametrize(
        ("env", "value", "setting"),
        [
            ("TASKFORCE_METRICS__MAX_LABEL_VALUES", "zero", "metrics.max_label_values"),
            ("TASKFORCE_METRICS__MAX_LABEL_VALUES", "0", "metrics.max_label_values"),
            ("TASKFORCE_METRICS__PATH", "metrics", "metrics.path"),
            ("TASKFORCE_METRICS__PATH", "/api/v1/metrics", "metrics.path"),
            ("TASKFORCE_LLM__PROVIDER", "gpt", "llm.provider"),
            ("TASKFORCE_LLM__SCRIPTED_LATENCY_MS", "-1", "llm.scripted_latency_ms"),
            ("TASKFORCE_LOGGING__CATEGORIES", "security,nonsense", "logging.categories"),
            ("TASKFORCE_LOGGING__LEVEL", "loud", "logging.level"),
            ("TASKFORCE_LOGGING__MAX_PATH_CHARS", "63", "logging.max_path_chars"),
            ("TASKFORCE_LOGGING__MAX_PATH_CHARS", "1048577", "logging.max_path_chars"),
            ("TASKFORCE_METRICS__AUTH_TOKEN", "  ", "metrics.auth_token"),
            ("TASKFORCE_API__MAX_MISSIONS_IN_FLIGHT", "0", "api.max_missions_in_flight"),
            ("TASKFORCE_API__MAX_MISSIONS_IN_FLIGHT", "10001", "api.max_missions_in_flight"),
            ("TASKFORCE_API__MAX_MISSIONS_IN_FLIGHT", "many", "api.max_missions_in_flight"),
            ("TASKFORCE_API__MAX_MISSIONS_IN_FLIGHT", "2.5", "api.max_missions_in_flight"),
            ("TASKFORCE_API__MAX_SESSION_READS_IN_FLIGHT", "0", "api.max_session_reads_in_flight"),
            (
                "TASKFORCE_API__MAX_SESSION_READS_IN_FLIGHT",
                "10001",
                "api.max_session_reads_in_flight",
            ),
            (
                "TASKFORCE_API__MAX_SESSION_READS_IN_FLIGHT",
                "few",
                "api.max_session_reads_in_flight",
            ),
            ("TASKFORCE_API__MAX_CONNECTIONS", "0", "api.max_connections"),
            ("TASKFORCE_API__MAX_CONNECTIONS", "1000001", "api.max_connections"),
            ("TASKFORCE_API__MAX_CONNECTIONS", "many", "api.max_connections"),
            ("TASKFORCE_API__STREAM_KEEPALIVE_SECONDS", "-1", "api.stream_keepalive_seconds"),
            ("TASKFORCE_API__STREAM_KEEPALIVE_SECONDS", "3601", "api.stream_keepalive_seconds"),
            ("TASKFORCE_API__STREAM_KEEPALIVE_SECONDS", "nan", "api.stream_keepalive_seconds"),
            ("TASKFORCE_TOOLS__MAX_DIR_ENTRIES", "0", "tools.max_dir_entries"),
            ("TASKFORCE_TOOLS__MAX_DIR_ENTRIES", "1000001", "tools.max_dir_entries"),
            ("TASKFORCE_TOOLS__MAX_DIR_ENTRIES", "many", "tools.max_dir_entries"),
            ("TASKFORCE_TOOLS__MAX_EXPRESSION_CHARS", "0", "tools.max_expression_chars"),
            ("TASKFORCE_TOOLS__MAX_EXPRESSION_CHARS", "100001", "tools.max_expression_chars"),
            ("TASKFORCE_TOOLS__MAX_SLEEP_SECONDS", "0", "tools.max_sleep_seconds"),
            ("TASKFORCE_TOOLS__MAX_SLEEP_SECONDS", "3601", "tools.max_sleep_seconds"),
            ("TASKFORCE_TOOLS__MAX_SLEEP_SECONDS", "nan", "tools.max_sleep_seconds"),
            ("TASKFORCE_AGENT__MISSION_TIMEOUT_SECONDS", "-1", "agent.mission_timeout_seconds"),
            ("TASKFORCE_AGENT__MISSION_TIMEOUT_SECONDS", "86401", "agent.mission_timeout_seconds"),
            ("TASKFORCE_AGENT__MISSION_TIMEOUT_SECONDS", "nan", "agent.mission_timeout_seconds"),
            ("TASKFORCE_AGENT__MISSION_TIMEOUT_SECONDS", "inf", "agent.mission_timeout_seconds"),
            ("TASKFORCE_AGENT__MISSION_TIMEOUT_SECONDS", "5s", "agent.mission_timeout_seconds"),
            ("TASKFORCE_AGENT__MISSION_TIMEOUT_SECONDS", "true", "agent.mission_timeout_seconds"),
            ("TASKFORCE_AGENT__MAX_RESULT_DEPTH", "0", "agent.max_result_depth"),
            ("TASKFORCE_AGENT__MAX_RESULT_DEPTH", "251", "agent.max_result_depth"),
            ("TASKFORCE_AGENT__MAX_TOOL_CALLS_PER_TURN", "0", "agent.max_tool_calls_per_turn"),
            ("TASKFORCE_AGENT__MAX_TOOL_CALLS_PER_TURN", "1001", "agent.max_tool_calls_per_turn"),
            ("TASKFORCE_AGENT__MAX_QUEUED_EVENTS", "0", "agent.max_queued_events"),
            ("TASKFORCE_AGENT__MAX_QUEUED_EVENTS", "1000001", "agent.max_queued_events"),
            ("TASKFORCE_AGENT__MAX_QUEUED_EVENTS", "many", "agent.max_queued_events"),
            ("TASKFORCE_TOOLS__MAX_WORKSPACE_BYTES", "0", "tools.max_workspace_bytes"),
            ("TASKFORCE_TOOLS__MAX_WORKSPACE_BYTES", "1GiB", "tools.max_workspace_bytes"),
            ("TASKFORCE_TOOLS__MAX_WORKSPACE_ENTRIES", "0", "tools.max_workspace_entries"),
            ("TASKFORCE_TOOLS__MAX_WORKSPACE_ENTRIES", "100000001", "tools.max_workspace_entries"),
            # an empty path would silently mean the working directory
            ("TASKFORCE_STATE_DIR", " ", "state_dir"),
            ("TASKFORCE_WORKSPACE_DIR", "", "workspace_dir"),
            ("TASKFORCE_METRICS__TARGETS_FILE", "", "metrics.targets_file"),
        ],
    )
    def test_invalid_value_names_setting(
        self, monkeypatch: pytest.MonkeyPatch, env: str, value: str, setting: str
    ) -> None:
        """An invalid value raises ConfigurationError whose message names the setting."""
        monkeypatch.setenv(env, value)
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert setting == info.value.setting
        assert repr(setting) in str(info.value)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("max_failed_restarts", "0"),
            ("max_failed_restarts", "1001"),
            ("max_failed_restarts", "2.5"),
            ("max_restart_pause_seconds", "0"),
            ("max_restart_pause_seconds", "3601"),
            ("max_restart_pause_seconds", "nan"),
        ],
    )
    def test_a_bad_restart_limit_names_its_variable(
        self, monkeypatch: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        """The supervisor's crash-loop limit or longest restart pause out of its range, or
        no number, stops start-up naming the setting, its variable and the value."""
        variable = f"TASKFORCE_SERVER__{name.upper()}"
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert f"server.{name}" == info.value.setting
        assert f"{variable}={value!r}" in str(info.value)

    def test_missing_config_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A config file that does not exist is reported, naming where it was named."""
        missing = tmp_path / "nope.toml"
        with pytest.raises(ConfigurationError, match="does not exist") as info:
            load_settings(missing)
        assert f"--config={str(missing)!r}" == info.value.source
        monkeypatch.setenv("TASKFORCE_CONFIG", str(missing))
        with pytest.raises(ConfigurationError, match="does not exist") as info:
            load_settings()
        assert f"TASKFORCE_CONFIG={str(missing)!r}" == info.value.source

    def test_malformed_config_file(self, tmp_path: Path) -> None:
        """A TOML syntax error is reported as a configuration error naming the file."""
        cfg = tmp_path / "bad.toml"
        cfg.write_text("[metrics\n", encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert f"in {cfg}" == info.value.source

    def test_config_file_that_is_a_directory(self, tmp_path: Path) -> None:
        """A directory given as the config file is named for what it is."""
        with pytest.raises(ConfigurationError, match="is not a file") as info:
            load_settings(tmp_path)
        assert f"--config={str(tmp_path)!r}" == info.value.source

    @pytest.mark.parametrize(
        ("variable", "value", "reason"),
        [
            # a whole section as JSON, cut short
            ("TASKFORCE_LLM", '{"model": "m", ', "not a JSON object"),
            # a key twice: which would count?
            ("TASKFORCE_LLM", '{"model": "a", "model": "b"}', "duplicate key 'model'"),
            ("TASKFORCE_AGENT", '{"max_steps": 3, "max_steps": 3}', "duplicate key 'max_steps'"),
            # a key twice deeper in the section: the model priced twice
            (
                "TASKFORCE_LLM",
                '{"prices": {"m": {"input": 1, "output": 1}, "m": {"input": 2, "output": 2}}}',
                "duplicate key 'm'",
            ),
        ],
        ids=["cut short", "a key twice", "the same value twice", "a nested key twice"],
    )
    def test_a_sections_bad_json_names_its_variable(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
    ) -> None:
        """A section's JSON that is cut short or repeats a key (TASKFORCE_LLM='{"model": "a",
        "model": "b"}') stops start-up naming the variable and, for a repeat, the key."""
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        section = variable.removeprefix("TASKFORCE_").lower()
        assert (section, variable) == (info.value.setting, info.value.source)
        assert reason in info.value.reason

    @pytest.mark.parametrize(
        ("section", "own", "setting"),
        [
            ('{"model": "a"}', ("TASKFORCE_LLM__MODEL", "b"), "llm.model"),
            ('{"model": "a"}', ("TASKFORCE_LLM__MODEL", "a"), "llm.model"),
            ('{"max_steps": 3}', ("taskforce_agent__max_steps", "4"), "agent.max_steps"),
        ],
        ids=["two values", "the same value", "a variable in small letters"],
    )
    def test_a_setting_in_its_sections_json_and_in_its_own_variable_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, section: str, own: tuple[str, str], setting: str
    ) -> None:
        """TASKFORCE_LLM='{"model": "a"}' with TASKFORCE_LLM__MODEL=b: the variable of its own
        won without a word. Now start-up stops, naming the setting and both variables."""
        variable = f"TASKFORCE_{setting.split('.')[0].upper()}"
        monkeypatch.setenv(variable, section)
        monkeypatch.setenv(*own)
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert (setting, own[0]) == (info.value.setting, info.value.source)
        assert f"in {variable}'s JSON and as {own[0]}" in info.value.reason

    def test_a_sections_json_and_variables_of_other_keys_are_read(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Keys of a section given partly as JSON and partly as variables of their own."""
        monkeypatch.setenv("TASKFORCE_LLM", '{"model": "a"}')
        monkeypatch.setenv("TASKFORCE_LLM__SCRIPTED_LATENCY_MS", "5")
        settings = load_settings()
        assert ("a", 5) == (settings.llm.model, settings.llm.scripted_latency_ms)

    def test_a_sections_json_with_unique_keys_is_read(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same key in two different objects is no repetition."""
        prices = '{"a": {"input": 1, "output": 2}, "b": {"input": 1, "output": 2}}'
        monkeypatch.setenv("TASKFORCE_LLM", f'{{"model": "m", "prices": {prices}}}')
        settings = load_settings()
        assert ("m", ["a", "b"]) == (settings.llm.model, sorted(settings.llm.prices))

    @pytest.mark.parametrize(
        "content",
        ['[llm]\nmodel = "a"\nmodel = "b"\n', '[llm]\nmodel = "a"\n[llm]\nprovider = "openai"\n'],
        ids=["a key", "a table"],
    )
    def test_a_file_that_repeats_a_key_names_the_file(self, tmp_path: Path, content: str) -> None:
        """The TOML reader refuses a key (or a table) given twice: start-up names the file."""
        cfg = tmp_path / "t.toml"
        cfg.write_text(content, encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert ("config", f"in {cfg}") == (info.value.setting, info.value.source)
        assert "line 3" in info.value.reason

    @pytest.mark.parametrize(
        ("variable", "value", "setting"),
        [
            ("TASKFORCE_LLM", "[" * _PAST_ANY_PARSER + "]" * _PAST_ANY_PARSER, "llm"),
            (
                "TASKFORCE_LLM__PRICES",
                '{"m": ' + "[" * _PAST_ANY_PARSER + "]" * _PAST_ANY_PARSER + "}",
                "llm.prices",
            ),
            (
                "TASKFORCE_LLM",
                '{"prices": "' + "[" * _PAST_ANY_PARSER + "]" * _PAST_ANY_PARSER + '"}',
                "llm",
            ),
        ],
        ids=["section", "setting", "string-in-section"],
    )
    def test_json_nested_too_deeply_names_its_variable(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, setting: str
    ) -> None:
        """JSON nested past the parser's depth is one error naming the variable, no traceback."""
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigurationError, match="nested too deeply") as info:
            load_settings()
        assert (setting, variable) == (info.value.setting, info.value.source)

    @pytest.mark.parametrize("depth", [MAX_SETTING_DEPTH + 1, 2_000])
    @pytest.mark.parametrize(
        ("variable", "value", "setting"),
        [
            ("TASKFORCE_LLM", "[{}]", "llm"),
            ("TASKFORCE_LLM__PRICES", '{{"m": {}}}', "llm.prices"),
            ("TASKFORCE_LLM", '{{"prices": "{}"}}', "llm"),
            ("TASKFORCE_LLM", '{{"prices": {{"m": {}}}}}', "llm"),
        ],
        ids=["section", "setting", "string-in-section", "object-in-section"],
    )
    def test_json_past_the_settings_depth_is_the_same_error_on_every_python(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, setting: str, depth: int
    ) -> None:
        """JSON nested past MAX_SETTING_DEPTH is refused as nested too deeply, naming the
        variable, also where the Python's own parser reads it (2,000 levels: 3.13 reads
        them, 3.11 does not), not a validation message on one Python and this on another."""
        monkeypatch.setenv(variable, value.format("[" * depth + "]" * depth))
        _refused_as_nested_too_deeply(setting, variable)

    def test_json_past_the_settings_depth_is_refused_before_a_key_given_twice(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A section's JSON nested 2,000 levels that also gives a key of its own variable is
        refused as nested too deeply on every Python (3.13 read it, and said given twice)."""
        monkeypatch.setenv("TASKFORCE_LLM", '{"model": ' + "[" * 2_000 + "]" * 2_000 + "}")
        monkeypatch.setenv("TASKFORCE_LLM__MODEL", "b")
        _refused_as_nested_too_deeply("llm", "TASKFORCE_LLM")

    def test_json_at_the_settings_depth_is_validated(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A price nested MAX_SETTING_DEPTH levels deep is read, and refused as no price."""
        nested = "[" * (MAX_SETTING_DEPTH - 1) + "]" * (MAX_SETTING_DEPTH - 1)
        monkeypatch.setenv("TASKFORCE_LLM__PRICES", '{"m": ' + nested + "}")
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert ("llm.prices.m", "TASKFORCE_LLM__PRICES") == (
            info.value.setting,
            str(info.value.source).partition(",")[0],
        )
        assert "Input should be a valid dictionary" in info.value.reason

    def test_a_config_file_nested_too_deeply_is_named(self, tmp_path: Path) -> None:
        """A TOML value nested past the parser's depth is one error naming the file."""
        cfg = tmp_path / "deep.toml"
        cfg.write_text("[llm]\nmodel = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
        with pytest.raises(ConfigurationError, match="nested too deeply") as info:
            load_settings(cfg)
        assert ("config", f"in {cfg}") == (info.value.setting, info.value.source)


def _with_targets_file(tmp_path: Path, targets: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "s",
        workspace_dir=tmp_path / "w",
        metrics={"port": 9464, "targets_file": targets},
    )


@contextlib.contextmanager
def _releasing_readers(fifo: Path) -> Iterator[None]:
    """While inside, a reader that opens ``fifo`` gets an end of file at once, not a wait."""
    done = threading.Event()

    def release() -> None:
        while not done.is_set():
            try:  # succeeds only while a reader has it open
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                done.wait(0.01)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class TestDirectories:
    @pytest.mark.parametrize("name", ["state_dir", "workspace_dir"])
    def test_a_file_where_a_directory_should_be(self, tmp_path: Path, name: str) -> None:
        """A path that is a file stops start-up naming the setting, its variable and the path."""
        taken = tmp_path / "taken"
        taken.write_text("x", encoding="utf-8")
        paths = {"state_dir": tmp_path / "s", "workspace_dir": tmp_path / "w", name: taken}
        settings = Settings(state_dir=paths["state_dir"], workspace_dir=paths["workspace_dir"])
        with pytest.raises(ConfigurationError, match="not a directory") as info:
            check_directories(settings)
        assert name == info.value.setting
        assert f"TASKFORCE_{name.upper()}={str(taken)!r}" == info.value.source

    @pytest.mark.parametrize("named_by", ["--config", "TASKFORCE_CONFIG"])
    def test_a_path_from_the_file_names_the_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named_by: str
    ) -> None:
        """A refused path the TOML file gave is blamed on the file, not on a variable unset."""
        taken = tmp_path / "taken"
        taken.write_text("x", encoding="utf-8")
        config = tmp_path / "app.toml"
        config.write_text(
            f'state_dir = "{taken}"\nworkspace_dir = "{tmp_path / "w"}"\n', encoding="utf-8"
        )
        if named_by == "TASKFORCE_CONFIG":
            monkeypatch.setenv("TASKFORCE_CONFIG", str(config))
            settings, option = load_settings(), None
        else:
            settings, option = load_settings(config), config
        with pytest.raises(ConfigurationError, match="not a directory") as info:
            check_directories(settings, option)
        assert f"in {config}: {str(taken)!r}" == info.value.source

    def test_a_path_from_a_variable_or_a_sections_json_names_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The variable beats the file, as it does when the settings are read."""
        taken = tmp_path / "taken"
        taken.write_text("x", encoding="utf-8")
        config = tmp_path / "app.toml"
        config.write_text(f'workspace_dir = "{tmp_path / "w"}"\n', encoding="utf-8")
        monkeypatch.setenv("TASKFORCE_STATE_DIR", str(taken))
        with pytest.raises(ConfigurationError) as info:
            check_directories(load_settings(config), config)
        assert f"TASKFORCE_STATE_DIR={str(taken)!r}" == info.value.source
        monkeypatch.delenv("TASKFORCE_STATE_DIR")
        monkeypatch.setenv(
            "TASKFORCE_METRICS", json.dumps({"port": 9464, "targets_file": str(tmp_path)})
        )
        with pytest.raises(ConfigurationError, match="is a directory") as info:
            check_directories(load_settings(config), config)
        assert f"TASKFORCE_METRICS, metrics.targets_file={str(tmp_path)!r}" == info.value.source

    @pytest.mark.parametrize("below", ["state", "a/b/state"])
    def test_a_state_dir_inside_the_workspace(self, tmp_path: Path, below: str) -> None:
        """A state_dir inside workspace_dir is refused, with nothing made: the session whose
        workspace folder it is could read and rewrite every session's records there."""
        workspace = tmp_path / "data"
        settings = Settings(state_dir=workspace / below, workspace_dir=workspace)
        with pytest.raises(ConfigurationError, match="inside workspace_dir") as info:
            check_directories(settings)
        assert "state_dir" == info.value.setting
        assert [] == list(tmp_path.iterdir())

    def test_a_state_dir_reached_through_a_symlink_into_the_workspace(self, tmp_path: Path) -> None:
        """The paths are compared as they resolve, so a symlink to inside is refused too;
        a state_dir beside the workspace, as the defaults have it, is taken."""
        (tmp_path / "data" / "inner").mkdir(parents=True)
        (tmp_path / "link").symlink_to(tmp_path / "data" / "inner")
        linked = Settings(state_dir=tmp_path / "link", workspace_dir=tmp_path / "data")
        with pytest.raises(ConfigurationError, match="inside workspace_dir"):
            check_directories(linked)
        check_directories(Settings(state_dir=tmp_path / "s", workspace_dir=tmp_path / "w"))

    def test_a_directory_that_cannot_be_made(self, tmp_path: Path) -> None:
        """A directory below a file cannot be made: refused at start-up, not at the first write."""
        (tmp_path / "file").write_text("x", encoding="utf-8")
        settings = Settings(state_dir=tmp_path / "file" / "state", workspace_dir=tmp_path / "w")
        with pytest.raises(ConfigurationError) as info:
            check_directories(settings)
        assert "state_dir" == info.value.setting

    def test_a_refusal_leaves_no_directory_made(self, tmp_path: Path) -> None:
        """Start-up stops with nothing made half-way: a workspace_dir made before state_dir
        was refused is removed again, and directories that existed are kept."""
        (tmp_path / "file").write_text("x", encoding="utf-8")
        (tmp_path / "kept").mkdir()
        settings = Settings(
            workspace_dir=tmp_path / "kept" / "new" / "workspace",
            state_dir=tmp_path / "file" / "state",
        )
        with pytest.raises(ConfigurationError) as info:
            check_directories(settings)
        assert "state_dir" == info.value.setting
        assert ["file", "kept"] == sorted(p.name for p in tmp_path.iterdir())
        assert [] == list((tmp_path / "kept").iterdir())

    @pytest.mark.parametrize("name", ["state_dir", "workspace_dir"])
    @pytest.mark.parametrize(
        ("bad", "reason"),
        [("a" * 300, "File name too long"), ("a\0b", "null (byte|character)")],
        ids=["name-too-long", "nul-byte"],
    )
    def test_a_path_no_directory_can_have(
        self, tmp_path: Path, name: str, bad: str, reason: str
    ) -> None:
        """A name longer than the filesystem takes, or with a NUL byte (possible in the
        TOML file), stops start-up naming the setting, not with a traceback."""
        paths = {"state_dir": tmp_path / "s", "workspace_dir": tmp_path / "w"}
        paths[name] = tmp_path / bad / "sub"
        settings = Settings(state_dir=paths["state_dir"], workspace_dir=paths["workspace_dir"])
        with pytest.raises(ConfigurationError, match=reason) as info:
            check_directories(settings)
        assert name == info.value.setting
        assert [] == list(tmp_path.iterdir())

    @pytest.mark.parametrize("bad", ["t" * 300, "t\0"], ids=["name-too-long", "nul-byte"])
    def test_a_targets_file_no_file_can_be(self, tmp_path: Path, bad: str) -> None:
        """A targets file whose name no file can have stops start-up naming its setting."""
        with pytest.raises(ConfigurationError) as info:
            check_directories(_with_targets_file(tmp_path, tmp_path / bad))
        assert "metrics.targets_file" == info.value.setting

    def test_a_targets_file_whose_folder_cannot_be_made(self, tmp_path: Path) -> None:
        """The targets file's folder is checked too: named by the targets file's variable."""
        (tmp_path / "file").write_text("x", encoding="utf-8")
        settings = Settings(
            state_dir=tmp_path / "s",
            workspace_dir=tmp_path / "w",
            metrics={"port": 9464, "targets_file": tmp_path / "file" / "targets.json"},
        )
        with pytest.raises(ConfigurationError) as info:
            check_directories(settings)
        targets, folder = tmp_path / "file" / "targets.json", tmp_path / "file"
        # the variable is shown with the value it holds, the folder in the reason
        assert (
            "metrics.targets_file",
            f"TASKFORCE_METRICS__TARGETS_FILE={str(targets)!r}",
            f"cannot use its folder {str(folder)!r} as a directory: not a directory",
        ) == (info.value.setting, info.value.source, info.value.reason)

    def test_a_targets_file_that_is_a_directory(self, tmp_path: Path) -> None:
        """A directory named as the targets file is refused, not logged at every rewrite."""
        folder = tmp_path / "file_sd"
        folder.mkdir()
        settings = _with_targets_file(tmp_path, folder)
        with pytest.raises(ConfigurationError, match="is a directory") as info:
            check_directories(settings)
        assert "metrics.targets_file" == info.value.setting
        assert f"TASKFORCE_METRICS__TARGETS_FILE={str(folder)!r}" == info.value.source

    @pytest.mark.parametrize("text", ["global:\n  scrape_interval: 15s\n", '{"a": 1}', "[1, "])
    def test_a_file_that_is_no_targets_file_is_kept(self, tmp_path: Path, text: str) -> None:
        """A file other than a targets file (a mistyped path) stops start-up and is kept as is."""
        other = tmp_path / "prometheus.yml"
        other.write_text(text, encoding="utf-8")
        settings = _with_targets_file(tmp_path, other)
        with pytest.raises(ConfigurationError, match="not a targets file") as info:
            check_directories(settings)
        assert "metrics.targets_file" == info.value.setting
        assert text == other.read_text(encoding="utf-8")

    def test_a_targets_file_that_is_a_device_is_refused(self, tmp_path: Path) -> None:
        """A device (here /dev/null through a symlink) is no targets file: refused, not
        replaced by the service's first write."""
        device = tmp_path / "null"
        device.symlink_to(os.devnull)
        with pytest.raises(ConfigurationError, match="not a regular file") as info:
            check_directories(_with_targets_file(tmp_path, device))
        assert "metrics.targets_file" == info.value.setting

    def test_a_targets_file_that_is_a_fifo_is_refused_unread(self, tmp_path: Path) -> None:
        """A FIFO is refused without being opened: reading it would wait for a writer, and
        start-up with it."""
        fifo = tmp_path / "targets.fifo"
        os.mkfifo(fifo)
        with _releasing_readers(fifo), pytest.raises(ConfigurationError) as info:
            check_directories(_with_targets_file(tmp_path, fifo))
        assert ("metrics.targets_file", True) == (
            info.value.setting,
            "not a regular file" in info.value.reason,
        )

    @pytest.mark.parametrize("text", ["", "[]\n", '[{"targets": ["h:9464"], "labels": {}}]'])
    def test_an_empty_or_listing_targets_file_passes(self, tmp_path: Path, text: str) -> None:
        """An empty file or a JSON list (a file a service wrote before) is taken."""
        targets = tmp_path / "t.json"
        targets.write_text(text, encoding="utf-8")
        settings = _with_targets_file(tmp_path, targets)
        check_directories(settings)

    def test_a_targets_file_needs_a_metrics_port(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without metrics.port there is no listener to list: the file would stay unwritten."""
        monkeypatch.setenv("TASKFORCE_METRICS__TARGETS_FILE", "/tmp/targets.json")
        with pytest.raises(ConfigurationError, match=r"needs metrics\.port") as info:
            load_settings()
        assert "metrics.targets_file" == info.value.setting

    def test_missing_directories_are_made(self, tmp_path: Path) -> None:
        """Directories that do not exist yet are made, and then pass."""
        settings = Settings(state_dir=tmp_path / "a" / "s", workspace_dir=tmp_path / "b" / "w")
        check_directories(settings)
        assert settings.state_dir.is_dir() and settings.workspace_dir.is_dir()

    def test_unknown_key_in_file(self, tmp_path: Path) -> None:
        """A misspelt key in the file is an error naming it, not silently ignored."""
        cfg = tmp_path / "typo.toml"
        cfg.write_text("[metrics]\nenabeld = false\n", encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert "metrics.enabeld" == info.value.setting

    def test_unknown_key_in_file_suggests_the_closest(self, tmp_path: Path) -> None:
        """A misspelt key in the file is answered with the closest known setting."""
        cfg = tmp_path / "typo.toml"
        cfg.write_text("[api]\nmax_body_byte = 10\n", encoding="utf-8")
        with pytest.raises(ConfigurationError, match=r"did you mean api\.max_body_bytes"):
            load_settings(cfg)

    def test_invalid_value_names_variable_and_value(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An invalid value from the environment names the variable and repeats the value."""
        monkeypatch.setenv("TASKFORCE_METRICS__ENABLED", "maybe")
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert "TASKFORCE_METRICS__ENABLED='maybe'" == info.value.source
        assert "TASKFORCE_METRICS__ENABLED='maybe'" in str(info.value)

    @pytest.mark.parametrize(
        ("content", "shown"),
        [
            ("[api]\nmax_body_bytes = 12\n", "12"),
            # a whole section as no table may hold a secret: only its type is named
            ('state = "postgresql://tf:pw-SECRET-7@h/db"\n', "<a str>"),
        ],
    )
    def test_invalid_value_from_file_names_the_file(
        self, tmp_path: Path, content: str, shown: str
    ) -> None:
        """An invalid value from the TOML file names the file and repeats the value."""
        cfg = tmp_path / "t.toml"
        cfg.write_text(content, encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert f"in {cfg}: {shown}" == info.value.source
        assert "SECRET" not in str(info.value)

    @pytest.mark.parametrize(
        ("content", "setting"),
        [
            ("[agent]\nmax_steps = true\n", "agent.max_steps"),
            ("[llm]\ntimeout_seconds = true\n", "llm.timeout_seconds"),
            ("[llm]\nmax_retries = false\n", "llm.max_retries"),
            ("[api]\nmax_connections = false\n", "api.max_connections"),
            ("[metrics]\nport = true\n", "metrics.port"),
        ],
    )
    def test_a_boolean_for_a_number_in_the_file_is_refused(
        self, tmp_path: Path, content: str, setting: str
    ) -> None:
        """TOML's ``true`` and ``false`` are no numbers: they read as 1 and 0 before (a
        ``max_retries = false`` meant no retries without a word)."""
        cfg = tmp_path / "t.toml"
        cfg.write_text(content, encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert setting == info.value.setting
        assert "must be a number, not true or false" in str(info.value)

    def test_a_boolean_for_a_number_in_a_sections_json_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """JSON's ``false`` in a section's variable is refused alike; a boolean setting
        beside it still takes one."""
        monkeypatch.setenv("TASKFORCE_LLM", '{"max_retries": false}')
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert "llm.max_retries" == info.value.setting
        monkeypatch.setenv("TASKFORCE_LLM", '{"max_retries": 0}')
        monkeypatch.setenv("TASKFORCE_METRICS", '{"enabled": false}')
        settings = load_settings()
        assert (0, False) == (settings.llm.max_retries, settings.metrics.enabled)

    @pytest.mark.parametrize(
        ("env", "value", "source"),
        [
            ("TASKFORCE_API__AUTH_TOKEN", " \t ", "TASKFORCE_API__AUTH_TOKEN"),
            ("TASKFORCE_METRICS__AUTH_TOKEN", " \t ", "TASKFORCE_METRICS__AUTH_TOKEN"),
            ("TASKFORCE_STATE__DSN", "mysql://u:pw\t@h/db", "TASKFORCE_STATE__DSN"),
            # bytes that are not UTF-8, as a variable hands them over: these crashed the
            # log set-up with a traceback
            ("TASKFORCE_API__AUTH_TOKEN", "tok\udce9n-pw", "TASKFORCE_API__AUTH_TOKEN"),
            ("TASKFORCE_METRICS__AUTH_TOKEN", "tok\udcffn-pw", "TASKFORCE_METRICS__AUTH_TOKEN"),
            ("TASKFORCE_LLM__API_KEY", "sk-\udcffpw", "TASKFORCE_LLM__API_KEY"),
            ("TASKFORCE_STATE__DSN", "postgresql://u:pw\udcff@h/db", "TASKFORCE_STATE__DSN"),
            # a token no HTTP header can carry: it could never be sent, or match
            ("TASKFORCE_LLM__API_KEY", "sk-pw\n", "TASKFORCE_LLM__API_KEY"),
            ("TASKFORCE_API__AUTH_TOKEN", " tok-pw", "TASKFORCE_API__AUTH_TOKEN"),
            ("TASKFORCE_METRICS__AUTH_TOKEN", "tok\x01pw", "TASKFORCE_METRICS__AUTH_TOKEN"),
            ("TASKFORCE_API__AUTH_TOKEN", "tok\x7fpw", "TASKFORCE_API__AUTH_TOKEN"),
            ("TASKFORCE_LLM__API_KEY", "sk-p\u00e9w-pw", "TASKFORCE_LLM__API_KEY"),
            # a whole section given as no table may hold a secret: only its type is named
            ("TASKFORCE_API", '"apitok-pw"', "TASKFORCE_API=<a str>"),
            ("TASKFORCE_STATE", '["postgresql://tf:pw@h/db"]', "TASKFORCE_STATE=<a list>"),
        ],
    )
    def test_invalid_secret_is_not_repeated(
        self, monkeypatch: pytest.MonkeyPatch, env: str, value: str, source: str
    ) -> None:
        """An invalid secret names its variable but never its value."""
        monkeypatch.setenv(env, value)
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert source == info.value.source
        assert "\\t" not in str(info.value)
        assert "pw" not in str(info.value)

    @pytest.mark.parametrize(
        ("env", "value", "setting", "reason"),
        [
            ("TASKFORCE_LLM__SCRIPTED_LATENCY_MS", "nan", "llm.scripted_latency_ms", "finite"),
            ("TASKFORCE_LLM__TIMEOUT_SECONDS", "inf", "llm.timeout_seconds", "finite"),
            ("TASKFORCE_API__READ_TIMEOUT_SECONDS", "nan", "api.read_timeout_seconds", "finite"),
            ("TASKFORCE_API__READ_TIMEOUT_SECONDS", "0", "api.read_timeout_seconds", "greater"),
            ("TASKFORCE_API__READ_TIMEOUT_SECONDS", "3601", "api.read_timeout_seconds", "less"),
            ("TASKFORCE_API__MAX_HEADER_BYTES", "1023", "api.max_header_bytes", "greater"),
            ("TASKFORCE_API__MAX_HEADER_BYTES", "16777217", "api.max_header_bytes", "less"),
            (
                "TASKFORCE_STATE__HEALTH_TIMEOUT_SECONDS",
                "0",
                "state.health_timeout_seconds",
                "greater",
            ),
            ("TASKFORCE_STATE__POOL_IDLE_SECONDS", "0", "state.pool_idle_seconds", "greater"),
            ("TASKFORCE_STATE__POOL_IDLE_SECONDS", "3601", "state.pool_idle_seconds", "less"),
            ("TASKFORCE_LLM__MODEL", "   ", "llm.model", "must not be blank"),
            ("TASKFORCE_METRICS__HOST", " ", "metrics.host", "must not be blank"),
            ("TASKFORCE_LLM__API_KEY", "", "llm.api_key", "must not be empty"),
            ("TASKFORCE_METRICS__PATH", "/m%20x", "metrics.path", "'%'"),
            # a scraper's URL library removes dot segments: these could never be scraped
            ("TASKFORCE_METRICS__PATH", "/a/../metrics", "metrics.path", "'..' segment"),
            ("TASKFORCE_METRICS__PATH", "/./metrics", "metrics.path", "'..' segment"),
            ("TASKFORCE_METRICS__PATH", "/metrics/..", "metrics.path", "'..' segment"),
            ("TASKFORCE_METRICS__PATH", "//metrics", "metrics.path", "empty"),
            ("TASKFORCE_METRICS__PATH", "/m\x01", "metrics.path", "control characters"),
        ],
    )
    def test_nonsense_is_named_plainly(
        self, monkeypatch: pytest.MonkeyPatch, env: str, value: str, setting: str, reason: str
    ) -> None:
        """NaN, blanks and an unreachable path stop start-up, with the reason in plain words."""
        monkeypatch.setenv(env, value)
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert setting == info.value.setting
        assert reason in info.value.reason
        assert not info.value.reason.startswith("Value error")

    def test_a_token_a_client_can_send_passes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A tab inside, or a character past ASCII (compared as UTF-8), can be sent."""
        monkeypatch.setenv("TASKFORCE_API__AUTH_TOKEN", "t\u00f6k\tsecret")
        token = load_settings().api.auth_token
        assert token is not None and "t\u00f6k\tsecret" == token.get_secret_value()

    @pytest.mark.parametrize("path", ["/metrics..", "/m;x", "/a.b/metrics", "/m\u00e9trics"])
    def test_a_reachable_metrics_path_is_kept(
        self, monkeypatch: pytest.MonkeyPatch, path: str
    ) -> None:
        """Dots inside a segment, ';' and non-ASCII letters can be scraped: kept as given."""
        monkeypatch.setenv("TASKFORCE_METRICS__PATH", path)
        assert path == load_settings().metrics.path

    @pytest.mark.parametrize(
        ("env", "value", "read"),
        [
            ("TASKFORCE_LOGGING__FORMAT", "JSON", ("logging", "format", "json")),
            ("TASKFORCE_LOGGING__LEVEL", " Warning ", ("logging", "level", "warning")),
            ("TASKFORCE_STATE__BACKEND", "FILE", ("state", "backend", "file")),
            ("TASKFORCE_LLM__PROVIDER", "Scripted", ("llm", "provider", "scripted")),
        ],
    )
    def test_choices_are_read_in_any_case(
        self, monkeypatch: pytest.MonkeyPatch, env: str, value: str, read: tuple[str, str, str]
    ) -> None:
        """A choice is read whatever its case and the spaces around it."""
        monkeypatch.setenv(env, value)
        section, name, expected = read
        assert expected == getattr(getattr(load_settings(), section), name)

    def test_categories_are_read_in_any_case(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """logging.categories is a list of choices: read in any case, like the others."""
        cfg = tmp_path / "c.toml"
        cfg.write_text('[logging]\ncategories = ["Mission", " SECURITY "]\n', encoding="utf-8")
        assert ("mission", "security") == load_settings(cfg).logging.categories
        monkeypatch.setenv("TASKFORCE_LOGGING__CATEGORIES", "LIFECYCLE, Performance")
        assert ("lifecycle", "performance") == load_settings().logging.categories

    def test_an_unknown_category_names_its_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A category that is none in any case stops start-up naming the variable."""
        monkeypatch.setenv("TASKFORCE_LOGGING__CATEGORIES", "LIFECYCLE,Lifecycles")
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert "TASKFORCE_LOGGING__CATEGORIES='LIFECYCLE,Lifecycles'" == info.value.source
        assert info.value.reason.startswith("unknown categories ['lifecycles']")

    def test_an_unknown_key_names_where_it_came_from(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unknown key in the file or in a section's JSON names the file or the variable."""
        cfg = tmp_path / "k.toml"
        cfg.write_text("[metrics]\nenabeld = true\n", encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert (f"in {cfg}", "unknown key; did you mean metrics.enabled?") == (
            info.value.source,
            info.value.reason,
        )
        monkeypatch.setenv("TASKFORCE_LLM", '{"modle": "m"}')
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert ("TASKFORCE_LLM", "unknown key; did you mean llm.model?") == (
            info.value.source,
            info.value.reason,
        )


class TestUnknownVariables:
    @pytest.mark.parametrize(
        ("variable", "closest"),
        [
            ("TASKFORCE_METRICS_ENABLED", "TASKFORCE_METRICS__ENABLED (metrics.enabled)"),
            ("TASKFORCE_API__MAX_BODY", "TASKFORCE_API__MAX_BODY_BYTES (api.max_body_bytes)"),
            ("TASKFORCE_STATEDIR", "TASKFORCE_STATE_DIR (state_dir)"),
            ("taskforce_llm__modle", "TASKFORCE_LLM__MODEL (llm.model)"),
        ],
    )
    def test_unknown_variable_stops_with_the_closest_setting(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, closest: str
    ) -> None:
        """A TASKFORCE_* variable that names no setting is refused with the closest one."""
        monkeypatch.setenv(variable, "false")
        with pytest.raises(UnknownSettingError) as info:
            load_settings()
        assert (variable, closest) == (info.value.variable, info.value.closest)
        assert variable in str(info.value)
        assert closest in str(info.value)

    @pytest.mark.parametrize(
        "variable", ["TASKFORCE_XYZZY", "TASKFORCE_FOO_BAR", "TASKFORCE_METRICS__XYZZY"]
    )
    def test_an_unrelated_variable_gets_no_suggestion(
        self, monkeypatch: pytest.MonkeyPatch, variable: str
    ) -> None:
        """A variable like no setting (its section alone is no likeness) is refused, unsuggested."""
        monkeypatch.setenv(variable, "1")
        with pytest.raises(UnknownSettingError) as info:
            load_settings()
        assert (variable, None) == (info.value.variable, info.value.closest)
        assert f"unknown variable {variable}: it names no setting" == str(info.value)

    @pytest.mark.parametrize(
        ("key", "reason"),
        [
            ("enabeld", "unknown key; did you mean metrics.enabled?"),
            ("xyzzy", "unknown key"),
            ("x", "unknown key"),
        ],
    )
    def test_an_unknown_key_gets_a_suggestion_only_when_close(
        self, tmp_path: Path, key: str, reason: str
    ) -> None:
        """An unknown key in the file is suggested a setting only when its name is close."""
        cfg = tmp_path / "k.toml"
        cfg.write_text(f"[metrics]\n{key} = true\n", encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert (f"metrics.{key}", reason) == (info.value.setting, info.value.reason)

    @pytest.mark.parametrize(
        ("variable", "closest"),
        [
            ("TASKFORCE_LLM__PATH", None),
            ("TASKFORCE_METRICS__PAHT", "TASKFORCE_METRICS__PATH (metrics.path)"),
            ("TASKFORCE_METRIC__PATH", "TASKFORCE_METRICS__PATH (metrics.path)"),
            ("TASKFORCE_METRIC__XYZZY", "TASKFORCE_METRICS__* (metrics.*)"),
            ("TASKFORCE_METRIC", "TASKFORCE_METRICS (metrics)"),
        ],
    )
    def test_a_variable_is_suggested_its_own_section_or_the_closest_section(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, closest: str | None
    ) -> None:
        """A real section's variable is suggested only that section's keys; an unknown
        section is suggested the closest section, with the key when the key is there."""
        monkeypatch.setenv(variable, "1")
        with pytest.raises(UnknownSettingError) as info:
            load_settings()
        assert (variable, closest) == (info.value.variable, info.value.closest)

    @pytest.mark.parametrize(
        ("content", "setting", "reason"),
        [
            ('[llm]\npath = "/m"\n', "llm.path", "unknown key"),
            ('[metrics]\npaht = "/m"\n', "metrics.paht", "unknown key; did you mean metrics.path?"),
            ('[metric]\npath = "/m"\n', "metric", "unknown section; did you mean metrics?"),
            ("[metric]\nxyzzy = 1\n", "metric", "unknown section; did you mean metrics?"),
            ("[xyzzy]\npath = 1\n", "xyzzy", "unknown section"),
        ],
    )
    def test_a_file_key_is_suggested_its_own_section_or_the_section_is_named(
        self, tmp_path: Path, content: str, setting: str, reason: str
    ) -> None:
        """In the file, a real section's unknown key is suggested only that section's keys,
        and a table under no section's name is suggested the closest section's name."""
        cfg = tmp_path / "k.toml"
        cfg.write_text(content, encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert (setting, reason) == (info.value.setting, info.value.reason)

    def test_a_sections_json_is_suggested_only_its_own_keys(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unknown key in a section's JSON variable is not given another section's key."""
        monkeypatch.setenv("TASKFORCE_LLM", '{"path": "/m"}')
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert ("llm.path", "TASKFORCE_LLM", "unknown key") == (
            info.value.setting,
            info.value.source,
            info.value.reason,
        )

    @pytest.mark.parametrize(
        ("variable", "value"),
        [("TASKFORCE_API__DOCS_ENABLED", "false"), ("TASKFORCE_LLM", '{"model": "m"}')],
    )
    def test_known_variables_pass(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
    ) -> None:
        """Every documented variable, and a whole section as JSON, is accepted."""
        monkeypatch.setenv(variable, value)
        load_settings()

    # What Kubernetes puts in a pod's environment for the Services `taskforce` (port
    # `http` 80 -> 8000) and `taskforce-metrics` of its namespace (service links).
    SERVICE_LINKS = {
        "TASKFORCE_SERVICE_HOST": "10.96.12.7",
        "TASKFORCE_SERVICE_PORT": "80",
        "TASKFORCE_SERVICE_PORT_HTTP": "80",
        "TASKFORCE_PORT": "tcp://10.96.12.7:80",
        "TASKFORCE_PORT_80_TCP": "tcp://10.96.12.7:80",
        "TASKFORCE_PORT_80_TCP_PROTO": "tcp",
        "TASKFORCE_PORT_80_TCP_PORT": "80",
        "TASKFORCE_PORT_80_TCP_ADDR": "10.96.12.7",
        "TASKFORCE_METRICS_SERVICE_HOST": "fd00::1",
        "TASKFORCE_METRICS_SERVICE_PORT": "9100",
        "TASKFORCE_METRICS_PORT": "tcp://[fd00::1]:9100",
    }

    def test_kubernetes_service_links_pass(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A pod's service-link variables are not settings, and do not stop start-up."""
        for variable, value in self.SERVICE_LINKS.items():
            monkeypatch.setenv(variable, value)
        assert load_settings().metrics.port is None

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("TASKFORCE_METRICS_PORT", "9100"),  # a typo of TASKFORCE_METRICS__PORT
            ("TASKFORCE_PORT", "8000"),
            ("TASKFORCE_SERVICE_HOST", "localhost"),
            ("TASKFORCE_SERVICE_PORT", "http"),
            ("taskforce_port", "tcp://10.0.0.1:80"),
            ("TASKFORCE_METRICS__SERVICE_HOST", "10.0.0.1"),  # no Service name has "__"
            ("TASKFORCE_SERVICE_PORT", "\u0668\u0660"),  # Arabic-Indic digits: no port
            ("TASKFORCE_SERVICE_PORT", "99999"),
            ("TASKFORCE_PORT_8000_TCP_PORT", "notaport"),
            ("TASKFORCE_PORT_8000_TCP_ADDR", "notanip"),
            ("TASKFORCE_PORT_8000_TCP_PROTO", "http"),
            ("TASKFORCE_PORT_8000_TCP", "8000"),
        ],
    )
    def test_lookalikes_of_service_links_are_refused(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
    ) -> None:
        """Only a service link's name with a service link's value passes: typos still stop."""
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigurationError):
            load_settings()


class TestSecrets:
    @pytest.mark.parametrize(
        ("dsn", "hidden"),
        [
            ("postgresql://u:p%40ss@h/db", ["p%40ss", "p@ss"]),
            ("postgresql://u@h/db?password=qs-pass", ["qs-pass"]),
            # unencoded reserved characters: the password as written, and its pieces
            ("postgresql://u:Top/Secret9@h:5432/db", ["Top/Secret9", "Secret9"]),
            ("postgresql://u:Pa55?W0rdX@h/db", ["Pa55?W0rdX", "Pa55", "W0rdX"]),
        ],
    )
    def test_dsn_secrets_cover_its_password_however_written(
        self, dsn: str, hidden: list[str]
    ) -> None:
        """Every form a parser's message could quote the password in is redacted."""
        secrets = dsn_secrets(dsn)
        assert dsn == secrets[0]
        assert set(hidden) <= set(secrets)
        assert "h" not in secrets and "u" not in secrets  # host and user stay readable

    def test_secret_values_lists_every_set_secret(self) -> None:
        """secret_values() returns the value of every secret that is set (for redaction)."""
        s = Settings(api={"auth_token": "a"}, metrics={"auth_token": "m"}, llm={"api_key": "k"})
        assert ["k", "m", "a"] == s.secret_values()


class TestPrices:
    def test_no_prices_by_default(self) -> None:
        """Without llm.prices no model has a price."""
        assert {} == Settings().llm.prices

    def test_json_in_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKFORCE_LLM__PRICES holds JSON: model -> USD per million input/output tokens."""
        monkeypatch.setenv("TASKFORCE_LLM__PRICES", '{"gpt-4o": {"input": 2.5, "output": 10}}')

        price = load_settings().llm.prices["gpt-4o"]

        assert (2.5, 10.0) == (price.input, price.output)

    def test_toml_table(self, tmp_path: Path) -> None:
        """A [llm.prices] table in the file sets prices per model."""
        config = tmp_path / "taskforce.toml"
        config.write_text('[llm.prices]\n"gpt-4o-mini" = { input = 0.15, output = 0.6 }\n')

        price = load_settings(config).llm.prices["gpt-4o-mini"]

        assert (0.15, 0.6) == (price.input, price.output)

    @pytest.mark.parametrize(
        ("value", "setting"),
        [
            ("not json", "llm.prices"),
            ("[1, 2]", "llm.prices"),
            ('{"gpt-4o": {"input": -1, "output": 1}}', "llm.prices.gpt-4o.input"),
            ('{"gpt-4o": {"input": 1}}', "llm.prices.gpt-4o.output"),
            ('{"gpt-4o": {"input": 1, "output": "NaN"}}', "llm.prices.gpt-4o.output"),
            ('{"gpt-4o": {"input": 1, "output": 1, "cached": 1}}', "llm.prices.gpt-4o.cached"),
            ('{" ": {"input": 1, "output": 1}}', "llm.prices"),
        ],
    )
    def test_bad_prices_stop_start_up(
        self, monkeypatch: pytest.MonkeyPatch, value: str, setting: str
    ) -> None:
        """A bad price stops start-up with an error naming the setting."""
        monkeypatch.setenv("TASKFORCE_LLM__PRICES", value)

        with pytest.raises(ConfigurationError) as info:
            load_settings()

        assert setting == info.value.setting

    def test_a_model_name_loses_the_spaces_around_it(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """As llm.model's, a priced model's name is read without the spaces around it, so
        the price applies to the model the provider reports; two names that differ only
        by those spaces price one model twice, which stops start-up."""
        monkeypatch.setenv("TASKFORCE_LLM__PRICES", '{" gpt-4o ": {"input": 2.5, "output": 10}}')
        assert ["gpt-4o"] == list(load_settings().llm.prices)

        config = tmp_path / "taskforce.toml"
        config.write_text(
            '[llm.prices]\n"m" = { input = 1, output = 1 }\n" m" = { input = 2, output = 2 }\n'
        )
        monkeypatch.delenv("TASKFORCE_LLM__PRICES")
        with pytest.raises(ConfigurationError) as info:
            load_settings(config)
        assert ("llm.prices", "model 'm' is priced twice") == (
            info.value.setting,
            info.value.reason.split(" (")[0],
        )

    @pytest.mark.parametrize(
        "value",
        [
            '{"gpt-4o": {"input": 2.5, "output": 10}, "gpt-4o": {"input": 5, "output": 20}}',
            '{"gpt-4o": {"input": 2.5, "output": 10, "input": 5}}',
        ],
        ids=["model", "price"],
    )
    def test_a_model_or_price_given_twice_stops_start_up(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        """A model (or a price of one) given twice in the JSON stops start-up: which counts?"""
        monkeypatch.setenv("TASKFORCE_LLM__PRICES", value)

        with pytest.raises(ConfigurationError) as info:
            load_settings()

        assert "llm.prices" == info.value.setting
        assert "duplicate key" in info.value.reason

    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            ('{"gpt-4o": {"input": -1, "output": 1}}', "llm.prices.gpt-4o.input=-1"),
            ('{"gpt-4o": {"input": 1, "output": 1, "cached": 3}}', "llm.prices.gpt-4o.cached=3"),
        ],
    )
    def test_bad_price_names_the_variable_and_value(
        self, monkeypatch: pytest.MonkeyPatch, value: str, shown: str
    ) -> None:
        """A bad key inside TASKFORCE_LLM__PRICES names that variable and the bad value."""
        monkeypatch.setenv("TASKFORCE_LLM__PRICES", value)

        with pytest.raises(ConfigurationError) as info:
            load_settings()

        assert f"TASKFORCE_LLM__PRICES, {shown}" == info.value.source

    @pytest.mark.parametrize(
        ("variable", "value", "source"),
        [
            (
                "TASKFORCE_LLM__PRICES",
                '{"gpt-4o": {"input": 2.5}}',
                "TASKFORCE_LLM__PRICES, llm.prices.gpt-4o.output",
            ),
            (
                "TASKFORCE_LLM",
                '{"prices": {"gpt-4o": {"input": 2.5}}}',
                "TASKFORCE_LLM, llm.prices.gpt-4o.output",
            ),
        ],
    )
    def test_a_missing_price_names_the_model_and_the_key(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, source: str
    ) -> None:
        """A model without its output price is named with that key, not shown as its table."""
        monkeypatch.setenv(variable, value)

        with pytest.raises(ConfigurationError) as info:
            load_settings()

        assert (
            "llm.prices.gpt-4o.output",
            source,
            "model 'gpt-4o' has no 'output' price (USD per million output tokens)",
        ) == (info.value.setting, info.value.source, info.value.reason)
        assert "{" not in str(info.value)

    def test_a_missing_price_in_the_file_names_the_file(self, tmp_path: Path) -> None:
        """A [llm.prices] entry without its input price names the file, the model and the key."""
        config = tmp_path / "p.toml"
        config.write_text('[llm.prices]\n"gpt-4o" = { output = 10 }\n', encoding="utf-8")

        with pytest.raises(ConfigurationError) as info:
            load_settings(config)

        assert (
            f"invalid setting 'llm.prices.gpt-4o.input' (in {config}): "
            "model 'gpt-4o' has no 'input' price (USD per million input tokens)"
        ) == str(info.value)


class TestRetrySettings:
    def test_defaults(self) -> None:
        """Retry-After is capped at 30 s; scripted streams have no delays by default."""
        llm = Settings().llm
        assert (30.0, 0.0, 0.0) == (
            llm.retry_after_max_seconds,
            llm.scripted_first_chunk_delay_ms,
            llm.scripted_chunk_delay_ms,
        )

    @pytest.mark.parametrize(
        "name",
        ["RETRY_AFTER_MAX_SECONDS", "SCRIPTED_FIRST_CHUNK_DELAY_MS", "SCRIPTED_CHUNK_DELAY_MS"],
    )
    def test_negative_is_refused(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        """A negative wait stops start-up naming the setting."""
        monkeypatch.setenv(f"TASKFORCE_LLM__{name}", "-1")

        with pytest.raises(ConfigurationError) as info:
            load_settings()

        assert f"llm.{name.lower()}" == info.value.setting


class TestIgnoredSettings:
    def test_settings_the_others_leave_without_effect_are_named(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Given settings that do nothing under the others are listed with the reason."""
        from taskforce.config import ignored_settings

        monkeypatch.setenv("TASKFORCE_METRICS__ENABLED", "false")
        monkeypatch.setenv("TASKFORCE_METRICS__PORT", "9464")
        monkeypatch.setenv("TASKFORCE_STATE__DSN", "postgresql://u:pw@h/db")
        monkeypatch.setenv("TASKFORCE_LLM__API_KEY", "sk-unused-by-the-script")
        monkeypatch.setenv("TASKFORCE_STATE__SWEEP_INTERVAL_SECONDS", "60")
        assert [
            ("metrics.port", "metrics.enabled is false"),
            ("state.dsn", "state.backend is 'file'"),
            ("state.sweep_interval_seconds", "state.session_ttl_seconds is 0"),
            ("llm.api_key", "llm.provider is 'scripted'"),
        ] == ignored_settings(load_settings())

    def test_defaults_and_settings_in_use_are_not(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Nothing is named for defaults (an explicit null included), or for settings the
        others make use of."""
        from taskforce.config import ignored_settings

        assert [] == ignored_settings(load_settings())
        monkeypatch.setenv("TASKFORCE_METRICS", '{"enabled": false, "port": null}')
        assert [] == ignored_settings(load_settings())
        monkeypatch.delenv("TASKFORCE_METRICS")
        monkeypatch.setenv("TASKFORCE_METRICS__PORT", "9464")
        monkeypatch.setenv("TASKFORCE_STATE__BACKEND", "postgres")
        monkeypatch.setenv("TASKFORCE_STATE__DSN", "postgresql://u:pw@h/db")
        monkeypatch.setenv("TASKFORCE_STATE__SESSION_TTL_SECONDS", "86400")
        monkeypatch.setenv("TASKFORCE_STATE__SWEEP_INTERVAL_SECONDS", "60")
        assert [] == ignored_settings(load_settings())

    def test_every_postgres_only_setting_is_named_under_the_file_store(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each setting only the PostgreSQL store reads is named when the file store runs,
        as docs/logging.md's config.ignored lists them (pool_idle_seconds was not)."""
        from taskforce.config import ignored_settings

        for name, value in (
            ("DSN", "postgresql://u:pw@h/db"),
            ("POOL_SIZE", "3"),
            ("TIMEOUT_SECONDS", "4"),
            ("POOL_IDLE_SECONDS", "5"),
        ):
            monkeypatch.setenv(f"TASKFORCE_STATE__{name}", value)
        assert [
            (f"state.{name}", "state.backend is 'file'")
            for name in ("dsn", "pool_size", "timeout_seconds", "pool_idle_seconds")
        ] == ignored_settings(load_settings())

    def test_prices_are_named_with_metrics_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """llm.prices feed only the cost counter, so with metrics off they are named; an
        empty table (the default) is not."""
        from taskforce.config import ignored_settings

        monkeypatch.setenv("TASKFORCE_METRICS__ENABLED", "false")
        monkeypatch.setenv("TASKFORCE_LLM__PRICES", "{}")
        assert [] == ignored_settings(load_settings())
        monkeypatch.setenv("TASKFORCE_LLM__PRICES", '{"m": {"input": 1, "output": 2}}')
        assert [("llm.prices", "metrics.enabled is false")] == ignored_settings(load_settings())


class TestWhereAnErrorCameFrom:
    def test_a_missing_base_url_names_its_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Nothing given: the variable to set is named, not "None"."""
        monkeypatch.setenv("TASKFORCE_LLM__PROVIDER", "openai")
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert "TASKFORCE_LLM__BASE_URL" == info.value.source

    def test_a_password_in_a_url_is_not_repeated(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A base URL with user and password, refused, is shown without them."""
        monkeypatch.setenv("TASKFORCE_LLM__BASE_URL", "http://u:hunter2pass@h:99999/v1")
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert "hunter2pass" not in str(info.value)
        assert "http://***@h:99999/v1" in str(info.value)

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            # a key some gateways take in the URL
            ("ftp://h/v1?api-key=LEAKCHECK-key-9&x=1", "'ftp://h/v1?api-key=***&x=1'"),
            # a password past the 80 characters shown: the cut leaves none of it
            ("http://" + "u" * 75 + ":LEAKCHECK-pw-10@h/v1 x", "'http://***@h/v1 x'"),
            # a password holding a space, '/' or '@', not percent-encoded
            ("http://u:LEAKCHECK pw@h/v1", "'http://***@h/v1'"),
            ("http://u:LEAKCHECK/pw@h/v1", "'http://***@h/v1'"),
            ("http://u:pw@LEAKCHECK@h:99999/v1", "'http://***@h:99999/v1'"),
            ("ftp://u:LEAKCHECK\tpw@h/v1", "'ftp://***@h/v1'"),
        ],
    )
    def test_a_key_in_a_url_is_not_repeated(
        self, url: str, shown: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A refused base URL holding a credential is shown without it, however long."""
        monkeypatch.setenv("TASKFORCE_LLM__BASE_URL", url)
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert "LEAKCHECK" not in str(info.value)
        assert f"TASKFORCE_LLM__BASE_URL={shown}" == info.value.source

    def test_a_password_in_a_url_that_is_no_text_is_not_repeated(self, tmp_path: Path) -> None:
        """A URL in a list (a wrong type) is shown without its password, however long."""
        url = "http://u:LEAKCHECK-pw-12" + "p" * 80 + "@h/v1"
        config = tmp_path / "app.toml"
        config.write_text(f'[llm]\nbase_url = ["{url}"]\n', encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_settings(config)
        assert "LEAKCHECK" not in str(info.value)
        assert "***@h/v1" in str(info.value)

    @pytest.mark.parametrize(
        "url",
        [
            "http://u:LEAKCHECK-pw-11@h\x07x/v1",  # a control character
            "http://h/v1\x00",
            "http://exa\u00admple.com/v1",  # a soft hyphen: no IDNA host name
            "http://[::1]x/v1",
        ],
    )
    def test_a_url_the_http_client_refuses_names_its_setting(
        self, url: str, tmp_path: Path
    ) -> None:
        """A base URL that passes for one but that the client cannot send to stops start-up
        naming the setting (before, the provider's build raised InvalidURL, a traceback)."""
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f"[llm]\nprovider = 'openai'\nbase_url = {json.dumps(url)}\n", encoding="utf-8"
        )
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert "llm.base_url" == info.value.setting
        assert "LEAKCHECK" not in str(info.value)

    @pytest.mark.parametrize("url", ["http://h:abc/v1", "http://h:8o8o/v1", "http://[::1/v1"])
    def test_a_port_that_is_no_number_is_named_as_such(
        self, monkeypatch: pytest.MonkeyPatch, url: str
    ) -> None:
        """A port that is no number (a typo) is refused as a port, not as "a control
        character, or a host name that cannot be encoded", which the URL does not hold."""
        monkeypatch.setenv("TASKFORCE_LLM__PROVIDER", "openai")
        monkeypatch.setenv("TASKFORCE_LLM__BASE_URL", url)
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert "llm.base_url" == info.value.setting
        assert "a port from 1 to 65535" in info.value.reason

    def test_a_host_name_idna_encodes_is_a_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A host name beyond ASCII that IDNA encodes is kept as given."""
        monkeypatch.setenv("TASKFORCE_LLM__BASE_URL", "http://bücher.example:8000/v1")
        assert "http://bücher.example:8000/v1" == load_settings().llm.base_url

    def test_a_key_only_the_file_holds_is_blamed_on_the_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A section variable that does not hold the bad key is not named; the file is."""
        cfg = tmp_path / "b.toml"
        cfg.write_text("[metrics]\nenabeld = true\n", encoding="utf-8")
        monkeypatch.setenv("TASKFORCE_METRICS", '{"enabled": true}')
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert f"in {cfg}" == info.value.source

    @pytest.mark.parametrize(
        ("given", "setting"),
        [
            ({"TASKFORCE_LLM__MODEL": "a", "taskforce_llm__model": "b"}, "llm.model"),
            ({"TASKFORCE_STATE_DIR": "a", "Taskforce_State_Dir": "b"}, "state_dir"),
            ({"TASKFORCE_LLM": '{"model": "a"}', "taskforce_llm": '{"model": "b"}'}, "llm"),
        ],
    )
    def test_a_setting_given_by_two_variables_in_different_cases_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, given: dict[str, str], setting: str
    ) -> None:
        """Names are read in any case: two variables naming one setting are both named."""
        for variable, value in given.items():
            monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigurationError, match="given twice") as info:
            load_settings()
        assert setting == info.value.setting
        assert all(variable in str(info.value) for variable in given)

    def test_a_lowercase_config_variable_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """taskforce_config would be accepted and never read: it is refused instead."""
        monkeypatch.setenv("taskforce_config", "/nonexistent.toml")
        with pytest.raises(ConfigurationError, match="in capitals"):
            load_settings()

    @pytest.mark.parametrize(
        ("value", "shown"),
        [("http://h:0/v1", "base_url"), ("  gpt-4o  ", None)],
    )
    def test_port_zero_is_refused_and_a_model_is_stripped(
        self, monkeypatch: pytest.MonkeyPatch, value: str, shown: str | None
    ) -> None:
        """Port 0 names no server; spaces around a model's name are dropped."""
        if shown is None:
            monkeypatch.setenv("TASKFORCE_LLM__MODEL", value)
            assert "gpt-4o" == load_settings().llm.model
            return
        monkeypatch.setenv("TASKFORCE_LLM__BASE_URL", value)
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert "llm.base_url" == info.value.setting


class TestOneLLMCredential:
    @staticmethod
    def _load(monkeypatch: pytest.MonkeyPatch, url: str, key: str | None) -> Settings:
        monkeypatch.setenv("TASKFORCE_LLM__PROVIDER", "openai")
        monkeypatch.setenv("TASKFORCE_LLM__BASE_URL", url)
        if key is not None:
            monkeypatch.setenv("TASKFORCE_LLM__API_KEY", key)
        return load_settings()

    def test_a_key_and_a_url_with_credentials_stop_start_up(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Both given, the URL's user and password would be sent instead of the key."""
        url = "https://u:LEAKCHECK-pw@proxy.local/v1"
        with pytest.raises(ConfigurationError) as info:
            self._load(monkeypatch, url, "sk-LEAKCHECK-key")
        assert "TASKFORCE_LLM__API_KEY" == info.value.source
        assert "Basic auth" in str(info.value)
        assert "LEAKCHECK" not in str(info.value)

    @pytest.mark.parametrize(
        ("url", "key"),
        [
            ("https://u:pw@proxy.local/v1", None),  # a proxy's Basic auth alone
            ("https://proxy.local/v1", "sk-key"),  # the key alone
        ],
    )
    def test_either_alone_is_taken(
        self, monkeypatch: pytest.MonkeyPatch, url: str, key: str | None
    ) -> None:
        """One credential is fine, as the HTTP client sends it."""
        assert url == self._load(monkeypatch, url, key).llm.base_url
