"""The Stripe SDK's transport over libcurl: concurrent calls, headers, redirects, timeouts, TLS and
the connections it keeps, against local servers on loopback that answer as scripted."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import stripe
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub_pipelines.resources.orders.stripe_transport import CurlClient

Handler = Callable[[BaseHTTPRequestHandler], None]


class ScriptedServer(ThreadingHTTPServer):
    """HTTP/1.1 with keep-alive; `answer` writes each response; counts the connections open now."""

    daemon_threads = True

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.open_connections = 0
        self.connections_changed = threading.Condition()

        class Scripted(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with server.connections_changed:
                    server.open_connections += 1
                    server.connections_changed.notify_all()

            def finish(self) -> None:
                super().finish()
                with server.connections_changed:
                    server.open_connections -= 1
                    server.connections_changed.notify_all()

            def do_GET(self) -> None:
                server.answer(self)

            do_POST = do_DELETE = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = self
        super().__init__(("127.0.0.1", 0), Scripted)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(answer: Handler) -> ScriptedServer:
        server = ScriptedServer(answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def recording_paths(answered: list[str]) -> Handler:
    """Answers 200 with an empty JSON object, noting each request's path in `answered`."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        answered.append(handler.path)
        reply(handler, 200, b"{}")

    return answer


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def test_concurrent_calls_each_get_their_own_answer(serve: Callable[[Handler], ScriptedServer]) -> None:
    def echo(handler: BaseHTTPRequestHandler) -> None:
        body = read_body(handler)
        reply(handler, 200, body, Idempotency_Key=handler.headers["Idempotency-Key"])

    server = serve(echo)
    client = CurlClient(timeout_s=10.0, max_connections=8)

    def call(n: int) -> tuple[int, bytes, int, str]:
        body, status, headers = client.request(
            "post", f"{server.url}/v1/payment_intents", {"Idempotency-Key": f"key-{n}"}, f"amount={n}"
        )
        return n, body, status, headers["idempotency-key"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(400)))
    client.close()
    assert all(body == f"amount={n}".encode() for n, body, _, _ in answers)
    assert all(status == 200 and key == f"key-{n}" for n, _, status, key in answers)


def test_headers_are_read_case_insensitively_from_the_final_response_after_a_100_continue(
    serve: Callable[[Handler], ScriptedServer],
) -> None:
    def continue_then_answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response_only(100)
        handler.send_header("X-Interim", "yes")
        handler.end_headers()
        read_body(handler)
        reply(handler, 402, b'{"error": {}}', Request_Id="req_1", Idempotent_Replayed="true")

    server = serve(continue_then_answer)
    client = CurlClient(timeout_s=10.0, max_connections=1)
    body, status, headers = client.request("post", server.url, {}, "x" * 4096)
    client.close()
    assert (status, body) == (402, b'{"error": {}}')
    assert headers["Request-Id"] == headers["request-id"] == "req_1"
    assert headers.get("Idempotent-Replayed") == "true"
    assert "X-Interim" not in headers


def test_a_redirect_is_answered_as_is_not_followed(serve: Callable[[Handler], ScriptedServer]) -> None:
    followed: list[str] = []

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        if handler.path == "/elsewhere":
            followed.append(handler.path)
        reply(handler, 302, b"", Location="/elsewhere")

    server = serve(redirect)
    client = CurlClient(timeout_s=10.0, max_connections=1)
    _, status, headers = client.request("get", f"{server.url}/v1/payment_intents/search", {})
    client.close()
    assert (status, headers["location"], followed) == (302, "/elsewhere", [])


def test_a_get_after_a_post_on_the_same_connection_sends_no_body(
    serve: Callable[[Handler], ScriptedServer],
) -> None:
    seen: list[tuple[str, bytes]] = []

    def record(handler: BaseHTTPRequestHandler) -> None:
        seen.append((handler.command, read_body(handler)))
        reply(handler, 200, b"{}")

    server = serve(record)
    client = CurlClient(timeout_s=10.0, max_connections=1)
    for method in ("post", "get", "delete", "post"):
        client.request(method, server.url, {}, "amount=1" if method == "post" else None)
    client.close()
    assert seen == [("POST", b"amount=1"), ("GET", b""), ("DELETE", b""), ("POST", b"amount=1")]


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(
    serve: Callable[[Handler], ScriptedServer],
) -> None:
    answered: list[str] = []
    server = serve(recording_paths(answered))
    client = CurlClient(timeout_s=5.0, max_connections=1)
    with pytest.raises(ValueError, match="line break"):
        client.request("post", server.url, {"Idempotency-Key": "k\r\nX-Injected: 1"}, "a=1")
    client.close()
    assert answered == []


def test_a_server_that_never_answers_is_a_retryable_connection_error() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever answers
    client = CurlClient(timeout_s=0.3, max_connections=1)
    try:
        with pytest.raises(stripe.APIConnectionError) as failed:
            client.request(
                "post", f"http://127.0.0.1:{silent.getsockname()[1]}/v1/payment_intents", {}, "a=1"
            )
    finally:
        client.close()
        silent.close()
    assert failed.value.should_retry
    assert "timed out" in str(failed.value).lower()


def test_a_refused_connection_is_a_retryable_connection_error() -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    client = CurlClient(timeout_s=5.0, max_connections=1)
    with pytest.raises(stripe.APIConnectionError) as failed:
        client.request("post", f"http://127.0.0.1:{port}/v1/payment_intents", {}, "a=1")
    client.close()
    assert failed.value.should_retry


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = folder / "server.pem", folder / "server.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certificate_path, key_path


def test_a_certificate_outside_stripes_bundle_is_refused_and_not_retried(
    serve: Callable[[Handler], ScriptedServer], tmp_path: Path
) -> None:
    answered: list[str] = []
    server = serve(recording_paths(answered))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*self_signed_certificate(tmp_path))
    # Handshakes on the server's own threads: a refused one must not stop the listener.
    server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    client = CurlClient(timeout_s=5.0, max_connections=1)
    with pytest.raises(stripe.APIConnectionError) as failed:
        client.request("post", f"https://127.0.0.1:{server.server_address[1]}/v1/payment_intents", {}, "a=1")
    client.close()
    assert not failed.value.should_retry
    assert "certificate" in str(failed.value)
    assert answered == []


def test_no_more_connections_stay_open_than_max_connections(
    serve: Callable[[Handler], ScriptedServer],
) -> None:
    all_in = threading.Barrier(8)

    def answer_once_all_are_in(handler: BaseHTTPRequestHandler) -> None:
        read_body(handler)
        all_in.wait(timeout=30)
        reply(handler, 200, b"{}")

    server = serve(answer_once_all_are_in)
    client = CurlClient(timeout_s=30.0, max_connections=3)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: client.request("post", server.url, {}, "a=1")[1], range(8)))
    assert statuses == [200] * 8
    with server.connections_changed:
        # The 8 calls were in flight at once on 8 connections; the 5 handles beyond 3 closed theirs.
        assert server.connections_changed.wait_for(lambda: server.open_connections == 3, timeout=30)
    client.close()
    with server.connections_changed:
        assert server.connections_changed.wait_for(lambda: server.open_connections == 0, timeout=30)
