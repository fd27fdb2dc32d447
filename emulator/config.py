"""The emulator's settings: command-line defaults, and the part tests may change at run time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

WebhookFormat = Literal["classic", "cloudevents"]

# Development defaults, matching settings.py so `make run` needs no configuration.
DEV_CLIENT_ID = "dev-client-id"
DEV_CLIENT_SECRET = "dev-client-secret"  # noqa: S105 - a development default, never a real secret
DEV_VERIFIER_TOKEN = "dev-verifier-token"  # noqa: S105 - same
DEV_REDIRECT_URI = "http://127.0.0.1:8000/oauth/quickbooks/callback"


@dataclass
class EmulatorConfig:
    """Everything `python -m emulator` accepts; the mutable half is exposed through `/__admin/config`."""

    host: str = "127.0.0.1"
    port: int = 8900
    state_file: str | None = None
    client_id: str = DEV_CLIENT_ID
    client_secret: str = DEV_CLIENT_SECRET
    redirect_uris: list[str] = field(default_factory=lambda: [DEV_REDIRECT_URI])
    webhook_url: str | None = None
    verifier_token: str = DEV_VERIFIER_TOKEN
    webhook_format: WebhookFormat = "classic"
    webhook_retry_scale: float = 1.0
    # Changes to one realm within this window go out in one POST, like Intuit's short aggregation.
    webhook_batch_seconds: float = 0.2
    # Intuit's documented acknowledgement deadline.
    webhook_timeout_seconds: float = 3.0
    rate_limit_per_minute: int = 500
    # Intuit's batch reference and 2023 blog say 40 batch calls a minute; a 2025 blog says 120 (see README).
    batch_rate_limit_per_minute: int = 40
    concurrency_limit: int = 10
    throttle_retry_after: int | None = None
    # Seed of the random draws of rate faults (None: a different sequence every run).
    fault_seed: int | None = None
    # How long changes may sit in memory before the state file is rewritten.
    save_debounce_seconds: float = 0.5
    log_level: str = "info"

    def public(self) -> dict[str, Any]:
        """The effective configuration without secrets (client secret and verifier token)."""
        return {
            "host": self.host,
            "port": self.port,
            "state_file": self.state_file,
            "client_id": self.client_id,
            "redirect_uris": list(self.redirect_uris),
            "webhook_url": self.webhook_url,
            "webhook_format": self.webhook_format,
            "webhook_retry_scale": self.webhook_retry_scale,
            "webhook_batch_seconds": self.webhook_batch_seconds,
            "webhook_timeout_seconds": self.webhook_timeout_seconds,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "batch_rate_limit_per_minute": self.batch_rate_limit_per_minute,
            "concurrency_limit": self.concurrency_limit,
            "throttle_retry_after": self.throttle_retry_after,
            "fault_seed": self.fault_seed,
            "log_level": self.log_level,
        }
