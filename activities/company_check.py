"""The company check: on connect, daily and on request, read the company's settings (CompanyInfo, Preferences,
and the tax codes where sales tax is used), store them with the connection, and say what they mean for syncing.

Blocking findings pause syncing with their reason until a later check passes; the sync reads the stored
settings, so a steady-state sync costs no extra call, and a company never checked is checked before its first
push.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.quickbooks_access import (
    QuickBooksAccess,
    QuickBooksContext,
    connection_unavailable,
    translate_errors,
)
from models.connections import (
    company_blocked,
    has_paused_invoices,
    record_company_check,
    stored_company_settings,
    tax_defaults,
)
from models.coordination import SingleFlight
from models.db import SessionFactory
from models.domain import CONNECTION_UNAVAILABLE
from models.tables import QuickBooksConnection, utcnow
from qbo.company_settings import CompanySettings, TaxDefaults, read_company_settings
from workflows.messages import CompanyCheckResult


class CompanyCheckActivities:
    """Built with the QuickBooks access and the database."""

    def __init__(self, *, access: QuickBooksAccess, sessions: SessionFactory) -> None:
        self._access = access
        self._sessions = sessions

    @activity.defn
    async def check_company(self, account_id: str) -> CompanyCheckResult:
        """Read and store the company's settings and findings; `unblocked` when nothing blocks and invoices of the
        account are paused (they may go on: each checks again why it paused)."""
        async with heartbeating():
            try:
                context = await self._access.context(account_id)
            except ApplicationError as exc:
                if exc.type == CONNECTION_UNAVAILABLE:
                    return CompanyCheckResult(checked=False, reason=exc.message)
                raise
            with translate_errors("the company check"):
                return await check_and_record(self._sessions, context)


async def check_and_record(sessions: SessionFactory, context: QuickBooksContext) -> CompanyCheckResult:
    """The company check itself, for the connection's check on connect and on request, and the daily one
    (QuickBooks' faults are the caller's to translate)."""
    settings = await read_company_settings(context.client)
    async with sessions() as session:
        recorded = await record_company_check(session, context.account_id, settings, at=utcnow())
        await session.commit()
    if recorded is None:
        return CompanyCheckResult(checked=False, reason="The connection is on another company now.")
    paused = False
    if recorded.blocked_reason is None:
        # Whatever lifted the block (this check, or a sync's own read just before), paused invoices go on.
        async with sessions() as session:
            paused = await has_paused_invoices(session, context.account_id)
    return CompanyCheckResult(checked=True, blocked_reason=recorded.blocked_reason, unblocked=paused)


async def company_for_sync(
    sessions: SessionFactory,
    flights: SingleFlight,
    access: QuickBooksAccess,
    context: QuickBooksContext,
    *,
    fresh_since: datetime | None,
) -> tuple[CompanySettings, TaxDefaults]:
    """The company's settings and the account's tax code choices for a sync; ConnectionUnavailable (the invoice
    pauses) while a blocking finding stands.

    Stored ones unless they were read before `fresh_since` (a manual retry: the user may have just fixed the
    cause in QuickBooks; a burst of them shares one read), none is stored yet (an invoice sent right after connecting, before the
    connection's own check) or they are marked stale: then QuickBooks is read, once for every sync of the company
    that needs it at that moment. A read here that lifts a block asks the connection workflow to check again,
    which lets the invoices that paused for it go on.
    """
    stored = await _stored(sessions, context)
    if stored.outdated(fresh_since):
        async with flights.hold("company-settings", context.realm_id):
            stored = await _stored(sessions, context)
            if stored.outdated(fresh_since):
                with translate_errors("the company check"):
                    checked = await check_and_record(sessions, context)
                if not checked.checked:
                    raise connection_unavailable("The QuickBooks connection moved to another company.")
                if checked.unblocked:
                    # Invoices paused while nothing blocks now: the connection workflow lets them go on.
                    await access.ask_for_company_check(context.account_id)
                stored = await _stored(sessions, context)
    if stored.blocked is not None:
        raise connection_unavailable(stored.blocked)
    assert stored.settings is not None
    return stored.settings, stored.defaults


async def stored_company(
    sessions: SessionFactory, context: QuickBooksContext
) -> tuple[CompanySettings | None, TaxDefaults]:
    """The stored settings and tax choices as they are (no QuickBooks call, no block raised)."""
    stored = await _stored(sessions, context)
    return stored.settings, stored.defaults


@dataclass(frozen=True)
class _Stored:
    settings: CompanySettings | None
    defaults: TaxDefaults
    blocked: str | None
    checked_at: datetime | None

    def outdated(self, fresh_since: datetime | None) -> bool:
        if self.settings is None:
            return True
        return fresh_since is not None and (self.checked_at is None or self.checked_at < fresh_since)


async def _stored(sessions: SessionFactory, context: QuickBooksContext) -> _Stored:
    async with sessions() as session:
        row = await session.get(QuickBooksConnection, context.account_id)
        if row is None or row.realm_id != context.realm_id:
            raise connection_unavailable("The QuickBooks connection moved to another company.")
        settings = stored_company_settings(row, current=True)
        # Tax code choices matter only where sales tax is used: a steady-state US sync needs no query for them.
        defaults = (
            await tax_defaults(session, context.account_id, context.realm_id)
            if settings is not None and settings.using_sales_tax
            else TaxDefaults()
        )
        return _Stored(
            settings=settings,
            defaults=defaults,
            blocked=company_blocked(row),
            checked_at=row.company_checked_at,
        )
