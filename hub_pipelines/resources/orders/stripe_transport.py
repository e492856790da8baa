"""The Stripe SDK's HTTP transport over urllib3, apart so a local code location never imports stripe."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import stripe
import stripe._api_requestor
import stripe._util
import urllib3


class PooledUrllib3Client(stripe.HTTPClient):
    """The SDK's transport over one urllib3 connection pool, as large as the calls in flight.

    The SDK's httpx client costs ~1.9 ms of CPU per PaymentIntent against ~1.2 ms for this one (the
    SDK's own encoding and objects are ~0.3 ms of either), and CPU is what bounds the ledger. The
    pool keeps connections alive and checks a kept one is still open before reusing it; urllib3's
    own retries are off, so the gateway's retry policy is the only one. A request goes straight to
    its host's connection pool: the pool manager's way there (its request methods, redirect
    handling and a pool key per call) cost ~130k instructions (~5%) per call, and Stripe does not
    redirect.
    """

    name = "urllib3"

    def __init__(self, timeout_s: float, max_connections: int) -> None:
        super().__init__()
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            retries=False,
            timeout=urllib3.Timeout(total=timeout_s),
            cert_reqs="CERT_REQUIRED",
            ca_certs=stripe.ca_bundle_path,
        )

    # The base class says str, but the SDK decodes the body itself and its own clients return bytes.
    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            target = urllib3.util.parse_url(url)
            host = self._pool.connection_from_host(target.host, port=target.port, scheme=target.scheme)
            response = host.urlopen(
                method.upper(),
                target.request_uri,
                body=post_data,
                headers=dict(headers or {}),
                redirect=False,
                assert_same_host=False,
            )
        except urllib3.exceptions.SSLError as untrusted:
            raise stripe.APIConnectionError(
                f"could not verify the certificate of {url}: {untrusted}", should_retry=False
            ) from untrusted
        except urllib3.exceptions.HTTPError as failed:
            raise stripe.APIConnectionError(
                f"{method} {url} failed: {type(failed).__name__}: {failed}", should_retry=True
            ) from failed
        return response.data, response.status, response.headers

    def close(self) -> None:
        self._pool.clear()


def _log_line_when_wanted(level: int, log: Callable[..., None]) -> Callable[..., None]:
    def log_when_wanted(message: str, **params: Any) -> None:
        if stripe._util._console_log_level() is not None or stripe._util.logger.isEnabledFor(level):
            log(message, **params)

    return log_when_wanted


def format_sdk_log_lines_only_when_wanted() -> None:
    """Make the SDK format its request and response log lines only when they go somewhere.

    The SDK (stripe 16) formats every line (logfmt over the URL, the encoded form and the whole
    response body) before it asks the `stripe` logger whether the level is on: ~0.1 ms of CPU per
    PaymentIntent, a sixth of the call, for lines that production never logs (`stripe` is at
    WARNING). The lines still appear exactly as before when the `stripe` logger is at INFO or
    DEBUG, or `stripe.log` / STRIPE_LOG asks for them on the console. Only the requestor's own
    names are replaced (it imports the two functions by name); idempotent."""
    requestor = stripe._api_requestor
    if getattr(requestor.log_info, "__wrapped_sdk_log__", False):
        return
    for name, level in (("log_info", logging.INFO), ("log_debug", logging.DEBUG)):
        wrapped = _log_line_when_wanted(level, getattr(stripe._util, name))
        wrapped.__wrapped_sdk_log__ = True  # type: ignore[attr-defined]
        setattr(requestor, name, wrapped)
