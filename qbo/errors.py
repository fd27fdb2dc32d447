"""QuickBooks Online errors: the Fault taxonomy of the Accounting API, OAuth errors, and `parse_fault`."""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# Anything that looks like a credential: a bearer header value, or a long opaque run of token characters.
# Intuit's gateway echoes part of the rejected token in 401 details ("Token expired: AB0173…").
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+\S+")
_TOKEN_ECHO = re.compile(r"(?i)\b(token\s+(?:expired|revoked|invalid)\s*:)\s*\S+")
_OPAQUE_RUN = re.compile(r"[A-Za-z0-9._~+/=-]{32,}")
_XML_ERROR_CODE = re.compile(r"<Error\b[^>]*\bcode=\"([^\"]*)\"")
_XML_FAULT_TYPE = re.compile(r"<Fault\b[^>]*\btype=\"([^\"]*)\"")
_XML_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.DOTALL)
_XML_DETAIL = re.compile(r"<Detail>(.*?)</Detail>", re.DOTALL)
_MAX_TEXT = 300

THROTTLE_CODE = "3001"
DUPLICATE_DOC_NUMBER_CODES = frozenset({"6140", "6210"})


def redact(text: str) -> str:
    """The text with credential-looking parts replaced, so it is safe for logs and exception messages."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)
    text = _TOKEN_ECHO.sub(lambda m: f"{m.group(1)} [redacted]", text)
    return _OPAQUE_RUN.sub(
        lambda m: "[redacted]" if any(c.isdigit() for c in m.group(0)) else m.group(0), text
    )


class QboError(Exception):
    """A failed Accounting API call; `code` is Intuit's Fault code (a string such as "610").

    Intuit's Message and Detail can echo what was sent (the 6240 detail may hold the customer's name, a business
    validation detail the value it refused), and exception texts end up in logs and in Temporal's failures. So for
    an error parsed from Intuit's answer (`from_quickbooks`), `str()` names the status, code, fault type, element
    and intuit_tid only; `description` holds Intuit's words, and `readable` both, for a person to read through an
    encrypted channel. Errors we raise ourselves keep their own (safe) message in `str()`.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str = "",
        element: str | None = None,
        fault_type: str | None = None,
        intuit_tid: str | None = None,
        from_quickbooks: bool = False,
    ) -> None:
        self.status = status
        self.code = code
        self.message = redact(message)
        self.detail = redact(detail)
        self.element = element or None
        self.fault_type = fault_type
        self.intuit_tid = intuit_tid
        self.from_quickbooks = from_quickbooks
        super().__init__(str(self))

    @property
    def description(self) -> str:
        """The message and the detail (credentials redacted, but possibly echoing what was sent)."""
        if self.detail and self.detail != self.message:
            return f"{self.message}: {self.detail}" if self.message else self.detail
        return self.message

    @property
    def readable(self) -> str:
        """Everything a person needs: `str()` and, for Intuit's errors, Intuit's words. Never for logs."""
        summary = str(self)
        if self.from_quickbooks and self.description:
            return f"{summary}: {self.description}"
        return summary

    def __str__(self) -> str:
        head = "QuickBooks error"
        if self.status is not None:
            head += f" HTTP {self.status}"
        if self.code:
            head += f" code {self.code}"
        text = "" if self.from_quickbooks else self.description
        if self.from_quickbooks and self.fault_type:
            text = self.fault_type
        if self.element:
            text += f" (element {self.element})"
        if self.intuit_tid:
            text += f" [intuit_tid {self.intuit_tid}]"
        text = text.strip()
        return f"{head}: {text}" if text else head

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r})"


class QboAuthenticationError(QboError):
    """401 / 3200: the access token is expired, revoked or malformed."""


class QboAuthorizationError(QboError):
    """403 / 3100: the token is valid but not allowed here (wrong company, wrong keys, no permission)."""


class QboThrottled(QboError):
    """429 / 3001 (also 403 + 3001, the pre-2017 form): too many requests or too many in flight."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class QboValidationError(QboError):
    """400 ValidationFault: QuickBooks refused the input; sending it again unchanged will fail again."""


class QboNotFound(QboValidationError):
    """610: the object does not exist (deleted, never existed) or a referenced object is inactive."""


class QboStaleObject(QboValidationError):
    """5010: the SyncToken is not the current one; read the object again before writing."""


class QboDuplicateName(QboValidationError):
    """6240: another customer, vendor, employee (or item) already uses this name."""


class QboDuplicateDocNumber(QboValidationError):
    """6140 (or 6210 in some sources): another transaction already uses this DocNumber."""


class QboServerError(QboError):
    """5xx or SystemFault: Intuit failed; the outcome of a write is unknown (retry with the same requestid)."""


class QboUnavailable(QboError):
    """No answer at all (timeout, refused or reset connection): the outcome of a write is unknown."""

    def __init__(self, message: str, *, timed_out: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.timed_out = timed_out


# --- OAuth ------------------------------------------------------------------------------------------------


class QboOAuthError(Exception):
    """An error from Intuit's token or revoke endpoint (`{"error": ..., "error_description": ...}`)."""

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status: int | None = None,
        intuit_tid: str | None = None,
    ) -> None:
        self.error = error
        self.description = redact(description) if description is not None else None
        self.status = status
        self.intuit_tid = intuit_tid
        super().__init__(error)

    def __str__(self) -> str:
        text = f"Intuit OAuth error {self.error}"
        if self.status is not None:
            text += f" (HTTP {self.status})"
        if self.description:
            text += f": {self.description}"
        if self.intuit_tid:
            text += f" [intuit_tid {self.intuit_tid}]"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(error={self.error!r}, status={self.status!r})"


