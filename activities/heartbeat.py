"""Heartbeats in the background of a long activity, so a dead worker is noticed within the heartbeat timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

HEARTBEAT_INTERVAL_SECONDS = 3.0


@contextlib.asynccontextmanager
async def heartbeating(interval: float = HEARTBEAT_INTERVAL_SECONDS) -> AsyncIterator[None]:
    async def beat() -> None:
        # The first after an interval, not at once: a heartbeat is a call to Temporal (and a write of the activity's
        # state there), and most activities end well within the interval (a sync takes a QuickBooks call or two).
        # The heartbeat timeouts (15 s) leave room for several intervals.
        while True:
            await asyncio.sleep(interval)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
