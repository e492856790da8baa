"""A run of the confirmations step in a process of its own, driven over stdin/stdout (no sleeps).

python -m tests.orders.delivery_worker <database url> <smtp port> <sms base url> <sms sid> <sms token> <pii keys>
    prints "ready" and waits for a line; materializes `orders/notifications` (the asset, through
    Dagster, on the real SMTP and SMS servers); after its first email has gone out it prints
    "delivering" and waits for another line, so a test can hold two runs in the middle of their
    deliveries at once; then prints the step's counts as JSON.
"""

from __future__ import annotations

import json
import sys
import threading

import dagster as dg

from hub_pipelines.assets.orders.downstream import order_notifications
from hub_pipelines.core.ports import NotificationChannel
from hub_pipelines.orders.notifications import EMAIL
from hub_pipelines.resources.orders.customer_notifications import CustomerNotifier
from hub_pipelines.resources.orders.order_settings import OrderLedgerSettings
from hub_pipelines.resources.sql_database import PostgresDatabase


class PausingAfterFirst:
    """The real channel; once its first message has gone out it tells the test, and no other message
    leaves until the test says to go on."""

    def __init__(self, channel: NotificationChannel) -> None:
        self.channel = channel
        self.sent = 0
        self.lock = threading.Lock()
        self.go_on = threading.Event()

    def send(self, recipient: str, subject: str, body: str) -> None:
        with self.lock:
            first = self.sent == 0
            self.sent += 1
        if not first:
            self.go_on.wait()
        self.channel.send(recipient, subject, body)
        if first:
            print("delivering", flush=True)
            sys.stdin.readline()
            self.go_on.set()


class PausingNotifier(CustomerNotifier):
    def channels(self) -> dict[str, NotificationChannel]:
        channels = super().channels()
        return {**channels, EMAIL: PausingAfterFirst(channels[EMAIL])}


def main(database_url: str, smtp_port: str, sms_url: str, sid: str, token: str, pii_keys: str) -> None:
    resources = {
        "database": PostgresDatabase(url=database_url),
        "customer_notifier": PausingNotifier(
            smtp_host="127.0.0.1",
            smtp_port=int(smtp_port),
            smtp_starttls=False,
            email_from="orders@hub.test",
            sms_base_url=sms_url,
            sms_account_sid=sid,
            sms_auth_token=token,
            sms_from="+15550009999",
        ),
        "order_settings": OrderLedgerSettings(pii_keys=pii_keys),
    }
    print("ready", flush=True)
    sys.stdin.readline()
    result = dg.materialize([order_notifications], resources=resources)
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    print(
        json.dumps(
            {
                name: value.value
                for name, value in metadata.items()
                if name.endswith(("_sent", "_failed", "_unknown", "_skipped"))
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
