"""The ``state`` settings: backend, DSN (a secret), pool, limits; ``state_dir`` unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskforce.config import load_settings, split_connect_timeout
from taskforce.errors import ConfigurationError

_DSN = "postgresql://app:pa55-word@db.internal:5432/taskforce"


class TestStateSettings:
    def test_defaults(self) -> None:
        """The file backend with the documented limits is the default."""
        state = load_settings().state
        assert ("file", None, 10, 500, 4 * 1024 * 1024, 4) == (
            state.backend,
            state.dsn,
            state.pool_size,
            state.max_history,
            state.max_bytes,
            state.threads,
        )

    def test_sessions_are_kept_for_good_by_default(self) -> None:
        """No time to live unless one is set (0); a sweep every 5 minutes once it is."""
        state = load_settings().state
        assert (0, 300) == (state.session_ttl_seconds, state.sweep_interval_seconds)

    def test_a_ttl_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TASKFORCE_STATE__SESSION_TTL_SECONDS and ..._SWEEP_INTERVAL_SECONDS set them."""
        monkeypatch.setenv("TASKFORCE_STATE__SESSION_TTL_SECONDS", "604800")
        monkeypatch.setenv("TASKFORCE_STATE__SWEEP_INTERVAL_SECONDS", "60")
        state = load_settings().state
        assert (604800, 60) == (state.session_ttl_seconds, state.sweep_interval_seconds)

    def test_a_ttl_below_a_minute_says_what_it_may_be(self) -> None:
        """1 to 59 seconds is refused with the values it may take; 0 and 60 pass."""
        with pytest.raises(ConfigurationError) as info:
            load_settings(state={"session_ttl_seconds": 30})
        assert "is 0 (sessions kept for good) or at least 60 seconds" in str(info.value)
        assert [0, 60] == [
            load_settings(state={"session_ttl_seconds": ttl}).state.session_ttl_seconds
            for ttl in (0, 60)
        ]

    def test_a_bad_ttl_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A negative TTL stops start-up naming the setting and its variable."""
        monkeypatch.setenv("TASKFORCE_STATE__SESSION_TTL_SECONDS", "-5")
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert ("state.session_ttl_seconds", "TASKFORCE_STATE__SESSION_TTL_SECONDS='-5'") == (
            info.value.setting,
            info.value.source,
        )

    def test_from_environment(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """TASKFORCE_STATE__* set the section; TASKFORCE_STATE_DIR still sets state_dir."""
        monkeypatch.setenv("TASKFORCE_STATE__BACKEND", "postgres")
        monkeypatch.setenv("TASKFORCE_STATE__DSN", _DSN)
        monkeypatch.setenv("TASKFORCE_STATE__POOL_SIZE", "3")
        monkeypatch.setenv("TASKFORCE_STATE__MAX_HISTORY", "7")
        monkeypatch.setenv("TASKFORCE_STATE_DIR", str(tmp_path))
        settings = load_settings()
        assert ("postgres", _DSN, 3, 7, tmp_path) == (
            settings.state.backend,
            settings.state.dsn.get_secret_value() if settings.state.dsn else None,
            settings.state.pool_size,
            settings.state.max_history,
            settings.state_dir,
        )

    def test_dsn_is_secret_in_repr(self) -> None:
        """The DSN does not show in the settings' repr."""
        settings = load_settings(state={"backend": "postgres", "dsn": _DSN})
        assert "pa55-word" not in repr(settings)
        assert "pa55-word" not in str(settings.model_dump())

    def test_postgres_needs_dsn(self) -> None:
        """backend=postgres without a DSN names state.dsn."""
        with pytest.raises(ConfigurationError) as info:
            load_settings(state={"backend": "postgres"})
        assert "state.dsn" == info.value.setting
        assert "TASKFORCE_STATE__DSN" == info.value.source  # the variable to set

    def test_postgres_without_its_driver_names_where_it_was_chosen(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the driver (the extra not installed), the error names the variable
        and the value that chose the backend, as any invalid setting's does."""
        import sys

        monkeypatch.setitem(sys.modules, "asyncpg", None)  # find_spec: not installed
        monkeypatch.setenv("TASKFORCE_STATE__BACKEND", "postgres")
        with pytest.raises(ConfigurationError) as info:
            load_settings(state={"dsn": _DSN})
        where = (info.value.setting, info.value.source)
        assert ("state.backend", "TASKFORCE_STATE__BACKEND='postgres'") == where
        assert "needs the driver: pip install 'pytaskforce[postgres]'" == info.value.reason

    @pytest.mark.parametrize(
        "dsn", ["mysql://u:hunter2@h/d", "host=h user=u password=hunter2 dbname=d"]
    )
    def test_bad_dsn_is_named_not_shown(self, dsn: str) -> None:
        """A DSN of another scheme, or libpq's key=value form, names state.dsn and does not
        echo the value."""
        with pytest.raises(ConfigurationError) as info:
            load_settings(state={"backend": "postgres", "dsn": dsn})
        assert "state.dsn" == info.value.setting
        assert "hunter2" not in str(info.value)

    @pytest.mark.parametrize("mode", ["bogus", "REQUIRE", "verify full"])
    def test_an_unknown_sslmode_is_named(self, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
        """A DSN's sslmode that libpq does not know stops start-up naming it and the variable."""
        monkeypatch.setenv("TASKFORCE_STATE__BACKEND", "postgres")
        monkeypatch.setenv("TASKFORCE_STATE__DSN", f"{_DSN}?connect_timeout=5&sslmode={mode}")
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert (
            "invalid setting 'state.dsn' (TASKFORCE_STATE__DSN): its sslmode must be one of "
            "disable, allow, prefer, require, verify-ca, verify-full"
        ) == str(info.value)

    @pytest.mark.parametrize("value", ["", "ten", "1.5", "1e3", "1_0", "99999999999"])
    def test_a_connect_timeout_libpq_refuses_is_named_not_shown(self, value: str) -> None:
        """A connect_timeout that is no whole number of seconds stops start-up naming
        state.dsn, quoting neither the value nor the DSN."""
        dsn = f"{_DSN}?connect_timeout={value}&sslmode=require"
        with pytest.raises(ConfigurationError) as info:
            load_settings(state={"backend": "postgres", "dsn": dsn})
        assert (
            "invalid setting 'state.dsn' (TASKFORCE_STATE__DSN): its connect_timeout must be a "
            "whole number of seconds (0: no limit)"
        ) == str(info.value)

    @pytest.mark.parametrize("value", ["10", "0", "-1", " 7 ", "+3"])
    def test_a_connect_timeout_libpq_takes_is_accepted(self, value: str) -> None:
        """Whole seconds, as libpq reads them (0 or less: no limit), pass as written."""
        dsn = f"{_DSN}?connect_timeout={value}"
        settings = load_settings(state={"backend": "postgres", "dsn": dsn})
        assert settings.state.dsn is not None
        assert dsn == settings.state.dsn.get_secret_value()

    @pytest.mark.parametrize(
        "mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full", "verify_ca"]
    )
    def test_every_libpq_sslmode_is_accepted(self, mode: str) -> None:
        """Each sslmode libpq knows passes as written (and as the driver also reads it)."""
        dsn = f"{_DSN}?sslmode={mode}"
        settings = load_settings(state={"backend": "postgres", "dsn": dsn})
        assert settings.state.dsn is not None
        assert dsn == settings.state.dsn.get_secret_value()

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("max_history", 0),
            ("max_bytes", 10),
            ("pool_size", 0),
            ("backend", "redis"),
            ("threads", 0),
            ("threads", 257),
            ("session_ttl_seconds", -1),
            ("session_ttl_seconds", 1),
            ("session_ttl_seconds", 59),
            ("session_ttl_seconds", 10 * 365 * 86400 + 1),
            ("session_ttl_seconds", 1.5),
            ("session_ttl_seconds", "a day"),
            ("sweep_interval_seconds", 0),
            ("sweep_interval_seconds", 86401),
        ],
    )
    def test_bad_values_are_named(self, key: str, value: object) -> None:
        """Out-of-range limits and unknown backends stop start-up naming the setting."""
        with pytest.raises(ConfigurationError) as info:
            load_settings(state={key: value})
        assert f"state.{key}" == info.value.setting

    def test_postgres_caps_max_bytes_at_what_one_load_returns(self) -> None:
        """Over 512 MiB with PostgreSQL names state.max_bytes; the file store takes it."""
        big = 512 * 1024 * 1024 + 1
        with pytest.raises(ConfigurationError) as info:
            load_settings(state={"backend": "postgres", "dsn": _DSN, "max_bytes": big})
        assert "state.max_bytes" == info.value.setting
        assert "512 MiB" in str(info.value)
        assert big == load_settings(state={"max_bytes": big}).state.max_bytes
        at_cap = {"backend": "postgres", "dsn": _DSN, "max_bytes": big - 1}
        assert big - 1 == load_settings(state=at_cap).state.max_bytes


