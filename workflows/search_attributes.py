"""Custom search attributes operators filter on in the Temporal Web UI, and the command that registers them.

`ALL` is the one list: the dev server's flags (`make run`, the tests), the test server fixture and
`python -m workflows.search_attributes` (a real cluster or Temporal Cloud) all register what it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
from collections.abc import Sequence

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError

ACCOUNT_ID = SearchAttributeKey.for_keyword("QboAccountId")
REALM_ID = SearchAttributeKey.for_keyword("QboRealmId")
INVOICE_NUMBER = SearchAttributeKey.for_keyword("QboInvoiceNumber")
SYNC_STATUS = SearchAttributeKey.for_keyword("QboSyncStatus")
CONNECTION_STATUS = SearchAttributeKey.for_keyword("QboConnectionStatus")

ALL: tuple[SearchAttributeKey[str], ...] = (
    ACCOUNT_ID,
    REALM_ID,
    INVOICE_NUMBER,
    SYNC_STATUS,
    CONNECTION_STATUS,
)


def indexed_type(key: SearchAttributeKey[str]) -> IndexedValueType.ValueType:
    return IndexedValueType.ValueType(int(key.indexed_value_type))


def type_name(value_type: IndexedValueType.ValueType) -> str:
    """A type as Temporal's CLI and tcld spell it: `Keyword` (INDEXED_VALUE_TYPE_KEYWORD), `KeywordList`, ..."""
    name = IndexedValueType.Name(value_type).removeprefix("INDEXED_VALUE_TYPE_")
    return "".join(part.title() for part in name.split("_"))


def dev_server_flags(keys: Sequence[SearchAttributeKey[str]] = ALL) -> list[str]:
    """`temporal server start-dev` arguments that register the attributes."""
    return [
        arg for key in keys for arg in ("--search-attribute", f"{key.name}={type_name(indexed_type(key))}")
    ]


def tcld_command(namespace: str, keys: Sequence[SearchAttributeKey[str]] = ALL) -> str:
    """The Temporal Cloud command that registers the attributes (its operator service does not)."""
    flags = " ".join(
        f"--search-attribute {shlex.quote(f'{key.name}={type_name(indexed_type(key))}')}" for key in keys
    )
    return f"tcld namespace search-attributes add --namespace {shlex.quote(namespace)} {flags}"


def add_request(namespace: str, keys: Sequence[SearchAttributeKey[str]] = ALL) -> AddSearchAttributesRequest:
    """The operator service's request that adds the attributes (refused if any is there already)."""
    return AddSearchAttributesRequest(
        namespace=namespace,
        search_attributes={key.name: indexed_type(key) for key in keys},
    )


class RegistrationRefused(Exception):
    """Temporal would not list or add the attributes (Temporal Cloud, missing permission, no such namespace)."""


class RegistrationConflict(Exception):
    """An attribute of ours is registered with another type: Temporal cannot change it, an operator must decide."""


async def registered(client: Client) -> dict[str, IndexedValueType.ValueType]:
    """The namespace's custom search attributes and their types."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as exc:
        raise RegistrationRefused(f"{exc.status.name}: {exc.message}") from exc
    return dict(listed.custom_attributes)


async def register(client: Client, keys: Sequence[SearchAttributeKey[str]] = ALL) -> list[str]:
    """Register the attributes the namespace lacks; those already there are fine. Returns the names added."""
    present = await registered(client)
    conflicts = [
        f"{key.name} is {type_name(present[key.name])}, not {type_name(indexed_type(key))}"
        for key in keys
        if key.name in present and present[key.name] != indexed_type(key)
    ]
    if conflicts:
        raise RegistrationConflict("; ".join(conflicts))
    missing = [key for key in keys if key.name not in present]
    if missing:
        try:
            await client.operator_service.add_search_attributes(add_request(client.namespace, missing))
        except RPCError as exc:
            raise RegistrationRefused(f"{exc.status.name}: {exc.message}") from exc
    return [key.name for key in missing]


async def main(argv: Sequence[str] | None = None) -> int:
    # Imported here: the workflows import this module's keys, and need neither settings nor the client's setup.
    import temporal_support
    from settings import get_settings

    parser = argparse.ArgumentParser(
        prog="python -m workflows.search_attributes",
        description="Register the engine's search attributes in the configured Temporal namespace (idempotent).",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait for Temporal to answer instead of failing (a deploy's first step)",
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    log = logging.getLogger("search_attributes")
    settings = get_settings()
    namespace = settings.temporal_namespace
    try:
        if arguments.wait:
            client = await temporal_support.connect_when_reachable(settings, log=log)
        else:
            client = await temporal_support.connect(settings)
        added = await register(client)
    except RuntimeError as exc:
        if not str(exc).startswith("Failed client connect"):
            raise
        sys.stderr.write(f"Temporal at {settings.temporal_address} cannot be reached.\n")
        return 1
    except RegistrationRefused as exc:
        sys.stderr.write(
            f"Temporal at {settings.temporal_address} refused to register the search attributes of namespace "
            f"{namespace!r} ({exc}). Temporal Cloud registers them through its own control plane, not the "
            "operator service; there, run:\n"
            f"  {tcld_command(namespace)}\n"
            "On a self-hosted cluster, run this command with credentials allowed to change the namespace.\n"
        )
        return 1
    except RegistrationConflict as exc:
        sys.stderr.write(f"Search attributes of namespace {namespace!r} conflict with the engine's: {exc}.\n")
        return 2
    for key in ALL:
        state = "registered now" if key.name in added else "already registered"
        sys.stdout.write(f"{key.name} ({type_name(indexed_type(key))}): {state}\n")
    return 0


if __name__ == "__main__":
    import temporal_support

    temporal_support.exit_without_finalizing(asyncio.run(main()))
