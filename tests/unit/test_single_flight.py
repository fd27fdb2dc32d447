"""Single flight against a real PostgreSQL: across connections and processes, bounded waits, nothing left held."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from activities.heartbeat import heartbeating
from models.coordination import SINGLE_FLIGHT_WAIT_SECONDS, SingleFlight, lock_key
from models.db import create_engine, create_session_factory, is_sqlite
from tests.support import ROOT

KEY = ("realm-cache", "9130350000000001", "customer", "ada@example.com")

# Another worker process: holds the key until it is killed.
HOLDER = """
import asyncio, sys
from models.coordination import SingleFlight
from models.db import create_engine, create_session_factory

async def main() -> None:
    flights = SingleFlight(create_session_factory(create_engine(sys.argv[1])))
    async with flights.hold(*sys.argv[2:]) as alone:
        print("held" if alone else "gave up", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if is_sqlite(database_url):
        pytest.skip("advisory locks need PostgreSQL (CI sets TEST_REQUIRE_POSTGRES=1)")
    return database_url


@pytest.fixture
async def engines(postgres_url: str) -> AsyncIterator[list[AsyncEngine]]:
    """Two engines with pools of their own: two worker processes, as far as PostgreSQL can tell."""
    made = [create_engine(postgres_url), create_engine(postgres_url)]
    try:
        yield made
    finally:
        for engine in made:
            await engine.dispose()


def flights(engine: AsyncEngine, wait_seconds: float = SINGLE_FLIGHT_WAIT_SECONDS) -> SingleFlight:
    return SingleFlight(create_session_factory(engine), wait_seconds=wait_seconds)


async def advisory_locks(engine: AsyncEngine, *, granted: bool) -> int:
    """Advisory locks on our key held (or waited for) by any session of the database."""
    # A bigint key shows as its high and low 32 bits.
    key = lock_key(*KEY) & 0xFFFFFFFFFFFFFFFF
    async with engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
                "AND granted = :granted AND classid::bigint = :high AND objid::bigint = :low"
            ),
            {"granted": granted, "high": key >> 32, "low": key & 0xFFFFFFFF},
        )
    return int(count or 0)


@contextlib.contextmanager
def holder_process(url: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, *KEY],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def test_another_process_waits_for_the_holder_and_a_killed_holder_releases_at_once(
    postgres_url: str, engines: list[AsyncEngine]
) -> None:
    with holder_process(postgres_url) as holder:
        assert holder.stdout is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "held\n"
        acquired_at: list[float] = []

        async def wait_for_it() -> bool:
            async with flights(engines[0]).hold(*KEY) as alone:
                acquired_at.append(time.monotonic())
                return alone

        waiter = asyncio.create_task(wait_for_it())
        await asyncio.sleep(1.0)
        assert not waiter.done()
        assert await advisory_locks(engines[1], granted=False) == 1

        holder.kill()
        killed_at = time.monotonic()
        assert await asyncio.wait_for(waiter, timeout=5) is True
        assert acquired_at[0] - killed_at < 1.0
    assert await advisory_locks(engines[1], granted=True) == 0


async def test_two_connections_take_turns_and_a_waiter_gives_up_after_its_bound(
    engines: list[AsyncEngine],
) -> None:
    first, second = flights(engines[0]), flights(engines[1], wait_seconds=0.5)
    async with first.hold(*KEY) as alone:
        assert alone is True
        started = time.monotonic()
        async with second.hold(*KEY) as second_alone:
            waited = time.monotonic() - started
        assert second_alone is False
        assert 0.4 < waited < 3.0
        assert await advisory_locks(engines[1], granted=True) == 1
    async with second.hold(*KEY) as second_alone:
        assert second_alone is True
    assert await advisory_locks(engines[1], granted=True) == 0


async def test_a_failure_inside_releases_the_key(engines: list[AsyncEngine]) -> None:
    first = flights(engines[0])
    with pytest.raises(RuntimeError, match="QuickBooks said no"):
        async with first.hold(*KEY):
            raise RuntimeError("QuickBooks said no")
    assert await advisory_locks(engines[1], granted=True) == 0
    async with flights(engines[1], wait_seconds=0.5).hold(*KEY) as alone:
        assert alone is True


async def test_a_waiter_cancelled_while_waiting_leaves_nothing_held(engines: list[AsyncEngine]) -> None:
    first, second = flights(engines[0]), flights(engines[1])
    async with first.hold(*KEY):

        async def wait_for_it() -> None:
            async with second.hold(*KEY):
                pass

        waiter = asyncio.create_task(wait_for_it())
        await asyncio.sleep(0.5)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.sleep(0.2)
        assert await advisory_locks(engines[0], granted=False) == 0
    assert await advisory_locks(engines[0], granted=True) == 0
    async with second.hold(*KEY) as alone:
        assert alone is True


async def test_waiters_of_one_process_wait_in_memory_behind_one_connection(
    engines: list[AsyncEngine],
) -> None:
    first, second = flights(engines[0]), flights(engines[1])
    order: list[int] = []
    async with first.hold(*KEY):

        async def wait_for_it(index: int) -> None:
            async with second.hold(*KEY) as alone:
                assert alone is True
                order.append(index)

        waiters = [asyncio.create_task(wait_for_it(index)) for index in range(10)]
        await asyncio.sleep(0.5)
        # Ten callers wait; PostgreSQL sees one of them.
        assert await advisory_locks(engines[0], granted=False) == 1
    await asyncio.gather(*waiters)
    assert sorted(order) == list(range(10))
    assert await advisory_locks(engines[0], granted=True) == 0


async def test_a_blocked_waiter_keeps_its_activity_heartbeating(engines: list[AsyncEngine]) -> None:
    heartbeats: list[float] = []
    environment = ActivityEnvironment()
    environment.on_heartbeat = lambda *details: heartbeats.append(time.monotonic())
    second = flights(engines[1])

    async def blocked_sync() -> bool:
        async with heartbeating(interval=0.1), second.hold(*KEY) as alone:
            activity.heartbeat()
            return alone

    async with flights(engines[0]).hold(*KEY):
        waiting = asyncio.create_task(environment.run(blocked_sync))
        await asyncio.sleep(1.0)
        assert not waiting.done()
    assert await waiting is True
    assert len(heartbeats) >= 8


async def test_on_sqlite_the_callers_of_one_process_take_turns(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'flight.db'}")
    try:
        single = flights(engine)
        inside = 0
        most_inside = 0

        async def work() -> None:
            nonlocal inside, most_inside
            async with single.hold(*KEY) as alone:
                assert alone is True
                inside += 1
                most_inside = max(most_inside, inside)
                await asyncio.sleep(0.02)
                inside -= 1

        await asyncio.gather(*(work() for _ in range(10)))
        assert most_inside == 1
    finally:
        await engine.dispose()
