"""The log of API and OAuth calls the emulator served, for tests that count calls."""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

MAX_ENTRIES = 50_000


class RequestLog:
    def __init__(self) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=MAX_ENTRIES)
        self._seq = itertools.count(1)

    def record(self, entry: dict[str, Any]) -> dict[str, Any]:
        entry = {"seq": next(self._seq), **entry}
        self._entries.append(entry)
        return entry

    def since(self, since_seq: int = 0, realm_id: str | None = None) -> list[dict[str, Any]]:
        return [
            entry
            for entry in self._entries
            if entry["seq"] > since_seq and (realm_id is None or entry.get("realm_id") == realm_id)
        ]
