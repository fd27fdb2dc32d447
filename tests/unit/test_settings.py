"""Settings: development defaults work locally and are refused in production."""

import base64
import os
import secrets

import pytest
from pydantic import ValidationError

from settings import (
    DEV_API_TOKEN,
    DEV_PLATFORM_EVENTS_SECRET,
    DEV_QBO_CLIENT_SECRET,
    DEV_WEBHOOK_VERIFIER_TOKEN,
    Settings,
)
from tests.unit.test_encryption_keys import events_secret, production

# What Intuit issues a sandbox app (anything but the placeholders and empty).
SANDBOX_KEYS = {
    "qbo_client_id": "ABsandboxClientId0123",
    "qbo_client_secret": "sandbox-client-secret",
    "qbo_webhook_verifier_token": "sandbox-verifier",
}


def configured(**values: str) -> Settings:
    """Settings from these values only (no `.env`)."""
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_development_defaults_need_no_environment() -> None:
    settings = Settings(_env_file=None)
    assert settings.qbo_environment == "emulator"
    assert settings.database_url.startswith("sqlite:///")


def test_production_refuses_development_secrets() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Settings(_env_file=None, app_env="production", qbo_environment="production")
    message = str(excinfo.value)
    for name in ("API_TOKEN", "QBO_CLIENT_SECRET", "TOKEN_ENCRYPTION_KEY", "QBO_WEBHOOK_VERIFIER_TOKEN"):
        assert name in message
    assert "dev-client-secret" not in message


def test_production_refuses_the_emulator() -> None:
    with pytest.raises(ValidationError, match="emulator"):
        production(qbo_environment="emulator")


WEAK_SECRETS = {
    "empty": "",
    "one character": "a",
    "blank": " " * 40,
    "short": "Zq8#kP2m-short",
    "one character repeated": "z" * 40,
    "two characters alternating": "Zq" * 20,
    "a word repeated": "Tr0ub4dor&" * 4,
    "a run of letters": "abcdefghijklmnopqrstuvwxyz0123456789",
    "a run of digits": "1234567890" * 4,
}


@pytest.mark.parametrize("setting", ["api_token", "codec_auth_token"])
@pytest.mark.parametrize("weak", list(WEAK_SECRETS.values()), ids=list(WEAK_SECRETS))
def test_production_refuses_weak_secrets_of_its_own(setting: str, weak: str) -> None:
    # Account tokens are HMAC(API_TOKEN, ...): an empty or guessable API_TOKEN lets anyone forge them.
    with pytest.raises(ValidationError) as excinfo:
        production(**{setting: weak})
    message = str(excinfo.value)
    assert setting.upper() in message
    if len(weak.strip()) > 1:
        assert weak not in message and weak[:8] not in message


@pytest.mark.parametrize(
    ("setting", "dev"),
    [("api_token", DEV_API_TOKEN), ("platform_events_secret", DEV_PLATFORM_EVENTS_SECRET)],
)
def test_production_refuses_the_development_defaults_of_its_own_secrets(setting: str, dev: str) -> None:
    with pytest.raises(ValidationError, match=setting.upper()) as excinfo:
        production(**{setting: dev})
    assert dev not in str(excinfo.value)


def test_production_takes_real_secrets_of_any_usual_form() -> None:
    for size, make in ((32, secrets.token_urlsafe), (32, secrets.token_hex), (16, secrets.token_hex)):
        production(api_token=make(size), codec_auth_token=make(size))


@pytest.mark.parametrize(
    ("setting", "dev"),
    [
        ("qbo_client_secret", DEV_QBO_CLIENT_SECRET),
        ("qbo_webhook_verifier_token", DEV_WEBHOOK_VERIFIER_TOKEN),
    ],
)
def test_production_takes_intuits_secrets_as_issued_but_not_empty_or_the_placeholders(
    setting: str, dev: str
) -> None:
    # Their form is Intuit's: a short one is taken as it is.
    production(**{setting: "Intuit1"})
    for refused in ("", "   ", dev):
        with pytest.raises(ValidationError, match=setting.upper()) as excinfo:
            production(**{setting: refused})
        assert dev not in str(excinfo.value)


@pytest.mark.parametrize("app_env", ["development", "test"])
def test_intuits_production_needs_app_env_production(app_env: str) -> None:
    # Otherwise no production check applies: the development secrets would sign for real companies.
    for keys in ({}, SANDBOX_KEYS):
        with pytest.raises(ValidationError, match="needs APP_ENV=production"):
            configured(app_env=app_env, qbo_environment="production", **keys)
    with pytest.raises(ValidationError, match="needs APP_ENV=production"):
        production(app_env=app_env)


