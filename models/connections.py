"""Who holds a live QuickBooks authorization for a company: several accounts may share one company.

Intuit documents that revoking a refresh token "disconnects the app from the company", so revoking one
account's tokens would cut off every other account of ours connected to that company. Whoever is about to
revoke asks here first; while another connection still holds the company, tokens are only erased on our side.
"""

from __future__ import annotations

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.domain import AUTHORIZATION_HOLDING_STATUSES
from models.tables import QuickBooksConnection


async def company_held(session: AsyncSession, realm_id: str, *, except_account: str | None = None) -> bool:
    """Whether a connection (other than `except_account`'s) holds a live authorization for the company."""
    statement = (
        select(func.count())
        .select_from(QuickBooksConnection)
        .where(
            QuickBooksConnection.realm_id == realm_id,
            col(QuickBooksConnection.status).in_([status.value for status in AUTHORIZATION_HOLDING_STATUSES]),
        )
    )
    if except_account is not None:
        statement = statement.where(QuickBooksConnection.account_id != except_account)
    return (await session.exec(statement)).one() > 0
