"""QuickBooks access shared by the activities: a company's client bound to an account's tokens, and how
QuickBooks' faults become what the workflows branch on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlmodel import col, select
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from logging_setup import bind_log_fields
from models.crypto import TokenCipher
from models.db import SessionFactory
from models.domain import (
    CONNECTION_UNAVAILABLE,
    MAY_RESUME_STATUSES,
    QUICKBOOKS_REJECTED,
    UNCONNECTED_STATUSES,
    USABLE_CONNECTION_STATUSES,
    ConnectionStatus,
)
from models.plans import quickbooks_entitled
from models.tables import Account, QuickBooksConnection
from qbo.client import QboClient
from qbo.company_settings import explain_fault
from qbo.errors import QboError, QboNotFound, QboStaleObject, QboValidationError
from qbo.limits import RealmLimiter
from workflows.handles import ask_for_company_check
from workflows.ids import connection_workflow_id, stored_or
from workflows.messages import FailureReason, RefreshRequest, RefreshResult

# Refresh a little before Intuit's expiry so a call never starts with a token about to die.
ACCESS_TOKEN_MARGIN = timedelta(seconds=60)
# The longest an activity waits for the connection workflow's refresh (no token worker: the activity retries).
REFRESH_WAIT = timedelta(seconds=60)


def connection_unavailable(reason: str) -> ApplicationError:
    return ApplicationError(reason, type=CONNECTION_UNAVAILABLE, non_retryable=True)


def rejected(what: str, exc: QboError) -> ApplicationError:
    """A QuickBooks validation fault: no retry can fix it, and the user needs to read why.

    The message names the fault only (the SDK logs it); Intuit's words, which can echo what was sent, are the
    reason the user reads, encrypted in the details.
    """
    detail = exc.detail or exc.message
    reason = f"QuickBooks rejected {what}: {exc.message}" + (f" ({detail})" if detail != exc.message else "")
    advice = explain_fault(exc.code, exc.detail)
    if advice is not None:
        reason = f"{reason}. {advice}"
    return ApplicationError(
        f"QuickBooks rejected {what}: {exc}",
        FailureReason(reason),
        type=QUICKBOOKS_REJECTED,
        non_retryable=True,
    )


def rejected_in_words(reason: str) -> ApplicationError:
    """A sync the company cannot take as it is (its settings, its tax codes): final until the user changes
    something; the reason says what, and travels encrypted in the details."""
    return ApplicationError(
        "QuickBooks cannot take this invoice with the company's settings",
        FailureReason(reason),
        type=QUICKBOOKS_REJECTED,
        non_retryable=True,
    )


def quickbooks_failed(exc: QboError) -> ApplicationError:
    """A failure a retry may fix, typed by its class; the message names codes only, the reason has Intuit's words."""
    return ApplicationError(str(exc), FailureReason(exc.readable), type=type(exc).__name__)


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turns QuickBooks faults into what the workflow branches on: rejected (final) or retryable by type."""
    try:
        yield
    except ApplicationError:
        raise
    except (QboNotFound, QboStaleObject) as exc:
        raise quickbooks_failed(exc) from exc
    except QboValidationError as exc:
        raise rejected(what, exc) from exc
    except QboError as exc:
        raise quickbooks_failed(exc) from exc


class ConnectionTokens:
    """The TokenSource of one account: reads tokens from the database, asks the connection workflow to refresh.

    Refreshing goes through the connection workflow's `refresh_access_token` update, so however many
    activities hit a 401 at once, Intuit sees one refresh.
    """

    def __init__(
        self,
        *,
        account_id: str,
        sessions: SessionFactory,
        cipher: TokenCipher,
        temporal: Client,
        allow_disconnecting: bool = False,
    ):
        self._account_id = account_id
        self._allow_disconnecting = allow_disconnecting
        self._sessions = sessions
        self._cipher = cipher
        self._temporal = temporal
        self._access: str | None = None
        self._version = -1
        self._expires_at: datetime | None = None
        self._workflow_id = connection_workflow_id(account_id)
        self.realm_id: str | None = None

    async def load(self) -> None:
        async with self._sessions() as session:
            row = await session.get(QuickBooksConnection, self._account_id)
            account = await session.get(Account, self._account_id)
        usable = USABLE_CONNECTION_STATUSES | (
            {ConnectionStatus.DISCONNECTING} if self._allow_disconnecting else set()
        )
        if row is None or row.status not in usable or row.access_token_enc is None:
            raise connection_unavailable(_unusable_reason(row))
        # Disconnect & Void still voids after a downgrade: the user asked for it while disconnecting.
        if not self._allow_disconnecting and (
            account is None or not quickbooks_entitled(account.plan, account.quickbooks_addon)
        ):
            raise connection_unavailable("The account's plan no longer includes QuickBooks.")
        self._access = self._cipher.decrypt(row.access_token_enc)
        self._workflow_id = stored_or(row.workflow_id, connection_workflow_id(self._account_id))
        self._version = row.token_version
        self._expires_at = row.access_expires_at
        self.realm_id = row.realm_id

    async def access_token(self) -> str:
        if self._access is None:
            await self.load()
        if self._expires_at is not None and self._expires_at - ACCESS_TOKEN_MARGIN <= datetime.now(UTC):
            await self._refresh()
        assert self._access is not None
        return self._access

    async def refresh_after_unauthorized(self, rejected: str) -> str:
        await self._refresh()
        assert self._access is not None
        return self._access

    async def _refresh(self) -> None:
        handle = self._temporal.get_workflow_handle(self._workflow_id)
        try:
            result = await handle.execute_update(
                "refresh_access_token",
                RefreshRequest(seen_version=self._version),
                result_type=RefreshResult,
                rpc_timeout=REFRESH_WAIT,
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            # The connection's token worker did not answer in time: this attempt fails, a retry asks again.
            raise ApplicationError(
                "the token refresh was not answered in time", type="RefreshTimeout"
            ) from exc
        except RPCError as exc:
            raise connection_unavailable(
                f"The QuickBooks connection is not running ({exc.message})."
            ) from exc
        if not result.usable:
            raise connection_unavailable(
                f"QuickBooks connection is {result.status.value}; reconnect to resume."
            )
        await self.load()


@dataclass
class QuickBooksContext:
    """What a QuickBooks activity works with: one realm's client, bound to one account's tokens."""

    account_id: str
    realm_id: str
    client: QboClient


class QuickBooksAccess:
    """Clients for QuickBooks companies, bound to the tokens of the account that connected them.

    Built once per worker with the database, the token cipher, the Temporal client (refreshes go through the
    connection workflow), the HTTP client and the per-company limiter every call passes.
    """

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        cipher: TokenCipher,
        temporal: Client,
        http: httpx.AsyncClient,
        limiter: RealmLimiter,
        api_base_url: str,
        minor_version: int = 75,
        timeout: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._cipher = cipher
        self._temporal = temporal
        self._http = http
        self._limiter = limiter
        self._api_base_url = api_base_url
        self._minor_version = minor_version
        self._timeout = timeout

    async def context(self, account_id: str, *, allow_disconnecting: bool = False) -> QuickBooksContext:
        """The account's company and a client for it; ConnectionUnavailable when the connection cannot be used."""
        tokens = ConnectionTokens(
            account_id=account_id,
            sessions=self._sessions,
            cipher=self._cipher,
            temporal=self._temporal,
            allow_disconnecting=allow_disconnecting,
        )
        await tokens.load()
        assert tokens.realm_id is not None
        bind_log_fields(account_id=account_id, realm_id=tokens.realm_id)
        return QuickBooksContext(
            account_id=account_id, realm_id=tokens.realm_id, client=self._client(tokens.realm_id, tokens)
        )

    async def ask_for_company_check(self, account_id: str) -> None:
        """Ask the account's connection workflow to check its company now (best effort: the daily check follows)."""
        async with self._sessions() as session:
            row = await session.get(QuickBooksConnection, account_id)
        workflow_id = stored_or(row.workflow_id if row else None, connection_workflow_id(account_id))
        try:
            await ask_for_company_check(self._temporal, workflow_id=workflow_id, rpc_timeout=REFRESH_WAIT)
        except RPCError as exc:
            activity.logger.warning("connection workflow not asked for a company check: %s", exc.message)

    async def realm_context(self, realm_id: str) -> QuickBooksContext | None:
        """A client for the company through any account whose connection to it is usable."""
        async with self._sessions() as session:
            account_ids = (
                await session.exec(
                    select(QuickBooksConnection.account_id).where(
                        QuickBooksConnection.realm_id == realm_id,
                        col(QuickBooksConnection.status).in_(sorted(USABLE_CONNECTION_STATUSES)),
                    )
                )
            ).all()
        for account_id in account_ids:
            try:
                return await self.context(account_id)
            except ApplicationError:
                continue
        return None

    async def realm_may_come_back(self, realm_id: str) -> bool:
        """Whether some account's connection to the company may be usable again (expired, paused, being adopted)."""
        async with self._sessions() as session:
            waiting = (
                await session.exec(
                    select(QuickBooksConnection.account_id).where(
                        QuickBooksConnection.realm_id == realm_id,
                        col(QuickBooksConnection.status).in_(sorted(MAY_RESUME_STATUSES)),
                    )
                )
            ).first()
        return waiting is not None

    def _client(self, realm_id: str, tokens: ConnectionTokens) -> QboClient:
        return QboClient(
            realm_id=realm_id,
            api_base_url=self._api_base_url,
            tokens=tokens,
            http=self._http,
            limiter=self._limiter,
            minor_version=self._minor_version,
            # Throttling is waited out here, heartbeating, so it never costs one of the sync's retries.
            max_throttle_wait=None,
            on_wait=_heartbeat_while_waiting,
            timeout=self._timeout,
        )


def _unusable_reason(row: QuickBooksConnection | None) -> str:
    if row is None or row.status in UNCONNECTED_STATUSES:
        return "QuickBooks is not connected."
    if row.status == ConnectionStatus.EXPIRED:
        return "The QuickBooks connection expired; reconnect QuickBooks to resume."
    if row.status == ConnectionStatus.DISCONNECTING:
        return "QuickBooks is being disconnected."
    return f"The QuickBooks connection is {row.status}."


async def _heartbeat_while_waiting(seconds: float) -> None:
    activity.heartbeat(f"throttled by QuickBooks; waiting {seconds:.1f}s")
