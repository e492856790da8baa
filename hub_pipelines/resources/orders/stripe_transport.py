"""The Stripe SDK's HTTP transport over libcurl (pycurl), apart so a local code location never imports stripe."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pycurl
import stripe
import stripe._api_requestor
import stripe._util
from opentelemetry import trace
from urllib3 import HTTPHeaderDict

# libcurl's codes for a server whose certificate chain or name does not verify: retrying cannot help.
_UNTRUSTED = frozenset(
    {pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CACERT_BADFILE, pycurl.E_SSL_PINNEDPUBKEYNOTMATCH}
)
_tracer = trace.get_tracer(__name__)


class CurlClient(stripe.HTTPClient):
    """The SDK's transport over libcurl: a pool of curl handles, each used by one call at a time.

    CPU bounds a ledger lane, and the HTTP layer was the largest part of a charge's: over urllib3
    and http.client (whose header parsing goes through `email`) the SDK's PaymentIntent call took
    0.70-0.84 ms of CPU, over libcurl 0.37 ms (docs/benchmarks.md, "Issue 16: the Stripe call over
    libcurl"). The SDK's
    own `PycurlClient` shares one handle between threads, which libcurl forbids, and parses headers
    with `email` again.

    A call takes an idle handle (or makes one) and gives it back after, so the pool grows to the
    calls in flight, whichever threads make them. A handle keeps its connection alive between
    calls (up to `max_connections` idle ones are kept), and the handles share DNS answers and TLS
    sessions. The whole call, connecting included, is bounded by `timeout_s`; redirects are not
    followed (Stripe does not redirect) and only HTTP(S) is spoken. libcurl's own retries do not
    exist, so the gateway's retry policy is the only one. With a tracer provider set
    (`enable_tracing`) before the client is built, each call is a client span, as the urllib3
    instrumentation gave before; without one, no span is begun (a no-op span still cost ~3% of a
    ledger's CPU).
    """

    name = "pycurl"

    def __init__(self, timeout_s: float, max_connections: int) -> None:
        super().__init__()
        self._max_idle = max_connections
        self._traced = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        self._timeout_ms = max(1, round(timeout_s * 1000))
        self._share = pycurl.CurlShare()
        self._share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_DNS)
        self._share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_SSL_SESSION)
        # deque's append and pop are atomic: no lock around the idle handles.
        self._idle: collections.deque[pycurl.Curl] = collections.deque()

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
        verb = method.upper()
        if not self._traced:
            return self._perform(verb, url, headers, post_data)
        with _tracer.start_as_current_span(verb, kind=trace.SpanKind.CLIENT) as span:
            if span.is_recording():
                span.set_attribute("http.request.method", verb)
                span.set_attribute("url.full", url)
            body, status, response_headers = self._perform(verb, url, headers, post_data)
            if span.is_recording():
                span.set_attribute("http.response.status_code", status)
            return body, status, response_headers

    def _perform(
        self, verb: str, url: str, headers: Mapping[str, str] | None, post_data: Any
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            handle = self._idle.pop()
        except IndexError:
            handle = self._new_handle()
        try:
            return self._perform_on(handle, verb, url, headers, post_data)
        finally:
            if len(self._idle) < self._max_idle:
                self._idle.append(handle)
            else:
                handle.close()

    def _perform_on(
        self, handle: pycurl.Curl, verb: str, url: str, headers: Mapping[str, str] | None, post_data: Any
    ) -> tuple[bytes, int, Mapping[str, str]]:
        chunks: list[bytes] = []
        header_lines: list[bytes] = []

        def header_line(line: bytes) -> None:
            # A new status line starts a new response (an interim 1xx before the real one).
            if line.startswith(b"HTTP/"):
                header_lines.clear()
            header_lines.append(line)

        # Every option a call sets is set on every call, so nothing of the handle's last call remains.
        handle.setopt(pycurl.URL, url)
        if verb == "POST":
            handle.setopt(pycurl.POSTFIELDS, post_data or "")
        else:
            handle.setopt(pycurl.HTTPGET, 1)
        handle.setopt(pycurl.CUSTOMREQUEST, verb)
        lines = [f"{name}: {value}" for name, value in (headers or {}).items()]
        if any("\r" in line or "\n" in line for line in lines):
            # libcurl sends header lines as given; http.client refused these too (header injection).
            raise ValueError(f"{verb} {url}: a request header holds a line break")
        # "Expect:" stops libcurl from waiting for a 100 Continue before bodies over 1 KiB.
        handle.setopt(pycurl.HTTPHEADER, [*lines, "Expect:"])
        handle.setopt(pycurl.WRITEFUNCTION, chunks.append)
        handle.setopt(pycurl.HEADERFUNCTION, header_line)
        try:
            handle.perform()
        except pycurl.error as failed:
            code, message = failed.args
            if code in _UNTRUSTED:
                raise stripe.APIConnectionError(
                    f"could not verify the certificate of {url}: {message}", should_retry=False
                ) from failed
            raise stripe.APIConnectionError(
                f"{verb} {url} failed: curl error {code}: {message}", should_retry=True
            ) from failed
        status = handle.getinfo(pycurl.RESPONSE_CODE)
        response_headers = HTTPHeaderDict()
        for line in header_lines[1:]:
            name, colon, value = line.decode("latin-1").partition(":")
            if colon:
                response_headers.add(name.strip(), value.strip())
        return b"".join(chunks), status, response_headers

    def _new_handle(self) -> pycurl.Curl:
        handle = pycurl.Curl()
        handle.setopt(pycurl.SHARE, self._share)
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.TIMEOUT_MS, self._timeout_ms)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.CAINFO, stripe.ca_bundle_path)
        return handle

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


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
