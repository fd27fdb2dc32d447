"""Accounts: the plan decides whether QuickBooks is available."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import account_token
from api.deps import AccountDep, CallerDep, ServicesDep, SessionDep
from models.plans import entitlement_problem
from models.schemas import AccountPublic, AccountUpdate, ErrorResponse
from models.tables import Account, utcnow

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["accounts"])


def account_public(account: Account, *, token: str | None = None) -> AccountPublic:
    problem = entitlement_problem(account.plan, account.quickbooks_addon)
    return AccountPublic(
        account_id=account.id,
        plan=account.plan,
        quickbooks_addon=account.quickbooks_addon,
        quickbooks_available=problem is None,
        quickbooks_unavailable_reason=problem,
        api_token=token,
    )


@router.put("", responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
async def put_account(
    body: AccountUpdate, caller: CallerDep, session: SessionDep, services: ServicesDep
) -> AccountPublic:
    """Create the account or change its plan (`free`, `pro` with or without the add-on, `premium`)."""
    account = await session.get(Account, caller.account_id)
    if account is None:
        account = Account(id=caller.account_id, plan=body.plan.value, quickbooks_addon=body.quickbooks_addon)
    account.plan = body.plan.value
    account.quickbooks_addon = body.quickbooks_addon
    account.updated_at = utcnow()
    session.add(account)
    await session.commit()
    token = (
        account_token(services.settings.api_token.get_secret_value(), account.id)
        if caller.is_service
        else None
    )
    return account_public(account, token=token)


@router.get("", responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
async def get_account(account: AccountDep) -> AccountPublic:
    return account_public(account)
