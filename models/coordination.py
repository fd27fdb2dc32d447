"""Single flight: of the callers that want the same piece of work done at once, one does it, across processes.

Why PostgreSQL advisory locks: PostgreSQL is already what every worker process of every host shares in
production, the server releases a session's advisory locks the moment its connection ends (a worker that dies
frees its keys at once: no lease to expire, no lock rows to sweep), and they need no new dependency. The
embedded SQLite database means one machine: there the in-process lock alone serves.

An asyncio lock per key sits in front, so the concurrent callers of one process wait in memory and only one of
them holds a database connection while it waits for the other processes.

This is an optimisation, not a mutex: a waiter that waits longer than the bound goes ahead alone, so what runs
inside must be safe to run twice (as QuickBooks writes with a requestid are).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.db import SessionFactory

logger = logging.getLogger(__name__)

# A holder that keeps a key this long is stuck (a hung call, minutes of throttling): waiters stop waiting for it.
SINGLE_FLIGHT_WAIT_SECONDS = 60.0
# Flights of one process that hold a database connection at once. Each may need a second one for its work, and
# the pool has 10 (+10 overflow): waiting for a key never starves the other activities of connections.
MAX_FLIGHTS_HOLDING_CONNECTIONS = 5
# PostgreSQL's SQLSTATE for a lock wait that outlasted lock_timeout.
LOCK_NOT_AVAILABLE = "55P03"


def lock_key(*parts: str) -> int:
    """The advisory lock's key for these parts: a stable signed 64-bit hash of their injective encoding (a JSON
    list). Two keys that collide only take turns."""
    encoded = json.dumps(["qbo-sync", *parts]).encode()
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "big", signed=True)


@dataclass
class _LocalKey:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class SingleFlight:
    """`async with flights.hold(*key) as alone:` one caller at a time per key, in this process and across every
    process on the same PostgreSQL database.

    `alone` is True while the caller holds the key; False when waiting outlasted `wait_seconds` and the caller
    goes ahead unprotected. Leaving the block, however it is left, releases the key.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        wait_seconds: float = SINGLE_FLIGHT_WAIT_SECONDS,
        max_holding: int = MAX_FLIGHTS_HOLDING_CONNECTIONS,
    ) -> None:
        engine = sessions.kw.get("bind")
        assert isinstance(engine, AsyncEngine), "the session factory is bound to an async engine"
        self._engine = engine
        self._wait_seconds = wait_seconds
        self._across_processes = engine.dialect.name == "postgresql"
        self._local: dict[tuple[str, ...], _LocalKey] = {}
        self._holding = asyncio.Semaphore(max_holding)

    @contextlib.asynccontextmanager
    async def hold(self, *key: str) -> AsyncIterator[bool]:
        deadline = time.monotonic() + self._wait_seconds
        local = self._local.setdefault(key, _LocalKey())
        local.users += 1
        try:
            if not await _acquire(local.lock, deadline):
                yield self._gave_up(key)
                return
            try:
                if not self._across_processes:
                    yield True
                    return
                if not await _acquire(self._holding, deadline):
                    yield self._gave_up(key)
                    return
                try:
                    async with self._advisory_lock(lock_key(*key), deadline) as alone:
                        yield alone if alone else self._gave_up(key)
                finally:
                    self._holding.release()
            finally:
                local.lock.release()
        finally:
            local.users -= 1
            if local.users == 0:
                del self._local[key]

    @contextlib.asynccontextmanager
    async def _advisory_lock(self, lock_id: int, deadline: float) -> AsyncIterator[bool]:
        """A session-level advisory lock on a connection checked out for the whole flight."""
        async with self._engine.connect() as connection:
            try:
                acquired = await _advisory_lock(connection, lock_id, deadline)
            except BaseException:
                # Cancelled (or failed) mid-wait: the lock may have been granted meanwhile. Closing the connection
                # ends the session, and the server releases whatever it held.
                await connection.invalidate()
                raise
            if not acquired:
                yield False
                return
            try:
                yield True
            finally:
                try:
                    await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_id})
                    await connection.commit()
                except BaseException:
                    # The connection goes back to the pool only without the lock.
                    await connection.invalidate()
                    raise

    def _gave_up(self, key: tuple[str, ...]) -> bool:
        # The key's parts can be personal (an email): its hash only.
        logger.warning(
            "single flight %016x: waited %.0f s for another holder; going ahead alone",
            lock_key(*key) & 0xFFFFFFFFFFFFFFFF,
            self._wait_seconds,
        )
        return False


async def _acquire(lock: asyncio.Lock | asyncio.Semaphore, deadline: float) -> bool:
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await lock.acquire()
    except TimeoutError:
        return False
    return True


async def _advisory_lock(connection: AsyncConnection, lock_id: int, deadline: float) -> bool:
    """Wait for the lock until the deadline (lock_timeout, local to this transaction); False if it passed."""
    remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
    try:
        await connection.execute(
            text("SELECT set_config('lock_timeout', :timeout, true)"), {"timeout": f"{remaining_ms}ms"}
        )
        await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock_id})
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        await connection.rollback()
        return False
    # The lock is the session's and outlives the transaction, which must not stay open during the flight.
    await connection.commit()
    return True
