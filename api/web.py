"""The reference web app (`web/`): static files at /app/, served with a strict Content-Security-Policy.

The app is only files: the browser calls the public API itself, same origin, with the account token in the
`Authorization` header. Nothing here reads a token or an account."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
APP_PATH = "/app"

# Scripts, styles and images from this origin only (no inline script or style, no eval), API calls to this
# origin only, never framed (clickjacking of Disconnect), no <base> or plugin tricks.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # The page's URL may carry the OAuth return's query (flow, signature) for a moment: never pass it on.
    "referrer-policy": "no-referrer",
    # Always revalidated, so a new release's files are what runs.
    "cache-control": "no-cache",
}


class SecurityHeaders:
    """Pure ASGI: adds SECURITY_HEADERS to every answer of the wrapped app (its 404s too)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode().lower() not in SECURITY_HEADERS
                ]
                headers += [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, with_headers)


def mount_web_app(app: FastAPI) -> None:
    """/app/ serves web/index.html, /app/<file> the app's modules and styles."""
    app.mount(APP_PATH, SecurityHeaders(StaticFiles(directory=WEB_ROOT, html=True)), name="web")
