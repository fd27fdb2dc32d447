"""Coverage-guided fuzzing (atheris, libFuzzer) of what Intuit's webhook route does with a body before storing it.

`python -m bench.fuzz_webhooks [--runs N] [--seconds S]`. Each input is a raw body: its signature is checked
(`verify_signature` must answer True or False, and True for the signature Intuit would send), then it is read
(`read_webhook`, and the strict `parse_webhook`): only WebhookPayloadError may come out, every event returned must
fit the columns that store it, and the two must agree. Any other exception or a broken property is a crash:
libFuzzer writes the input to `crash-*` in the directory printed at the start, and exits non-zero. The seed corpus is the
reference's samples of both formats. libFuzzer's closing lines (`#runs`, `cov`, `corp`, `exec/s`) are the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from datetime import UTC
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from qbo.webhooks import (
        WebhookEvent,
        WebhookPayloadError,
        parse_webhook,
        read_webhook,
        signature_of,
        verify_signature,
    )

TOKEN = "fuzz-verifier-token"  # noqa: S105  (signs the fuzzed bodies; not a secret)
_ID = re.compile(r"[0-9]{1,32}")
_ENTITY = re.compile(r"[A-Za-z][A-Za-z0-9]{0,31}")
_OPERATION = re.compile(r"[A-Za-z]{1,16}")

SEEDS = [
    {
        "eventNotifications": [
            {
                "realmId": "1185883450",
                "dataChangeEvent": {
                    "entities": [
                        {"name": "Customer", "id": "1", "operation": "Create", "lastUpdated": "2015-10-05T14:42:19-0700"},
                        {"name": "Customer", "id": "27", "operation": "Merge", "lastUpdated": "2015-10-05T14:42:19-0700", "deletedId": "26"},
                    ]
                },
            }
        ]
    },
    [
        {
            "specversion": "1.0",
            "id": "88cd52aa-33b6-4351-9aa4-47572edbd068",
            "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=",
            "type": "qbo.payment.created.v1",
            "time": "2025-09-10T21:31:25.179851517Z",
            "intuitentityid": "1234",
            "intuitaccountid": "310687",
            "data": {"deletedid": "27"},
        }
    ],
]  # fmt: skip


# Tokens libFuzzer splices into its inputs, so that it reaches past the JSON parser into both formats.
DICTIONARY = [
    "eventNotifications", "realmId", "dataChangeEvent", "entities", "name", "id", "operation", "lastUpdated",
    "deletedId", "specversion", "type", "intuitaccountid", "intuitentityid", "time", "data", "deletedid",
    "qbo.invoice.updated.v1", "qbo.payment.created.v1", "Invoice", "Payment", "Create", "Update", "Merge",
    "2025-09-10T21:31:25.179851517Z", "-0700", "+2359", "0001-01-01T00:00:00", "\\u0000", "\\ud800",
    "9999999999999999999999999999999999999", "[", "]", "{", "}", ":", ",", "null", "true", "1e400",
]  # fmt: skip


def _check_storable(event: WebhookEvent) -> None:
    if not (_ID.fullmatch(event.realm_id) and _ID.fullmatch(event.entity_id)):
        raise AssertionError(f"ids do not fit: {event!r}")
    if event.deleted_id is not None and not _ID.fullmatch(event.deleted_id):
        raise AssertionError(f"deleted id does not fit: {event!r}")
    if not (_ENTITY.fullmatch(event.entity) and _OPERATION.fullmatch(event.operation)):
        raise AssertionError(f"names do not fit: {event!r}")
    if event.occurred_at is not None and not 2000 <= event.occurred_at.astimezone(UTC).year < 2100:
        raise AssertionError(f"time is not sane: {event!r}")
    if len(event.dedupe_key) > 255:
        raise AssertionError(f"dedupe key too long: {event!r}")
    event.dedupe_key.encode("utf-8")


def target(body: bytes) -> None:
    if not verify_signature(body, signature_of(body, TOKEN), TOKEN):
        raise AssertionError("a genuine signature was refused")
    signature = body[:44].decode("latin-1")
    if verify_signature(body, signature, TOKEN) not in (True, False):
        raise AssertionError("verify_signature answered neither True nor False")
    try:
        batch = read_webhook(body)
    except WebhookPayloadError:
        return
    for event in batch.events:
        _check_storable(event)
    try:
        strict = parse_webhook(body)
    except WebhookPayloadError:
        if not batch.problems:
            raise AssertionError("parse_webhook refused what read_webhook read whole") from None
        return
    if batch.problems or strict != batch.events:
        raise AssertionError("parse_webhook and read_webhook disagree")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_webhooks", description=__doc__)
    parser.add_argument("--runs", type=int, default=200_000, help="inputs to try (default 200,000)")
    parser.add_argument(
        "--seconds", type=int, default=0, help="stop after this long instead (0: --runs only)"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fuzz-webhooks-"))
    corpus = work / "corpus"
    corpus.mkdir()
    for index, seed in enumerate(SEEDS):
        (corpus / f"seed-{index}.json").write_bytes(json.dumps(seed).encode())
    dictionary = work / "webhooks.dict"
    dictionary.write_text("".join(f"{json.dumps(token)}\n" for token in DICTIONARY))
    print(f"corpus and crashes in {work}", file=sys.stderr)
    libfuzzer = [
        sys.argv[0],
        f"-runs={args.runs}",
        "-max_len=4096",
        "-print_final_stats=1",
        f"-artifact_prefix={work}/",
        f"-dict={dictionary}",
        str(corpus),
    ]
    if args.seconds:
        libfuzzer.insert(1, f"-max_total_time={args.seconds}")
    atheris.Setup(libfuzzer, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
