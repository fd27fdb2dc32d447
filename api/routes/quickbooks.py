"""Connecting QuickBooks: the authorization URL, the OAuth callback, and the connection's status."""

from __future__ import annotations

import hashlib
import html
import logging
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import func
from sqlmodel import col, select, update
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from activities.connection import grant_columns
from api.deps import AccountDep, ServicesDep, SessionDep
from api.errors import ACCOUNT_ROUTE_ERRORS, ApiError, error_responses
from models.bounds import SafeStr
from models.plans import entitlement_problem, quickbooks_entitled
from models.schemas import (
    ConnectionPublic,
    ConnectStart,
    DisconnectFailure,
    DisconnectIn,
    DisconnectProgress,
)
from models.tables import Account, InvoiceSync, OAuthState, QuickBooksConnection, QuickBooksGrant, utcnow
from qbo.errors import QboError, QboOAuthError
from settings import Settings
from workflows import search_attributes
from workflows.connection import ConnectionWorkflow
from workflows.ids import connection_workflow_id
from workflows.messages import (
    ConnectionPolicy,
    ConnectionStatus,
    ConnectionWorkflowInput,
    DisconnectMode,
    DisconnectRequest,
    GrantSignal,
)

logger = logging.getLogger(__name__)

router = APIRouter(tags=["quickbooks"])

# The connection card lists at most this many invoices Disconnect & Void could not void.
MAX_LISTED_FAILURES = 100
# Statuses in which the account is tied to one QuickBooks company and may not silently switch to another.
_BOUND_STATUSES = {
    ConnectionStatus.CONNECTED.value,
    ConnectionStatus.EXPIRING.value,
    ConnectionStatus.EXPIRED.value,
    ConnectionStatus.DISCONNECTING.value,
}


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


@router.post(
    "/v1/accounts/{account_id}/quickbooks/connect",
    responses=error_responses(*ACCOUNT_ROUTE_ERRORS),
)
async def connect(account: AccountDep, session: SessionDep, services: ServicesDep) -> ConnectStart:
    """Start connecting: send the browser to the returned Intuit authorization URL."""
    problem = entitlement_problem(account.plan, account.quickbooks_addon)
    if problem is not None:
        raise ApiError(403, "plan_required", problem)
    state = secrets.token_urlsafe(32)
    now = utcnow()
    expires_at = now + timedelta(seconds=services.settings.oauth_state_ttl_seconds)
    session.add(
        OAuthState(
            state_hash=_state_hash(state), account_id=account.id, created_at=now, expires_at=expires_at
        )
    )
    await session.commit()
    return ConnectStart(
        authorization_url=services.oauth.authorization_url(state), state_expires_at=expires_at
    )


@router.get(
    "/v1/accounts/{account_id}/quickbooks/connection",
    responses=error_responses(*ACCOUNT_ROUTE_ERRORS),
)
async def get_connection(account: AccountDep, session: SessionDep) -> ConnectionPublic:
    """The connection card: status, company (realm) id, connection date, and what to do next."""
    return await connection_public(session, account)


async def connection_public(session: SessionDep, account: Account) -> ConnectionPublic:
    row = await session.get(QuickBooksConnection, account.id, populate_existing=True)
    if row is None or row.status == ConnectionStatus.NOT_CONNECTED:
        return ConnectionPublic(status=ConnectionStatus.NOT_CONNECTED, action="connect")
    status = ConnectionStatus(row.status)
    plan_problem = entitlement_problem(account.plan, account.quickbooks_addon)
    action: Literal["connect", "reconnect", "upgrade"] | None = None
    if status in (ConnectionStatus.EXPIRING, ConnectionStatus.EXPIRED):
        action = "reconnect"
    elif status == ConnectionStatus.DISCONNECTED:
        action = "connect"
    elif plan_problem is not None:
        action = "upgrade"
    return ConnectionPublic(
        status=status,
        realm_id=row.realm_id,
        connected_at=row.connected_at,
        reason=row.status_reason,
        action=action,
        expires_at=_authorization_end(row) if status == ConnectionStatus.EXPIRING else None,
        sync_paused_reason=plan_problem
        if status in (ConnectionStatus.CONNECTED, ConnectionStatus.EXPIRING)
        else None,
        disconnect=await _disconnect_progress(session, row),
        last_sweep_at=row.cdc_last_sweep_at,
        missed_changes_caught=row.cdc_caught_total,
    )


def _authorization_end(row: QuickBooksConnection) -> datetime | None:
    ends = [at for at in (row.refresh_hard_expires_at, row.refresh_expires_at) if at is not None]
    return min(ends) if ends else None


