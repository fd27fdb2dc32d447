"""Hands what requests stored over to Temporal after their answers, in rounds.

A request that stores something Temporal must hear of (an invoice to sync, a webhook delivery to process) answers
once it is committed and leaves the telling to a `HandOff`: the caller does not wait for Temporal's round trip, and
while a round is under way, what arrives waits for the next one, which handles it together (one statement marks a
whole round handed over). What a round could not hand over (Temporal away, the process stopping) stays marked
not handed over in the database, where the relay (`api/relay.py`) finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

# Keys one round takes at most (the rest wait for the next): a round's statements bind each key, and drivers cap
# the parameters of one statement (SQLite at 32,766).
PER_ROUND = 500

Key = TypeVar("Key", bound=Hashable)


class HandOff(Generic[Key]):
    """Runs `hand_over` on the keys given since the last round began, one round at a time, off the requests.

    `hand_over` gets each key with the context it was given in (the request's: its trace, its log fields), for what
    it does on behalf of that one request; the round itself runs in a context of its own."""

    def __init__(
        self,
        what: str,
        hand_over: Callable[[dict[Key, contextvars.Context]], Awaitable[object]],
        *,
        stop_within: float,
    ) -> None:
        self._what = what
        self._hand_over = hand_over
        self._stop_within = stop_within
        # In the order given: the first sent is the first started.
        self._waiting: dict[Key, contextvars.Context] = {}
        self._round: asyncio.Task[None] | None = None

    def give(self, key: Key) -> None:
        self._waiting[key] = contextvars.copy_context()
        if self._round is None or self._round.done():
            # In a context of its own: not the request's that happened to start it (its log fields, its trace).
            self._round = asyncio.create_task(self._rounds(), context=contextvars.Context())

    async def _rounds(self) -> None:
        while self._waiting:
            given = dict(itertools.islice(self._waiting.items(), PER_ROUND))
            for key in given:
                del self._waiting[key]
            try:
                await self._hand_over(given)
            except Exception:
                # Stored and not handed over: the relay does it (a database away is logged by the relay too).
                logger.exception("%s not handed to Temporal yet: the relay will", self._what)

    async def aclose(self) -> None:
        """Finish the round under way (the app is stopping), for at most `stop_within` seconds; what is left is
        the relay's, at the next start."""
        if self._round is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._round, timeout=self._stop_within)
