"""Disconnect & Void: how long voiding N synced invoices takes under Intuit's limits, and the 429s it meets.

Preparation (not measured): one Premium account connected to a new emulator company through the real OAuth
flow sends N invoices over C clients through the HTTP API and waits until all are `synced`; at the same time the
raw client creates the same N invoices (same bodies) in a second company. In both companies the same few invoices
are then paid in full in QuickBooks (the admin API, i.e. the user), so QuickBooks refuses to void them; the
engine hears of its payments through Intuit's webhooks and lists those invoices as `paid`. The benchmark then
waits until neither company has a call left in the emulator's 60-second window, so both start with Intuit's
whole budget.

Engine: from `POST /v1/accounts/{id}/quickbooks/disconnect` `{"mode": "disconnect_and_void"}` until
`GET /v1/accounts/{id}/quickbooks/connection` reads `disconnected` (polled every 0.1 s). Calls and 429s come from
the emulator's request log of that window. Afterwards the counts in the connection status, what QuickBooks holds
and what the invoice list shows are checked.

Baseline, in the same run: `qbo.client.QboClient` with a `RealmLimiter` at Intuit's limits voids every invoice of
the second company directly, with the SyncToken it knows (read-free, as the engine does), as many in flight as
the limiter allows; refusals are counted, never forced.

Where the time goes is read from the request log: before the first call, calls in flight, idle while Intuit's
60-second window held 500 calls (the rate limit binding), idle while only the caller's own window was full (a
`RealmLimiter` counts the calls QuickBooks answered, as the emulator does, not the ones it answered 429, over its own
window length), idle with room in both (the caller's own pauses), and after the last call.

Variants: `intuit`, the engine's worker and the baseline's limiter as shipped (500 calls, each counted for 61 s:
Intuit's minute and a second's margin); `edge`, a diagnostic: both limiters count each call for exactly 60 s
(`bench.limited_worker --window-seconds 60`), so they admit calls at the very edge of Intuit's window, which shows
what the margin is for.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from activities.mapping import is_voided
from bench.harness import (
    INTUIT_LIMITS,
    THROTTLED,
    Limits,
    Stack,
    Variant,
    bounded,
    by_name,
    cpu_seconds,
    cpu_used,
    log,
    median,
    summarize_calls,
    unique,
)
from bench.sync_throughput import create_invoices_directly
from bench.workload import client_of, invoice_number, send_payload
from qbo.client import QboClient, request_id
from qbo.errors import QboValidationError
from workflows.ids import connection_workflow_id

VOID_CALL = "POST invoice?operation=void"
EDGE_LIMITS = Limits(per_minute=500, in_flight=10, window_seconds=60.0)
POLL_INTERVAL = 0.1
PREPARE_TIMEOUT = 1200.0
DISCONNECT_TIMEOUT = 1800.0
# After `disconnected`, the invoice workflows record each outcome; the longest wait for them.
OUTCOMES_TIMEOUT = 600.0
QUIET_TIMEOUT = 180.0
# Intuit's (and the emulator's) rate window.
WINDOW_SECONDS = 60.0
# Idle time is classified in steps this long; a pause is an idle stretch with room in both windows this long.
STEP_SECONDS = 0.01
PAUSE_SECONDS = 0.25
# Idle stretches at least this long are listed with when they happened.
LONG_IDLE_SECONDS = 1.0
INTUIT_FULL = "Intuit's window full"
LIMITER_FULL = "only the limiter's longer window full"
ROOM = "room in both"


VARIANTS = by_name(
    Variant(
        "intuit",
        "as shipped: the engine's limiter and the baseline's count 500 calls, each for 61 s (Intuit's minute "
        "and a second's margin)",
        engine_limits=None,
        raw_limits=INTUIT_LIMITS,
    ),
    Variant(
        "edge",
        "diagnostic: both limiters count each call for exactly Intuit's 60 s, without the margin "
        "(bench.limited_worker --window-seconds 60)",
        engine_limits=EDGE_LIMITS,
        raw_limits=EDGE_LIMITS,
    ),
)


@dataclass
class TimeSplit:
    """Where a run's wall time went, from the request log (seconds)."""

    before_first_call: float
    in_flight: float
    idle_intuit_full: float
    idle_limiter_full: float
    idle_with_room: float
    after_last_call: float
    # Idle stretches with room in both windows of at least PAUSE_SECONDS; the most calls Intuit admitted in any
    # 60 s; idle stretches of at least LONG_IDLE_SECONDS as (start, end, what mostly held them), in seconds since
    # the run started.
    pauses: int
    peak_per_window: int
    long_idle: list[tuple[float, float, str]] = field(default_factory=list)

    def rows(self) -> list[tuple[str, float]]:
        return [
            ("before the first call", self.before_first_call),
            ("calls in flight", self.in_flight),
            ("idle, Intuit's 60 s window full (the rate limit)", self.idle_intuit_full),
            ("idle, only the limiter's window full (when it is longer than 60 s)", self.idle_limiter_full),
            ("idle, room in both (the caller's own pauses)", self.idle_with_room),
            ("after the last call", self.after_last_call),
        ]


