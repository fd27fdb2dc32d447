"""Temporal plumbing shared by the API and the worker: the encrypting payload codec and the client."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from collections.abc import Sequence

import temporalio.converter
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import PayloadCodec

from settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"


class EncryptionCodec(PayloadCodec):
    """AES-GCM over every payload (invoice snapshots carry client names and emails).

    Keys are comma-separated; the first encrypts, any decrypts (rotation). The Web UI shows payloads through
    the API's codec endpoint.
    """

    def __init__(self, keys: str) -> None:
        self._keys: dict[str, AESGCM] = {}
        self._encrypt_id = ""
        for raw in (part.strip() for part in keys.split(",")):
            if not raw:
                continue
            material = hashlib.sha256(raw.encode()).digest()
            key_id = hashlib.sha256(material).hexdigest()[:12]
            self._keys[key_id] = AESGCM(material)
            self._encrypt_id = self._encrypt_id or key_id
        if not self._keys:
            raise ValueError("PAYLOAD_ENCRYPTION_KEY holds no key")

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._keys[self._encrypt_id]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(12)
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: self._encrypt_id.encode()},
                    data=nonce + cipher.encrypt(nonce, payload.SerializeToString(), None),
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode()
            cipher = self._keys.get(key_id)
            if cipher is None:
                raise ValueError(f"payload encrypted with unknown key {key_id!r}")
            original = Payload()
            original.ParseFromString(cipher.decrypt(payload.data[:12], payload.data[12:], None))
            decoded.append(original)
        return decoded


def data_converter(settings: Settings) -> temporalio.converter.DataConverter:
    return dataclasses.replace(
        temporalio.converter.default(),
        payload_codec=EncryptionCodec(settings.payload_encryption_key.get_secret_value()),
    )


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
    )


def payload_to_json(payload: Payload) -> dict[str, object]:
    """The codec endpoint's JSON form of a payload (what the Temporal Web UI sends and expects)."""
    return {
        "metadata": {key: base64.b64encode(value).decode() for key, value in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


def payload_from_json(data: dict[str, object]) -> Payload:
    metadata = data.get("metadata") or {}
    assert isinstance(metadata, dict)
    return Payload(
        metadata={str(key): base64.b64decode(str(value)) for key, value in metadata.items()},
        data=base64.b64decode(str(data.get("data") or "")),
    )
