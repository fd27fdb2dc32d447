"""Outbound events, as kept: list them (an account's, or across accounts for the service token) and redeliver one."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar
from temporalio.service import RPCError

from api.deps import AccountDep, ServicesDep, ServiceTokenDep, SessionDep
from api.errors import ACCOUNT_ROUTE_ERRORS, ApiError, error_responses
from models.bounds import MAX_LIST_OFFSET
from models.db import release_connection
from models.domain import EventSubject, PlatformEventStatus, PlatformEventType
from models.platform_events import mark_redelivery
from models.schemas import PlatformEventList, PlatformEventPublic
from models.tables import PlatformEventRecord
from workflows.handles import start_platform_event_redelivery

logger = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

EventId = Annotated[str, Path(pattern=r"^evt_[0-9a-f]{32}$", description="The event's id (`evt_...`).")]
AccountIdQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="One account's only."),
]
InvoiceIdQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="One invoice's only."),
]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET)]


class EventFilter:
    """The list's filters, shared by the account's list and the cross-account one."""

    def __init__(
        self,
        type: Annotated[PlatformEventType | None, Query()] = None,
        status: Annotated[PlatformEventStatus | None, Query()] = None,
        subject: Annotated[EventSubject | None, Query()] = None,
        invoice_id: InvoiceIdQuery = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> None:
        self.type = type
        self.status = status
        self.subject = subject
        self.invoice_id = invoice_id
        self.limit = limit
        self.offset = offset

    def apply(self, statement: SelectOfScalar[PlatformEventRecord]) -> SelectOfScalar[PlatformEventRecord]:
        if self.type is not None:
            statement = statement.where(PlatformEventRecord.type == self.type.value)
        if self.status is not None:
            statement = statement.where(PlatformEventRecord.status == self.status.value)
        if self.subject is not None:
            statement = statement.where(PlatformEventRecord.subject_kind == self.subject.value)
        if self.invoice_id is not None:
            statement = statement.where(PlatformEventRecord.invoice_id == self.invoice_id)
        return (
            statement.order_by(
                col(PlatformEventRecord.occurred_at).desc(), col(PlatformEventRecord.sequence).desc()
            )
            .order_by(col(PlatformEventRecord.id))
            .offset(self.offset)
            .limit(self.limit + 1)
        )


FilterDep = Annotated[EventFilter, Depends()]


@router.get("/v1/accounts/{account_id}/events", responses=error_responses(*ACCOUNT_ROUTE_ERRORS))
async def list_account_events(
    account: AccountDep, session: SessionDep, filters: FilterDep
) -> PlatformEventList:
    """The account's outbound events, newest first, with how delivering each went."""
    statement = select(PlatformEventRecord).where(PlatformEventRecord.account_id == account.id)
    return _page(list((await session.exec(filters.apply(statement))).all()), filters)


@router.get("/v1/events", dependencies=[ServiceTokenDep], responses=error_responses(401, 403, 422, 503))
async def list_events(
    session: SessionDep, filters: FilterDep, account_id: AccountIdQuery = None
) -> PlatformEventList:
    """Every account's outbound events, newest first (service token only)."""
    statement = select(PlatformEventRecord)
    if account_id is not None:
        statement = statement.where(PlatformEventRecord.account_id == account_id)
    return _page(list((await session.exec(filters.apply(statement))).all()), filters)


@router.post(
    "/v1/accounts/{account_id}/events/{event_id}/redeliver",
    status_code=202,
    responses=error_responses(
        *ACCOUNT_ROUTE_ERRORS,
        409,
        codes={404: ("account_not_found", "event_not_found"), 409: ("events_not_configured",)},
    ),
)
async def redeliver_event(
    event_id: EventId, account: AccountDep, session: SessionDep, services: ServicesDep
) -> PlatformEventPublic:
    """Deliver a kept event again: the same id and body, a fresh signature, retried for up to three days."""
    record = await session.get(PlatformEventRecord, event_id)
    if record is None or record.account_id != account.id:
        raise ApiError(404, "event_not_found", f"Event {event_id} is not one of this account's.")
    if not services.settings.platform_events_url:
        raise ApiError(
            409,
            "events_not_configured",
            "PLATFORM_EVENTS_URL is not set: there is nowhere to deliver events.",
        )
    await mark_redelivery(session, record)
    public = public_event(record)
    await release_connection(session)
    try:
        await start_platform_event_redelivery(
            services.temporal,
            event_id=record.id,
            event_type=record.type,
            task_queue=services.settings.temporal_task_queue,
            rpc_timeout=timedelta(seconds=services.settings.temporal_rpc_timeout_seconds),
        )
    except RPCError as exc:
        logger.warning("redelivery of %s not started: %s", event_id, exc.status.name)
        raise ApiError(
            503, "temporarily_unavailable", "The redelivery could not be started; try again."
        ) from exc
    return public


def _page(rows: list[PlatformEventRecord], filters: EventFilter) -> PlatformEventList:
    return PlatformEventList(
        events=[public_event(row) for row in rows[: filters.limit]],
        next_offset=filters.offset + filters.limit if len(rows) > filters.limit else None,
    )


def public_event(row: PlatformEventRecord) -> PlatformEventPublic:
    return PlatformEventPublic(
        id=row.id,
        type=PlatformEventType(row.type),
        version=row.version,
        sequence=row.sequence,
        account_id=row.account_id,
        invoice_id=row.invoice_id,
        subject=EventSubject(row.subject_kind),
        occurred_at=row.occurred_at,
        status=PlatformEventStatus(row.status),
        attempts=row.attempts,
        last_attempt_at=row.last_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
        retry_until=row.retry_until,
        redeliveries=row.redeliveries,
        payload=json.loads(row.body),
    )
