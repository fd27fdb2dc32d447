"""Webhook acknowledgment: latency of 200 concurrent signed deliveries to `POST /webhooks/quickbooks`.

Each delivery is one classic-format notification with one Payment Update event (a distinct payment id) for the
company of a connected account, signed as Intuit signs it (base64 HMAC-SHA256 of the raw body with the verifier
token, in `intuit-signature`). The route verifies, stores the delivery and its event, and signal-with-starts the
company's events workflow before it answers. Latency is measured here, in the client, per request.

Baseline, in the same run, same server and same client: the same number of concurrent requests to the API's
trivial `GET /healthz`. Every request has its own connection, opened before the burst. Each repetition sends one burst of each, then waits until the
engine has processed every stored event, so the next burst starts on a quiet engine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bench.harness import VERIFIER_TOKEN, Stack, cpu_seconds, cpu_used, log, median, percentile


@dataclass
class Burst:
    latencies: list[float]
    seconds: float
    failures: int = 0

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)


@dataclass
class WebhookAckResult:
    concurrency: int
    healthz: list[Burst] = field(default_factory=list)
    webhooks: list[Burst] = field(default_factory=list)
    # After each webhook burst: seconds until every stored event was processed (QuickBooks reads, signals).
    drain_seconds: list[float] = field(default_factory=list)
    # CPU seconds by process during each webhook burst.
    cpu: list[dict[str, float]] = field(default_factory=list)

    def medians(self, bursts: list[Burst]) -> tuple[float, float]:
        return median([burst.p50 for burst in bursts]), median([burst.p99 for burst in bursts])


def signed_delivery(realm_id: str, payment_id: str) -> tuple[bytes, dict[str, str]]:
    """A classic notification with one Payment Update, and the headers Intuit sends with it."""
    body = json.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": realm_id,
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Payment",
                                "id": payment_id,
                                "operation": "Update",
                                "lastUpdated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                            }
                        ]
                    },
                }
            ]
        }
    ).encode()
    signature = base64.b64encode(hmac.new(VERIFIER_TOKEN.encode(), body, hashlib.sha256).digest()).decode()
    return body, {"intuit-signature": signature, "Content-Type": "application/json"}


class Connection:
    """One kept-alive HTTP/1.1 connection, spoken by hand so the client costs microseconds, not milliseconds.

    An HTTP library's per-request overhead, times 200 requests in one event loop, would be measured as the
    server's latency; writing bytes and reading the answer keeps the client out of the figures.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in lines[1:] if line)
        }
        if b"content-length" not in headers:
            raise RuntimeError(f"an answer without Content-Length: {head!r}")
        return status, await self._reader.readexactly(int(headers[b"content-length"]))

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


def http_request(
    method: str, url: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    host = urlsplit(url).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def burst(url: str, requests: list[bytes], check: Callable[[int, bytes], bool]) -> Burst:
    """Send every request at once, each on its own connection (opened beforehand, not timed)."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    connections = await asyncio.gather(*(Connection.open(parts.hostname, parts.port) for _ in requests))
    gate = asyncio.Event()

    async def one(connection: Connection, request: bytes) -> tuple[float, bool]:
        await gate.wait()
        started = time.perf_counter()
        status, body = await connection.exchange(request)
        return time.perf_counter() - started, check(status, body)

    try:
        tasks = [asyncio.create_task(one(*pair)) for pair in zip(connections, requests, strict=True)]
        await asyncio.sleep(0.05)  # every task is waiting at the gate
        started = time.perf_counter()
        gate.set()
        results = await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    return Burst(
        latencies=[latency for latency, _ in results],
        seconds=seconds,
        failures=sum(1 for _, ok in results if not ok),
    )


async def closed_loop(
    url: str, requests: list[bytes], in_flight: int, check: Callable[[int, bytes], bool]
) -> Burst:
    """Send the requests with `in_flight` at once, each lane a kept-alive connection (opened beforehand, not timed)
    that sends its next request as soon as its last is answered: what many clients each waiting for their answer
    look like to the server. Lane k sends requests k, k + in_flight, k + 2 x in_flight, ..."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    lanes = [requests[lane::in_flight] for lane in range(in_flight)]
    connections = await asyncio.gather(*(Connection.open(parts.hostname, parts.port) for _ in lanes))
    latencies: list[float] = []
    failures = 0

    async def lane(connection: Connection, queued: list[bytes]) -> None:
        nonlocal failures
        for request in queued:
            started = time.perf_counter()
            status, body = await connection.exchange(request)
            latencies.append(time.perf_counter() - started)
            failures += 0 if check(status, body) else 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(lane(*pair) for pair in zip(connections, lanes, strict=True)))
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    return Burst(latencies=latencies, seconds=seconds, failures=failures)


def _accepted(status: int, body: bytes) -> bool:
    if status != 200:
        return False
    answer = json.loads(body)
    return bool(answer["accepted"] == 1 and answer["duplicates"] == 0 and answer.get("unreadable", 0) == 0)


def healthy(status: int, body: bytes) -> bool:
    return status == 200


async def run(stack: Stack, *, concurrency: int, repeat: int) -> WebhookAckResult:
    result = WebhookAckResult(concurrency)
    async with stack.running_worker():
        next_payment = 10_000

        def webhook_requests(realm_id: str, count: int) -> list[bytes]:
            nonlocal next_payment
            requests = []
            for _ in range(count):
                body, headers = signed_delivery(realm_id, str(next_payment))
                next_payment += 1
                requests.append(http_request("POST", stack.api_url, "/webhooks/quickbooks", body, headers))
            return requests

        def healthz_requests(count: int) -> list[bytes]:
            return [http_request("GET", stack.api_url, "/healthz") for _ in range(count)]

        # Warm-up: the route and the events workflow run once.
        _, realm_id = await stack.connected_account("webhooks")
        await burst(stack.api_url, healthz_requests(concurrency), healthy)
        await burst(stack.api_url, webhook_requests(realm_id, concurrency // 10 or 1), _accepted)
        await stack.settle()
        for attempt in range(1, repeat + 1):
            # A company of its own per burst: reading 200 payments spends 200 of its 500 calls a minute.
            _, realm_id = await stack.connected_account("webhooks")
            await stack.settle()
            healthz = await burst(stack.api_url, healthz_requests(concurrency), healthy)
            before = cpu_seconds(stack)
            webhooks = await burst(stack.api_url, webhook_requests(realm_id, concurrency), _accepted)
            result.cpu.append(cpu_used(before, cpu_seconds(stack)))
            if healthz.failures or webhooks.failures:
                raise RuntimeError(
                    f"{healthz.failures} /healthz and {webhooks.failures} webhook requests were not accepted"
                )
            drain = await stack.settle()
            result.healthz.append(healthz)
            result.webhooks.append(webhooks)
            result.drain_seconds.append(drain)
            log(
                f"webhooks {attempt}/{repeat}: /healthz p50 {healthz.p50 * 1000:.0f} ms p99 "
                f"{healthz.p99 * 1000:.0f} ms; webhook p50 {webhooks.p50 * 1000:.0f} ms p99 "
                f"{webhooks.p99 * 1000:.0f} ms; events processed {drain:.1f} s after the burst"
            )
    return result


def describe(result: WebhookAckResult) -> dict[str, Any]:
    return {
        "concurrency": result.concurrency,
        "healthz_p50_p99_seconds": [(burst.p50, burst.p99) for burst in result.healthz],
        "webhook_p50_p99_seconds": [(burst.p50, burst.p99) for burst in result.webhooks],
        "drain_seconds": result.drain_seconds,
        "cpu_seconds": result.cpu,
    }
