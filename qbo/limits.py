"""Per-realm request limits: Intuit's 10 in flight and 500 per minute per company, in arrival order inside one
process, and (with a shared budget, qbo/company_budget.py) across every process together."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from qbo.metrics import record_limiter_wait

if TYPE_CHECKING:
    from qbo.company_budget import Ticket

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Intuit's documented limits per app and company (reference §7.1).
DEFAULT_MAX_IN_FLIGHT = 10
DEFAULT_PER_MINUTE = 500
# Intuit counts a minute; the limiter counts each call a second longer, for the time a call takes to reach
# Intuit, so that it does not admit a call a moment before Intuit's window has let the matching one go.
INTUIT_WINDOW_SECONDS = 60.0
WINDOW_MARGIN_SECONDS = 1.0
WINDOW_SECONDS = INTUIT_WINDOW_SECONDS + WINDOW_MARGIN_SECONDS
# How often a queued caller hears that it is still waiting (below any sensible heartbeat timeout).
DEFAULT_NOTIFY_EVERY = 5.0
# Forgetting idle realms is a sweep over all of them, so it runs only every this many releases.
_SWEEP_EVERY = 1000


class SharedBudget(Protocol):
    """The budget of a company shared with other processes: a second admission after the process's own."""

    async def acquire(
        self, realm_id: str, *, on_wait: Callable[[float], Awaitable[None]] | None, notify_every: float
    ) -> Ticket: ...

    async def release(self, ticket: Ticket) -> None: ...

    def report_throttled(self, ticket: Ticket, pause: float) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class _RealmState:
    # Each waiter's future is resolved with its admission time.
    waiters: deque[asyncio.Future[float]] = field(default_factory=deque)
    in_flight: int = 0
    # Admission times inside the rolling window, oldest first.
    starts: deque[float] = field(default_factory=deque)
    # After a 429, nothing new is admitted before this moment.
    hold_until: float = 0.0
    timer: asyncio.Task[None] | None = None
    timer_at: float = 0.0


class Admission:
    """One admitted request, which the caller reports `throttled` when QuickBooks answered it 429.

    A throttled call leaves the per-minute window again, since QuickBooks' window did not count it (the
    emulator's does not; Intuit does not say); otherwise a call throttled at the window's edge would keep its own
    retry waiting up to a minute behind it. And the realm admits nothing new for `pause` seconds, so the calls
    queued behind it do not run into the same edge one after another. Reported more than once, it counts once.
    """

    def __init__(self, limiter: RealmLimiter, state: _RealmState, admitted_at: float) -> None:
        self._limiter = limiter
        self._state = state
        self._admitted_at = admitted_at
        self._reported = False
        self.ticket: Ticket | None = None

    def throttled(self, pause: float) -> None:
        if not self._reported:
            self._reported = True
            self._limiter._give_back(self._state, self._admitted_at, pause)
            if self.ticket is not None and self._limiter.shared is not None:
                self._limiter.shared.report_throttled(self.ticket, pause)


