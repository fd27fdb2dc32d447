"""Intuit's per-company limits: requests per minute (sliding window) and requests in flight."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from emulator.config import EmulatorConfig

WINDOW_SECONDS = 60.0


class Throttle:
    """Counts only admitted requests, on the real monotonic clock (the admin clock does not refill it)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._recent: dict[str, deque[float]] = {}
        self._recent_batches: dict[str, deque[float]] = {}
        self._in_flight: dict[str, int] = {}
        # What the company's callers sent at once (refused calls included) and the most of that ever seen, and how
        # many calls were refused for a limit: what a test checks to tell whether callers kept within the limits.
        self._arriving: dict[str, int] = {}
        self._max_seen: dict[str, int] = {}
        self._refused: dict[str, int] = {}

    def arrive(self, realm_id: str) -> None:
        """A call for the company is here (before any limit is checked)."""
        arriving = self._arriving.get(realm_id, 0) + 1
        self._arriving[realm_id] = arriving
        self._max_seen[realm_id] = max(self._max_seen.get(realm_id, 0), arriving)

    def depart(self, realm_id: str) -> None:
        self._arriving[realm_id] = max(self._arriving.get(realm_id, 0) - 1, 0)

    def try_enter(self, realm_id: str, batch: bool = False) -> bool:
        """Admits the call (and counts it) unless a limit is reached; batch calls also have their own limit."""
        now = time.monotonic()
        recent = _pruned(self._recent.setdefault(realm_id, deque()), now)
        batches = _pruned(self._recent_batches.setdefault(realm_id, deque()), now)
        if (
            self._in_flight.get(realm_id, 0) >= self.config.concurrency_limit
            or len(recent) >= self.config.rate_limit_per_minute
            or (batch and len(batches) >= self.config.batch_rate_limit_per_minute)
        ):
            self._refused[realm_id] = self._refused.get(realm_id, 0) + 1
            return False
        recent.append(now)
        if batch:
            batches.append(now)
        self._in_flight[realm_id] = self._in_flight.get(realm_id, 0) + 1
        return True

    def leave(self, realm_id: str) -> None:
        self._in_flight[realm_id] = max(self._in_flight.get(realm_id, 0) - 1, 0)

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        realms = set(self._recent) | set(self._in_flight) | set(self._max_seen)
        return {
            realm: {
                "in_flight": self._in_flight.get(realm, 0),
                "max_in_flight_seen": self._max_seen.get(realm, 0),
                "refused": self._refused.get(realm, 0),
                "last_minute": sum(
                    1 for stamp in self._recent.get(realm, ()) if stamp > now - WINDOW_SECONDS
                ),
            }
            for realm in sorted(realms)
        }


def _pruned(stamps: deque[float], now: float) -> deque[float]:
    while stamps and stamps[0] <= now - WINDOW_SECONDS:
        stamps.popleft()
    return stamps