def test_sandbox_needs_intuits_keys_and_is_development_otherwise() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Settings(_env_file=None, qbo_environment="sandbox")
    message = str(excinfo.value)
    for name in ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_WEBHOOK_VERIFIER_TOKEN"):
        assert name in message
    assert DEV_QBO_CLIENT_SECRET not in message
    with pytest.raises(ValidationError, match="QBO_WEBHOOK_VERIFIER_TOKEN"):
        configured(qbo_environment="sandbox", **{**SANDBOX_KEYS, "qbo_webhook_verifier_token": ""})
    # A developer's machine: the service's own secrets keep their development defaults.
    sandbox = configured(qbo_environment="sandbox", **SANDBOX_KEYS)
    assert sandbox.api_token.get_secret_value() == DEV_API_TOKEN
    # A sandbox others can reach runs with APP_ENV=production, and gets every production check.
    assert production(qbo_environment="sandbox").qbo_environment == "sandbox"
    with pytest.raises(ValidationError, match="API_TOKEN"):
        production(qbo_environment="sandbox", api_token=DEV_API_TOKEN)


def test_secrets_do_not_show_in_repr() -> None:
    settings = Settings(_env_file=None, qbo_client_secret="super-secret-value")
    assert "super-secret-value" not in repr(settings)


def test_the_authorization_page_is_where_the_browser_reaches_the_emulator() -> None:
    from api.main import browser_facing_endpoints

    inside_docker = Settings(
        _env_file=None, qbo_base_url="http://emulator:8900", qbo_browser_base_url="http://localhost:8900"
    )
    endpoints = browser_facing_endpoints(inside_docker)
    assert endpoints.authorize_url == "http://localhost:8900/connect/oauth2"
    assert endpoints.token_url.startswith("http://emulator:8900/")
    sandbox = configured(
        qbo_environment="sandbox", qbo_browser_base_url="http://localhost:8900", **SANDBOX_KEYS
    )
    assert browser_facing_endpoints(sandbox).authorize_url == "https://appcenter.intuit.com/connect/oauth2"


def test_the_oauth_callback_must_be_on_the_public_host_and_https_in_production() -> None:
    with pytest.raises(ValidationError, match="QBO_REDIRECT_URI"):
        Settings(
            _env_file=None,
            api_public_url="http://127.0.0.1:8000",
            qbo_redirect_uri="http://localhost:8000/oauth/quickbooks/callback",
        )
    # Real secrets everywhere, so that the only thing refused is the plain-http public URL.
    with pytest.raises(ValidationError, match="needs an https API_PUBLIC_URL"):
        production(
            api_public_url="http://sync.example.com",
            qbo_redirect_uri="http://sync.example.com/oauth/quickbooks/callback",
        )
    with pytest.raises(ValidationError, match="OAUTH_LAUNCH_TTL_SECONDS"):
        Settings(_env_file=None, oauth_state_ttl_seconds=60, oauth_launch_ttl_seconds=120)


def whsec(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


@pytest.mark.parametrize(
    "value",
    [
        "dev-events-secret",  # not the Standard Webhooks form
        "whsec_",
        "whsec_not base64!",
        whsec(b"too short, 23 bytes....."[:23]),
        whsec(os.urandom(65)),
        f"{whsec(os.urandom(32))},plain-secret",  # every secret of a rotation is checked
    ],
    ids=["plain", "empty", "not base64", "23 bytes", "65 bytes", "second of two"],
)
def test_events_secrets_must_be_standard_webhooks_secrets_everywhere(value: str) -> None:
    with pytest.raises(ValidationError, match="PLATFORM_EVENTS_SECRET") as excinfo:
        configured(platform_events_secret=value)
    assert "not base64" not in str(excinfo.value) and "plain-secret" not in str(excinfo.value)


@pytest.mark.parametrize(
    "value",
    [
        DEV_PLATFORM_EVENTS_SECRET,
        f"{events_secret()},{DEV_PLATFORM_EVENTS_SECRET}",  # the development secret still signing
        whsec(b"a" * 32),
        whsec(bytes(range(8)) * 4),
    ],
    ids=["development", "development second", "one byte repeated", "a pattern"],
)
def test_production_refuses_development_or_patterned_events_secrets(value: str) -> None:
    with pytest.raises(ValidationError, match="PLATFORM_EVENTS_SECRET") as excinfo:
        production(platform_events_secret=value)
    assert value not in str(excinfo.value)


def test_production_takes_real_events_secrets_and_a_rotation() -> None:
    production(platform_events_secret=events_secret())
    production(platform_events_secret=f"{events_secret()}, {events_secret()}")
