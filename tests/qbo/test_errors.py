"""Fault parsing: every error body form in the reference, decided by HTTP status first."""

from __future__ import annotations

import json

import pytest

from qbo.errors import (
    InvalidClient,
    InvalidGrant,
    QboAuthenticationError,
    QboAuthorizationError,
    QboDuplicateDocNumber,
    QboDuplicateName,
    QboError,
    QboNotFound,
    QboOAuthError,
    QboServerError,
    QboStaleObject,
    QboThrottled,
    QboUnavailable,
    QboValidationError,
    oauth_error,
    parse_fault,
    parse_retry_after,
)

JSON = {"content-type": "application/json;charset=UTF-8", "intuit_tid": "1-abc-tid"}


def fault_body(code: str, message: str, detail: str = "", fault_type: str = "ValidationFault") -> bytes:
    error = {"Message": message, "Detail": detail, "code": code, "element": ""}
    return json.dumps(
        {"Fault": {"Error": [error], "type": fault_type}, "time": "2018-03-20T20:15:59.571-07:00"}
    ).encode()


# The reference's §6.1 sample.
OBJECT_NOT_FOUND = fault_body(
    "610",
    "Object Not Found",
    "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, "
    "customers, items, vendors or employees.",
)
# The reference's §6.1 gateway 401, as a 2024 production body (token shortened in the source).
GATEWAY_401 = (
    b'{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":"message=AuthenticationFailed; '
    b'errorCode=003200; statusCode=401","detail":"Token expired: AB0173...","code":"3200","element":null}],'
    b'"type":"AUTHENTICATION"},"report":null,"queryResponse":null,"batchItemResponse":[],"attachableResponse":[],'
    b'"syncErrorResponse":null,"requestId":null,"time":1730024394085,"status":null,"cdcresponse":[]}'
)
# The reference's §6.1 XML throttle body.
THROTTLE_XML = (
    b'<IntuitResponse time="2024-01-01T00:00:00.000-08:00" xmlns="http://schema.intuit.com/finance/v3">\n'
    b'  <Fault type="SERVICE"><Error code="3001">\n'
    b"    <Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>\n"
    b"    <Detail>The request limit was reached.  Try again later</Detail></Error></Fault></IntuitResponse>"
)


def test_object_not_found_is_a_validation_error_with_all_fields() -> None:
    error = parse_fault(400, JSON, OBJECT_NOT_FOUND)
    assert type(error) is QboNotFound
    assert isinstance(error, QboValidationError)
    assert error.status == 400
    assert error.code == "610"
    assert error.message == "Object Not Found"
    assert error.detail.startswith("Object Not Found : Something you're trying to use")
    assert error.element is None
    assert error.fault_type == "ValidationFault"
    assert error.intuit_tid == "1-abc-tid"
    assert str(error) == "QuickBooks error HTTP 400 code 610: ValidationFault [intuit_tid 1-abc-tid]"
    assert error.description.startswith("Object Not Found: Object Not Found : Something you're trying to use")
    assert error.readable == f"{error}: {error.description}"


def test_intuits_words_never_reach_the_exception_text() -> None:
    # Intuit's details can echo what was sent; exception texts end up in logs and Temporal failures.
    body = fault_body(
        "6240",
        "Duplicate Name Exists Error",
        "The name supplied already exists. : Grace Hopper (grace@example.com)",
    )
    error = parse_fault(400, {"intuit_tid": "1-xyz"}, body)
    for text in (str(error), repr(error), *map(str, error.args)):
        assert "Grace" not in text and "grace@example.com" not in text
        assert "Duplicate Name" not in text
    assert str(error) == "QuickBooks error HTTP 400 code 6240: ValidationFault [intuit_tid 1-xyz]"
    assert "Grace Hopper (grace@example.com)" in error.description
    assert "Grace Hopper" in error.readable
    # Our own errors keep their words.
    assert str(QboError("the response has no Invoice object", status=200)) == (
        "QuickBooks error HTTP 200: the response has no Invoice object"
    )


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("5010", "Stale Object Error", QboStaleObject),
        ("6240", "Duplicate Name Exists Error", QboDuplicateName),
        ("6140", "Duplicate Document Number Error", QboDuplicateDocNumber),
        ("6210", "Duplicate Document Number Error", QboDuplicateDocNumber),
        # Reference §9.7: the code is disputed, so the message alone is enough.
        ("6000", "Duplicate Document Number Error", QboDuplicateDocNumber),
        (
            "6000",
            "A business validation error has occurred while processing your request",
            QboValidationError,
        ),
        ("2020", "Required param missing, need to supply the required value for the API", QboValidationError),
        ("4000", "Error parsing query", QboValidationError),
        ("4001", "Invalid query", QboValidationError),
    ],
)
def test_validation_faults_map_by_code(code: str, message: str, expected: type[QboError]) -> None:
    error = parse_fault(400, JSON, fault_body(code, message, "some detail"))
    assert type(error) is expected
    assert error.code == code


def test_duplicate_name_keeps_the_detail_with_the_existing_id() -> None:
    body = fault_body("6240", "Duplicate Name Exists Error", "The name supplied already exists. : Id=58")
    error = parse_fault(400, JSON, body)
    assert isinstance(error, QboDuplicateName)
    assert error.detail == "The name supplied already exists. : Id=58"


