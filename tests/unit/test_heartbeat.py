"""Heartbeats in the background of an activity: every interval while it runs, none for an activity that ends first
(each heartbeat is a call to Temporal, and most syncs end in a fraction of the interval)."""

from __future__ import annotations

import asyncio

from temporalio.testing import ActivityEnvironment

from activities.heartbeat import heartbeating


async def beats_while(seconds: float, interval: float) -> int:
    environment = ActivityEnvironment()
    beats: list[object] = []
    environment.on_heartbeat = lambda *details: beats.append(details)

    async def work() -> None:
        async with heartbeating(interval):
            await asyncio.sleep(seconds)

    await environment.run(work)
    return len(beats)


async def test_an_activity_shorter_than_the_interval_sends_no_heartbeat() -> None:
    assert await beats_while(0.05, interval=0.5) == 0


async def test_a_long_activity_heartbeats_every_interval() -> None:
    # About ten; at least three however late a loaded machine wakes the sleeps.
    assert 3 <= await beats_while(1.0, interval=0.1) <= 10
