"""One budget of Intuit's per-company limits shared by every process and host, kept in PostgreSQL.

Intuit allows an app 10 calls in flight and 500 a minute per company, counted over all of the app's callers:
every worker and API process on every host. `RealmLimiter` keeps them within one process and in arrival order;
this budget is the second stage each admitted call passes, so that all processes together stay within them.

Why PostgreSQL: production already requires it (nothing new to run, unlike Redis), its clock is one clock for all
hosts, and its advisory locks are the well-known tool for a semaphore whose holder may die: a session's locks go
with its connection, so a killed process's slots are back as soon as the server sees the connection close (at
once for a crash on a live host; within about 11 s of TCP keepalives for a host that vanished). Temporal's
task-queue rate limits were the other candidate; they limit how fast activities are dispatched, not how many
calls are in flight, and not the calls an activity makes once it runs.

- In flight: slot k of a company is the advisory lock (hash of the company, k), k < max_in_flight, held by the
  process's budget connection for the length of one call (the two-key lock space; single flight,
  models/coordination.py, uses the one-key space, which never overlaps it). A session may take a lock it holds again (locks
  stack), so the process says which slots it holds already.
- Per minute: a sliding log of admissions (`qbo_budget_call`, a logged table: an UNLOGGED one would be emptied
  by crash recovery while Intuit still counts that minute), each counted for `window_seconds`; a call QuickBooks
  throttled leaves the log (Intuit did not serve it) and holds the company for everyone (its row in `qbo_budget_company`).
- One admission at a time per company (its row, locked FOR UPDATE, which also holds the log's count, so an
  admission never counts the log).
- Waiting: a release NOTIFYs the company's id when a caller found every slot taken in the last 5 s (NOTIFY
  serializes commits server-wide, so an uncontended company does without); waiters also look again every
  `poll_seconds`, which covers a dead holder (whose slots free without a notification) and a lost notification.

Both functions live in the database (migration 0008), so an admission is one round trip.

If the database cannot be reached, calls wait (and keep heartbeating) until it can: the workers need it for
everything else anyway, and calling Intuit without the budget is how 429s come back. A connection lost while
calls are under way loses their slots with it; those calls finish, and for that moment the company may see a
few more than 10 at once (the 429 handling covers it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

from qbo.limits import WINDOW_SECONDS, RealmLimiter

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "qbo_budget"
# How long a waiter goes without looking again, notified or not (a dead holder's slots free silently).
DEFAULT_POLL_SECONDS = 0.5
# Waiting for an unreachable database: first retry after this, doubling up to the ceiling.
RECONNECT_INITIAL_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5
# The server drops a dead host's session (and so its slots) after about idle + interval x count seconds.
_SERVER_KEEPALIVES = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"

OnWait = Callable[[float], Awaitable[None]]


class BudgetUnavailable(Exception):
    """The budget's database could not be reached; the caller waits and tries again."""


@dataclass(frozen=True)
class Ticket:
    """One admitted call: its slot, its entry in the minute's log, and the connection that holds the slot."""

    realm_id: str
    slot: int
    call_id: int
    generation: int


