"""A CloudFront API stub that speaks enough of the protocol for boto3's `create_invalidation`.

`POST /2020-05-31/distribution/<id>/invalidation` with an `InvalidationBatch` XML body answers 201
with an `Invalidation` document, as CloudFront does. Like CloudFront, a repeated CallerReference
for a distribution returns the first invalidation instead of creating another. Unknown
distributions get CloudFront's 404 `NoSuchDistribution` error. `invalidations` lists what was created.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.etree import ElementTree
from xml.sax.saxutils import escape

NAMESPACE = "http://cloudfront.amazonaws.com/doc/2020-05-31/"
_INVALIDATION_PATH = re.compile(r"^/2020-05-31/distribution/(?P<distribution>[^/]+)/invalidation$")


@dataclass(frozen=True)
class Invalidation:
    id: str
    distribution_id: str
    caller_reference: str
    paths: list[str]


@dataclass
class CloudFrontStub:
    distributions: set[str]
    endpoint_url: str = ""
    invalidations: list[Invalidation] = field(default_factory=list)
    requests: int = 0


def _text(element: ElementTree.Element, path: str) -> str:
    found = element.find(path, {"cf": NAMESPACE})
    return found.text or "" if found is not None else ""


def _invalidation_xml(invalidation: Invalidation) -> bytes:
    items = "".join(f"<Path>{escape(path)}</Path>" for path in invalidation.paths)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Invalidation xmlns="{NAMESPACE}">'
        f"<Id>{invalidation.id}</Id><Status>InProgress</Status><CreateTime>2026-01-01T00:00:00Z</CreateTime>"
        f"<InvalidationBatch><Paths><Quantity>{len(invalidation.paths)}</Quantity><Items>{items}</Items></Paths>"
        f"<CallerReference>{escape(invalidation.caller_reference)}</CallerReference></InvalidationBatch>"
        f"</Invalidation>"
    ).encode()


@contextmanager
def running_cloudfront_stub(distribution_id: str) -> Iterator[CloudFrontStub]:
    stub = CloudFrontStub(distributions={distribution_id})
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            stub.requests += 1
            match = _INVALIDATION_PATH.match(self.path)
            if not match:
                return self._answer(404, b"")
            distribution = match["distribution"]
            if distribution not in stub.distributions:
                error = (
                    f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>Sender</Type><Code>NoSuchDistribution</Code>'
                    f"<Message>The specified distribution does not exist.</Message></Error></ErrorResponse>"
                )
                return self._answer(404, error.encode())
            batch = ElementTree.fromstring(body)
            reference = _text(batch, "cf:CallerReference")
            paths = [
                item.text or "" for item in batch.findall("cf:Paths/cf:Items/cf:Path", {"cf": NAMESPACE})
            ]
            with lock:
                existing = [
                    made
                    for made in stub.invalidations
                    if made.distribution_id == distribution and made.caller_reference == reference
                ]
                invalidation = (
                    existing[0]
                    if existing
                    else Invalidation(f"I{len(stub.invalidations) + 1:05d}", distribution, reference, paths)
                )
                if not existing:
                    stub.invalidations.append(invalidation)
            location = (
                f"{stub.endpoint_url}/2020-05-31/distribution/{distribution}/invalidation/{invalidation.id}"
            )
            self._answer(201, _invalidation_xml(invalidation), location)

        def _answer(self, status: int, body: bytes, location: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            if location:
                self.send_header("Location", location)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.endpoint_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
