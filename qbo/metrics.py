"""Prometheus metrics of the calls to Intuit, in every process that makes them (workers and the API).

Labels are bounded: the company (realm id, one per connected company), an operation named by the code (entity
kinds, never ids or query text) and an outcome from a fixed list. No invoice ids, names or emails.
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Histogram

from qbo.errors import (
    QboAuthenticationError,
    QboAuthorizationError,
    QboError,
    QboServerError,
    QboThrottled,
    QboUnavailable,
)

# Outcomes of one HTTP request to the Accounting API.
OK = "ok"
THROTTLED = "throttled"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
FAULT = "fault"  # a 4xx QuickBooks explains (validation, stale object, not found)
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"

# Intuit answers within a second or two; throttled or slow companies take longer, up to the client's timeout.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_WAIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)

CALLS = Counter(
    "qbo_sync_quickbooks_calls",
    "HTTP requests to QuickBooks' Accounting API, by company, operation and outcome",
    ["realm", "operation", "outcome"],
)
CALL_SECONDS = Histogram(
    "qbo_sync_quickbooks_call_seconds",
    "Latency of HTTP requests to QuickBooks' Accounting API (from sending to the answer), by operation",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
THROTTLES = Counter(
    "qbo_sync_quickbooks_throttled",
    "Requests QuickBooks refused for its rate limits (429, or the older 403 with code 3001), by company",
    ["realm"],
)
LIMITER_WAIT_SECONDS = Histogram(
    "qbo_sync_quickbooks_limiter_wait_seconds",
    "Time a call waited for the company's budget (10 in flight, 500 a minute) before it was sent",
    buckets=_WAIT_BUCKETS,
)
LIMITER_WAIT_TOTAL = Counter(
    "qbo_sync_quickbooks_limiter_wait_seconds_by_company",
    "Seconds calls waited for the company's budget, by company",
    ["realm"],
)
OAUTH_CALLS = Counter(
    "qbo_sync_quickbooks_oauth_calls",
    "Calls to Intuit's OAuth endpoints (code exchange, refresh, revoke), by outcome",
    ["operation", "outcome"],
)

_FROM = re.compile(r"\bFROM\s+([A-Za-z]+)", re.IGNORECASE)


def query_operation(statement: str) -> str:
    """`query:Customer` for `SELECT * FROM Customer WHERE ...`: the entity kind only, never the query's text."""
    match = _FROM.search(statement)
    entity = match.group(1) if match else ""
    return f"query:{entity}" if entity.isalpha() and len(entity) <= 32 else "query"


def outcome_of(error: QboError) -> str:
    if isinstance(error, QboThrottled):
        return THROTTLED
    if isinstance(error, QboAuthenticationError):
        return UNAUTHORIZED
    if isinstance(error, QboAuthorizationError):
        return FORBIDDEN
    if isinstance(error, QboServerError):
        return SERVER_ERROR
    if isinstance(error, QboUnavailable):
        return TIMEOUT if error.timed_out else UNREACHABLE
    return FAULT


def record_call(realm_id: str, operation: str, outcome: str, seconds: float) -> None:
    CALLS.labels(realm_id, operation, outcome).inc()
    CALL_SECONDS.labels(operation).observe(seconds)
    if outcome == THROTTLED:
        THROTTLES.labels(realm_id).inc()


def record_limiter_wait(realm_id: str, seconds: float) -> None:
    LIMITER_WAIT_SECONDS.observe(seconds)
    LIMITER_WAIT_TOTAL.labels(realm_id).inc(seconds)