class TestRedaction:
    def test_a_password_in_the_query_is_a_secret_too(self) -> None:
        """libpq also takes ?password=...: that value is redacted like the user:password one."""
        dsn = "postgresql://app@db:5432/t?sslmode=disable&password=qu3ry-s3cret"
        settings = load_settings(state={"backend": "postgres", "dsn": dsn})
        assert {dsn, "qu3ry-s3cret"} <= set(settings.secret_values())

    def test_dsn_and_its_password_are_redacted_in_logs(self) -> None:
        """secret_values() holds the DSN and its password (raw and decoded); logs show ***."""
        import io
        import json as _json

        import structlog

        from taskforce.observability import configure_logging

        dsn = "postgresql://app:p%40ss-w0rd!@db:5432/t"
        settings = load_settings(state={"backend": "postgres", "dsn": dsn})
        assert {dsn, "p%40ss-w0rd!", "p@ss-w0rd!"} <= set(settings.secret_values())
        out = io.StringIO()
        configure_logging(fmt="json", level="info", stream=out, secrets=settings.secret_values())
        structlog.get_logger("t").info(
            "server.started", category="lifecycle", note=f"connect {dsn} as p@ss-w0rd!"
        )
        line = _json.loads(out.getvalue().strip().splitlines()[-1])
        assert "p@ss-w0rd" not in out.getvalue() and "p%40ss" not in out.getvalue()
        assert "***" in line["note"]


