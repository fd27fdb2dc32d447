"""Alembic environment: migrates the URL models.db.alembic_config sets, or else DATABASE_URL from settings.py
(`alembic upgrade head` from the repository root, through alembic.ini)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool
from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from models.db import ensure_sqlite_directory, is_sqlite, sync_database_url
from settings import get_settings

config = context.config
target_metadata = SQLModel.metadata

if config.config_file_name is not None:
    # The command line: alembic.ini says what it prints (its progress, never SQL parameters).
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or sync_database_url(get_settings().database_url)


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = database_url()
    if is_sqlite(url):
        ensure_sqlite_directory(url)
    connectable = create_engine(url, poolclass=pool.NullPool, hide_parameters=True)
    with connectable.connect() as connection:
        # Batch mode lets later ALTERs work on SQLite too.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
