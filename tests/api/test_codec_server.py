"""The operators' payload codec: its own process and listener, for the Web UI's origin, token-guarded when set."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import httpx
import pytest
from google.protobuf import json_format
from pydantic import SecretStr, ValidationError
from temporalio.api.common.v1 import Payload

from bench.harness import child_env, start_child, wait_until_serving
from settings import Settings
from temporal_support import EncryptionCodec
from tests.api.test_accounts_auth_errors import assert_error
from tests.engine import Engine
from tests.support import ROOT, free_port
from workflows.ids import invoice_workflow_id

UI_ORIGIN = "http://127.0.0.1:8233"
OPERATOR_TOKEN = "operators-only-codec-token"
MAX_BODY = 64 * 1024
PROXY_NAME = "codec.ops.example"
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104  (only ever given to Settings, to be refused)


@contextlib.asynccontextmanager
async def codec_process(workdir: Path, **environment: str) -> AsyncIterator[str]:
    """`python codec_server.py` as operators run it, on a free port; its base URL."""
    port = free_port()
    env = child_env({"CODEC_PORT": str(port), "TEMPORAL_UI_ORIGIN": UI_ORIGIN, **environment})
    child = start_child("codec", [sys.executable, str(ROOT / "codec_server.py")], workdir, env)
    try:
        await wait_until_serving(child, f"http://127.0.0.1:{port}/healthz", within=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        await asyncio.to_thread(child.stop)


@pytest.fixture(scope="module")
async def codec_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with codec_process(
        tmp_path_factory.mktemp("codec"), CODEC_MAX_BODY_BYTES=str(MAX_BODY), CODEC_ALLOWED_HOSTS=PROXY_NAME
    ) as url:
        yield url


@pytest.fixture(scope="module")
async def guarded_codec_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with codec_process(tmp_path_factory.mktemp("codec"), CODEC_AUTH_TOKEN=OPERATOR_TOKEN) as url:
        yield url


def as_json(payloads: list[Payload]) -> dict[str, object]:
    return {"payloads": [json_format.MessageToDict(payload) for payload in payloads]}


def from_json(body: dict[str, list[dict[str, object]]]) -> list[Payload]:
    return [json_format.ParseDict(item, Payload()) for item in body["payloads"]]


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


async def encrypted(text: str, keys: str | None = None) -> Payload:
    codec = EncryptionCodec(keys or Settings(_env_file=None).payload_encryption_key.get_secret_value())
    [payload] = await codec.encode([plain(text)])
    return payload


async def test_the_public_api_has_no_codec(engine: Engine, http: httpx.AsyncClient) -> None:
    body = as_json([await encrypted("ada@example.com")])
    for path in ("/codec/decode", "/codec/encode"):
        response = await http.post(f"{engine.api_url}{path}", json=body, headers={"Origin": UI_ORIGIN})
        assert_error(response, 404, "not_found")
        assert "access-control-allow-origin" not in response.headers
        assert b"ada@example.com" not in response.content


async def test_the_web_ui_reads_a_workflows_payloads_through_the_codec(
    engine: Engine, http: httpx.AsyncClient, codec_url: str
) -> None:
    account = await engine.create_account()
    await engine.connect(account)
    await engine.send_invoice(account, "inv-1", client_email="ada.codec@example.com")
    await engine.wait_for_invoice(account, "inv-1", "synced")
    handle = engine.temporal.get_workflow_handle(invoice_workflow_id(account, "inv-1"))
    started = None
    async for event in handle.fetch_history_events():
        started = event.workflow_execution_started_event_attributes
        break
    assert started is not None
    stored = as_json(list(started.input.payloads))
    assert b"ada.codec@example.com" not in json.dumps(stored).encode()

    # What the browser does: a CORS preflight from the UI's origin, then the POST with the namespace header.
    preflight = await http.options(
        f"{codec_url}/decode",
        headers={
            "Origin": UI_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == UI_ORIGIN
    decoded = await http.post(
        f"{codec_url}/decode", json=stored, headers={"Origin": UI_ORIGIN, "X-Namespace": "default"}
    )
    assert decoded.status_code == 200, decoded.text
    assert decoded.headers["access-control-allow-origin"] == UI_ORIGIN
    assert any(b"ada.codec@example.com" in payload.data for payload in from_json(decoded.json()))


async def test_another_origin_gets_no_cors_grant(http: httpx.AsyncClient, codec_url: str) -> None:
    preflight = await http.options(
        f"{codec_url}/decode",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    answer = await http.post(
        f"{codec_url}/decode", json=as_json([]), headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in answer.headers


async def test_encode_then_decode_round_trips_what_the_ui_sends(
    http: httpx.AsyncClient, codec_url: str
) -> None:
    # The UI encodes the input of a signal it sends (e.g. retry_sync) before handing it to Temporal.
    encoded = await http.post(f"{codec_url}/encode", json=as_json([plain("operator")]))
    assert encoded.status_code == 200
    [payload] = from_json(encoded.json())
    assert payload.metadata["encoding"] == b"binary/encrypted"
    # ... which the workers' codec accepts.
    worker_codec = EncryptionCodec(Settings(_env_file=None).payload_encryption_key.get_secret_value())
    assert await worker_codec.decode([payload]) == [plain("operator")]


async def test_plain_payloads_are_shown_as_they_are(http: httpx.AsyncClient, codec_url: str) -> None:
    # Display only: a payload someone stored unencrypted is shown unchanged (the workers refuse it).
    decoded = await http.post(
        f"{codec_url}/decode", json=as_json([plain("as stored"), await encrypted("secret")])
    )
    assert decoded.status_code == 200
    assert from_json(decoded.json()) == [plain("as stored"), plain("secret")]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[]", "invalid_payloads"),
        (b'{"payloads": "x"}', "invalid_payloads"),
        (b'{"payloads": [5]}', "invalid_payloads"),
        (b'{"payloads": [{"data": 5}]}', "invalid_payloads"),
        (b'{"payloads": [{"metadata": {"encoding": 7}}]}', "invalid_payloads"),
        (b'{"payloads": [{"data": "abcde"}]}', "invalid_payloads"),  # not base64
        (b'{"payloads": [{"unknown": "field"}]}', "invalid_payloads"),
    ],
)
async def test_malformed_bodies_are_refused_with_stable_codes(
    http: httpx.AsyncClient, codec_url: str, body: bytes, code: str
) -> None:
    for path in ("/decode", "/encode"):
        response = await http.post(
            f"{codec_url}{path}", content=body, headers={"Content-Type": "application/json"}
        )
        assert_error(response, 400, code)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000,
        b'{"payloads": ' + b"[" * 50_000,
        b'{"payloads": [{"metadata": {"encoding": ' + b"[" * 50_000,
        # Deep, yet within what json.loads reads: the protobuf mapping refuses it.
        b'{"payloads": ' + b"[" * 900 + b"]" * 900 + b"}",
    ],
    ids=["array", "payloads", "metadata", "readable-depth"],
)
async def test_deeply_nested_bodies_are_refused_with_stable_codes(
    http: httpx.AsyncClient, codec_url: str, body: bytes
) -> None:
    for path in ("/decode", "/encode"):
        response = await http.post(
            f"{codec_url}{path}", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] in ("invalid_json", "invalid_payloads")


async def test_only_its_own_names_reach_the_codec(http: httpx.AsyncClient, codec_url: str) -> None:
    # A page the operator opens rebinds its own name to 127.0.0.1: same-origin to the browser, but its Host is its
    # own name, which the codec refuses before reading anything.
    port = codec_url.rsplit(":", 1)[1]
    body = as_json([await encrypted("ada@example.com")])
    for host in (f"rebind.attacker.example:{port}", "attacker.example", f"{PROXY_NAME}.attacker.example"):
        for path in ("/decode", "/encode", "/healthz"):
            response = await http.post(f"{codec_url}{path}", json=body, headers={"Host": host})
            assert response.status_code == 400, (host, path, response.text)
            assert b"ada@example.com" not in response.content
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", PROXY_NAME):
        response = await http.post(f"{codec_url}/decode", json=body, headers={"Host": host})
        assert response.status_code == 200, (host, response.text)


def test_the_codec_answers_to_loopback_names_its_host_and_the_configured_ones() -> None:
    from codec_server import host_names

    assert host_names(Settings(_env_file=None)) == ["localhost", "127.0.0.1", "[::1]"]
    settings = Settings(
        _env_file=None,
        codec_host="::1",
        codec_allowed_hosts=f"{PROXY_NAME}, Codec.Internal",
    )
    assert host_names(settings) == ["localhost", "127.0.0.1", "[::1]", PROXY_NAME, "codec.internal"]
    # Where it listens is not a name it is reached by.
    token = SecretStr("t")
    everywhere = Settings(_env_file=None, codec_host=EVERY_INTERFACE, codec_auth_token=token)
    assert EVERY_INTERFACE not in host_names(everywhere)
    assert "10.0.0.5" in host_names(Settings(_env_file=None, codec_host="10.0.0.5", codec_auth_token=token))
    with pytest.raises(ValidationError, match="CODEC_ALLOWED_HOSTS"):
        Settings(_env_file=None, codec_allowed_hosts="*")


async def test_payloads_it_cannot_decrypt_are_refused_with_stable_codes(
    http: httpx.AsyncClient, codec_url: str
) -> None:
    other_key = base64.b64encode(os.urandom(32)).decode()
    unknown = await http.post(f"{codec_url}/decode", json=as_json([await encrypted("x", other_key)]))
    assert_error(unknown, 400, "unknown_key")

    ours = await encrypted("ada@example.com")
    tampered = Payload(metadata=dict(ours.metadata), data=ours.data[:-1] + bytes([ours.data[-1] ^ 1]))
    response = await http.post(f"{codec_url}/decode", json=as_json([tampered]))
    error = assert_error(response, 400, "undecryptable_payload")
    assert "ada" not in error["message"]


async def test_oversized_bodies_are_refused_before_reading_them(
    http: httpx.AsyncClient, codec_url: str
) -> None:
    big = as_json([plain("x" * MAX_BODY)])
    response = await http.post(f"{codec_url}/decode", json=big)
    assert_error(response, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    streamed = await http.post(f"{codec_url}/encode", content=chunks())
    assert_error(streamed, 413, "payload_too_large")


async def test_the_operators_token_is_required_when_set(
    http: httpx.AsyncClient, guarded_codec_url: str
) -> None:
    body = as_json([await encrypted("ada@example.com")])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {OPERATOR_TOKEN}"}):
        for path in ("/decode", "/encode"):
            response = await http.post(f"{guarded_codec_url}{path}", json=body, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert b"ada@example.com" not in response.content
    # The browser's preflight carries no credentials; the POST that follows does.
    preflight = await http.options(
        f"{guarded_codec_url}/decode",
        headers={
            "Origin": UI_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    assert preflight.status_code == 200
    allowed = await http.post(
        f"{guarded_codec_url}/decode",
        json=body,
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Origin": UI_ORIGIN},
    )
    assert allowed.status_code == 200
    assert from_json(allowed.json()) == [plain("ada@example.com")]


def test_the_codec_listens_on_loopback_unless_told_otherwise() -> None:
    assert Settings(_env_file=None).codec_host == "127.0.0.1"


def test_production_always_needs_the_codec_token_and_a_strong_one() -> None:
    from tests.unit.test_encryption_keys import production

    # On loopback too: any local user or process could decrypt every payload and use /encode as an oracle.
    for host in ("127.0.0.1", "localhost", "::1", "10.0.0.5"):
        with pytest.raises(ValidationError, match="CODEC_AUTH_TOKEN"):
            production(codec_host=host, codec_auth_token="")
    with pytest.raises(ValidationError, match="CODEC_AUTH_TOKEN") as excinfo:
        production(codec_auth_token=OPERATOR_TOKEN[:20])
    assert OPERATOR_TOKEN[:20] not in str(excinfo.value)
    assert production(codec_host="10.0.0.5").codec_auth_token is not None
    # The development escape for docker compose is refused.
    with pytest.raises(ValidationError, match="CODEC_ALLOW_UNGUARDED_HOST"):
        production(codec_host=EVERY_INTERFACE, codec_allow_unguarded_host="true")


@pytest.mark.parametrize("app_env", ["development", "test"])
def test_a_codec_beyond_loopback_needs_the_token_in_every_environment(
    app_env: Literal["development", "test"],
) -> None:
    for host in (EVERY_INTERFACE, "10.0.0.5", "::", "codec.internal"):
        with pytest.raises(ValidationError, match="CODEC_AUTH_TOKEN") as excinfo:
            Settings(_env_file=None, app_env=app_env, codec_host=host)
        assert host not in str(excinfo.value)
        Settings(_env_file=None, app_env=app_env, codec_host=host, codec_auth_token=SecretStr("t"))
    for host in ("127.0.0.1", "localhost", "::1"):
        assert Settings(_env_file=None, app_env=app_env, codec_host=host).codec_auth_token is None
    # Said in so many words, for a listener nobody else reaches (docker-compose.yml's codec).
    unguarded = Settings(
        _env_file=None, app_env=app_env, codec_host=EVERY_INTERFACE, codec_allow_unguarded_host=True
    )
    assert unguarded.codec_auth_token is None
