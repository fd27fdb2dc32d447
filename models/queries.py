"""Small database helpers shared by the API and the activities."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

MAX_BIND_PARAMETERS = 30_000


async def insert_ignoring_conflicts(
    session: AsyncSession, table: type[SQLModel], rows: list[dict[str, Any]]
) -> int:
    """INSERT ... ON CONFLICT DO NOTHING: idempotent inserts keyed by a unique constraint. Returns rows added."""
    if not rows:
        return 0
    dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    primary_key = list(table.__table__.primary_key.columns)  # type: ignore[attr-defined]
    # One statement binds every value: keep each within what the drivers take (SQLite 32,766, psycopg 65,535).
    per_statement = max(1, MAX_BIND_PARAMETERS // max(1, len(rows[0])))
    inserted = 0
    for start in range(0, len(rows), per_statement):
        # RETURNING counts what was really inserted (rowcount is not reliable for multi-row inserts).
        statement = (
            builder(table)
            .values(rows[start : start + per_statement])
            .on_conflict_do_nothing()
            .returning(*primary_key)
        )
        inserted += len((await session.exec(statement)).all())
    return inserted


async def upsert(
    session: AsyncSession, table: type[SQLModel], row: dict[str, Any], update: list[str]
) -> None:
    """INSERT, or UPDATE the given columns when the primary key exists: safe when writers race."""
    dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    primary_key = [column.name for column in table.__table__.primary_key.columns]  # type: ignore[attr-defined]
    statement = builder(table).values(row)
    statement = statement.on_conflict_do_update(
        index_elements=primary_key, set_={name: getattr(statement.excluded, name) for name in update}
    )
    await session.exec(statement)


def for_update(session: AsyncSession) -> bool:
    """Whether row locks mean anything here (SQLite serialises writers itself)."""
    return session.bind is not None and session.bind.dialect.name == "postgresql"
