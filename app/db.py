"""Database wiring: the SQLAlchemy config (ORM sessions), the direct pool for prebuilt statements, migrations."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, closing, contextmanager
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
from anyio import to_thread
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from litestar import Litestar
    from sqlalchemy import Dialect
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
    from sqlalchemy.sql import Executable

    from app.config import Settings

logger = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock that serialises migrations across replicas.
MIGRATION_LOCK_KEY = 7_210_391_117
#: A pooled connection idle for longer than this is pinged before use (seconds).
PING_AFTER_IDLE = 10.0
#: Seconds a statement waits for a free connection of the :class:`DirectPool`.
POOL_TIMEOUT = 30.0


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


def use_wal(path: Path) -> None:
    """Put the SQLite file at ``path`` in WAL mode, once, before any pooled connection opens.

    WAL is a property of the file. Switching takes a lock that SQLite's busy timeout does not
    cover, so a connection that switched while others were opening failed with "database is
    locked": the switch happens here, alone, and is retried if the file is busy.
    """
    if not path.parent.is_dir():
        return
    for attempt in range(50):
        try:
            with closing(sqlite3.connect(path, timeout=30)) as conn:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                logger.warning("could not put %s in WAL mode (%s)", path, exc)
                return
            time.sleep(0.1)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Turn on foreign keys (cascades) for every SQLite connection (WAL is the file's: :func:`use_wal`)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class DatabaseConfig(SQLAlchemyAsyncConfig):
    """The advanced-alchemy config, whose engine is disposed of for sure at shutdown."""

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
    """Build the advanced-alchemy config (ORM sessions) for the configured database.

    Sessions are only closed after a response (no blanket COMMIT): services commit their
    own writes. On PostgreSQL the pool pings only connections that were idle
    (see :func:`_ping_if_idle`).

    Args:
        settings: The application settings.

    Returns:
        The SQLAlchemy config used by the plugin, the CLI and the migrations.
    """
    if settings.is_sqlite:
        engine_config = EngineConfig(connect_args={"timeout": 30}, hide_parameters=True)
        if (path := sqlite_path(settings.database_url)) is not None:
            make_private(path)
            use_wal(path)
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
        event.listen(engine, "checkin", _remember_checkin)
        event.listen(engine, "checkout", _ping_if_idle)
    return config


class CompiledStatement:
    """A statement built once and compiled once per dialect; its values are bound at each run.

    Every variable part is a ``bindparam``, so nothing is built, coerced or cache-keyed per
    request. :class:`DirectPool` runs them.

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


#: A query logger of asyncpg's: called with a ``LoggedQuery`` after each statement.
QueryLogger = Callable[[Any], None]


