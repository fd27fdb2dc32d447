"""`python -m emulator`: serves the QuickBooks Online emulator until interrupted."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from emulator.app import create_app
from emulator.config import DEV_REDIRECT_URI, EmulatorConfig


def parse_args(argv: list[str]) -> EmulatorConfig:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--state-file", default=None, help="JSON file to load at start and keep saved")
    parser.add_argument("--client-id", default=defaults.client_id)
    parser.add_argument("--client-secret", default=defaults.client_secret)
    parser.add_argument(
        "--redirect-uri",
        action="append",
        dest="redirect_uris",
        help=f"a registered redirect URI (repeatable; default {DEV_REDIRECT_URI})",
    )
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--verifier-token", default=defaults.verifier_token)
    parser.add_argument(
        "--webhook-format", choices=("classic", "cloudevents"), default=defaults.webhook_format
    )
    parser.add_argument("--webhook-retry-scale", type=float, default=defaults.webhook_retry_scale)
    parser.add_argument("--webhook-batch-seconds", type=float, default=defaults.webhook_batch_seconds)
    parser.add_argument("--webhook-timeout-seconds", type=float, default=defaults.webhook_timeout_seconds)
    parser.add_argument("--rate-limit-per-minute", type=int, default=defaults.rate_limit_per_minute)
    parser.add_argument(
        "--batch-rate-limit-per-minute", type=int, default=defaults.batch_rate_limit_per_minute
    )
    parser.add_argument("--concurrency-limit", type=int, default=defaults.concurrency_limit)
    parser.add_argument(
        "--throttle-retry-after",
        type=int,
        default=None,
        metavar="SECONDS",
        help="send Retry-After on 429 (Intuit reportedly does not)",
    )
    parser.add_argument(
        "--fault-seed", type=int, default=None, help="seed of the rate faults' random draws (default: random)"
    )
    parser.add_argument("--save-debounce-seconds", type=float, default=defaults.save_debounce_seconds)
    parser.add_argument(
        "--log-level", default=defaults.log_level, choices=("critical", "error", "warning", "info", "debug")
    )
    args = parser.parse_args(argv)
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        state_file=args.state_file,
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uris=args.redirect_uris or [DEV_REDIRECT_URI],
        webhook_url=args.webhook_url,
        verifier_token=args.verifier_token,
        webhook_format=args.webhook_format,
        webhook_retry_scale=args.webhook_retry_scale,
        webhook_batch_seconds=args.webhook_batch_seconds,
        webhook_timeout_seconds=args.webhook_timeout_seconds,
        rate_limit_per_minute=args.rate_limit_per_minute,
        batch_rate_limit_per_minute=args.batch_rate_limit_per_minute,
        concurrency_limit=args.concurrency_limit,
        throttle_retry_after=args.throttle_retry_after,
        fault_seed=args.fault_seed,
        save_debounce_seconds=args.save_debounce_seconds,
        log_level=args.log_level,
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    print(f"QuickBooks Online emulator on http://{config.host}:{config.port}", flush=True)
    print(f"  authorize: http://{config.host}:{config.port}/connect/oauth2", flush=True)
    print(f"  admin API: http://{config.host}:{config.port}/__admin/docs", flush=True)
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        access_log=config.log_level == "debug",
    )


if __name__ == "__main__":
    main()
