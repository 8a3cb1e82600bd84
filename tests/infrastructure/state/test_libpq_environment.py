"""Which libpq variable the driver read a refused value from, or the connection string."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskforce.infrastructure.state._libpq_environment import (
    is_file_error,
    is_tls_refused,
    refused_variable,
)

_DSN = "postgresql://u:pw@db:5432/x"
_SSLMODE = "`sslmode` parameter must be one of: disable, allow, prefer, require"


class TestRefusedVariable:
    @pytest.mark.parametrize(
        ("dsn", "environ", "said", "expected"),
        [
            (_DSN, {"PGSSLMODE": "bogus"}, _SSLMODE, "PGSSLMODE"),
            (_DSN, {"PGSSLMODE": ""}, _SSLMODE, "PGSSLMODE"),
            # the DSN's own sslmode is the one read: PGSSLMODE is not to blame
            (f"{_DSN}?sslmode=bogus", {"PGSSLMODE": "bogus"}, _SSLMODE, None),
            (_DSN, {}, _SSLMODE, None),
            (
                _DSN,
                {"PGSSLNEGOTIATION": "x"},
                "`sslnegotiation` parameter must be one of",
                "PGSSLNEGOTIATION",
            ),
            (
                _DSN,
                {"PGSSLMINPROTOCOLVERSION": "TLSv9", "PGSSLMAXPROTOCOLVERSION": "TLSv1.3"},
                "No such TLS version: TLSv9",
                "PGSSLMINPROTOCOLVERSION",
            ),
            (_DSN, {"PGPORT": "1,2"}, "could not match 2 port numbers to 1 hosts", "PGPORT"),
            (
                _DSN,
                {"PGGSSLIB": "x"},
                "gsslib parameter must be either 'gssapi' or 'sspi'",
                "PGGSSLIB",
            ),
            # a root certificate missing from ~/.postgresql names no variable
            (
                _DSN,
                {"PGSSLMODE": "verify-ca", "PGSSLCRL": "/etc/crl"},
                'root certificate file "/root/.postgresql/root.crt" does not exist',
                None,
            ),
        ],
    )
    def test_a_refused_parameter_is_traced_to_its_variable(
        self, dsn: str, environ: dict[str, str], said: str, expected: str | None
    ) -> None:
        """The variable whose parameter or value the driver's message names is to blame,
        unless the connection string gives that parameter itself."""
        assert expected == refused_variable(dsn, "parameter", said, environ)

    @pytest.mark.parametrize(
        ("dsn", "environ", "expected"),
        [
            (_DSN, {"PGPORT": "abc"}, "PGPORT"),
            ("postgresql://u:pw@db/x", {"PGPORT": "99999"}, "PGPORT"),
            (_DSN, {"PGPORT": "5432"}, None),
            (f"{_DSN}?port=5432", {"PGPORT": "abc"}, None),
            ("postgresql://u:pw@db:abc/x", {}, None),
        ],
    )
    def test_a_port_that_cannot_be_parsed_is_traced_to_pgport(
        self, dsn: str, environ: dict[str, str], expected: str | None
    ) -> None:
        """PGPORT, read even when the DSN's host names a port, is blamed only when it is
        no port; else the connection string is."""
        assert expected == refused_variable(dsn, "unparsable", "", environ)

    @pytest.mark.parametrize(
        ("dsn", "environ", "expected"),
        [
            (_DSN, {"PGSSLMODE": "verify-ca", "PGSSLROOTCERT": "{missing}"}, "PGSSLROOTCERT"),
            (f"{_DSN}?sslmode=require", {"PGSSLROOTCERT": "{missing}"}, "PGSSLROOTCERT"),
            # not read: sslmode prefer does not verify the server
            (_DSN, {"PGSSLROOTCERT": "{missing}"}, None),
            (_DSN, {"PGSSLMODE": "verify-ca", "PGSSLROOTCERT": "{present}"}, None),
            (_DSN, {"PGSSLCERT": "{missing}"}, "PGSSLCERT"),
            (_DSN, {"PGSSLMODE": "disable", "PGSSLCERT": "{missing}"}, None),
            (f"{_DSN}?sslcert=/elsewhere", {"PGSSLCERT": "{missing}"}, None),
        ],
    )
    def test_a_file_that_cannot_be_read_is_traced_to_its_variable(
        self, tmp_path: Path, dsn: str, environ: dict[str, str], expected: str | None
    ) -> None:
        """A certificate or key file the driver reads and cannot open names its variable."""
        present = tmp_path / "root.crt"
        present.write_text("x", encoding="utf-8")
        paths = {"missing": str(tmp_path / "missing.crt"), "present": str(present)}
        environ = {name: value.format(**paths) for name, value in environ.items()}
        assert expected == refused_variable(dsn, "file", "", environ)

    @pytest.mark.parametrize(
        ("dsn", "environ", "expected"),
        [
            (_DSN, {"PGSSLMODE": "require"}, "PGSSLMODE"),
            (f"{_DSN}?sslmode=require", {"PGSSLMODE": "require"}, None),
            (f"{_DSN}?sslmode=require", {}, None),
        ],
    )
    def test_tls_the_server_refuses_is_traced_to_pgsslmode(
        self, dsn: str, environ: dict[str, str], expected: str | None
    ) -> None:
        """The server refusing TLS blames PGSSLMODE only when the DSN gives no sslmode."""
        assert expected == refused_variable(dsn, "tls", "rejected SSL upgrade", environ)

    def test_only_the_servers_tls_refusal_counts(self) -> None:
        """The server rejecting the SSL upgrade is a TLS refusal; a refused connection is not."""
        assert (True, False) == (
            is_tls_refused(ConnectionError('PostgreSQL server at "h:1" rejected SSL upgrade')),
            is_tls_refused(ConnectionRefusedError(111, "Connect call failed")),
        )

    def test_only_errors_of_opening_a_file_count(self) -> None:
        """A missing file is a file error; a refused connection is not."""
        assert (True, False) == (
            is_file_error(FileNotFoundError(2, "No such file or directory")),
            is_file_error(ConnectionRefusedError(111, "Connect call failed")),
        )
