"""Database wiring: the SQLAlchemy config, the model base, and migrations at start-up."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from advanced_alchemy.exceptions import DuplicateKeyError, IntegrityError, wrap_sqlalchemy_exception
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AlembicCommands,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from advanced_alchemy.extensions.litestar._utils import get_aa_scope_state
from anyio import to_thread
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from litestar import Litestar
    from litestar.datastructures import State
    from litestar.types import Scope
    from sqlalchemy import Dialect
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.sql import Executable

    from app.config import Settings

logger = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock that serialises migrations across replicas.
MIGRATION_LOCK_KEY = 7_210_391_117
#: A pooled connection idle for longer than this is pinged before use (seconds).
PING_AFTER_IDLE = 10.0
#: Methods whose requests never write: their sessions run without a transaction (PostgreSQL).
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Seconds a statement waits for a free connection of the :class:`Database` pool.
POOL_TIMEOUT = 30.0
#: ``opt`` key a route handler sets to keep a transaction on a read-only method.
TRANSACTION_OPT = "db_transaction"


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL, or ``None`` for an in-memory database (or another backend).

    Args:
        database_url: The ``DATABASE_URL`` setting.

    Returns:
        The database file's path.
    """
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite"):
        return None
    name = url.database or ""
    if name in ("", ":memory:") or name.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(name)


