"""The local CA behind `--tls`: real TLS handshakes verified against the CA alone, renewal, private files."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import re
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rtproxy.record import tls
from tests.conftest import ProxyProcess, spawn_proxy

NOW = dt.datetime.now(dt.UTC)
HOSTS = ["localhost", "127.0.0.1", "::1"]


def client_context(cafile: Path) -> ssl.SSLContext:
    """What a careful client does: trust only `cafile`, check the host name, strict X.509 (Python 3.13's default)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def handshake(server: ssl.SSLContext, cafile: Path, host: str) -> x509.Certificate:
    """A real TLS handshake over loopback, the client verifying against `cafile` for `host`; the server's leaf."""
    errors: list[BaseException] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(5)
                with server.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (OSError, ssl.SSLError) as e:  # the client's refusal shows up here too
                errors.append(e)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=5) as raw:
                with client_context(cafile).wrap_socket(raw, server_hostname=host) as conn:
                    der = conn.getpeercert(binary_form=True)
                    assert der is not None
                    return x509.load_der_x509_certificate(der)
        finally:
            thread.join(10)


def leaf(files: tls.Files) -> x509.Certificate:
    return x509.load_pem_x509_certificate(files.cert.read_bytes())


def ca(files: tls.Files) -> x509.Certificate:
    return x509.load_pem_x509_certificate(files.ca_cert.read_bytes())


def pem_blocks(path: Path) -> list[bytes]:
    """The DER bytes of every PEM block in a file."""
    return [
        base64.b64decode(b) for b in re.findall(rb"-----BEGIN [A-Z ]+-----\n(.*?)\n-----END", path.read_bytes(), re.S)
    ]


@pytest.fixture
def files(tmp_path: Path) -> tls.Files:
    return tls.Files(tmp_path / "home" / "tls")


@pytest.mark.parametrize("host", HOSTS)
def test_each_san_host_verifies_against_the_ca_alone(files: tls.Files, host: str) -> None:
    """A client trusting only ca.pem completes a strict, hostname-checked handshake for every SAN host."""
    server, cafile = tls.server_context(files.directory)
    assert cafile == files.ca_cert
    served = handshake(server, cafile, host)
    assert served == leaf(files)


def test_the_leaf_is_a_short_lived_server_certificate_signed_by_a_long_lived_ca(files: tls.Files) -> None:
    """The leaf is CA:FALSE, serverAuth, for exactly localhost/127.0.0.1/::1, 90 days, issued by a 10-year CA."""
    tls.ensure(files)
    cert, authority = leaf(files), ca(files)
    cert.verify_directly_issued_by(authority)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ExtendedKeyUsageOID.SERVER_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=90)
    assert authority.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert authority.not_valid_after_utc - NOW > dt.timedelta(days=9 * 365)


def test_the_ca_vouches_for_nothing_but_the_loopback_names(files: tls.Files, tmp_path: Path) -> None:
    """A certificate the CA's own key signs for another host is refused by a client trusting the CA."""
    tls.ensure(files)
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")]))
        .issuer_name(ca(files).subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("example.com")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "forged.pem", tmp_path / "forged-key.pem"
    cert_path.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="name constraint|permitted"):
        handshake(server, files.ca_cert, "example.com")


def test_the_files_are_private_and_the_ca_key_is_in_no_other_file(files: tls.Files) -> None:
    """The directory is 0700 and every file 0600, even where they existed looser; only ca-key.pem holds the CA key."""
    if os.name == "nt":
        pytest.skip("POSIX permissions")
    files.directory.mkdir(parents=True, mode=0o755)
    os.chmod(files.directory, 0o755)
    tls.ensure(files)
    os.chmod(files.cert, 0o644)
    tls.ensure(files)
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    for path in (files.ca_cert, files.ca_key, files.cert, files.key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.name for p in files.directory.iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "localhost-key.pem",
        "localhost.pem",
    ]
    assert b"PRIVATE KEY" not in files.cert.read_bytes() and b"PRIVATE KEY" not in files.ca_cert.read_bytes()
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    leaf_key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey) and isinstance(leaf_key, ec.EllipticCurvePrivateKey)
    secret = ca_key.private_numbers().private_value.to_bytes(32, "big")
    assert leaf_key.private_numbers().private_value != ca_key.private_numbers().private_value
    assert any(secret in der for der in pem_blocks(files.ca_key))  # the check below can see a key
    for path in (files.ca_cert, files.cert, files.key):
        assert not any(secret in der for der in pem_blocks(path)), path


@pytest.mark.parametrize(
    ("days_ago", "renewed"),
    [(0, False), (59, False), (61, True), (89, True), (200, True)],
    ids=["fresh", "31-days-left", "29-days-left", "1-day-left", "expired"],
)
def test_the_leaf_is_renewed_when_expired_or_near_its_end_and_the_ca_kept(
    files: tls.Files, days_ago: int, renewed: bool
) -> None:
    """A leaf made `days_ago` days ago is kept while more than a third of its 90 days is left, else reissued
    with a new key by the same CA; either way a handshake verifies today."""
    tls.ensure(files, now=NOW - dt.timedelta(days=days_ago))
    before_ca, before_leaf, before_key = files.ca_cert.read_bytes(), files.cert.read_bytes(), files.key.read_bytes()
    server, cafile = tls.server_context(files.directory)
    assert files.ca_cert.read_bytes() == before_ca
    assert (files.cert.read_bytes() != before_leaf) is renewed
    assert (files.key.read_bytes() != before_key) is renewed
    served = handshake(server, cafile, "localhost")
    assert served.not_valid_after_utc - NOW > dt.timedelta(days=30)