class PostgresCompanyBudget:
    """The shared budget, reached through one connection per process (which holds the process's slots) and one
    that listens for releases."""

    def __init__(
        self,
        conninfo: str,
        *,
        max_in_flight: int,
        per_minute: int,
        window_seconds: float,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        if max_in_flight < 1 or per_minute < 1 or window_seconds <= 0 or poll_seconds <= 0:
            raise ValueError("limits must be positive")
        self._conninfo = conninfo
        self.max_in_flight = max_in_flight
        self.per_minute = per_minute
        self.window_seconds = window_seconds
        self._poll_seconds = poll_seconds
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._generation = 0
        self._conn_lock = asyncio.Lock()
        # Slots this process holds, per company, on the current connection.
        self._held: dict[str, set[int]] = {}
        # One caller per company at a time asks the database; the others queue here, in arrival order, so a
        # release wakes one asker per process rather than every waiting call.
        self._gates: dict[str, asyncio.Lock] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend serving the budget connection, once it is open (what a benchmark measures)."""
        return self._conn.info.backend_pid if self._conn is not None and not self._conn.closed else None

    # --- the limiter's side ---------------------------------------------------------------------------------

    async def acquire(self, realm_id: str, *, on_wait: OnWait | None, notify_every: float) -> Ticket:
        """Waits for a slot of the company within both limits; `on_wait` is awaited every `notify_every` s."""
        self._ensure_listening()
        waiting = _Heartbeat(on_wait, notify_every)
        gate = self._gates.setdefault(realm_id, asyncio.Lock())
        async with gate:
            backoff = RECONNECT_INITIAL_SECONDS
            while True:
                changed = self._changed.setdefault(realm_id, asyncio.Event())
                changed.clear()
                try:
                    ticket, wait = await self._try_acquire(realm_id)
                except BudgetUnavailable:
                    await waiting.sleep(backoff * random.uniform(0.5, 1.0))
                    backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)
                    continue
                backoff = RECONNECT_INITIAL_SECONDS
                if ticket is not None:
                    return ticket
                # No slot: a release (here or elsewhere) wakes us; the minute's edge or a hold is a known moment.
                timeout = self._poll_seconds if wait is None else min(max(wait, 0.01), self._poll_seconds * 4)
                await waiting.wait(changed, timeout)

    async def release(self, ticket: Ticket) -> None:
        """Gives the slot back. Never raises: a slot on a lost connection went with it."""
        self._forget(ticket)
        self._wake(ticket.realm_id)
        if ticket.generation != self._generation:
            return
        try:
            await self._execute(
                "SELECT qbo_budget_release(%s, %s, %s)", (ticket.realm_id, ticket.slot, NOTIFY_CHANNEL)
            )
        except BudgetUnavailable:
            logger.debug("company budget: release lost with the connection (its slot went with it)")

    def report_throttled(self, ticket: Ticket, pause: float) -> None:
        """QuickBooks answered the call 429: out of the minute's log, and every process holds off `pause` s."""
        self._spawn(self._throttled(ticket, pause))

    async def aclose(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task
        async with self._conn_lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
                self._conn = None

    # --- the database ---------------------------------------------------------------------------------------

    async def _try_acquire(self, realm_id: str) -> tuple[Ticket | None, float | None]:
        held = sorted(self._held.get(realm_id, set()))
        # Shielded: a caller cancelled while the database answers must not leave a slot taken for nobody.
        attempt = asyncio.ensure_future(
            self._execute(
                "SELECT slot, call_id, wait_seconds FROM qbo_budget_acquire(%s, %s, %s, %s, %s)",
                (realm_id, self.max_in_flight, self.per_minute, self.window_seconds, held),
            )
        )
        try:
            row, generation = await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(lambda done: self._give_back_abandoned(realm_id, done))
            raise
        return self._ticket(realm_id, row, generation)

    def _ticket(
        self, realm_id: str, row: tuple[object, ...] | None, generation: int
    ) -> tuple[Ticket | None, float | None]:
        if row is None:
            return None, None
        slot, call_id, wait = row
        if slot is None:
            return None, float(wait) if isinstance(wait, int | float) else None
        assert isinstance(slot, int)
        assert isinstance(call_id, int)
        if generation == self._generation:
            self._held.setdefault(realm_id, set()).add(slot)
        return Ticket(realm_id=realm_id, slot=slot, call_id=call_id, generation=generation), None

    def _give_back_abandoned(
        self, realm_id: str, done: asyncio.Future[tuple[tuple[object, ...] | None, int]]
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        ticket, _ = self._ticket(realm_id, *done.result())
        if ticket is not None:
            self._spawn(self.release(ticket))

    async def _throttled(self, ticket: Ticket, pause: float) -> None:
        try:
            await self._execute(
                "SELECT qbo_budget_throttled(%s, %s, %s)", (ticket.realm_id, ticket.call_id, pause)
            )
        except BudgetUnavailable:
            logger.debug("company budget: a throttle could not be recorded (database unreachable)")

    async def _execute(self, sql: str, params: tuple[object, ...]) -> tuple[tuple[object, ...] | None, int]:
        """One statement on the budget connection: its first row and the connection's generation."""
        async with self._conn_lock:
            if self._closed:
                raise BudgetUnavailable("closed")
            try:
                conn = await self._connection()
                cursor = await conn.execute(sql, params)
                return await cursor.fetchone(), self._generation
            except psycopg.OperationalError as exc:
                await self._drop_connection()
                raise BudgetUnavailable(type(exc).__name__) from exc

    async def _connection(self) -> psycopg.AsyncConnection[TupleRow]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                options=_SERVER_KEEPALIVES,
                application_name="qbo-sync company budget",
            )
        return self._conn

    async def _drop_connection(self) -> None:
        # The slots this process held went with the old session; tickets of that generation release nothing.
        self._generation += 1
        self._held.clear()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    def _forget(self, ticket: Ticket) -> None:
        if ticket.generation == self._generation:
            self._held.get(ticket.realm_id, set()).discard(ticket.slot)

    # --- hearing about releases -----------------------------------------------------------------------------

    def _wake(self, realm_id: str) -> None:
        changed = self._changed.get(realm_id)
        if changed is not None:
            changed.set()

    def _ensure_listening(self) -> None:
        if (self._listener is None or self._listener.done()) and not self._closed:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        backoff = RECONNECT_INITIAL_SECONDS
        while not self._closed:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    application_name="qbo-sync company budget listener",
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    backoff = RECONNECT_INITIAL_SECONDS
                    async for notification in conn.notifies():
                        self._wake(notification.payload)
            except psycopg.OperationalError:
                # Waiters keep polling meanwhile; this only makes them quicker.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _Heartbeat:
    """Waits in pieces, awaiting `on_wait` every `notify_every` seconds of waiting (a Temporal heartbeat)."""

    def __init__(self, on_wait: OnWait | None, notify_every: float) -> None:
        self._on_wait = on_wait
        self._notify_every = notify_every
        self._last = time.monotonic()

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()
        await self._beat()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._beat()

    async def _beat(self) -> None:
        if self._on_wait is not None and time.monotonic() - self._last >= self._notify_every:
            self._last = time.monotonic()
            await self._on_wait(self._notify_every)


def company_limiter(
    conninfo: str | None,
    *,
    max_in_flight: int,
    per_minute: int,
    window_seconds: float = WINDOW_SECONDS,
) -> RealmLimiter:
    """The limiter of a worker or API process: its own, and the shared budget when there is a PostgreSQL to keep
    it in (`conninfo`); the embedded SQLite default runs one worker, whose own limiter is then the budget."""
    shared = (
        PostgresCompanyBudget(
            conninfo, max_in_flight=max_in_flight, per_minute=per_minute, window_seconds=window_seconds
        )
        if conninfo is not None
        else None
    )
    return RealmLimiter(
        max_in_flight=max_in_flight, per_minute=per_minute, window_seconds=window_seconds, shared=shared
    )
