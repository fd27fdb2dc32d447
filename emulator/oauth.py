"""Intuit's OAuth 2.0 server: authorization page, token endpoint, revocation, and bearer-token checks."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from emulator import errors, pages
from emulator.clock import Clock, add_years
from emulator.config import EmulatorConfig
from emulator.errors import OAuthError
from emulator.store import AccessToken, AuthCode, Grant, RefreshToken, Store

if TYPE_CHECKING:
    from emulator.context import Emulator

ACCESS_TOKEN_SECONDS = 3600
REFRESH_TOKEN_DAYS = 100  # rolling: every refresh issues a token good for another 100 days
SUPERSEDED_GRACE = timedelta(hours=24)
CODE_SECONDS = 600
HARD_EXPIRY_YEARS = 5
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"

KNOWN_SCOPES = {
    "com.intuit.quickbooks.accounting",
    "com.intuit.quickbooks.payment",
    "com.intuit.quickbooks.payroll",
    "com.intuit.quickbooks.payroll.timetracking",
    "com.intuit.quickbooks.payroll.benefits",
    "openid",
    "profile",
    "email",
    "phone",
    "address",
}

_JWE_HEADER = base64.urlsafe_b64encode(b'{"enc":"A128CBC-HS256","alg":"dir"}').rstrip(b"=").decode()
_ALPHANUMERIC = string.ascii_letters + string.digits


def _b64(size: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(size)).rstrip(b"=").decode()


def new_access_token() -> str:
    """Opaque, but shaped like Intuit's compact JWE (empty key part, as with "alg":"dir")."""
    return f"{_JWE_HEADER}..{_b64(16)}.{_b64(640)}.{_b64(16)}"


def new_refresh_token() -> str:
    return "AB11" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(46))


def new_code() -> str:
    return "AB11" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(46))


def intuit_tid() -> str:
    """Intuit's transaction id header value, e.g. 1-628f0be4-19ed5ea63980105102b16b1e."""
    return f"1-{secrets.token_hex(4)}-{secrets.token_hex(12)}"


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@dataclass
class ApiAuthFailure:
    """Why the gateway refuses a bearer token: 401 (bad token) or 403 (wrong company)."""

    status: int
    detail: str


