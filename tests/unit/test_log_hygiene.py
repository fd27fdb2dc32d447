"""What processes print holds no personal data or secrets: SQL errors, request lines, chatty libraries."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from logging_setup import configure_logging
from models.db import create_engine


@pytest.mark.parametrize("where", ["sqlite", "test database"])
async def test_a_failing_statement_never_shows_its_parameters(
    where: str, tmp_path: Path, migrated_database: str
) -> None:
    url = f"sqlite:///{tmp_path / 'errors.db'}" if where == "sqlite" else migrated_database
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as excinfo:
                await connection.execute(
                    text("SELECT * FROM no_such_table WHERE email = :email"), {"email": "grace@example.com"}
                )
    finally:
        await engine.dispose()
    # The statement is shown (it has placeholders only), its values are not: errors end up in logs and failures.
    assert "no_such_table" in str(excinfo.value)
    assert "grace@example.com" not in str(excinfo.value)


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_request_lines_are_logged_without_their_query_strings() -> None:
    configure_logging("DEBUG")
    # A handler on the loggers themselves: an in-process uvicorn (other tests) stops its access log propagating.
    kept = Kept()
    loggers = [logging.getLogger(name) for name in ("httpx", "uvicorn.access")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(kept)
        logger.setLevel(logging.DEBUG)
    try:
        url = httpx.URL(
            "http://127.0.0.1:8900/v3/company/1/query?query=SELECT+%2A+WHERE+Email+%3D+%27grace%40x.com%27"
        )
        logging.getLogger("httpx").info('HTTP Request: %s %s "%s %d %s"', "GET", url, "HTTP/1.1", 200, "OK")
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            "/oauth/quickbooks/callback?code=AB11secretcode&state=s3cr3tstate&realmId=1",
            "1.1",
            303,
        )
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(kept)
            logger.setLevel(level)
    logged = "\n".join(kept.lines)
    assert "/v3/company/1/query?[query hidden]" in logged
    assert "/oauth/quickbooks/callback?[query hidden] HTTP/1.1" in logged
    for secret in ("grace", "AB11secretcode", "s3cr3tstate"):
        assert secret not in logged


def test_libraries_that_print_data_stay_quiet_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    configure_logging("DEBUG")
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("httpcore.http11").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("sqlalchemy.engine.Engine").isEnabledFor(logging.INFO)
    assert logging.getLogger("qbo.client").isEnabledFor(logging.DEBUG)
