"""How the Temporal connection settings (Temporal's own environment-config names) are checked and read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.service import TLSConfig

from settings import Settings
from temporal_support import connect_config
from tests.unit.test_encryption_keys import production


def configured(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_the_local_dev_server_is_plaintext_by_default() -> None:
    config = connect_config(configured())
    assert config["target_host"] == "127.0.0.1:7233"
    assert "tls" not in config and "api_key" not in config


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"temporal_tls_client_cert_path": "/run/secrets/worker.pem"}, "TEMPORAL_TLS_CLIENT_KEY_* too"),
        ({"temporal_tls_client_key_data": "-----BEGIN PRIVATE KEY-----"}, "TEMPORAL_TLS_CLIENT_CERT_* too"),
        (
            {
                "temporal_tls_server_ca_cert_path": "/ca.pem",
                "temporal_tls_server_ca_cert_data": "-----BEGIN CERTIFICATE-----",
            },
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH or TEMPORAL_TLS_SERVER_CA_CERT_DATA, not both",
        ),
        ({"temporal_tls": "false", "temporal_api_key": "key"}, "would travel in plaintext"),
        ({"temporal_tls": "false", "temporal_tls_server_name": "t.example"}, "would travel in plaintext"),
    ],
)
def test_incoherent_tls_settings_are_refused_in_words(values: dict[str, str], words: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(words)) as refused:
        configured(**values)
    assert "BEGIN" not in str(refused.value)


def test_an_empty_value_is_no_value() -> None:
    # A compose file passes unset variables on as empty strings.
    settings = configured(temporal_api_key="", temporal_tls="", temporal_tls_client_cert_path=" ")
    assert settings.temporal_api_key is None and not settings.temporal_uses_tls


def test_an_api_key_turns_tls_on_and_stays_secret() -> None:
    settings = configured(temporal_address="ns.acct.tmprl.cloud:7233", temporal_api_key="cloud-key-123")
    config = connect_config(settings)
    assert config["api_key"] == "cloud-key-123" and config["tls"] is True
    assert "cloud-key-123" not in repr(settings)


def test_mtls_reads_certificates_from_files_or_inline_data(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_bytes(b"CERT FROM FILE")
    settings = configured(
        temporal_tls_client_cert_path=str(tmp_path / "client.pem"),
        temporal_tls_client_key_data="KEY INLINE",
        temporal_tls_server_name="temporal.internal",
    )
    tls = connect_config(settings)["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key, tls.domain) == (
        b"CERT FROM FILE",
        b"KEY INLINE",
        "temporal.internal",
    )
    assert tls.server_root_ca_cert is None  # the system's roots (Temporal Cloud)


def test_production_refuses_plaintext_beyond_loopback_unless_allowed() -> None:
    with pytest.raises(ValidationError, match="needs TLS to a Temporal beyond loopback"):
        production(temporal_address="temporal.internal:7233")
    assert production(temporal_address="127.0.0.1:7233").temporal_uses_tls is False
    assert production(temporal_address="[::1]:7233").temporal_uses_tls is False
    assert production(temporal_address="temporal:7233", temporal_allow_plaintext="true")
    assert production(temporal_address="ns.acct.tmprl.cloud:7233", temporal_api_key="k").temporal_uses_tls
    assert production(temporal_address="temporal.internal:7233", temporal_tls="true").temporal_uses_tls
