"""Service and per-account API tokens.

The platform's backend holds API_TOKEN (the service token), which may act for any account. Each account also has
its own token, derived from the service token, that works for that account only. An account token names its
account (`qbs_acct_<base64url(account id)>.<base64url(HMAC)>`), so a token can be told apart as valid for another
account (403) or not valid at all (401) without a lookup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

ACCOUNT_TOKEN_PREFIX = "qbs_acct_"  # noqa: S105  (a prefix, not a secret)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _mac(service_token: str, account_id: str) -> bytes:
    return hmac.new(service_token.encode(), f"account:{account_id}".encode(), hashlib.sha256).digest()


def account_token(service_token: str, account_id: str) -> str:
    return f"{ACCOUNT_TOKEN_PREFIX}{_b64(account_id.encode())}.{_b64(_mac(service_token, account_id))}"


def is_service_token(service_token: str, presented: str) -> bool:
    return hmac.compare_digest(service_token.encode(), presented.encode())


def account_of_token(service_token: str, presented: str) -> str | None:
    """The account a genuine account token belongs to; None for anything else."""
    if not presented.startswith(ACCOUNT_TOKEN_PREFIX) or presented.count(".") != 1:
        return None
    named, _ = presented[len(ACCOUNT_TOKEN_PREFIX) :].split(".")
    try:
        account_id = base64.urlsafe_b64decode(named + "=" * (-len(named) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    expected = account_token(service_token, account_id)
    return account_id if hmac.compare_digest(expected.encode(), presented.encode()) else None
