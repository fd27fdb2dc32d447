"""Connections' companies: who holds a live authorization for a company (several accounts may share one), and
what the company check found there (settings, findings, the account's tax code choices).

Who holds a company:

Intuit documents that revoking a refresh token "disconnects the app from the company", so revoking one
account's tokens would cut off every other account of ours connected to that company. Whoever is about to
revoke asks here first; while another connection still holds the company, tokens are only erased on our side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement
from sqlmodel import col, delete, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.crud import add_notification, resolve_notifications
from models.domain import AUTHORIZATION_HOLDING_STATUSES, IN_QUICKBOOKS, InvoiceStatus
from models.queries import for_update
from models.tables import InvoiceSync, QuickBooksConnection, TaxCodeDefault
from qbo.company_settings import (
    NO_TAX,
    CompanySettings,
    TaxDefaults,
    blocking_reason,
    company_checks,
)


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


async def tax_defaults(session: AsyncSession, account_id: str, realm_id: str) -> TaxDefaults:
    """The account's chosen tax codes in this company."""
    rows = (
        await session.exec(
            select(TaxCodeDefault).where(
                TaxCodeDefault.account_id == account_id, TaxCodeDefault.realm_id == realm_id
            )
        )
    ).all()
    rates = {row.rate: row.tax_code_id for row in rows if row.rate != NO_TAX}
    no_tax = next((row.tax_code_id for row in rows if row.rate == NO_TAX), None)
    return TaxDefaults(no_tax=no_tax, rates=rates)


async def replace_tax_defaults(
    session: AsyncSession, account_id: str, realm_id: str, defaults: TaxDefaults, *, at: datetime
) -> None:
    """The one writer of the account's tax code choices for a company: the new set replaces the old one."""
    await session.exec(
        delete(TaxCodeDefault).where(
            col(TaxCodeDefault.account_id) == account_id, col(TaxCodeDefault.realm_id) == realm_id
        )
    )
    chosen = dict(defaults.rates)
    if defaults.no_tax is not None:
        chosen[NO_TAX] = defaults.no_tax
    for rate, code_id in chosen.items():
        session.add(
            TaxCodeDefault(
                account_id=account_id, realm_id=realm_id, rate=rate, tax_code_id=code_id, updated_at=at
            )
        )


@dataclass(frozen=True)
class CompanyCheckRecorded:
    blocked_reason: str | None


async def record_company_check(
    session: AsyncSession, account_id: str, settings: CompanySettings, *, at: datetime
) -> CompanyCheckRecorded | None:
    """The one writer of a connection's company check: settings, findings and the blocking reason, with the
    account's notification while syncing is blocked. None when the connection is no longer on that company."""
    statement = select(QuickBooksConnection).where(QuickBooksConnection.account_id == account_id)
    if for_update(session):
        statement = statement.with_for_update()
    row = (await session.exec(statement)).first()
    if row is None or row.realm_id != settings.realm_id:
        return None
    checks = company_checks(settings, await tax_defaults(session, account_id, settings.realm_id))
    reason = blocking_reason(checks)
    previous_reason = row.company_blocked_reason
    was_blocked = previous_reason is not None
    row.company_settings = json.dumps(settings.to_json(), sort_keys=True)
    row.company_checks = json.dumps([check.to_json() for check in checks])
    row.company_blocked_reason = reason
    row.company_checked_at = at
    row.company_stale = False
    session.add(row)
    if reason is not None and reason != previous_reason:
        # Once per episode (a new block, or a block for another reason), not once per daily check.
        await resolve_notifications(
            session, account_id=account_id, invoice_id=None, kinds=["company_settings_blocked"], at=at
        )
        await add_notification(
            session,
            account_id=account_id,
            invoice_id=None,
            kind="company_settings_blocked",
            message=f"Syncing to QuickBooks is paused: {reason}",
            dedupe_key=f"company-check/{account_id}/{settings.realm_id}/{at.isoformat()}",
            at=at,
            action="fix_quickbooks_settings",
        )
    elif reason is None and was_blocked:
        await resolve_notifications(
            session, account_id=account_id, invoice_id=None, kinds=["company_settings_blocked"], at=at
        )
    return CompanyCheckRecorded(blocked_reason=reason)


async def mark_company_stale(session: AsyncSession, account_id: str) -> None:
    """QuickBooks no longer has something the stored settings name (a tax code made inactive): the next sync
    reads the company again instead of trusting them."""
    row = await session.get(QuickBooksConnection, account_id)
    if row is not None and not row.company_stale:
        row.company_stale = True
        session.add(row)


def company_blocked(row: QuickBooksConnection) -> str | None:
    """Why the company's settings block syncing, if they are this connection's company's (a reconnect to another
    company leaves the old company's findings behind until its own check)."""
    if row.company_blocked_reason is None or stored_company_settings(row) is None:
        return None
    return row.company_blocked_reason


def stored_company_settings(row: QuickBooksConnection, *, current: bool = False) -> CompanySettings | None:
    """The settings the last check stored, if they are this connection's company's (and, with `current`, not
    marked stale since)."""
    if row.company_settings is None or (current and row.company_stale):
        return None
    settings = CompanySettings.from_json(json.loads(row.company_settings))
    return settings if settings.realm_id == row.realm_id else None


async def has_paused_invoices(session: AsyncSession, account_id: str) -> bool:
    statement = (
        select(InvoiceSync.invoice_id)
        .where(InvoiceSync.account_id == account_id, InvoiceSync.status == InvoiceStatus.PAUSED.value)
        .limit(1)
    )
    return (await session.exec(statement)).first() is not None


def voidable_on_disconnect() -> list[ColumnElement[bool]]:
    """Invoices Disconnect & Void must void: in QuickBooks, not voided, not yet dealt with."""
    return [
        col(InvoiceSync.qbo_invoice_id).is_not(None),
        col(InvoiceSync.status).in_(sorted(IN_QUICKBOOKS)),
        col(InvoiceSync.disconnect_outcome).is_(None),
    ]


async def count_voidable_on_disconnect(session: AsyncSession, account_id: str) -> int:
    """How many invoices Disconnect & Void would void now (the dialog says so before the user chooses)."""
    statement = (
        select(func.count())
        .select_from(InvoiceSync)
        .where(InvoiceSync.account_id == account_id, *voidable_on_disconnect())
    )
    return int((await session.exec(statement)).one())
