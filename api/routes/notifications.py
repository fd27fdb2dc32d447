"""Notifications: what the user must see or act on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col, select

from api.deps import AccountDep, SessionDep
from api.errors import ACCOUNT_ROUTE_ERRORS, error_responses
from api.routes.invoices import notification_public
from models.schemas import NotificationList
from models.tables import Notification

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["notifications"])


@router.get("/notifications", responses=error_responses(*ACCOUNT_ROUTE_ERRORS))
async def list_notifications(
    account: AccountDep,
    session: SessionDep,
    include_resolved: Annotated[bool, Query()] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> NotificationList:
    """The account's notifications, newest first (open ones only, unless `include_resolved`)."""
    statement = select(Notification).where(Notification.account_id == account.id)
    if not include_resolved:
        statement = statement.where(col(Notification.resolved_at).is_(None))
    rows = (await session.exec(statement.order_by(col(Notification.id).desc()).limit(limit))).all()
    return NotificationList(notifications=[notification_public(row) for row in rows])