def test_a_leaf_naming_other_hosts_is_reissued(files: tls.Files) -> None:
    """A leaf signed by the CA but for other SANs (here localhost only) is replaced by one for all three hosts."""
    tls.ensure(files)
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    narrow = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca(files).subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=80))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files.cert.write_bytes(narrow.public_bytes(serialization.Encoding.PEM))
    server, cafile = tls.server_context(files.directory)
    assert leaf(files).serial_number != narrow.serial_number
    assert handshake(server, cafile, "::1") == leaf(files)


def old_self_signed(directory: Path) -> None:
    """What rtproxy's --tls wrote before the CA: one CA:TRUE self-signed localhost.pem (0644) and its key."""
    directory.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtproxy localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=825))
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
    (directory / "localhost-key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "localhost.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_the_old_self_signed_certificate_is_replaced(files: tls.Files) -> None:
    """The CA:TRUE self-signed localhost.pem of earlier versions gives way to a CA and a CA:FALSE leaf it signed,
    and the old certificate is no longer trusted."""
    old_self_signed(files.directory)
    old = files.cert.read_bytes()
    server, cafile = tls.server_context(files.directory)
    assert files.cert.read_bytes() != old and files.ca_cert.exists()
    assert leaf(files).extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    leaf(files).verify_directly_issued_by(ca(files))
    assert handshake(server, cafile, "127.0.0.1") == leaf(files)
    assert old not in b"".join(p.read_bytes() for p in files.directory.iterdir())


@pytest.mark.parametrize("damage", ["ca.pem", "ca-key.pem"])
def test_a_broken_or_mismatched_ca_is_made_anew(files: tls.Files, tmp_path: Path, damage: str) -> None:
    """A CA file that does not parse, or a CA key that is not the certificate's, is replaced with a new CA and leaf."""
    tls.ensure(files)
    other = tls.Files(tmp_path / "other")
    tls.ensure(other)
    old_ca = files.ca_cert.read_bytes()
    if damage == "ca.pem":
        files.ca_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    else:
        files.ca_key.write_bytes(other.ca_key.read_bytes())
    server, cafile = tls.server_context(files.directory)
    assert files.ca_cert.read_bytes() != old_ca
    assert handshake(server, cafile, "localhost") == leaf(files)


def test_a_ca_near_its_end_is_made_anew(files: tls.Files) -> None:
    """A CA with less than one leaf lifetime left is replaced, so no leaf outlives its CA."""
    tls.ensure(files, now=NOW - tls.CA_LIFETIME + dt.timedelta(days=30))
    old_ca = ca(files)
    server, cafile = tls.server_context(files.directory)
    assert ca(files).serial_number != old_ca.serial_number
    assert ca(files).not_valid_after_utc > leaf(files).not_valid_after_utc
    assert handshake(server, cafile, "localhost") == leaf(files)


def test_a_directory_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    """A certificate home under a regular file raises TLSError naming the directory, not an OSError."""
    (tmp_path / "file").write_text("")
    with pytest.raises(tls.TLSError, match=r"cannot set up the TLS certificate in .*file/tls"):
        tls.server_context(tmp_path / "file" / "tls")


def test_the_proxy_tells_clients_to_trust_the_ca(tmp_path: Path, proxy_process: list[ProxyProcess]) -> None:
    """`rtproxy proxy --tls` prints NODE_EXTRA_CA_CERTS=<home>/tls/ca.pem, and that file alone verifies its TLS."""
    home = tmp_path / "home"
    p = spawn_proxy(["--db", str(tmp_path / "rec.db"), "--tls"], env={"RTPROXY_HOME": str(home)})
    proxy_process.append(p)
    cafile = home / "tls" / "ca.pem"
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as raw:
        with client_context(cafile).wrap_socket(raw, server_hostname="localhost") as conn:
            assert conn.version() in ("TLSv1.2", "TLSv1.3")
    code, out, _ = p.stop()
    assert code == 0 and f"NODE_EXTRA_CA_CERTS={cafile} " in out


def test_clients_pointed_at_the_old_path_still_verify(files: tls.Files) -> None:
    """localhost.pem carries the CA after the leaf, so a client told to trust it (the old advice) still verifies."""
    server, _ = tls.server_context(files.directory)
    assert handshake(server, files.cert, "localhost") == leaf(files)


def test_proxies_starting_together_agree_on_one_ca(files: tls.Files) -> None:
    """Eight threads setting up a fresh directory at once all end with a leaf that verifies against the one ca.pem."""
    start = threading.Barrier(8, timeout=10)
    contexts: list[ssl.SSLContext] = []

    def setup() -> None:
        start.wait()
        contexts.append(tls.server_context(files.directory)[0])

    threads = [threading.Thread(target=setup) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(contexts) == 8
    for server in contexts:
        assert handshake(server, files.ca_cert, "localhost") == leaf(files)
    assert not (files.directory / ".lock").exists()


def test_a_stale_lock_is_taken_over_and_a_live_one_is_a_clear_error(
    files: tls.Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock left by a crash (older than a minute) does not block; a fresh one held too long is one clear error."""
    files.directory.mkdir(parents=True)
    lock = files.directory / ".lock"
    lock.write_bytes(b"")
    os.utime(lock, (NOW.timestamp() - 120, NOW.timestamp() - 120))
    tls.server_context(files.directory)
    assert files.ca_cert.exists() and not lock.exists()
    lock.write_bytes(b"")
    monkeypatch.setattr(tls, "LOCK_WAIT", 0.2)
    with pytest.raises(tls.TLSError, match=r"\.lock is held by another rtproxy for over 0\.2 s; remove it"):
        tls.server_context(files.directory)
    assert lock.exists()
