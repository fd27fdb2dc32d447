"""Operations: liveness, readiness and Prometheus metrics. (The payload codec is its own server: codec_server.py.)"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import func, text
from sqlmodel import select

from api.deps import ServicesDep, ServiceTokenDep, SessionDep
from api.errors import ApiError, error_responses
from models.db import connection_schema_problem
from models.domain import EventStatus
from models.tables import QuickBooksEvent

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

EVENTS_BY_STATUS = Gauge("qbo_sync_quickbooks_events", "Stored QuickBooks events by status", ["status"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(session: SessionDep, services: ServicesDep) -> dict[str, str]:
    """The database answers with this code's schema, and Temporal answers."""
    try:
        connection = await session.connection()
        await connection.execute(text("SELECT 1"))
        schema_problem = await connection_schema_problem(connection)
    except Exception as exc:
        logger.warning("database not ready: %s", type(exc).__name__)
        raise ApiError(503, "not_ready", "The database does not answer.") from exc
    if schema_problem:
        # The API started while the database was away (so it could not refuse to start): it never gets ready.
        logger.error("%s", schema_problem)
        raise ApiError(503, "schema_mismatch", schema_problem)
    try:
        await services.temporal.service_client.check_health()
    except Exception as exc:
        logger.warning("temporal not ready: %s", type(exc).__name__)
        raise ApiError(503, "not_ready", "Temporal does not answer.") from exc
    return {"status": "ready"}


@router.get("/metrics", include_in_schema=False, dependencies=[ServiceTokenDep])
async def metrics(session: SessionDep) -> Response:
    """Prometheus metrics, for the service token (scrape with `authorization: credentials: <API_TOKEN>`)."""
    rows = (
        await session.exec(select(QuickBooksEvent.status, func.count()).group_by(QuickBooksEvent.status))
    ).all()
    for status in EventStatus:
        EVENTS_BY_STATUS.labels(status.value).set(0)
    for stored, count in rows:
        EVENTS_BY_STATUS.labels(stored).set(count)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
