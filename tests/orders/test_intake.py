"""Intake checks without servers: schema validation, authenticity (HMAC, JWT), price verification, PII."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from decimal import Decimal

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hub_pipelines.orders.authenticity import UnauthenticEvent, payload_sha256
from hub_pipelines.orders.catalog import Product
from hub_pipelines.orders.intake import InvalidOrderEvent, parse_order_event
from hub_pipelines.orders.pii import PiiCipher, PiiDecryptionFailed, new_key_setting
from hub_pipelines.orders.pricing import PriceRejected, price_order
from tests.orders.support import authenticator, encode, hmac_headers, jwt_headers, order_event

CATALOG = {"p-cup": Product("p-cup", "Ceramic cup", "USD", 1250, 1)}


def text(headers: dict[str, bytes]) -> dict[str, str]:
    return {name: value.decode() for name, value in headers.items()}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (encode({k: v for k, v in order_event().items() if k != "idempotency_key"}), "idempotency_key"),
        (encode(order_event(items=[])), "$.items"),
        (encode(order_event(items=[("p-cup", 1, 12.5)])), "not a JSON number"),
        (encode(order_event(items=[("p-cup", 0, "12.50")])), "$.items[0].quantity"),
        (encode(order_event(items=[("p-cup", -3, "12.50")])), "$.items[0].quantity"),
        (encode(order_event(items=[("p-cup", 10**9, "12.50")])), "$.items[0].quantity"),
        (encode(order_event(currency="XXQ")), "ISO 4217"),
        (encode(order_event(items=[("p-cup", 1, "abc")])), "not a decimal amount"),
    ],
)
def test_invalid_order_event_is_rejected_with_the_field_and_rule(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidOrderEvent, match=reason.replace("[", r"\[").replace("$", r"\$")):
        parse_order_event(payload)


def test_valid_order_event_keeps_money_as_decimal() -> None:
    request = parse_order_event(encode(order_event(items=[("p-cup", 2, "12.50")])))
    assert request.items[0].unit_price == Decimal("12.50")
    assert request.items[0].quantity == 2


def test_price_tampered_by_more_than_a_cent_is_a_named_mismatch() -> None:
    request = parse_order_event(encode(order_event(items=[("p-cup", 1, "12.511")])))
    with pytest.raises(PriceRejected, match=r"^price mismatch for Ceramic cup: sent 12.511, catalog 12.50$"):
        price_order(request, CATALOG)


def test_price_within_a_cent_is_charged_at_the_catalog_price() -> None:
    priced = price_order(parse_order_event(encode(order_event(items=[("p-cup", 2, "12.505")]))), CATALOG)
    assert priced.total_minor == 2500


def test_unknown_product_is_rejected_by_name() -> None:
    request = parse_order_event(encode(order_event(items=[("p-ghost", 1, "1.00")])))
    with pytest.raises(PriceRejected, match="unknown product 'p-ghost'"):
        price_order(request, CATALOG)


def test_hmac_signature_accepts_the_signed_payload_and_rejects_a_changed_one() -> None:
    payload = encode(order_event())
    headers = text(hmac_headers(payload))
    assert authenticator().verify(payload, headers) == "hmac"
    with pytest.raises(UnauthenticEvent, match="HMAC signature does not match"):
        authenticator().verify(payload.replace(b"12.50", b"0.01"), headers)


def test_unsigned_event_is_rejected() -> None:
    with pytest.raises(UnauthenticEvent, match="unsigned event"):
        authenticator().verify(encode(order_event()), {})


def test_jwt_hs256_with_right_issuer_audience_and_payload_hash_is_accepted() -> None:
    payload = encode(order_event())
    assert authenticator().verify(payload, text(jwt_headers(payload))) == "jwt-hs256"


@pytest.mark.parametrize(
    ("token_options", "reason"),
    [
        ({"expires_in": -60}, "JWT has expired"),
        ({"audience": "someone-else"}, "JWT audience is not 'hub-orders'"),
        ({"issuer": "mallory"}, "JWT issuer is not 'hub-checkout'"),
        ({"key": "a-different-secret-of-32-bytes-or-more"}, "Signature verification failed"),
    ],
)
def test_bad_jwt_is_rejected_with_the_reason(token_options: dict, reason: str) -> None:
    payload = encode(order_event())
    with pytest.raises(UnauthenticEvent, match=reason):
        authenticator().verify(payload, text(jwt_headers(payload, **token_options)))


def test_jwt_with_alg_none_is_rejected() -> None:
    payload = encode(order_event())
    token = jwt.encode(
        {"iss": "hub-checkout", "aud": "hub-orders", "exp": 4102444800}, None, algorithm="none"
    )
    with pytest.raises(UnauthenticEvent, match="algorithm 'none' is not accepted"):
        authenticator().verify(payload, {"authorization": f"Bearer {token}"})


def test_jwt_signed_with_the_public_key_as_hmac_secret_is_rejected() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    verifier = authenticator(jwt_hs256_secret=None, jwt_rs256_public_key=public_pem)
    payload = encode(order_event())

    assert (
        verifier.verify(payload, text(jwt_headers(payload, key=private_pem, algorithm="RS256")))
        == "jwt-rs256"
    )
    # The classic confusion attack: HS256 "signed" with the public key, hoping it is used as the secret.
    forged_token = _hs256_signed_with_raw_key(payload, public_pem.encode())
    with pytest.raises(UnauthenticEvent, match="JWT algorithm HS256 is not configured"):
        verifier.verify(payload, {"authorization": f"Bearer {forged_token}"})


def _hs256_signed_with_raw_key(payload: bytes, key: bytes) -> str:
    # Built by hand: PyJWT itself refuses to use a PEM public key as an HMAC secret.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    claims = json.dumps(
        {
            "iss": "hub-checkout",
            "aud": "hub-orders",
            "exp": 4102444800,
            "payload_sha256": payload_sha256(payload),
        }
    ).encode()
    signing_input = f"{b64(header)}.{b64(claims)}".encode()
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{b64(signature)}"


def test_pii_round_trips_and_refuses_a_ciphertext_moved_to_another_order() -> None:
    cipher = PiiCipher.from_setting(new_key_setting("k2") + "," + new_key_setting("k1"))
    sealed = cipher.encrypt("ada@example.com", "order:o-1:email")
    assert b"ada" not in sealed
    assert cipher.active_key_id == "k2"
    assert cipher.decrypt(sealed, "k2", "order:o-1:email") == "ada@example.com"
    with pytest.raises(PiiDecryptionFailed):
        cipher.decrypt(sealed, "k2", "order:o-2:email")
