"""The emulator's adjustable clock and the timestamp formats QuickBooks uses."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

# Every US sandbox company we saw reports times in Pacific time; the emulator's companies do the same.
COMPANY_TZ = ZoneInfo("America/Los_Angeles")


class Clock:
    """Real UTC time plus an offset that `POST /__admin/clock` moves forward.

    Token, code and CDC windows, and MetaData times all read this clock, so tests can jump a hundred days
    without waiting. Rate limiting and webhook retries deliberately use real monotonic time instead.
    """

    def __init__(self, offset_seconds: float = 0.0) -> None:
        self.offset_seconds = offset_seconds

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset_seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset_seconds += seconds

    def today(self) -> date:
        """Today's date in the company's time zone (QuickBooks' default TxnDate)."""
        return self.now().astimezone(COMPANY_TZ).date()


def response_time(moment: datetime) -> str:
    """The top-level `time` of API responses: milliseconds and the company's offset."""
    local = moment.astimezone(COMPANY_TZ)
    return local.isoformat(timespec="milliseconds")


def meta_time(moment: datetime) -> str:
    """MetaData.CreateTime / LastUpdatedTime: whole seconds with the company's offset."""
    return moment.astimezone(COMPANY_TZ).isoformat(timespec="seconds")


def precise_time(moment: datetime) -> str:
    """How the emulator stores times internally, so ordering survives several changes in one second."""
    return moment.astimezone(COMPANY_TZ).isoformat(timespec="microseconds")


def utc_millis(moment: datetime) -> str:
    """Webhook timestamps: UTC with milliseconds and a `Z`, as in Intuit's 2025 samples."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_micros(moment: datetime) -> str:
    """CloudEvents `time`: RFC 3339 UTC with sub-second precision."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An ISO date or date-time; a missing offset (or a bare date) means the company's time zone."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    if len(value) == 10:
        parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
    else:
        parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=COMPANY_TZ)
    return parsed


def add_years(moment: datetime, years: int) -> datetime:
    """Calendar years later; 29 February falls back to the 28th."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)
