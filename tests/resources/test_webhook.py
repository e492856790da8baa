import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_pipelines.core.ports import WebhookUndeliverable
from hub_pipelines.core.webhook_signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidSignature,
    signed_headers,
    verify_signature,
)
from hub_pipelines.resources.media.webhook import FileWebhook, HttpWebhook
from tests.fakes.webhook_receiver import WebhookReceiver, running_webhook_receiver

SECRET = "test-secret"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_webhook_receiver() as running:
        yield running


def sender(receiver: WebhookReceiver, attempts: int = 4) -> HttpWebhook:
    return HttpWebhook(url=receiver.url, secret=SECRET, attempts=attempts, initial_wait_seconds=0.01)


def test_delivery_arrives_with_a_valid_signature_and_its_delivery_id(receiver: WebhookReceiver) -> None:
    delivery = sender(receiver).deliver("media.published", {"upload": "cat.jpg"}, "cat@1")
    (request,) = receiver.received
    assert verify_signature(SECRET, request.headers, request.body) > 0
    assert json.loads(request.body) == {"upload": "cat.jpg"}
    assert request.headers[DELIVERY_HEADER] == "cat@1"
    assert (delivery.status_code, delivery.attempts) == (200, 1)


def test_delivery_is_retried_on_503_until_accepted(receiver: WebhookReceiver) -> None:
    receiver.fail_next(503, times=2)
    delivery = sender(receiver).deliver("media.published", {"n": 1}, "d1")
    assert [request.answered for request in receiver.received] == [503, 503, 200]
    assert delivery.attempts == 3


def test_delivery_failing_on_every_try_is_undeliverable_after_the_last(receiver: WebhookReceiver) -> None:
    receiver.always_fail(503)
    with pytest.raises(WebhookUndeliverable, match="failed after 3 tries"):
        sender(receiver, attempts=3).deliver("media.published", {"n": 1}, "d1")
    assert len(receiver.received) == 3


def test_delivery_refused_with_400_is_not_retried(receiver: WebhookReceiver) -> None:
    receiver.always_fail(400)
    with pytest.raises(WebhookUndeliverable, match="after 1 tries"):
        sender(receiver).deliver("media.published", {"n": 1}, "d1")
    assert len(receiver.received) == 1


def test_signature_rejects_an_altered_body() -> None:
    headers = signed_headers(SECRET, b'{"a":1}')
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(SECRET, headers, b'{"a":2}')


def test_signature_rejects_another_secret() -> None:
    headers = signed_headers("other", b"{}")
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(SECRET, headers, b"{}")


def test_signature_rejects_a_stale_timestamp_even_when_the_mac_is_right() -> None:
    headers = signed_headers(SECRET, b"{}", timestamp=int(time.time()) - 3600)
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify_signature(SECRET, headers, b"{}")


def test_file_webhook_appends_verifiable_deliveries(tmp_path: Path) -> None:
    hook = FileWebhook(path=str(tmp_path / "hooks.jsonl"), secret=SECRET)
    hook.deliver("media.published", {"n": 1}, "a")
    hook.deliver("media.published", {"n": 2}, "b")
    lines = [json.loads(line) for line in (tmp_path / "hooks.jsonl").read_text().splitlines()]
    assert [line["headers"][DELIVERY_HEADER] for line in lines] == ["a", "b"]
    for line in lines:
        assert verify_signature(SECRET, line["headers"], line["body"].encode()) == int(
            line["headers"][TIMESTAMP_HEADER]
        )
