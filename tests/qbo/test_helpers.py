"""Pure helpers of the client: query literals, idempotency keys, environment endpoints, server times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from qbo.client import parse_server_time, quote, request_id
from qbo.environments import endpoints_for
from qbo.oauth import TokenSet


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("Consulting", "'Consulting'"),
        ("Bill's Windsurf Shop", "'Bill\\'s Windsurf Shop'"),
        ("''", "'\\'\\''"),
        ("back\\slash", "'back\\\\slash'"),
        # A trailing backslash must not swallow the closing quote.
        ("ends with \\", "'ends with \\\\'"),
        ("\\'", "'\\\\\\''"),
        ("", "''"),
        ("100% café", "'100% café'"),
    ],
)
def test_quote_escapes_apostrophes_and_backslashes(value: str, literal: str) -> None:
    assert quote(value) == literal


def test_request_id_is_deterministic_and_fits_intuit_limits() -> None:
    first = request_id("invoice-acct1-inv9", "create-invoice")
    assert first == request_id("invoice-acct1-inv9", "create-invoice")
    # Batch requests allow only 36 characters; single calls 50.
    assert len(first) == 36
    assert len(request_id("x" * 500, "y" * 500)) == 36


def test_request_id_tells_different_parts_apart() -> None:
    ids = {
        request_id("a", "b"),
        request_id("b", "a"),
        request_id("a:b"),
        request_id("a", "b", ""),
        request_id("ab"),
    }
    assert len(ids) == 5
    with pytest.raises(ValueError, match="at least one"):
        request_id()


def test_emulator_endpoints_hang_off_its_base_url() -> None:
    endpoints = endpoints_for("emulator", "http://127.0.0.1:8900/")
    assert endpoints.authorize_url == "http://127.0.0.1:8900/connect/oauth2"
    assert endpoints.token_url == "http://127.0.0.1:8900/oauth2/v1/tokens/bearer"
    assert endpoints.revoke_url == "http://127.0.0.1:8900/v2/oauth2/tokens/revoke"
    assert endpoints.api_base_url == "http://127.0.0.1:8900"
    with pytest.raises(ValueError, match="base URL"):
        endpoints_for("emulator")


def test_intuit_endpoints_ignore_the_emulator_base_url() -> None:
    sandbox = endpoints_for("sandbox", "http://127.0.0.1:8900")
    production = endpoints_for("production")
    assert sandbox.api_base_url == "https://sandbox-quickbooks.api.intuit.com"
    assert production.api_base_url == "https://quickbooks.api.intuit.com"
    for endpoints in (sandbox, production):
        assert endpoints.authorize_url == "https://appcenter.intuit.com/connect/oauth2"
        assert endpoints.token_url == "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
        assert endpoints.revoke_url == "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"


def test_server_time_in_both_forms() -> None:
    assert parse_server_time("2015-12-23T12:56:06.196-08:00") == datetime(
        2015, 12, 23, 12, 56, 6, 196000, tzinfo=timezone(timedelta(hours=-8))
    )
    assert parse_server_time(1730024394085) == datetime(2024, 10, 27, 10, 19, 54, 85000, tzinfo=UTC)
    assert parse_server_time("yesterday") is None
    assert parse_server_time(None) is None


def test_token_set_lifetimes_and_a_repr_without_tokens() -> None:
    obtained = datetime(2026, 5, 5, 12, 0, tzinfo=UTC)
    tokens = TokenSet(
        access_token="eyJ-access-secret",
        refresh_token="AB11-refresh-secret",
        expires_in=3600,
        refresh_token_expires_in=8726400,
        refresh_token_hard_expires_in=156032154,
        obtained_at=obtained,
        realm_id="9341452732952867",
    )
    assert tokens.access_expires_at == obtained + timedelta(hours=1)
    assert tokens.refresh_expires_at == obtained + timedelta(seconds=8726400)
    assert tokens.refresh_hard_expires_at == obtained + timedelta(seconds=156032154)
    text = repr(tokens)
    assert "secret" not in text and "secret" not in str(tokens)
    assert "9341452732952867" in text
    without = TokenSet("a", "r", 3600, None, None, obtained)
    assert without.refresh_expires_at is None
    assert without.refresh_hard_expires_at is None
