"""Authenticity of order events: an HMAC-SHA256 signature header, or a JWT bound to the payload.

A JWT (header `authorization: Bearer <token>`) must carry `payload_sha256`, the hex SHA-256 of the
event bytes, so a token cannot be replayed on another body. HS256 tokens are verified with the shared
secret only, RS256 tokens with the public key only: the algorithm a token claims never chooses a key
it was not configured for, which is what defeats `alg: none` and RS256/HS256 confusion.

Headers are whatever a producer wrote: signatures and hashes are compared as bytes after a check of
their form, so a value that is not ASCII is a rejection, never a TypeError.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

SIGNATURE_HEADER = "x-hub-signature-256"
AUTHORIZATION_HEADER = "authorization"
PAYLOAD_HASH_CLAIM = "payload_sha256"
_SIGNATURE_FORM = re.compile(r"sha256=[0-9a-f]{64}", re.ASCII)
_HASH_FORM = re.compile(r"[0-9a-f]{64}", re.ASCII)


class UnauthenticEvent(ValueError):
    """The event's signature or token is missing, malformed, expired, or does not verify."""


def hmac_signature(payload: bytes, secret: str) -> str:
    """'sha256=<hex>' of the payload (the GitHub/Stripe webhook convention)."""
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def payload_sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class EventAuthenticator:
    """Verifies one event's headers against its payload; raises UnauthenticEvent with the reason."""

    hmac_secret: str | None = None
    jwt_hs256_secret: str | None = None
    jwt_rs256_public_key: str | None = None
    jwt_issuer: str = "hub-checkout"
    jwt_audience: str = "hub-orders"
    leeway_seconds: float = 5.0

    def verify(self, payload: bytes, headers: Mapping[str, str]) -> str:
        """How the event was authenticated: 'hmac', 'jwt-hs256' or 'jwt-rs256'."""
        lowered = {name.lower(): value for name, value in headers.items()}
        authorization = lowered.get(AUTHORIZATION_HEADER)
        if authorization:
            return self._verify_jwt(payload, authorization)
        signature = lowered.get(SIGNATURE_HEADER)
        if signature:
            return self._verify_hmac(payload, signature)
        raise UnauthenticEvent(f"unsigned event: neither {SIGNATURE_HEADER} nor an authorization token")

    def _verify_hmac(self, payload: bytes, signature: str) -> str:
        if not self.hmac_secret:
            raise UnauthenticEvent(f"{SIGNATURE_HEADER} present but no HMAC secret is configured")
        if not _SIGNATURE_FORM.fullmatch(signature):
            raise UnauthenticEvent(f"{SIGNATURE_HEADER} is not of the form 'sha256=<64 lowercase hex>'")
        if not hmac.compare_digest(signature.encode(), hmac_signature(payload, self.hmac_secret).encode()):
            raise UnauthenticEvent("HMAC signature does not match the payload")
        return "hmac"

    def _verify_jwt(self, payload: bytes, authorization: str) -> str:
        # PyJWT loads with the first JWT: HMAC-signed events and the code location never need it.
        import jwt

        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticEvent("authorization header is not 'Bearer <token>'")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except (jwt.PyJWTError, TypeError, ValueError) as malformed:
            raise UnauthenticEvent(f"JWT is malformed: {malformed}") from None
        key: str | None
        if algorithm == "HS256":
            key = self.jwt_hs256_secret
        elif algorithm == "RS256":
            key = self.jwt_rs256_public_key
        else:
            raise UnauthenticEvent(f"JWT algorithm {algorithm!r} is not accepted (only HS256 and RS256)")
        if not key:
            raise UnauthenticEvent(f"JWT algorithm {algorithm} is not configured for this pipeline")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.jwt_issuer,
                audience=self.jwt_audience,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iss", "aud", PAYLOAD_HASH_CLAIM]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticEvent("JWT has expired") from None
        except jwt.InvalidAudienceError:
            raise UnauthenticEvent(f"JWT audience is not {self.jwt_audience!r}") from None
        except jwt.InvalidIssuerError:
            raise UnauthenticEvent(f"JWT issuer is not {self.jwt_issuer!r}") from None
        except (jwt.PyJWTError, TypeError, ValueError) as invalid:
            # PyJWT compares claims without checking their type first (an `iss` that is a list
            # raises TypeError): any claim it cannot judge is a token it did not accept.
            raise UnauthenticEvent(f"JWT rejected: {type(invalid).__name__}: {invalid}") from None
        claimed_hash = claims[PAYLOAD_HASH_CLAIM]
        if not isinstance(claimed_hash, str) or not _HASH_FORM.fullmatch(claimed_hash):
            raise UnauthenticEvent(f"JWT {PAYLOAD_HASH_CLAIM} is not 64 lowercase hex digits")
        if not hmac.compare_digest(claimed_hash.encode(), payload_sha256(payload).encode()):
            raise UnauthenticEvent(f"JWT {PAYLOAD_HASH_CLAIM} does not match the payload")
        return f"jwt-{algorithm.lower()}"
