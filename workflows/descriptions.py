"""What each workflow says of itself in the Temporal Web UI: its summary (what it is, in words) and the lines of its
current details (what it waits for, its last error).

Both are Temporal payloads, encrypted by the payload codec like every other (the client's and the company's names,
QuickBooks' error words); operators read them through the codec server. Continue-as-new does not carry a summary
over (Temporal's command has no field for it), so each workflow's current details open with the same words.
Text a user or QuickBooks chose is one line, bounded, with the characters that would make links, images, HTML or
emphasis in the UI's markdown escaped.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

# Names stay short enough for the list and the page title; the rest is in the (encrypted) input.
MAX_NAME = 80
MAX_TEXT = 500
_MARKUP = re.compile(r"([\\`*_\[\]<>!|#~])")


def plain(text: str, limit: int = MAX_NAME) -> str:
    """Text from outside (a client's name, QuickBooks' words) as one inert markdown line of at most `limit`."""
    line = " ".join(text.split())
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return _MARKUP.sub(r"\\\1", line)


def invoice_summary(number: str, client_name: str, account_id: str) -> str:
    return f"Invoice {plain(number)} for {plain(client_name)} (account {plain(account_id)})"


def connection_summary(account_id: str, company_name: str | None = None, realm_id: str | None = None) -> str:
    summary = f"QuickBooks connection of account {plain(account_id)}"
    if company_name:
        summary += f": {plain(company_name)}"
    if realm_id:
        summary += f" (company {plain(realm_id)})"
    return summary


def events_summary(realm_id: str) -> str:
    return f"QuickBooks events of company {plain(realm_id)}"


def at(moment: datetime) -> str:
    """A moment as an operator reads it: UTC, to the second."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(interval: timedelta) -> str:
    total = int(interval.total_seconds())
    if total % 3600 == 0 and total >= 3600:
        return f"{total // 3600} h"
    if total % 60 == 0 and total >= 60:
        return f"{total // 60} min"
    return f"{total} s"


def details(summary: str, *lines: tuple[str, str | None]) -> str:
    """The current details: the summary, then a bold label and its words per line (lines without words left out)."""
    return "\n\n".join([summary, *(f"**{label}:** {words}" for label, words in lines if words)])