async def _disconnect_progress(session: SessionDep, row: QuickBooksConnection) -> DisconnectProgress | None:
    if row.disconnect_mode is None:
        return None
    counts = dict(
        (
            await session.exec(
                select(InvoiceSync.disconnect_outcome, func.count())
                .where(
                    InvoiceSync.account_id == row.account_id, col(InvoiceSync.disconnect_outcome).is_not(None)
                )
                .group_by(InvoiceSync.disconnect_outcome)
            )
        ).all()
    )
    voided = counts.get("voided", 0) + counts.get("not_in_quickbooks", 0)
    failed = counts.get("refused", 0) + counts.get("failed", 0)
    failures = (
        await session.exec(
            select(InvoiceSync)
            .where(
                InvoiceSync.account_id == row.account_id,
                col(InvoiceSync.disconnect_outcome).in_(["refused", "failed"]),
            )
            .order_by(col(InvoiceSync.sent_at))
            .limit(MAX_LISTED_FAILURES)
        )
    ).all()
    total = max(row.disconnect_total, voided + failed)
    return DisconnectProgress(
        mode=DisconnectMode(row.disconnect_mode),
        total=total,
        voided=voided,
        failed=failed,
        left=max(total - voided - failed, 0) if row.disconnect_finished_at is None else 0,
        started_at=row.disconnect_started_at,
        finished_at=row.disconnect_finished_at,
        failures=[
            DisconnectFailure(invoice_id=failure.invoice_id, number=failure.number, reason=failure.last_error)
            for failure in failures
        ],
    )


@router.post(
    "/v1/accounts/{account_id}/quickbooks/disconnect",
    status_code=202,
    responses=error_responses(*ACCOUNT_ROUTE_ERRORS, 409, 413),
)
async def disconnect(
    body: DisconnectIn, account: AccountDep, session: SessionDep, services: ServicesDep
) -> ConnectionPublic:
    """Disconnect QuickBooks: `disconnect_only` stops syncing; `disconnect_and_void` first voids every synced,
    unvoided invoice in QuickBooks (progress in `disconnect`). Either way the authorization is revoked at Intuit,
    and connecting again later is always possible."""
    row = await session.get(QuickBooksConnection, account.id)
    if row is None or row.status in (ConnectionStatus.NOT_CONNECTED, ConnectionStatus.DISCONNECTED):
        raise ApiError(409, "not_connected", "QuickBooks is not connected.")
    if row.status == ConnectionStatus.DISCONNECTING:
        raise ApiError(409, "already_disconnecting", "QuickBooks is already being disconnected.")
    if body.mode == DisconnectMode.DISCONNECT_AND_VOID and row.status == ConnectionStatus.EXPIRED:
        raise ApiError(
            409,
            "reconnect_required",
            "The connection expired, so invoices cannot be voided in QuickBooks. Reconnect first, or disconnect only.",
        )
    handle = services.temporal.get_workflow_handle(connection_workflow_id(account.id))
    try:
        await handle.execute_update(ConnectionWorkflow.disconnect, DisconnectRequest(mode=body.mode))
    except WorkflowUpdateFailedError as exc:
        raise ApiError(
            409, "cannot_disconnect", f"QuickBooks cannot be disconnected now: {exc.cause}"
        ) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(409, "not_connected", "QuickBooks is not connected.") from exc
        raise ApiError(
            503, "temporarily_unavailable", "The disconnect could not be requested; try again."
        ) from exc
    return await connection_public(session, account)


def connection_policy(settings: Settings) -> ConnectionPolicy:
    return ConnectionPolicy(
        expiry_warning_seconds=settings.connection_expiry_warning_days * 86_400,
        cdc_interval_seconds=settings.cdc_sweep_interval_seconds,
        health_check_interval_seconds=settings.connection_health_check_interval_seconds,
    )


