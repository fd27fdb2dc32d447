"""Which plans include the QuickBooks integration."""

from __future__ import annotations

from enum import StrEnum


class Plan(StrEnum):
    FREE = "free"
    PRO = "pro"
    PREMIUM = "premium"


def quickbooks_entitled(plan: str, quickbooks_addon: bool) -> bool:
    """Premium includes QuickBooks; Pro needs the add-on; Free never has it."""
    return plan == Plan.PREMIUM or (plan == Plan.PRO and quickbooks_addon)


def entitlement_problem(plan: str, quickbooks_addon: bool) -> str | None:
    """What the user must do to get QuickBooks, or None when the plan already includes it."""
    if quickbooks_entitled(plan, quickbooks_addon):
        return None
    if plan == Plan.PRO:
        return "The Pro plan needs the QuickBooks add-on ($10/month) to connect QuickBooks. Add it, then connect."
    return "QuickBooks is available on the Premium plan, or on Pro with the QuickBooks add-on. Upgrade to connect."
