"""Temporal plumbing shared by the API, the worker and the codec server: the encrypting payload codec and the one
way to connect (address, namespace, API key, TLS from settings)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import temporalio.converter
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadCodec,
)
from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS, ClientConnectConfig
from temporalio.runtime import Runtime
from temporalio.service import RetryConfig, RPCError, RPCStatusCode

from settings import Settings, payload_key_bytes, split_keys

if TYPE_CHECKING:
    from observability.tracing import Tracing

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
_NONCE_BYTES = 12
_TAG_BYTES = 16


class PayloadCodecError(ValueError):
    """A payload the codec cannot decode. Messages name key ids and encodings, never payload content."""


class PayloadNotEncrypted(PayloadCodecError):
    """A plain payload where only ours are expected: it was not written by anyone holding the key."""


class UnknownPayloadKey(PayloadCodecError):
    """Encrypted with a key that is not (or no longer) configured."""


class UndecryptablePayload(PayloadCodecError):
    """Encrypted in our format, but corrupt or tampered with: AES-GCM authentication fails."""


def _hashed(text: str) -> bytes:
    """How every configured text became a key before real keys were read as bytes (and passphrases still do)."""
    return hashlib.sha256(text.encode()).digest()


def _key_id(material: bytes) -> str:
    return hashlib.sha256(material).hexdigest()[:12]


def _short(value: bytes) -> str:
    return value[:40].decode(errors="replace")


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over every payload (invoice snapshots carry client names and emails).

    Keys are comma-separated; the first encrypts, any decrypts (rotation). Each is the base64 of 32 random
    bytes; settings accept a passphrase (hashed into a key) outside production only. A payload names its key by
    id (the first 12 hex digits of the key's SHA-256), so rotation never has to guess. Payloads a real key's text
    encrypted while texts were still hashed decrypt too.

    Decoding refuses payloads that are not ours: AES-GCM authenticates, so only a holder of the key can put a
    payload in front of a worker. `decode(..., allow_unencrypted=True)` is for display only (the operators'
    codec server): a plain payload is shown as it is.
    """

    def __init__(self, keys: str) -> None:
        self._keys: dict[str, AESGCM] = {}
        self._encrypt_id = ""
        for part in split_keys(keys):
            raw = payload_key_bytes(part)
            material = raw or _hashed(part)
            self._keys[_key_id(material)] = AESGCM(material)
            self._encrypt_id = self._encrypt_id or _key_id(material)
            if raw is not None:
                # Decrypt-only: what this same key text encrypted when it was still hashed. As strong as the
                # key (a hash of 32 random bytes), and found by key id like any other.
                self._keys.setdefault(_key_id(_hashed(part)), AESGCM(_hashed(part)))
        if not self._keys:
            raise ValueError("PAYLOAD_ENCRYPTION_KEY holds no key")

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._keys[self._encrypt_id]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: self._encrypt_id.encode()},
                    data=nonce + cipher.encrypt(nonce, payload.SerializeToString(), None),
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload], *, allow_unencrypted: bool = False) -> list[Payload]:
        decoded = []
        for payload in payloads:
            encoding = payload.metadata.get("encoding", b"")
            if encoding != ENCODING:
                if allow_unencrypted:
                    decoded.append(payload)
                    continue
                raise PayloadNotEncrypted(f"payload is not encrypted (encoding {_short(encoding)!r})")
            key_id = _short(payload.metadata.get(KEY_ID_METADATA, b""))
            cipher = self._keys.get(key_id)
            if cipher is None:
                raise UnknownPayloadKey(f"payload encrypted with unknown key {key_id!r}")
            if len(payload.data) < _NONCE_BYTES + _TAG_BYTES:
                raise UndecryptablePayload(f"payload encrypted with key {key_id!r} is truncated")
            try:
                plaintext = cipher.decrypt(payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:], None)
                original = Payload()
                original.ParseFromString(plaintext)
            except (InvalidTag, DecodeError):
                raise UndecryptablePayload(
                    f"payload encrypted with key {key_id!r} does not decrypt (corrupt or tampered with)"
                ) from None
            decoded.append(original)
        return decoded


# One cache of pydantic type adapters for the process. Temporal makes a payload converter from its class for every
# workflow it runs, so the cache of each converter (Temporal's default) built every adapter again for every workflow:
# 15% of the worker's CPU in a py-spy profile of bench/engine_cost.py.
_TYPE_ADAPTERS = functools.lru_cache(maxsize=1024)(TypeAdapter)


class _PydanticJSON(PydanticJSONPlainPayloadConverter):
    def __init__(self) -> None:
        super().__init__(max_cached_type_adapters=0)
        self._type_adapter = _TYPE_ADAPTERS


