"""The PostgreSQL state store: sessions every replica shares, a record appended per transaction.

This is the one module that imports the driver (asyncpg, the ``postgres``
extra). The connection pool is opened by :meth:`PostgresStateStore.open` or by
the first call, on the running event loop, and belongs to that loop. The
connection string is a secret: no message this module raises contains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import structlog

from taskforce.config import dsn_secrets, split_connect_timeout
from taskforce.core.interfaces.log import secret_scrubber
from taskforce.core.interfaces.outcome import no_answer_within, retrieve_outcome
from taskforce.core.interfaces.state import (
    AppendResult,
    ExpiryProgress,
    MissionRecord,
    SessionExpiry,
    SessionState,
    StateStoreHealth,
)
from taskforce.errors import (
    ConfigurationError,
    StateCorruptedError,
    StateStoreError,
    StateStorePermissionError,
    StateStoreUnavailableError,
)
from taskforce.infrastructure.state import _postgres_schema as sql
from taskforce.infrastructure.state._common import StateLimits, check_session_id, dumps, loads
from taskforce.infrastructure.state._libpq_environment import (
    is_file_error,
    is_tls_refused,
    is_user_name_lookup,
    refused_variable,
)
from taskforce.infrastructure.state._postgres_access import (
    Refusal,
    creation_refusal,
    use_refusal,
    write_refusal,
)
from taskforce.infrastructure.state._postgres_shape import (
    layout_problem,
    read_shape,
    row_security_refusal,
    shape_problem,
    version_column_problem,
)

if TYPE_CHECKING:
    import asyncpg

__all__ = ["EXPIRY_BATCH", "PostgresStateStore"]

_LOG = structlog.get_logger(__name__)

#: The most sessions one transaction of a sweep deletes: its locks and its work stay
#: short (each session takes its records with it, up to ``state.max_history``).
EXPIRY_BATCH = 100

_WHERE = "postgres:taskforce_sessions"

_T = TypeVar("_T")

#: Why a pool cannot open when the driver finds no user: the connection string names
#: none, PGUSER is unset, and the process's uid has no name to take instead.
_NO_USER_NAME = (
    "the connection string names no user and PGUSER is not set, and the process's uid {uid} "
    "has no user name to take instead (no entry in /etc/passwd, as in a container run as an "
    "arbitrary uid): name the user in it, postgresql://USER@host/db, or set PGUSER"
)


def _driver() -> Any:
    try:
        import asyncpg
    except ImportError as exc:  # the extra is not installed
        raise ConfigurationError(
            "state.backend", "'postgres' needs the driver: pip install 'pytaskforce[postgres]'"
        ) from exc
    return asyncpg


def _is_unavailable(exc: BaseException) -> bool:
    """Whether a call's failure is the database unavailable for now, not a fault: its
    connection lost, or an answer not given in time: a statement cancelled
    (``statement_timeout``, an operator), or a lock not granted within ``lock_timeout``
    (another transaction holding the session's row).

    The driver's ``InternalClientError`` is a connection it lost track of: the server ended
    an idle pooled connection (a restart, ``pg_terminate_backend``) and its FATAL came in
    before its close, so a call that took the connection then finds it in the wrong state.
    """
    driver = _driver()
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | driver.PostgresConnectionError
        | driver.ConnectionDoesNotExistError
        | driver.OperatorInterventionError
        | driver.LockNotAvailableError
        | driver.InterfaceError
        | driver.InternalClientError,
    )


def _is_connection_lost(exc: BaseException) -> bool:
    """Whether a call failed because the server had ended its connection: a pooled
    connection the server closed while it sat idle (``pg_terminate_backend``, a restart,
    ``idle_session_timeout``, a failover), found out only once the call used it.

    Not a timeout, a lock not granted, a cancelled statement, nor a new connection refused:
    those would meet a fresh connection too.
    """
    driver = _driver()
    return isinstance(
        exc,
        ConnectionResetError
        | BrokenPipeError
        | ConnectionAbortedError
        | driver.ConnectionDoesNotExistError
        | driver.PostgresConnectionError
        | driver.AdminShutdownError
        | driver.CrashShutdownError
        | driver.IdleSessionTimeoutError
        | driver.InternalClientError,
    )


@functools.cache
def _connection_class() -> type:
    """The driver's connection, but one whose ``close()`` raises nothing.

    The pool closes a replaced connection (see :meth:`PostgresStateStore._replace`) in a
    task of its own that nobody awaits: one whose server is gone without a word (the
    close is never answered) would fail it at its timeout, and asyncio would report the
    task's exception as never retrieved. Its connection is cut then all the same.
    """

    class _Connection(_driver().Connection):  # type: ignore[misc]
        async def close(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - its API
            with contextlib.suppress(Exception):
                await super().close(timeout=timeout)

    return _Connection


#: When a call whose connection the server had ended is run again, once, on a new one:
#: ``"unbegun"``, only if its transaction never began (a write: none of its statements
#: reached the database); ``"uncommitted"``, if its COMMIT was not sent yet (a read, a
#: sweep's delete: the server rolls back what a lost connection left uncommitted).
_Retry = Literal["unbegun", "uncommitted"]

#: Each call's ``_Retry`` by its action: a session read and a sweep's batch, "uncommitted";
#: any other (a write), "unbegun".
_RETRY: dict[str, _Retry] = {"load": "uncommitted", "expire": "uncommitted"}


class PostgresStateStore:
    """Keeps sessions in PostgreSQL; an implementation of ``HealthCheckingStateStoreProtocol``.

    Safe under concurrency from any number of tasks and processes: an append
    holds its session's row lock for one short transaction, so no record is
    lost and the limits are applied in the same transaction. With a time to live
    it is an ``ExpiringStateStoreProtocol`` too: a sweep takes no row another
    transaction holds, so it never waits for an append nor another replica's sweep.

    Args:
        dsn: a ``postgresql://`` connection URL; never shown in a message. A
            ``connect_timeout`` in it (whole seconds, as libpq reads it) limits each
            new connection, within ``timeout_seconds``; the driver never sees it.
        pool_size: the most connections the pool opens.
        timeout_seconds: the deadline of each call as a whole (waiting for a
            pooled connection, connecting, its statements); at :meth:`open`, the
            limit on connecting and on each schema statement.
        pool_idle_seconds: how long a connection may stay in the pool unused before
            it is closed; the next call opens a new one.
        limits: how many records and bytes an append leaves a session, and how long a
            session lives unwritten (``updated_at``, by the database's clock).

    Raises:
        ConfigurationError: the driver (the ``postgres`` extra) is not installed, or the
            DSN's ``connect_timeout`` is no whole number of seconds.
    """

    #: The kind of store, as ``state.backend`` names it.
    backend = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        timeout_seconds: float = 10.0,
        pool_idle_seconds: float = 30.0,
        limits: StateLimits | None = None,
    ) -> None:
        _driver()
        try:
            self._dsn, connect_timeout = split_connect_timeout(dsn)
        except ValueError as exc:
            raise ConfigurationError("state.dsn", str(exc)) from None
        #: What limits a new connection: the DSN's ``connect_timeout`` when it is shorter.
        self._connect_limit = (timeout_seconds, "state.timeout_seconds")
        if connect_timeout is not None and connect_timeout < timeout_seconds:
            self._connect_limit = (connect_timeout, "connect_timeout in state.dsn")
        self._scrub = secret_scrubber(dsn_secrets(dsn))
        self.pool_size = pool_size
        self.timeout_seconds = timeout_seconds
        self.pool_idle_seconds = pool_idle_seconds
        self.limits = limits if limits is not None else StateLimits()
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None

    async def open(self) -> None:
        """Connect the pool, create the schema's missing tables and migrate an older
        schema; idempotent.

        Raises:
            StateStorePermissionError: the database refuses its user a privilege the
                store needs: CREATE on the schema (to create it), or one on its tables;
                or it takes no writes (a standby, ``default_transaction_read_only`` on).
            StateStoreUnavailableError: the database cannot be reached or refused us.
            StateStoreError: the database is encoded other than UTF8 (or SQL_ASCII), or
                the DSN sets another client_encoding than UTF8, so not every record can
                be saved; or the database holds a schema version this code does not
                know (nor migrates from), or none (an empty version table, or state
                tables without one); or a relation of a table's name is no table, the
                tables are in different schemas, or a column, the sessions' key or the
                records' cascade is not as this code uses it.
        """
        if self._pool is not None:
            return
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                self._pool = await _in_own_context(self._connect())

    async def _connect(self) -> asyncpg.Pool:
        driver = _driver()
        try:
            pool: asyncpg.Pool = await driver.create_pool(
                self._dsn,
                connection_class=_connection_class(),
                # A load balancer or NAT that forgets an idle flow tells neither side: a
                # connection kept past that fails its next call only at the deadline. Every
                # connection idle that long is closed, none kept as a floor (the driver
                # never closes one it keeps for min_size, however long unused).
                min_size=0,
                max_inactive_connection_lifetime=self.pool_idle_seconds,
                max_size=self.pool_size,
                timeout=self._connect_limit[0],  # for each new connection
                command_timeout=self.timeout_seconds,
                # No named prepared statements: behind PgBouncer in transaction mode
                # (the operator guide's advice) a later transaction may run on another
                # server session, which does not have them.
                statement_cache_size=0,
            )
            conn = await _first_connection(pool)
        except driver.ClientConfigurationError as exc:
            # A ValueError too, but the DSN was read: a parameter has a value the driver
            # refuses (sslmode=bogus), and its message names it. The value may come from
            # a libpq variable (PGSSLMODE=bogus) the driver reads for one the DSN leaves out.
            variable = refused_variable(self._dsn, "parameter", str(exc))
            refused = (
                f"the environment variable {variable}" if variable else "a connection parameter"
            )
            reason = f"the driver refuses {refused}: {self._safe(exc)}"
            raise self._unreachable(reason, variable) from None
        except KeyError as exc:
            if not is_user_name_lookup(exc):
                raise
            raise self._unreachable(_NO_USER_NAME.format(uid=os.getuid())) from None
        except (
            ValueError,  # a DSN the driver cannot parse: a port that is no number, a broken host
            OverflowError,  # a port outside 0-65535
        ) as exc:
            variable = refused_variable(self._dsn, "unparsable", str(exc))
            if variable is not None:  # PGPORT, read even for a DSN that names its port
                reason = (
                    f"the driver refuses the environment variable {variable}: "
                    "not a port from 1 to 65535, or several separated by commas"
                )
                raise self._unreachable(reason, variable) from None
            # Never the parser's words: they quote the piece of the DSN they tripped on,
            # which is often the password (one with an unencoded '/', '#' or '?').
            reason = (
                f"the connection string cannot be parsed ({type(exc).__name__}); "
                "percent-encode any '/', '#', '?', '@' or ':' in its user name and password"
            )
            raise self._unreachable(reason) from None
        except (
            OSError,
            TimeoutError,
            driver.PostgresError,
            driver.InterfaceError,
        ) as exc:
            if is_user_name_lookup(exc):  # the KeyError's successor (Python 3.13)
                raise self._unreachable(_NO_USER_NAME.format(uid=os.getuid())) from None
            # a certificate or key file a libpq variable (PGSSLROOTCERT) names, not found
            variable = refused_variable(self._dsn, "file", str(exc)) if is_file_error(exc) else None
            if variable is not None:
                reason = f"the driver cannot read the file {variable} names: {self._safe(exc)}"
                raise self._unreachable(reason, variable) from None
            if is_tls_refused(exc) and refused_variable(self._dsn, "tls", str(exc)):
                # the DSN asks for no TLS: the variable the driver read its sslmode from does
                reason = (
                    "the server refuses TLS, which the environment variable PGSSLMODE asks "
                    f"for: {self._safe(exc)}"
                )
                raise self._unreachable(reason, "PGSSLMODE") from None
            raise self._unreachable(self._safe(exc, is_connecting=True)) from None
        try:
            async with _released(pool, conn), conn.transaction(isolation=sql.ISOLATION):
                self._check(await write_refusal(conn))
                found = await conn.fetchrow(sql.ENCODING_QUERY)
                encoding, client_encoding = found["encoding"], found["client_encoding"]
                _stop(sql.encoding_refusal(encoding, found["database"], client_encoding))
                await conn.execute("SELECT pg_advisory_xact_lock($1)", sql.SCHEMA_LOCK)
                # A newer release's tables may differ from this code's (one renamed, or made
                # a view): their version is what to say, not a CREATE or a change to make.
                _stop(await _newer_version_refusal(conn))
                if not await conn.fetchval(sql.SCHEMA_IS_COMPLETE):
                    unversioned = await conn.fetchval(sql.UNVERSIONED_SCHEMA)
                    if unversioned is not None:
                        raise StateStoreError(sql.unversioned_refusal(unversioned))
                    self._check(await creation_refusal(conn))
                    await conn.execute(sql.CREATE_SCHEMA)
                shape = await read_shape(conn)
                _stop(layout_problem(shape))
                expires = self.limits.session_ttl_seconds is not None
                self._check(await use_refusal(conn, expires=expires))
                # before the version is read: row level security could hide its row
                self._check(row_security_refusal(shape, expires=expires))
                _stop(version_column_problem(shape))
                found = await conn.fetchrow(sql.SCHEMA_VERSION_QUERY)
                assert found is not None  # a SELECT without FROM has one row
                version = found["version"]
                _stop(sql.version_refusal(version, found["schema"]))
                if version < sql.SCHEMA_VERSION:
                    for step in range(version, sql.SCHEMA_VERSION):
                        await conn.execute(sql.MIGRATIONS[step])
                        await conn.execute(sql.RECORD_VERSION, step + 1)
                    shape = await read_shape(conn)
                _stop(shape_problem(shape))
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, Exception) and not isinstance(exc, StateStoreError):
                # most starts find the schema and only check it: a lock another client
                # holds on a table, or a role's statement_timeout, stops that check too
                raise StateStoreUnavailableError(
                    f"cannot create or check the state schema: {self._safe(exc)}",
                    detail=self._safe(exc),
                ) from None
            raise
        return pool

    def _check(self, refusal: Refusal | None) -> None:
        """Stop start-up with what the database refuses its user, if anything."""
        if refusal is not None:
            raise StateStorePermissionError(*map(self._scrub, refusal))

    def _unreachable(self, reason: str, variable: str | None = None) -> StateStoreUnavailableError:
        """The error of a pool that cannot be opened (raise it ``from None``: the DSN may
        be in the driver's)."""
        return StateStoreUnavailableError(
            f"cannot reach the state database: {reason}", detail=reason, variable=variable
        )

    async def aclose(self) -> None:
        """Close the pool's connections; a later call opens a new pool.

        A call still waiting for a pooled connection then fails with
        ``StateStoreUnavailableError`` once one frees up, and runs nothing on it.
        """
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), self.timeout_seconds)

    async def __aenter__(self) -> PostgresStateStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(
        self,
        action: str,
        session_id: str | None,
        work: Callable[[Any], Awaitable[_T]],
        committed: list[_T] | None = None,
    ) -> _T:
        """Run ``work`` on a pooled connection in one transaction, in a context of its own.

        Once the transaction committed, its result is returned, whatever then befalls the
        connection on its way back to the pool (see :meth:`_transact`); it is also put in
        ``committed``, where a caller cancelled after the commit finds it.

        A connection the server had ended (see ``_is_connection_lost``) fails the call
        only if it may have committed, as ``_RETRY`` tells by ``action``: else the pool's
        connections are replaced (``state.connection.replaced``) and ``work`` runs once
        more on a new one, within the same ``timeout_seconds``. A write is never run twice
        once one of its statements may have reached the database. A COMMIT under way at
        the deadline is waited for (see ``_in_own_context``): the call then says what the
        database did.
        """
        committed = [] if committed is None else committed
        acquired: list[bool] = []
        committing: list[bool] = []
        retry = _RETRY.get(action, "unbegun")

        async def attempts() -> _T:
            try:
                return await self._transact(
                    action, session_id, work, committed, acquired, committing, retry
                )
            except _ConnectionLost as lost:
                if lost.pool is not self._pool:  # closed meanwhile (aclose): not reopened
                    raise lost.error from None
                await self._replace(lost.pool, action, session_id, lost.cause)
                acquired.clear()
                return await self._transact(
                    action, session_id, work, committed, acquired, committing
                )

        try:
            return await _in_own_context(
                attempts(),
                deadline=self.timeout_seconds,
                committed=committed,
                committing=committing,
            )
        except _DeadlinePassed:
            if committed:  # the deadline came while the pool took the connection back
                return committed[0]
            # The driver's own limits are per step (a pooled connection, each statement,
            # then the wait for a cancelled statement's cancel request): the operation as
            # a whole ends here, its connection is cleaned up behind it.
            raise StateStoreUnavailableError(
                f"cannot {_call(action, session_id)}: TimeoutError",
                detail=self._timed_out(is_acquired=bool(acquired)),
            ) from None

    def _timed_out(self, *, is_acquired: bool, is_connect_limit: bool = False) -> str:
        """What a call that ran out of ``state.timeout_seconds`` waited for.

        A call that got no connection while every one of the pool's was in use waited
        for the pool, not for the database: it says so, naming ``state.pool_size``. One
        the driver stopped (``is_connect_limit``) before it got a connection otherwise ran
        out of the limit on connecting, which a ``connect_timeout`` in the DSN may shorten.
        """
        pool = self._pool
        if (
            not is_acquired
            and pool is not None
            and pool.get_size() >= pool.get_max_size()
            and pool.get_idle_size() == 0
        ):
            what = "pooled connection free"
            said = no_answer_within(self.timeout_seconds, "state.timeout_seconds", what=what)
            return f"TimeoutError: {said}: all {pool.get_max_size()} of state.pool_size in use"
        if is_connect_limit and not is_acquired:
            return f"TimeoutError: {no_answer_within(*self._connect_limit)}"
        return f"TimeoutError: {no_answer_within(self.timeout_seconds, 'state.timeout_seconds')}"

    async def _transact(
        self,
        action: str,
        session_id: str | None,
        work: Callable[[Any], Awaitable[_T]],
        committed: list[_T],
        acquired: list[bool],
        committing: list[bool],
        retry: _Retry | None = None,
    ) -> _T:
        """Run ``work`` on a pooled connection in a transaction; driver errors become
        path-free store errors, or :class:`_ConnectionLost` when the server had ended the
        connection and ``retry`` says the transaction cannot have committed. Its result is
        put in ``committed`` once committed, ``True`` in ``acquired`` once the pool gave
        it a connection, and ``True`` in ``committing`` once its COMMIT is sent.

        A connection the pool cannot get (the server refuses a new one: too many
        connections, a changed password) is the database being unavailable, as at start-up.
        A failure after the commit, while the pool resets the connection to take it back
        (the server or the network went away just then), changes nothing that was written:
        the driver closes that connection, and the call succeeds, or a mission whose record
        is stored would fail, and its retry write the record twice.
        """
        await self.open()
        pool = self._pool
        assert pool is not None
        began: list[bool] = []
        try:
            async with pool.acquire(timeout=self.timeout_seconds) as conn:
                if pool is not self._pool:
                    # aclose() took the pool away while this call waited for it: the pool
                    # is closing this connection, and no statement may go on it.
                    raise _PoolClosed
                acquired.append(True)
                async with conn.transaction(isolation=sql.ISOLATION):
                    began.append(True)  # BEGIN answered: the work's statements go next
                    result = await work(conn)
                    committing.append(True)  # COMMIT goes next
                committed.append(result)
        except StateStoreError:
            raise
        except Exception as raised:
            if committed:
                return committed[0]
            if not acquired and pool is not self._pool:
                # the release after _PoolClosed may fail too, on the connection being closed
                closed = "the state store was closed"
                raise StateStoreUnavailableError(
                    f"cannot {_call(action, session_id)}: {closed}",
                    detail=f"{closed} while the call waited for a pooled connection",
                ) from None
            exc = _first_cause(raised)
            is_acquired = bool(acquired)
            is_unavailable = not is_acquired or _is_unavailable(exc)
            cls = StateStoreUnavailableError if is_unavailable else StateStoreError
            # the pool's own wait for a connection may end a moment before the call's deadline
            is_timeout = isinstance(exc, TimeoutError) and not str(exc)
            error = cls(
                f"cannot {_call(action, session_id)}: {type(exc).__name__}",
                detail=(
                    self._timed_out(is_acquired=is_acquired, is_connect_limit=True)
                    if is_timeout
                    else self._safe(exc)
                ),
            )
            # a connection the pool had when the call took it, not one it failed to make
            # (``committing`` is empty when an attempt starts: one whose COMMIT was sent
            # is never run again)
            uncommitted = not began if retry == "unbegun" else not committing
            if retry is not None and is_acquired and uncommitted and _is_connection_lost(exc):
                raise _ConnectionLost(pool, error, exc) from None
            raise error from None
        return result

    async def _replace(
        self, pool: asyncpg.Pool, action: str, session_id: str | None, cause: BaseException
    ) -> None:
        """Have the pool replace its connections, the one the server ended and those it
        has not used since (the server most likely ended them too: a restart, a
        failover): each is closed and made anew when next taken (the ones in use when
        their call gives them back). Logs ``state.connection.replaced``."""
        await pool.expire_connections()
        fields = {"action": action, "session_id": session_id, "error_type": type(cause).__name__}
        with contextlib.suppress(Exception):  # a broken log must not fail the call it retries
            _LOG.info("state.connection.replaced", category="state", **fields)

    async def check_health(self) -> StateStoreHealth:
        """Check that the database answers ``SELECT 1`` on a pooled connection.

        Connects the pool first when it is not (a replica that started while the
        database was down). ``timeout_seconds`` bounds the check as a whole, as a call.

        Returns:
            Reachable, or not with the class of the failure (``ConnectionRefusedError``,
            ``InvalidPasswordError``, ``TimeoutError: no answer within N s``): never the
            server's or the driver's words, which may name a host or a user.
        """
        try:
            await _in_own_context(self._select_one(), deadline=self.timeout_seconds)
        except _DeadlinePassed:
            said = no_answer_within(self.timeout_seconds, "state.timeout_seconds")
            return StateStoreHealth(is_reachable=False, error=f"TimeoutError: {said}")
        except Exception as exc:
            return StateStoreHealth(is_reachable=False, error=_failure_name(exc))
        return StateStoreHealth(is_reachable=True)

    async def _select_one(self) -> None:
        """``SELECT 1`` on a pooled connection; once more on a new one when the server had
        ended the one the pool gave (see :meth:`_run`)."""
        await self.open()
        pool = self._pool
        assert pool is not None
        for is_retry in (False, True):
            acquired = False
            try:
                async with pool.acquire(timeout=self.timeout_seconds) as conn:
                    acquired = True
                    # the simple protocol: no statement is prepared, on a session of its own
                    await conn.execute("SELECT 1")
                return
            except Exception as exc:
                cause = _first_cause(exc)
                if is_retry or not acquired or pool is not self._pool:
                    raise
                if not _is_connection_lost(cause):
                    raise
                await self._replace(pool, "check", None, cause)

    async def save(self, session_id: str, state: SessionState) -> int:
        """Replace the session's state and its records in one transaction.

        Returns:
            The size of the session's stored state, in bytes.

        Raises:
            ValueError: the session id is invalid.
            TypeError: ``state`` is not JSON; the stored state is unchanged.
            StateStoreError: the database failed; nothing was changed.
        """
        check_session_id(session_id)
        if not isinstance(state, dict):
            raise TypeError(f"session state must be a dict, got {type(state).__name__}")
        missions = state.get("missions")
        has_missions = isinstance(missions, list)
        rest = {k: v for k, v in state.items() if k != "missions"} if has_missions else state
        encoded = dumps(rest)
        head = encoded.decode()
        records = [_text(record) for record in missions] if isinstance(missions, list) else []
        size = len(encoded) + sum(n for _, n in records)  # bytes (UTF-8), not characters

        async def replace(conn: Any) -> None:
            await conn.execute(
                sql.UPSERT_SESSION, session_id, head, has_missions, len(records), size
            )
            await conn.execute(sql.DELETE_RECORDS, session_id)
            if records:
                await conn.executemany(
                    sql.INSERT_RECORD, [(session_id, text, n) for text, n in records]
                )

        await self._run("save", session_id, replace)
        return size

    async def append(self, session_id: str, record: MissionRecord) -> AppendResult:
        """Append ``record`` to the session's records, dropping the oldest beyond the limits.

        Raises:
            ValueError: the session id is invalid.
            TypeError: ``record`` is not a JSON object; nothing is written.
            StateStoreError: the database failed; the record was not appended.
        """
        check_session_id(session_id)
        if not isinstance(record, dict):
            raise TypeError(f"mission record must be a dict, got {type(record).__name__}")
        text, size = _text(record)
        limits = self.limits
        ttl = self._ttl()

        async def add(conn: Any) -> AppendResult:
            row = await conn.fetchrow(sql.APPEND_RECORD, session_id, size, ttl)
            if row is None:
                # Expired, not swept yet: its row is locked now. It goes as the sweep
                # would take it, and the record starts a new session of that id.
                await conn.execute(sql.DELETE_SESSION, session_id)
                row = await conn.fetchrow(sql.APPEND_RECORD, session_id, size, ttl)
            await conn.execute(sql.INSERT_RECORD, session_id, text, size)
            records, total, dropped = row["records"], row["size_bytes"], 0
            over_history = limits.max_history is not None and records > limits.max_history
            over_bytes = limits.max_bytes is not None and total > limits.max_bytes
            if records > 1 and (over_history or over_bytes):
                trimmed = await conn.fetchrow(
                    sql.TRIM_RECORDS,
                    session_id,
                    limits.max_history or records,
                    row["overhead"],
                    limits.max_bytes or total,
                )
                records, total, dropped = trimmed["records"], trimmed["size_bytes"], trimmed[2]
            return AppendResult(size_bytes=int(total), records=int(records), dropped=int(dropped))

        return await self._run("save", session_id, add)

    async def load(self, session_id: str) -> SessionState | None:
        """Return the session's state (its records as ``missions``), or ``None`` if unknown
        or expired (not written for longer than ``session_ttl_seconds``).

        Raises:
            ValueError: the session id is invalid.
            StateCorruptedError: a stored text is not JSON; it is left as is.
            StateStoreError: the database failed.
        """
        check_session_id(session_id)
        ttl = self._ttl()
        row = await self._run(
            "load",
            session_id,
            lambda conn: conn.fetchrow(sql.LOAD_SESSION, session_id, ttl),
        )
        if row is None:
            return None
        state = _parse(row["state"], session_id)
        if not isinstance(state, dict):
            raise StateCorruptedError(session_id, _WHERE, "the state is not a JSON object")
        if row["has_missions"]:
            state["missions"] = [_parse(text, session_id) for text in row["records"]]
        return state

    @property
    def session_ttl_seconds(self) -> float | None:
        """How long a session lives unwritten; ``None``: for good."""
        return self.limits.session_ttl_seconds

    def _ttl(self) -> float:
        """The time to live as the statements take it: 0 for none."""
        return float(self.limits.session_ttl_seconds or 0)

    async def expire_sessions(self, progress: ExpiryProgress | None = None) -> SessionExpiry:
        """Delete the sessions not written for longer than ``session_ttl_seconds``, with
        their records, ``EXPIRY_BATCH`` at a time: each batch is a transaction of its own
        under ``timeout_seconds``, and the connection goes back to the pool in between.

        Args:
            progress: gets each batch's count once the batch committed (also when the
                call is cancelled after that commit, or a later batch fails).

        Returns:
            How many sessions this call deleted (none that another replica's sweep did).

        Raises:
            StateStoreError: the database failed; the batches before stay deleted.
        """
        ttl = self.limits.session_ttl_seconds
        progress = ExpiryProgress() if progress is None else progress
        expired = 0
        while ttl is not None:
            committed: list[int] = []
            try:
                deleted = await self._run(
                    "expire",
                    None,
                    lambda conn: conn.fetchval(sql.EXPIRE_SESSIONS, float(ttl), EXPIRY_BATCH),
                    committed,
                )
            finally:
                progress.expired += sum(committed)
            expired += deleted
            if deleted < EXPIRY_BATCH:
                break
        return SessionExpiry(expired)

    def _safe(self, exc: BaseException, *, is_connecting: bool = False) -> str:
        """The exception as text on one line, without the connection string or its password.

        The driver's own text may run over lines (libpq's ``HINT:`` on a line of its
        own); a start-up error is one line. A timeout while connecting names the limit
        on connecting.
        """
        said = " ".join(str(exc).split())
        if not said and isinstance(exc, TimeoutError):
            limit = self._connect_limit if is_connecting else None
            said = no_answer_within(*(limit or (self.timeout_seconds, "state.timeout_seconds")))
        return self._scrub(f"{type(exc).__name__}: {said}" if said else type(exc).__name__)

    def __repr__(self) -> str:
        return f"<PostgresStateStore pool_size={self.pool_size}>"


def _stop(problem: str | None) -> None:
    """Stop start-up with what is wrong with the state tables, if anything."""
    if problem is not None:
        raise StateStoreError(problem)


async def _newer_version_refusal(conn: Any) -> str | None:
    """Why this code cannot use tables whose version table records a version newer than
    it knows, or None: none newer, or no version table it can read (a savepoint keeps the
    start-up transaction alive then; the checks after this one say what is wrong)."""
    if not await conn.fetchval(sql.VERSION_TABLE_EXISTS):
        return None  # a first start: the server logs no error for a query of no table
    try:
        async with conn.transaction():
            found = await conn.fetchrow(sql.SCHEMA_VERSION_QUERY)
    except _driver().PostgresError:
        return None
    version = found["version"]
    if not isinstance(version, int) or version <= sql.SCHEMA_VERSION:
        return None
    return sql.version_refusal(version, found["schema"])


async def _first_connection(pool: asyncpg.Pool) -> Any:
    """The pool's first connection, made at start-up so that a database that cannot be
    reached stops it there (the pool keeps none of its own); the pool is closed when
    there is none."""
    try:
        return await pool.acquire()
    except BaseException:
        with contextlib.suppress(Exception):
            await pool.close()
        raise


@contextlib.asynccontextmanager
async def _released(pool: asyncpg.Pool, conn: Any) -> AsyncIterator[Any]:
    """Give ``conn`` back to ``pool`` on the way out, as ``pool.acquire()`` does."""
    try:
        yield conn
    finally:
        await pool.release(conn)


def _first_cause(exc: Exception) -> Exception:
    """The error that ended a transaction, not the driver's complaint that closing it
    failed (an ``InterfaceError`` raised while handling the loss of its connection)."""
    context = exc.__context__
    if isinstance(exc, _driver().InterfaceError) and isinstance(context, Exception):
        return context
    return exc


def _failure_name(exc: Exception) -> str:
    """The class name of what failed: for a store error of ours (raised ``from None``, it
    keeps the driver's error as its context), the driver's error's."""
    context = exc.__context__
    if isinstance(exc, StateStoreError) and isinstance(context, Exception):
        exc = context
    return type(_first_cause(exc)).__name__


class _DeadlinePassed(Exception):
    """The whole of a store operation took longer than its deadline."""


class _ConnectionLost(Exception):
    """A call's connection the server had ended, before its transaction could commit: the
    call may run again on a new connection of ``pool``; else ``error`` is its failure."""

    def __init__(self, pool: asyncpg.Pool, error: StateStoreError, cause: BaseException) -> None:
        super().__init__(str(error))
        self.pool, self.error, self.cause = pool, error, cause


class _PoolClosed(Exception):
    """The pool a call waited for was closed meanwhile (by :meth:`PostgresStateStore.aclose`)."""


async def _in_own_context(
    work: Coroutine[Any, Any, _T],
    *,
    deadline: float | None = None,
    committed: list[_T] | None = None,
    committing: list[bool] | None = None,
) -> _T:
    """Await ``work`` in a task whose context is empty; it raises what ``work`` raises.

    The driver's connections, and the tasks its pool starts for them (reconnecting after
    one is lost), keep the context they were made in: made in a mission's, their log
    lines would name that mission long after it ended.

    Past ``deadline`` seconds the task is cancelled and :class:`_DeadlinePassed` raised
    at once: the task's clean-up (rolling back, returning or closing its connection)
    goes on without the caller. Cancelling the caller cancels the task once, and the
    caller waits for that clean-up as if ``work`` ran in it, but not past the deadline
    and not past a further cancellation of its own: then it leaves the clean-up to go on
    without it, as at the deadline. A further cancellation is not passed on: it would
    break off the clean-up itself (the driver's rollback, or its wait for the pool to
    take the connection back, whose failure then nobody reads).

    A task that has put its result in ``committed`` by the deadline is left to finish
    its clean-up uncancelled: cancelled, it would stop waiting for the pool's own task
    that takes the connection back, and leave that task's failure unread.

    A task that has put ``True`` in ``committing`` (its COMMIT is sent) but no result in
    ``committed`` by the deadline is waited for past it, uncancelled: only the COMMIT's
    answer tells whether what it wrote is stored, and a cancellation then would fail a
    call whose write the server may commit all the same. The driver's statement timeout
    bounds that wait.
    """
    loop = asyncio.get_running_loop()
    ends = None if deadline is None else loop.time() + deadline
    task = asyncio.create_task(work, context=contextvars.Context())
    try:
        done, _ = await asyncio.wait({task}, timeout=deadline)
        if not done and committing and not committed:
            done, _ = await asyncio.wait({task})
    except BaseException:  # the caller was cancelled: so is the work, once
        task.cancel()
        try:
            left = None if ends is None else max(0.0, ends - loop.time())
            await asyncio.wait({task}, timeout=left)  # a cancellation ends the wait, not the task
        finally:
            _let_go(task)
        raise
    if not done:
        if not committed:
            task.cancel()
        _let_go(task)
        raise _DeadlinePassed
    return task.result()


# Tasks given up (past their deadline, or their caller cancelled), still cleaning up.
_ABANDONED: set[asyncio.Task[Any]] = set()


def _let_go(task: asyncio.Task[Any]) -> None:
    """Read the outcome of a task nobody awaits any more, now or once it ends.

    The loop holds tasks weakly: one still cleaning up is kept in ``_ABANDONED`` until
    it ends.
    """
    if task.done():
        _retrieve(task)
    else:
        _ABANDONED.add(task)
        task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Let ``task`` go from ``_ABANDONED`` and take its outcome (see ``retrieve_outcome``)."""
    _ABANDONED.discard(task)
    retrieve_outcome(task)


def _call(action: str, session_id: str | None) -> str:
    """What a call does, as its errors say it: ``save state of session 'x'``; with no
    session, ``expire sessions``."""
    if session_id is None:
        return f"{action} sessions"
    return f"{action} state of session {session_id!r}"


def _text(record: object) -> tuple[str, int]:
    data = dumps(record, "mission record")
    return data.decode(), len(data)


def _parse(text: str, session_id: str) -> Any:
    try:
        return loads(text)  # NaN and Infinity are not JSON, as on the file store
    except ValueError as exc:
        raise StateCorruptedError(session_id, _WHERE, str(exc)) from exc
    except RecursionError:
        # a hand-edited text nested deeper than the parser goes: corrupt, as the file store says
        raise StateCorruptedError(session_id, _WHERE, "nested too deeply to be read") from None
