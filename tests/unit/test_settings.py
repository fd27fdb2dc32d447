"""Settings: development defaults work locally and are refused in production."""

import base64
import os

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from settings import Settings


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
