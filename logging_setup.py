"""Logging for every process (API, worker, codec server): one format, and what keeps personal data out.

LOG_LEVEL=DEBUG is for our own code. Libraries that would print data at that level (SQL rows and parameters,
request URLs with their query strings) are held back here, whatever the level.
"""

from __future__ import annotations

import logging
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HIDDEN_QUERY = "?[query hidden]"

# The most these loggers may say, whatever LOG_LEVEL is. (SQLAlchemy holds its own loggers at WARNING unless
# `echo` is set, which would print parameters and rows: we never set it.)
LIBRARY_CEILINGS = {
    # At DEBUG it logs every call with its SQL and parameters (client names and emails).
    "aiosqlite": logging.INFO,
    # Its DEBUG traces print every response's headers.
    "httpcore": logging.INFO,
}
# Loggers that print request lines: uvicorn's access log (an OAuth callback's query holds the authorization code
# and state) and httpx's "HTTP Request: GET <url>" (QuickBooks queries hold client emails in theirs).
REQUEST_LINE_LOGGERS = ("uvicorn.access", "httpx")


class HideQueryStrings(logging.Filter):
    """Drops the query string of any URL or path in a record's arguments; paths carry ids only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        return True


def _without_query(value: Any) -> Any:
    # httpx logs an httpx.URL, uvicorn a str; both render the query after the first "?".
    text = str(value)
    if "?" not in text or not (text.startswith("/") or "://" in text):
        return value
    return text.split("?", 1)[0] + HIDDEN_QUERY


_HIDE_QUERY_STRINGS = HideQueryStrings()


def configure_logging(level: str) -> None:
    """Idempotent: uvicorn may have configured its own loggers already; the filters survive that."""
    logging.basicConfig(level=level, format=FORMAT)
    for name, ceiling in LIBRARY_CEILINGS.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(ceiling, logger.getEffectiveLevel()))
    for name in REQUEST_LINE_LOGGERS:
        logger = logging.getLogger(name)
        if _HIDE_QUERY_STRINGS not in logger.filters:
            logger.addFilter(_HIDE_QUERY_STRINGS)
