"""Workflow ids, derived from business keys, injectively: no two different keys ever give one id.

Each part is percent-encoded (`urllib.parse.quote` with nothing kept safe but letters, digits and `-._~`), so an
encoded part never contains the `:` that separates parts, and decoding gives the part back. Account `acme` with
invoice `corp-17` is `invoice:acme:corp-17`; account `acme-corp` with invoice `17` is `invoice:acme-corp:17`.
Every kind has its own prefix, so ids of different kinds never meet either. Dedupe keys that append
`/<kind>/<key>` to a workflow id stay unambiguous too: an encoded id never contains `/`.
"""

from urllib.parse import quote, unquote

SEPARATOR = ":"


def _encoded(part: str) -> str:
    return quote(part, safe="")


def _workflow_id(kind: str, *parts: str) -> str:
    return SEPARATOR.join([kind, *(_encoded(part) for part in parts)])


def invoice_workflow_id(account_id: str, invoice_id: str) -> str:
    return _workflow_id("invoice", account_id, invoice_id)


def connection_workflow_id(account_id: str) -> str:
    return _workflow_id("connection", account_id)


def realm_events_workflow_id(realm_id: str) -> str:
    return _workflow_id("quickbooks-events", realm_id)


def stored_or(stored: str | None, workflow_id: str) -> str:
    """The workflow id an invoice or connection row keeps, else the one its business key gives today.

    Workflows started before ids were made injective run on under their old ids (`invoice-{account}-{invoice}`,
    `connection-{account}`), which migration 0007 stored with their rows; they are reached there.
    """
    return stored or workflow_id


_KEY_NAMES = {
    "invoice": ("account_id", "invoice_id"),
    "connection": ("account_id",),
    "quickbooks-events": ("realm_id",),
}


def business_keys(workflow_id: str) -> dict[str, str]:
    """The business keys a workflow id was built from (`{"account_id": ..., "invoice_id": ...}`); {} for an id
    of another form (older ids, `invoice-{account}-{invoice}`, cannot be split without ambiguity)."""
    kind, _, rest = workflow_id.partition(SEPARATOR)
    names = _KEY_NAMES.get(kind)
    parts = rest.split(SEPARATOR) if rest else []
    if names is None or len(parts) != len(names):
        return {}
    return {name: unquote(part) for name, part in zip(names, parts, strict=True)}


def platform_event_redelivery_workflow_id(event_id: str) -> str:
    return _workflow_id("platform-event-redelivery", event_id)
