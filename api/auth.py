"""Service and per-account API tokens.

The platform's backend holds API_TOKEN (the service token), which may act for any account. Each account also has
its own token, derived from the service token, that works for that account only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

ACCOUNT_TOKEN_PREFIX = "qbs_acct_"  # noqa: S105  (a prefix, not a secret)


def account_token(service_token: str, account_id: str) -> str:
    digest = hmac.new(service_token.encode(), f"account:{account_id}".encode(), hashlib.sha256).digest()
    return ACCOUNT_TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def is_service_token(service_token: str, presented: str) -> bool:
    return hmac.compare_digest(service_token.encode(), presented.encode())


def is_account_token(service_token: str, account_id: str, presented: str) -> bool:
    return hmac.compare_digest(account_token(service_token, account_id).encode(), presented.encode())
