"""The operators' payload codec server: `python codec_server.py` serves it on CODEC_HOST:CODEC_PORT.

The Temporal Web UI (and the `temporal` CLI with `--codec-endpoint`) call it to show the payloads and failure
messages the workers encrypt, and to encrypt what an operator sends (a signal's input). It decrypts for whoever
reaches it, so it is a process and listener of its own, never part of the public API: loopback by default, and
when CODEC_AUTH_TOKEN is set every call needs it as a bearer token.

POST /decode and POST /encode take and answer `{"payloads": [...]}`, the protobuf JSON of Temporal's `Payloads`
(what the Web UI sends). Malformed bodies (nested too deeply included), payloads it cannot decrypt and oversized
bodies get 4xx answers with stable codes. Decoding is for display: a payload stored unencrypted is shown as it is
(the workers refuse it).

It answers only requests whose Host is one of its own names (loopback's, CODEC_HOST, CODEC_ALLOWED_HOSTS): a web
page an operator opens could otherwise rebind its own name to 127.0.0.1 and read the codec's answers as its own.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from api.errors import ApiError, install_error_handlers
from logging_setup import configure_logging
from settings import Settings, get_settings, split_keys
from temporal_support import EncryptionCodec, UndecryptablePayload, UnknownPayloadKey

_PAYLOADS_SHAPE = (
    'Expected {"payloads": [{"metadata": {...}, "data": "<base64>"}, ...]} (Temporal payloads as JSON).'
)
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")

_bearer = HTTPBearer(
    auto_error=False, description="The operators' token (CODEC_AUTH_TOKEN), when one is set."
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def create_codec_app(settings: Settings) -> FastAPI:
    """The codec app for these settings (its keys, the UI's origin, the token and the body limit)."""
    codec = EncryptionCodec(settings.payload_encryption_key.get_secret_value())
    token = settings.codec_auth_token.get_secret_value().encode() if settings.codec_auth_token else None
    limit = settings.codec_max_body_bytes

    async def operators_only(credentials: BearerCredentials) -> None:
        if token is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, token):
            raise ApiError(
                401,
                "unauthorized",
                "The codec needs the operators' bearer token.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    app = FastAPI(
        title="qbo-sync payload codec",
        description="Decrypts and encrypts Temporal payloads for operators (the Temporal Web UI and CLI).",
        openapi_url=None,
    )
    # The Web UI calls the codec from the operator's browser; preflights carry no token, so CORS answers them.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[settings.temporal_ui_origin],
        allow_methods=["POST"],
        allow_headers=["Content-Type", "X-Namespace", "Authorization"],
    )
    # Outermost: a request for another name is refused before anything else reads it (400 "Invalid host header").
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=host_names(settings), www_redirect=False)
    install_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/decode", dependencies=[Depends(operators_only)])
    async def decode(request: Request) -> dict[str, Any]:
        payloads = await _read_payloads(request, limit)
        try:
            decoded = await codec.decode(payloads, allow_unencrypted=True)
        except UnknownPayloadKey as exc:
            raise ApiError(400, "unknown_key", f"A payload cannot be decrypted: {exc}.") from None
        except UndecryptablePayload as exc:
            raise ApiError(400, "undecryptable_payload", f"A payload cannot be decrypted: {exc}.") from None
        return _payloads_json(decoded)

    @app.post("/encode", dependencies=[Depends(operators_only)])
    async def encode(request: Request) -> dict[str, Any]:
        return _payloads_json(await codec.encode(await _read_payloads(request, limit)))

    return app


def host_names(settings: Settings) -> list[str]:
    """The names a request may give as its Host: loopback's, CODEC_HOST's and CODEC_ALLOWED_HOSTS."""
    names = [*_LOOPBACK_NAMES, *(host.lower() for host in split_keys(settings.codec_allowed_hosts))]
    host = settings.codec_host.strip().lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        names.append(host)
    else:
        # 0.0.0.0 and :: are where it listens, not a name anyone reaches it by (CODEC_ALLOWED_HOSTS says those).
        if not address.is_unspecified:
            names.append(f"[{host}]" if address.version == 6 else host)
    return list(dict.fromkeys(names))


async def _read_payloads(request: Request, limit: int) -> list[Payload]:
    body = await _body_within_limit(request, limit)
    try:
        document = json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_json", "The body is not JSON.") from None
    except RecursionError:
        raise ApiError(
            400, "invalid_json", "The body is not JSON the codec reads: nested too deeply."
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("payloads"), list):
        raise ApiError(400, "invalid_payloads", _PAYLOADS_SHAPE)
    try:
        # Protobuf's own JSON mapping, as Temporal's Go and TypeScript tools write it (base64 bytes, map metadata).
        return list(json_format.ParseDict(document, Payloads()).payloads)
    except (json_format.ParseError, RecursionError):
        raise ApiError(400, "invalid_payloads", _PAYLOADS_SHAPE) from None


async def _body_within_limit(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be larger than `limit` (declared or streamed)."""
    too_large = ApiError(413, "payload_too_large", f"Codec requests are limited to {limit} bytes.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _payloads_json(payloads: list[Payload]) -> dict[str, Any]:
    return {"payloads": [json_format.MessageToDict(payload) for payload in payloads]}


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # log_config=None: uvicorn's loggers go through the same handlers and filters as everything else.
    uvicorn.run(
        create_codec_app(settings),
        host=settings.codec_host,
        port=settings.codec_port,
        log_config=None,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
