"""Database engine and sessions: async SQLAlchemy on PostgreSQL (psycopg 3) or the embedded SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

SessionFactory = async_sessionmaker[AsyncSession]
CONNECT_TIMEOUT_SECONDS = 10


def sync_database_url(url: str) -> str:
    """The URL Alembic and other synchronous tools use (psycopg 3 for Postgres, stdlib sqlite3)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database: {parsed.get_backend_name()} (use PostgreSQL or SQLite)")


def async_database_url(url: str) -> str:
    """The URL the async engine uses (psycopg 3 async for Postgres, aiosqlite for SQLite)."""
    parsed = make_url(sync_database_url(url))
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return parsed.render_as_string(hide_password=False)


def libpq_conninfo(url: str) -> str | None:
    """The PostgreSQL connection string for plain psycopg connections (None for SQLite)."""
    parsed = make_url(sync_database_url(url))
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the worker writes; the busy timeout turns lock contention into waiting.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    # A failed statement's error would otherwise carry its parameters (names, emails, encrypted tokens), and
    # errors end up in logs and in Temporal failures.
    if is_sqlite(url):
        _ensure_sqlite_directory(url)
        engine = create_async_engine(async_database_url(url), hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        async_database_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Errors are logged; what a statement was sent (names, emails) must not be in them.
        hide_parameters=True,
        # A database host that does not answer fails the request (503) instead of holding it forever.
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )


async def release_connection(session: AsyncSession) -> None:
    """End the session's transaction so its connection goes back to the pool, before a wait on another service.

    A request that waits on Temporal (an update a worker must answer, a start when Temporal is slow: seconds) must
    not hold a PostgreSQL connection meanwhile: enough such requests would drain the process's pool, and every
    other request would wait for a connection and fail (503 after the pool's timeout). Where it is called, what
    the session did before was reads, or writes that belong with them; rows stay usable (no expiry on commit).
    """
    if session.in_transaction():
        await session.commit()


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sync_database_url(url).replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    if is_sqlite(url):
        _ensure_sqlite_directory(url)
    command.upgrade(alembic_config(url), "head")
