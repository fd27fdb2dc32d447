"""Intuit OAuth 2.0 for QuickBooks: the authorization URL, code exchange, refresh with rotation, revoke."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx

from qbo.environments import QboEndpoints
from qbo.errors import QboOAuthError, QboUnavailable, intuit_tid_of, oauth_error, redact
from qbo.metrics import OAUTH_CALLS

with warnings.catch_warnings():
    # authlib 1.9 nudges towards the httpx2 fork at import; the pinned httpx is what it supports here.
    import authlib.deprecate  # installs an "always" filter of its own, which ours must follow

    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.base_client import OAuthError as AuthlibOAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

logger = logging.getLogger(__name__)

ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
# HTTP Basic, as every Intuit SDK does (the discovery document also allows client_secret_post).
CLIENT_AUTH_METHOD = "client_secret_basic"
# Without this header Intuit leaves out x_refresh_token_hard_expires_in, the 5-year cap (reference §1.4).
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"
_TOKEN_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
    HARD_EXPIRY_HEADER: "true",
}

T = TypeVar("T")
# OAuth error codes counted by name in metrics (RFC 6749's, as Intuit uses them); any other is "error", so a
# label never holds whatever text an answer carried.
_COUNTED_OAUTH_ERRORS = frozenset(
    {"invalid_grant", "invalid_client", "invalid_request", "unauthorized_client", "invalid_response"}
)


@dataclass(frozen=True)
class TokenSet:
    """One token endpoint answer; lifetimes are seconds from `obtained_at` (UTC). Never logs its tokens."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    refresh_token_expires_in: int | None
    refresh_token_hard_expires_in: int | None
    obtained_at: datetime
    realm_id: str | None = None

    @property
    def access_expires_at(self) -> datetime:
        return self.obtained_at + timedelta(seconds=self.expires_in)

    @property
    def refresh_expires_at(self) -> datetime | None:
        if self.refresh_token_expires_in is None:
            return None
        return self.obtained_at + timedelta(seconds=self.refresh_token_expires_in)

    @property
    def refresh_hard_expires_at(self) -> datetime | None:
        if self.refresh_token_hard_expires_in is None:
            return None
        return self.obtained_at + timedelta(seconds=self.refresh_token_hard_expires_in)


