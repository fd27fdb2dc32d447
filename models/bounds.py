"""Bounds on what clients may send: QuickBooks' own limits, and what the database and Temporal can hold."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import StringConstraints

# QuickBooks amounts (a line's Amount and UnitPrice, the invoice's TotalAmt) hold 15 digits in 10.5 format, so at
# most 10 digits before the point: 9,999,999,999.99 is the largest amount in cents. It bounds each unit price, each
# line and the whole invoice, and fits the BIGINT money columns many times over.
MAX_AMOUNT_CENTS = 999_999_999_999
MAX_AMOUNT_TEXT = "9,999,999,999.99"
# A line's Qty has the same 10.5 format.
MAX_QUANTITY = Decimal("9999999999.99999")
QUANTITY_DECIMAL_PLACES = 5

# List offsets: what every database's OFFSET takes (a larger one is a client's mistake, not a page).
MAX_LIST_OFFSET = 2**31 - 1

# Every JSON request body (Intuit's webhook has its own limit, WEBHOOK_MAX_BODY_BYTES).
MAX_JSON_BODY_BYTES = 1024 * 1024
# An invoice's snapshot travels in Temporal payloads (the workflow's input, each sync attempt's input, each
# continue-as-new). Temporal refuses payloads over 2 MB and warns from 512 KB; a quarter of a MiB, encoded as
# Temporal stores it, leaves room for the workflow's progress beside it (750 lines of 300 characters fit).
MAX_SNAPSHOT_BYTES = 256 * 1024

# Text a client sends may hold anything JSON can spell except NUL (U+0000), which PostgreSQL text cannot store.
# (Lone surrogates, which no database or encoder takes either, pydantic refuses as strings already.) A pattern,
# not a validator, so the JSON schema says it and the field's other constraints keep their own messages.
NO_NUL_PATTERN = r"^[^\x00]*$"
NO_NUL_MESSAGE = "must not contain NUL characters"

# Every string a client sends that may be stored or passed on: request bodies, query parameters. Add length limits
# with `Annotated[SafeStr, Field(...)]`; a field with a stricter pattern of its own (which must exclude NUL too)
# replaces this one.
SafeStr = Annotated[str, StringConstraints(pattern=NO_NUL_PATTERN)]
