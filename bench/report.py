"""The benchmarks' figures as plain-text tables (Markdown, so they paste into bench/README.md as they are)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.disconnect_void import DisconnectVoidResult, VariantResult, VoidRun
from bench.first_sync import TARGET_CALLS_PER_INVOICE, TARGET_OVER_DIRECT, FirstSyncResult, FirstSyncRun
from bench.harness import describe_calls, median, percentile, runs, spread
from bench.history import CASE_TITLES, HistoryResult, grouped
from bench.qbo_calls import QboCallsResult
from bench.sync_throughput import SyncThroughputResult, calls_per_invoice, latency_summary
from bench.webhook_ack import WebhookAckResult

CPU_ORDER = ("worker", "temporal", "api", "postgres", "emulator", "driver")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True))
            + " |"
        )

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(headers), separator, *(line(row) for row in rows)])


def sync_section(result: SyncThroughputResult, repeat: int) -> str:
    rows = []
    cpu_rows = []
    for item in result.variants:
        p50, p99 = latency_summary(item.engine)
        send_p50 = median([percentile(run.send_latencies, 0.5) for run in item.engine])
        send_p99 = median([percentile(run.send_latencies, 0.99) for run in item.engine])
        throttled = median([run.throttled for run in item.engine])
        retries = "/".join(str(run.sync_retries) for run in item.engine)
        rows.append(
            [
                item.variant.name,
                spread([run.per_second for run in item.raw]),
                spread([run.per_second for run in item.engine]),
                f"{item.ratio:.2f}",
                spread([run.seconds for run in item.engine]),
                f"{calls_per_invoice(item.engine):.3f} ({calls_per_invoice(item.raw):.3f})",
                f"{throttled:.0f}",
                retries,
                f"{p50:.1f} / {p99:.1f}",
                f"{send_p50 * 1000:.0f} / {send_p99 * 1000:.0f}",
            ]
        )
        per_hundred = {
            name: median([run.cpu.get(name, 0.0) for run in item.engine]) * 100 / result.invoices
            for name in CPU_ORDER
        }
        busy = median([sum(run.cpu.values()) / run.seconds for run in item.engine])
        events = median([median(run.history_events) for run in item.engine])
        cpu_rows.append(
            [
                item.variant.name,
                *(f"{per_hundred[name]:.1f}" for name in CPU_ORDER),
                f"{busy:.2f}",
                f"{events:g}",
            ]
        )
    variants = "\n".join(f"- `{item.variant.name}`: {item.variant.description}" for item in result.variants)
    calls = "\n".join(
        f"- `{item.variant.name}` engine run: {describe_calls(item.engine[len(item.engine) // 2].calls)}"
        for item in result.variants
    )
    return "\n".join(
        [
            f"## Sync throughput: {result.invoices} invoices over {result.clients} clients, "
            f"{result.concurrency} sends in flight",
            "",
            f"API send -> invoice listed as `synced` (created in QuickBooks). Median (min-max) of {runs(repeat)}; "
            "the raw QboClient baseline ran interleaved with the engine in the same run.",
            "",
            variants,
            "",
            table(
                [
                    "variant",
                    "raw QboClient inv/s",
                    "engine inv/s",
                    "engine/raw",
                    "engine s",
                    "QBO calls/inv engine (raw)",
                    "429s",
                    "syncs retried (each run)",
                    "sync latency p50/p99 s",
                    "API send p50/p99 ms",
                ],
                rows,
            ),
            "",
            "CPU seconds per 100 invoices during the engine's runs, by process (median), average busy cores, and "
            "the median invoice workflow's history length after the run:",
            "",
            table(["variant", *CPU_ORDER, "busy cores", "history events/inv"], cpu_rows),
            "",
            "QuickBooks calls of one engine run (the median run's log):",
            "",
            calls,
        ]
    )


def calls_section(results: Sequence[QboCallsResult]) -> str:
    """One column of calls per edition (US, and a global edition with tax codes on every line), side by side."""
    labels = [
        "connect (callback's CompanyInfo, company check, first sweep)",
        "first invoice in a new company (new client, no item)",
        "first invoice for a new client (item remembered)",
        "steady state (customer and item remembered)",
        "lifecycle: send -> synced",
        "lifecycle: payment in QuickBooks -> webhook -> paid",
        "lifecycle: send -> synced -> paid, in all",
    ]
    columns: list[list[str]] = []
    kinds: list[list[str]] = []
    for result in results:
        assert result.connect is not None
        assert result.first_in_company is not None
        assert result.new_client is not None
        steady = result.steady[len(result.steady) // 2]
        lifecycle = result.lifecycles[len(result.lifecycles) // 2]
        sync, payment, total = result.lifecycle_median
        columns.append(
            [str(result.connect.total), str(result.first_in_company.total), str(result.new_client.total),
             f"{result.steady_median:g}", f"{sync:g}", f"{payment:g}", f"{total:g}"]
        )  # fmt: skip
        kinds.append(
            [describe_calls(result.connect.calls), describe_calls(result.first_in_company.calls),
             describe_calls(result.new_client.calls), describe_calls(steady.calls),
             describe_calls(lifecycle.sync.calls), describe_calls(lifecycle.payment.calls), ""]
        )  # fmt: skip
    rows = [
        [label, *(column[index] for column in columns), *(kind[index] for kind in kinds)]
        for index, label in enumerate(labels)
    ]
    countries = [result.country for result in results]
    samples = results[0].samples
    return "\n".join(
        [
            "## QuickBooks calls per invoice",
            "",
            "Accounting API calls in the emulator's request log, invoices sent one at a time, each counted until "
            f"the engine is idle again; steady state and lifecycle are medians of {runs(samples, 'invoice')}. "
            "US: a company without sales tax; CA: a Canadian company (global edition), 13% HST on one line and "
            "the zero-rated code on the other.",
            "",
            table(
                ["invoice", *(f"calls {c}" for c in countries), *(f"by kind {c}" for c in countries)], rows
            ),
        ]
    )


def first_sync_section(result: FirstSyncResult, repeat: int) -> str:
    def median_run(items: list[FirstSyncRun]) -> FirstSyncRun:
        return sorted(items, key=lambda run: run.per_invoice)[len(items) // 2]

    rows = []
    for latency, direct_runs in result.direct.items():
        direct = result.direct_median(latency)
        rows.append(
            [
                f"{latency} ms",
                "direct script (QboClient)",
                spread([run.per_invoice for run in direct_runs], 3),
                "1.00",
                "",
                spread([run.seconds for run in direct_runs]),
                describe_calls(median_run(direct_runs).calls),
            ]
        )
        for (variant_latency, workers), items in result.engine.items():
            if variant_latency != latency:
                continue
            engine = result.engine_median((latency, workers))
            rows.append(
                [
                    f"{latency} ms",
                    f"engine, {workers} worker process{'' if workers == 1 else 'es'}",
                    spread([run.per_invoice for run in items], 3),
                    f"{engine / direct:.2f}",
                    "yes" if result.meets_targets((latency, workers)) else "NO",
                    spread([run.seconds for run in items]),
                    describe_calls(median_run(items).calls),
                ]
            )
    return "\n".join(
        [
            f"## First sync in a fresh company: {result.invoices} invoices over {result.clients} new clients, "
            f"{result.concurrency} sends in flight",
            "",
            "Accounting API calls in the emulator's request log, from the first send until the engine is idle again, "
            "at Intuit's limits, with the emulator answering at once or with Intuit-like latency on every call; the "
            "direct script does the same work with the raw QboClient on a second fresh company, "
            f"{result.concurrency} in flight. Median (min-max) of {runs(repeat)}, interleaved; by kind: the median "
            f"run's log. Target: at most {TARGET_CALLS_PER_INVOICE} calls per invoice and at most "
            f"{TARGET_OVER_DIRECT:.2f} x the direct script.",
            "",
            table(
                ["latency", "run", "QBO calls/invoice", "/ direct", "target met", "seconds", "by kind"], rows
            ),
        ]
    )


def history_section(result: HistoryResult) -> str:
    rows = []
    for case, lifecycles in result.cases.items():
        families = grouped(lifecycles[len(lifecycles) // 2].by_type)
        rows.append(
            [
                CASE_TITLES[case],
                spread([float(item.events) for item in lifecycles], digits=0),
                *(str(families.get(name, 0)) for name in HISTORY_FAMILIES),
                ", ".join(lifecycles[len(lifecycles) // 2].activities),
            ]
        )
    return "\n".join(
        [
            "## Temporal history events per invoice lifecycle",
            "",
            f"`fetch_history()` of invoice workflows once idle; median (min-max) of {runs(result.samples, 'invoice')} each, "
            "with the median one's events by family and the activities it ran.",
            "",
            table(["lifecycle", "events", *HISTORY_FAMILIES, "activities scheduled"], rows),
        ]
    )


HISTORY_FAMILIES = ("workflow task", "activity", "signal", "update", "search attributes", "timer", "other")


def webhook_section(result: WebhookAckResult) -> str:
    health_p50, health_p99 = result.medians(result.healthz)
    hook_p50, hook_p99 = result.medians(result.webhooks)
    rows = [
        ["GET /healthz (baseline)", f"{health_p50 * 1000:.0f}", f"{health_p99 * 1000:.0f}",
         spread([burst.seconds for burst in result.healthz], digits=2)],
        ["POST /webhooks/quickbooks", f"{hook_p50 * 1000:.0f}", f"{hook_p99 * 1000:.0f}",
         spread([burst.seconds for burst in result.webhooks], digits=2)],
        ["webhook / healthz", f"{hook_p50 / health_p50:.1f}x", f"{hook_p99 / health_p99:.1f}x", ""],
    ]  # fmt: skip
    cpu = {name: median([burst.get(name, 0.0) for burst in result.cpu]) for name in CPU_ORDER}
    return "\n".join(
        [
            f"## Webhook acknowledgment: {result.concurrency} concurrent signed deliveries",
            "",
            f"Client-side latency per request; medians over {runs(len(result.webhooks), 'burst')} of each, same server "
            "and client, every request on its own connection opened before the burst.",
            "",
            table(["route", "p50 ms", "p99 ms", "whole burst s"], rows),
            "",
            f"After each webhook burst the engine processed all {result.concurrency} events in "
            f"{spread(result.drain_seconds)} s. CPU seconds during a webhook burst (median): "
            + ", ".join(f"{name} {cpu[name]:.2f}" for name in CPU_ORDER)
            + ".",
        ]
    )


def disconnect_section(result: DisconnectVoidResult) -> str:
    columns: list[tuple[str, VariantResult, str]] = []
    for item in result.variants:
        suffix = "" if item.variant.name == "intuit" else f" [{item.variant.name}]"
        columns += [(f"engine{suffix}", item, "engine"), (f"raw QboClient{suffix}", item, "raw")]

    def each(figure: Callable[[VoidRun], float], digits: int = 1) -> list[str]:
        return [
            spread([figure(getattr(rep, who)) for rep in item.repetitions], digits)
            for _, item, who in columns
        ]

    def of_median(figure: Callable[[VoidRun], str]) -> list[str]:
        return [figure(item.median_run(who)) for _, item, who in columns]

    def over_floor(run: VoidRun) -> str:
        return f"{run.seconds / run.window_floor:.2f}" if run.window_floor else "-"

    rows = [
        ["wall time, s", *each(lambda run: run.seconds)],
        ["engine / raw wall time", *[f"{item.ratio:.2f}" if who == "engine" else "" for _, item, who in columns]],
        ["Accounting API calls: void POSTs + others", *of_median(lambda run: f"{run.served_calls}: {run.void_calls} + {run.other_calls}")],
        ["429 answers", *each(lambda run: run.throttled, 0)],
        ["calls per minute achieved", *each(lambda run: run.per_minute, 0)],
        ["wall time / (calls / 500 per min)", *each(lambda run: run.over_rate, 2)],
        ["wall time / sliding-window floor", *of_median(over_floor)],
        ["most calls Intuit admitted in any 60 s", *each(lambda run: run.split.peak_per_window, 0)],
        ["voided / refused", *of_median(lambda run: f"{run.voided} / {run.refused}")],
    ]  # fmt: skip
    split_rows = [
        [what, *(f"{dict(item.median_run(who).split.rows())[what]:.1f}" for _, item, who in columns)]
        for what, _ in columns[0][1].median_run(columns[0][2]).split.rows()
    ]
    split_rows.append(
        [
            "idle stretches with room in both, >= 0.25 s",
            *of_median(lambda run: str(run.split.pauses)),
        ]
    )
    engines = [(title, item.median_run(who)) for title, item, who in columns if who == "engine"]
    phase_rows = [
        [what, *(f"{dict(run.phases).get(what, 0.0):.1f}" for _, run in engines)]
        for what, _ in engines[0][1].phases
    ]
    phase_rows.append(["void batches (activities)", *(str(run.batches) for _, run in engines)])
    notes = []
    for title, item, who in columns:
        run = item.median_run(who)
        stretches = ", ".join(
            f"{start:.1f}-{end:.1f} s ({held_by})" for start, end, held_by in run.split.long_idle
        )
        throttled = ", ".join(f"{at:.1f}" for at in run.throttled_at)
        notes.append(
            f"- {title}: calls {describe_calls(run.calls)}; 429s: {f'at {throttled} s' if throttled else 'none'}; "
            f"idle stretches of 1 s or more: {stretches or 'none'}."
        )
        if who == "engine":
            steps = ", ".join(
                f"{at:.0f} s: {voided}/{failed}" for at, voided, failed in run.progress_steps[1:]
            )
            outcomes = "-" if run.outcomes_seconds is None else f"{run.outcomes_seconds:.1f} s"
            cpu = ", ".join(f"{name} {run.cpu.get(name, 0.0):.1f}" for name in CPU_ORDER)
            notes.append(
                f"  The API answered the disconnect (202) after {run.accepted_seconds or 0:.2f} s; the status' "
                f"voided/failed counts moved {runs(len(run.progress_steps) - 1, 'time')} ({steps}); every invoice "
                f"showed its outcome {outcomes} after `disconnected`. CPU seconds in the window: {cpu}."
            )
        notes.append(f"  Checks: {'; '.join(run.checks)}.")
    variants = "\n".join(f"- `{item.variant.name}`: {item.variant.description}" for item in result.variants)
    return "\n".join(
        [
            f"## Disconnect & Void: {result.invoices} synced invoices, {result.paid} of them paid in QuickBooks",
            "",
            "Intuit's limits throughout (the emulator: 500 calls a minute per company, a sliding 60 s window, and 10 in "
            'flight). Engine: from `POST .../quickbooks/disconnect` `{"mode": "disconnect_and_void"}` until the '
            "connection reads `disconnected` (polled every 0.1 s). Baseline: the raw QboClient with a RealmLimiter "
            "at the same limits voiding a second company prepared the same way, with the SyncTokens it knows, 10 in "
            "flight. Every company starts with empty windows. Calls and 429s from the emulator's request log of each "
            f"window; median (min-max) of {runs(result.repeat)}.",
            "",
            variants,
            "",
            table(["", *(title for title, _, _ in columns)], rows),
            "",
            "Where the wall time went (median run; seconds, from the request log; Intuit and the limiters count the "
            "calls answered, not the 429s):",
            "",
            table(["", *(title for title, _, _ in columns)], split_rows),
            "",
            "The engine's wall time by phase of its connection workflow (median run; seconds, from the workflow's "
            "history and the request log):",
            "",
            table(["", *(title for title, _ in engines)], phase_rows),
            "",
            "\n".join(notes),
        ]
    )
