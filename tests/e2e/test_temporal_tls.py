"""Reaching Temporal over TLS and mTLS with the settings alone: a TLS-terminating proxy (Python's ssl, a private CA
made with `cryptography`) in front of the dev server stands in for Temporal Cloud or a self-hosted cluster."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.testing import WorkflowEnvironment

import temporal_support
from settings import Settings

SERVER_NAME = "temporal.test"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    elif subject == SERVER_NAME:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Pki:
    """A private CA, the server's certificate (temporal.test) and a client's (the engine's), as files."""

    directory: Path

    def __post_init__(self) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("qbo-sync test CA", ca_key, None)
        for role in ("server", "client"):
            key = ec.generate_private_key(ec.SECP256R1())
            subject = SERVER_NAME if role == "server" else "qbo-sync worker"
            (self.directory / f"{role}.pem").write_bytes(
                _pem(_certificate(subject, key, (ca.subject, ca_key)))
            )
            (self.directory / f"{role}.key").write_bytes(_key_pem(key))
        (self.directory / "ca.pem").write_bytes(_pem(ca))

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def data(self, name: str) -> str:
        return (self.directory / name).read_text()


@dataclass
class TlsProxy:
    """Terminates TLS (HTTP/2 by ALPN, as gRPC needs) and passes the bytes on to the dev server in plaintext."""

    address: str = ""
    # The subject of each client certificate presented on an accepted connection ("" for none).
    clients: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def tls_proxy(pki: Pki, upstream: str, *, require_client_cert: bool) -> AsyncIterator[TlsProxy]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.path("server.pem"), pki.path("server.key"))
    context.set_alpn_protocols(["h2"])
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.path("ca.pem"))
    proxy = TlsProxy()
    host, port = upstream.rsplit(":", 1)
    pumps: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer: Any = writer.get_extra_info("peercert") or {}
        proxy.clients.append(
            ", ".join(value for part in peer.get("subject", ()) for key, value in part if key == "commonName")
        )
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        for task in (pump(reader, up_writer), pump(up_reader, writer)):
            pumps.add(asyncio.create_task(task))

    server = await asyncio.start_server(accepted, "127.0.0.1", 0, ssl=context)
    proxy.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def settings_for(proxy: TlsProxy, env: WorkflowEnvironment, **values: Any) -> Settings:
    return Settings(
        _env_file=None, temporal_address=proxy.address, temporal_namespace=env.client.namespace, **values
    )


async def reaches_temporal(settings: Settings) -> bool:
    try:
        client = await temporal_support.connect(settings)
        await client.workflow_service.get_system_info(GetSystemInfoRequest())
    except RuntimeError as exc:
        if not str(exc).startswith("Failed client connect"):
            raise
        return False
    # The key rides on every call as `authorization: Bearer <key>` (the SDK's core adds it; the proxy cannot read
    # HTTP/2's compressed headers without an HTTP/2 library, which the locks do not hold).
    key = settings.temporal_api_key
    assert client.service_client.config.api_key == (key.get_secret_value() if key else None)
    return True


@pytest.mark.parametrize("given_as", ["path", "data"])
async def test_mtls_with_the_client_certificate_from_settings(
    dev_env: WorkflowEnvironment, pki: Pki, given_as: str
) -> None:
    upstream = dev_env.client.service_client.config.target_host
    async with tls_proxy(pki, upstream, require_client_cert=True) as proxy:
        read = pki.path if given_as == "path" else pki.data
        settings = settings_for(
            proxy,
            dev_env,
            **{
                f"temporal_tls_client_cert_{given_as}": read("client.pem"),
                f"temporal_tls_client_key_{given_as}": read("client.key"),
                f"temporal_tls_server_ca_cert_{given_as}": read("ca.pem"),
            },
            temporal_tls_server_name=SERVER_NAME,
        )
        assert await reaches_temporal(settings)
        assert "qbo-sync worker" in proxy.clients


async def test_without_a_client_certificate_an_mtls_server_refuses(
    dev_env: WorkflowEnvironment, pki: Pki
) -> None:
    upstream = dev_env.client.service_client.config.target_host
    async with tls_proxy(pki, upstream, require_client_cert=True) as proxy:
        settings = settings_for(
            proxy,
            dev_env,
            temporal_tls_server_ca_cert_path=pki.path("ca.pem"),
            temporal_tls_server_name=SERVER_NAME,
        )
        assert not await reaches_temporal(settings)


async def test_the_server_certificate_is_verified(dev_env: WorkflowEnvironment, pki: Pki) -> None:
    upstream = dev_env.client.service_client.config.target_host
    async with tls_proxy(pki, upstream, require_client_cert=False) as proxy:
        # TLS with the system's roots: the private CA is unknown to them.
        assert not await reaches_temporal(settings_for(proxy, dev_env, temporal_tls=True))
        # The private CA, but another name than the certificate's.
        wrong_name = settings_for(
            proxy,
            dev_env,
            temporal_tls_server_ca_cert_path=pki.path("ca.pem"),
            temporal_tls_server_name="other.test",
        )
        assert not await reaches_temporal(wrong_name)
        # Plaintext to a TLS server.
        assert not await reaches_temporal(settings_for(proxy, dev_env))


async def test_an_api_key_goes_over_tls(dev_env: WorkflowEnvironment, pki: Pki) -> None:
    """Temporal Cloud's API keys: TLS is on by the key alone (with the server's CA for this private server)."""
    upstream = dev_env.client.service_client.config.target_host
    async with tls_proxy(pki, upstream, require_client_cert=False) as proxy:
        settings = settings_for(
            proxy,
            dev_env,
            temporal_api_key="test-temporal-api-key",
            temporal_tls_server_ca_cert_data=pki.data("ca.pem"),
            temporal_tls_server_name=SERVER_NAME,
        )
        assert await reaches_temporal(settings)
        assert proxy.clients == [""]  # a TLS connection, without a client certificate
