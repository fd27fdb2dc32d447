"""QuickBooks events (stored from webhooks and change sweeps) turned into signals to the invoices they touch."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import col, select
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.heartbeat import heartbeating
from activities.mapping import deleted_invoice, linked_invoice_ids, observe_invoice
from activities.quickbooks_access import QuickBooksAccess, QuickBooksContext
from models.crud import remember_payment_links
from models.db import SessionFactory
from models.domain import CONNECTION_UNAVAILABLE, EventStatus, InvoiceStatus, followed_change
from models.tables import InvoiceSync, PaymentLink, QuickBooksEvent, utcnow
from observability.metrics import observe_event_lag
from qbo.errors import QboError, QboNotFound
from workflows.ids import invoice_workflow_id, stored_or
from workflows.messages import InvoiceObservation, ProcessEventsInput, ProcessEventsResult

logger = logging.getLogger(__name__)

# An event QuickBooks could not answer for this many times is parked as `failed` (visible to operators).
EVENT_MAX_ATTEMPTS = 10
# A batch of which no event could be finished (QuickBooks failing): retried by the activity's retry policy.
EVENTS_NOT_READ = "EventsNotRead"


@dataclass(frozen=True)
class _Outcome:
    """What became of one event in a batch: a final status, or (status None) try again next time."""

    status: EventStatus | None
    error: str | None = None


_PROCESSED = _Outcome(EventStatus.PROCESSED)
_IGNORED = _Outcome(EventStatus.IGNORED)


class EventActivities:
    """Processes a company's stored QuickBooks events, built with the QuickBooks access, database and Temporal."""

    def __init__(self, *, access: QuickBooksAccess, sessions: SessionFactory, temporal: Client) -> None:
        self._access = access
        self._sessions = sessions
        self._temporal = temporal

    @activity.defn
    async def process_pending_events(self, request: ProcessEventsInput) -> ProcessEventsResult:
        """Read what changed in QuickBooks for a batch of stored events and signal the affected invoices.

        Payments lead to invoices through their LinkedTxn (remembered, for when a payment is deleted later).
        Each affected invoice is read once per batch and its workflow gets the fresh state, so duplicates and
        out-of-order deliveries cannot move an invoice backwards. An event that can never be read (an id
        QuickBooks could not have issued) is parked with its reason; the others go on.
        """
        async with heartbeating():
            return await self._process_pending_events(request)

    async def _process_pending_events(self, request: ProcessEventsInput) -> ProcessEventsResult:
        async with self._sessions() as session:
            events = list(
                (
                    await session.exec(
                        select(QuickBooksEvent)
                        .where(
                            QuickBooksEvent.realm_id == request.realm_id,
                            QuickBooksEvent.status == EventStatus.PENDING.value,
                        )
                        .order_by(col(QuickBooksEvent.id))
                        .limit(request.batch_size + 1)
                    )
                ).all()
            )
        more_pending = len(events) > request.batch_size
        events = events[: request.batch_size]
        if not events:
            return ProcessEventsResult(processed=0, deferred=0, invoices_signalled=0, more_pending=False)

        context = await self._access.realm_context(request.realm_id)
        if context is None:
            if await self._access.realm_may_come_back(request.realm_id):
                # The connection is expired, paused by the plan or being adopted: the events wait for it.
                return ProcessEventsResult(
                    processed=0, deferred=len(events), invoices_signalled=0, more_pending=False
                )
            # No account follows this company any more (disconnected): nothing is left to update.
            await self._finish_events(events, {event.id: _IGNORED for event in events if event.id})
            return ProcessEventsResult(
                processed=len(events), deferred=0, invoices_signalled=0, more_pending=more_pending
            )

        outcomes: dict[int, _Outcome] = {}
        invoice_ids: set[str] = set()
        # The invoices each payment paid, read once per batch (a failed read is tried again by its next event).
        payment_invoices: dict[str, set[str]] = {}
        # The events each invoice is signalled for: those of an invoice QuickBooks cannot read now stay pending.
        led_to: dict[str, set[int]] = {}
        for event in events:
            assert event.id is not None
            try:
                if not followed_change(event.entity, event.operation):
                    # Stored as `ignored` from the start today; pending only if an earlier release stored it.
                    outcomes[event.id] = _IGNORED
                    continue
                if event.entity == "Invoice":
                    linked = {event.entity_id}
                else:
                    if event.entity_id not in payment_invoices:
                        payment_invoices[event.entity_id] = await self._payment_invoices(
                            context, event.entity_id
                        )
                    linked = payment_invoices[event.entity_id]
                invoice_ids |= linked
                for qbo_invoice_id in linked:
                    led_to.setdefault(qbo_invoice_id, set()).add(event.id)
                outcomes[event.id] = _PROCESSED
            except ApplicationError as exc:
                if exc.type == CONNECTION_UNAVAILABLE:
                    return ProcessEventsResult(
                        processed=0, deferred=len(events), invoices_signalled=0, more_pending=False
                    )
                outcomes[event.id] = _Outcome(None, str(exc))
            except QboError as exc:
                outcomes[event.id] = _Outcome(None, str(exc))
            except ValueError as exc:
                # The client refuses the id (it could not be a QuickBooks id): no retry would change that.
                outcomes[event.id] = _Outcome(EventStatus.FAILED, f"unreadable event: {exc}")

        signalled, to_retry = await self._signal_invoices(context, invoice_ids)
        for qbo_invoice_id, error in to_retry.items():
            for event_id in led_to.get(qbo_invoice_id, ()):
                outcomes[event_id] = _Outcome(None, error)
        await self._finish_events(events, outcomes)
        finished = sum(1 for outcome in outcomes.values() if outcome.status is not None)
        left = len(events) - finished
        if left and not finished:
            # Nothing could be done this time (QuickBooks failing): the retry policy comes back, with backoff.
            raise ApplicationError(
                f"{left} QuickBooks events could not be read yet; they are kept and retried",
                type=EVENTS_NOT_READ,
            )
        return ProcessEventsResult(
            processed=finished,
            deferred=0,
            invoices_signalled=signalled,
            # The events left are tried again at once, with the next batch: this one made progress.
            more_pending=more_pending or left > 0,
        )

    async def _payment_invoices(self, context: QuickBooksContext, payment_id: str) -> set[str]:
        linked: set[str] = set()
        try:
            payment = await context.client.read("Payment", payment_id)
            linked = linked_invoice_ids(payment)
        except QboNotFound:
            pass  # deleted: the remembered links below say which invoices it had paid
        async with self._sessions() as session:
            await remember_payment_links(
                session, realm_id=context.realm_id, payment_id=payment_id, qbo_invoice_ids=linked
            )
            await session.commit()
            remembered = (
                await session.exec(
                    select(PaymentLink.qbo_invoice_id).where(
                        PaymentLink.realm_id == context.realm_id, PaymentLink.payment_id == payment_id
                    )
                )
            ).all()
        return linked | set(remembered)

    async def _signal_invoices(
        self, context: QuickBooksContext, qbo_invoice_ids: set[str]
    ) -> tuple[int, dict[str, str]]:
        """Signal each followed invoice with its state in QuickBooks: how many were, and the invoices whose events
        are to be tried again (by id, with the reason): QuickBooks could not be read for them, or their workflow
        could not be told."""
        if not qbo_invoice_ids:
            return 0, {}
        async with self._sessions() as session:
            tracked = (
                await session.exec(
                    select(InvoiceSync).where(
                        InvoiceSync.realm_id == context.realm_id,
                        col(InvoiceSync.qbo_invoice_id).in_(sorted(qbo_invoice_ids)),
                        col(InvoiceSync.status).not_in(
                            [InvoiceStatus.VOIDED.value, InvoiceStatus.DISCONNECTED.value]
                        ),
                    )
                )
            ).all()
        observations: dict[str, InvoiceObservation] = {}
        to_retry: dict[str, str] = {}
        signalled = 0
        for row in tracked:
            assert row.qbo_invoice_id is not None
            if row.qbo_invoice_id in to_retry:
                continue
            observation = observations.get(row.qbo_invoice_id)
            if observation is None:
                try:
                    invoice = await context.client.read("Invoice", row.qbo_invoice_id)
                    observation = observe_invoice(context.realm_id, invoice, source="webhook")
                except QboNotFound:
                    observation = deleted_invoice(context.realm_id, row.qbo_invoice_id, source="webhook")
                except QboError as exc:
                    # One invoice QuickBooks fails to answer for must not hold up the company's other events.
                    to_retry[row.qbo_invoice_id] = str(exc)
                    continue
                observations[row.qbo_invoice_id] = observation
            handle = self._temporal.get_workflow_handle(
                stored_or(row.workflow_id, invoice_workflow_id(row.account_id, row.invoice_id))
            )
            try:
                await handle.signal("quickbooks_invoice_changed", observation)
                signalled += 1
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    # Its workflow has ended: the invoice is final (voided, disconnected) and follows nothing.
                    logger.info("invoice workflow %s has ended; not signalled", handle.id)
                    continue
                # Temporal away or slow: the invoice never heard, so its events are tried again.
                to_retry[row.qbo_invoice_id] = f"invoice workflow not told yet: {exc.status.name}"
        return signalled, to_retry

    async def _finish_events(self, events: list[QuickBooksEvent], outcomes: dict[int, _Outcome]) -> None:
        now = utcnow()
        async with self._sessions() as session:
            for event in events:
                assert event.id is not None
                outcome = outcomes.get(event.id, _Outcome(None, "not processed"))
                row = await session.get(QuickBooksEvent, event.id)
                if row is None:
                    continue
                row.attempts += 1
                if outcome.status is None:
                    row.last_error = outcome.error
                    if row.attempts >= EVENT_MAX_ATTEMPTS:
                        row.status = EventStatus.FAILED.value
                else:
                    row.status = outcome.status.value
                    row.processed_at = now
                    observe_event_lag(row.source, row.occurred_at, now)
                    row.last_error = outcome.error
                session.add(row)
            await session.commit()
