"""The Stripe SDK's request and response log lines are formatted only when something would show them."""

from __future__ import annotations

import logging
import uuid

import pytest
import stripe._util

from hub_pipelines.core.ports import PAID, ChargeRequest
from hub_pipelines.resources.orders.payment_gateway import StripeGateway


def charge(gateway: StripeGateway) -> str:
    order_id = f"o-{uuid.uuid4()}"
    result = gateway.charge(ChargeRequest(order_id, 1250, "USD", "c-1", None))
    assert result.outcome == PAID
    return order_id


def test_stripe_sdk_formats_no_log_line_while_its_logger_is_off(
    stripe_gateway: StripeGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    formatted: list[dict[str, object]] = []
    real_logfmt = stripe._util.logfmt

    def counting_logfmt(props: dict[str, object]) -> str:
        formatted.append(props)
        return str(real_logfmt(props))

    monkeypatch.setattr(stripe._util, "logfmt", counting_logfmt)
    monkeypatch.setattr(stripe, "log", None)
    monkeypatch.setattr(stripe._util, "STRIPE_LOG", None)
    caplog.set_level(logging.WARNING, logger="stripe")
    charge(stripe_gateway)
    assert formatted == []


def test_stripe_sdk_log_lines_reach_the_stripe_logger_at_debug(
    stripe_gateway: StripeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="stripe"):
        charge(stripe_gateway)
    lines = [record.getMessage() for record in caplog.records if record.name == "stripe"]
    assert any("Request to Stripe api" in line and "/v1/payment_intents" in line for line in lines)
    assert any("Post details" in line and "amount=1250" in line for line in lines)
    assert any("Stripe API response" in line and "response_code=200" in line for line in lines)
