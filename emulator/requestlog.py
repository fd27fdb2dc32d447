"""The log of API and OAuth calls the emulator served, for tests that count calls, and its running totals."""

from __future__ import annotations

import itertools
from collections import Counter, deque
from typing import Any

MAX_ENTRIES = 50_000


class RequestLog:
    def __init__(self) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=MAX_ENTRIES)
        self._seq = itertools.count(1)
        # Per realm (None: OAuth and other calls outside a company): never trimmed, unlike the entries.
        self._totals: dict[str | None, Counter[str]] = {}

    def record(self, entry: dict[str, Any]) -> dict[str, Any]:
        entry = {"seq": next(self._seq), **entry}
        self._entries.append(entry)
        totals = self._totals.setdefault(entry.get("realm_id"), Counter())
        totals["requests"] += 1
        totals[f"status_{entry.get('status')}"] += 1
        if entry.get("injected_fault") is not None:
            totals["injected"] += 1
        elif entry.get("status") == 429:
            totals["throttled_not_injected"] += 1
        return entry

    def since(self, since_seq: int = 0, realm_id: str | None = None) -> list[dict[str, Any]]:
        return [
            entry
            for entry in self._entries
            if entry["seq"] > since_seq and (realm_id is None or entry.get("realm_id") == realm_id)
        ]

    def totals(self, realm_id: str | None = None) -> dict[str, int]:
        """Counts since the emulator started, of one realm or of all calls: `requests`, `injected`,
        `throttled_not_injected` (429s Intuit's limits gave, not a fault), and `status_<code>` (`status_None`:
        no answer, the connection dropped or its client gone)."""
        if realm_id is not None:
            return dict(sorted(self._totals.get(realm_id, Counter()).items()))
        summed: Counter[str] = Counter()
        for counts in self._totals.values():
            summed.update(counts)
        return dict(sorted(summed.items()))
