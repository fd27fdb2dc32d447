"""What needs attention across accounts (the platform's support staff, service token only), and bulk retry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import String, func, literal, null, union_all
from sqlalchemy import select as core_select
from sqlalchemy.sql import Select
from sqlmodel import col

from api.deps import ServicesDep, ServiceTokenDep, SessionDep
from api.errors import ApiError, error_responses
from api.routes import invoices
from models.bounds import MAX_LIST_OFFSET
from models.domain import AttentionKind, ConnectionStatus, InvoiceStatus, NotificationKind
from models.schemas import (
    AttentionItem,
    AttentionList,
    AttentionRetryIn,
    AttentionRetryReport,
    AttentionRetryResult,
    ErrorBody,
)
from models.tables import Account, InvoiceSync, Notification, QuickBooksConnection

router = APIRouter(prefix="/v1/attention", tags=["attention"], dependencies=[ServiceTokenDep])

_ACTIONS = {
    AttentionKind.SYNC_FAILED: "retry",
    AttentionKind.INVOICE_PAUSED: "retry",
    AttentionKind.VOID_REFUSED: "void",
    AttentionKind.CONNECTION_EXPIRING: "reconnect",
    AttentionKind.CONNECTION_EXPIRED: "reconnect",
}
_INVOICE_KINDS = {
    AttentionKind.SYNC_FAILED: InvoiceStatus.FAILED,
    AttentionKind.INVOICE_PAUSED: InvoiceStatus.PAUSED,
}
_CONNECTION_KINDS = {
    AttentionKind.CONNECTION_EXPIRING: ConnectionStatus.EXPIRING,
    AttentionKind.CONNECTION_EXPIRED: ConnectionStatus.EXPIRED,
}


def _kind(kind: AttentionKind) -> Any:
    return literal(kind.value, String).label("kind")


def _selects(kinds: set[AttentionKind], account_id: str | None) -> list[Select[Any]]:
    """One SELECT per kind, all of the same columns: kind, account, invoice, number, realm, reason, since."""
    selects: list[Select[Any]] = []
    for kind, status in _INVOICE_KINDS.items():
        if kind in kinds:
            # A failed sync's words are its last error; a paused invoice's, why it waits.
            reason = (
                col(InvoiceSync.reason)
                if kind == AttentionKind.INVOICE_PAUSED
                else col(InvoiceSync.last_error)
            )
            statement = core_select(
                _kind(kind), col(InvoiceSync.account_id), col(InvoiceSync.invoice_id), col(InvoiceSync.number),
                col(InvoiceSync.realm_id), func.coalesce(reason, col(InvoiceSync.reason)).label("reason"),
                col(InvoiceSync.updated_at).label("since"),
            ).where(col(InvoiceSync.status) == status.value)  # fmt: skip
            if account_id is not None:
                statement = statement.where(col(InvoiceSync.account_id) == account_id)
            selects.append(statement)
    if AttentionKind.VOID_REFUSED in kinds:
        statement = (
            core_select(
                _kind(AttentionKind.VOID_REFUSED),
                col(Notification.account_id),
                col(Notification.invoice_id),
                col(InvoiceSync.number),
                col(InvoiceSync.realm_id),
                col(Notification.message).label("reason"),
                col(Notification.created_at).label("since"),
            )
            .join(
                InvoiceSync,
                (col(InvoiceSync.account_id) == col(Notification.account_id))
                & (col(InvoiceSync.invoice_id) == col(Notification.invoice_id)),
            )
            .where(
                col(Notification.kind) == NotificationKind.VOID_REFUSED.value,
                col(Notification.resolved_at).is_(None),
            )
        )
        if account_id is not None:
            statement = statement.where(col(Notification.account_id) == account_id)
        selects.append(statement)
    for kind, connection_status in _CONNECTION_KINDS.items():
        if kind in kinds:
            statement = core_select(
                _kind(kind), col(QuickBooksConnection.account_id), null().label("invoice_id"),
                null().label("number"), col(QuickBooksConnection.realm_id),
                col(QuickBooksConnection.status_reason).label("reason"),
                col(QuickBooksConnection.updated_at).label("since"),
            ).where(col(QuickBooksConnection.status) == connection_status.value)  # fmt: skip
            if account_id is not None:
                statement = statement.where(col(QuickBooksConnection.account_id) == account_id)
            selects.append(statement)
    return selects


async def _attention(
    session: SessionDep, kinds: set[AttentionKind], account_id: str | None, limit: int, offset: int
) -> list[AttentionItem]:
    query = union_all(*_selects(kinds, account_id)).subquery()
    # A union of plain rows, not models: SQLAlchemy Core on the session's connection (SQLModel's exec takes
    # model selects, and its session.execute is deprecated for this).
    connection = await session.connection()
    rows = (
        await connection.execute(
            core_select(query)
            .order_by(query.c.since.desc(), query.c.kind, query.c.account_id, query.c.invoice_id)
            .offset(offset)
            .limit(limit)
        )
    ).all()
    return [
        AttentionItem(
            kind=AttentionKind(row.kind),
            account_id=row.account_id,
            invoice_id=row.invoice_id,
            number=row.number,
            realm_id=row.realm_id,
            reason=row.reason,
            since=row.since,
            action=_ACTIONS[AttentionKind(row.kind)],
        )
        for row in rows
    ]


AccountFilter = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


@router.get("", responses=error_responses(401, 403, 422, 503))
async def list_attention(
    session: SessionDep,
    kind: Annotated[
        list[AttentionKind] | None, Query(description="Only these kinds (repeat to give several).")
    ] = None,
    account_id: AccountFilter = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET)] = 0,
) -> AttentionList:
    """Failed syncs, paused invoices, refused voids, expiring and expired connections, across accounts, newest
    first: each with its account, ids, the reason in words, since when, and the action that resolves it."""
    items = await _attention(session, set(kind or AttentionKind), account_id, limit + 1, offset)
    return AttentionList(items=items[:limit], next_offset=offset + limit if len(items) > limit else None)


@router.post("/retry", responses=error_responses(401, 403, 413, 422, 503))
async def retry_many(
    body: AttentionRetryIn, session: SessionDep, services: ServicesDep
) -> AttentionRetryReport:
    """Retry many invoices at once, each exactly as `POST .../invoices/{invoice_id}/quickbooks/retry` would; the
    answer says, per invoice, whether it was retried or why not (that route's error)."""
    if body.items is not None:
        targets = [(item.account_id, item.invoice_id) for item in body.items]
    else:
        assert body.kind is not None
        listed = await _attention(session, {AttentionKind(body.kind)}, body.account_id, body.limit, 0)
        targets = [(item.account_id, item.invoice_id) for item in listed if item.invoice_id is not None]
    results = []
    for account_id, invoice_id in dict.fromkeys(targets):
        results.append(await _retry_one(session, services, account_id, invoice_id))
    retried = sum(1 for result in results if result.outcome == "retried")
    return AttentionRetryReport(results=results, retried=retried, refused=len(results) - retried)


async def _retry_one(
    session: SessionDep, services: ServicesDep, account_id: str, invoice_id: str
) -> AttentionRetryResult:
    account = await session.get(Account, account_id)
    try:
        if account is None:
            raise ApiError(404, "account_not_found", f"Account {account_id} is unknown.")
        # The single retry's own path: its checks, its Temporal update and its refusals.
        invoice = await invoices.retry_sync(
            invoice_id=invoice_id, account=account, session=session, services=services
        )
    except ApiError as exc:
        return AttentionRetryResult(
            account_id=account_id, invoice_id=invoice_id, outcome="refused",
            error=ErrorBody(code=exc.code, message=exc.message),
        )  # fmt: skip
    return AttentionRetryResult(
        account_id=account_id, invoice_id=invoice_id, outcome="retried", status=invoice.status
    )
