"""Encryption keys: production takes only real keys, and workers take only payloads encrypted with them."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload

import temporal_support
from settings import DEV_PAYLOAD_ENCRYPTION_KEY, Settings
from temporal_support import EncryptionCodec, PayloadNotEncrypted, UndecryptablePayload, UnknownPayloadKey


def real_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def events_secret() -> str:
    """A real Standard Webhooks secret, as README's command makes one."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def production(**overrides: str) -> Settings:
    """Production settings with real secrets everywhere, except what the test overrides."""
    values = {
        "app_env": "production",
        "qbo_environment": "production",
        "api_public_url": "https://sync.example.com",
        "qbo_redirect_uri": "https://sync.example.com/oauth/quickbooks/callback",
        "api_token": secrets.token_urlsafe(32),
        "qbo_client_id": "ABcdEf0123IntuitIssuedClientId",
        "qbo_client_secret": secrets.token_urlsafe(30),
        "qbo_webhook_verifier_token": secrets.token_hex(18),
        "token_encryption_key": Fernet.generate_key().decode(),
        "platform_events_secret": events_secret(),
        "payload_encryption_key": real_key(),
        "codec_auth_token": secrets.token_urlsafe(32),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def plain(data: bytes = b'{"client_email": "ada@example.com"}') -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


@pytest.mark.parametrize(
    "weak",
    [
        "correct horse battery staple, long enough to look safe",
        base64.b64encode(os.urandom(16)).decode(),  # 16 bytes: too short
        base64.b64encode(os.urandom(48)).decode(),  # 48 bytes: not a 256-bit key
        base64.b64encode(b"changeme" * 4).decode(),  # 32 bytes, but a pattern, not random
        f"{base64.b64encode(os.urandom(32)).decode()},old-passphrase",  # one weak key in the rotation list
    ],
    ids=["passphrase", "16-bytes", "48-bytes", "patterned", "weak-in-rotation"],
)
def test_production_refuses_a_payload_key_that_is_not_32_random_bytes(weak: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        production(payload_encryption_key=weak)
    message = str(excinfo.value)
    assert "PAYLOAD_ENCRYPTION_KEY" in message
    assert "base64" in message  # says what a key must be
    for part in weak.split(","):
        assert part not in message


def test_production_takes_real_payload_keys_for_rotation() -> None:
    settings = production(payload_encryption_key=f"{real_key()}, {real_key()}")
    # URL-safe base64 (the alphabet of Fernet keys and of `secrets.token_urlsafe(32)`) is a real key too.
    production(payload_encryption_key=base64.urlsafe_b64encode(os.urandom(32)).decode())
    assert temporal_support.data_converter(settings).payload_codec is not None


def test_production_refuses_one_key_for_both_tokens_and_payloads() -> None:
    shared = Fernet.generate_key().decode()
    with pytest.raises(ValidationError, match="PAYLOAD_ENCRYPTION_KEY"):
        production(token_encryption_key=shared, payload_encryption_key=shared)


def test_token_keys_must_be_fernet_keys_everywhere() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Settings(_env_file=None, token_encryption_key="not-a-fernet-key")
    assert "TOKEN_ENCRYPTION_KEY" in str(excinfo.value)
    assert "not-a-fernet-key" not in str(excinfo.value)
    with pytest.raises(ValidationError, match="TOKEN_ENCRYPTION_KEY"):
        production(token_encryption_key=base64.urlsafe_b64encode(b"x" * 32).decode())


def test_the_development_passphrase_is_refused_in_production_only() -> None:
    with pytest.raises(ValidationError, match="PAYLOAD_ENCRYPTION_KEY"):
        production(payload_encryption_key=DEV_PAYLOAD_ENCRYPTION_KEY)
    assert Settings(_env_file=None, app_env="test", payload_encryption_key="any passphrase at all")


async def test_a_real_key_encrypts_as_it_is_and_any_listed_key_decrypts() -> None:
    first, second = os.urandom(32), os.urandom(32)
    as_text = [base64.b64encode(key).decode() for key in (first, second)]
    [encrypted] = await EncryptionCodec(",".join(as_text)).encode([plain()])

    # The first key encrypts, with the key itself (AES-256-GCM), not with a digest of its text.
    key_id = encrypted.metadata[temporal_support.KEY_ID_METADATA].decode()
    assert key_id == hashlib.sha256(first).hexdigest()[:12]
    inner = Payload()
    inner.ParseFromString(AESGCM(first).decrypt(encrypted.data[:12], encrypted.data[12:], None))
    assert inner == plain()

    # Any listed key decrypts (rotation: the new key first, the old one still listed).
    assert await EncryptionCodec(f"{as_text[1]},{as_text[0]}").decode([encrypted]) == [plain()]
    with pytest.raises(UnknownPayloadKey):
        await EncryptionCodec(as_text[1]).decode([encrypted])


async def test_the_development_passphrase_keeps_its_key_and_key_id() -> None:
    # Existing development data and the recorded replay histories were encrypted this way.
    material = hashlib.sha256(DEV_PAYLOAD_ENCRYPTION_KEY.encode()).digest()
    [encrypted] = await EncryptionCodec(DEV_PAYLOAD_ENCRYPTION_KEY).encode([plain()])
    assert (
        encrypted.metadata[temporal_support.KEY_ID_METADATA]
        == hashlib.sha256(material).hexdigest()[:12].encode()
    )
    inner = Payload()
    inner.ParseFromString(AESGCM(material).decrypt(encrypted.data[:12], encrypted.data[12:], None))
    assert inner == plain()


async def test_workers_refuse_payloads_that_are_not_encrypted_by_us() -> None:
    converter = temporal_support.data_converter(Settings(_env_file=None))
    with pytest.raises(PayloadNotEncrypted):
        await converter.decode([plain()])
    codec = EncryptionCodec(real_key())
    [encrypted] = await codec.encode([plain()])
    tampered = Payload(
        metadata=dict(encrypted.metadata), data=encrypted.data[:-1] + bytes([encrypted.data[-1] ^ 1])
    )
    with pytest.raises(UndecryptablePayload):
        await codec.decode([tampered])
    with pytest.raises(UndecryptablePayload):
        await codec.decode([Payload(metadata=dict(encrypted.metadata), data=b"short")])
    # Their messages name no payload content (the SDK logs them).
    with pytest.raises(PayloadNotEncrypted) as excinfo:
        await codec.decode([plain(b'"grace@example.com"')])
    assert "grace" not in str(excinfo.value)


async def test_what_a_key_encrypted_before_keys_were_read_as_bytes_still_decrypts() -> None:
    # Earlier versions hashed every configured text, a real key's too: its payloads are still in histories.
    key = real_key()
    material = hashlib.sha256(key.encode()).digest()
    nonce = os.urandom(12)
    earlier = Payload(
        metadata={
            "encoding": temporal_support.ENCODING,
            temporal_support.KEY_ID_METADATA: hashlib.sha256(material).hexdigest()[:12].encode(),
        },
        data=nonce + AESGCM(material).encrypt(nonce, plain().SerializeToString(), None),
    )
    codec = EncryptionCodec(key)
    assert await codec.decode([earlier]) == [plain()]
    # New payloads use the key itself.
    [encrypted] = await codec.encode([plain()])
    assert (
        encrypted.metadata[temporal_support.KEY_ID_METADATA]
        != earlier.metadata[temporal_support.KEY_ID_METADATA]
    )
