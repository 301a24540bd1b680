"""Clients share one TLS context per trust setting (connectors/transport/tls.py) and still verify: a server whose
certificate the default store does not hold is refused, and ``SSL_CERT_FILE`` (honoured as httpx honours it) is
read when it changes, not frozen by the first client of the process; a server below TLS 1.2 is refused."""

from __future__ import annotations

import datetime
import http.server
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.transport.bounded_client import BoundedClient
from connectors.transport.tls import default_ssl_context


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert_file, key_file = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://localhost:{server.server_address[1]}/", cert_file
    finally:
        server.shutdown()
        server.server_close()


def test_clients_share_one_context_that_still_refuses_an_unknown_certificate(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert_file = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with BoundedClient(bounds=None) as one, BoundedClient(bounds=None) as two:
        assert one._transport._pool._ssl_context is two._transport._pool._ssl_context is default_ssl_context()  # type: ignore[attr-defined]
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            one.get(url)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # as httpx: the environment names the trust store
    with BoundedClient(bounds=None) as trusting:
        assert trusting.get(url).text == "ok"
    with BoundedClient(bounds=None, trust_env=False) as ignoring, pytest.raises(httpx.ConnectError):
        ignoring.get(url)
    own = ssl.create_default_context(cafile=str(cert_file))
    with BoundedClient(bounds=None, verify=own, trust_env=False) as given:
        assert given._transport._pool._ssl_context is own  # type: ignore[attr-defined]
        assert given.get(url).text == "ok"


@pytest.fixture
def tls_1_1_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A server that speaks TLS 1.1 at most (an old EHR or proxy), its certificate trusted through ``SSL_CERT_FILE``."""
    cert_file, key_file = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 above security level 0
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():  # naming TLS 1.1 is deprecated: the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://localhost:{server.server_address[1]}/", cert_file
    finally:
        server.shutdown()
        server.server_close()


def test_sal37_the_shared_context_refuses_a_server_below_tls_1_2(
    tls_1_1_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SAL-37: every EHR, token and Dagster client speaks TLS 1.2 or newer: a server offering TLS 1.1 at most is
    refused during the handshake, though its certificate is trusted."""
    url, cert_file = tls_1_1_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    assert default_ssl_context().minimum_version >= ssl.TLSVersion.TLSv1_2
    with BoundedClient(bounds=None) as client, pytest.raises(httpx.ConnectError) as refused:
        client.get(url)
    assert "CERTIFICATE_VERIFY_FAILED" not in str(refused.value), refused.value
