"""How what the engine sends the platform is signed: outbound events (Standard Webhooks), and the return from
connecting (a signed URL).

PLATFORM_EVENTS_SECRET holds one or more Standard Webhooks secrets (`whsec_<base64 of 24 to 64 random bytes>`),
comma-separated. Every one of them signs: an event carries one `v1,<base64>` signature per secret in
`webhook-signature`, and a return URL one `v1=<hex>` per secret. So the platform rotates without losing an event:
add the new secret here (old,new), switch its verifier to the new one whenever it likes (both verify meanwhile),
then drop the old one here. Had only the first secret signed, the platform would have to switch at the very moment
this service does, and everything sent in between would fail to verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105  (a prefix, not a secret)
# Standard Webhooks: secrets of 24 to 64 bytes.
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64
EVENTS_SIGNING_FORMAT = (
    "each secret is whsec_ and the base64 of 24 to 64 random bytes, comma-separated for rotation (every one "
    'signs); make one with: python3 -c \'import base64,os;print("whsec_"+base64.b64encode(os.urandom(32))'
    ".decode())'"
)

WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"


def secret_bytes(secret: str) -> bytes | None:
    """The key of a `whsec_` secret, or None when it is not one (never says why: it would quote the secret)."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES else None


def split_secrets(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def webhook_headers(
    secrets: str, message_id: str, body: bytes, *, now: float | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers of one delivery: the id, the time, and a signature per secret."""
    timestamp = datetime.fromtimestamp(int(now if now is not None else time.time()), UTC)
    signatures = [
        Webhook(secret).sign(message_id, timestamp, body.decode()) for secret in split_secrets(secrets)
    ]
    return {
        WEBHOOK_ID_HEADER: message_id,
        WEBHOOK_TIMESTAMP_HEADER: str(int(timestamp.timestamp())),
        WEBHOOK_SIGNATURE_HEADER: " ".join(signatures),
    }


# --- The return from connecting ---------------------------------------------------------------------------------
# A URL, not a webhook: no headers to carry Standard Webhooks' id and time, and the platform reads it from a browser
# redirect. It keeps its own scheme, `t=<unix>,v1=<hex>[,v1=<hex>...]`, with the same keys as the events.


def _query_digest(key: bytes, timestamp: int, message: bytes) -> str:
    return hmac.new(key, f"{timestamp}.".encode() + message, hashlib.sha256).hexdigest()


def sign_query(secrets: str, timestamp: int, message: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<message>")>` for each secret's key."""
    digests = [
        _query_digest(key, timestamp, message)
        for key in (secret_bytes(secret) for secret in split_secrets(secrets))
        if key is not None
    ]
    return ",".join([f"t={timestamp}", *(f"v1={digest}" for digest in digests)])


def verify_query(
    secret: str, signature: str, message: bytes, *, tolerance_seconds: int = 300, now: float | None = None
) -> bool:
    """What a platform does with a return's signature (and what the tests use): one of its `v1` matches."""
    key = secret_bytes(secret)
    if key is None:
        return False
    timestamp: int | None = None
    digests = []
    for item in signature.split(","):
        name, _, value = item.partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            digests.append(value)
    if timestamp is None or abs((now if now is not None else time.time()) - timestamp) > tolerance_seconds:
        return False
    expected = _query_digest(key, timestamp, message)
    return any(hmac.compare_digest(expected, digest) for digest in digests)


def query_message(params: dict[str, str]) -> bytes:
    """The signed message of a redirect's query: its parameters, sorted, URL-encoded (the signature excluded)."""
    return urlencode(sorted((key, value) for key, value in params.items() if key != "signature")).encode()
