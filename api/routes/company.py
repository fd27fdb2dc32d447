"""The connected company's settings: run the company check now, list the company's sales tax codes, and choose
the codes the account's invoices get (for lines without tax, and per rate)."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter
from sqlmodel import select
from temporalio.service import RPCError

from api.deps import AccountDep, ServicesDep, SessionDep
from api.errors import ACCOUNT_ROUTE_ERRORS, ApiError, error_responses
from api.routes.quickbooks import connection_public
from models.connections import replace_tax_defaults, stored_company_settings, tax_defaults
from models.db import release_connection
from models.domain import USABLE_CONNECTION_STATUSES
from models.queries import for_update
from models.schemas import (
    ConnectionPublic,
    TaxCodeDefaultsIn,
    TaxCodeDefaultsPublic,
    TaxCodePublic,
    TaxCodesPublic,
)
from models.tables import Account, QuickBooksConnection, utcnow
from qbo.company_settings import CompanySettings, TaxCodeInfo, TaxDefaults, canonical_rate, untaxed_code
from workflows.handles import ask_for_company_check
from workflows.ids import connection_workflow_id, stored_or

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/accounts/{account_id}/quickbooks", tags=["quickbooks"])


@router.post("/company-check", status_code=202, responses=error_responses(*ACCOUNT_ROUTE_ERRORS, 409))
async def check_company(account: AccountDep, session: SessionDep, services: ServicesDep) -> ConnectionPublic:
    """Check the company's settings now (after changing them in QuickBooks); the connection status shows the
    findings once it ran, and paused invoices go on when nothing blocking is left."""
    row = await _connected(session, account)
    if not await _ask_for_check(session, services, row):
        raise ApiError(
            503, "temporarily_unavailable", "The check could not be started; try again in a few seconds."
        )
    return await connection_public(session, account)


@router.get("/tax-codes", responses=error_responses(*ACCOUNT_ROUTE_ERRORS, 409))
async def list_tax_codes(account: AccountDep, session: SessionDep) -> TaxCodesPublic:
    """The company's active sales tax codes as the last company check read them, and the account's choices."""
    row = await _connected(session, account)
    settings = _settings(row)
    return _tax_codes_public(settings, await tax_defaults(session, account.id, settings.realm_id), row)


@router.put("/tax-codes", responses=error_responses(*ACCOUNT_ROUTE_ERRORS, 409, 413))
async def choose_tax_codes(
    choice: TaxCodeDefaultsIn, account: AccountDep, session: SessionDep, services: ServicesDep
) -> TaxCodesPublic:
    """Choose the codes: `no_tax` for lines without tax (a code of rate 0), `rates` per rate in percent (a code of
    that rate). Replaces the previous choice; the company is checked again, so a block it lifts lifts at once."""
    row = await _connected(session, account, lock=True)  # one choice at a time per account
    settings = _settings(row)
    if choice.no_tax is not None:
        code = _active_code(settings, choice.no_tax, "no_tax")
        if not code.untaxed:
            raise ApiError(
                422,
                "tax_code_not_untaxed",
                f'"{code.name}" adds tax ({code.rate}%): lines without tax need a code of rate 0.',
            )
    if len({canonical_rate(rate) for rate in choice.rates}) != len(choice.rates):
        raise ApiError(422, "duplicate_rate", 'Two keys of `rates` are the same rate (e.g. "13" and "13.0").')
    for rate, code_id in choice.rates.items():
        if canonical_rate(rate) == "0":
            raise ApiError(
                422,
                "use_no_tax",
                "A line of rate 0 has no tax: choose its code as `no_tax`, not under `rates`.",
            )
        code = _active_code(settings, code_id, f"rates.{rate}")
        if code.rate != canonical_rate(rate):
            raise ApiError(
                422,
                "tax_code_rate_mismatch",
                f'"{code.name}" has a rate of {code.rate}%, not {canonical_rate(rate)}%.',
            )
    defaults = TaxDefaults(
        no_tax=choice.no_tax, rates={canonical_rate(rate): code_id for rate, code_id in choice.rates.items()}
    )
    await replace_tax_defaults(session, account.id, settings.realm_id, defaults, at=utcnow())
    await session.commit()
    public = _tax_codes_public(settings, defaults, row)
    # The choice is saved either way; the check that applies it to a block runs now, or with the daily check.
    public.check_requested = await _ask_for_check(session, services, row)
    return public


async def _connected(session: SessionDep, account: Account, *, lock: bool = False) -> QuickBooksConnection:
    statement = (
        select(QuickBooksConnection)
        .where(QuickBooksConnection.account_id == account.id)
        .execution_options(populate_existing=True)
    )
    if lock and for_update(session):
        statement = statement.with_for_update()
    row = (await session.exec(statement)).first()
    if row is None or row.status not in USABLE_CONNECTION_STATUSES:
        raise ApiError(409, "not_connected", "QuickBooks is not connected.")
    return row


def _settings(row: QuickBooksConnection) -> CompanySettings:
    settings = stored_company_settings(row)
    if settings is None:
        raise ApiError(
            409,
            "company_not_checked",
            "The company's settings have not been read yet; ask for a check (POST .../quickbooks/company-check) "
            "and try again in a few seconds.",
        )
    return settings


def _active_code(settings: CompanySettings, code_id: str, field: str) -> TaxCodeInfo:
    code = settings.code(code_id)
    if code is None or code.rate is None:
        raise ApiError(
            422,
            "unknown_tax_code",
            f"{field}: no active sales tax code {code_id} in the company (as last read; GET .../tax-codes lists "
            "them).",
        )
    return code


def _code_public(code: TaxCodeInfo) -> TaxCodePublic:
    return TaxCodePublic(
        id=code.id,
        name=code.name,
        description=code.description,
        rate_percent=code.rate,
        taxable=code.taxable,
        zero_rated=code.zero_rated,
    )


def _tax_codes_public(
    settings: CompanySettings, defaults: TaxDefaults, row: QuickBooksConnection
) -> TaxCodesPublic:
    untaxed = untaxed_code(settings, defaults)
    return TaxCodesPublic(
        realm_id=settings.realm_id,
        checked_at=row.company_checked_at,
        codes=[_code_public(code) for code in settings.tax_codes],
        defaults=TaxCodeDefaultsPublic(no_tax=defaults.no_tax, rates=dict(defaults.rates)),
        no_tax_code=_code_public(untaxed) if untaxed is not None else None,
    )


async def _ask_for_check(session: SessionDep, services: ServicesDep, row: QuickBooksConnection) -> bool:
    """Whether the connection workflow could be asked for a check now."""
    workflow_id = stored_or(row.workflow_id, connection_workflow_id(row.account_id))
    await release_connection(session)
    try:
        await ask_for_company_check(
            services.temporal,
            workflow_id=workflow_id,
            rpc_timeout=timedelta(seconds=services.settings.temporal_rpc_timeout_seconds),
        )
    except RPCError as exc:
        logger.warning(
            "connection workflow of %s not asked for a company check: %s", row.account_id, exc.message
        )
        return False
    return True
