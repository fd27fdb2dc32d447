"""Failures injected on purpose through `/__admin/faults`: HTTP errors, latency, dropped connections, webhook mischief.

A fault fires on the next `count` matching calls (or webhook events/POSTs), or, given a `rate`, on each matching one
with that probability until it is cleared. Rates come from one seeded random generator, so a run with the same seed
draws the same sequence. Every fault that fires is counted by its effect (`injected`), so a run can tell what it
injected from what QuickBooks itself did.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

FaultKind = Literal["http", "webhook_drop", "webhook_duplicate", "webhook_reorder"]
WEBHOOK_KINDS = ("webhook_drop", "webhook_duplicate", "webhook_reorder")


@dataclass
class Fault:
    """Applies to the next `count` matching calls (or webhook events/POSTs), then disappears; with `rate`, to each
    matching one with that probability, until cleared."""

    id: int
    kind: FaultKind = "http"
    count: int = 1
    # A probability in (0, 1]: the fault stays armed (count is not used) and fires on this share of matches.
    rate: float | None = None
    method: str | None = None
    path_contains: str | None = None
    realm_id: str | None = None
    status: int | None = 500
    fault_code: str | None = None
    fault_type: str | None = None
    message: str | None = None
    latency_ms: int = 0
    # "before": answer without performing the call; "after": perform and commit it, then answer with the error.
    apply: Literal["before", "after"] = "before"
    # Close the connection without an answer (after `latency_ms`) instead of answering: the client sees a
    # transport error. With "after", the call was performed and committed all the same.
    drop_connection: bool = False
    # The `error` of an OAuth-style body when the fault hits the token or revoke endpoint.
    oauth_error: str | None = None
    # How many times it fired.
    injected: int = 0

    @property
    def armed(self) -> bool:
        return self.rate is not None or self.count > 0

    @property
    def effect(self) -> str:
        """What the caller experiences, the key of the injected counts: `500_before`, `drop_after`, `latency_after`,
        `webhook_drop`."""
        if self.kind != "http":
            return self.kind
        if self.drop_connection:
            return f"drop_{self.apply}"
        if self.status is None:
            return f"latency_{self.apply}"
        return f"{self.status}_{self.apply}"

    def matches(self, method: str, path: str, realm_id: str | None) -> bool:
        if self.kind != "http" or not self.armed:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path_contains is not None and self.path_contains.lower() not in path.lower():
            return False
        return self.realm_id is None or self.realm_id == realm_id

    def public(self) -> dict[str, Any]:
        return {**asdict(self), "effect": self.effect}


class FaultInjector:
    def __init__(self, seed: int | None = None) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self.seed = seed
        self._random = random.Random(seed)
        # Fired faults by effect, kept when faults are cleared (a run reads them at its end).
        self.injected: Counter[str] = Counter()

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self._random = random.Random(seed)

    def add(self, spec: dict[str, Any]) -> Fault:
        fields = {
            key: value
            for key, value in spec.items()
            if key in Fault.__dataclass_fields__ and key not in ("id", "injected")
        }
        fault = Fault(id=next(self._ids), **fields)
        if fault.kind not in ("http", *WEBHOOK_KINDS):
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        if fault.apply not in ("before", "after"):
            raise ValueError("apply must be 'before' or 'after'")
        if fault.count < 1:
            raise ValueError("count must be at least 1")
        if fault.rate is not None and not 0 < fault.rate <= 1:
            raise ValueError("rate must be in (0, 1]")
        if fault.status is not None and not 100 <= fault.status <= 599:
            raise ValueError("status must be an HTTP status code or null")
        self._faults.append(fault)
        return fault

    def pending(self) -> list[Fault]:
        return [fault for fault in self._faults if fault.armed]

    def clear(self) -> None:
        self._faults.clear()

    def take_http(self, method: str, path: str, realm_id: str | None) -> Fault | None:
        """The fault this call gets, if any, with one use consumed: the first counted fault that matches, else at
        most one of the matching rate faults (one draw, their rates added up in the order they were added)."""
        matching = [fault for fault in self._faults if fault.matches(method, path, realm_id)]
        return self._take(matching)

    def take_webhook(self, kind: FaultKind) -> Fault | None:
        return self._take([fault for fault in self._faults if fault.kind == kind and fault.armed])

    def webhook_armed(self, kind: FaultKind) -> int:
        """Uses left of the counted faults of this kind, plus one for each rate fault."""
        return sum(
            1 if fault.rate is not None else fault.count
            for fault in self._faults
            if fault.kind == kind and fault.armed
        )

    def counts(self) -> dict[str, int]:
        return dict(sorted(self.injected.items()))

    def _take(self, matching: list[Fault]) -> Fault | None:
        chosen = next((fault for fault in matching if fault.rate is None), None)
        if chosen is None:
            rated = [fault for fault in matching if fault.rate is not None]
            if not rated:
                return None
            draw = self._random.random()
            threshold = 0.0
            for fault in rated:
                threshold += fault.rate or 0.0
                if draw < threshold:
                    chosen = fault
                    break
            if chosen is None:
                return None
        else:
            chosen.count -= 1
            self._faults = [fault for fault in self._faults if fault.armed]
        chosen.injected += 1
        self.injected[chosen.effect] += 1
        return chosen
