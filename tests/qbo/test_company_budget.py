"""The company budget every process shares, against a real PostgreSQL: several budgets (one per process, each with
its own connections) keep a company within its limits together, and a process that dies holds nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from models.db import libpq_conninfo
from qbo.company_budget import PostgresCompanyBudget, company_limiter

ROOT = Path(__file__).resolve().parents[2]

BudgetFactory = Callable[..., PostgresCompanyBudget]


@pytest.fixture
def conninfo(migrated_database: str) -> str:
    info = libpq_conninfo(migrated_database)
    if info is None:
        pytest.skip("the shared budget lives in PostgreSQL (the SQLite default runs one worker)")
    return info


@pytest.fixture
async def budgets(conninfo: str) -> AsyncIterator[BudgetFactory]:
    """Budgets as separate processes would hold them: each its own connections."""
    async with AsyncExitStack() as stack:

        def make(**limits: float) -> PostgresCompanyBudget:
            values: dict[str, float] = {"max_in_flight": 10, "per_minute": 500, "window_seconds": 61.0}
            values.update(limits)
            budget = PostgresCompanyBudget(
                conninfo,
                max_in_flight=int(values["max_in_flight"]),
                per_minute=int(values["per_minute"]),
                window_seconds=values["window_seconds"],
            )
            stack.push_async_callback(budget.aclose)
            return budget

        yield make


def new_realm() -> str:
    return str(uuid.uuid4().int)[:16]


async def test_three_processes_together_keep_a_company_within_its_in_flight_limit(
    budgets: BudgetFactory,
) -> None:
    realm = new_realm()
    processes = [budgets(max_in_flight=3) for _ in range(3)]
    under_way = 0
    most = 0

    async def call(budget: PostgresCompanyBudget) -> None:
        nonlocal under_way, most
        ticket = await budget.acquire(realm, on_wait=None, notify_every=5)
        under_way += 1
        most = max(most, under_way)
        await asyncio.sleep(0.05)
        under_way -= 1
        await budget.release(ticket)

    await asyncio.wait_for(asyncio.gather(*(call(processes[i % 3]) for i in range(30))), 60)

    # Each process alone would have let 3 through: 9 at once. Together they keep 3.
    assert most == 3


async def test_a_process_holding_several_slots_gets_distinct_ones_and_waits_beyond_the_limit(
    budgets: BudgetFactory,
) -> None:
    realm = new_realm()
    budget = budgets(max_in_flight=2)
    first = await budget.acquire(realm, on_wait=None, notify_every=5)
    second = await budget.acquire(realm, on_wait=None, notify_every=5)
    third = asyncio.create_task(budget.acquire(realm, on_wait=None, notify_every=5))
    await asyncio.sleep(0.5)

    assert {first.slot, second.slot} == {0, 1}
    assert not third.done()
    await budget.release(first)
    ticket = await asyncio.wait_for(third, 5)
    assert ticket.slot == first.slot
    await budget.release(second)
    await budget.release(ticket)


async def test_processes_together_keep_the_per_minute_limit_over_a_sliding_window(
    budgets: BudgetFactory,
) -> None:
    realm = new_realm()
    window = 1.5
    processes = [budgets(per_minute=4, window_seconds=window) for _ in range(3)]
    admitted: list[float] = []

    async def call(budget: PostgresCompanyBudget) -> None:
        ticket = await budget.acquire(realm, on_wait=None, notify_every=5)
        admitted.append(time.monotonic())
        await budget.release(ticket)

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(call(processes[i % 3]) for i in range(12))), 60)

    admitted.sort()
    # Any window holds at most 4 admissions (a little slack for the two clocks: the server's decides).
    for index in range(len(admitted) - 4):
        assert admitted[index + 4] - admitted[index] >= window - 0.1
    assert admitted[-1] - started >= 2 * window - 0.1


async def test_a_throttled_call_holds_the_company_for_every_process_and_leaves_the_minute(
    budgets: BudgetFactory, conninfo: str
) -> None:
    realm = new_realm()
    here, elsewhere = budgets(per_minute=2), budgets(per_minute=2)
    ticket = await here.acquire(realm, on_wait=None, notify_every=5)
    await here.release(ticket)

    here.report_throttled(ticket, 1.0)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    first = await elsewhere.acquire(realm, on_wait=None, notify_every=5)
    waited = time.monotonic() - started
    await elsewhere.release(first)
    # The throttled call left the minute's log: two more fit in a budget of two.
    second = await asyncio.wait_for(elsewhere.acquire(realm, on_wait=None, notify_every=5), 2)
    await elsewhere.release(second)

    assert waited >= 0.6


async def test_waiters_cancelled_while_queued_leave_nothing_taken(budgets: BudgetFactory) -> None:
    realm = new_realm()
    budget = budgets(max_in_flight=2)
    held = [await budget.acquire(realm, on_wait=None, notify_every=5) for _ in range(2)]
    waiters = [asyncio.create_task(budget.acquire(realm, on_wait=None, notify_every=5)) for _ in range(5)]
    await asyncio.sleep(0.3)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    for ticket in held:
        await budget.release(ticket)

    again = [await asyncio.wait_for(budget.acquire(realm, on_wait=None, notify_every=5), 2) for _ in range(2)]
    assert sorted(ticket.slot for ticket in again) == [0, 1]
    for ticket in again:
        await budget.release(ticket)


async def test_a_killed_process_gives_its_slots_back_within_seconds(
    budgets: BudgetFactory, conninfo: str
) -> None:
    realm = new_realm()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, conninfo, realm],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 30)
        assert line.strip() == b"holding 2"
        budget = budgets(max_in_flight=2)
        waiting = asyncio.create_task(budget.acquire(realm, on_wait=None, notify_every=5))
        await asyncio.sleep(1.0)
        assert not waiting.done()  # the other process holds both slots

        holder.send_signal(signal.SIGKILL)
        started = time.monotonic()
        ticket = await asyncio.wait_for(waiting, 10)
        back_after = time.monotonic() - started
        await budget.release(ticket)
    finally:
        holder.kill()
        holder.wait(timeout=10)

    assert back_after < 5


async def test_calls_wait_heartbeating_while_the_database_is_unreachable(budgets: BudgetFactory) -> None:
    unreachable = PostgresCompanyBudget(
        "postgresql://postgres@127.0.0.1:1/none", max_in_flight=10, per_minute=500, window_seconds=61
    )
    beats: list[float] = []

    async def beat(seconds: float) -> None:
        beats.append(seconds)

    try:
        waiting = asyncio.create_task(unreachable.acquire(new_realm(), on_wait=beat, notify_every=0.2))
        await asyncio.sleep(2.5)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        await unreachable.aclose()

    assert len(beats) >= 2


async def test_the_embedded_default_has_no_shared_budget() -> None:
    limiter = company_limiter(None, max_in_flight=10, per_minute=500)
    async with limiter.slot("1234") as admission:
        assert admission.ticket is None
    await limiter.aclose()


async def test_the_limiter_takes_a_shared_slot_for_each_call_and_gives_it_back(conninfo: str) -> None:
    realm = new_realm()
    first, second = (company_limiter(conninfo, max_in_flight=1, per_minute=500) for _ in range(2))
    try:
        async with first.slot(realm) as admission:
            assert admission.ticket is not None
            blocked = asyncio.create_task(_enter(second, realm))
            await asyncio.sleep(0.5)
            assert not blocked.done()  # another process's limiter waits for the shared slot
        await asyncio.wait_for(blocked, 5)
    finally:
        await first.aclose()
        await second.aclose()


async def _enter(limiter: object, realm: str) -> None:
    from qbo.limits import RealmLimiter

    assert isinstance(limiter, RealmLimiter)
    async with limiter.slot(realm):
        pass


_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from qbo.company_budget import PostgresCompanyBudget

    async def main():
        budget = PostgresCompanyBudget(sys.argv[1], max_in_flight=2, per_minute=500, window_seconds=61)
        tickets = [await budget.acquire(sys.argv[2], on_wait=None, notify_every=5) for _ in range(2)]
        print(f"holding {len(tickets)}", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_the_minute_survives_a_crash_of_postgresql(tmp_path: Path) -> None:
    """Intuit still counts the calls made before PostgreSQL crashed; so must the budget after its recovery."""
    from bench.chaos import own_postgres, postgres_bin
    from models.db import migrate

    if postgres_bin() is None:
        if os.environ.get("TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    realm = new_realm()
    with own_postgres() as server:
        url = server.create_database("budget")
        await asyncio.to_thread(migrate, url)
        conninfo = libpq_conninfo(url)
        assert conninfo is not None
        before = PostgresCompanyBudget(conninfo, max_in_flight=10, per_minute=3, window_seconds=60)
        for _ in range(3):
            await before.release(await before.acquire(realm, on_wait=None, notify_every=5))
        await before.aclose()

        await server.restart(outage=0.5)  # `-m immediate`: crash recovery when it starts again
        after = PostgresCompanyBudget(conninfo, max_in_flight=10, per_minute=3, window_seconds=60)
        try:
            waiting = asyncio.create_task(after.acquire(realm, on_wait=None, notify_every=5))
            await asyncio.sleep(3)
            admitted_again = waiting.done()
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
        finally:
            await after.aclose()

    assert not admitted_again, "the crash forgot the minute's 3 calls"
