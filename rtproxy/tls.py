"""A self-signed certificate for 127.0.0.1 and localhost, made once and reused.

The Node SDK only speaks ``wss://``, so ``--tls`` serves the proxy (and the
replay server) over TLS with this certificate; Node trusts it through
``NODE_EXTRA_CA_CERTS``. It lives in ``$RTPROXY_HOME`` (default
``~/.rtproxy``), readable by its owner only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("RTPROXY_HOME") or Path.home() / ".rtproxy")


def ensure_certificate(directory: Path | None = None) -> tuple[Path, Path]:
    """(certificate, key) paths, created on first use."""
    directory = directory or home() / "tls"
    cert_path, key_path = directory / "localhost.pem", directory / "localhost-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtproxy localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(directory: Path | None = None) -> tuple[ssl.SSLContext, Path]:
    """A server SSL context with the certificate, and the certificate's path."""
    cert, key = ensure_certificate(directory)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, cert