class OAuthService:
    """Codes, grants and tokens. A grant is one consent; revoking any of its tokens revokes all of them."""

    def __init__(
        self, store: Store, config: EmulatorConfig, clock: Clock, on_change: Callable[[], None]
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.on_change = on_change
        self._refresh_by_grant: dict[str, list[str]] = {}
        self._access_by_grant: dict[str, list[str]] = {}
        for token in store.oauth.refresh_tokens.values():
            self._refresh_by_grant.setdefault(token.grant_id, []).append(token.value)
        for access in store.oauth.access_tokens.values():
            self._access_by_grant.setdefault(access.grant_id, []).append(access.value)

    # --- authorization --------------------------------------------------------------------------------

    def authorize_request_error(self, client_id: str | None, redirect_uri: str | None) -> str | None:
        """Problems that must be shown on Intuit's page rather than sent to an unverified redirect_uri."""
        if not client_id or client_id != self.config.client_id:
            return "The client_id is not registered with this QuickBooks emulator."
        if not redirect_uri or redirect_uri not in self.config.redirect_uris:
            return "The redirect_uri is not one of the app's registered redirect URIs."
        return None

    def redirect_error(self, response_type: str | None, scope: str | None) -> str | None:
        """Problems reported back to the (verified) redirect_uri, as the OAuth spec says."""
        if response_type != "code":
            return "unsupported_response_type"
        scopes = (scope or "").split()
        if not scopes or any(value not in KNOWN_SCOPES for value in scopes):
            return "invalid_scope"
        return None

    def approve(self, client_id: str, redirect_uri: str, scope: str, state: str | None, realm_id: str) -> str:
        """What clicking "Authorize" does: a single-use code, sent back with state and realmId."""
        now = self.clock.now()
        self._prune_codes(now)
        code = AuthCode(
            value=new_code(),
            client_id=client_id,
            redirect_uri=redirect_uri,
            realm_id=realm_id,
            scope=scope,
            issued_at=now,
            expires_at=now + timedelta(seconds=CODE_SECONDS),
        )
        self.store.oauth.codes[code.value] = code
        self.on_change()
        params = {"code": code.value}
        if state is not None:
            params["state"] = state
        params["realmId"] = realm_id
        return with_query(redirect_uri, params)

    @staticmethod
    def denied(redirect_uri: str, state: str | None, error: str = "access_denied") -> str:
        params = {"error": error}
        if state is not None:
            params["state"] = state
        return with_query(redirect_uri, params)

    # --- token endpoint -------------------------------------------------------------------------------

    def authenticate_client(self, authorization: str | None, form: dict[str, str]) -> str:
        """HTTP Basic (what Intuit's clients use) or client_secret_post; never both at once."""
        basic: tuple[str, str] | None = None
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise OAuthError("invalid_client", status=401) from None
            client_id, _, secret = decoded.partition(":")
            basic = (client_id, secret)
        if basic is not None and form.get("client_secret"):
            raise OAuthError("invalid_request", "Use one client authentication method, not two.")
        if basic is not None and form.get("client_id") and form["client_id"] != basic[0]:
            raise OAuthError("invalid_client", status=401)
        credentials = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        ok_id = hmac.compare_digest(credentials[0].encode(), self.config.client_id.encode())
        ok_secret = hmac.compare_digest(credentials[1].encode(), self.config.client_secret.encode())
        if not credentials[0] or not (ok_id and ok_secret):
            raise OAuthError("invalid_client", status=401)
        return credentials[0]

    def exchange_code(
        self, client_id: str, code_value: str | None, redirect_uri: str | None, hard: bool
    ) -> dict[str, Any]:
        if not code_value:
            raise OAuthError("invalid_request", "The code parameter is missing.")
        if not redirect_uri:
            raise OAuthError("invalid_request", "The redirect_uri parameter is missing.")
        now = self.clock.now()
        code = self.store.oauth.codes.get(code_value)
        if code is None or code.client_id != client_id:
            raise OAuthError("invalid_grant", "Token invalid")
        if code.used_at is not None:
            # A replayed code revokes what it issued (RFC 6749 §4.1.2); Intuit warns of exactly this.
            if code.grant_id is not None:
                self._revoke_grant(code.grant_id, now)
            raise OAuthError("invalid_grant", "Token invalid")
        if now >= code.expires_at:
            raise OAuthError("invalid_grant", "Token expired")
        if redirect_uri != code.redirect_uri:
            raise OAuthError("invalid_grant", "Redirect URI does not match the one used for authorization")
        grant = Grant(
            id=uuid.uuid4().hex,
            client_id=client_id,
            realm_id=code.realm_id,
            scope=code.scope,
            user_email="",
            authorized_at=now,
            hard_expires_at=add_years(now, HARD_EXPIRY_YEARS),
        )
        self.store.oauth.grants[grant.id] = grant
        code.used_at = now
        code.grant_id = grant.id
        return self._issue(grant, now, hard)

    def refresh(self, client_id: str, token_value: str | None, hard: bool) -> dict[str, Any]:
        if not token_value:
            raise OAuthError("invalid_request", "The refresh_token parameter is missing.")
        now = self.clock.now()
        token = self.store.oauth.refresh_tokens.get(token_value)
        if token is None:
            raise OAuthError("invalid_grant", "Token invalid")
        grant = self.store.oauth.grants[token.grant_id]
        if grant.client_id != client_id:
            raise OAuthError("invalid_grant", "Incorrect Token type or clientID")
        if grant.revoked_at is not None:
            raise OAuthError("invalid_grant", "Token has been expired or revoked.")
        if now >= grant.hard_expires_at:
            raise OAuthError("invalid_grant", "Token has been expired or revoked.")
        if now >= token.expires_at:
            raise OAuthError("invalid_grant", "Token has been expired or revoked.")
        if token.superseded_at is not None and now >= token.superseded_at + SUPERSEDED_GRACE:
            raise OAuthError("invalid_grant", "Token invalid")
        return self._issue(grant, now, hard)

    def _issue(self, grant: Grant, now: datetime, hard: bool) -> dict[str, Any]:
        self._prune_grant_tokens(grant.id, now)
        access = AccessToken(
            value=new_access_token(),
            grant_id=grant.id,
            issued_at=now,
            expires_at=now + timedelta(seconds=ACCESS_TOKEN_SECONDS),
        )
        self.store.oauth.access_tokens[access.value] = access
        self._access_by_grant.setdefault(grant.id, []).append(access.value)
        # Every earlier refresh token of this grant now has 24 hours left.
        for value in self._refresh_by_grant.get(grant.id, []):
            previous = self.store.oauth.refresh_tokens[value]
            if previous.superseded_at is None:
                previous.superseded_at = now
        refresh = RefreshToken(
            value=new_refresh_token(),
            grant_id=grant.id,
            issued_at=now,
            expires_at=min(now + timedelta(days=REFRESH_TOKEN_DAYS), grant.hard_expires_at),
        )
        self.store.oauth.refresh_tokens[refresh.value] = refresh
        self._refresh_by_grant.setdefault(grant.id, []).append(refresh.value)
        self.on_change()
        body: dict[str, Any] = {
            "token_type": "bearer",
            "access_token": access.value,
            "expires_in": ACCESS_TOKEN_SECONDS,
            "refresh_token": refresh.value,
            "x_refresh_token_expires_in": int((refresh.expires_at - now).total_seconds()),
        }
        if hard:
            body["x_refresh_token_hard_expires_in"] = int((grant.hard_expires_at - now).total_seconds())
        return body

    def _prune_grant_tokens(self, grant_id: str, now: datetime) -> None:
        """Forget tokens that can never work again, so state stays small however often tokens rotate."""
        keep_refresh = []
        for value in self._refresh_by_grant.get(grant_id, []):
            token = self.store.oauth.refresh_tokens[value]
            dead = now >= token.expires_at or (
                token.superseded_at is not None and now >= token.superseded_at + SUPERSEDED_GRACE
            )
            if dead:
                del self.store.oauth.refresh_tokens[value]
            else:
                keep_refresh.append(value)
        self._refresh_by_grant[grant_id] = keep_refresh
        keep_access = []
        for value in self._access_by_grant.get(grant_id, []):
            access = self.store.oauth.access_tokens[value]
            if now >= access.expires_at + timedelta(days=1):
                del self.store.oauth.access_tokens[value]
            else:
                keep_access.append(value)
        self._access_by_grant[grant_id] = keep_access

    def _prune_codes(self, now: datetime) -> None:
        expired = [
            value
            for value, code in self.store.oauth.codes.items()
            if now >= code.expires_at + timedelta(days=1)
        ]
        for value in expired:
            del self.store.oauth.codes[value]

    # --- revocation -----------------------------------------------------------------------------------

    def revoke(self, client_id: str, token_value: str | None) -> None:
        if not token_value:
            raise OAuthError("invalid_request", "The token parameter is missing.")
        refresh = self.store.oauth.refresh_tokens.get(token_value)
        access = self.store.oauth.access_tokens.get(token_value)
        grant_id = refresh.grant_id if refresh else access.grant_id if access else None
        if grant_id is None:
            raise OAuthError("invalid_request", "Token invalid")
        grant = self.store.oauth.grants[grant_id]
        if grant.client_id != client_id:
            raise OAuthError("invalid_request", "Incorrect Token type or clientID")
        self._revoke_grant(grant_id, self.clock.now())

    def _revoke_grant(self, grant_id: str, now: datetime) -> None:
        grant = self.store.oauth.grants[grant_id]
        if grant.revoked_at is None:
            grant.revoked_at = now
            self.on_change()

    def revoke_realm(self, realm_id: str) -> int:
        """A user disconnecting the app inside QuickBooks: every grant for the company dies."""
        now = self.clock.now()
        revoked = 0
        for grant in self.store.oauth.grants.values():
            if grant.realm_id == realm_id and grant.revoked_at is None:
                self._revoke_grant(grant.id, now)
                revoked += 1
        return revoked

    def ever_authorized(self, realm_id: str) -> bool:
        return any(
            grant.realm_id == realm_id and grant.client_id == self.config.client_id
            for grant in self.store.oauth.grants.values()
        )

    # --- API gateway ----------------------------------------------------------------------------------

    def check_bearer(self, authorization: str | None, realm_id: str) -> ApiAuthFailure | Grant:
        if not authorization or not authorization.lower().startswith("bearer "):
            return ApiAuthFailure(401, "Authorization header missing or not a bearer token")
        value = authorization[7:].strip()
        access = self.store.oauth.access_tokens.get(value)
        if access is None:
            if len(value) < 32 or len(value) > 4096:
                return ApiAuthFailure(401, "Malformed bearer token: too short or too long")
            return ApiAuthFailure(401, "Token invalid")
        grant = self.store.oauth.grants[access.grant_id]
        if grant.revoked_at is not None:
            return ApiAuthFailure(401, f"Token revoked: {value[:10]}…")
        if self.clock.now() >= access.expires_at:
            return ApiAuthFailure(401, f"Token expired: {value[:10]}…")
        if grant.realm_id != realm_id:
            return ApiAuthFailure(403, "The access token was not issued for this company (realmId).")
        return grant

    def describe(self, realm_id: str) -> list[dict[str, Any]]:
        """Grants of a company for the admin API: counts and times, never token values."""
        now = self.clock.now()
        result = []
        for grant in self.store.oauth.grants.values():
            if grant.realm_id != realm_id:
                continue
            refresh = [self.store.oauth.refresh_tokens[v] for v in self._refresh_by_grant.get(grant.id, [])]
            access = [self.store.oauth.access_tokens[v] for v in self._access_by_grant.get(grant.id, [])]
            live = grant.revoked_at is None and now < grant.hard_expires_at
            usable_refresh = [
                t
                for t in refresh
                if live
                and now < t.expires_at
                and (t.superseded_at is None or now < t.superseded_at + SUPERSEDED_GRACE)
            ]
            latest = max(refresh, key=lambda t: t.issued_at, default=None)
            result.append(
                {
                    "id": grant.id,
                    "client_id": grant.client_id,
                    "scope": grant.scope,
                    "authorized_at": grant.authorized_at.isoformat(),
                    "hard_expires_at": grant.hard_expires_at.isoformat(),
                    "revoked": grant.revoked_at is not None,
                    "revoked_at": grant.revoked_at.isoformat() if grant.revoked_at else None,
                    "access_tokens": len(access),
                    "active_access_tokens": sum(1 for t in access if live and now < t.expires_at),
                    "refresh_tokens": len(refresh),
                    "active_refresh_tokens": len(usable_refresh),
                    "latest_refresh_token_expires_at": latest.expires_at.isoformat() if latest else None,
                    "latest_access_token_expires_at": (
                        max(t.expires_at for t in access).isoformat() if access else None
                    ),
                }
            )
        return result


# --- HTTP ---------------------------------------------------------------------------------------------------


def _oauth_json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        content=errors.dump(body),
        status_code=status,
        media_type="application/json;charset=utf-8",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _oauth_error(error: OAuthError) -> Response:
    return _oauth_json(error.body(), error.status)


def router(emulator: Emulator) -> APIRouter:
    routes = APIRouter()
    service = emulator.oauth

    @routes.get("/.well-known/openid_configuration", response_model=None)
    @routes.get("/.well-known/openid_configuration/", response_model=None)
    @routes.get("/.well-known/openid_sandbox_configuration", response_model=None)
    @routes.get("/.well-known/openid_sandbox_configuration/", response_model=None)
    async def discovery(request: Request) -> Response:
        """Intuit's discovery document (underscore spelling included), pointing at this emulator."""
        base = str(request.base_url).rstrip("/")
        return _oauth_json(
            {
                "issuer": f"{base}/op/v1",
                "authorization_endpoint": f"{base}/connect/oauth2",
                "token_endpoint": f"{base}/oauth2/v1/tokens/bearer",
                "revocation_endpoint": f"{base}/v2/oauth2/tokens/revoke",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile", "address", "phone"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
            }
        )

    @routes.get("/connect/oauth2", response_model=None)
    async def authorization_page(request: Request) -> Response:
        params = request.query_params
        problem = service.authorize_request_error(params.get("client_id"), params.get("redirect_uri"))
        if problem is not None:
            return HTMLResponse(pages.error_page("invalid_request", problem), status_code=400)
        redirect_uri = str(params["redirect_uri"])
        error = service.redirect_error(params.get("response_type"), params.get("scope"))
        if error is not None:
            return RedirectResponse(service.denied(redirect_uri, params.get("state"), error), status_code=302)
        companies = [
            {"realm_id": c.realm_id, "name": c.name}
            for c in sorted(emulator.store.companies.values(), key=lambda c: c.created_at)
        ]
        html = pages.authorize_page(
            client_id=params["client_id"],
            redirect_uri=redirect_uri,
            response_type="code",
            scope=params.get("scope", ""),
            scopes=params.get("scope", "").split(),
            state=params.get("state", ""),
            companies=companies,
            user_email="admin@example.com",
            default_company_name=f"Sandbox Company US {len(companies) + 1}",
        )
        return HTMLResponse(html)

    @routes.post("/connect/oauth2", response_model=None)
    async def authorization_decision(request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        problem = service.authorize_request_error(form.get("client_id"), form.get("redirect_uri"))
        if problem is not None:
            return HTMLResponse(pages.error_page("invalid_request", problem), status_code=400)
        redirect_uri = form["redirect_uri"]
        state = form.get("state") or None
        error = service.redirect_error(form.get("response_type"), form.get("scope"))
        if error is not None:
            return RedirectResponse(service.denied(redirect_uri, state, error), status_code=302)
        if form.get("action") != "authorize":
            return RedirectResponse(service.denied(redirect_uri, state), status_code=302)
        realm_id = form.get("realm_id", "new")
        if realm_id == "new" or realm_id not in emulator.store.companies:
            name = form.get("company_name", "").strip() or "Sandbox Company US"
            realm_id = emulator.create_company(name).realm_id
        url = service.approve(form["client_id"], redirect_uri, form["scope"], state, realm_id)
        return RedirectResponse(url, status_code=302)

    @routes.post("/oauth2/v1/tokens/bearer", response_model=None)
    async def token(request: Request) -> Response:
        annotations: dict[str, Any] = request.scope.setdefault("qbo", {})
        content_type = request.headers.get("content-type", "")
        if (
            "application/x-www-form-urlencoded" not in content_type
            and "multipart/form-data" not in content_type
        ):
            return _oauth_error(OAuthError("invalid_request", "The request must be form-encoded."))
        form = {key: str(value) for key, value in (await request.form()).items()}
        grant_type = form.get("grant_type")
        annotations["grant_type"] = grant_type
        hard = request.headers.get(HARD_EXPIRY_HEADER, "").lower() == "true"
        try:
            client_id = service.authenticate_client(request.headers.get("authorization"), form)
            if not grant_type:
                raise OAuthError("invalid_request", "The grant_type parameter is missing.")
            if grant_type == "authorization_code":
                body = service.exchange_code(client_id, form.get("code"), form.get("redirect_uri"), hard)
            elif grant_type == "refresh_token":
                body = service.refresh(client_id, form.get("refresh_token"), hard)
            else:
                raise OAuthError("unsupported_grant_type", f"Grant type {grant_type} is not supported.")
        except OAuthError as error:
            return _oauth_error(error)
        return _oauth_json(body)

    @routes.post("/v2/oauth2/tokens/revoke", response_model=None)
    async def revoke(request: Request) -> Response:
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        token_value: str | None = None
        form: dict[str, str] = {}
        if "json" in content_type:
            try:
                parsed = json.loads(raw or b"{}")
            except ValueError:
                return _oauth_error(OAuthError("invalid_request", "The body is not valid JSON."))
            if isinstance(parsed, dict) and isinstance(parsed.get("token"), str):
                token_value = parsed["token"]
        else:
            form = {key: str(value) for key, value in (await request.form()).items()}
            token_value = form.get("token")
        try:
            client_id = service.authenticate_client(request.headers.get("authorization"), form)
            service.revoke(client_id, token_value)
        except OAuthError as error:
            return _oauth_error(error)
        return Response(status_code=200)

    return routes
