"""The one settings class: every process reads its configuration here and nowhere else."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.signing import EVENTS_SIGNING_FORMAT, secret_bytes, split_secrets

# Development defaults only. `Settings` refuses them when APP_ENV=production.
DEV_API_TOKEN = "dev-api-token"
DEV_QBO_CLIENT_ID = "dev-client-id"
DEV_QBO_CLIENT_SECRET = "dev-client-secret"
DEV_WEBHOOK_VERIFIER_TOKEN = "dev-verifier-token"
DEV_TOKEN_ENCRYPTION_KEY = "ZGV2LW9ubHktdG9rZW4tZW5jcnlwdGlvbi1rZXktLS0="  # a Fernet key, dev only
# A Standard Webhooks secret (whsec_ + base64), dev only.
DEV_PLATFORM_EVENTS_SECRET = "whsec_cWJvLXN5bmMgZGV2ZWxvcG1lbnQtb25seSBldmVudHMgc2VjcmV0"
# A passphrase, not a key: accepted outside production only, so existing development data (and the recorded
# replay histories) still decrypt. Production takes real keys (see `payload_key_bytes`).
DEV_PAYLOAD_ENCRYPTION_KEY = "dev-only-temporal-payload-key"

PAYLOAD_KEY_BYTES = 32  # AES-256-GCM
# Random 32-byte keys have about 30 distinct byte values; fewer than this is a pattern or a placeholder.
MIN_DISTINCT_KEY_BYTES = 16
PAYLOAD_KEY_FORMAT = (
    "each comma-separated key must be the base64 of 32 random bytes "
    "(make one with: python3 -c 'import base64,os;print(base64.b64encode(os.urandom(32)).decode())')"
)
# The secrets this service makes up itself (API_TOKEN, CODEC_AUTH_TOKEN; PLATFORM_EVENTS_SECRET is Standard
# Webhooks' form, models/signing.py). Account tokens
# are HMAC(API_TOKEN, ...): a guessable API_TOKEN lets anyone forge them. `secrets.token_urlsafe(32)` gives 43
# characters, of about 30 distinct ones; `secrets.token_hex(16)` 32, of about 14.
MIN_SECRET_LENGTH = 32
MIN_DISTINCT_SECRET_CHARACTERS = 8
SECRET_FORMAT = (
    f"each must be at least {MIN_SECRET_LENGTH} random characters, with no repeated or sequential pattern "
    "(make one with: python3 -c 'import secrets;print(secrets.token_urlsafe(32))')"
)

QboEnvironment = Literal["emulator", "sandbox", "production"]


def payload_key_bytes(text: str) -> bytes | None:
    """The 32 bytes of a payload key written in base64 (standard or URL-safe alphabet), or None."""
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(text.strip(), altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == PAYLOAD_KEY_BYTES:
            return raw
    return None


def looks_random(raw: bytes) -> bool:
    return len(set(raw)) >= MIN_DISTINCT_KEY_BYTES


def looks_like_a_secret(text: str) -> bool:
    """Long enough, and not trivially patterned: not a few characters over and over ("aaaa...", "abab..."), not a
    repetition of a shorter part, not mostly a run ("abcdef...", "123456...")."""
    if len(text) < MIN_SECRET_LENGTH or len(set(text)) < MIN_DISTINCT_SECRET_CHARACTERS:
        return False
    if any(text[period:] == text[:-period] for period in range(1, len(text) // 2 + 1)):
        return False
    # Random text steps to the same or a neighbouring character about 3 times in 16 (hex) or 64 (base64).
    runs = sum(1 for before, after in itertools.pairwise(text) if abs(ord(after) - ord(before)) <= 1)
    return runs * 2 < len(text) - 1


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_keys(text: str) -> list[str]:
    """Comma-separated keys (rotation: the first encrypts, any decrypts)."""
    return [part.strip() for part in text.split(",") if part.strip()]


class Settings(BaseSettings):
    """Configuration from the environment (or `.env`); names match `.env.example`."""

    # A refused value is never echoed in the error: it may be a secret (and errors end up in logs).
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    app_env: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    # json: one JSON object a line, for a log collector (the default, so a deployment that forgets it still gets
    # parseable lines with their ids); text: the plain line for a human at a terminal (`make run` sets it).
    log_format: Literal["json", "text"] = "json"

    database_url: str = "sqlite:///var/qbo_sync.db"

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "qbo-sync"
    # Reaching Temporal Cloud or a TLS cluster, under the names of Temporal's own environment configuration
    # (temporalio.envconfig): an API key (sent as `authorization: Bearer`, over TLS), or mTLS with a client
    # certificate and key, each as a file path or inline PEM data. TLS is on when any of these is set; TEMPORAL_TLS
    # says so explicitly (true: TLS with the system's roots, false: plaintext).
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool | None = None
    temporal_tls_client_cert_path: str | None = None
    temporal_tls_client_cert_data: str | None = None
    temporal_tls_client_key_path: str | None = None
    temporal_tls_client_key_data: SecretStr | None = None
    # A private CA's certificate for the server (a self-hosted cluster), and the name to check it against.
    temporal_tls_server_ca_cert_path: str | None = None
    temporal_tls_server_ca_cert_data: str | None = None
    temporal_tls_server_name: str | None = None
    # APP_ENV=production refuses plaintext to a Temporal beyond loopback: whoever is on that path could read the
    # (encrypted) histories and send any signal or update. True only where the network itself is private and
    # encrypted (a service mesh's mTLS, a Docker network on one host).
    temporal_allow_plaintext: bool = False

    api_token: SecretStr = SecretStr(DEV_API_TOKEN)
    api_public_url: str = "http://127.0.0.1:8000"

    qbo_environment: QboEnvironment = "emulator"
    qbo_base_url: str = "http://127.0.0.1:8900"
    # The emulator's address as the user's browser reaches it, when that differs from QBO_BASE_URL (Docker).
    qbo_browser_base_url: str | None = None
    qbo_client_id: str = DEV_QBO_CLIENT_ID
    qbo_client_secret: SecretStr = SecretStr(DEV_QBO_CLIENT_SECRET)
    qbo_redirect_uri: str = "http://127.0.0.1:8000/oauth/quickbooks/callback"
    qbo_webhook_verifier_token: SecretStr = SecretStr(DEV_WEBHOOK_VERIFIER_TOKEN)
    qbo_minor_version: int = 75
    # Each worker process keeps every company within these (Intuit: 10 in flight, 500 requests a minute).
    qbo_max_in_flight_per_company: int = Field(default=10, ge=1)
    qbo_requests_per_minute_per_company: int = Field(default=500, ge=1)
    qbo_request_timeout_seconds: float = 30.0

    token_encryption_key: SecretStr = SecretStr(DEV_TOKEN_ENCRYPTION_KEY)
    payload_encryption_key: SecretStr = SecretStr(DEV_PAYLOAD_ENCRYPTION_KEY)
    # The operators' codec server (`python codec_server.py`), which the Temporal Web UI calls to show decrypted
    # payloads. It decrypts for whoever reaches it: loopback by default, and with CODEC_AUTH_TOKEN set every
    # call needs that bearer token. APP_ENV=production always requires one, and any address beyond loopback does
    # in every environment (but see CODEC_ALLOW_UNGUARDED_HOST).
    codec_host: str = "127.0.0.1"
    codec_port: int = Field(default=8234, ge=1, le=65535)
    codec_auth_token: SecretStr | None = None
    # Outside production only: serve a CODEC_HOST beyond loopback without a token, for a listener nobody else can
    # reach (docker-compose.yml's codec: alone on its network, published on the host's loopback). The Web UI
    # cannot send a bearer token, so this is how it decodes there.
    codec_allow_unguarded_host: bool = False
    # Host names the codec answers besides loopback's and CODEC_HOST (a reverse proxy's), comma-separated: any
    # other Host header is refused, so a web page that rebinds its own name to 127.0.0.1 cannot reach it.
    codec_allowed_hosts: str = ""
    codec_max_body_bytes: int = Field(default=4_194_304, gt=0)
    # The Temporal Web UI's origin, allowed (CORS) to call the codec server from an operator's browser.
    temporal_ui_origin: str = "http://127.0.0.1:8233"

    platform_return_url: str = "http://127.0.0.1:8000/oauth/quickbooks/done"
    platform_events_url: str | None = None
    platform_events_secret: SecretStr = SecretStr(DEV_PLATFORM_EVENTS_SECRET)

    # Connection health: warn ("expires soon") this long before the authorization ends; sweep for changes
    # webhooks missed this often; make the cheap daily call that notices a revocation this often.
    connection_expiry_warning_days: int = Field(default=14, ge=0)
    cdc_sweep_interval_seconds: int = Field(default=900, gt=0)
    connection_health_check_interval_seconds: int = Field(default=86_400, gt=0)

    oauth_state_ttl_seconds: int = Field(default=600, gt=0)
    # The start link POST .../quickbooks/connect returns must be opened (once) within this: the platform sends
    # the user's browser to it straight away, so only a link forwarded to someone else ever needs longer.
    oauth_launch_ttl_seconds: int = Field(default=120, gt=0)
    # How long the OAuth callback waits for the connection workflow to adopt a new authorization before it tells
    # the browser `connecting` instead of `connected` (a worker that is down or slow).
    oauth_adoption_wait_seconds: float = Field(default=10.0, gt=0)
    webhook_max_body_bytes: int = Field(default=1_048_576, gt=0)

    # The worker's Prometheus metrics (its own, QuickBooks calls, and the Temporal SDK's) at
    # http://WORKER_METRICS_HOST:WORKER_METRICS_PORT/metrics. Loopback by default; port 0 takes any free port
    # (logged at start-up), for several workers on one host.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)

    # OpenTelemetry tracing (observability/tracing.py), under OpenTelemetry's own environment variable names. Off
    # unless an OTLP endpoint is set: the base URL (`/v1/traces` is appended) or the traces endpoint itself (taken
    # as it is). OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true turn it off all the same. The exporter's other
    # variables (OTEL_EXPORTER_OTLP_HEADERS, ..._TIMEOUT, ..._CERTIFICATE) and OTEL_TRACES_SAMPLER, OTEL_BSP_* and
    # OTEL_RESOURCE_ATTRIBUTES are read by the SDK itself, from the environment.
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_traces_exporter: Literal["otlp", "none"] = "otlp"
    otel_sdk_disabled: bool = False
    # qbo-sync-api or qbo-sync-worker when unset.
    otel_service_name: str | None = None

    # Whether the worker runs workflow code in Temporal's sandbox. Off by default: the sandbox imports each
    # workflow's module afresh for every workflow it starts, about a fifth of the worker's CPU per synced invoice
    # (bench/README.md, "Engine cost"). What it guards against is caught before a release instead: every workflow
    # test and every replay test runs the workflows in the sandbox, and workflows/ruff.toml bans the calls it
    # would refuse (clocks, randomness, I/O) in workflow code.
    worker_workflow_sandbox: bool = False

    # An API call to Temporal that takes longer than this fails (503 temporarily_unavailable, or left to the
    # relay): a Temporal that is down, or a workflow no worker runs, never holds a request.
    temporal_rpc_timeout_seconds: float = Field(default=5.0, gt=0)
    # The API's relay hands Temporal what it stored but could not give it (invoice syncs to start, sign-ins to
    # adopt, webhook events to process) this often, once it is this old (so the request's own call goes first).
    relay_interval_seconds: float = Field(default=5.0, gt=0)
    relay_grace_seconds: float = Field(default=5.0, ge=0)

    @field_validator("token_encryption_key")
    @classmethod
    def _token_keys_are_fernet_keys(cls, value: SecretStr) -> SecretStr:
        keys = split_keys(value.get_secret_value())
        if not keys:
            raise ValueError("TOKEN_ENCRYPTION_KEY holds no key")
        for position, key in enumerate(keys, start=1):
            try:
                Fernet(key)
            except ValueError:
                # The key itself is never part of the message.
                raise ValueError(
                    f"TOKEN_ENCRYPTION_KEY key #{position} is not a Fernet key (the URL-safe base64 of 32 bytes)"
                ) from None
        return value

    @field_validator("platform_events_secret")
    @classmethod
    def _events_secrets_are_standard_webhooks_secrets(cls, value: SecretStr) -> SecretStr:
        secrets = split_secrets(value.get_secret_value())
        if not secrets:
            raise ValueError("PLATFORM_EVENTS_SECRET holds no secret")
        for position, secret in enumerate(secrets, start=1):
            if secret_bytes(secret) is None:
                raise ValueError(
                    f"PLATFORM_EVENTS_SECRET secret #{position} is not one: {EVENTS_SIGNING_FORMAT}"
                )
        return value

    @field_validator("codec_auth_token", mode="before")
    @classmethod
    def _empty_token_is_no_token(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("payload_encryption_key")
    @classmethod
    def _payload_keys_are_listed(cls, value: SecretStr) -> SecretStr:
        if not split_keys(value.get_secret_value()):
            raise ValueError("PAYLOAD_ENCRYPTION_KEY holds no key")
        return value

    @field_validator(
        "temporal_api_key",
        "temporal_tls_client_cert_path",
        "temporal_tls_client_cert_data",
        "temporal_tls_client_key_path",
        "temporal_tls_client_key_data",
        "temporal_tls_server_ca_cert_path",
        "temporal_tls_server_ca_cert_data",
        "temporal_tls_server_name",
        "temporal_tls",
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_traces_endpoint",
        "otel_service_name",
        mode="before",
    )
    @classmethod
    def _empty_option_is_unset(cls, value: object) -> object:
        # `TEMPORAL_TLS_CLIENT_CERT_PATH=` (a compose file passing an unset variable on) means "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("codec_allowed_hosts")
    @classmethod
    def _codec_hosts_are_names(cls, value: str) -> str:
        if any("*" in host or "/" in host for host in split_keys(value)):
            raise ValueError("CODEC_ALLOWED_HOSTS takes host names, without wildcards or paths")
        return value

    @model_validator(mode="after")
    def _no_development_secrets_in_production(self) -> Settings:
        if self.app_env != "production":
            return self
        defaults = {
            "API_TOKEN": (self.api_token, DEV_API_TOKEN),
            "QBO_CLIENT_SECRET": (self.qbo_client_secret, DEV_QBO_CLIENT_SECRET),
            "QBO_WEBHOOK_VERIFIER_TOKEN": (self.qbo_webhook_verifier_token, DEV_WEBHOOK_VERIFIER_TOKEN),
            "TOKEN_ENCRYPTION_KEY": (self.token_encryption_key, DEV_TOKEN_ENCRYPTION_KEY),
            "PLATFORM_EVENTS_SECRET": (self.platform_events_secret, DEV_PLATFORM_EVENTS_SECRET),
            "PAYLOAD_ENCRYPTION_KEY": (self.payload_encryption_key, DEV_PAYLOAD_ENCRYPTION_KEY),
        }
        unset = [
            name
            for name, (value, dev) in defaults.items()
            if value.get_secret_value() == dev or not value.get_secret_value().strip()
        ]
        # Loopback too: any local user or process could decrypt every payload, and encrypt what it likes.
        codec_token = self.codec_auth_token.get_secret_value() if self.codec_auth_token else ""
        if not codec_token:
            unset.append("CODEC_AUTH_TOKEN")
        if unset:
            raise ValueError(f"APP_ENV=production needs real values for: {', '.join(unset)}")
        # Intuit issues its own secrets (their form is Intuit's business); ours must be real secrets.
        ours = {
            "API_TOKEN": self.api_token.get_secret_value(),
            "CODEC_AUTH_TOKEN": codec_token,
        }
        weak = [name for name, value in ours.items() if not looks_like_a_secret(value)]
        if weak:
            raise ValueError(
                f"APP_ENV=production needs strong secrets in: {', '.join(weak)}; {SECRET_FORMAT}"
            )
        if self.qbo_environment == "emulator":
            raise ValueError("APP_ENV=production cannot talk to the emulator; set QBO_ENVIRONMENT")
        if self.codec_allow_unguarded_host:
            raise ValueError("CODEC_ALLOW_UNGUARDED_HOST is for development only")
        return self

    @model_validator(mode="after")
    def _intuits_production_is_production(self) -> Settings:
        # The production checks hang on APP_ENV: Intuit's real companies must not be reachable without them.
        if self.qbo_environment == "production" and self.app_env != "production":
            raise ValueError(
                "QBO_ENVIRONMENT=production (Intuit's real companies) needs APP_ENV=production, whose checks "
                "then apply; develop against QBO_ENVIRONMENT=sandbox or emulator"
            )
        if self.qbo_environment != "emulator":
            # Intuit's keys, never the placeholders: they could not work with Intuit, and the development
            # verifier token, which anyone who read this repository knows, would sign webhooks for us.
            placeholders = [
                name
                for name, value, dev in (
                    ("QBO_CLIENT_ID", self.qbo_client_id, DEV_QBO_CLIENT_ID),
                    ("QBO_CLIENT_SECRET", self.qbo_client_secret.get_secret_value(), DEV_QBO_CLIENT_SECRET),
                    (
                        "QBO_WEBHOOK_VERIFIER_TOKEN",
                        self.qbo_webhook_verifier_token.get_secret_value(),
                        DEV_WEBHOOK_VERIFIER_TOKEN,
                    ),
                )
                if not value.strip() or value == dev
            ]
            if placeholders:
                raise ValueError(
                    f"QBO_ENVIRONMENT={self.qbo_environment} needs the values Intuit issued for: "
                    f"{', '.join(placeholders)}"
                )
        return self

    @model_validator(mode="after")
    def _temporal_connection_is_coherent(self) -> Settings:
        pairs = {
            "TEMPORAL_TLS_CLIENT_CERT": (
                self.temporal_tls_client_cert_path,
                self.temporal_tls_client_cert_data,
            ),
            "TEMPORAL_TLS_CLIENT_KEY": (self.temporal_tls_client_key_path, self.temporal_tls_client_key_data),
            "TEMPORAL_TLS_SERVER_CA_CERT": (
                self.temporal_tls_server_ca_cert_path,
                self.temporal_tls_server_ca_cert_data,
            ),
        }
        for name, (path, data) in pairs.items():
            if path is not None and data is not None:
                raise ValueError(f"set {name}_PATH or {name}_DATA, not both")
        has_cert = any(pairs["TEMPORAL_TLS_CLIENT_CERT"])
        has_key = any(pairs["TEMPORAL_TLS_CLIENT_KEY"])
        if has_cert != has_key:
            given, missing = ("CERT", "KEY") if has_cert else ("KEY", "CERT")
            raise ValueError(
                f"TEMPORAL_TLS_CLIENT_{given}_* needs TEMPORAL_TLS_CLIENT_{missing}_* too (mTLS takes the client "
                "certificate and its private key)"
            )
        if self.temporal_tls is False and (
            self.temporal_tls_options_set or self.temporal_api_key is not None
        ):
            raise ValueError(
                "TEMPORAL_TLS=false cannot go with TEMPORAL_API_KEY or TEMPORAL_TLS_* settings (an API key or a "
                "certificate would travel in plaintext); remove TEMPORAL_TLS or the others"
            )
        host = self.temporal_address.rsplit(":", 1)[0].strip("[]")
        if (
            self.app_env == "production"
            and not self.temporal_uses_tls
            and not _is_loopback(host)
            and not self.temporal_allow_plaintext
        ):
            raise ValueError(
                "APP_ENV=production needs TLS to a Temporal beyond loopback (TEMPORAL_API_KEY, TEMPORAL_TLS_* or "
                "TEMPORAL_TLS=true); TEMPORAL_ALLOW_PLAINTEXT=true only where the network is private and encrypted"
            )
        return self

    @property
    def temporal_tls_options_set(self) -> bool:
        return any(
            value is not None
            for value in (
                self.temporal_tls_client_cert_path,
                self.temporal_tls_client_cert_data,
                self.temporal_tls_client_key_path,
                self.temporal_tls_client_key_data,
                self.temporal_tls_server_ca_cert_path,
                self.temporal_tls_server_ca_cert_data,
                self.temporal_tls_server_name,
            )
        )

    @property
    def temporal_uses_tls(self) -> bool:
        """As Temporal's environment configuration reads these: TLS unless TEMPORAL_TLS=false, once TEMPORAL_TLS,
        an API key or any TLS option is set."""
        if self.temporal_tls is not None:
            return self.temporal_tls
        return self.temporal_api_key is not None or self.temporal_tls_options_set

    @model_validator(mode="after")
    def _codec_beyond_loopback_needs_its_token(self) -> Settings:
        if _is_loopback(self.codec_host) or self.codec_auth_token is not None:
            return self
        if self.codec_allow_unguarded_host and self.app_env != "production":
            return self
        raise ValueError(
            "a CODEC_HOST beyond loopback needs CODEC_AUTH_TOKEN (the codec decrypts for whoever reaches it); "
            "or keep CODEC_HOST on loopback"
        )

    @model_validator(mode="after")
    def _real_keys_in_production(self) -> Settings:
        if self.app_env != "production":
            return self
        events_secrets = split_secrets(self.platform_events_secret.get_secret_value())
        for position, secret in enumerate(events_secrets, start=1):
            secret_key = secret_bytes(secret)
            if secret == DEV_PLATFORM_EVENTS_SECRET or secret_key is None or not looks_random(secret_key):
                raise ValueError(
                    f"APP_ENV=production needs real secrets in PLATFORM_EVENTS_SECRET: secret #{position} is not "
                    f"one; {EVENTS_SIGNING_FORMAT}"
                )
        payload_keys = split_keys(self.payload_encryption_key.get_secret_value())
        for position, key in enumerate(payload_keys, start=1):
            raw = payload_key_bytes(key)
            if raw is None or not looks_random(raw):
                raise ValueError(
                    f"APP_ENV=production needs real keys in PAYLOAD_ENCRYPTION_KEY: key #{position} is not one; "
                    f"{PAYLOAD_KEY_FORMAT}"
                )
        token_keys = split_keys(self.token_encryption_key.get_secret_value())
        for position, key in enumerate(token_keys, start=1):
            if not looks_random(base64.urlsafe_b64decode(key)):
                raise ValueError(
                    f"APP_ENV=production needs random keys in TOKEN_ENCRYPTION_KEY: key #{position} is a pattern; "
                    "make one with: python3 -c 'from cryptography.fernet import Fernet;print(Fernet.generate_key().decode())'"
                )
        shared = {payload_key_bytes(key) for key in payload_keys} & {
            base64.urlsafe_b64decode(key) for key in token_keys
        }
        if shared:
            raise ValueError(
                "APP_ENV=production needs different keys for PAYLOAD_ENCRYPTION_KEY and TOKEN_ENCRYPTION_KEY"
            )
        return self

    @model_validator(mode="after")
    def _oauth_flow_stays_on_this_host(self) -> Settings:
        # The browser's flow cookie is set by API_PUBLIC_URL's host and must come back to the callback.
        public = urlsplit(self.api_public_url)
        callback = urlsplit(self.qbo_redirect_uri)
        if (callback.scheme, callback.hostname) != (public.scheme, public.hostname):
            raise ValueError(
                "QBO_REDIRECT_URI must be on API_PUBLIC_URL's scheme and host (the OAuth flow's browser cookie "
                "is set there and must reach the callback)"
            )
        if self.app_env == "production" and public.scheme != "https":
            raise ValueError(
                "APP_ENV=production needs an https API_PUBLIC_URL (the OAuth flow cookie is Secure)"
            )
        if self.oauth_launch_ttl_seconds > self.oauth_state_ttl_seconds:
            raise ValueError("OAUTH_LAUNCH_TTL_SECONDS cannot be longer than OAUTH_STATE_TTL_SECONDS")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings` and pass them explicitly."""
    return Settings()
