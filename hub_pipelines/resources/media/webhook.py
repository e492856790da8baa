"""Webhooks announcing what the workflows did: HTTP POSTs in production, a JSON-lines file locally.

Both sign each delivery the same way (`hub_pipelines.core.webhook_signing`) and implement
`Webhook.deliver`. The HTTP sender retries timeouts, lost connections, 408/425/429 and 5xx with
backoff; any other answer, or the last failed try, raises `WebhookUndeliverable`, and the caller
dead-letters the delivery. Every delivery carries a stable `X-Hub-Delivery` id so a receiver can
drop the repeats that retries and re-runs produce.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from hub_pipelines.core.ports import WebhookDelivery, WebhookUndeliverable
from hub_pipelines.core.retry import RetryPolicy, transient_http_error
from hub_pipelines.core.webhook_signing import DELIVERY_HEADER, EVENT_HEADER, encode_payload, signed_headers

# httpx loads with the first request: the local implementation beside this one never needs it.
if TYPE_CHECKING:
    import httpx

_FILE_LOCK = threading.Lock()


class HttpWebhook(dg.ConfigurableResource):
    """POSTs JSON to `url`, signed with `secret` (HMAC-SHA256 over timestamp and body)."""

    url: str
    secret: str
    timeout_seconds: float = 10.0
    attempts: int = 5
    initial_wait_seconds: float = 1.0
    max_wait_seconds: float = 30.0

    _client: Any = PrivateAttr(default=None)

    @property
    def client(self) -> httpx.Client:
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_seconds)
        return self._client

    def deliver(self, event: str, payload: Mapping[str, Any], delivery_id: str) -> WebhookDelivery:
        import httpx

        body = encode_payload(payload)
        policy = RetryPolicy(
            attempts=self.attempts,
            initial_wait=self.initial_wait_seconds,
            max_wait=self.max_wait_seconds,
            jitter=self.initial_wait_seconds,
            retry_on=(transient_http_error,),
        )
        tries = 0

        def post() -> httpx.Response:
            nonlocal tries
            tries += 1
            # Signed per try: a retry hours later must not arrive with a stale timestamp.
            headers = {
                "Content-Type": "application/json",
                EVENT_HEADER: event,
                DELIVERY_HEADER: delivery_id,
                **signed_headers(self.secret, body),
            }
            response = self.client.post(self.url, content=body, headers=headers)
            response.raise_for_status()
            return response

        try:
            response = policy.call(post)
        except (httpx.HTTPError, OSError) as error:
            raise WebhookUndeliverable(
                f"webhook {event} delivery {delivery_id} to {self.url} failed after {tries} tries: {error}"
            ) from error
        return WebhookDelivery(delivery_id, response.status_code, tries)


class FileWebhook(dg.ConfigurableResource):
    """Appends each signed delivery (headers and body) to a JSON-lines file; for local runs and the demo."""

    path: str
    secret: str = "local-webhook-secret"

    def deliver(self, event: str, payload: Mapping[str, Any], delivery_id: str) -> WebhookDelivery:
        body = encode_payload(payload)
        headers = {EVENT_HEADER: event, DELIVERY_HEADER: delivery_id, **signed_headers(self.secret, body)}
        line = json.dumps({"headers": headers, "body": body.decode()}) + "\n"
        target = Path(self.path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with _FILE_LOCK, target.open("a", encoding="utf-8") as file:
                file.write(line)
        except OSError as error:
            raise WebhookUndeliverable(
                f"webhook {event} delivery {delivery_id} to {target}: {error}"
            ) from error
        return WebhookDelivery(delivery_id, 200, 1)