@dataclass
class VoidRun:
    """One measured Disconnect & Void, by the engine or by the raw client."""

    invoices: int
    seconds: float
    calls: dict[str, int]
    split: TimeSplit
    voided: int
    refused: int
    # When QuickBooks answered 429, in seconds since the run started.
    throttled_at: list[float]
    # What was checked after the run, each with what was expected ("ok" or the difference).
    checks: list[str] = field(default_factory=list)
    # Engine only: the disconnect request's answer time, each move of the status' voided/failed counts, when every
    # invoice showed its outcome (seconds after `disconnected`), and CPU seconds by process during the window.
    accepted_seconds: float | None = None
    # Engine only: the connection workflow's phases (from its history and the request log), and its batches.
    phases: list[tuple[str, float]] = field(default_factory=list)
    batches: int = 0
    progress_steps: list[tuple[float, int, int]] = field(default_factory=list)
    outcomes_seconds: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def served_calls(self) -> int:
        return sum(count for kind, count in self.calls.items() if kind != THROTTLED)

    @property
    def throttled(self) -> int:
        return self.calls.get(THROTTLED, 0)

    @property
    def void_calls(self) -> int:
        return self.calls.get(VOID_CALL, 0)

    @property
    def other_calls(self) -> int:
        return self.served_calls - self.void_calls

    @property
    def per_minute(self) -> float:
        return self.served_calls / (self.seconds / 60)

    @property
    def over_rate(self) -> float:
        """Wall time over what the calls need at the sustained rate (calls / 500 minutes)."""
        return self.seconds / (self.served_calls / INTUIT_LIMITS.per_minute * 60)

    @property
    def window_floor(self) -> float:
        """The least time a sliding window allows from empty: every 500 calls after the first wait a minute."""
        return (math.ceil(self.served_calls / INTUIT_LIMITS.per_minute) - 1) * WINDOW_SECONDS


@dataclass
class Repetition:
    engine: VoidRun
    raw: VoidRun
    prepare_seconds: float