class PayloadConverter(CompositePayloadConverter):
    """Temporal's Pydantic payload converter (`temporalio.contrib.pydantic`), with the process's adapter cache.

    Same `json/plain` payloads as Temporal's default converter, so histories written with it replay; a dataclass
    converts with a cached pydantic-core validator, where the default converter reads the type hints of every
    dataclass again for every payload (about 20x the CPU per payload; bench/README.md, "The engine's own cost")."""

    def __init__(self) -> None:
        json_converter = _PydanticJSON()
        super().__init__(
            *(
                json_converter if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


def data_converter(settings: Settings) -> temporalio.converter.DataConverter:
    return dataclasses.replace(
        temporalio.converter.default(),
        payload_converter_class=PayloadConverter,
        payload_codec=EncryptionCodec(settings.payload_encryption_key.get_secret_value()),
        # Failure messages and stack traces move into the failure's encoded attributes, which the codec encrypts:
        # Temporal keeps them in history, where they would otherwise be readable by anyone who can read history.
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )


class _Unreached(temporalio.client.OutboundInterceptor):
    """A lazy client that has not reached Temporal yet raises `RuntimeError("Failed client connect: ...")`; once
    connected, Temporal going away is an RPCError (UNAVAILABLE). Callers handle Temporal being away one way, so the
    first is said as the second."""


def _as_rpc_error(name: str) -> Callable[..., Awaitable[Any]]:
    async def call(self: _Unreached, call_input: Any) -> Any:
        try:
            return await getattr(self.next, name)(call_input)
        except RuntimeError as exc:
            if not str(exc).startswith("Failed client connect"):
                raise
            raise RPCError("Temporal cannot be reached", RPCStatusCode.UNAVAILABLE, b"") from None

    return call


for _name in (
    "start_workflow", "signal_workflow", "query_workflow", "describe_workflow", "start_workflow_update",
    "start_update_with_start_workflow", "cancel_workflow", "terminate_workflow",
):  # fmt: skip
    setattr(_Unreached, _name, _as_rpc_error(_name))


class _UnreachedInterceptor(temporalio.client.Interceptor):
    def intercept_client(
        self, next: temporalio.client.OutboundInterceptor
    ) -> temporalio.client.OutboundInterceptor:
        return _Unreached(next)


async def connect_when_reachable(
    settings: Settings, *, log: logging.Logger, runtime: Runtime | None = None, tracing: Tracing | None = None
) -> Client:
    """A connected client, once Temporal answers: a worker started before Temporal (a deploy or a restart of both,
    in any order) waits for it instead of exiting, retrying with backoff up to every 30 s."""
    delay = 1.0
    while True:
        try:
            return await connect(settings, runtime=runtime, tracing=tracing)
        except RuntimeError as exc:
            # The SDK says "not reachable" only as this RuntimeError; anything else is a real error.
            if not str(exc).startswith("Failed client connect"):
                raise
        log.warning(
            "Temporal at %s cannot be reached yet; trying again in %.0f s", settings.temporal_address, delay
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


def connect_config(settings: Settings) -> ClientConnectConfig:
    """Address, namespace, API key and TLS as Temporal's environment configuration turns them into `Client.connect`
    arguments (an API key implies TLS; each certificate from its file or inline data)."""

    def source(path: str | None, data: str | None) -> Path | bytes | None:
        return Path(path) if path is not None else data.encode() if data is not None else None

    key_data = settings.temporal_tls_client_key_data
    tls = (
        ClientConfigTLS(
            disabled=not settings.temporal_uses_tls,
            server_name=settings.temporal_tls_server_name,
            server_root_ca_cert=source(
                settings.temporal_tls_server_ca_cert_path, settings.temporal_tls_server_ca_cert_data
            ),
            client_cert=source(
                settings.temporal_tls_client_cert_path, settings.temporal_tls_client_cert_data
            ),
            client_private_key=source(
                settings.temporal_tls_client_key_path, key_data.get_secret_value() if key_data else None
            ),
        )
        if settings.temporal_tls is not None or settings.temporal_tls_options_set
        else None
    )
    api_key = settings.temporal_api_key
    return ClientConfigProfile(
        address=settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key.get_secret_value() if api_key else None,
        tls=tls,
    ).to_client_connect_config()


async def connect(
    settings: Settings,
    *,
    lazy: bool = False,
    with_codec: bool = True,
    runtime: Runtime | None = None,
    tracing: Tracing | None = None,
    give_up_after: timedelta | None = None,
) -> Client:
    """The one way every process reaches Temporal (API, worker, tools): the configured address, namespace, API key
    and TLS. `lazy` connects on its first call instead (the API starts while Temporal is away); either way, Temporal
    out of reach is an RPCError (UNAVAILABLE) to the caller. `with_codec=False` is for tools that read or write no
    payloads (registering search attributes): they need no payload key. `runtime`: the SDK's runtime (the worker's
    exports its metrics). `tracing`: the process's tracing, when it is on: Temporal's interceptor traces the
    client's calls and, through the client, the workflows and activities of the workers built on it.
    `give_up_after`: how long one call may retry a Temporal that does not answer (the SDK's default is 10 s): the
    API answers its callers within TEMPORAL_RPC_TIMEOUT_SECONDS, and its relay tries again later."""
    interceptors: list[temporalio.client.Interceptor] = [_UnreachedInterceptor()]
    if tracing is not None:
        # Outermost: its span covers the call as the caller sees it.
        interceptors.insert(0, tracing.temporal_interceptor())
    return await Client.connect(
        **connect_config(settings),
        data_converter=data_converter(settings) if with_codec else temporalio.converter.default(),
        interceptors=interceptors,
        lazy=lazy,
        runtime=runtime,
        retry_config=(
            None
            if give_up_after is None
            else RetryConfig(max_elapsed_time_millis=int(give_up_after.total_seconds() * 1000))
        ),
    )


def exit_without_finalizing(code: int) -> NoReturn:
    """Leave a process that used a Temporal client once its work is done, without the interpreter's finalization.

    The SDK's Rust runtime keeps threads that may still touch the GIL while CPython finalizes, which aborts the
    process now and then ("Fatal Python error: PyGILState_Release", SIGABRT, after the command's output;
    temporalio/sdk-python#300, open). The worker calls this once its workers have shut down gracefully, a command
    once it has printed its result: nothing is left to flush but the logs and the standard streams.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
