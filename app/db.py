"""Database wiring: the SQLAlchemy config, the model base, and migrations at start-up."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AlembicCommands,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from anyio import to_thread
from sqlalchemy import event

if TYPE_CHECKING:
    from litestar import Litestar

    from app.config import Settings

logger = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock that serialises migrations across replicas.
MIGRATION_LOCK_KEY = 7_210_391_117


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Turn on foreign keys (cascades) and WAL for every SQLite connection."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_db_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    """Build the advanced-alchemy config for the configured database.

    Sessions are only closed after a response (no blanket COMMIT): services commit their
    own writes, so a read never pays for a pointless COMMIT round trip.

    Args:
        settings: The application settings.

    Returns:
        The SQLAlchemy config used by the plugin, the CLI and the migrations.
    """
    if settings.is_sqlite:
        engine_config = EngineConfig(connect_args={"timeout": 30})
    else:
        engine_config = EngineConfig(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={"server_settings": {"application_name": "contacts-api", "jit": "off"}},
        )
    config = SQLAlchemyAsyncConfig(
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
    if settings.is_sqlite:
        event.listen(config.get_engine().sync_engine, "connect", _sqlite_pragmas)
    return config


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
