"""The API's relay: hands Temporal what the API stored but could not give it (an outbox relay).

The API acknowledges an invoice sent, an authorization and Intuit's webhooks once they are in the database, and
only then tells Temporal. When Temporal cannot be reached (down, restarting, a network cut) that second step waits
here: every few seconds the relay looks for invoices whose sync never started, authorizations the connection
workflow was never told of and webhook deliveries whose companies' events workflows were never told, and hands
them over. Each hand-over is idempotent (workflow ids per business key, signal-with-start), so API replicas that
relay the same row at once, or a row the request itself handed over meanwhile, change nothing; no lock is held
across a call to Temporal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import col, select
from temporalio.service import RPCError

from api.deps import Services
from api.routes.invoices import start_invoice_syncs
from api.routes.quickbooks import connection_policy
from api.routes.webhooks import tell_events_workflows
from models.db import release_connection
from models.domain import UNFOLLOWED_INVOICE_STATUSES
from models.tables import InvoiceSync, QuickBooksConnection, QuickBooksGrant, WebhookDelivery, utcnow
from workflows.handles import tell_connection_of_grant
from workflows.ids import connection_workflow_id, stored_or

logger = logging.getLogger(__name__)

# Rows handed over per kind and round; a backlog takes several rounds.
RELAY_BATCH = 100


@dataclass
class Relayed:
    """What one round handed over."""

    invoices: int = 0
    grants: int = 0
    deliveries: int = 0


class Relay:
    def __init__(self, services: Services) -> None:
        self._services = services

    async def run(self) -> None:
        """Relay every RELAY_INTERVAL_SECONDS until cancelled (the app's lifespan owns the task)."""
        interval = self._services.settings.relay_interval_seconds
        while True:
            # Never raises: each kind's failure is logged by `_relaying`, and the next round tries again.
            relayed = await self.once()
            if relayed.invoices or relayed.grants or relayed.deliveries:
                logger.info(
                    "relayed to Temporal: %d invoice syncs, %d authorizations, %d webhook deliveries",
                    relayed.invoices,
                    relayed.grants,
                    relayed.deliveries,
                )
            await asyncio.sleep(interval)

    async def once(self) -> Relayed:
        """One round: what is older than RELAY_GRACE_SECONDS and still not handed over (the request that stored
        it tries first). An invoice or a delivery Temporal does not answer for stays for the next round; an
        authorization it does not answer for stops the authorizations' part of the round there."""
        return Relayed(
            invoices=await self._relaying("invoice syncs", self._invoices),
            grants=await self._relaying("authorizations", self._grants),
            deliveries=await self._relaying("webhook deliveries", self._deliveries),
        )

    async def _relaying(self, what: str, relay: Callable[[], Awaitable[int]]) -> int:
        """One kind's part of a round: what fails there (Temporal away, a row it cannot hand over) leaves the other
        kinds to be relayed all the same."""
        try:
            return await relay()
        except RPCError as exc:
            logger.info("Temporal does not answer (%s) for %s; the relay tries again", exc.status.name, what)
        except Exception:
            logger.exception("relaying %s failed; the relay tries again", what)
        return 0

    async def _invoices(self) -> int:
        services = self._services
        before = utcnow() - timedelta(seconds=services.settings.relay_grace_seconds)
        async with services.sessions() as session:
            keys = (
                await session.exec(
                    select(InvoiceSync.account_id, InvoiceSync.invoice_id)
                    .where(
                        col(InvoiceSync.workflow_started_at).is_(None),
                        col(InvoiceSync.snapshot).is_not(None),
                        col(InvoiceSync.status).not_in(sorted(UNFOLLOWED_INVOICE_STATUSES)),
                        col(InvoiceSync.sent_at) < before,
                    )
                    .order_by(col(InvoiceSync.sent_at))
                    .limit(RELAY_BATCH)
                )
            ).all()
        return await start_invoice_syncs(
            services, [(account_id, invoice_id) for account_id, invoice_id in keys]
        )

    async def _grants(self) -> int:
        services = self._services
        settings = services.settings
        before = utcnow() - timedelta(seconds=settings.relay_grace_seconds)
        async with services.sessions() as session:
            statement = (
                select(QuickBooksGrant)
                .where(
                    col(QuickBooksGrant.signalled_at).is_(None),
                    col(QuickBooksGrant.adopted_at).is_(None),
                    col(QuickBooksGrant.access_token_enc).is_not(None),
                    col(QuickBooksGrant.created_at) < before,
                )
                .order_by(col(QuickBooksGrant.created_at))
                .limit(RELAY_BATCH)
            )
            grants = (await session.exec(statement)).all()
            for grant in grants:
                connection = await session.get(QuickBooksConnection, grant.account_id)
                await release_connection(session)
                await tell_connection_of_grant(
                    services.temporal,
                    task_queue=settings.temporal_task_queue,
                    workflow_id=stored_or(
                        connection.workflow_id if connection else None,
                        connection_workflow_id(grant.account_id),
                    ),
                    account_id=grant.account_id,
                    realm_id=grant.realm_id,
                    grant_id=grant.id,
                    policy=connection_policy(settings),
                    company_name=grant.company_name,
                    rpc_timeout=timedelta(seconds=settings.temporal_rpc_timeout_seconds),
                )
                grant.signalled_at = utcnow()
                session.add(grant)
                await session.commit()
            return len(grants)

    async def _deliveries(self) -> int:
        services = self._services
        before = utcnow() - timedelta(seconds=services.settings.relay_grace_seconds)
        async with services.sessions() as session:
            untold = (
                await session.exec(
                    select(WebhookDelivery.id)
                    .where(
                        col(WebhookDelivery.signalled_at).is_(None), col(WebhookDelivery.received_at) < before
                    )
                    .order_by(col(WebhookDelivery.id))
                    .limit(RELAY_BATCH)
                )
            ).all()
        return await tell_events_workflows(
            services, [delivery_id for delivery_id in untold if delivery_id is not None]
        )
