"""Failures injected on purpose through `/__admin/faults`: HTTP errors, latency, and webhook mischief."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any, Literal

FaultKind = Literal["http", "webhook_drop", "webhook_duplicate", "webhook_reorder"]
WEBHOOK_KINDS = ("webhook_drop", "webhook_duplicate", "webhook_reorder")


@dataclass
class Fault:
    """Applies to the next `count` matching calls (or webhook events/POSTs), then disappears."""

    id: int
    kind: FaultKind = "http"
    count: int = 1
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
    # The `error` of an OAuth-style body when the fault hits the token or revoke endpoint.
    oauth_error: str | None = None

    def matches(self, method: str, path: str, realm_id: str | None) -> bool:
        if self.kind != "http" or self.count <= 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path_contains is not None and self.path_contains.lower() not in path.lower():
            return False
        return self.realm_id is None or self.realm_id == realm_id

    def public(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        fields = {
            key: value for key, value in spec.items() if key in Fault.__dataclass_fields__ and key != "id"
        }
        fault = Fault(id=next(self._ids), **fields)
        if fault.kind not in ("http", *WEBHOOK_KINDS):
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        if fault.apply not in ("before", "after"):
            raise ValueError("apply must be 'before' or 'after'")
        if fault.count < 1:
            raise ValueError("count must be at least 1")
        if fault.status is not None and not 100 <= fault.status <= 599:
            raise ValueError("status must be an HTTP status code or null")
        self._faults.append(fault)
        return fault

    def pending(self) -> list[Fault]:
        return [fault for fault in self._faults if fault.count > 0]

    def clear(self) -> None:
        self._faults.clear()

    def take_http(self, method: str, path: str, realm_id: str | None) -> Fault | None:
        """The first pending fault that matches this call, with one use consumed."""
        for fault in self._faults:
            if fault.matches(method, path, realm_id):
                fault.count -= 1
                self._discard_spent()
                return fault
        return None

    def take_webhook(self, kind: FaultKind) -> Fault | None:
        for fault in self._faults:
            if fault.kind == kind and fault.count > 0:
                fault.count -= 1
                self._discard_spent()
                return fault
        return None

    def webhook_armed(self, kind: FaultKind) -> int:
        return sum(fault.count for fault in self._faults if fault.kind == kind)

    def _discard_spent(self) -> None:
        self._faults = [fault for fault in self._faults if fault.count > 0]
