"""Which QuickBooks company a fresh authorization is for: its CompanyInfo, read with the new access token.

Intuit's callback names the company in `realmId`, a query parameter the user's browser can edit. The tokens
say nothing about it, so the only proof is a call to that company with them: Intuit answers 403 (3100) for
a token of another company, and 401 (3200) for one it does not know. Only those answers say "these tokens do not
open that company"; any other (a 400, a 404, a refused minorversion, a 5xx, none) says nothing about it, and the
callback must not act as if it did: revoking the tokens would disconnect the app from that company for every
other account of ours on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from qbo.client import QboClient
from qbo.errors import QboAuthenticationError, QboAuthorizationError, QboError
from qbo.limits import RealmLimiter

# The user's browser waits on the callback: a company throttled for longer than this is "try again later".
VERIFY_MAX_THROTTLE_WAIT = 10.0
# Intuit's AuthorizationFault and AuthenticationFault: "not these tokens", whatever HTTP status carries them.
_REFUSED_TOKEN_CODES = frozenset({"3100", "3200"})


class CompanyNotVerified(Exception):
    """QuickBooks refused the new tokens for the company the callback named (401, 403, fault 3100 or 3200)."""


class VerificationUnavailable(Exception):
    """QuickBooks gave no answer about the company (no answer, throttled, 5xx, or any other error): nothing is
    known about it."""


@dataclass(frozen=True)
class VerifiedCompany:
    realm_id: str
    name: str | None


class _OneAccessToken:
    """A TokenSource holding one just-issued access token: a 401 for it is an answer, not a reason to refresh."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def access_token(self) -> str:
        return self._token

    async def refresh_after_unauthorized(self, rejected: str) -> str:
        raise QboAuthenticationError("QuickBooks refused the access token it has just issued", status=401)


class CompanyVerifier:
    """Reads a company's CompanyInfo with a new access token, within the company's request limits."""

    def __init__(
        self,
        *,
        api_base_url: str,
        http: httpx.AsyncClient,
        limiter: RealmLimiter,
        minor_version: int,
        timeout: float,
    ) -> None:
        self._api_base_url = api_base_url
        self._http = http
        self._limiter = limiter
        self._minor_version = minor_version
        self._timeout = timeout

    async def verify(self, realm_id: str, access_token: str) -> VerifiedCompany:
        """The company, if `access_token` opens `realm_id`; else CompanyNotVerified or VerificationUnavailable.

        `realm_id` must already be a plain digit string (the client refuses anything that could leave its path).
        """
        client = QboClient(
            realm_id=realm_id,
            api_base_url=self._api_base_url,
            tokens=_OneAccessToken(access_token),
            http=self._http,
            limiter=self._limiter,
            minor_version=self._minor_version,
            max_throttle_wait=VERIFY_MAX_THROTTLE_WAIT,
            timeout=self._timeout,
        )
        try:
            info = await client.company_info()
        except QboError as exc:
            if (
                isinstance(exc, QboAuthenticationError | QboAuthorizationError)
                or exc.code in _REFUSED_TOKEN_CODES
            ):
                raise CompanyNotVerified(
                    f"QuickBooks refused CompanyInfo (HTTP {exc.status}, code {exc.code})"
                ) from exc
            raise VerificationUnavailable(f"{type(exc).__name__} (HTTP {exc.status})") from exc
        name = info.get("CompanyName")
        return VerifiedCompany(
            realm_id=realm_id, name=(name.strip() or None) if isinstance(name, str) else None
        )
