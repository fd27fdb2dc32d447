"""Outbound events are signed the Standard Webhooks way, verifiable with the published library; a rotation signs
with every secret; the return from connecting is signed with the same keys."""

from __future__ import annotations

import base64
import os
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from models.signing import query_message, sign_query, verify_query, webhook_headers

OLD = "whsec_" + base64.b64encode(os.urandom(32)).decode()
NEW = "whsec_" + base64.b64encode(os.urandom(32)).decode()
STRANGER = "whsec_" + base64.b64encode(os.urandom(32)).decode()
BODY = b'{"id":"evt_0123","type":"invoice.paid","version":1,"sequence":3}'


def test_an_event_verifies_with_the_published_library() -> None:
    headers = webhook_headers(NEW, "evt_0123", BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(NEW).verify(BODY, headers)["sequence"] == 3
    with pytest.raises(WebhookVerificationError):
        Webhook(STRANGER).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY.replace(b"3", b"4"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY, {**headers, "webhook-id": "evt_other"})


def test_during_a_rotation_every_secret_signs_so_either_verifies() -> None:
    headers = webhook_headers(f"{OLD}, {NEW}", "evt_0123", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    # The platform may switch its verifier from the old secret to the new one at any moment.
    Webhook(OLD).verify(BODY, headers)
    Webhook(NEW).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(STRANGER).verify(BODY, headers)


def test_an_old_delivery_is_refused_by_the_library() -> None:
    headers = webhook_headers(NEW, "evt_0123", BODY, now=time.time() - 600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(NEW).verify(BODY, headers)


def test_the_return_from_connecting_is_signed_with_every_secret() -> None:
    params = {"quickbooks": "connected", "account_id": "acme", "flow": "f1"}
    signature = sign_query(f"{OLD},{NEW}", int(time.time()), query_message(params))
    assert verify_query(OLD, signature, query_message(params))
    assert verify_query(NEW, signature, query_message(params))
    assert not verify_query(STRANGER, signature, query_message(params))
    assert not verify_query(NEW, signature, query_message({**params, "account_id": "other"}))
    stale = sign_query(NEW, int(time.time()) - 600, query_message(params))
    assert not verify_query(NEW, stale, query_message(params))