@dataclass
class VariantResult:
    variant: Variant
    repetitions: list[Repetition] = field(default_factory=list)

    def median_run(self, who: str) -> VoidRun:
        ordered = sorted((getattr(rep, who) for rep in self.repetitions), key=lambda run: run.seconds)
        chosen: VoidRun = ordered[len(ordered) // 2]
        return chosen

    @property
    def ratio(self) -> float:
        return median([rep.engine.seconds for rep in self.repetitions]) / median(
            [rep.raw.seconds for rep in self.repetitions]
        )


@dataclass
class DisconnectVoidResult:
    invoices: int
    paid: int
    clients: int
    repeat: int
    variants: list[VariantResult] = field(default_factory=list)


@dataclass
class Prepared:
    account_id: str
    engine_realm: str
    raw_realm: str
    paid: list[int]


# --- Where the time goes -----------------------------------------------------------------------------------


def _instant(entry: dict[str, Any]) -> tuple[float, float]:
    """(arrival, end) of a logged call, in Unix seconds: the log stamps the end and the duration."""
    end = datetime.fromisoformat(str(entry["time"])).timestamp()
    return end - float(entry["duration_ms"]) / 1000, end


def split_time(
    entries: Sequence[dict[str, Any]], started: float, finished: float, limits: Limits
) -> TimeSplit:
    """Split [started, finished] (Unix seconds) by what the company's calls were doing.

    Intuit's window counts the calls it admits, on arrival, over 60 s; the caller's limiter counts the same calls
    (it gives back the ones answered 429) over its own window. Arrival stands in for admission: they are
    milliseconds apart.
    """
    spans = sorted(_instant(entry) for entry in entries)
    if not spans:
        return TimeSplit(finished - started, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0)
    admitted = sorted(_instant(entry)[0] for entry in entries if entry.get("status") != 429)

    def counted(stamps: list[float], moment: float, seconds: float) -> int:
        return bisect_right(stamps, moment) - bisect_right(stamps, moment - seconds)

    def state(moment: float) -> str:
        if counted(admitted, moment, WINDOW_SECONDS) >= limits.per_minute:
            return INTUIT_FULL
        if counted(admitted, moment, limits.window_seconds) >= limits.per_minute:
            return LIMITER_FULL
        return ROOM

    busy = 0.0
    span_start, span_end = spans[0]
    gaps: list[tuple[float, float]] = []
    for start, end in spans[1:]:
        if start > span_end:
            busy += span_end - span_start
            gaps.append((span_end, start))
            span_start, span_end = start, end
        else:
            span_end = max(span_end, end)
    busy += span_end - span_start
    idle = {INTUIT_FULL: 0.0, LIMITER_FULL: 0.0, ROOM: 0.0}
    pauses = 0
    long_idle: list[tuple[float, float, str]] = []
    for gap_start, gap_end in gaps:
        in_gap = dict.fromkeys(idle, 0.0)
        moment = gap_start
        while moment < gap_end:
            step = min(STEP_SECONDS, gap_end - moment)
            in_gap[state(moment)] += step
            moment += step
        for name, seconds in in_gap.items():
            idle[name] += seconds
        if in_gap[ROOM] >= PAUSE_SECONDS:
            pauses += 1
        if gap_end - gap_start >= LONG_IDLE_SECONDS:
            held_by = max(in_gap, key=lambda name: in_gap[name])
            long_idle.append((gap_start - started, gap_end - started, held_by))
    peak = max(
        (bisect_left(admitted, arrival + WINDOW_SECONDS) - index for index, arrival in enumerate(admitted)),
        default=0,
    )
    return TimeSplit(
        spans[0][0] - started,
        busy,
        idle[INTUIT_FULL],
        idle[LIMITER_FULL],
        idle[ROOM],
        finished - span_end,
        pauses,
        peak,
        long_idle,
    )


def _throttled_at(entries: Sequence[dict[str, Any]], started: float) -> list[float]:
    return sorted(_instant(entry)[0] - started for entry in entries if entry.get("status") == 429)


@dataclass
class _Activity:
    name: str
    scheduled: float
    started: float = 0.0
    closed: float = 0.0


async def _connection_activities(stack: Stack, account_id: str) -> list[_Activity]:
    """The connection workflow's activities in order, with their times (Unix seconds) from its history."""
    history = await stack.temporal.get_workflow_handle(connection_workflow_id(account_id)).fetch_history()
    activities: dict[int, _Activity] = {}
    for event in history.events:
        at = event.event_time.ToDatetime(tzinfo=UTC).timestamp()
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            activities[event.event_id] = _Activity(name, at)
        elif event.HasField("activity_task_started_event_attributes"):
            activities[event.activity_task_started_event_attributes.scheduled_event_id].started = at
        elif event.HasField("activity_task_completed_event_attributes"):
            activities[event.activity_task_completed_event_attributes.scheduled_event_id].closed = at
    return list(activities.values())


def engine_phases(
    activities: Sequence[_Activity],
    entries: Sequence[dict[str, Any]],
    counts_moved: Sequence[float],
    started: float,
    finished: float,
) -> tuple[list[tuple[str, float]], int]:
    """The engine's wall time by phase of its connection workflow, and the number of void batches.

    Each batch is one `void_for_disconnect` activity: it loads the connection and the next batch of invoices,
    voids them (waiting for its limiter as needed), writes the outcomes (the status' counts move when they are
    committed; `counts_moved` are the polls that saw them move, Unix seconds), then signals each invoice's
    workflow.
    """
    batches = [activity for activity in activities if activity.name == "void_for_disconnect"]
    if not batches:
        return [], 0
    instants = sorted(_instant(entry) for entry in entries)
    voiding = writing = signalling = between = 0.0
    for index, batch in enumerate(batches):
        ends = [end for start, end in instants if batch.started <= start <= batch.closed]
        last = max(ends, default=batch.started)
        written = next((at for at in counts_moved if last <= at <= batch.closed), batch.closed)
        voiding += last - batch.started
        writing += written - last
        signalling += batch.closed - written
        if index + 1 < len(batches):
            between += batches[index + 1].started - batch.closed
    phases = [
        ("disconnect request -> first batch started (begin_disconnect)", batches[0].started - started),
        ("batches: started -> last call answered (loading, calls, waits for the limiter)", voiding),
        ("batches: last call answered -> counts moved in the status (outcomes written)", writing),
        ("batches: counts moved -> batch done (invoice workflows signalled)", signalling),
        ("between batches (batch done -> next started)", between),
        ("last batch done -> `disconnected` read (finish_disconnect, revoke)", finished - batches[-1].closed),
    ]
    return phases, len(batches)


# --- Preparation -------------------------------------------------------------------------------------------


def _invoice_key(index: int) -> str:
    return f"dv-{index:05d}"


async def _sync_through_engine(
    stack: Stack, account_id: str, invoices: int, clients: int, concurrency: int
) -> None:
    async def send(index: int) -> None:
        name, email = client_of(index, clients)
        payload = send_payload(invoice_number("D", index), name, email)
        await stack.send_invoice(account_id, _invoice_key(index), payload)

    await bounded(concurrency, [partial(send, index) for index in range(invoices)])
    deadline = time.monotonic() + PREPARE_TIMEOUT
    while not await stack.count_at_least(account_id, "synced", invoices):
        stack.check_alive()
        if await stack.count_at_least(account_id, "failed", 1):
            failed = await stack.invoices(account_id, "failed")
            raise RuntimeError(f"{len(failed)} invoices failed to sync, e.g. {failed[0]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{invoices} invoices were not all synced within {PREPARE_TIMEOUT:.0f} s")
        await asyncio.sleep(1.0)


async def _create_directly(
    stack: Stack, realm_id: str, invoices: int, clients: int, concurrency: int, limits: Limits
) -> list[str]:
    async with stack.raw_client(realm_id, limits) as client:
        return await create_invoices_directly(client, invoices, clients, concurrency)


async def _wait_for_quiet_windows(stack: Stack, realm_ids: Sequence[str], limits: Limits) -> None:
    """Wait until no call of these companies is left in the emulator's window, nor in our limiters'."""
    started = time.monotonic()
    while True:
        response = await stack.admin.get("/__admin/throttle")
        response.raise_for_status()
        realms = response.json()["realms"]
        busy = sum(
            int(realms.get(realm, {}).get("last_minute", 0)) + int(realms.get(realm, {}).get("in_flight", 0))
            for realm in realm_ids
        )
        if busy == 0:
            break
        if time.monotonic() - started > QUIET_TIMEOUT:
            raise RuntimeError(
                f"the companies' windows did not empty within {QUIET_TIMEOUT:.0f} s ({busy} left)"
            )
        await asyncio.sleep(0.5)
    # A limiter counts a call on admission, a moment before the emulator sees it, and perhaps over a longer window.
    await asyncio.sleep(1.0 + max(limits.window_seconds - WINDOW_SECONDS, 0.0))


async def prepare(
    stack: Stack, variant: Variant, *, invoices: int, paid: int, clients: int, concurrency: int
) -> Prepared:
    """N synced invoices in the engine's company and N direct ones in the baseline's, `paid` of each paid."""
    account_id, engine_realm = await stack.connected_account("disconnect")
    raw_realm = await stack.create_company(unique("Bench raw void"))
    # Both at once: each company has its own budget of 500 calls a minute.
    _, raw_ids = await asyncio.gather(
        _sync_through_engine(stack, account_id, invoices, clients, concurrency),
        _create_directly(stack, raw_realm, invoices, clients, concurrency, variant.raw_limits),
    )
    # Spread over the invoices, so refusals fall in every part of the run (one in each batch of 100 by default).
    chosen = sorted({index * invoices // paid for index in range(paid)}) if paid else []
    for index in chosen:
        invoice = await stack.invoice(account_id, _invoice_key(index))
        await stack.pay_in_quickbooks(engine_realm, invoice["quickbooks"]["invoice_id"])
        await stack.pay_in_quickbooks(raw_realm, raw_ids[index])
    if chosen:
        await stack.wait_for(
            lambda: stack.count_at_least(account_id, "paid", len(chosen)),
            bool,
            within=120.0,
            interval=0.25,
            what=f"{len(chosen)} invoices to be listed as paid",
        )
    await stack.settle()
    await _wait_for_quiet_windows(stack, [engine_realm, raw_realm], variant.engine_limits or INTUIT_LIMITS)
    return Prepared(account_id, engine_realm, raw_realm, chosen)


# --- Checks ------------------------------------------------------------------------------------------------


def _check(what: str, found: int, expected: int) -> str:
    return f"{what}: {found}" + (" (ok)" if found == expected else f" (expected {expected})")


async def _check_company(stack: Stack, realm_id: str, invoices: int, paid: int) -> list[str]:
    held = (await stack.company(realm_id))["invoices"]
    voided = sum(1 for invoice in held if is_voided(invoice))
    paid_open = sum(
        1 for invoice in held if not is_voided(invoice) and float(invoice.get("Balance") or 0) == 0
    )
    return [
        _check("QuickBooks: invoices voided", voided, invoices - paid),
        _check("QuickBooks: paid invoices left as they were", paid_open, paid),
    ]


# --- The engine --------------------------------------------------------------------------------------------


async def _connection(stack: Stack, account_id: str) -> dict[str, Any]:
    response = await stack.api.get(f"/v1/accounts/{account_id}/quickbooks/connection")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def _outcomes_recorded(stack: Stack, account_id: str) -> bool:
    """No invoice is still listed as followed in QuickBooks (each shows `voided` or `disconnected`)."""
    for status in ("synced", "partially_paid", "paid"):
        if await stack.count_at_least(account_id, status, 1):
            return False
    return True


async def run_engine(stack: Stack, variant: Variant, prepared: Prepared, invoices: int) -> VoidRun:
    account_id, realm_id = prepared.account_id, prepared.engine_realm
    paid = len(prepared.paid)
    after_seq = await stack.last_seq(realm_id)
    cpu_before = cpu_seconds(stack)
    started = time.time()
    response = await stack.api.post(
        f"/v1/accounts/{account_id}/quickbooks/disconnect", json={"mode": "disconnect_and_void"}
    )
    if response.status_code != 202:
        raise RuntimeError(f"the disconnect was refused: {response.status_code} {response.text}")
    accepted = time.time() - started
    steps: list[tuple[float, int, int]] = []
    while True:
        body = await _connection(stack, account_id)
        progress = body.get("disconnect") or {}
        counts = (int(progress.get("voided", 0)), int(progress.get("failed", 0)))
        if not steps or counts != steps[-1][1:]:
            steps.append((time.time() - started, *counts))
        if body["status"] == "disconnected":
            break
        if time.time() - started > DISCONNECT_TIMEOUT:
            raise RuntimeError(f"not disconnected within {DISCONNECT_TIMEOUT:.0f} s: {body}")
        stack.check_alive()
        await asyncio.sleep(POLL_INTERVAL)
    finished = time.time()
    cpu = cpu_used(cpu_before, cpu_seconds(stack))
    entries = await stack.qbo_requests(realm_id, after_seq)
    window = [entry for entry in entries if _instant(entry)[0] <= finished]
    voided, failed = int(progress["voided"]), int(progress["failed"])
    checks = [
        _check("connection status: voided", voided, invoices - paid),
        _check("connection status: failed (refused)", failed, paid),
        _check("connection status: total", int(progress["total"]), invoices),
        _check("connection status: failures listed", len(progress.get("failures") or []), paid),
        _check("calls after `disconnected`", len(entries) - len(window), 0),
    ]
    # The invoice workflows record each outcome after the connection has turned `disconnected`.
    outcomes_seconds: float | None = None
    while time.time() - finished < OUTCOMES_TIMEOUT:
        if await _outcomes_recorded(stack, account_id):
            outcomes_seconds = time.time() - finished
            break
        stack.check_alive()
        await asyncio.sleep(0.25)
    checks += [
        _check("invoices listed as voided", len(await stack.invoices(account_id, "voided")), invoices - paid),
        _check(
            "invoices listed as disconnected", len(await stack.invoices(account_id, "disconnected")), paid
        ),
        *await _check_company(stack, realm_id, invoices, paid),
    ]
    phases, batches = engine_phases(
        await _connection_activities(stack, account_id),
        window,
        [started + at for at, _, _ in steps[1:]],
        started,
        finished,
    )
    return VoidRun(
        invoices,
        finished - started,
        summarize_calls(window),
        split_time(window, started, finished, variant.engine_limits or INTUIT_LIMITS),
        voided,
        failed,
        _throttled_at(window, started),
        checks,
        accepted_seconds=accepted,
        phases=phases,
        batches=batches,
        progress_steps=steps,
        outcomes_seconds=outcomes_seconds,
        cpu=cpu,
    )


# --- The raw baseline --------------------------------------------------------------------------------------


async def _void_directly(client: QboClient, invoice_id: str, sync_token: str) -> bool:
    """Void with the known SyncToken; False when QuickBooks refuses (a payment is applied)."""
    try:
        await client.void_invoice(
            invoice_id, sync_token, request_id=request_id(client.realm_id, "raw.void", invoice_id)
        )
    except QboValidationError:
        return False
    return True


async def run_raw(stack: Stack, variant: Variant, prepared: Prepared, invoices: int) -> VoidRun:
    realm_id = prepared.raw_realm
    paid = len(prepared.paid)
    # What the engine knows from its creates and Intuit's webhooks, the baseline reads before the clock starts.
    known = [
        (str(invoice["Id"]), str(invoice["SyncToken"]))
        for invoice in (await stack.company(realm_id))["invoices"]
    ]
    async with stack.raw_client(realm_id, variant.raw_limits) as client:
        after_seq = await stack.last_seq(realm_id)
        started = time.time()
        outcomes = await bounded(
            variant.raw_limits.in_flight, [partial(_void_directly, client, *invoice) for invoice in known]
        )
        finished = time.time()
    entries = await stack.qbo_requests(realm_id, after_seq)
    voided = sum(outcomes)
    checks = [
        _check("voided", voided, invoices - paid),
        _check("refused", len(outcomes) - voided, paid),
        *await _check_company(stack, realm_id, invoices, paid),
    ]
    return VoidRun(
        invoices,
        finished - started,
        summarize_calls(entries),
        split_time(entries, started, finished, variant.raw_limits),
        voided,
        len(outcomes) - voided,
        _throttled_at(entries, started),
        checks,
    )


# --- The benchmark -----------------------------------------------------------------------------------------


def _summary(run: VoidRun) -> str:
    return (
        f"{run.seconds:.1f} s, {run.served_calls} calls ({run.void_calls} voids), {run.throttled} throttled, "
        f"{run.voided} voided, {run.refused} refused, {run.per_minute:.0f} calls/min"
    )


async def run_variant(
    stack: Stack,
    variant: Variant,
    *,
    invoices: int,
    paid: int,
    clients: int,
    concurrency: int,
    repeat: int,
) -> VariantResult:
    result = VariantResult(variant)
    async with stack.running_worker(variant.engine_limits):
        for attempt in range(1, repeat + 1):
            step = f"disconnect [{variant.name}] {attempt}/{repeat}"
            log(f"{step}: preparing 2 x {invoices} invoices ({paid} paid in each)")
            prepare_started = time.monotonic()
            prepared = await prepare(
                stack, variant, invoices=invoices, paid=paid, clients=clients, concurrency=concurrency
            )
            prepare_seconds = time.monotonic() - prepare_started
            log(f"{step}: prepared in {prepare_seconds:.0f} s; engine Disconnect & Void")
            engine = await run_engine(stack, variant, prepared, invoices)
            log(f"{step}: engine {_summary(engine)}")
            await stack.settle()
            await _wait_for_quiet_windows(stack, [prepared.raw_realm], variant.raw_limits)
            raw = await run_raw(stack, variant, prepared, invoices)
            log(f"{step}: raw QboClient {_summary(raw)}")
            result.repetitions.append(Repetition(engine, raw, prepare_seconds))
            await stack.settle()
    return result


async def run(
    stack: Stack,
    *,
    invoices: int,
    paid: int,
    clients: int,
    concurrency: int,
    repeat: int,
    variants: list[str],
) -> DisconnectVoidResult:
    result = DisconnectVoidResult(invoices, min(paid, invoices), clients, repeat)
    await stack.set_emulator_limits(INTUIT_LIMITS)
    for name in variants:
        result.variants.append(
            await run_variant(
                stack,
                VARIANTS[name],
                invoices=invoices,
                paid=result.paid,
                clients=clients,
                concurrency=concurrency,
                repeat=repeat,
            )
        )
    return result


def _describe_run(run: VoidRun) -> dict[str, Any]:
    return {
        "seconds": run.seconds,
        "calls": run.calls,
        "served_calls": run.served_calls,
        "throttled": run.throttled,
        "throttled_at": run.throttled_at,
        "calls_per_minute": run.per_minute,
        "wall_over_calls_at_500_per_minute": run.over_rate,
        "sliding_window_floor_seconds": run.window_floor,
        "voided": run.voided,
        "refused": run.refused,
        "time_split": vars(run.split),
        "checks": run.checks,
        "accepted_seconds": run.accepted_seconds,
        "phases": run.phases,
        "batches": run.batches,
        "progress_steps": run.progress_steps,
        "outcomes_seconds_after_disconnected": run.outcomes_seconds,
        "cpu": run.cpu,
    }


def describe(result: DisconnectVoidResult) -> dict[str, Any]:
    """The figures as plain data (for --json)."""
    return {
        "invoices": result.invoices,
        "paid": result.paid,
        "clients": result.clients,
        "variants": [
            {
                "name": item.variant.name,
                "description": item.variant.description,
                "ratio_engine_over_raw": item.ratio,
                "repetitions": [
                    {
                        "prepare_seconds": rep.prepare_seconds,
                        "engine": _describe_run(rep.engine),
                        "raw": _describe_run(rep.raw),
                    }
                    for rep in item.repetitions
                ],
            }
            for item in result.variants
        ],
    }