class RealmLimiter:
    """Admits requests per realm in arrival order, within `max_in_flight` and `per_minute`.

    Waiting is event-driven: a release admits the next waiter, and when the per-minute budget is spent one
    timer per realm wakes up as the oldest admission leaves the window. `clock` and `sleep` are injectable so
    tests can drive the window without real time passing. The limits hold within one process; with `shared`,
    each call admitted here also takes a slot of the budget all processes share, so that several workers and
    API processes together keep within them. Intuit also counts other apps' calls, which is why the client
    still waits out a 429.
    """

    def __init__(
        self,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        per_minute: int = DEFAULT_PER_MINUTE,
        window_seconds: float = WINDOW_SECONDS,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        shared: SharedBudget | None = None,
    ) -> None:
        if max_in_flight < 1 or per_minute < 1 or window_seconds <= 0:
            raise ValueError("limits must be positive")
        self.max_in_flight = max_in_flight
        self.per_minute = per_minute
        self.window_seconds = window_seconds
        self._clock = clock
        self._sleep = sleep
        self._realms: dict[str, _RealmState] = {}
        self._releases = 0
        self.shared = shared

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()

    def slot(
        self,
        realm_id: str,
        *,
        on_wait: Callable[[float], Awaitable[None]] | None = None,
        notify_every: float = DEFAULT_NOTIFY_EVERY,
    ) -> AbstractAsyncContextManager[Admission]:
        """Holds one of the realm's request slots for the duration of the `async with` block.

        While the caller queues, `on_wait(notify_every)` is awaited every `notify_every` seconds, so a
        caller that must show signs of life (a Temporal activity heartbeating) can do so. The block gets the
        `Admission`, to report a call QuickBooks throttled.
        """
        return self._slot(realm_id, on_wait, notify_every)

    def in_flight(self, realm_id: str) -> int:
        state = self._realms.get(realm_id)
        return state.in_flight if state else 0

    def waiting(self, realm_id: str) -> int:
        state = self._realms.get(realm_id)
        return sum(1 for waiter in state.waiters if not waiter.done()) if state else 0

    @contextlib.asynccontextmanager
    async def _slot(
        self, realm_id: str, on_wait: Callable[[float], Awaitable[None]] | None, notify_every: float
    ) -> AsyncIterator[Admission]:
        queued_at = time.monotonic()
        admission = await self._acquire(realm_id, on_wait, notify_every)
        try:
            if self.shared is not None:
                admission.ticket = await self.shared.acquire(
                    realm_id, on_wait=on_wait, notify_every=notify_every
                )
            record_limiter_wait(realm_id, time.monotonic() - queued_at)
            yield admission
        finally:
            try:
                if admission.ticket is not None and self.shared is not None:
                    # Shielded: a cancelled call still gives its shared slot back.
                    await asyncio.shield(self.shared.release(admission.ticket))
            finally:
                self._release(realm_id)

    async def _acquire(
        self, realm_id: str, on_wait: Callable[[float], Awaitable[None]] | None, notify_every: float
    ) -> Admission:
        state = self._realms.setdefault(realm_id, _RealmState())
        admitted: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        state.waiters.append(admitted)
        self._pump(state)
        try:
            if on_wait is None:
                await admitted
            else:
                while not admitted.done():
                    # asyncio.wait leaves the future alone on timeout, unlike wait_for.
                    await asyncio.wait({admitted}, timeout=notify_every)
                    if not admitted.done():
                        await on_wait(notify_every)
        except BaseException:
            # Cancelled, or on_wait failed: leave the queue, or give back a slot granted meanwhile.
            if admitted.done() and not admitted.cancelled():
                self._release(realm_id)
            else:
                admitted.cancel()
                with contextlib.suppress(ValueError):
                    state.waiters.remove(admitted)
                self._pump(state)
            raise
        return Admission(self, state, admitted.result())

    def _give_back(self, state: _RealmState, admitted_at: float, pause: float) -> None:
        # Equal stamps are interchangeable, and one that already left the window needs no removal.
        with contextlib.suppress(ValueError):
            state.starts.remove(admitted_at)
        state.hold_until = max(state.hold_until, self._clock() + pause)
        self._pump(state)

    def _release(self, realm_id: str) -> None:
        state = self._realms.get(realm_id)
        if state is None:
            return
        state.in_flight = max(state.in_flight - 1, 0)
        self._pump(state)
        self._releases += 1
        if self._releases % _SWEEP_EVERY == 0:
            self._forget_idle()

    def _pump(self, state: _RealmState) -> None:
        """Admits waiters from the head of the queue while both limits allow."""
        now = self._clock()
        horizon = now - self.window_seconds
        while state.starts and state.starts[0] <= horizon:
            state.starts.popleft()
        while state.waiters:
            head = state.waiters[0]
            if head.done():  # cancelled while waiting
                state.waiters.popleft()
                continue
            if state.in_flight >= self.max_in_flight:
                return
            if now < state.hold_until:
                self._wake_later(state, state.hold_until - now)
                return
            if len(state.starts) >= self.per_minute:
                self._wake_later(state, state.starts[0] + self.window_seconds - now)
                return
            state.waiters.popleft()
            state.in_flight += 1
            state.starts.append(now)
            head.set_result(now)

    def _wake_later(self, state: _RealmState, delay: float) -> None:
        """One timer per realm, for the earliest moment something may change."""
        wake_at = self._clock() + max(delay, 0.0)
        if state.timer is not None and not state.timer.done():
            if state.timer_at <= wake_at:
                return
            state.timer.cancel()
        state.timer_at = wake_at
        state.timer = asyncio.get_running_loop().create_task(self._wake(state, max(delay, 0.0)))

    async def _wake(self, state: _RealmState, delay: float) -> None:
        await self._sleep(delay)
        state.timer = None
        self._pump(state)

    def _forget_idle(self) -> None:
        horizon = self._clock() - self.window_seconds
        for realm_id, state in list(self._realms.items()):
            if state.waiters or state.in_flight or state.timer is not None:
                continue
            if not state.starts or state.starts[-1] <= horizon:
                del self._realms[realm_id]
