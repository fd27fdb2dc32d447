"""Small database helpers shared by the API and the activities."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Row
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

MAX_BIND_PARAMETERS = 30_000

Table = TypeVar("Table", bound=SQLModel)


def _insert_builder(session: AsyncSession) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def insert_ignoring_conflicts(
    session: AsyncSession, table: type[SQLModel], rows: list[dict[str, Any]]
) -> int:
    """INSERT ... ON CONFLICT DO NOTHING: idempotent inserts keyed by a unique constraint. Returns rows added."""
    primary_key = list(table.__table__.primary_key.columns)  # type: ignore[attr-defined]
    return len(await inserted_ignoring_conflicts(session, table, rows, *primary_key))


async def inserted_ignoring_conflicts(
    session: AsyncSession, table: type[SQLModel], rows: list[dict[str, Any]], *returning: Any
) -> list[Row[Any]]:
    """INSERT ... ON CONFLICT DO NOTHING, returning these columns of the rows really inserted (a row whose key is
    there already, or comes earlier in `rows`, is not)."""
    if not rows:
        return []
    builder = _insert_builder(session)
    # One statement binds every value: keep each within what the drivers take (SQLite 32,766, psycopg 65,535).
    per_statement = max(1, MAX_BIND_PARAMETERS // max(1, len(rows[0])))
    inserted: list[Row[Any]] = []
    for start in range(0, len(rows), per_statement):
        # RETURNING says what was really inserted (rowcount is not reliable for multi-row inserts).
        statement = (
            builder(table)
            .values(rows[start : start + per_statement])
            .on_conflict_do_nothing()
            .returning(*returning)
        )
        inserted.extend((await session.exec(statement)).all())
    return inserted


async def insert_or_none(session: AsyncSession, table: type[Table], row: dict[str, Any]) -> Table | None:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING the row, in one round trip: the row as stored (an object of the
    session), or None when a row with its key was there before."""
    statement = _insert_builder(session)(table).values(row).on_conflict_do_nothing().returning(table)
    stored: Table | None = (await session.scalars(statement)).one_or_none()
    return stored


async def upsert(
    session: AsyncSession, table: type[SQLModel], row: dict[str, Any], update: list[str]
) -> None:
    """INSERT, or UPDATE the given columns when the primary key exists: safe when writers race."""
    builder = _insert_builder(session)
    primary_key = [column.name for column in table.__table__.primary_key.columns]  # type: ignore[attr-defined]
    statement = builder(table).values(row)
    statement = statement.on_conflict_do_update(
        index_elements=primary_key, set_={name: getattr(statement.excluded, name) for name in update}
    )
    await session.exec(statement)


def for_update(session: AsyncSession) -> bool:
    """Whether row locks mean anything here (SQLite serialises writers itself)."""
    return session.bind is not None and session.bind.dialect.name == "postgresql"