def test_gateway_401_with_lower_case_keys_and_epoch_time() -> None:
    error = parse_fault(
        401, {"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'}, GATEWAY_401
    )
    assert type(error) is QboAuthenticationError
    assert error.code == "3200"
    assert error.fault_type == "AUTHENTICATION"
    assert "AuthenticationFailed" in error.message
    assert error.element is None


def test_token_fragments_in_a_401_never_reach_the_message() -> None:
    token = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..f3Kx9s8dQ2mZ0aB7"
    body = GATEWAY_401.replace(b"AB0173...", token.encode())
    error = parse_fault(401, {}, body)
    assert token not in str(error)
    assert token[:10] not in str(error)
    assert token not in error.detail and token not in error.readable
    assert "Token expired" in error.readable


def test_bearer_header_values_are_redacted_from_any_text() -> None:
    error = QboError("failed", detail="sent Authorization: Bearer abc.def-123 to the server")
    assert "abc.def-123" not in str(error)


def test_xml_throttle_body_on_429() -> None:
    error = parse_fault(429, {"content-type": "text/xml;charset=UTF-8", "Retry-After": "7"}, THROTTLE_XML)
    assert type(error) is QboThrottled
    assert error.code == "3001"
    assert error.fault_type == "SERVICE"
    assert error.message == "message=ThrottleExceeded; errorCode=003001; statusCode=429"
    assert error.detail == "The request limit was reached.  Try again later"
    assert error.retry_after == 7.0


def test_429_without_a_body_is_still_throttling() -> None:
    error = parse_fault(429, {}, b"")
    assert isinstance(error, QboThrottled)
    assert error.retry_after is None
    assert error.message == "HTTP 429"


def test_old_style_throttle_is_a_403_with_code_3001() -> None:
    body = fault_body("3001", "message=ThrottleExceeded; errorCode=003001; statusCode=403", "", "SERVICE")
    assert isinstance(parse_fault(403, {}, body), QboThrottled)
    xml = THROTTLE_XML.replace(b"statusCode=429", b"statusCode=403")
    assert isinstance(parse_fault(403, {}, xml), QboThrottled)


def test_403_application_authorization_failed() -> None:
    body = fault_body(
        "3100",
        "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
        "",
        "AuthorizationFault",
    )
    error = parse_fault(403, JSON, body)
    assert type(error) is QboAuthorizationError
    assert error.code == "3100"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_with_a_system_fault(status: int) -> None:
    body = fault_body(
        "10000", "An application error has occurred while processing your request", "", "SystemFault"
    )
    error = parse_fault(status, JSON, body)
    assert type(error) is QboServerError
    assert error.status == status
    assert error.code == "10000"


def test_status_decides_even_when_the_body_disagrees() -> None:
    # A 503 from a load balancer carrying a validation-looking body is still a server error.
    assert type(parse_fault(503, {}, OBJECT_NOT_FOUND)) is QboServerError
    # A 400 whose body is a gateway 401 is still a validation error.
    assert type(parse_fault(400, {}, GATEWAY_401)) is QboValidationError


def test_non_json_bodies_keep_a_short_excerpt() -> None:
    html = b"<html><head><title>502 Bad Gateway</title></head><body>" + b"x" * 2000 + b"</body></html>"
    error = parse_fault(502, {"content-type": "text/html"}, html)
    assert type(error) is QboServerError
    assert error.message == "HTTP 502"
    assert "502 Bad Gateway" in error.detail
    assert len(error.detail) <= 300


def test_garbled_and_empty_bodies() -> None:
    assert type(parse_fault(400, {}, b"{not json")) is QboValidationError
    assert type(parse_fault(400, {}, b"[1, 2]")) is QboValidationError
    assert type(parse_fault(500, {}, b"\xff\xfe\x00")) is QboServerError
    error = parse_fault(404, {}, b"")
    assert type(error) is QboError
    assert str(error) == "QuickBooks error HTTP 404"


def test_oauth_style_body_on_an_api_call() -> None:
    error = parse_fault(401, {}, b'{"error":"invalid_token","error_description":"Token invalid"}')
    assert isinstance(error, QboAuthenticationError)
    assert error.message == "invalid_token"
    assert error.detail == "Token invalid"


def test_error_entry_may_be_a_single_object() -> None:
    body = b'{"Fault":{"Error":{"Message":"Stale Object Error","code":"5010"},"type":"ValidationFault"}}'
    assert isinstance(parse_fault(400, {}, body), QboStaleObject)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("7", 7.0), ("1.5", 1.5), ("-3", 0.0), ("soon", None), ("nan", None)],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_as_an_http_date() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 5, 5, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Tue, 05 May 2026 12:00:30 GMT", now=now) == 30.0


def test_unavailable_knows_whether_it_timed_out() -> None:
    error = QboUnavailable("no answer", timed_out=True)
    assert error.timed_out is True
    assert error.status is None
    assert QboUnavailable("reset").timed_out is False


def test_oauth_errors_by_code_without_secrets() -> None:
    grant = oauth_error("invalid_grant", "Token invalid", status=400, intuit_tid="tid-1")
    assert type(grant) is InvalidGrant
    assert isinstance(grant, QboOAuthError)
    assert (grant.error, grant.description, grant.status, grant.intuit_tid) == (
        "invalid_grant",
        "Token invalid",
        400,
        "tid-1",
    )
    assert str(grant) == "Intuit OAuth error invalid_grant (HTTP 400): Token invalid [intuit_tid tid-1]"
    assert type(oauth_error("invalid_client", None, status=401, intuit_tid=None)) is InvalidClient
    assert type(oauth_error("invalid_request", None, status=400, intuit_tid=None)) is QboOAuthError
    leaky = oauth_error(
        "invalid_grant",
        "Refresh token AB11758299344kJx8f2mQ9wZ3sdf7Yq0pLmN4vB6cX1zR8tE5uW expired",
        status=400,
        intuit_tid=None,
    )
    assert "AB11758299344kJx8f2mQ9wZ3sdf7Yq0pLmN4vB6cX1zR8tE5uW" not in str(leaky)