class DirectPool:
    """Runs :class:`CompiledStatement` objects: the one executor of the domain stores.

    On PostgreSQL it has an asyncpg pool of its own: the compiled SQL goes straight to a
    connection (asyncpg keeps it prepared), with no ORM session and no greenlet switch. A
    single statement runs in autocommit, which under READ COMMITTED sees what it would see in
    a transaction; a read that meets a dropped connection is retried once on a fresh one.
    Elsewhere (SQLite) statements run through SQLAlchemy Core on the application's engine.
    :meth:`transaction` runs several statements atomically.

    The pool is opened by :meth:`open` at start-up and closed by :meth:`close` at shutdown.

    Args:
        engine: The application's engine (its URL and dialect).
        pool_size: Connections of the pool at most.
    """

    def __init__(self, engine: AsyncEngine, pool_size: int = 10) -> None:
        """Serve ``engine``'s database."""
        self.engine = engine
        self.pool_size = pool_size
        self.dialect_name: str = engine.dialect.name
        #: Whether statements go to asyncpg directly (PostgreSQL) rather than through Core.
        self.direct = engine.dialect.driver == "asyncpg"
        self._pool: asyncpg.Pool | None = None
        self._query_loggers: list[QueryLogger] = []

    async def open(self, _app: Any = None) -> None:
        """Open the pool (PostgreSQL; connections are made on first use). A start-up hook."""
        if not self.direct or self._pool is not None:
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

    @property
    def asyncpg_pool(self) -> asyncpg.Pool | None:
        """The asyncpg pool (PostgreSQL, once open), for its gauges."""
        return self._pool

    def add_query_logger(self, callback: QueryLogger) -> None:
        """Have asyncpg call ``callback`` after every statement of the pool's connections.

        PostgreSQL only: elsewhere statements run on the engine, whose ``before_cursor_execute``
        event sees them. For tests and diagnostics: the calls come on the next loop iteration.
        """
        self._query_loggers.append(callback)

    def remove_query_logger(self, callback: QueryLogger) -> None:
        """Stop calling ``callback`` (see :meth:`add_query_logger`)."""
        self._query_loggers.remove(callback)

    async def fetch(self, statement: CompiledStatement, **params: Any) -> Sequence[Sequence[Any]]:
        """All rows of a reading ``statement`` with ``params`` bound.

        Args:
            statement: The prebuilt statement.
            **params: A value for each of its bound parameters (compiled-in ones may be left out).

        Returns:
            The rows, as tuples in the statement's column order.
        """
        if not self.direct:
            async with self.engine.connect() as connection:
                return (await connection.execute(statement.statement, params)).all()
        sql, args = self._sql(statement, params)
        try:
            return await self._run(sql, args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError) as exc:
            if isinstance(exc, TimeoutError) or not _is_disconnect(exc):
                raise  # an SQL error, or no connection came free: retrying would not help
        # The connection was dead (asyncpg drops it from the pool): once more, on a new one.
        return await self._run(sql, args)

    async def write(self, statement: CompiledStatement, **params: Any) -> Sequence[Sequence[Any]]:
        """Run one writing statement (``INSERT``/``UPDATE``/``DELETE ... RETURNING``), committed.

        Never retried: after a dropped connection it may or may not have been applied.

        Args:
            statement: The prebuilt statement.
            **params: A value for each of its bound parameters.

        Returns:
            The rows it returned.

        Raises:
            DuplicateKeyError: A unique constraint refused the row.
            IntegrityError: Another constraint refused it.
        """
        if not self.direct:
            async with self.transaction() as transaction:
                return await transaction.fetch(statement, **params)
        sql, args = self._sql(statement, params)
        with _refusals():
            return await self._run(sql, args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[DirectTransaction]:
        """A connection in a transaction: committed when the block ends, rolled back on an error.

        Yields:
            What runs statements in the transaction.
        """
        if not self.direct:
            async with self.engine.begin() as connection:
                yield DirectTransaction(self, connection)
            return
        async with self._acquire() as connection, connection.transaction():
            yield DirectTransaction(self, connection)

    def _sql(self, statement: CompiledStatement, params: dict[str, Any]) -> tuple[str, list[Any]]:
        """The driver SQL and positional values of ``statement``."""
        sql, names = statement.compiled(self.engine.dialect)
        return sql, [params.get(name, default) for name, default in names]

    async def _run(self, sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        if self._pool is None:
            raise RuntimeError(_NOT_OPEN)
        async with self._pool.acquire(timeout=POOL_TIMEOUT) as connection:
            if self._query_loggers:
                with _logging(connection, self._query_loggers):
                    return await connection.fetch(sql, *args)
            return await connection.fetch(sql, *args)

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise RuntimeError(_NOT_OPEN)
        async with self._pool.acquire(timeout=POOL_TIMEOUT) as connection:
            with _logging(connection, self._query_loggers):
                yield connection


class DirectTransaction:
    """Statements of one :meth:`DirectPool.transaction`, on its connection.

    Args:
        pool: The pool the transaction belongs to.
        connection: Its connection (asyncpg's, or a SQLAlchemy Core one).
    """

    def __init__(self, pool: DirectPool, connection: asyncpg.Connection | AsyncConnection) -> None:
        """Run statements of ``pool`` on ``connection``."""
        self._pool = pool
        self._connection = connection

    async def fetch(self, statement: CompiledStatement, **params: Any) -> Sequence[Sequence[Any]]:
        """Run ``statement`` with ``params`` bound and return its rows.

        Raises:
            DuplicateKeyError: A unique constraint refused a row.
            IntegrityError: Another constraint refused it.
        """
        connection = self._connection
        if self._pool.direct:
            sql, args = self._pool._sql(statement, params)
            with _refusals():
                return await connection.fetch(sql, *args)  # type: ignore[union-attr]
        with wrap_sqlalchemy_exception(dialect_name=self._pool.dialect_name):
            return (await connection.execute(statement.statement, params)).all()  # type: ignore[union-attr]

    async def insert_rows(
        self, statement: CompiledStatement, rows: Sequence[dict[str, Any]]
    ) -> Sequence[Sequence[Any]]:
        """Insert ``rows`` (each with the same keys) in one run of ``statement``.

        On PostgreSQL each bound parameter gets the list of that key's values, one per row:
        the statement reads them with ``unnest``, so it is prepared once whatever the number
        of rows. Through Core ``statement`` is a plain ``INSERT``, sent as one multi-row
        ``VALUES``.

        Args:
            statement: The ``INSERT`` (with ``RETURNING``: without it Core sends one per row).
            rows: The rows' values; at least one.

        Returns:
            The rows it returned.
        """
        if self._pool.direct:
            return await self.fetch(statement, **{name: [row[name] for row in rows] for name in rows[0]})
        with wrap_sqlalchemy_exception(dialect_name=self._pool.dialect_name):
            return (await self._connection.execute(statement.statement, list(rows))).all()  # type: ignore[union-attr]


_NOT_OPEN = "DirectPool.open() was not called (it is an on_startup hook)"


@contextmanager
def _logging(connection: asyncpg.Connection, loggers: list[QueryLogger]) -> Iterator[None]:
    """``connection`` calls ``loggers`` after each statement while the block runs."""
    with ExitStack() as stack:
        for callback in loggers:
            stack.enter_context(connection.query_logger(callback))
        yield


@contextmanager
def _refusals() -> Iterator[None]:
    """Raise asyncpg's constraint violations as advanced-alchemy's errors (answered ``409``)."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateKeyError(detail="A row with this key already exists") from exc
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(detail="The row breaks a constraint") from exc


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