class InvalidGrant(QboOAuthError):
    """The code or refresh token is used, expired, revoked or superseded: the user must reconnect."""


class InvalidClient(QboOAuthError):
    """The client id or secret is wrong (or the keys do not match the environment): a configuration error."""


def oauth_error(
    error: str, description: str | None, *, status: int | None, intuit_tid: str | None
) -> QboOAuthError:
    """The OAuth error class for an `error` code."""
    cls: type[QboOAuthError] = QboOAuthError
    if error == "invalid_grant":
        cls = InvalidGrant
    elif error == "invalid_client":
        cls = InvalidClient
    return cls(error, description, status=status, intuit_tid=intuit_tid)


# --- parsing ----------------------------------------------------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header value looked up case-insensitively (httpx.Headers already is; plain dicts are not)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def intuit_tid_of(headers: Mapping[str, str]) -> str | None:
    return header(headers, "intuit_tid") or header(headers, "intuit-tid")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or garbled."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(seconds, 0.0)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _fault_fields(body: bytes) -> dict[str, str | None]:
    """Message, detail, code, element and type from any error body Intuit sends, best effort."""
    fields: dict[str, str | None] = {
        "message": None,
        "detail": None,
        "code": None,
        "element": None,
        "type": None,
    }
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return fields
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for fault_key, error_key in (("Fault", "Error"), ("fault", "error")):
            fault = parsed.get(fault_key)
            if not isinstance(fault, dict):
                continue
            fields["type"] = _text(fault.get("type")) or None
            errors = fault.get(error_key)
            first = errors[0] if isinstance(errors, list) and errors else errors
            if isinstance(first, dict):
                fields["message"] = _text(first.get("Message", first.get("message"))) or None
                fields["detail"] = _text(first.get("Detail", first.get("detail"))) or None
                code = first.get("code", first.get("Code"))
                fields["code"] = _text(code) or None
                fields["element"] = _text(first.get("element", first.get("Element"))) or None
            return fields
        # An OAuth-style body (some gateways answer API calls this way).
        if isinstance(parsed.get("error"), str):
            fields["message"] = parsed["error"]
            fields["detail"] = _text(parsed.get("error_description")) or None
            return fields
        return fields
    if text.startswith("<"):
        for key, pattern in (
            ("code", _XML_ERROR_CODE),
            ("type", _XML_FAULT_TYPE),
            ("message", _XML_MESSAGE),
            ("detail", _XML_DETAIL),
        ):
            match = pattern.search(text)
            if match:
                fields[key] = match.group(1).strip() or None
        if fields["code"] or fields["message"]:
            return fields
    # A proxy's HTML page or plain text: keep a short, single-line excerpt.
    fields["detail"] = " ".join(text.split())[:_MAX_TEXT]
    return fields


def _is_throttle(code: str | None, message: str | None) -> bool:
    return code == THROTTLE_CODE or "throttleexceeded" in (message or "").lower()


def parse_fault(status: int, headers: Mapping[str, str], body: bytes) -> QboError:
    """The exception for an Accounting API error response: the HTTP status decides, the body adds detail."""
    fields = _fault_fields(body)
    code = fields["code"]
    message = fields["message"] or f"HTTP {status}"
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "detail": fields["detail"] or "",
        "element": fields["element"],
        "fault_type": fields["type"],
        "intuit_tid": intuit_tid_of(headers),
        "from_quickbooks": True,
    }
    if status == 429 or (status == 403 and _is_throttle(code, message)):
        return QboThrottled(message, retry_after=parse_retry_after(header(headers, "retry-after")), **kwargs)
    if status == 401:
        return QboAuthenticationError(message, **kwargs)
    if status == 403:
        return QboAuthorizationError(message, **kwargs)
    if status >= 500:
        return QboServerError(message, **kwargs)
    if status == 400:
        if code == "610":
            return QboNotFound(message, **kwargs)
        if code == "5010":
            return QboStaleObject(message, **kwargs)
        if code == "6240":
            return QboDuplicateName(message, **kwargs)
        duplicate_text = "duplicate document number" in f"{message} {fields['detail'] or ''}".lower()
        if code in DUPLICATE_DOC_NUMBER_CODES or duplicate_text:
            return QboDuplicateDocNumber(message, **kwargs)
        return QboValidationError(message, **kwargs)
    # 404 (a wrong URL), 405, 413...: our bug or a proxy's answer, never "fix the input".
    return QboError(message, **kwargs)
