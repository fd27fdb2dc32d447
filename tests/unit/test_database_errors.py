"""Database errors never carry what was sent: a 500 or a 503 logs them, and they may hold personal data."""

from __future__ import annotations

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from models.db import create_engine


async def test_database_errors_do_not_list_the_statements_parameters(migrated_database: str) -> None:
    engine = create_engine(migrated_database)
    try:
        async with engine.connect() as connection:
            with pytest.raises(sqlalchemy.exc.StatementError) as raised:
                # The first value cannot be bound on either driver; the second is what a client sent.
                await connection.execute(
                    text("SELECT :unbindable, :email"), {"unbindable": object(), "email": "ada@example.com"}
                )
        assert "ada@example.com" not in str(raised.value)
    finally:
        await engine.dispose()
