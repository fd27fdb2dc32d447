"""Workflow ids, derived from business keys."""


def invoice_workflow_id(account_id: str, invoice_id: str) -> str:
    return f"invoice-{account_id}-{invoice_id}"


def connection_workflow_id(account_id: str) -> str:
    return f"connection-{account_id}"


def realm_events_workflow_id(realm_id: str) -> str:
    return f"quickbooks-events-{realm_id}"
