"""Logging for every process (API, worker, codec server): one format, the ids a line is about, and what keeps
personal data out.

LOG_FORMAT=json (the default) writes one JSON object a line (python-json-logger), for the log collector: `time`,
`level`, `logger`, `message`, and where they apply `workflow_id`, `run_id`, `workflow_type`, `activity_type`,
`attempt`, `account_id`, `realm_id`, `invoice_id` (from Temporal's workflow and activity context, the ids the
workflow id was built from, what an activity bound with `bind_log_fields`, the API route's parameters), plus
`http_method` and `http_path` (never the query string) in the API. LOG_FORMAT=text is the plain line for a human
at a terminal (`make run`). Never tokens, names or emails: ids only.

LOG_LEVEL=DEBUG is for our own code. Libraries that would print data at that level (SQL rows and parameters,
request URLs with their query strings) are held back here, whatever the level.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import MutableMapping
from typing import Any, Literal

import temporalio.activity
import temporalio.workflow
from pythonjsonlogger.json import JsonFormatter

from workflows.ids import business_keys

LogFormat = Literal["json", "text"]
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(message)s"
HIDDEN_QUERY = "?[query hidden]"
# The fields a line may carry about what it concerns; anything else a record's `extra` holds stays out.
CONTEXT_FIELDS = (
    "workflow_id",
    "run_id",
    "workflow_type",
    "activity_type",
    "attempt",
    "account_id",
    "realm_id",
    "invoice_id",
    "http_method",
    "http_path",
)
# Route parameters the API's lines carry (the ids in its paths).
_ROUTE_PARAMETERS = ("account_id", "invoice_id")

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


# What an activity bound (`bind_log_fields`), and the API request under way (its ASGI scope).
_BOUND: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "qbo_sync_log_fields", default=None
)
_REQUEST: contextvars.ContextVar[MutableMapping[str, Any] | None] = contextvars.ContextVar(
    "qbo_sync_log_request", default=None
)


def bind_log_fields(**fields: str | None) -> None:
    """Ids the lines logged from here on in this task concern (an activity's realm, once it knows it).

    Activities run in tasks of their own, so what one binds never reaches another."""
    bound = dict(_BOUND.get() or {})
    bound.update({name: value for name, value in fields.items() if value and name in CONTEXT_FIELDS})
    _BOUND.set(bound)


class RequestContext:
    """ASGI middleware: the API's lines name the request's method, path and route parameters (the ids).

    Routing adds `path_params` to this very scope, so lines logged by a route see them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _REQUEST.set(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            _REQUEST.reset(token)


class ContextFields(logging.Filter):
    """Adds the ids a line concerns as top-level fields, and drops Temporal's nested dicts they came from."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields: dict[str, Any] = {}
        # uvicorn's copy of the message with terminal colours, for its own formatter only.
        record.__dict__.pop("color_message", None)
        workflow = record.__dict__.pop("temporal_workflow", None)
        activity = record.__dict__.pop("temporal_activity", None)
        if isinstance(workflow, dict):
            fields.update(
                workflow_id=workflow.get("workflow_id"),
                run_id=workflow.get("run_id"),
                workflow_type=workflow.get("workflow_type"),
                attempt=workflow.get("attempt"),
            )
        elif isinstance(activity, dict):
            fields.update(_activity_fields(activity))
        elif temporalio.activity.in_activity():
            info = temporalio.activity.info()
            fields.update(
                workflow_id=info.workflow_id,
                run_id=info.workflow_run_id,
                workflow_type=info.workflow_type,
                activity_type=info.activity_type,
                attempt=info.attempt,
            )
        if isinstance(fields.get("workflow_id"), str):
            fields.update(business_keys(fields["workflow_id"]))
        fields.update(_BOUND.get() or {})
        scope = _REQUEST.get()
        if scope is not None:
            fields.update(http_method=scope.get("method"), http_path=scope.get("path"))
            parameters = scope.get("path_params") or {}
            fields.update({name: parameters[name] for name in _ROUTE_PARAMETERS if name in parameters})
        for name, value in fields.items():
            if value is not None and value != "":
                setattr(record, name, value)
        return True


def _activity_fields(activity: dict[str, Any]) -> dict[str, Any]:
    return {
        "workflow_id": activity.get("workflow_id"),
        "run_id": activity.get("workflow_run_id"),
        "workflow_type": activity.get("workflow_type"),
        "activity_type": activity.get("activity_type"),
        "attempt": activity.get("attempt"),
    }


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs (and replaces when called again)."""


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "text":
        return logging.Formatter(FORMAT)
    return JsonFormatter(
        JSON_FIELDS,
        # `time`: ISO 8601 in UTC, with microseconds.
        timestamp="time",
        rename_fields={"levelname": "level", "name": "logger"},
        # Names as they are, not \u-escaped: what a line holds stays readable, and auditable.
        json_ensure_ascii=False,
    )


def configure_logging(level: str, log_format: LogFormat = "json") -> None:
    """Idempotent. Every line goes to stderr in one format: uvicorn's own loggers (which it configured before
    loading the app) and the Temporal SDK's are made to go through the same handler and filters."""
    handler = _OurHandler()
    handler.setFormatter(formatter(log_format))
    handler.addFilter(ContextFields())
    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for theirs in list(logger.handlers):
            logger.removeHandler(theirs)
        logger.propagate = True
    # The ids are fields of their own in JSON; in text they stay where the SDK puts them, at the message's end.
    temporalio.workflow.logger.workflow_info_on_message = log_format == "text"
    temporalio.activity.logger.activity_info_on_message = log_format == "text"
    for name, ceiling in LIBRARY_CEILINGS.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(ceiling, logger.getEffectiveLevel()))
    for name in REQUEST_LINE_LOGGERS:
        logger = logging.getLogger(name)
        if _HIDE_QUERY_STRINGS not in logger.filters:
            logger.addFilter(_HIDE_QUERY_STRINGS)