def make_private(path: Path) -> None:
    """Create ``path`` readable and writable by its owner only (``0600``), or tighten it to that.

    The SQLite file holds password hashes; SQLite would create it with the process's umask
    (usually world-readable), and its ``-wal``/``-shm`` files copy the database file's mode.

    Args:
        path: The file; its directory must exist (else nothing is done and SQLite reports it).
    """
    if not path.parent.is_dir():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    except OSError as exc:
        logger.warning("could not create %s (%s)", path, type(exc).__name__)
        return
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            path.chmod(0o600)
            logger.warning("%s was readable by other users: its mode is now 0600", path)
    except OSError as exc:
        logger.warning("could not make %s private (%s)", path, type(exc).__name__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Turn on foreign keys (cascades) and WAL for every SQLite connection."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL is a property of the file: switch once. Switching takes a lock that ignores the busy
    # timeout, so a connection opened while another one writes failed with "database is locked".
    cursor.execute("PRAGMA journal_mode")
    if cursor.fetchone()[0] != "wal":
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class DatabaseConfig(SQLAlchemyAsyncConfig):
    """The advanced-alchemy config, with transaction-free sessions for reads on PostgreSQL.

    A request with a read-only method (``GET``, ``HEAD``, ``OPTIONS``) gets a session whose
    connection runs in autocommit: no ``BEGIN`` before its first query and no ``ROLLBACK``
    when it closes — one round trip per query instead of three. Under PostgreSQL's READ
    COMMITTED every statement takes its own snapshot anyway, so reads see exactly what they
    would see in a transaction. A ``GET`` route that *writes* more than one statement and
    needs them atomic sets ``opt={"db_transaction": True}`` and gets a normal session.
    """

    _read_engine: AsyncEngine | None = None
    autocommit_reads: bool = False

    def provide_session(self, state: State, scope: Scope) -> AsyncSession:
        """The request's session (created on first use), transaction-free for reads.

        Args:
            state: The application state.
            scope: The current request's scope.

        Returns:
            The session of this request.
        """
        fresh = get_aa_scope_state(scope, self.session_scope_key) is None
        session = super().provide_session(state, scope)
        if fresh and self.autocommit_reads and _is_read_only(scope):
            session.bind = self.read_engine()
        return session

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncGenerator[None, None]:
        """The plugin's lifespan, then the engine's pool closed for sure.

        advanced-alchemy disposes the engine only when its app-state key equals the
        dependency key, which is false for every config after the first in a process (the
        keys get a numeric suffix): those pools, and their connections, would stay open.

        Args:
            app: The application.

        Yields:
            While the application runs.
        """
        async with super().lifespan(app):
            yield
        await self.get_engine().dispose()

    def read_engine(self) -> AsyncEngine:
        """The application engine (same pool) with autocommit connections."""
        if self._read_engine is None:
            self._read_engine = self.get_engine().execution_options(isolation_level="AUTOCOMMIT")
        return self._read_engine


def _is_read_only(scope: Scope) -> bool:
    if scope.get("method") not in READ_ONLY_METHODS:
        return False
    handler = scope.get("route_handler")
    return not (handler is not None and handler.opt.get(TRANSACTION_OPT))


def _remember_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Ping a connection that sat idle in the pool; a dead one is replaced transparently.

    SQLAlchemy's ``pool_pre_ping`` pings on *every* checkout, which on asyncpg costs three
    round trips (BEGIN, ``;``, ROLLBACK) per request. A connection in steady use cannot have
    gone stale unnoticed (a failure invalidates the whole pool), so only idle ones are
    checked — after a database restart the first request still gets a live connection.
    """
    checked_in_at = record.info.get("checked_in_at")
    if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE:
        return
    try:
        dbapi_connection.ping()
    except Exception as exc:
        raise DisconnectionError(str(exc)) from exc  # the pool retries with a new connection


def make_db_config(settings: Settings) -> DatabaseConfig:
    """Build the advanced-alchemy config for the configured database.

    Sessions are only closed after a response (no blanket COMMIT): services commit their
    own writes, so a read never pays for a pointless COMMIT round trip. On PostgreSQL, reads
    run without a transaction at all (see :class:`DatabaseConfig`) and the pool pings only
    connections that were idle (see :func:`_ping_if_idle`).

    Args:
        settings: The application settings.

    Returns:
        The SQLAlchemy config used by the plugin, the CLI and the migrations.
    """
    if settings.is_sqlite:
        engine_config = EngineConfig(connect_args={"timeout": 30}, hide_parameters=True)
        if (path := sqlite_path(settings.database_url)) is not None:
            make_private(path)
    else:
        engine_config = EngineConfig(
            # SQL parameters hold password hashes and token hashes: keep them out of the SQL log
            # and out of the text of database errors (which the 500 handler logs).
            hide_parameters=True,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_recycle=1800,
            connect_args={
                "server_settings": {"application_name": "contacts-api", "jit": "off"},
                # Room for every distinct statement the API runs (filters x orderings).
                "prepared_statement_cache_size": 500,
            },
        )
    config = DatabaseConfig(
        connection_string=settings.database_url,
        engine_config=engine_config,
        session_config=AsyncSessionConfig(expire_on_commit=False, autoflush=False),
        # No before_send_handler argument: the plugin's default closes the session under this
        # config's own scope key (advanced-alchemy makes it unique per config, so the module-level
        # async_default_before_send_handler only matches the first config a process creates).
        set_default_exception_handler=False,
        alembic_config=AlembicAsyncConfig(
            script_location="alembic",
            script_config="",
            version_table_name="alembic_version",
            render_as_batch=True,
            compare_type=True,
        ),
    )
    engine = config.get_engine().sync_engine
    if settings.is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        config.autocommit_reads = True
        event.listen(engine, "checkin", _remember_checkin)
        event.listen(engine, "checkout", _ping_if_idle)
    return config


class Query:
    """A statement built once, compiled once per dialect, run with bound values.

    Hot statements are module-level ``Query`` objects whose variable parts are all ``bindparam``:
    nothing is constructed, coerced or cache-keyed per request, which is most of what a
    SQLAlchemy ``select()`` costs beyond the round trip.

    Args:
        statement: The statement; values come later as named parameters.
    """

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: Executable) -> None:
        """Keep ``statement``; it is compiled on first use for each dialect."""
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {}

    def compiled(self, dialect: Dialect) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """The SQL for ``dialect`` and its positional parameters as ``(name, default)`` pairs.

        Args:
            dialect: The dialect to compile for (a positional paramstyle, such as asyncpg's).

        Returns:
            The SQL text and, in order, each parameter's name and compiled-in default value.
        """
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            defaults = compiled.params
            order = compiled.positiontup or ()
            found = self._compiled[dialect.name] = (
                compiled.string,
                tuple((n, defaults.get(n)) for n in order),
            )
        return found


class Database:
    """Runs :class:`Query` statements (reads, and single-statement writes) by the shortest path.

    On PostgreSQL they have a small asyncpg pool of their own: the compiled SQL goes
    straight to a connection (asyncpg keeps it prepared), with no ORM session, execution
    context, transaction or greenlet switch — one round trip. SQLAlchemy's asyncio layer
    switches greenlets on every checkout and checkin, and each switch copies the request's
    deep stack: that cost more than the query itself. Under PostgreSQL's READ COMMITTED a
    single statement sees the same snapshot inside or outside a transaction. A read that
    meets a dropped connection (a database restart) is retried once on a fresh one: reads
    are safe to repeat. Other drivers (SQLite) run the statement through SQLAlchemy Core.

    The pool is opened by :meth:`open` at start-up and closed by :meth:`close` at shutdown.

    Args:
        engine: The application's engine (its URL, dialect and listeners).
        pool_size: Connections of the pool at most.
    """

    def __init__(self, engine: AsyncEngine, pool_size: int = 10) -> None:
        """Serve ``engine``'s database."""
        self.engine = engine
        self.pool_size = pool_size
        self._direct = engine.dialect.driver == "asyncpg"
        self._pool: asyncpg.Pool | None = None

    async def open(self, _app: Any = None) -> None:
        """Open the pool (PostgreSQL; connections are made on first use). A start-up hook."""
        if not self._direct or self._pool is not None:
            return
        url = self.engine.url.set(drivername="postgresql")
        self._pool = await asyncpg.create_pool(
            url.render_as_string(hide_password=False),
            min_size=0,
            max_size=self.pool_size,
            statement_cache_size=500,  # every prebuilt statement stays prepared
            server_settings={"application_name": "contacts-api", "jit": "off"},
            reset=_keep_session,
        )

    async def close(self, _app: Any = None) -> None:
        """Close the pool, waiting briefly for statements in flight. A shutdown hook."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except TimeoutError:
                pool.terminate()

    async def fetch(self, query: Query, **params: Any) -> Sequence[Sequence[Any]]:
        """All rows of ``query`` with ``params`` bound.

        Args:
            query: The prebuilt statement.
            **params: A value for each of its bound parameters (compiled-in ones may be left out).

        Returns:
            The rows, as tuples in the statement's column order.
        """
        if not self._direct:
            async with self.engine.connect() as connection:
                return (await connection.execute(query.statement, params)).all()
        sql, args = self._prepare(query, params)
        try:
            return await self._run(sql, args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            if isinstance(exc, TimeoutError) or not _is_disconnect(exc):
                raise  # an SQL error, or no connection came free: retrying would not help
        # The connection was dead (asyncpg drops it from the pool): once more, on a new one.
        return await self._run(sql, args)

    async def write(self, query: Query, **params: Any) -> Sequence[Sequence[Any]]:
        """Run one writing statement (``INSERT``/``UPDATE``/``DELETE ... RETURNING``), committed.

        A single statement is atomic on its own: on PostgreSQL it runs like a read, in
        autocommit; elsewhere in a transaction of its own. Unlike a read it is never retried:
        after a dropped connection it may or may not have been applied.

        Args:
            query: The prebuilt statement.
            **params: A value for each of its bound parameters.

        Returns:
            The rows it returned.

        Raises:
            DuplicateKeyError: A unique constraint refused the row.
            IntegrityError: Another constraint refused it.
        """
        if not self._direct:
            async with self.engine.begin() as connection:
                with wrap_sqlalchemy_exception(dialect_name=self.engine.dialect.name):
                    return (await connection.execute(query.statement, params)).all()
        sql, args = self._prepare(query, params)
        try:
            return await self._run(sql, args)
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateKeyError(detail="A row with this key already exists") from exc
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(detail="The row breaks a constraint") from exc

    def _prepare(self, query: Query, params: dict[str, Any]) -> tuple[str, list[Any]]:
        """The driver SQL and positional values of ``query``, announced to SQLAlchemy's listeners."""
        sql, names = query.compiled(self.engine.dialect)
        args = [params.get(name, default) for name, default in names]
        listeners = self.engine.sync_engine.dispatch.before_cursor_execute
        if listeners:
            # SQLAlchemy does not see this statement: tell its listeners (statement
            # logging, query counting), as it would have.
            for listener in listeners:
                listener(None, None, sql, tuple(args), None, False)
        return sql, args

    async def _run(self, sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        if self._pool is None:
            msg = "Database.open() was not called (it is an on_startup hook)"
            raise RuntimeError(msg)
        async with self._pool.acquire(timeout=POOL_TIMEOUT) as connection:
            return await connection.fetch(sql, *args)


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Nothing to reset: the pool only runs prebuilt single statements, which change no session state.

    asyncpg's default reset (``RESET ALL``, ``UNLISTEN *``...) is a round trip per read.
    """


def _is_disconnect(exc: BaseException) -> bool:
    """Whether an error during a query leaves the connection unusable (anything but an SQL error).

    A cancelled query (a timeout) counts: the connection may still be busy with it; so do the
    server's own interventions (class 57: shutdown, termination, cancel).
    """
    return not isinstance(exc, asyncpg.PostgresError) or isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError
    )


def upgrade_database(db_config: SQLAlchemyAsyncConfig, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking; the env takes a lock on PostgreSQL).

    Args:
        db_config: The SQLAlchemy config whose database is migrated.
        revision: The target revision.
    """
    AlembicCommands(sqlalchemy_config=db_config).upgrade(revision=revision)


def downgrade_database(db_config: SQLAlchemyAsyncConfig, revision: str = "base") -> None:
    """Revert migrations down to ``revision`` (blocking).

    Args:
        db_config: The SQLAlchemy config whose database is migrated.
        revision: The target revision.
    """
    AlembicCommands(sqlalchemy_config=db_config).downgrade(revision=revision)


def migrate_on_startup(db_config: SQLAlchemyAsyncConfig) -> Any:
    """Return a start-up hook that applies pending migrations.

    Alembic's async env runs its own event loop, so the upgrade runs in a worker thread
    with its own short-lived engine; the application's pool is never shared with it.

    Args:
        db_config: The SQLAlchemy config whose database is migrated.

    Returns:
        An async ``on_startup`` hook.
    """

    async def _migrate(_app: Litestar) -> None:
        await to_thread.run_sync(upgrade_database, db_config)
        logger.info("database schema is up to date")

    return _migrate
