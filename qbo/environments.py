"""Where Intuit's OAuth and Accounting endpoints live for each environment (emulator, sandbox, production)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Environment = Literal["emulator", "sandbox", "production"]

# Intuit's OAuth hosts are the same for sandbox and production; only the keys differ (reference §1.1).
INTUIT_AUTHORIZE_URL = "https://appcenter.intuit.com/connect/oauth2"
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"  # noqa: S105 - a URL
INTUIT_REVOKE_URL = "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"
SANDBOX_API_BASE_URL = "https://sandbox-quickbooks.api.intuit.com"
PRODUCTION_API_BASE_URL = "https://quickbooks.api.intuit.com"


@dataclass(frozen=True)
class QboEndpoints:
    """The four URLs the engine needs; `api_base_url` is the host the `/v3/company/...` paths hang off."""

    authorize_url: str
    token_url: str
    revoke_url: str
    api_base_url: str


def endpoints_for(environment: Environment, base_url: str | None = None) -> QboEndpoints:
    """The endpoints of an environment; `base_url` is the emulator's address and is ignored for Intuit."""
    if environment == "emulator":
        if not base_url:
            raise ValueError("the emulator environment needs its base URL")
        base = base_url.rstrip("/")
        return QboEndpoints(
            authorize_url=f"{base}/connect/oauth2",
            token_url=f"{base}/oauth2/v1/tokens/bearer",
            revoke_url=f"{base}/v2/oauth2/tokens/revoke",
            api_base_url=base,
        )
    if environment == "sandbox":
        api = SANDBOX_API_BASE_URL
    elif environment == "production":
        api = PRODUCTION_API_BASE_URL
    else:
        raise ValueError(f"unknown QuickBooks environment {environment!r}")
    return QboEndpoints(
        authorize_url=INTUIT_AUTHORIZE_URL,
        token_url=INTUIT_TOKEN_URL,
        revoke_url=INTUIT_REVOKE_URL,
        api_base_url=api,
    )