class CallbackOutcome(Exception):
    """How a callback ended, for the redirect back to the platform."""

    def __init__(self, reason: str, message: str, *, account_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.account_id = account_id


@router.get(
    "/oauth/quickbooks/callback",
    include_in_schema=True,
    response_class=RedirectResponse,
    status_code=303,
    responses={
        303: {"description": "Back to the platform (`PLATFORM_RETURN_URL`) with how connecting ended."},
        **error_responses(422, 503),
    },
)
async def oauth_callback(
    session: SessionDep,
    services: ServicesDep,
    state: Annotated[SafeStr | None, Query(max_length=512)] = None,
    code: Annotated[SafeStr | None, Query(max_length=1024)] = None,
    # A company id is digits (and its column holds 32).
    realm_id: Annotated[str | None, Query(alias="realmId", pattern=r"^[0-9]{1,32}$")] = None,
    error: Annotated[SafeStr | None, Query(max_length=128)] = None,
) -> RedirectResponse:
    """Where Intuit sends the browser back. Redirects to the platform with `quickbooks=connected` or an error."""
    return_url = services.settings.platform_return_url
    try:
        account_id = await _consume_state(session, state)
        params = await _complete_authorization(session, services, account_id, code, realm_id, error)
    except CallbackOutcome as outcome:
        params = {"quickbooks": "error", "reason": outcome.reason, "message": outcome.message}
        if outcome.account_id:
            params["account_id"] = outcome.account_id
    return RedirectResponse(_with_query(return_url, params), status_code=303)


async def _consume_state(session: SessionDep, state: str | None) -> str:
    if not state:
        raise CallbackOutcome("invalid_state", "The sign-in link is incomplete. Start connecting again.")
    now = utcnow()
    state_hash = _state_hash(state)
    result = await session.exec(
        update(OAuthState)
        .where(
            col(OAuthState.state_hash) == state_hash,
            col(OAuthState.used_at).is_(None),
            col(OAuthState.expires_at) > now,
        )
        .values(used_at=now)
    )
    await session.commit()
    row = await session.get(OAuthState, state_hash)
    if getattr(result, "rowcount", 0) == 1 and row is not None:
        return row.account_id
    if row is None:
        raise CallbackOutcome("invalid_state", "This sign-in link is not ours. Start connecting again.")
    if row.used_at is not None:
        raise CallbackOutcome(
            "state_used",
            "This sign-in link was already used. Start connecting again.",
            account_id=row.account_id,
        )
    raise CallbackOutcome(
        "state_expired", "The sign-in took too long. Start connecting again.", account_id=row.account_id
    )


async def _complete_authorization(
    session: SessionDep,
    services: ServicesDep,
    account_id: str,
    code: str | None,
    realm_id: str | None,
    error: str | None,
) -> dict[str, str]:
    if error is not None:
        if error == "access_denied":
            raise CallbackOutcome(
                "access_denied", "QuickBooks was not connected: access was denied.", account_id=account_id
            )
        raise CallbackOutcome(
            "authorization_failed", f"QuickBooks reported an error: {error}.", account_id=account_id
        )
    if not code or not realm_id:
        raise CallbackOutcome(
            "missing_code",
            "QuickBooks sent no authorization code. Start connecting again.",
            account_id=account_id,
        )
    account = await session.get(Account, account_id)
    if account is None or not quickbooks_entitled(account.plan, account.quickbooks_addon):
        problem = (
            entitlement_problem(account.plan, account.quickbooks_addon) if account else "Unknown account."
        )
        raise CallbackOutcome("plan_required", problem or "", account_id=account_id)

    try:
        tokens = await services.oauth.exchange_code(code, realm_id)
    except (QboOAuthError, QboError) as exc:
        logger.warning("code exchange failed for account %s: %s", account_id, exc)
        raise CallbackOutcome(
            "exchange_failed",
            "QuickBooks did not accept the authorization. Try connecting again.",
            account_id=account_id,
        ) from exc

    existing = await session.get(QuickBooksConnection, account_id)
    if (
        existing is not None
        and existing.status in _BOUND_STATUSES
        and existing.realm_id not in (None, realm_id)
    ):
        # Switching companies must be deliberate: disconnect first (keeping or voiding the old company's invoices).
        await _revoke_quietly(services, tokens.refresh_token)
        raise CallbackOutcome(
            "different_company",
            f"This account is connected to QuickBooks company {existing.realm_id}, but company {realm_id} was "
            "authorized. Reconnect to the same company, or disconnect first to switch companies.",
            account_id=account_id,
        )

    grant = QuickBooksGrant(
        id=str(uuid.uuid4()),
        account_id=account_id,
        realm_id=realm_id,
        **grant_columns(services.cipher, tokens),  # type: ignore[arg-type]
    )
    session.add(grant)
    await session.commit()
    try:
        await services.temporal.start_workflow(
            ConnectionWorkflow.run,
            ConnectionWorkflowInput(account_id=account_id, policy=connection_policy(services.settings)),
            id=connection_workflow_id(account_id),
            task_queue=services.settings.temporal_task_queue,
            start_signal="grant_authorized",
            start_signal_args=[GrantSignal(grant_id=grant.id)],
            search_attributes=search_attributes_for(account_id, realm_id),
        )
    except Exception as exc:
        logger.exception("connection workflow for %s could not be signalled", account_id)
        raise CallbackOutcome(
            "unavailable",
            "QuickBooks could not be connected right now. Try again in a minute.",
            account_id=account_id,
        ) from exc
    return {"quickbooks": "connected", "account_id": account_id, "realm_id": realm_id}


def search_attributes_for(account_id: str, realm_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(search_attributes.ACCOUNT_ID, account_id),
            SearchAttributePair(search_attributes.REALM_ID, realm_id),
        ]
    )


async def _revoke_quietly(services: ServicesDep, token: str) -> None:
    try:
        await services.oauth.revoke(token)
    except (QboOAuthError, QboError) as exc:
        logger.warning("could not revoke an unwanted authorization: %s", exc)


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


@router.get("/oauth/quickbooks/done", response_class=HTMLResponse, include_in_schema=False)
async def oauth_done(
    quickbooks: str = "",
    reason: str = "",
    message: str = "",
    account_id: str = "",
    realm_id: str = "",
) -> HTMLResponse:
    """The default PLATFORM_RETURN_URL for local runs: shows how connecting ended."""
    if quickbooks == "connected":
        title = "QuickBooks connected"
        text = f"Account {account_id} is connected to QuickBooks company {realm_id}."
    else:
        title = "QuickBooks was not connected"
        text = message or reason or "Unknown outcome."
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return HTMLResponse(page)
