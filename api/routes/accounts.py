"""Accounts: the plan decides whether QuickBooks is available."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from temporalio.service import RPCError

from api.auth import account_token
from api.deps import AccountDep, ServiceCallerDep, ServicesDep, SessionDep
from models.plans import entitlement_problem, quickbooks_entitled
from models.schemas import AccountPublic, AccountUpdate, ErrorResponse
from models.tables import Account, QuickBooksConnection, utcnow
from workflows.connection import ConnectionWorkflow
from workflows.ids import connection_workflow_id
from workflows.messages import ConnectionStatus, PlanChange

logger = logging.getLogger(__name__)

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


@router.put(
    "",
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
async def put_account(
    body: AccountUpdate, caller: ServiceCallerDep, session: SessionDep, services: ServicesDep
) -> AccountPublic:
    """Create the account or change its plan (`free`, `pro` with or without the add-on, `premium`).

    The platform sets plans (service token only): an account's own token would otherwise buy itself Premium."""
    account = await session.get(Account, caller.account_id)
    if account is None:
        account = Account(id=caller.account_id, plan=body.plan.value, quickbooks_addon=body.quickbooks_addon)
    was_entitled = quickbooks_entitled(account.plan, account.quickbooks_addon)
    account.plan = body.plan.value
    account.quickbooks_addon = body.quickbooks_addon
    account.updated_at = utcnow()
    session.add(account)
    await session.commit()
    entitled = quickbooks_entitled(account.plan, account.quickbooks_addon)
    if entitled != was_entitled:
        await _tell_connection(services, session, account.id, entitled)
    return account_public(
        account, token=account_token(services.settings.api_token.get_secret_value(), account.id)
    )


async def _tell_connection(
    services: ServicesDep, session: SessionDep, account_id: str, entitled: bool
) -> None:
    """A plan that loses QuickBooks pauses syncing; one that regains it resumes what was paused."""
    connection = await session.get(QuickBooksConnection, account_id)
    if connection is None or connection.status in (
        ConnectionStatus.NOT_CONNECTED,
        ConnectionStatus.DISCONNECTED,
    ):
        return
    handle = services.temporal.get_workflow_handle(connection_workflow_id(account_id))
    try:
        await handle.signal(ConnectionWorkflow.plan_changed, PlanChange(entitled=entitled))
    except RPCError as exc:
        # The plan is stored either way: syncs check it, so nothing syncs without the entitlement.
        logger.warning("connection workflow of %s not told about the plan: %s", account_id, exc.message)


@router.get("", responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
async def get_account(account: AccountDep) -> AccountPublic:
    return account_public(account)
