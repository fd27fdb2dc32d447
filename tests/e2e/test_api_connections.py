"""An API process waiting on Temporal holds no database connection meanwhile: enough slow requests would otherwise
drain its pool, and every other request would fail with 503 (seen with 50 sends in flight on a loaded machine)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import httpx

from tests.conftest import EngineFactory
from tests.engine import Engine

RPC_TIMEOUT = 4.0


async def connections_while_waiting(engine: Engine, request: Awaitable[httpx.Response]) -> tuple[int, int]:
    """(the fewest connections the API had checked out while the request waited, its status code)."""
    task = asyncio.ensure_future(request)
    await asyncio.sleep(1.0)  # past the request's own reads: now it waits on Temporal
    samples: list[int] = []
    while not task.done() and len(samples) < 40:
        samples.append(engine.api_connections_in_use())
        await asyncio.sleep(0.05)
    response = await task
    assert len(samples) >= 10, "the request did not wait on Temporal"
    # The fewest, not the most: the API's relay and webhook hand-overs take one briefly now and then.
    return min(samples), response.status_code


async def test_void_and_disconnect_waiting_for_a_worker_hold_no_database_connection(
    engine_with: EngineFactory,
) -> None:
    engine = await engine_with(temporal_rpc_timeout_seconds=RPC_TIMEOUT)
    account = await engine.create_account()
    await engine.connect(account)
    await engine.send_invoice(account, "inv-1", number="HOLD-1")
    await engine.wait_for_invoice(account, "inv-1", "synced")
    await engine.stop_workers()  # no worker answers the void's or the disconnect's update now

    void = await connections_while_waiting(
        engine, engine.api.post(f"/v1/accounts/{account}/invoices/inv-1/void")
    )
    disconnect = await connections_while_waiting(
        engine,
        engine.api.post(f"/v1/accounts/{account}/quickbooks/disconnect", json={"mode": "disconnect_only"}),
    )

    assert void == (0, 503)
    assert disconnect == (0, 503)
