"""Hypothesis strategies for Intuit webhook bodies: arbitrary bytes and JSON, and near-valid notifications of both
formats whose every field may be hostile (shared by the parser's fuzz tests and the route's)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Any character at all, lone surrogates and NUL included: json.dumps writes them as \u escapes.
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40) | st.floats() | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)

# Whitespace around an identifier, which Intuit never sends: `$` matches before a final "\n", and a value
# checked that way but stored unstripped overflowed its column. A final "\n" is the one that slipped through.
_before = st.sampled_from(["", "", " ", "\t", "\n", "\u00a0"])
_after = st.sampled_from(["", "\n", "\n", " ", "\r\n", "\t", "\u2028"])


def padded(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`core`, with or without whitespace before and after it."""
    return st.builds(lambda before, value, after: before + value + after, _before, core, _after)


def at_limit(alphabet: str, first: str, limit: int) -> st.SearchStrategy[str]:
    """Identifiers of exactly `limit` characters and of one more (the first of `first`, the rest of `alphabet`)."""
    return st.from_regex(rf"\A{first}{alphabet}{{{limit - 1},{limit}}}\Z")


# At and just past each column's limit (ids 32 digits, entity names 32 characters, operations 16 letters).
boundary_digits = padded(at_limit("[0-9]", "[0-9]", 32) | st.sampled_from(["1", "4620816365000000101"]))
boundary_entity_names = padded(
    at_limit("[A-Za-z0-9]", "[A-Za-z]", 32) | st.sampled_from(["Invoice", "Payment"])
)
boundary_operations = padded(at_limit("[A-Za-z]", "[A-Za-z]", 16) | st.sampled_from(["Update", "Create"]))

digits = st.from_regex(r"\A[0-9]{1,40}\Z")
identifiers = st.one_of(
    st.sampled_from(["1185883450", "9341452732952867", "310687"]),
    digits,
    boundary_digits,
    st.integers(min_value=-(10**40), max_value=10**40),
    any_text,
    json_values,
)
timestamps = st.one_of(
    padded(st.sampled_from(["2025-09-10T21:31:25.179851517Z", "2015-10-05T14:42:19-0700"])),
    # Every year and offset the pattern admits: 0001 with +2359 is before datetime's range once in UTC.
    st.from_regex(
        r"\A[0-9]{4}-[0-1][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9](:[0-5][0-9])?(\.[0-9]{1,12})?"
        r"(Z|[+-][0-2][0-9]:?[0-5][0-9])?\Z"
    ),
    any_text,
    json_values,
)
entity_names = st.one_of(
    st.sampled_from(["Invoice", "Payment", "Customer"]), boundary_entity_names, any_text, json_values
)
operations = st.one_of(
    st.sampled_from(["Create", "Update", "Delete", "Void", "Merge"]),
    boundary_operations,
    any_text,
    json_values,
)


def _maybe(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict that has each field or not."""
    return st.fixed_dictionaries({}, optional=fields)


classic_entities = _maybe(
    name=entity_names, id=identifiers, operation=operations, lastUpdated=timestamps, deletedId=identifiers
)
classic = st.fixed_dictionaries(
    {
        "eventNotifications": st.lists(
            st.one_of(
                _maybe(
                    realmId=identifiers,
                    dataChangeEvent=st.one_of(
                        st.fixed_dictionaries(
                            {"entities": st.lists(classic_entities | json_values, max_size=4)}
                        ),
                        json_values,
                    ),
                ),
                json_values,
            ),
            max_size=3,
        )
    }
)
# An entity and a verb at and just past their limits (32 and 16), with whitespace around the type.
boundary_cloud_event_types = padded(
    st.builds(
        "qbo.{}.{}.v1".format,
        at_limit("[a-z0-9]", "[a-z]", 32) | st.just("invoice"),
        at_limit("[a-z]", "[a-z]", 16) | st.just("updated"),
    )
)
boundary_event_ids = padded(at_limit("[a-z0-9-]", "[a-z0-9]", 255) | st.uuids().map(str))
cloud_event_types = st.one_of(
    st.sampled_from(["qbo.invoice.updated.v1", "qbo.payment.created.v1", "qbo.customer.merged.v1"]),
    # With the long s and the Kelvin sign, which match s and k when a pattern ignores case in Unicode.
    st.from_regex("\\Aqbo\\.[A-Za-z0-9\u017f\u212a]{1,40}\\.[A-Za-z]{1,30}\\.v[0-9]{1,3}\\Z"),
    boundary_cloud_event_types,
    any_text,
    json_values,
)
cloud_event = _maybe(
    specversion=st.just("1.0"),
    id=st.one_of(st.uuids().map(str), boundary_event_ids, any_text, json_values),
    type=cloud_event_types,
    intuitaccountid=identifiers,
    intuitentityid=identifiers,
    time=timestamps,
    data=st.one_of(st.fixed_dictionaries({}, optional={"deletedid": identifiers}), json_values),
)
cloud_events = st.lists(cloud_event | json_values, max_size=4)

# Notifications whose every field is a real identifier, at or just past its limit, with or without whitespace
# around it: what a parser checking with `$` (or storing unstripped values) lets through to a column it overflows.
boundary_classic = st.fixed_dictionaries(
    {
        "eventNotifications": st.lists(
            st.fixed_dictionaries(
                {
                    "realmId": boundary_digits,
                    "dataChangeEvent": st.fixed_dictionaries(
                        {
                            "entities": st.lists(
                                st.fixed_dictionaries(
                                    {
                                        "name": boundary_entity_names,
                                        "id": boundary_digits,
                                        "operation": boundary_operations,
                                    },
                                    optional={"lastUpdated": timestamps, "deletedId": boundary_digits},
                                ),
                                min_size=1,
                                max_size=4,
                            )
                        }
                    ),
                }
            ),
            min_size=1,
            max_size=2,
        )
    }
)
boundary_cloud_events = st.lists(
    st.fixed_dictionaries(
        {
            "specversion": st.just("1.0"),
            "id": boundary_event_ids,
            "type": boundary_cloud_event_types,
            "intuitaccountid": boundary_digits,
            "intuitentityid": boundary_digits,
        },
        optional={"time": timestamps},
    ),
    min_size=1,
    max_size=4,
)


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


webhook_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(as_json),
    classic.map(as_json),
    cloud_events.map(as_json),
    cloud_event.map(as_json),
    boundary_classic.map(as_json),
    boundary_cloud_events.map(as_json),
)
