"""Custom search attributes operators filter on in the Temporal Web UI (all Keyword)."""

from temporalio.common import SearchAttributeKey

ACCOUNT_ID = SearchAttributeKey.for_keyword("QboAccountId")
REALM_ID = SearchAttributeKey.for_keyword("QboRealmId")
INVOICE_NUMBER = SearchAttributeKey.for_keyword("QboInvoiceNumber")
SYNC_STATUS = SearchAttributeKey.for_keyword("QboSyncStatus")

ALL = (ACCOUNT_ID, REALM_ID, INVOICE_NUMBER, SYNC_STATUS)
