"""How what the engine sends the platform is signed: outbound events, and the return from connecting.

`t=<unix seconds>,v1=<hex HMAC-SHA256(PLATFORM_EVENTS_SECRET, "<t>.<message>")>`: the secret is shared with the
platform only, and the timestamp lets the platform refuse old replays.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the timestamp stops replays of old events."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance_seconds: int = 300, now: float | None = None
) -> bool:
    """What a platform does with our signature (and what the tests use)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def query_message(params: dict[str, str]) -> bytes:
    """The signed message of a redirect's query: its parameters, sorted, URL-encoded (the signature excluded)."""
    return urlencode(sorted((key, value) for key, value in params.items() if key != "signature")).encode()
