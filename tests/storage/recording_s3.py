"""A TLS endpoint that records S3 requests and answers like S3: the wire form under test.

SeaweedFS accepts request shapes that Google Cloud Storage's XML API refuses (aws-chunked
uploads with a streaming trailer), so tests that must hold on GCS assert on what goes over the
wire instead. The certificate is made here, for 127.0.0.1 only.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingS3:
    url: str
    ca_file: Path
    requests: list[Recorded] = field(default_factory=list)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate (its own CA) for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return body
            body += handler.rfile.read(size)
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


@contextmanager
def recording_s3(folder: Path) -> Iterator[RecordingS3]:
    cert_file, key_file = self_signed(folder)
    records: list[Recorded] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _record(self) -> Recorded:
            recorded = Recorded(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, b""
            )
            recorded.body = _read_body(self)
            records.append(recorded)
            return recorded

        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            recorded = self._record()
            etag = hashlib.md5(recorded.body, usedforsecurity=False).hexdigest()
            self._answer(200, ETag=f'"{etag}"', x_amz_request_id="rec")

        def do_HEAD(self) -> None:  # noqa: N802
            self._record()
            self._answer(200, x_amz_bucket_region="us-east-1")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002, ARG002
            pass  # quiet: the records are the output

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RecordingS3(f"https://127.0.0.1:{server.server_address[1]}", cert_file, records)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