def _optional_seconds(payload: Mapping[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def token_set_from_response(
    payload: Mapping[str, Any], *, obtained_at: datetime, realm_id: str | None = None
) -> TokenSet:
    """A TokenSet from the token endpoint's JSON; raises QboOAuthError when a token is missing."""
    access = payload.get("access_token")
    refresh = payload.get("refresh_token")
    if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
        raise QboOAuthError(
            "invalid_response", "The token response lacks an access or refresh token.", status=200
        )
    return TokenSet(
        access_token=access,
        refresh_token=refresh,
        # Intuit always says 3600; the fallback only guards against a missing field.
        expires_in=_optional_seconds(payload, "expires_in") or 3600,
        refresh_token_expires_in=_optional_seconds(payload, "x_refresh_token_expires_in"),
        refresh_token_hard_expires_in=_optional_seconds(payload, "x_refresh_token_hard_expires_in"),
        obtained_at=obtained_at,
        realm_id=realm_id,
    )


def _failure(response: httpx.Response) -> QboOAuthError:
    """The error for a non-200 token or revoke answer: the `error` field when there is one, else the status."""
    tid = intuit_tid_of(response.headers)
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        description = body.get("error_description")
        return oauth_error(
            body["error"],
            description if isinstance(description, str) else None,
            status=response.status_code,
            intuit_tid=tid,
        )
    if response.status_code == 401:
        return oauth_error("invalid_client", None, status=401, intuit_tid=tid)
    error = "server_error" if response.status_code >= 500 else "invalid_request"
    return QboOAuthError(
        error,
        f"HTTP {response.status_code} without an OAuth error body",
        status=response.status_code,
        intuit_tid=tid,
    )


def _raise_unless_ok(response: httpx.Response) -> httpx.Response:
    """authlib compliance hook: turn error answers into our exceptions before authlib parses them."""
    if response.status_code != 200:
        raise _failure(response)
    return response


class _TokenEndpointClient(AsyncOAuth2Client):  # type: ignore[misc]
    """authlib's client, sending through the engine's shared httpx client when one is given."""

    def __init__(self, *, shared: httpx.AsyncClient | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shared = shared

    async def post(self, url: Any, **kwargs: Any) -> httpx.Response:
        if self._shared is None:
            response: httpx.Response = await super().post(url, **kwargs)
            return response
        return await self._shared.post(url, **kwargs)


class QboOAuth:
    """Intuit's OAuth 2.0 endpoints for one app (client id and secret), through authlib.

    Client authentication is HTTP Basic, as in every Intuit SDK. Errors come out as InvalidGrant (the user
    must reconnect), InvalidClient (configuration) or QboOAuthError; no answer at all is QboUnavailable.
    Secrets and token values never appear in logs or exception texts.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        endpoints: QboEndpoints,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._client_id = client_id
        self._redirect_uri = redirect_uri
        self._endpoints = endpoints
        self._timeout = timeout
        self._clock = clock or (lambda: datetime.now(UTC))
        self._client = _TokenEndpointClient(
            shared=http,
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint_auth_method=CLIENT_AUTH_METHOD,
            revocation_endpoint_auth_method=CLIENT_AUTH_METHOD,
            redirect_uri=redirect_uri,
            timeout=timeout,
        )
        self._client.register_compliance_hook("access_token_response", _raise_unless_ok)
        self._client.register_compliance_hook("refresh_token_response", _raise_unless_ok)

    def __repr__(self) -> str:
        return f"QboOAuth(client_id={self._client_id!r}, token_url={self._endpoints.token_url!r})"

    async def aclose(self) -> None:
        """Closes authlib's own connection pool (used only when no shared httpx client was given)."""
        await self._client.aclose()

    def authorization_url(self, state: str, scope: str = ACCOUNTING_SCOPE) -> str:
        """Where to send the user's browser: Intuit's consent page, coming back to `redirect_uri`."""
        url, _ = self._client.create_authorization_url(
            self._endpoints.authorize_url, state=state, scope=scope, redirect_uri=self._redirect_uri
        )
        return str(url)

    async def exchange_code(self, code: str, realm_id: str | None = None) -> TokenSet:
        """Trades the callback's single-use code for tokens (exchange each code once only)."""
        obtained_at = self._clock()
        payload = await self._guard(
            "code exchange",
            self._client.fetch_token(
                self._endpoints.token_url,
                grant_type="authorization_code",
                code=code,
                redirect_uri=self._redirect_uri,
                headers=dict(_TOKEN_HEADERS),
                timeout=self._timeout,
            ),
        )
        return token_set_from_response(payload, obtained_at=obtained_at, realm_id=realm_id)

    async def refresh(self, refresh_token: str) -> TokenSet:
        """New tokens from the newest refresh token; the answer may carry a new refresh token: store it."""
        obtained_at = self._clock()
        payload = await self._guard(
            "refresh",
            self._client.refresh_token(
                self._endpoints.token_url,
                refresh_token=refresh_token,
                headers=dict(_TOKEN_HEADERS),
                timeout=self._timeout,
            ),
        )
        return token_set_from_response(payload, obtained_at=obtained_at)

    async def revoke(self, token: str) -> None:
        """Revokes a refresh (or access) token, disconnecting the app from the company.

        Intuit answers 200, or 400 when it cannot revoke; a token that is already invalid (revoked, expired,
        unknown) gets that 400. Its goal is met either way, so a 400 other than `invalid_client` counts as
        revoked and is only logged. Wrong app credentials raise InvalidClient; 5xx raises QboOAuthError.
        """
        # authlib form-encodes revocation bodies (RFC 7009); Intuit's endpoint documents JSON.
        auth = self._client.client_auth(CLIENT_AUTH_METHOD)
        response = await self._guard(
            "revoke",
            self._send(
                self._endpoints.revoke_url,
                content=json.dumps({"token": token}).encode(),
                headers={"Accept": "application/json", "Content-Type": "application/json"},
                auth=auth,
            ),
        )
        if response.status_code == 200:
            return
        failure = _failure(response)
        if response.status_code == 400 and failure.error != "invalid_client":
            logger.info("Intuit did not revoke the token (%s); treating it as already invalid", failure)
            return
        raise failure

    async def _send(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self._client.post(url, timeout=self._timeout, **kwargs)

    async def _guard(self, action: str, call: Awaitable[T]) -> T:
        """Runs one token-endpoint call, mapping authlib and transport failures to our exceptions."""
        operation = action.replace(" ", "_")
        try:
            result = await self._mapped(action, call)
        except QboOAuthError as exc:
            OAUTH_CALLS.labels(operation, exc.error if exc.error in _COUNTED_OAUTH_ERRORS else "error").inc()
            raise
        except QboUnavailable as exc:
            OAUTH_CALLS.labels(operation, "timeout" if exc.timed_out else "unreachable").inc()
            raise
        OAUTH_CALLS.labels(operation, "ok").inc()
        return result

    async def _mapped(self, action: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except QboOAuthError:
            raise
        except AuthlibOAuthError as exc:
            raise oauth_error(
                str(getattr(exc, "error", None) or "oauth_error"),
                getattr(exc, "description", None),
                status=200,
                intuit_tid=None,
            ) from None
        except httpx.TimeoutException as exc:
            raise QboUnavailable(f"Intuit's OAuth {action} timed out", timed_out=True) from exc
        except httpx.TransportError as exc:
            raise QboUnavailable(
                f"Intuit's OAuth {action} failed: {type(exc).__name__}: {redact(str(exc))}"
            ) from exc
        except ValueError as exc:
            # authlib raises ValueError for a 200 whose body is not a JSON object.
            raise QboOAuthError("invalid_response", f"Unreadable answer to the {action}", status=200) from exc
