"""RealmLimiter: in-flight and per-minute limits per realm, FIFO admission, on an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from qbo.limits import RealmLimiter


class FakeTime:
    """A monotonic clock that moves only when the test says so, with sleeps that wake on `advance`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.now + delay, wake))
        await wake

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, wake in list(self.sleepers):
            if deadline <= self.now:
                self.sleepers.remove((deadline, wake))
                if not wake.done():
                    wake.set_result(None)
        await settle()


async def settle() -> None:
    """Lets every ready task run until nothing changes (a few loop turns are plenty here)."""
    for _ in range(50):
        await asyncio.sleep(0)


class Caller:
    """Tasks that take a slot, record when they got it, and hold it until released."""

    def __init__(self, limiter: RealmLimiter) -> None:
        self.limiter = limiter
        self.admitted: list[str] = []
        self.releases: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, realm: str = "realm-1") -> None:
        self.releases[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(self._run(name, realm))

    async def _run(self, name: str, realm: str) -> None:
        async with self.limiter.slot(realm):
            self.admitted.append(name)
            await self.releases[name].wait()

    async def release(self, *names: str) -> None:
        for name in names:
            self.releases[name].set()
        await settle()

    async def finish(self) -> None:
        for event in self.releases.values():
            event.set()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


async def test_at_most_max_in_flight_and_first_come_first_served(fake_time: FakeTime) -> None:
    limiter = RealmLimiter(max_in_flight=10, per_minute=500, clock=fake_time.clock, sleep=fake_time.sleep)
    callers = Caller(limiter)
    names = [f"c{i:02d}" for i in range(25)]
    for name in names:
        callers.start(name)
    await settle()
    assert callers.admitted == names[:10]
    assert limiter.in_flight("realm-1") == 10
    assert limiter.waiting("realm-1") == 15
    await callers.release("c03")
    assert callers.admitted == names[:11]
    await callers.release("c00", "c01", "c02")
    assert callers.admitted == names[:14]
    assert limiter.in_flight("realm-1") == 10
    await callers.finish()
    assert callers.admitted == names
    assert limiter.in_flight("realm-1") == 0


async def test_per_minute_budget_waits_for_the_oldest_call_to_leave_the_window(fake_time: FakeTime) -> None:
    limiter = RealmLimiter(
        max_in_flight=10, per_minute=3, window_seconds=60, clock=fake_time.clock, sleep=fake_time.sleep
    )
    callers = Caller(limiter)
    for name in ("a", "b", "c"):
        callers.start(name)
        await settle()
        await callers.release(name)
        await fake_time.advance(10)
    callers.start("d")
    callers.start("e")
    await settle()
    assert callers.admitted == ["a", "b", "c"]
    # One timer for the realm, not one per waiter and never a polling loop.
    assert len(fake_time.sleepers) == 1
    await fake_time.advance(29.9)  # "a" was admitted 59.9 s ago
    assert callers.admitted == ["a", "b", "c"]
    await fake_time.advance(0.1)
    assert callers.admitted == ["a", "b", "c", "d"]
    await fake_time.advance(10)
    assert callers.admitted == ["a", "b", "c", "d", "e"]
    await callers.finish()


async def test_a_throttled_call_leaves_the_window_and_holds_the_realm_briefly(fake_time: FakeTime) -> None:
    limiter = RealmLimiter(
        max_in_flight=10, per_minute=2, window_seconds=60, clock=fake_time.clock, sleep=fake_time.sleep
    )
    async with limiter.slot("realm-1"):
        pass
    callers = Caller(limiter)
    async with limiter.slot("realm-1") as admission:
        callers.start("retry")
        callers.start("next")
        await settle()
        assert callers.admitted == []  # 2 calls in the window
        admission.throttled(pause=0.5)
        admission.throttled(pause=5.0)  # reported once
    await settle()
    # The window has room for one again, but the realm holds for the pause first.
    assert callers.admitted == []
    await fake_time.advance(0.5)
    assert callers.admitted == ["retry"]
    # The other waits for the first call to leave the window, a minute after it was admitted.
    await fake_time.advance(59.4)
    assert callers.admitted == ["retry"]
    await fake_time.advance(0.1)
    assert callers.admitted == ["retry", "next"]
    await callers.finish()


async def test_a_hold_shorter_than_the_window_wait_wakes_the_realm_sooner(fake_time: FakeTime) -> None:
    limiter = RealmLimiter(
        max_in_flight=10, per_minute=1, window_seconds=60, clock=fake_time.clock, sleep=fake_time.sleep
    )
    callers = Caller(limiter)
    async with limiter.slot("realm-1") as admission:
        callers.start("retry")
        await settle()
        # Waiting for the window: one timer, a minute away.
        assert [deadline - fake_time.now for deadline, _ in fake_time.sleepers] == [60.0]
        admission.throttled(pause=1.0)
    await settle()
    assert [deadline - fake_time.now for deadline, wake in fake_time.sleepers if not wake.done()] == [1.0]
    await fake_time.advance(1.0)
    assert callers.admitted == ["retry"]
    await callers.finish()


async def test_a_new_arrival_never_overtakes_a_waiter(fake_time: FakeTime) -> None:
    limiter = RealmLimiter(
        max_in_flight=1, per_minute=2, window_seconds=60, clock=fake_time.clock, sleep=fake_time.sleep
    )
    callers = Caller(limiter)
    callers.start("first")
    callers.start("second")
    await settle()
    await callers.release("first")
    await callers.release("second")
    callers.start("third")  # out of per-minute budget: waits for the window
    await settle()
    await fake_time.advance(30)
    callers.start("fourth")
    await settle()
    assert callers.admitted == ["first", "second"]
    await fake_time.advance(30)
    assert callers.admitted == ["first", "second", "third"]
    await callers.release("third")
    assert callers.admitted == ["first", "second", "third", "fourth"]
    await callers.finish()


async def test_realms_do_not_share_limits(fake_time: FakeTime) -> None:
    limiter = RealmLimiter(max_in_flight=2, per_minute=500, clock=fake_time.clock, sleep=fake_time.sleep)
    callers = Caller(limiter)
    for name in ("a1", "a2", "a3"):
        callers.start(name, realm="A")
    callers.start("b1", realm="B")
    await settle()
    assert callers.admitted == ["a1", "a2", "b1"]
    assert limiter.in_flight("A") == 2
    assert limiter.in_flight("B") == 1
    await callers.finish()


async def test_a_cancelled_waiter_gives_its_turn_to_the_next(fake_time: FakeTime) -> None:
    limiter = RealmLimiter(max_in_flight=1, per_minute=500, clock=fake_time.clock, sleep=fake_time.sleep)
    callers = Caller(limiter)
    for name in ("holder", "quitter", "next"):
        callers.start(name)
    await settle()
    callers.tasks["quitter"].cancel()
    await settle()
    assert limiter.waiting("realm-1") == 1
    await callers.release("holder")
    assert callers.admitted == ["holder", "next"]
    await callers.finish()
    assert limiter.in_flight("realm-1") == 0


async def test_a_caller_cancelled_as_it_is_admitted_returns_the_slot(fake_time: FakeTime) -> None:
    limiter = RealmLimiter(max_in_flight=1, per_minute=500, clock=fake_time.clock, sleep=fake_time.sleep)
    callers = Caller(limiter)
    callers.start("holder")
    callers.start("unlucky")
    callers.start("next")
    await settle()
    # Release and cancel in the same loop turn: "unlucky" is admitted but never runs its block.
    callers.releases["holder"].set()
    await asyncio.sleep(0)
    callers.tasks["unlucky"].cancel()
    await settle()
    assert "unlucky" not in callers.admitted
    assert callers.admitted == ["holder", "next"]
    await callers.finish()
    assert limiter.in_flight("realm-1") == 0


async def test_the_slot_is_released_when_the_block_raises(fake_time: FakeTime) -> None:
    limiter = RealmLimiter(max_in_flight=1, clock=fake_time.clock, sleep=fake_time.sleep)
    with contextlib.suppress(RuntimeError):
        async with limiter.slot("realm-1"):
            raise RuntimeError("boom")
    assert limiter.in_flight("realm-1") == 0
    async with limiter.slot("realm-1"):
        assert limiter.in_flight("realm-1") == 1


async def test_real_clock_defaults_admit_without_waiting() -> None:
    limiter = RealmLimiter()
    assert (limiter.max_in_flight, limiter.per_minute) == (10, 500)
    async with asyncio.timeout(5):
        await asyncio.gather(*(_use(limiter) for _ in range(50)))
    assert limiter.in_flight("realm-1") == 0


async def _use(limiter: RealmLimiter) -> None:
    async with limiter.slot("realm-1"):
        assert limiter.in_flight("realm-1") <= 10
        await asyncio.sleep(0)


def test_the_limiter_counts_each_call_a_second_longer_than_intuit() -> None:
    assert RealmLimiter().window_seconds == 61.0


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RealmLimiter(max_in_flight=0)
    with pytest.raises(ValueError, match="positive"):
        RealmLimiter(per_minute=0)


async def test_a_queued_caller_is_told_it_is_still_waiting() -> None:
    limiter = RealmLimiter(max_in_flight=1)
    notices: list[float] = []
    noticed_twice = asyncio.Event()

    async def notice(seconds: float) -> None:
        notices.append(seconds)
        if len(notices) >= 2:
            noticed_twice.set()

    release = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot("realm-1"):
            await release.wait()

    holding = asyncio.create_task(holder())
    await settle()
    waiter = asyncio.create_task(_use_with_notices(limiter, notice))
    async with asyncio.timeout(10):
        await noticed_twice.wait()
    assert set(notices) == {0.01}
    release.set()
    async with asyncio.timeout(10):
        await asyncio.gather(holding, waiter)
    assert limiter.in_flight("realm-1") == 0


async def _use_with_notices(limiter: RealmLimiter, notice: Callable[[float], Awaitable[None]]) -> None:
    async with limiter.slot("realm-1", on_wait=notice, notify_every=0.01):
        assert limiter.in_flight("realm-1") == 1


async def test_a_failing_notice_leaves_the_queue_cleanly() -> None:
    limiter = RealmLimiter(max_in_flight=1)

    async def failing(seconds: float) -> None:
        raise RuntimeError("heartbeat failed")

    async with limiter.slot("realm-1"):
        with pytest.raises(RuntimeError, match="heartbeat"):
            async with limiter.slot("realm-1", on_wait=failing, notify_every=0.01):
                pass
        assert limiter.waiting("realm-1") == 0
    assert limiter.in_flight("realm-1") == 0
