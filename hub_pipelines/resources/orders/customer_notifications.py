"""Customer notifications: a JSON-lines file locally; SMTP email and a Twilio-style SMS API in production.

Each resource hands out its channels by name ('email', 'sms') for
`hub_pipelines.orders.notifications.send_confirmations`. A channel raises `NotificationNotSent` only
when the message certainly did not leave (connection refused, rejected before acceptance), which is
what lets the log retry it without ever sending twice.
"""

from __future__ import annotations

import json
import smtplib
import threading
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import PrivateAttr

from hub_pipelines.core.ports import NotificationChannel, NotificationNotSent
from hub_pipelines.orders.notifications import EMAIL, SMS

# httpx loads with the first SMS channel: local runs write notifications to a file.
if TYPE_CHECKING:
    import httpx

_FILE_LOCK = threading.Lock()


class _FileChannel:
    def __init__(self, path: Path, channel: str) -> None:
        self.path = path
        self.channel = channel

    def send(self, recipient: str, subject: str, body: str) -> None:
        line = json.dumps(
            {
                "at": datetime.now(UTC).isoformat(),
                "channel": self.channel,
                "to": masked_recipient(recipient),
                "subject": subject,
                "body": body,
            }
        )
        with _FILE_LOCK:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as log:
                log.write(line + "\n")


def masked_recipient(recipient: str) -> str:
    """Enough of an address or number to tell messages apart, never the whole: the file is not a mailbox."""
    local, at, domain = recipient.partition("@")
    return f"{local[:1]}***@{domain}" if at else f"***{recipient[-2:]}"


class LocalNotificationFile(dg.ConfigurableResource):
    """LOCAL ONLY: appends every customer email and SMS to a JSON-lines file instead of sending it
    (recipients masked)."""

    path: str

    def channels(self) -> dict[str, NotificationChannel]:
        return {EMAIL: _FileChannel(Path(self.path), EMAIL), SMS: _FileChannel(Path(self.path), SMS)}


class SmtpEmail:
    def __init__(self, settings: CustomerNotifier) -> None:
        self.settings = settings

    def send(self, recipient: str, subject: str, body: str) -> None:
        settings = self.settings
        message = EmailMessage()
        message["From"] = settings.email_from
        message["To"] = recipient
        message["Subject"] = subject
        message.set_content(body)
        try:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_s)
        except OSError as unreachable:
            raise NotificationNotSent(
                f"SMTP server {settings.smtp_host}:{settings.smtp_port} unreachable: {unreachable}"
            ) from unreachable
        with smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password)
            try:
                smtp.send_message(message)
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as refused:
                raise NotificationNotSent(f"SMTP refused the message: {_smtp_codes(refused)}") from refused


def _smtp_codes(refused: smtplib.SMTPRecipientsRefused | smtplib.SMTPSenderRefused) -> str:
    """The server's codes and replies without the addresses they were about."""
    if isinstance(refused, smtplib.SMTPSenderRefused):
        return f"sender refused: {refused.smtp_code} {refused.smtp_error.decode(errors='replace')}"
    replies = (f"{code} {reply.decode(errors='replace')}" for code, reply in refused.recipients.values())
    return "recipient refused: " + "; ".join(replies)


class TwilioStyleSms:
    def __init__(self, settings: CustomerNotifier, client: httpx.Client) -> None:
        self.settings = settings
        self.client = client

    def send(self, recipient: str, subject: str, body: str) -> None:
        import httpx

        settings = self.settings
        url = f"{settings.sms_base_url.rstrip('/')}/2010-04-01/Accounts/{settings.sms_account_sid}/Messages.json"
        try:
            response = self.client.post(
                url,
                data={"To": recipient, "From": settings.sms_from, "Body": body},
                auth=(settings.sms_account_sid, settings.sms_auth_token),
            )
        except httpx.ConnectError as unreachable:
            raise NotificationNotSent(f"SMS provider unreachable: {unreachable}") from unreachable
        if 400 <= response.status_code < 500 and response.status_code != 408:
            raise NotificationNotSent(
                f"SMS provider refused the message: HTTP {response.status_code} {response.text[:200]}"
            )
        response.raise_for_status()


class CustomerNotifier(dg.ConfigurableResource):
    """Email over SMTP, SMS over a Twilio-compatible API (`POST /2010-04-01/Accounts/{sid}/Messages.json`)."""

    smtp_host: str
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str = ""
    smtp_starttls: bool = True
    email_from: str = "orders@example.com"
    sms_base_url: str = "https://api.twilio.com"
    sms_account_sid: str = ""
    sms_auth_token: str = ""
    sms_from: str = ""
    timeout_s: float = 10.0

    _http: httpx.Client | None = PrivateAttr(default=None)

    def channels(self) -> dict[str, NotificationChannel]:
        channels: dict[str, NotificationChannel] = {EMAIL: SmtpEmail(self)}
        if self.sms_account_sid:
            import httpx

            if self._http is None:
                self._http = httpx.Client(timeout=self.timeout_s)
            channels[SMS] = TwilioStyleSms(self, self._http)
        return channels
