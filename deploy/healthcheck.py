"""The container healthcheck of the engine's image (Dockerfile HEALTHCHECK, docker-compose.yml healthchecks).

    python deploy/healthcheck.py api      # the API answers /healthz (default; the image's CMD is the API)
    python deploy/healthcheck.py worker   # the worker's metrics address answers with the Temporal SDK's metrics
    python deploy/healthcheck.py codec    # the payload codec answers its /healthz

Standard library only, on purpose: the slim image has no curl or wget, and a check that imports the engine's
settings would fail for reasons (a missing secret) that are not the process's health. Exit 0 healthy, 1 not, with
one line on stderr saying why (no body of the answer, which is the process's business).

The worker's check is a liveness check: its metrics server runs in the worker process, and the SDK's families
(`temporal_request...`) are there once the worker has spoken to the Temporal frontend. It does not say that the
frontend is up now; the SDK keeps retrying it, and restarting the worker would not help.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 3.0
# Each role's address inside its own container: the API on the image's uvicorn port; the worker and the codec on
# their settings' ports (the same environment variables, the same defaults as settings.py).
DEFAULT_URLS = {
    "api": "http://127.0.0.1:8000/healthz",
    "worker": "http://127.0.0.1:{WORKER_METRICS_PORT}/metrics",
    "codec": "http://127.0.0.1:{CODEC_PORT}/healthz",
}
PORT_DEFAULTS = {"WORKER_METRICS_PORT": "9464", "CODEC_PORT": "8234"}
SDK_METRIC = "temporal_request"


def default_url(role: str) -> str:
    ports = {name: os.environ.get(name) or fallback for name, fallback in PORT_DEFAULTS.items()}
    return DEFAULT_URLS[role].format(**ports)


def check(role: str, url: str) -> str | None:
    """None when healthy, or why not (in words, without the answer's body)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 (loopback, our URL)
            status = response.status
            body = response.read(4 << 20).decode("utf-8", "replace") if role == "worker" else ""
    except urllib.error.HTTPError as exc:
        return f"{role}: {url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{role}: {url} did not answer ({type(reason).__name__})"
    if status != 200:
        return f"{role}: {url} answered {status}"
    if role == "worker" and SDK_METRIC not in body:
        return f"{role}: {url} has no Temporal SDK metrics yet (the worker has not reached the Temporal frontend)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", nargs="?", default="api", choices=sorted(DEFAULT_URLS))
    parser.add_argument("--url", help="the address to check (default: the role's own, on loopback)")
    args = parser.parse_args(argv)
    problem = check(args.role, args.url or default_url(args.role))
    if problem is not None:
        sys.stderr.write(problem + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
