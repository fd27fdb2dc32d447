"""Accounts: the plan decides whether QuickBooks is available."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter
from sqlmodel import col, select, update
from temporalio.service import RPCError

from api.auth import account_token
from api.deps import AccountDep, ServiceCallerDep, ServicesDep, SessionDep
from api.errors import ACCOUNT_ROUTE_ERRORS, ApiError, error_responses
from models.db import release_connection
from models.domain import ConnectionStatus
from models.plans import entitlement_problem, quickbooks_entitled
from models.queries import insert_ignoring_conflicts
from models.schemas import AccountPublic, AccountUpdate
from models.tables import Account, QuickBooksConnection, utcnow
from workflows.connection import ConnectionWorkflow
from workflows.ids import connection_workflow_id, stored_or
from workflows.messages import PlanChange

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["accounts"])

# Concurrent plan changes retry their compare-and-set this often before giving up with 409.
PLAN_CHANGE_ATTEMPTS = 10


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
    responses=error_responses(401, 403, 409, 413, 422, 503),
)
async def put_account(
    body: AccountUpdate, caller: ServiceCallerDep, session: SessionDep, services: ServicesDep
) -> AccountPublic:
    """Create the account or change its plan (`free`, `pro` with or without the add-on, `premium`).

    The platform sets plans (service token only): an account's own token would otherwise buy itself Premium."""
    plan, addon, now = body.plan.value, body.quickbooks_addon, utcnow()
    # Concurrent PUTs of a new account: one inserts, the others find it there and change its plan.
    created = await insert_ignoring_conflicts(
        session,
        Account,
        [
            {
                "id": caller.account_id,
                "plan": plan,
                "quickbooks_addon": addon,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    was_entitled = None if created else await _change_plan(session, caller.account_id, plan, addon)
    await session.commit()
    account = await session.get(Account, caller.account_id, populate_existing=True)
    assert account is not None
    entitled = quickbooks_entitled(plan, addon)
    if was_entitled is not None and entitled != was_entitled:
        await _tell_connection(services, session, account.id, entitled)
    return account_public(
        account, token=account_token(services.settings.api_token.get_secret_value(), account.id)
    )


async def _change_plan(session: SessionDep, account_id: str, plan: str, addon: bool) -> bool:
    """Set the plan; returns whether the plan it replaced had QuickBooks.

    A compare-and-set, so that of two concurrent changes each sees the plan the other left: exactly one of them
    observes each change of entitlement, and the connection workflow is told about every one.
    """
    for _ in range(PLAN_CHANGE_ATTEMPTS):
        current_plan, current_addon = (
            await session.exec(
                select(Account.plan, Account.quickbooks_addon).where(col(Account.id) == account_id)
            )
        ).one()
        result = await session.exec(
            update(Account)
            .where(
                col(Account.id) == account_id,
                col(Account.plan) == current_plan,
                col(Account.quickbooks_addon) == current_addon,
            )
            .values(plan=plan, quickbooks_addon=addon, updated_at=utcnow())
        )
        if getattr(result, "rowcount", 0) == 1:
            return quickbooks_entitled(current_plan, current_addon)
    raise ApiError(409, "conflict", "The account's plan is being changed by other requests; try again.")


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
    handle = services.temporal.get_workflow_handle(
        stored_or(connection.workflow_id, connection_workflow_id(account_id))
    )
    await release_connection(session)
    try:
        await handle.signal(
            ConnectionWorkflow.plan_changed,
            PlanChange(entitled=entitled),
            rpc_timeout=timedelta(seconds=services.settings.temporal_rpc_timeout_seconds),
        )
    except RPCError as exc:
        # The plan is stored either way: syncs check it, so nothing syncs without the entitlement.
        logger.warning("connection workflow of %s not told about the plan: %s", account_id, exc.message)


@router.get("", responses=error_responses(*ACCOUNT_ROUTE_ERRORS))
async def get_account(account: AccountDep) -> AccountPublic:
    return account_public(account)
