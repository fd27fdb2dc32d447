"""The Accounting API v3 client for one QuickBooks company (realm): reads, writes, query, CDC."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from qbo.environments import Environment, QboEndpoints, endpoints_for
from qbo.errors import (
    QboAuthenticationError,
    QboServerError,
    QboThrottled,
    QboUnavailable,
    intuit_tid_of,
    parse_fault,
    redact,
)
from qbo.limits import Admission, RealmLimiter
from qbo.metrics import OK, TIMEOUT, UNREACHABLE, outcome_of, query_operation, record_call

__all__ = [
    "CdcResult",
    "Environment",
    "QboClient",
    "QboEndpoints",
    "TokenSource",
    "endpoints_for",
    "quote",
    "request_id",
]

logger = logging.getLogger(__name__)

DEFAULT_MINOR_VERSION = 75
# Intuit documents at most 1000 rows per query page.
MAX_PAGE_SIZE = 1000
# Statements longer than this go in a POST body, far below any URL length limit on the way.
MAX_GET_STATEMENT = 1000
MAX_REQUEST_ID_LENGTH = 50
# Intuit returns at most this many objects per CDC call, without paging (reference §7.3).
CDC_MAX_OBJECTS = 1000
# The shortest wait after a throttle, even when Retry-After says 0.
MIN_THROTTLE_WAIT = 0.1
# A fixed namespace so the same parts give the same requestid in every process, forever.
_REQUEST_ID_NAMESPACE = uuid.UUID("0f4b7a1e-3c55-5d7e-9a2b-6b1c4d8e2f10")
_PAGING_WORDS = ("STARTPOSITION", "MAXRESULTS")
# Realm ids and object ids are digit strings; refusing "/", "?" and the like keeps them inside their path part.
_SAFE_PATH_PART = re.compile(r"^[A-Za-z0-9_-]+$")


class TokenSource(Protocol):
    """Where the client gets access tokens; the engine's implementation serializes refreshes per realm."""

    async def access_token(self) -> str:
        """A currently valid access token for the client's realm."""
        ...

    async def refresh_after_unauthorized(self, rejected: str) -> str:
        """A fresh access token after QuickBooks rejected `rejected` with 401, or raise."""
        ...


def request_id(*parts: str) -> str:
    """A deterministic idempotency key (a UUIDv5, 36 chars) for QuickBooks' `requestid` parameter."""
    if not parts:
        raise ValueError("request_id needs at least one part")
    # JSON keeps ("a:b", "c") and ("a", "b:c") apart.
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, json.dumps(list(parts), ensure_ascii=False)))


def quote(value: str) -> str:
    """A QuickBooks query string literal: `Bill's` becomes `'Bill\\'s'`.

    Backslashes are escaped first so a value ending in a backslash cannot escape the closing quote.
    """
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


@dataclass(frozen=True)
class CdcResult:
    """One ChangeDataCapture answer: changed objects, ids of deleted ones, and the server's time."""

    entities: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)
    server_time: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))

    @property
    def object_count(self) -> int:
        return sum(map(len, self.entities.values())) + sum(map(len, self.deleted.values()))

    @property
    def may_be_truncated(self) -> bool:
        """CDC answers at most 1000 objects and cannot page: at the cap, ask again with a shorter window."""
        return self.object_count >= CDC_MAX_OBJECTS


