"""Bounds every request body before a route reads it: 413 `payload_too_large`, declared or streamed."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


def _too_large(limit: int) -> str:
    return f"Request bodies are limited to {limit} bytes here."


class RequestBodyLimit:
    """Pure ASGI, so that it counts what arrives, chunked or not, without buffering it.

    `limits` maps path prefixes to their own limit (None: the route bounds its body itself); every other path gets
    `default_limit`.
    """

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: Mapping[str, int | None]) -> None:
        self._app = app
        self._default_limit = default_limit
        self._limits = sorted(limits.items(), key=lambda item: len(item[0]), reverse=True)

    def _limit_for(self, path: str) -> int | None:
        for prefix, limit in self._limits:
            if path.startswith(prefix):
                return limit
        return self._default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self._limit_for(scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = error_response(413, "payload_too_large", _too_large(limit))
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the route's body reading, so the app's handlers answer it as JSON.
                    raise HTTPException(413, _too_large(limit))
            return message

        await self._app(scope, limited, send)
