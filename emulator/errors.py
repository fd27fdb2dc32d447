"""QuickBooks' error envelopes: the JSON Fault, the gateway's lower-case 401, the XML throttle, OAuth errors."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from emulator.clock import response_time

JSON_TYPE = "application/json;charset=UTF-8"
XML_TYPE = "text/xml;charset=UTF-8"

OBJECT_NOT_FOUND_DETAIL = (
    "Object Not Found : Something you're trying to use has been made inactive. "
    "Check the fields with accounts, customers, items, vendors or employees."
)
DUPLICATE_NAME_DETAIL = (
    "The name supplied already exists. : "
    "Another customer, vendor or employee is already using this name. Please use a different name."
)
BUSINESS_MESSAGE = "A business validation error has occurred while processing your request"


def dump(body: Any) -> bytes:
    """Compact JSON, as Intuit sends it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class QBOError(Exception):
    """A Fault the Accounting API answers with; `status` is the HTTP status (400 for validation)."""

    def __init__(
        self,
        code: str,
        message: str,
        detail: str,
        *,
        element: str = "",
        status: int = 400,
        fault_type: str = "ValidationFault",
    ) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.code = code
        self.message = message
        self.detail = detail
        self.element = element
        self.status = status
        self.fault_type = fault_type

    def body(self, now: datetime) -> dict[str, Any]:
        return fault_body(self.code, self.message, self.detail, self.element, self.fault_type, now)


def fault_body(
    code: str, message: str, detail: str, element: str, fault_type: str, now: datetime
) -> dict[str, Any]:
    error = {"Message": message, "Detail": detail, "code": code, "element": element}
    return {"Fault": {"Error": [error], "type": fault_type}, "time": response_time(now)}


def object_not_found() -> QBOError:
    return QBOError("610", "Object Not Found", OBJECT_NOT_FOUND_DETAIL)


def required_param(name: str) -> QBOError:
    return QBOError(
        "2020",
        "Required param missing, need to supply the required value for the API",
        f"Required parameter {name} is missing in the request",
        element=name,
    )


def invalid_property(name: str, why: str = "specified is unsupported or invalid") -> QBOError:
    return QBOError(
        "2010", "Request has invalid or unsupported property", f"Property Name:{name} {why}", element=name
    )


def string_length(name: str, maximum: int, supplied: int) -> QBOError:
    return QBOError(
        "2050",
        "String length is either shorter or longer than supported by specification",
        f"String length specified does not match the supported length. Min:0 Max:{maximum} "
        f"supplied length:{supplied}",
        element=name,
    )


def stale_object() -> QBOError:
    return QBOError(
        "5010",
        "Stale Object Error",
        "Stale Object Error : You and QuickBooks were working on this at the same time. "
        "QuickBooks finished before you did, so your work was not saved.",
    )


def duplicate_name(detail: str = DUPLICATE_NAME_DETAIL) -> QBOError:
    return QBOError("6240", "Duplicate Name Exists Error", detail)


def duplicate_doc_number(doc_number: str, txn_id: str) -> QBOError:
    return QBOError(
        "6140",
        "Duplicate Document Number Error",
        "Duplicate Document Number Error : You must specify a different number. This number has already "
        f"been used. DocNumber={doc_number} is assigned to TxnType=Invoice with TxnId={txn_id}",
    )


def business_error(detail: str, code: str = "6000") -> QBOError:
    return QBOError(code, BUSINESS_MESSAGE, f"Business Validation Error: {detail}")


def period_closed(close_date: str) -> QBOError:
    return QBOError(
        "6200",
        "Account Period Closed Error",
        f"Account Period Closed Error: The transaction date is on or before the closing date ({close_date}).",
    )


def unsupported_operation(operation: str, entity: str) -> QBOError:
    return QBOError(
        "500",
        "Unsupported Operation",
        f"Operation {operation} is not supported for {entity}.",
    )


def query_parse_error(detail: str) -> QBOError:
    return QBOError("4000", "Error parsing query", f"QueryParserError: {detail}")


def query_validation_error(detail: str) -> QBOError:
    return QBOError("4001", "Invalid query", f"QueryValidationError: {detail}")


def system_fault(
    message: str = "An application error has occurred while processing your request",
) -> QBOError:
    return QBOError(
        "10000",
        message,
        "System Failure Error: An unexpected error occurred while accessing or saving your data.",
        status=500,
        fault_type="SystemFault",
    )


def gateway_unauthorized(detail: str, now: datetime) -> dict[str, Any]:
    """The API gateway's 401: lower-case keys, null fields and an epoch-millisecond `time`."""
    return {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [
                {
                    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                    "detail": detail,
                    "code": "3200",
                    "element": None,
                }
            ],
            "type": "AUTHENTICATION",
        },
        "report": None,
        "queryResponse": None,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": None,
        "requestId": None,
        "time": int(now.timestamp() * 1000),
        "status": None,
        "cdcresponse": [],
    }


WWW_AUTHENTICATE = 'Bearer realm="Intuit", error="invalid_token"'


def authorization_fault(now: datetime, detail: str) -> dict[str, Any]:
    """403 for a token that is valid but not for this company."""
    return fault_body(
        "3100",
        "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
        detail,
        "",
        "AuthorizationFault",
        now,
    )


def throttle_xml(now: datetime) -> str:
    """Intuit answers throttling in XML even to JSON clients."""
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{escape(response_time(now))}">'
        '<Fault type="SERVICE"><Error code="3001">'
        "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
        "<Detail>The request limit was reached.  Try again later</Detail>"
        "</Error></Fault></IntuitResponse>"
    )


class OAuthError(Exception):
    """A standard OAuth 2.0 error from the token or revoke endpoint."""

    def __init__(self, error: str, description: str | None = None, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description is not None:
            # Intuit's mocks put the description first.
            body = {"error_description": self.description, "error": self.error}
        return body
