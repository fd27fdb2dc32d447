"""Connecting QuickBooks: the authorization URL, the OAuth callback, and the connection's status."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func
from sqlmodel import col, select, update
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AccountDep, ServicesDep, SessionDep
from api.errors import ACCOUNT_ROUTE_ERRORS, ApiError, error_responses
from models.bounds import SafeStr
from models.connections import (
    company_blocked,
    company_held,
    count_voidable_on_disconnect,
    stored_company_settings,
)
from models.crypto import encrypted_token_columns
from models.db import release_connection
from models.domain import (
    COMPANY_BOUND_STATUSES,
    DIFFERENT_COMPANY,
    UNCONNECTED_STATUSES,
    VOID_DONE,
    VOID_NOT_DONE,
    ConnectionStatus,
    DisconnectMode,
)
from models.plans import entitlement_problem, quickbooks_entitled
from models.queries import for_update
from models.schemas import (
    CompanyCheckPublic,
    CompanyPublic,
    ConnectionPublic,
    ConnectStart,
    DisconnectFailure,
    DisconnectIn,
    DisconnectProgress,
)
from models.signing import query_message, sign_query
from models.tables import Account, InvoiceSync, OAuthState, QuickBooksConnection, QuickBooksGrant, utcnow
from qbo.companies import CompanyNotVerified, VerificationUnavailable, VerifiedCompany
from qbo.errors import QboError, QboOAuthError, QboServerError, QboUnavailable
from settings import Settings
from workflows.connection import ConnectionWorkflow
from workflows.handles import tell_connection_of_grant
from workflows.ids import connection_workflow_id, stored_or
from workflows.messages import (
    ConnectionPolicy,
    DisconnectRequest,
    GrantOutcome,
    GrantSignal,
)

logger = logging.getLogger(__name__)

router = APIRouter(tags=["quickbooks"])

# The connection card lists at most this many invoices Disconnect & Void could not void.
MAX_LISTED_FAILURES = 100

# Intuit's company ids are digit strings; the table holds 32 characters.
_REALM_ID = re.compile(r"[0-9]{1,32}")
_OAUTH_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_NOT_VERIFIED = (
    "QuickBooks could not confirm the company this sign-in named, so nothing was connected. "
    "Start connecting again."
)
_UNAVAILABLE = "QuickBooks could not be connected right now. Try again in a minute."


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


# --- Binding the flow to the browser -------------------------------------------------------------------------
#
# `state` alone ties a callback to an account, not to a person: anyone could start connecting their own account
# and get a victim to approve Intuit's page, linking the victim's company to the attacker's account. So the link
# the platform gets is this service's start link; opening it sets a cookie in that browser (its hash kept with
# the state) and goes on to Intuit; the callback is accepted only from the browser holding that cookie. The start
# link opens once and within minutes: the platform redirects the user's browser to it straight from their click
# and never shows, stores or sends it, since a start link forwarded unopened is the one way left to hand a flow
# to someone else's browser. (An attacker minting a fresh one for their own account and sending a victim's browser
# straight to it is caught only by the platform, which knows who is signed in there: README, Connect.)

START_PATH = "/oauth/quickbooks/start"
# Under https the cookie gets the __Host- prefix: browsers then accept it only from this very host over https,
# with no Domain and Path=/, so neither a sibling subdomain nor a network attacker on http can plant a cookie of
# their own flow in a victim's browser. Plain http (development only) keeps it on the OAuth paths.
_SECURE_COOKIE_PREFIX = "__Host-"
_COOKIE_NAME = "qbo_oauth_"


@dataclass(frozen=True)
class FlowCookie:
    """Where and how the flow cookie is set, from API_PUBLIC_URL."""

    secure: bool
    path: str

    @classmethod
    def for_settings(cls, settings: Settings) -> FlowCookie:
        public = urlsplit(settings.api_public_url)
        if public.scheme == "https" or settings.app_env == "production":
            return cls(secure=True, path="/")
        return cls(secure=False, path=public.path.rstrip("/") + "/oauth/quickbooks")

    def name(self, state: str) -> str:
        # One cookie per flow (named from its state), so two tabs can connect at once.
        digest = hashlib.sha256(b"qbo-sync flow cookie\0" + state.encode()).hexdigest()[:32]
        return (_SECURE_COOKIE_PREFIX if self.secure else "") + _COOKIE_NAME + digest

    def set(self, response: Response, state: str, value: str, max_age: int) -> None:
        response.set_cookie(
            self.name(state),
            value,
            max_age=max_age,
            path=self.path,
            secure=self.secure,
            httponly=True,
            # Lax: sent on the top-level GET from Intuit's page back to the callback, never on cross-site POSTs.
            samesite="lax",
        )

    def clear(self, response: Response, state: str) -> None:
        response.delete_cookie(
            self.name(state), path=self.path, secure=self.secure, httponly=True, samesite="lax"
        )


def _private(response: Response) -> Response:
    # Neither the start link nor the callback URL (state, code) may be cached or passed on as a Referer.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.post(
    "/v1/accounts/{account_id}/quickbooks/connect",
    responses=error_responses(*ACCOUNT_ROUTE_ERRORS),
)
async def connect(account: AccountDep, session: SessionDep, services: ServicesDep) -> ConnectStart:
    """Start connecting: redirect the user's browser at once to the returned `authorization_url`.

    It is this service's start link (single use, valid for `authorization_url_expires_at`): it binds the sign-in
    to the browser that opens it, then goes on to Intuit's authorization page. Never show, store or send it."""
    problem = entitlement_problem(account.plan, account.quickbooks_addon)
    if problem is not None:
        raise ApiError(403, "plan_required", problem)
    settings = services.settings
    state = secrets.token_urlsafe(32)
    now = utcnow()
    expires_at = now + timedelta(seconds=settings.oauth_state_ttl_seconds)
    launch_expires_at = min(now + timedelta(seconds=settings.oauth_launch_ttl_seconds), expires_at)
    session.add(
        OAuthState(
            state_hash=_state_hash(state),
            account_id=account.id,
            created_at=now,
            expires_at=expires_at,
            launch_expires_at=launch_expires_at,
        )
    )
    await session.commit()
    start_url = f"{settings.api_public_url.rstrip('/')}{START_PATH}?{urlencode({'state': state})}"
    return ConnectStart(
        authorization_url=start_url,
        authorization_url_expires_at=launch_expires_at,
        state_expires_at=expires_at,
        flow_id=_flow_id(state),
    )