def parse_server_time(value: Any) -> datetime | None:
    """The `time` of a response: ISO-8601 with offset, or epoch milliseconds (the gateway's form)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def _entity_path(entity: str) -> str:
    if not entity or not entity.isalnum():
        raise ValueError(f"not a QuickBooks entity name: {entity!r}")
    return entity.lower()


def _entity_of(payload: dict[str, Any], entity: str) -> dict[str, Any]:
    """The object under the entity key of a response (`{"Invoice": {...}, "time": ...}`)."""
    value = payload.get(entity)
    if value is None:
        lowered = entity.lower()
        value = next((v for k, v in payload.items() if k.lower() == lowered), None)
    if not isinstance(value, dict):
        raise QboServerError(f"the response has no {entity} object", status=200)
    return value


def _rows_of(query_response: Any) -> list[dict[str, Any]]:
    """The entity array of a QueryResponse, whatever the entity; [] when QuickBooks left it out."""
    if not isinstance(query_response, dict):
        return []
    for value in query_response.values():
        if isinstance(value, list):
            return [row for row in value if isinstance(row, dict)]
    return []


def _has_paging(statement: str) -> bool:
    upper = statement.upper()
    return any(word in upper for word in _PAGING_WORDS)


class QboClient:
    """Calls the Accounting API of one realm.

    Every call goes through the realm's limiter slot, carries `minorversion`, and is logged at DEBUG
    without tokens or bodies. A 401 triggers one token refresh and one retry. Throttling (429, or the old
    403 + 3001) is waited out with `Retry-After` or jittered exponential backoff, calling `on_wait` before
    each wait, until `max_throttle_wait` seconds in total would be exceeded. Server errors and transport
    failures are raised at once: the caller owns the retry policy, and writes carry `requestid` so that a
    retry with the same id cannot duplicate anything.
    """

    def __init__(
        self,
        *,
        realm_id: str,
        api_base_url: str,
        tokens: TokenSource,
        http: httpx.AsyncClient,
        limiter: RealmLimiter,
        minor_version: int = DEFAULT_MINOR_VERSION,
        max_throttle_wait: float | None = 300.0,
        on_wait: Callable[[float], Awaitable[None]] | None = None,
        timeout: float = 30.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        if not _SAFE_PATH_PART.match(realm_id):
            raise ValueError(f"not a QuickBooks realm id: {realm_id!r}")
        self.realm_id = realm_id
        self._base = f"{api_base_url.rstrip('/')}/v3/company/{realm_id}"
        self._tokens = tokens
        self._http = http
        self._limiter = limiter
        self._minor_version = minor_version
        self._max_throttle_wait = max_throttle_wait
        self._on_wait = on_wait
        self._timeout = timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max

    # --- entities -----------------------------------------------------------------------------------------

    async def read(self, entity: str, entity_id: str) -> dict[str, Any]:
        payload = await self._call(
            "GET", f"{_entity_path(entity)}/{_path_id(entity_id)}", operation=f"read:{entity}"
        )
        return _entity_of(payload, entity)

    async def create(self, entity: str, body: dict[str, Any], *, request_id: str) -> dict[str, Any]:
        payload = await self._call(
            "POST", _entity_path(entity), json_body=body, request_id=request_id, operation=f"create:{entity}"
        )
        return _entity_of(payload, entity)

    async def update(self, entity: str, body: dict[str, Any], *, request_id: str) -> dict[str, Any]:
        """A full update, or a sparse one when the body has `"sparse": true`; needs Id and SyncToken."""
        if not body.get("Id") or body.get("SyncToken") is None:
            raise ValueError("an update needs the object's Id and SyncToken")
        payload = await self._call(
            "POST", _entity_path(entity), json_body=body, request_id=request_id, operation=f"update:{entity}"
        )
        return _entity_of(payload, entity)

    async def void_invoice(self, invoice_id: str, sync_token: str, *, request_id: str) -> dict[str, Any]:
        payload = await self._call(
            "POST",
            "invoice",
            params={"operation": "void"},
            json_body={"Id": invoice_id, "SyncToken": sync_token},
            request_id=request_id,
            operation="void:Invoice",
        )
        return _entity_of(payload, "Invoice")

    async def void_payment(self, payment_id: str, sync_token: str, *, request_id: str) -> dict[str, Any]:
        # Invoice is the only entity voided with operation=void; payments are a sparse update (reference §3.6).
        payload = await self._call(
            "POST",
            "payment",
            params={"operation": "update", "include": "void"},
            json_body={"Id": payment_id, "SyncToken": sync_token, "sparse": True},
            request_id=request_id,
            operation="void:Payment",
        )
        return _entity_of(payload, "Payment")

    async def delete(
        self, entity: str, entity_id: str, sync_token: str, *, request_id: str
    ) -> dict[str, Any]:
        """Deletes a transaction; the answer is the stub `{"status": "Deleted", "Id": ...}`."""
        payload = await self._call(
            "POST",
            _entity_path(entity),
            params={"operation": "delete"},
            json_body={"Id": entity_id, "SyncToken": sync_token},
            request_id=request_id,
            operation=f"delete:{entity}",
        )
        return _entity_of(payload, entity)

    async def company_info(self) -> dict[str, Any]:
        """The company's CompanyInfo: the cheapest call that proves a connection works."""
        payload = await self._call("GET", f"companyinfo/{self.realm_id}", operation="read:CompanyInfo")
        return _entity_of(payload, "CompanyInfo")

    async def preferences(self) -> dict[str, Any]:
        """The company's Preferences: numbering, currencies, closed books, sales tax (one per company)."""
        payload = await self._call("GET", "preferences", operation="read:Preferences")
        return _entity_of(payload, "Preferences")

    # --- query and CDC ------------------------------------------------------------------------------------

    async def query(self, statement: str) -> list[dict[str, Any]]:
        """One page of a query; [] when nothing matches (QuickBooks then omits the entity key)."""
        payload = await self._query(statement)
        return _rows_of(payload.get("QueryResponse"))

    async def query_all(self, base_statement: str, *, page_size: int = MAX_PAGE_SIZE) -> list[dict[str, Any]]:
        """Every row of a query, paging with STARTPOSITION/MAXRESULTS until a short page.

        Without an ORDERBY the order (and so the pages) can shift while rows change; add one for stability.
        """
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if _has_paging(base_statement):
            raise ValueError("query_all adds STARTPOSITION and MAXRESULTS itself")
        rows: list[dict[str, Any]] = []
        start = 1
        while True:
            page = await self.query(f"{base_statement.rstrip()} STARTPOSITION {start} MAXRESULTS {page_size}")
            rows.extend(page)
            if len(page) < page_size:
                return rows
            start += page_size

    async def count(self, statement: str) -> int:
        """The `totalCount` of a `SELECT COUNT(*) FROM ...` statement."""
        payload = await self._query(statement)
        query_response = payload.get("QueryResponse")
        total = query_response.get("totalCount") if isinstance(query_response, dict) else None
        if total is None:
            return 0
        try:
            return int(total)
        except (TypeError, ValueError):
            raise QboServerError(f"unreadable totalCount {total!r}", status=200) from None

    async def cdc(self, entities: Sequence[str], changed_since: datetime) -> CdcResult:
        """Objects of the given types changed since `changed_since` (at most 30 days back, 1000 objects).

        Deleted objects come back as stubs; their ids are listed in `deleted`. `server_time` is the
        response's own `time`, the watermark to use next (never the local clock).
        """
        if not entities:
            raise ValueError("cdc needs at least one entity name")
        if changed_since.tzinfo is None:
            raise ValueError("changed_since must be timezone-aware")
        names = [_entity_name(name) for name in entities]
        payload = await self._call(
            "GET",
            "cdc",
            params={
                "entities": ",".join(names),
                # Whole seconds: rounding down only re-delivers a few objects, which syncing tolerates.
                "changedSince": changed_since.replace(microsecond=0).isoformat(),
            },
            operation="cdc",
        )
        server_time = parse_server_time(payload.get("time"))
        if server_time is None:
            raise QboServerError("the CDC response has no readable time", status=200)
        changed: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        deleted: dict[str, list[str]] = {name: [] for name in names}
        for block in payload.get("CDCResponse") or []:
            if not isinstance(block, dict):
                continue
            for query_response in block.get("QueryResponse") or []:
                if not isinstance(query_response, dict):
                    continue
                for entity, rows in query_response.items():
                    if not isinstance(rows, list):
                        continue
                    for row in rows:
                        if not isinstance(row, dict):
                            continue
                        if str(row.get("status", "")).lower() == "deleted":
                            deleted.setdefault(entity, []).append(str(row.get("Id")))
                        else:
                            changed.setdefault(entity, []).append(row)
        return CdcResult(entities=changed, deleted=deleted, server_time=server_time)

    async def _query(self, statement: str) -> dict[str, Any]:
        if len(statement) > MAX_GET_STATEMENT:
            return await self._call(
                "POST",
                "query",
                content=statement.encode(),
                content_type="application/text",
                operation=query_operation(statement),
            )
        return await self._call(
            "GET", "query", params={"query": statement}, operation=query_operation(statement)
        )

    # --- transport ----------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        resource: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        request_id: str | None = None,
        operation: str,
    ) -> dict[str, Any]:
        """Sends one logical call: refreshes once on 401, waits out throttling, raises everything else.

        `operation` names the call in metrics (`read:Invoice`, `query:Customer`): entity kinds, never ids."""
        query = dict(params or {})
        if method == "POST" and json_body is not None:
            if not request_id:
                raise ValueError("every QuickBooks write needs a request_id")
            if len(request_id) > MAX_REQUEST_ID_LENGTH:
                raise ValueError(f"request_id is longer than {MAX_REQUEST_ID_LENGTH} characters")
            query["requestid"] = request_id
            content = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
            content_type = "application/json"
        query["minorversion"] = str(self._minor_version)
        url = f"{self._base}/{resource}"
        token = await self._tokens.access_token()
        refreshed = False
        throttle_attempt = 0
        waited = 0.0
        while True:
            response, admission, seconds = await self._send(
                method, url, query, token, content, content_type, operation
            )
            status = response.status_code
            if 200 <= status < 300:
                record_call(self.realm_id, operation, OK, seconds)
                return self._json(response)
            error = parse_fault(status, response.headers, response.content)
            record_call(self.realm_id, operation, outcome_of(error), seconds)
            if isinstance(error, QboAuthenticationError) and not refreshed:
                refreshed = True
                logger.info(
                    "QuickBooks rejected the access token for realm %s; refreshing once", self.realm_id
                )
                token = await self._tokens.refresh_after_unauthorized(token)
                continue
            if isinstance(error, QboThrottled):
                delay = self._throttle_delay(error.retry_after, throttle_attempt)
                # Not served, so not counted; and the company's other calls hold off while this one waits.
                admission.throttled(pause=delay)
                if self._max_throttle_wait is not None and waited + delay > self._max_throttle_wait:
                    raise error
                logger.info(
                    "QuickBooks throttled realm %s; waiting %.2f s (waited %.2f s so far)",
                    self.realm_id,
                    delay,
                    waited,
                )
                if self._on_wait is not None:
                    await self._on_wait(delay)
                await asyncio.sleep(delay)
                waited += delay
                throttle_attempt += 1
                continue
            raise error

    def _throttle_delay(self, retry_after: float | None, attempt: int) -> float:
        if retry_after is not None:
            # Never a zero wait: a server saying "now" forever must not turn into a hot loop.
            return max(retry_after, MIN_THROTTLE_WAIT)
        ceiling = min(self._backoff_max, self._backoff_initial * 2**attempt)
        # Jitter spreads out the retries of the many calls that were throttled together.
        return random.uniform(ceiling / 2, ceiling)

    async def _send(
        self,
        method: str,
        url: str,
        params: dict[str, str],
        token: str,
        content: bytes | None,
        content_type: str | None,
        operation: str,
    ) -> tuple[httpx.Response, Admission, float]:
        """One HTTP request within the company's limits: the answer, the admission (to report a throttle) and
        the seconds it took. Requests that got no answer are counted here."""
        headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        async with self._limiter.slot(self.realm_id, on_wait=self._on_wait) as admission:
            started = time.monotonic()
            try:
                response = await self._http.request(
                    method, url, params=params, content=content, headers=headers, timeout=self._timeout
                )
            except httpx.TimeoutException as exc:
                record_call(self.realm_id, operation, TIMEOUT, time.monotonic() - started)
                logger.debug("QuickBooks %s %s timed out after %.1f s", method, _log_path(url), self._timeout)
                raise QboUnavailable(
                    f"QuickBooks did not answer {method} {_log_path(url)} within {self._timeout:g} s",
                    timed_out=True,
                ) from exc
            except httpx.TransportError as exc:
                record_call(self.realm_id, operation, UNREACHABLE, time.monotonic() - started)
                logger.debug("QuickBooks %s %s failed: %s", method, _log_path(url), type(exc).__name__)
                raise QboUnavailable(
                    f"QuickBooks {method} {_log_path(url)} failed: {type(exc).__name__}: {redact(str(exc))}"
                ) from exc
        seconds = time.monotonic() - started
        logger.debug(
            "QuickBooks %s %s -> %s intuit_tid=%s (%.0f ms)",
            method,
            _log_path(url),
            response.status_code,
            intuit_tid_of(response.headers),
            seconds * 1000,
        )
        return response, admission, seconds

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise QboServerError(
                "QuickBooks answered with a body that is not a JSON object",
                status=response.status_code,
                intuit_tid=intuit_tid_of(response.headers),
            )
        return payload


def _entity_name(name: str) -> str:
    _entity_path(name)
    return name


def _path_id(entity_id: str) -> str:
    if not _SAFE_PATH_PART.match(entity_id):
        raise ValueError(f"not a QuickBooks object id: {entity_id!r}")
    return entity_id


def _log_path(url: str) -> str:
    """The path without host or query string (queries can hold names and emails)."""
    return httpx.URL(url).path


def is_retryable(error: BaseException) -> bool:
    """Whether a failed call may succeed when repeated unchanged (with the same requestid for writes)."""
    return isinstance(error, QboServerError | QboUnavailable | QboThrottled)
