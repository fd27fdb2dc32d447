"""Settings: development defaults work locally and are refused in production."""

import base64
import os

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from settings import Settings
from tests.unit.test_encryption_keys import production


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
        Settings(
            _env_file=None,
            app_env="production",
            api_token="a" * 32,
            qbo_client_secret="b" * 32,
            qbo_webhook_verifier_token="c" * 32,
            token_encryption_key=Fernet.generate_key().decode(),
            platform_events_secret="e" * 32,
            payload_encryption_key=base64.b64encode(os.urandom(32)).decode(),
        )


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
    sandbox = Settings(
        _env_file=None, qbo_environment="sandbox", qbo_browser_base_url="http://localhost:8900"
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
