"""Intuit's API gateway in front of every non-admin route: auth, throttling, injected faults, logging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator import errors
from emulator.faults import Fault
from emulator.oauth import intuit_tid
from emulator.store import Grant

if TYPE_CHECKING:
    from emulator.context import Emulator

ADMIN_PREFIX = "/__admin"
API_PREFIX = "/v3/company/"
_XML_CODE = re.compile(rb'code="(\d+)"')
_MAX_CAPTURE = 65_536


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _fault_code(body: bytes) -> str | None:
    """The error code of any error body the emulator sends: JSON Fault, gateway fault, XML, or OAuth."""
    try:
        parsed = json.loads(body)
    except ValueError:
        match = _XML_CODE.search(body)
        return match.group(1).decode() if match else None
    if not isinstance(parsed, dict):
        return None
    for key, inner in (("Fault", "Error"), ("fault", "error")):
        fault = parsed.get(key)
        if isinstance(fault, dict) and isinstance(fault.get(inner), list) and fault[inner]:
            code = fault[inner][0].get("code")
            return str(code) if code is not None else None
    error = parsed.get("error")
    return str(error) if isinstance(error, str) else None


class Gateway:
    """Pure ASGI so it can hold a concurrency slot for the whole call, including injected latency."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        annotations: dict[str, Any] = scope.setdefault("qbo", {})
        realm_id: str | None = None
        if path.startswith(API_PREFIX):
            realm_id = path[len(API_PREFIX) :].split("/", 1)[0] or None
        query_string = bytes(scope.get("query_string", b"")).decode("latin-1")
        captured: dict[str, Any] = {"status": None, "body": bytearray()}
        tid = intuit_tid()

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"intuit_tid", tid.encode()))
                message = {**message, "headers": headers}
            elif (
                message["type"] == "http.response.body"
                and (captured["status"] or 0) >= 400
                and len(captured["body"]) < _MAX_CAPTURE
            ):
                captured["body"].extend(message.get("body", b""))
            await send(message)

        try:
            if realm_id is not None:
                await self._api_call(scope, receive, logged_send, realm_id)
            else:
                await self._with_faults(scope, receive, logged_send, None, is_api=False)
        finally:
            interrupted = annotations.get("interrupted")
            status = None if interrupted else captured["status"]
            params = parse_qs(query_string)
            requestid = annotations.get("requestid") or next(iter(params.get("requestid", [])), None)
            self.emulator.requests.record(
                {
                    "time": self.emulator.clock.now().isoformat(),
                    "method": scope["method"],
                    "path": path,
                    "query": query_string,
                    "realm_id": realm_id,
                    "status": status,
                    "fault_code": _fault_code(bytes(captured["body"])) if (status or 0) >= 400 else None,
                    "requestid": requestid,
                    "grant_type": annotations.get("grant_type"),
                    "replay": bool(annotations.get("replay", False)),
                    "injected_fault": annotations.get("injected_fault"),
                    "interrupted": interrupted,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                }
            )

    async def _api_call(self, scope: Scope, receive: Receive, send: Send, realm_id: str) -> None:
        emulator = self.emulator
        checked = emulator.oauth.check_bearer(_header(scope, b"authorization"), realm_id)
        if not isinstance(checked, Grant):
            now = emulator.clock.now()
            if checked.status == 401:
                body = errors.dump(errors.gateway_unauthorized(checked.detail, now))
                await _respond(
                    send,
                    401,
                    body,
                    errors.JSON_TYPE,
                    [(b"www-authenticate", errors.WWW_AUTHENTICATE.encode())],
                )
            else:
                body = errors.dump(errors.authorization_fault(now, checked.detail))
                await _respond(send, 403, body, errors.JSON_TYPE)
            return
        emulator.throttle.arrive(realm_id)
        try:
            if not emulator.throttle.try_enter(
                realm_id, batch=scope.get("path", "").rstrip("/").endswith("/batch")
            ):
                await self._throttled(send)
                return
            try:
                await self._with_faults(scope, receive, send, realm_id, is_api=True)
            finally:
                emulator.throttle.leave(realm_id)
        finally:
            emulator.throttle.depart(realm_id)

    async def _throttled(self, send: Send) -> None:
        headers = []
        if self.emulator.config.throttle_retry_after is not None:
            headers.append((b"retry-after", str(self.emulator.config.throttle_retry_after).encode()))
        body = errors.throttle_xml(self.emulator.clock.now()).encode()
        await _respond(send, 429, body, errors.XML_TYPE, headers)

    async def _with_faults(
        self, scope: Scope, receive: Receive, send: Send, realm_id: str | None, *, is_api: bool
    ) -> None:
        fault = self.emulator.faults.take_http(scope["method"], scope.get("path", ""), realm_id)
        if fault is None:
            await self.app(scope, receive, send)
            return
        annotations: dict[str, Any] = scope["qbo"]
        annotations["injected_fault"] = fault.id
        if fault.apply == "before":
            # The body is read first, so that a client giving up during the latency is heard (and it frees its
            # slot at once, as a server whose client hung up does); the call itself still sees the whole body.
            body = await _read_body(receive)
            replay = _replaying(body, receive)
            gone = await _wait_unless_gone(fault.latency_ms, receive)
            if fault.status is None and not fault.drop_connection:
                # A slow call, not a failed one: it is performed even when the client stopped waiting.
                await self.app(scope, replay, send)
            elif gone:
                annotations["interrupted"] = "client_gone"
            elif fault.drop_connection:
                annotations["interrupted"] = "dropped"
                await _drop_connection(send)
            else:
                await self._fault_response(send, fault, is_api)
            return
        # "after": the call really happens (and is committed); only its answer is replaced, delayed or lost.
        buffered: list[Message] = []

        async def hold(message: Message) -> None:
            buffered.append(message)

        await self.app(scope, receive, hold)
        if await _wait_unless_gone(fault.latency_ms, receive):
            annotations["interrupted"] = "client_gone"
        elif fault.drop_connection:
            annotations["interrupted"] = "dropped"
            await _drop_connection(send)
        elif fault.status is None:
            for message in buffered:
                await send(message)
        else:
            await self._fault_response(send, fault, is_api)

    async def _fault_response(self, send: Send, fault: Fault, is_api: bool) -> None:
        status = fault.status or 500
        now = self.emulator.clock.now()
        if not is_api:
            error = fault.oauth_error or ("server_error" if status >= 500 else "invalid_request")
            body: dict[str, Any] = {"error": error}
            if fault.message:
                body = {"error_description": fault.message, "error": error}
            await _respond(send, status, errors.dump(body), "application/json;charset=utf-8")
            return
        if status == 429:
            await self._throttled(send)
            return
        if status == 401:
            detail = fault.message or "Token expired"
            body = errors.gateway_unauthorized(detail, now)
            await _respond(
                send,
                401,
                errors.dump(body),
                errors.JSON_TYPE,
                [(b"www-authenticate", errors.WWW_AUTHENTICATE.encode())],
            )
            return
        if status == 403 and fault.fault_code in (None, "3100"):
            body = errors.authorization_fault(now, fault.message or "")
            await _respond(send, 403, errors.dump(body), errors.JSON_TYPE)
            return
        server_side = status >= 500
        code = fault.fault_code or ("10000" if server_side else "6000")
        fault_type = fault.fault_type or ("SystemFault" if server_side else "ValidationFault")
        message = fault.message or (
            "An application error has occurred while processing your request"
            if server_side
            else errors.BUSINESS_MESSAGE
        )
        detail = fault.message or "Injected fault"
        body = errors.fault_body(code, message, detail, "", fault_type, now)
        await _respond(send, status, errors.dump(body), errors.JSON_TYPE)


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    all_headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> list[Message]:
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands out the messages already read, then the client's own."""
    queued = list(messages)

    async def replay() -> Message:
        return queued.pop(0) if queued else await receive()

    return replay


async def _wait_unless_gone(latency_ms: int, receive: Receive) -> bool:
    """Wait `latency_ms`, or less if the client disconnects meanwhile: whether it did. The request's body must
    already be read, so the only message left to receive is the disconnect."""
    if latency_ms <= 0:
        return False
    deadline = time.monotonic() + latency_ms / 1000
    while (left := deadline - time.monotonic()) > 0:
        listening = asyncio.ensure_future(receive())
        done, _ = await asyncio.wait({listening}, timeout=left)
        if not done:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
            return False
        if listening.result()["type"] == "http.disconnect":
            return True
    return False


async def _drop_connection(send: Send) -> None:
    """Start an answer and never finish it: the server closes the connection, the client gets no response."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})
