"""Database engine and sessions: async SQLAlchemy on PostgreSQL (psycopg 3) or the embedded SQLite file."""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool
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


def ensure_sqlite_directory(url: str) -> None:
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
        ensure_sqlite_directory(url)
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
        ensure_sqlite_directory(url)
    command.upgrade(alembic_config(url), "head")


# --- The schema this code was written for ---------------------------------------------------------------

ALEMBIC_VERSION_TABLE = "alembic_version"
UPGRADE_ADVICE = "run `alembic upgrade head` from the repository root (or the image's migrate step) first"


class SchemaMismatch(RuntimeError):
    """The database's schema is not this code's (behind, ahead, or never migrated): the process must not start.
    The message names revisions only, never where the database is."""


@lru_cache
def _revisions() -> tuple[str, frozenset[str]]:
    """This code's head revision and every revision it knows (the migrations do not change while it runs)."""
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    head = scripts.get_current_head()
    if head is None:
        raise RuntimeError("migrations/ holds no revision")
    return head, frozenset(revision.revision for revision in scripts.walk_revisions())


def schema_problem(current: tuple[str, ...]) -> str | None:
    """What is wrong with a database at these Alembic revisions for this code, in words; None if nothing."""
    head, known = _revisions()
    if current == (head,):
        return None
    if not current:
        return f"The database has no schema yet (no Alembic revision); this code needs revision {head}: {UPGRADE_ADVICE}."
    at = ", ".join(current)
    unknown = [revision for revision in current if revision not in known]
    if unknown:
        return (
            f"The database schema is at revision {at}, which this code does not know (its newest is {head}): a "
            "newer release migrated it. Run that release, or first downgrade the database with that release "
            f"(`alembic downgrade {head}`)."
        )
    return f"The database schema is at revision {at}, behind this code, which needs revision {head}: {UPGRADE_ADVICE}."


def _current_revisions(connection: Connection) -> tuple[str, ...]:
    # Alembic's own table, read directly: its MigrationContext logs two INFO lines each time (readiness is
    # polled).
    if not inspect(connection).has_table(ALEMBIC_VERSION_TABLE):
        return ()
    return tuple(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


async def connection_schema_problem(connection: AsyncConnection) -> str | None:
    """`schema_problem` of the database this connection reaches (readiness checks it on the API's pool)."""
    return schema_problem(await connection.run_sync(_current_revisions))


async def check_schema(url: str) -> None:
    """Raise SchemaMismatch unless the database is at this code's head revision. A database that does not
    answer raises sqlalchemy's OperationalError."""
    if is_sqlite(url):
        ensure_sqlite_directory(url)
    engine = create_async_engine(
        async_database_url(url),
        poolclass=NullPool,
        hide_parameters=True,
        connect_args={} if is_sqlite(url) else {"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )
    try:
        async with engine.connect() as connection:
            problem = await connection_schema_problem(connection)
    finally:
        await engine.dispose()
    if problem:
        raise SchemaMismatch(problem)


async def refuse_mismatched_schema(url: str, *, log: logging.Logger, wait: bool) -> None:
    """Called by the API and the worker as they start: a schema that is not this code's is a SchemaMismatch
    (logged, then the caller exits non-zero), not a process answering 500s.

    A database that does not answer is waited for with backoff (up to every 30 s) when `wait` (the worker, which
    can do nothing without it); otherwise (the API, which answers 503 meanwhile) it is left to readiness, which
    checks the schema whenever the database answers.
    """
    delay = 1.0
    while True:
        try:
            await check_schema(url)
            return
        except SchemaMismatch as exc:
            log.critical("%s", exc)
            raise
        except (OperationalError, OSError) as exc:
            if not wait:
                log.warning(
                    "the database does not answer (%s); its schema is checked by readiness once it does",
                    type(exc).__name__,
                )
                return
            log.warning(
                "the database does not answer yet (%s); trying again in %.0f s", type(exc).__name__, delay
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
