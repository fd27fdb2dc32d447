"""JSON errors with stable codes: `{"error": {"code": ..., "message": ...}}` for every failure."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError

from models.bounds import NO_NUL_MESSAGE, NO_NUL_PATTERN
from models.schemas import ErrorResponse

logger = logging.getLogger(__name__)

# Starlette's own errors (unknown route, wrong method) get codes too.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


# How long a client should wait before retrying a 503 (the database or Temporal did not answer).
RETRY_AFTER_SECONDS = 5
UNAVAILABLE_MESSAGE = "The service is briefly unavailable; try again in a few seconds."
# What a dependency that does not answer raises: connection refused or lost, pool exhausted, a database busy
# (SQLite's lock) or cancelling. Integrity and data errors are not among them: they are bugs, and stay 500s.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.DisconnectionError,
)


_ERROR_DESCRIPTIONS = {
    400: "The body could not be read as what the route takes (`malformed_payload`).",
    401: "A missing or unknown token (`unauthorized`), or a webhook signature that does not match "
    "(`invalid_signature`).",
    403: "The token may not do this (`forbidden`), or the plan does not allow it (`plan_required`).",
    404: "The account or invoice is unknown (`account_not_found`, `invoice_not_found`).",
    409: "The request conflicts with the current state (the code says which).",
    413: "The body is too large (`payload_too_large`, `invoice_too_large`).",
    422: "The request is not valid (`invalid_request`): `details` lists each field and its problem.",
    503: "The database or Temporal did not answer (`temporarily_unavailable`, `not_ready`), or the database's "
    "schema is not this release's (`schema_mismatch`, readiness only); retry after `Retry-After` seconds.",
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}},
}


def error_responses(
    *statuses: int, codes: Mapping[int, Sequence[str]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route's errors: each is an ErrorResponse; `codes` names the codes a status
    carries on this route where they are not the usual ones."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = _ERROR_DESCRIPTIONS[status]
        if codes and status in codes:
            description += " Codes here: " + ", ".join(f"`{code}`" for code in codes[status]) + "."
        documented[status] = {"model": ErrorResponse, "description": description}
        if status in _ERROR_HEADERS:
            documented[status]["headers"] = _ERROR_HEADERS[status]
    return documented


# What every route of an account can answer besides its own errors.
ACCOUNT_ROUTE_ERRORS = (401, 403, 404, 422, 503)


class ApiError(Exception):
    """An error the API reports as JSON; raise it from routes and dependencies."""

    def __init__(
        self, status_code: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status_code: int, code: str, message: str, *, details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:  # fmt: skip
    body = ErrorResponse.model_validate({"error": {"code": code, "message": message, "details": details}})
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status_code, headers=headers)


def _problem(error: dict[str, Any]) -> str:
    if (
        error.get("type") == "string_pattern_mismatch"
        and (error.get("ctx") or {}).get("pattern") == NO_NUL_PATTERN
    ):
        return NO_NUL_MESSAGE
    return str(error.get("msg", ""))


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for error in exc.errors():
        # Never echo the input back: it may be a secret or personal data.
        details.append(
            {"field": ".".join(str(part) for part in error.get("loc", ())), "problem": _problem(error)}
        )
    return details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 503:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS), **(headers or {})}
        return error_response(exc.status_code, exc.code, exc.message, headers=headers)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The exception's text may carry SQL parameters (personal data) or addresses: its type says enough.
        cause = getattr(exc, "orig", None) or exc
        logger.warning(
            "dependency unavailable on %s %s: %s", request.method, request.url.path, type(cause).__name__
        )
        return error_response(
            503,
            "temporarily_unavailable",
            UNAVAILABLE_MESSAGE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _unavailable)
    # A backstop: routes answer Temporal's errors themselves where they mean something else.
    app.add_exception_handler(RPCError, _unavailable)
    app.add_exception_handler(RPCTimeoutOrCancelledError, _unavailable)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        summary = "; ".join(f"{item['field']}: {item['problem']}" for item in details[:5])
        return error_response(422, "invalid_request", f"The request is not valid: {summary}", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI's answer to a body json.loads cannot take (not UTF-8, too deep, a 5000-digit number): the
            # same 422 as any other body that is not JSON.
            return error_response(422, "invalid_request", "The request is not valid: the body is not JSON.")
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")