def _flow_id(state: str) -> str:
    """An opaque name of one sign-in that the return to the platform carries (`flow`): the platform matches it with
    the session that asked to connect. Derived from the state, which it does not reveal."""
    return hashlib.sha256(f"flow:{state}".encode()).hexdigest()[:32]


@router.get(
    START_PATH,
    response_class=RedirectResponse,
    status_code=303,
    responses={
        303: {"description": "On to Intuit's authorization page, or back to the platform with an error."},
        **error_responses(422, 503),
    },
)
async def oauth_start(
    session: SessionDep,
    services: ServicesDep,
    state: Annotated[SafeStr | None, Query(max_length=512)] = None,
) -> Response:
    """The start link: binds the sign-in to this browser (a cookie) and sends it on to Intuit's authorization
    page. Opens once, within minutes; otherwise redirects to the platform with `quickbooks=error`."""
    cookie = FlowCookie.for_settings(services.settings)
    value = secrets.token_urlsafe(32)
    try:
        row = await _launch(session, state, _state_hash(value))
    except CallbackOutcome as outcome:
        params = {"quickbooks": "error", "reason": outcome.reason, "message": outcome.message}
        return _back_to_platform(services.settings, params, state)
    assert state is not None
    response = RedirectResponse(services.oauth.authorization_url(state), status_code=303)
    cookie.set(response, state, value, max_age=max(int((row.expires_at - utcnow()).total_seconds()), 1))
    return _private(response)