class TestConnectTimeout:
    @pytest.mark.parametrize(
        ("dsn", "left", "seconds"),
        [
            (_DSN, _DSN, None),
            (f"{_DSN}?connect_timeout=10", _DSN, 10.0),
            (f"{_DSN}?sslmode=require&connect_timeout=5", f"{_DSN}?sslmode=require", 5.0),
            (f"{_DSN}?connect_timeout=5&sslmode=require", f"{_DSN}?sslmode=require", 5.0),
            (f"{_DSN}?a=1&connect_timeout=5&b=2#f", f"{_DSN}?a=1&b=2#f", 5.0),
            (f"{_DSN}?connect_timeout=5&connect%5Ftimeout=8", _DSN, 8.0),  # the last, as libpq
            (f"{_DSN}?connect_timeout=0", _DSN, None),
            (f"{_DSN}?connect_timeout=-3", _DSN, None),
            (f"{_DSN}?connect_timeout=1", _DSN, 2.0),  # libpq waits 2 s at least
            ("postgresql:///db?host=%2Ftmp&connect_timeout=3", "postgresql:///db?host=%2Ftmp", 3.0),
            (
                "postgresql://u:p%3Fx@h/db#connect_timeout=x",
                "postgresql://u:p%3Fx@h/db#connect_timeout=x",
                None,
            ),
        ],
    )
    def test_it_is_taken_out_of_what_the_driver_sees(
        self, dsn: str, left: str, seconds: float | None
    ) -> None:
        """The DSN keeps everything else as written; the limit is libpq's reading of it."""
        assert (left, seconds) == split_connect_timeout(dsn)
