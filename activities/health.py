"""The connection's daily check: the company's settings, read with calls that also notice a revocation even when
nothing syncs."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.company_check import check_and_record
from activities.heartbeat import heartbeating
from activities.quickbooks_access import QuickBooksAccess
from models.db import SessionFactory
from models.domain import CONNECTION_UNAVAILABLE
from models.tables import QuickBooksConnection, utcnow
from qbo.errors import QboAuthenticationError, QboAuthorizationError
from workflows.messages import HealthResult


class HealthActivities:
    """Built with the QuickBooks access and the database."""

    def __init__(self, *, access: QuickBooksAccess, sessions: SessionFactory) -> None:
        self._access = access
        self._sessions = sessions

    @activity.defn
    async def check_connection(self, account_id: str) -> HealthResult:
        """The daily check: notices a connection revoked at Intuit even when nothing syncs, and checks the
        company's settings (CompanyInfo, Preferences, tax codes: `activities.company_check`) with the same calls.

        A revoked authorization answers 401; the refresh that follows gets invalid_grant and the connection
        workflow marks the connection expired.
        """
        async with heartbeating():
            try:
                context = await self._access.context(account_id)
                checked = await check_and_record(self._sessions, context)
            except ApplicationError as exc:
                if exc.type == CONNECTION_UNAVAILABLE:
                    return HealthResult(ok=False, reason=exc.message)
                raise
            except (QboAuthenticationError, QboAuthorizationError) as exc:
                return HealthResult(ok=False, reason=str(exc))
            finally:
                await self._touch_health_check(account_id)
        return HealthResult(ok=True, unblocked=checked.unblocked)

    async def _touch_health_check(self, account_id: str) -> None:
        async with self._sessions() as session:
            row = await session.get(QuickBooksConnection, account_id)
            if row is not None:
                row.last_health_check_at = utcnow()
                session.add(row)
                await session.commit()
