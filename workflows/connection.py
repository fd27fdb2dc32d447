"""The connection workflow: one per account, the only writer of its QuickBooks tokens."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.connection import ConnectionActivities
    from activities.notify import PlatformEventActivities
    from workflows.messages import (
        USABLE_CONNECTION_STATUSES,
        AdoptGrantInput,
        ConnectionChange,
        ConnectionInfo,
        ConnectionProgress,
        ConnectionRecord,
        ConnectionStatus,
        ConnectionWorkflowInput,
        GrantSignal,
        InvoiceStatus,
        NotificationItem,
        PlatformEvent,
        RefreshRequest,
        RefreshResult,
        RefreshTokensInput,
        SignalInvoicesInput,
    )

# Token activities run on their own task queue, so they are never starved by invoice activities
# that are themselves waiting for a refresh.
TOKEN_TASK_QUEUE_SUFFIX = "-tokens"  # noqa: S105  (a task queue name)
# Refresh this long before the access token (1 hour) expires.
REFRESH_AHEAD = timedelta(minutes=5)
TOKEN_ACTIVITY_TIMEOUT = timedelta(seconds=60)
# Intuit being unreachable is retried until it answers; invalid_grant is an answer, not an error.
TOKEN_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=2), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=2)
)
FAN_OUT_TIMEOUT = timedelta(minutes=10)
FAN_OUT_HEARTBEAT = timedelta(seconds=30)
PLATFORM_EVENT_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=5), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=10)
)
MAX_HISTORY_EVENTS = 5_000


def token_task_queue() -> str:
    return workflow.info().task_queue.removesuffix(TOKEN_TASK_QUEUE_SUFFIX) + TOKEN_TASK_QUEUE_SUFFIX


@workflow.defn
class ConnectionWorkflow:
    """Keeps one account's QuickBooks connection alive: adopts authorizations, refreshes tokens, notices expiry.

    Id: `connection-{account_id}` (signal-with-start from the OAuth callback).
    Signals:
      - `grant_authorized` (GrantSignal): a new authorization was stored encrypted; adopt it (connect/reconnect).
    Updates:
      - `refresh_access_token` (RefreshRequest) -> RefreshResult: an activity got a 401; one refresh serves all.
    Queries:
      - `status` -> ConnectionInfo (never tokens).
    """

    def __init__(self) -> None:
        self._account_id = ""
        self._info: ConnectionInfo | None = None
        self._grants: list[str] = []
        self._refreshes = 0
        self._token_lock = asyncio.Lock()
        self._platform_events: list[workflow.ActivityHandle[None]] = []

    @workflow.run
    async def run(self, request: ConnectionWorkflowInput) -> ConnectionInfo | None:
        self._account_id = request.account_id
        if request.progress is not None:
            self._info = request.progress.info
            self._refreshes = request.progress.refreshes
        if request.grant_id is not None and request.grant_id not in self._grants:
            self._grants.insert(0, request.grant_id)

        while True:
            if self._grants:
                await self._adopt(self._grants.pop(0))
                continue
            if self._should_continue_as_new():
                await self._finish_platform_events()
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    ConnectionWorkflowInput(
                        account_id=self._account_id,
                        progress=ConnectionProgress(info=self._info, refreshes=self._refreshes),
                    )
                )
            try:
                await workflow.wait_condition(
                    lambda: bool(self._grants) or self._should_continue_as_new(),
                    timeout=self._until_refresh_due(),
                )
            except TimeoutError:
                async with self._token_lock:
                    if self._refresh_due():
                        await self._refresh()

    # --- Tokens ------------------------------------------------------------------------------------------

    async def _adopt(self, grant_id: str) -> None:
        async with self._token_lock:
            try:
                result = await workflow.execute_activity_method(
                    ConnectionActivities.adopt_grant,
                    AdoptGrantInput(account_id=self._account_id, grant_id=grant_id),
                    task_queue=token_task_queue(),
                    start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
                    retry_policy=TOKEN_RETRY_POLICY,
                )
            except ActivityError as err:
                workflow.logger.error("grant %s could not be adopted: %s", grant_id, err.cause)
                return
            self._info = result.info
        await workflow.execute_activity_method(
            ConnectionActivities.record_connection,
            ConnectionRecord(
                account_id=self._account_id,
                status=ConnectionStatus.CONNECTED,
                resolve_notification_kinds=["connection_expired", "connection_expiring"],
            ),
            task_queue=token_task_queue(),
            start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
            retry_policy=TOKEN_RETRY_POLICY,
        )
        # Invoices that paused while the connection was unusable carry on now.
        await workflow.execute_activity_method(
            ConnectionActivities.signal_invoices,
            SignalInvoicesInput(
                account_id=self._account_id,
                statuses=[InvoiceStatus.PAUSED],
                change=ConnectionChange(usable=True),
            ),
            task_queue=token_task_queue(),
            start_to_close_timeout=FAN_OUT_TIMEOUT,
            heartbeat_timeout=FAN_OUT_HEARTBEAT,
            retry_policy=TOKEN_RETRY_POLICY,
        )
        if result.info.realm_id is not None:
            await workflow.execute_activity_method(
                ConnectionActivities.drain_realm_events,
                result.info.realm_id,
                task_queue=token_task_queue(),
                start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
                retry_policy=TOKEN_RETRY_POLICY,
            )
        self._emit("connection.connected", str(result.info.token_version))

    async def _refresh(self) -> None:
        """Refresh the tokens (the caller holds the token lock)."""
        info = self._require_info()
        result = await workflow.execute_activity_method(
            ConnectionActivities.refresh_tokens,
            RefreshTokensInput(account_id=self._account_id, expected_version=info.token_version),
            task_queue=token_task_queue(),
            start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
            retry_policy=TOKEN_RETRY_POLICY,
        )
        self._info = result.info
        if result.refreshed:
            self._refreshes += 1
        if result.expired:
            await self._expired(result.reason or "QuickBooks refused the connection's tokens.")

    async def _expired(self, reason: str) -> None:
        info = self._require_info()
        self._info = await workflow.execute_activity_method(
            ConnectionActivities.record_connection,
            ConnectionRecord(
                account_id=self._account_id,
                status=ConnectionStatus.EXPIRED,
                reason=reason,
                notification=NotificationItem(
                    kind="connection_expired",
                    message=f"QuickBooks connection expired: {reason} Reconnect QuickBooks to resume syncing.",
                    dedupe_key=f"{workflow.info().workflow_id}/expired/{info.token_version}",
                    action="reconnect",
                ),
                resolve_notification_kinds=["connection_expiring"],
            ),
            task_queue=token_task_queue(),
            start_to_close_timeout=TOKEN_ACTIVITY_TIMEOUT,
            retry_policy=TOKEN_RETRY_POLICY,
        )
        self._emit("connection.expired", str(info.token_version), reason=reason)

    def _until_refresh_due(self) -> timedelta | None:
        info = self._info
        if info is None or info.status not in USABLE_CONNECTION_STATUSES or info.access_expires_at is None:
            return None  # nothing to refresh: wait for an authorization
        return max(info.access_expires_at - REFRESH_AHEAD - workflow.now(), timedelta(seconds=1))

    def _refresh_due(self) -> bool:
        info = self._info
        return (
            info is not None
            and info.status in USABLE_CONNECTION_STATUSES
            and info.access_expires_at is not None
            and info.access_expires_at - REFRESH_AHEAD <= workflow.now()
        )

    # --- Messages ----------------------------------------------------------------------------------------

    @workflow.signal
    def grant_authorized(self, signal: GrantSignal) -> None:
        if signal.grant_id not in self._grants:
            self._grants.append(signal.grant_id)

    @workflow.update
    async def refresh_access_token(self, request: RefreshRequest) -> RefreshResult:
        async with self._token_lock:
            info = self._require_info()
            if info.status in USABLE_CONNECTION_STATUSES and info.token_version <= request.seen_version:
                await self._refresh()
            info = self._require_info()
            return RefreshResult(
                token_version=info.token_version,
                usable=info.status in USABLE_CONNECTION_STATUSES,
                status=info.status,
            )

    @refresh_access_token.validator
    def _validate_refresh(self, request: RefreshRequest) -> None:
        if self._info is None:
            raise ValueError("the connection has no authorization yet")

    @workflow.query
    def status(self) -> ConnectionInfo | None:
        return self._info

    @workflow.query
    def refresh_count(self) -> int:
        return self._refreshes

    # --- Helpers -----------------------------------------------------------------------------------------

    def _emit(self, event_type: str, key: str, **data: str | int | bool | None) -> None:
        info = self._require_info()
        handle = workflow.start_activity_method(
            PlatformEventActivities.deliver_platform_event,
            PlatformEvent(
                event_id=f"{workflow.info().workflow_id}/{event_type}/{key}",
                type=event_type,
                account_id=self._account_id,
                occurred_at=workflow.now(),
                data={"status": info.status.value, "realm_id": info.realm_id, **data},
            ),
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(days=3),
            retry_policy=PLATFORM_EVENT_RETRY_POLICY,
        )
        self._platform_events.append(handle)

    async def _finish_platform_events(self) -> None:
        for handle in self._platform_events:
            try:
                await handle
            except ActivityError:
                workflow.logger.warning("a platform event could not be delivered within its retry window")
        self._platform_events.clear()

    def _require_info(self) -> ConnectionInfo:
        assert self._info is not None
        return self._info

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > MAX_HISTORY_EVENTS