async def _launch(session: SessionDep, state: str | None, browser_hash: str) -> OAuthState:
    """Mark the state's start link opened, by the browser whose cookie hashes to `browser_hash` (once)."""
    if not state:
        raise CallbackOutcome("invalid_state", "The sign-in link is incomplete. Start connecting again.")
    now = utcnow()
    state_hash = _state_hash(state)
    result = await session.exec(
        update(OAuthState)
        .where(
            col(OAuthState.state_hash) == state_hash,
            col(OAuthState.launched_at).is_(None),
            col(OAuthState.used_at).is_(None),
            col(OAuthState.launch_expires_at) > now,
        )
        .values(launched_at=now, browser_hash=browser_hash)
    )
    await session.commit()
    row = await session.get(OAuthState, state_hash, populate_existing=True)
    if getattr(result, "rowcount", 0) == 1 and row is not None:
        return row
    if row is None:
        raise CallbackOutcome("invalid_state", "This sign-in link is not ours. Start connecting again.")
    if row.launched_at is not None or row.used_at is not None:
        raise CallbackOutcome(
            "start_link_used",
            "This QuickBooks sign-in link was already opened; it works once. Start connecting again.",
        )
    raise CallbackOutcome(
        "start_link_expired", "This QuickBooks sign-in link has expired. Start connecting again."
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
    realm_id, company_name = row.realm_id, row.company_name
    if status == ConnectionStatus.CONNECTING:
        # The company being connected is the newest authorization's (the row keeps the one before until then).
        pending = (
            await session.exec(
                select(QuickBooksGrant)
                .where(
                    QuickBooksGrant.account_id == row.account_id, col(QuickBooksGrant.adopted_at).is_(None)
                )
                .order_by(col(QuickBooksGrant.created_at).desc())
                .limit(1)
            )
        ).first()
        if pending is not None:
            realm_id, company_name = pending.realm_id, pending.company_name
    return ConnectionPublic(
        status=status,
        realm_id=realm_id,
        company_name=company_name,
        connected_at=row.connected_at,
        reason=row.status_reason,
        action=action,
        expires_at=_authorization_end(row) if status == ConnectionStatus.EXPIRING else None,
        sync_paused_reason=(plan_problem or company_blocked(row))
        if status in (ConnectionStatus.CONNECTED, ConnectionStatus.EXPIRING)
        else None,
        company=company_public(row) if status in COMPANY_BOUND_STATUSES else None,
        disconnect=await _disconnect_progress(session, row),
        invoices_to_void=await count_voidable_on_disconnect(session, account.id)
        if status in (ConnectionStatus.CONNECTED, ConnectionStatus.EXPIRING)
        else None,
        last_sweep_at=row.cdc_last_sweep_at,
        missed_changes_caught=row.cdc_caught_total,
    )


def company_public(row: QuickBooksConnection) -> CompanyPublic | None:
    settings = stored_company_settings(row)
    if settings is None:
        return None
    return CompanyPublic(
        country=settings.country,
        home_currency=settings.home_currency,
        multicurrency=settings.multicurrency,
        custom_transaction_numbers=settings.custom_txn_numbers,
        books_closed_through=settings.book_close_date,
        using_sales_tax=settings.using_sales_tax,
        checked_at=row.company_checked_at,
        checks=[CompanyCheckPublic.model_validate(check) for check in json.loads(row.company_checks or "[]")],
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
    voided = sum(counts.get(outcome.value, 0) for outcome in VOID_DONE)
    failed = sum(counts.get(outcome.value, 0) for outcome in VOID_NOT_DONE)
    failures = (
        await session.exec(
            select(InvoiceSync)
            .where(
                InvoiceSync.account_id == row.account_id,
                col(InvoiceSync.disconnect_outcome).in_(sorted(VOID_NOT_DONE)),
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
    unvoided invoice of this account in QuickBooks (progress in `disconnect`). Either way the authorization is
    revoked at Intuit, unless another account is connected to the same company (revoking would disconnect the
    app from it): then the tokens are erased here only. Connecting again later is always possible."""
    row = await session.get(QuickBooksConnection, account.id)
    if row is None or row.status in (ConnectionStatus.NOT_CONNECTED, ConnectionStatus.DISCONNECTED):
        raise ApiError(409, "not_connected", "QuickBooks is not connected.")
    if row.status == ConnectionStatus.DISCONNECTING:
        raise ApiError(409, "already_disconnecting", "QuickBooks is already being disconnected.")
    if row.status == ConnectionStatus.CONNECTING:
        raise ApiError(
            409,
            "still_connecting",
            "QuickBooks is still being connected; disconnect once it reads connected.",
        )
    if body.mode == DisconnectMode.DISCONNECT_AND_VOID and row.status == ConnectionStatus.EXPIRED:
        raise ApiError(
            409,
            "reconnect_required",
            "The connection expired, so invoices cannot be voided in QuickBooks. Reconnect first, or disconnect only.",
        )
    handle = services.temporal.get_workflow_handle(
        stored_or(row.workflow_id, connection_workflow_id(account.id))
    )
    await release_connection(session)
    try:
        await handle.execute_update(
            ConnectionWorkflow.disconnect,
            DisconnectRequest(mode=body.mode),
            rpc_timeout=timedelta(seconds=services.settings.temporal_rpc_timeout_seconds),
        )
    except WorkflowUpdateFailedError as exc:
        raise ApiError(
            409, "cannot_disconnect", f"QuickBooks cannot be disconnected now: {exc.cause}"
        ) from exc
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        # No worker took it in time; it may still be taken later (the connection status will say).
        raise ApiError(
            503,
            "temporarily_unavailable",
            "The disconnect was not confirmed in time; check the connection or try again.",
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
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    state: Annotated[SafeStr | None, Query(max_length=512)] = None,
    code: Annotated[SafeStr | None, Query(max_length=1024)] = None,
    realm_id: Annotated[str | None, Query(alias="realmId", max_length=64)] = None,
    error: Annotated[SafeStr | None, Query(max_length=128)] = None,
) -> Response:
    """Where Intuit sends the browser back. Accepted only from the browser that opened the start link (its flow
    cookie). Redirects to the platform with `quickbooks=connected` or an error, and clears the flow cookie."""
    cookie = FlowCookie.for_settings(services.settings)
    try:
        account_id = await _consume_state(session, state, cookie, request.cookies)
        params = await _complete_authorization(session, services, account_id, code, realm_id, error)
    except CallbackOutcome as outcome:
        params = {"quickbooks": "error", "reason": outcome.reason, "message": outcome.message}
        if outcome.account_id:
            params["account_id"] = outcome.account_id
    response = _back_to_platform(services.settings, params, state)
    if state:
        cookie.clear(response, state)
    return _private(response)


async def _consume_state(
    session: SessionDep, state: str | None, cookie: FlowCookie, cookies: Mapping[str, str]
) -> str:
    """Spend the state (once, unexpired), then check it came back to the browser that opened its start link."""
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
    row = await session.get(OAuthState, state_hash, populate_existing=True)
    if row is None:
        raise CallbackOutcome("invalid_state", "This sign-in link is not ours. Start connecting again.")
    if getattr(result, "rowcount", 0) != 1:
        if row.used_at is not None:
            # Told nothing about the account: this browser has not shown it started the sign-in.
            raise CallbackOutcome("state_used", "This sign-in link was already used. Start connecting again.")
        raise CallbackOutcome("state_expired", "The sign-in took too long. Start connecting again.")
    # The state is spent either way: a callback from the wrong browser cannot be retried from the right one.
    presented = cookies.get(cookie.name(state))
    if (
        row.browser_hash is None
        or presented is None
        or not hmac.compare_digest(_state_hash(presented), row.browser_hash)
    ):
        # Told nothing about the account: this browser did not start the sign-in.
        raise CallbackOutcome(
            "browser_mismatch",
            "This QuickBooks sign-in was started in another browser, so nothing was connected. To connect your "
            "QuickBooks, start from Connect QuickBooks in your own account.",
        )
    return row.account_id


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
        # Only an OAuth error code is repeated back; the parameter is whatever the browser sent.
        shown = error if _OAUTH_ERROR_CODE.fullmatch(error) else "an unknown error"
        raise CallbackOutcome(
            "authorization_failed", f"QuickBooks reported an error: {shown}.", account_id=account_id
        )
    if not code or not realm_id:
        raise CallbackOutcome(
            "missing_code",
            "QuickBooks sent no authorization code. Start connecting again.",
            account_id=account_id,
        )
    if not _REALM_ID.fullmatch(realm_id):
        # Not a company id Intuit issues: the link was edited. The code is left unused (it dies in minutes).
        raise CallbackOutcome("company_not_verified", _NOT_VERIFIED, account_id=account_id)
    account = await session.get(Account, account_id)
    if account is None or not quickbooks_entitled(account.plan, account.quickbooks_addon):
        problem = (
            entitlement_problem(account.plan, account.quickbooks_addon) if account else "Unknown account."
        )
        raise CallbackOutcome("plan_required", problem or "", account_id=account_id)

    try:
        tokens = await services.oauth.exchange_code(code, realm_id)
    except (QboUnavailable, QboServerError) as exc:
        logger.warning("code exchange for account %s got no answer: %s", account_id, type(exc).__name__)
        raise CallbackOutcome("unavailable", _UNAVAILABLE, account_id=account_id) from exc
    except (QboOAuthError, QboError) as exc:
        logger.warning("code exchange failed for account %s: %s", account_id, exc)
        raise CallbackOutcome(
            "exchange_failed",
            "QuickBooks did not accept the authorization. Try connecting again.",
            account_id=account_id,
        ) from exc

    # From here on every refusal gets rid of the tokens just obtained: nothing unverified or unwanted is kept.
    try:
        company = await services.company_verifier.verify(realm_id, tokens.access_token)
    except CompanyNotVerified as exc:
        # The tokens are for some other company (the one really authorized, which Intuit does not name) and are
        # revoked. That may disconnect the app from that company; only its admin could have obtained them, and
        # they can disconnect the app there at will anyway.
        logger.warning("the company named in account %s's callback was not verified: %s", account_id, exc)
        await _revoke_quietly(services, tokens.refresh_token)
        raise CallbackOutcome("company_not_verified", _NOT_VERIFIED, account_id=account_id) from exc
    except VerificationUnavailable as exc:
        logger.warning("could not verify account %s's company: QuickBooks %s", account_id, exc)
        await _discard_tokens(session, services, tokens.refresh_token, realm_id)
        raise CallbackOutcome("unavailable", _UNAVAILABLE, account_id=account_id) from exc

    existing = await session.get(QuickBooksConnection, account_id)
    if (
        existing is not None
        and existing.status in COMPANY_BOUND_STATUSES
        and existing.realm_id not in (None, company.realm_id)
    ):
        # Switching companies must be deliberate: disconnect first (keeping or voiding the old company's invoices).
        await _discard_tokens(session, services, tokens.refresh_token, company.realm_id)
        raise CallbackOutcome(
            "different_company",
            f"This account is connected to QuickBooks company {existing.realm_id}, but company "
            f"{company.realm_id} was authorized. Reconnect to the same company, or disconnect first to switch "
            "companies.",
            account_id=account_id,
        )

    grant = QuickBooksGrant(
        id=str(uuid.uuid4()),
        account_id=account_id,
        realm_id=company.realm_id,
        company_name=company.name,
        **encrypted_token_columns(services.cipher, tokens),  # type: ignore[arg-type]
    )
    session.add(grant)
    await _mark_connecting(session, account_id, company)
    await session.commit()
    return await _hand_to_connection(session, services, grant, company)


async def _mark_connecting(session: SessionDep, account_id: str, company: VerifiedCompany) -> None:
    """An account with no connection now reads `connecting` (in the grant's transaction): an invoice sent from
    here on waits for the connection and syncs, where it used to be `not_synced` until the workflow adopted it."""
    row = await session.get(QuickBooksConnection, account_id, with_for_update=for_update(session))
    if row is None:
        session.add(
            QuickBooksConnection(
                account_id=account_id,
                status=ConnectionStatus.CONNECTING.value,
                realm_id=company.realm_id,
                company_name=company.name,
                workflow_id=connection_workflow_id(account_id),
            )
        )
    elif row.status in UNCONNECTED_STATUSES:
        # The company is set by the adoption, which compares it with the previous one.
        row.status = ConnectionStatus.CONNECTING.value
        row.status_reason = None
        row.updated_at = utcnow()
        session.add(row)


async def _hand_to_connection(
    session: SessionDep, services: ServicesDep, grant: QuickBooksGrant, company: VerifiedCompany
) -> dict[str, str]:
    """Tell the account's connection workflow and wait (a little) for it to adopt the grant.

    Read-your-writes across the callback: the browser is told `connected` only once the connection reads
    connected. A workflow that is slow or not running (a worker down) gets the grant all the same, and the browser
    is told `connecting`; if Temporal itself cannot be reached the grant stays stored and the API's relay hands it
    over when Temporal is back. Either way nothing is lost: the connection reads `connecting` meanwhile, and
    invoices sent meanwhile wait for it and sync.
    """
    account_id = grant.account_id
    settings = services.settings
    connection = await session.get(QuickBooksConnection, account_id)
    workflow_id = stored_or(
        connection.workflow_id if connection else None, connection_workflow_id(account_id)
    )
    outcome = {"account_id": account_id, "realm_id": company.realm_id}
    await release_connection(session)
    try:
        await tell_connection_of_grant(
            services.temporal,
            task_queue=settings.temporal_task_queue,
            workflow_id=workflow_id,
            account_id=account_id,
            realm_id=company.realm_id,
            grant_id=grant.id,
            policy=connection_policy(settings),
            company_name=company.name,
            rpc_timeout=timedelta(seconds=settings.temporal_rpc_timeout_seconds),
        )
    except RPCError as exc:
        logger.warning(
            "connection workflow of %s not told yet (%s): the relay will", account_id, exc.status.name
        )
        return {"quickbooks": "connecting", **outcome}
    grant.signalled_at = utcnow()
    session.add(grant)
    await session.commit()
    handle = services.temporal.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + settings.oauth_adoption_wait_seconds
    adoption = GrantOutcome(adopted=False, carried_over=True)
    try:
        # A run that ends (continues as new) answers `carried_over`: the next run is asked, in the time left.
        while adoption.carried_over and (left := deadline - time.monotonic()) > 0:
            adoption = await handle.execute_update(
                ConnectionWorkflow.wait_for_grant,
                GrantSignal(grant_id=grant.id),
                rpc_timeout=timedelta(seconds=left),
            )
    except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError, WorkflowUpdateFailedError) as exc:
        logger.info(
            "connection of %s not adopted in time (%s): told connecting", account_id, type(exc).__name__
        )
        return {"quickbooks": "connecting", **outcome}
    if adoption.carried_over:
        return {"quickbooks": "connecting", **outcome}
    if adoption.adopted:
        return {"quickbooks": "connected", **outcome}
    if adoption.refused == DIFFERENT_COMPANY:
        raise CallbackOutcome(
            "different_company",
            "This account is connected to another QuickBooks company. Reconnect to the same company, or "
            "disconnect first to switch companies.",
            account_id=account_id,
        )
    raise CallbackOutcome("unavailable", _UNAVAILABLE, account_id=account_id)


async def _revoke_quietly(services: ServicesDep, token: str) -> None:
    try:
        await services.oauth.revoke(token)
    except (QboOAuthError, QboError) as exc:
        logger.warning("could not revoke an unwanted authorization: %s", exc)


async def _discard_tokens(
    session: SessionDep, services: ServicesDep, refresh_token: str, realm_id: str
) -> None:
    """Get rid of tokens the callback will not keep: revoked at Intuit, unless a connection of ours (another
    account's, or this account's own current one) holds the same company. Intuit documents that revoking
    "disconnects the app from the company", which would cut that connection off; the tokens are then only
    dropped here (never stored), and lapse at Intuit on their own."""
    if await company_held(session, realm_id):
        logger.info("an unwanted authorization was dropped, not revoked: the company is connected here")
        return
    await _revoke_quietly(services, refresh_token)


def _back_to_platform(settings: Settings, params: dict[str, str], state: str | None) -> Response:
    """The redirect to PLATFORM_RETURN_URL with how connecting ended, signed, so that the platform acts on it only
    when it comes from here (anyone can type a return URL with `quickbooks=connected` in it) and only for the
    sign-in its own session started (`flow`, the `flow_id` that `connect` answered).

    `signature` is `t=<unix>,v1=<hex HMAC-SHA256(key, "<t>.<every other query parameter of the URL, sorted and
    URL-encoded>")>`, a `v1` for the key of each PLATFORM_EVENTS_SECRET (models/signing.py)."""
    parts = urlsplit(settings.platform_return_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    if state:
        query["flow"] = _flow_id(state)
    query["signature"] = sign_query(
        settings.platform_events_secret.get_secret_value(), int(time.time()), query_message(query)
    )
    return _private(RedirectResponse(urlunsplit(parts._replace(query=urlencode(query))), status_code=303))


@router.get("/oauth/quickbooks/done", response_class=HTMLResponse, include_in_schema=False)
async def oauth_done(quickbooks: str = "", reason: str = "", realm_id: str = "") -> HTMLResponse:
    """The default PLATFORM_RETURN_URL for local runs: shows how connecting ended.

    It says only what it can say without trusting the link: anyone can craft one, so free text in it (a message,
    a company name) would let a stranger put words on this site. A reason is shown only as a known code."""
    if quickbooks == "connected":
        title = "QuickBooks connected"
        company = f" to QuickBooks company {realm_id}" if _REALM_ID.fullmatch(realm_id) else ""
        text = f"The account is connected{company}. You can close this page."
    else:
        title = "QuickBooks was not connected"
        code = f" ({reason})" if _OAUTH_ERROR_CODE.fullmatch(reason) else ""
        text = f"Connecting did not finish{code}. Start connecting again from the platform."
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return HTMLResponse(page)
