"""The engine's own Prometheus metrics (syncs, retries, webhook lag, token horizon) and the worker's endpoint.

The worker serves one scrape address (WORKER_METRICS_HOST/PORT): these, the QuickBooks call metrics
(qbo/metrics.py) and the Temporal SDK's own. The SDK's Rust runtime can only export Prometheus metrics from an
HTTP server of its own, so it listens on an internal loopback port and every scrape of ours reads it and serves
its families alongside ours: Prometheus needs one target per worker, and the SDK's port never leaves the host.
Labels are bounded: outcomes and error types from fixed lists, connections by account and company id. No
invoice ids, names or emails.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from sqlmodel import col, select

from models.db import SessionFactory
from models.domain import AUTHORIZATION_HOLDING_STATUSES
from models.tables import QuickBooksConnection

logger = logging.getLogger(__name__)

SYNCED = "synced"
FAILED = "failed"  # no retry can fix it: the invoice shows the reason
RETRYABLE = (
    "error"  # Temporal retries the attempt (or, after the last one, the invoice waits for a manual retry)
)

SYNC_ATTEMPTS = Counter(
    "qbo_sync_invoice_sync_attempts",
    "Attempts to sync an invoice to QuickBooks, by outcome and error type (the ApplicationError's type)",
    ["outcome", "error_type"],
)
SYNC_RETRIES = Counter(
    "qbo_sync_invoice_sync_retries",
    "Sync attempts that are retries: automatic (Temporal's retry policy) or manual (the retry update)",
    ["kind"],
)
# Intuit sends webhooks within seconds to minutes; the change sweep finds what they missed within its interval.
WEBHOOK_LAG_SECONDS = Histogram(
    "qbo_sync_webhook_lag_seconds",
    "From QuickBooks' time of a change to the engine having processed its event, by source (webhook, sweep)",
    ["source"],
    buckets=(1, 5, 15, 30, 60, 300, 900, 1800, 3600, 21600, 86400),
)

# Where stored QuickBooks events come from: Intuit's webhooks, or the change sweep (CDC) that finds what they missed.
_EVENT_SOURCES = frozenset({"webhook", "cdc"})
# A scrape waits this long for the connections' token expiries (a database that does not answer).
TOKEN_HORIZON_READ_TIMEOUT_SECONDS = 5.0
# The SDK's exporter answers on loopback in well under this.
SDK_SCRAPE_TIMEOUT_SECONDS = 5.0


def record_sync_attempt(outcome: str, error_type: str = "") -> None:
    SYNC_ATTEMPTS.labels(outcome, error_type).inc()


def observe_event_lag(source: str, occurred_at: datetime | None, processed_at: datetime) -> None:
    if occurred_at is not None:
        WEBHOOK_LAG_SECONDS.labels(source if source in _EVENT_SOURCES else "other").observe(
            max((processed_at - occurred_at).total_seconds(), 0.0)
        )


@dataclass(frozen=True)
class TokenExpiry:
    """When a connection's authorization ends: the earlier of the refresh token's rolling and hard expiry."""

    account_id: str
    realm_id: str
    expires_at: datetime


class TokenHorizon(Collector):
    """Seconds until each connection's authorization expires, read from the database at each scrape (negative once
    it has): every worker reports every connection from the table they share, never a value another process has
    since changed. The scrape runs in the metrics server's thread; the read runs on the worker's event loop."""

    def __init__(self) -> None:
        self._source: tuple[asyncio.AbstractEventLoop, SessionFactory] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, sessions: SessionFactory) -> None:
        self._source = (loop, sessions)

    def detach(self) -> None:
        self._source = None

    def describe(self) -> Iterator[Metric]:
        # No database read at registration.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "qbo_sync_connection_token_horizon_seconds",
            "Seconds until a connection's refresh token (or its authorization's hard limit) expires",
            labels=["account", "realm"],
        )
        source = self._source
        if source is not None:
            loop, sessions = source
            try:
                expiries = asyncio.run_coroutine_threadsafe(token_expiries(sessions), loop).result(
                    timeout=TOKEN_HORIZON_READ_TIMEOUT_SECONDS
                )
            except Exception as exc:  # the database away, or the worker shutting down: no values this scrape
                logger.warning("connection token horizons not read: %s", type(exc).__name__)
                expiries = []
            now = time.time()
            for expiry in expiries:
                family.add_metric([expiry.account_id, expiry.realm_id], expiry.expires_at.timestamp() - now)
        yield family


class SdkMetrics(Collector):
    """The Temporal SDK's metrics, read from its exporter on loopback at each scrape."""

    def __init__(self, url: str) -> None:
        self._url = url

    def describe(self) -> Iterator[Metric]:
        # Its families are the SDK's to name: nothing to read at registration.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        try:
            # urllib, not httpx: httpx logs every request at INFO, and this one is every scrape.
            # The URL is our own http://127.0.0.1:<port>/metrics, never from input.
            with urllib.request.urlopen(self._url, timeout=SDK_SCRAPE_TIMEOUT_SECONDS) as response:  # noqa: S310
                text = response.read().decode()
        except OSError as exc:
            logger.warning("the Temporal SDK's metrics could not be read: %s", type(exc).__name__)
            return
        yield from text_string_to_metric_families(text)


def loopback_port() -> int:
    """A free port on loopback for the SDK's exporter (the SDK cannot say which port it bound to 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_worker_metrics(
    host: str, port: int, *, sdk_url: str, horizon: TokenHorizon, registry: CollectorRegistry = REGISTRY
) -> tuple[str, WSGIServer]:
    """Serve this process's metrics with the SDK's and the token horizon on host:port (0: any free port), in a
    thread of its own. Returns the URL it serves and the server (`shutdown()` stops it)."""
    registry.register(SdkMetrics(sdk_url))
    registry.register(horizon)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{server.server_port}/metrics", server


async def token_expiries(sessions: SessionFactory) -> list[TokenExpiry]:
    """The authorization horizon of every connection that holds one (connected, expiring, disconnecting)."""
    statuses = [status.value for status in AUTHORIZATION_HOLDING_STATUSES]
    async with sessions() as session:
        rows = (
            await session.exec(
                select(
                    QuickBooksConnection.account_id,
                    QuickBooksConnection.realm_id,
                    QuickBooksConnection.refresh_expires_at,
                    QuickBooksConnection.refresh_hard_expires_at,
                ).where(col(QuickBooksConnection.status).in_(statuses))
            )
        ).all()
    expiries = []
    for account_id, realm_id, rolling, hard in rows:
        ends = [moment for moment in (rolling, hard) if moment is not None]
        if ends:
            expiries.append(TokenExpiry(account_id, realm_id or "", min(ends)))
    return expiries
