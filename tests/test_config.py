"""Settings: defaults, precedence (env > file > defaults) and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskforce.config import Settings, load_settings
from taskforce.core.interfaces.log import LOG_CATEGORIES
from taskforce.errors import ConfigurationError


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
        assert "auto" == s.logging.format
        assert "info" == s.logging.level
        assert LOG_CATEGORIES == s.logging.categories


class TestPrecedence:
    def test_env_nested_delimiter(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKFORCE_SECTION__KEY sets a nested setting."""
        monkeypatch.setenv("TASKFORCE_METRICS__ENABLED", "false")
        monkeypatch.setenv("TASKFORCE_LLM__SCRIPTED_LATENCY_MS", "20")
        s = load_settings()
        assert s.metrics.enabled is False
        assert 20 == s.llm.scripted_latency_ms

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
            ("TASKFORCE_METRICS__AUTH_TOKEN", "  ", "metrics.auth_token"),
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

    def test_missing_config_file(self, tmp_path: Path) -> None:
        """A config file that does not exist is reported, not ignored."""
        with pytest.raises(ConfigurationError, match="does not exist"):
            load_settings(tmp_path / "nope.toml")

    def test_malformed_config_file(self, tmp_path: Path) -> None:
        """A TOML syntax error is reported as a configuration error."""
        cfg = tmp_path / "bad.toml"
        cfg.write_text("[metrics\n", encoding="utf-8")
        with pytest.raises(ConfigurationError):
            load_settings(cfg)

    def test_unknown_key_in_file(self, tmp_path: Path) -> None:
        """A misspelt key in the file is an error naming it, not silently ignored."""
        cfg = tmp_path / "typo.toml"
        cfg.write_text("[metrics]\nenabeld = false\n", encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_settings(cfg)
        assert "metrics.enabeld" == info.value.setting
