"""A local certificate authority for ``--tls``, as mkcert and mitmproxy keep one.

The Node SDK only speaks ``wss://``, so ``--tls`` serves the proxy (and the
replay server) over TLS. Clients trust rtproxy's own CA
(``NODE_EXTRA_CA_CERTS=~/.rtproxy/tls/ca.pem``), and the CA signs the server's
certificate. Everything lives in ``$RTPROXY_HOME/tls`` (default
``~/.rtproxy/tls``), a directory only its owner can open (0700) holding files
only its owner can read (0600)::

    ca.pem              the CA certificate: what clients trust
    ca-key.pem          the CA key: signs leaves, never leaves this directory, never in any other file
    localhost.pem       the server certificate, followed by ca.pem (the chain a server presents)
    localhost-key.pem   the server certificate's key

The CA (``CA:TRUE``, path length 0, keyCertSign) lasts ten years and is reused;
it is made anew only when its files are missing, do not parse, do not belong
together, or it has less than one leaf lifetime left, so that a leaf never
outlives its CA. Its name constraints allow only ``localhost``, ``127.0.0.1``
and ``::1``: a client that trusts it accepts what it signs for those names
only, so even its key, if copied, cannot impersonate any other site.

The leaf (``CA:FALSE``, serverAuth, SANs ``localhost``, ``127.0.0.1``, ``::1``)
lives 90 days and is made anew, with a new key, when the proxy (or replay
server) starts and it is expired, has less than a third of its life left, names other hosts, or was
not signed by the current CA (the ``CA:TRUE`` self-signed ``localhost.pem`` that
earlier versions of rtproxy made is one: it is replaced in place). 90 days
because renewal is free and automatic, so a short life only bounds what a copied leaf key is
good for; but not shorter, because a running proxy loads its certificate once,
and one started just before renewal is due still has 60 days. Clients trust
the CA, so a renewal needs nothing from them.

Files are written to a temporary name and renamed, so a reader sees a whole
old file or a whole new one; the check-and-make runs under a lock file
(``.lock``, made with O_EXCL, so on every OS), so two proxies starting at once
agree on one CA and one leaf. On Windows the permissions are those of the
user's profile (chmod cannot express 0600 there).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RtproxyError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

HOSTS = ("localhost", "127.0.0.1", "::1")
CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=90)
#: A leaf is renewed when less than this share of its life is left.
RENEW_FRACTION = 1 / 3
#: Validity starts this long before "now", for clocks a little behind ours.
BACKDATE = dt.timedelta(hours=1)
PRIVATE = os.name != "nt"
#: How long to wait for another process's check-and-make; a lock older than STALE_LOCK was left by a crash.
LOCK_WAIT = 10.0
STALE_LOCK = 60.0


class TLSError(RtproxyError):
    """The certificate directory cannot be created, read or written."""


def home() -> Path:
    return Path(os.environ.get("RTPROXY_HOME") or Path.home() / ".rtproxy")


@dataclass(frozen=True)
class Files:
    """The four files of one certificate directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def cert(self) -> Path:
        return self.directory / "localhost.pem"

    @property
    def key(self) -> Path:
        return self.directory / "localhost-key.pem"


def ensure_certificate(directory: Path | None = None, *, now: dt.datetime | None = None) -> tuple[Path, Path]:
    """(server certificate chain, server key) paths, made or renewed as needed at ``now`` (default: the clock)."""
    files = Files(directory or home() / "tls")
    ensure(files, now=now)
    return files.cert, files.key


def ensure(files: Files, *, now: dt.datetime | None = None) -> None:
    """Make the directory's CA and leaf valid at ``now``; a one-line :class:`TLSError` on an OS error."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        _private_directory(files.directory)
        with _locked(files.directory):
            ca_cert, ca_key, new_ca = _ensure_ca(files, now)
            if new_ca or not _leaf_is_good(files, ca_cert, now):
                _issue_leaf(files, ca_cert, ca_key, now)
            if PRIVATE:
                for path in (files.ca_cert, files.ca_key, files.cert, files.key):
                    os.chmod(path, 0o600)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and Path(e.filename) != files.directory else ""
        raise TLSError(f"cannot set up the TLS certificate in {files.directory}: {e.strerror or e}{where}") from e


def server_context(directory: Path | None = None, *, now: dt.datetime | None = None) -> tuple[ssl.SSLContext, Path]:
    """A server SSL context with the leaf, and the path of the CA certificate clients must trust."""
    files = Files(directory or home() / "tls")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    for attempt in range(3):  # another process may renew between our check and our load: check again
        ensure(files, now=now)
        try:
            ctx.load_cert_chain(files.cert, files.key)
            break
        except (ssl.SSLError, OSError) as e:
            if attempt == 2:
                raise TLSError(f"cannot load the TLS certificate {files.cert}: {e}") from e
    return ctx, files.ca_cert


# -- the CA --


def _ensure_ca(files: Files, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    loaded = _load_ca(files, now)
    if loaded is not None:
        return loaded[0], loaded[1], False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rtproxy"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"rtproxy local CA {secrets.token_hex(4)}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")),
                    x509.IPAddress(ipaddress.ip_network("::1/128")),
                ],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(files.ca_key, _key_pem(key))
    _write(files.ca_cert, _cert_pem(cert))
    return cert, key, True


def _load_ca(files: Files, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The directory's CA if it is whole, a CA, its key's, and good for a leaf's life; else None."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = _load_key(files.ca_key)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm, x509.ExtensionNotFound):
        return None
    if not constraints.ca:
        return None
    if cert.public_key() != key.public_key():
        return None
    if cert.not_valid_before_utc > now or cert.not_valid_after_utc - now < LEAF_LIFETIME:
        return None
    return cert, key


# -- the leaf --


def _leaf_is_good(files: Files, ca_cert: x509.Certificate, now: dt.datetime) -> bool:
    """The leaf is whole, matches its key, was signed by this CA for exactly HOSTS, and has life enough left."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())  # the first certificate in the chain
        key = _load_key(files.key)
        cert.verify_directly_issued_by(ca_cert)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm, InvalidSignature, x509.ExtensionNotFound):
        return False
    if constraints.ca or cert.public_key() != key.public_key():
        return False
    names = {str(n) for n in sans.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in sans.get_values_for_type(x509.IPAddress)
    }
    if names != set(HOSTS):
        return False
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start <= now and end - now > (end - start) * RENEW_FRACTION


def _issue_leaf(files: Files, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rtproxy"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now - BACKDATE + LEAF_LIFETIME)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost")] + [x509.IPAddress(ipaddress.ip_address(h)) for h in HOSTS[1:]]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key))
    _write(files.cert, _cert_pem(cert) + _cert_pem(ca_cert))


# -- files --


def _private_directory(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if PRIVATE:
        os.chmod(directory, 0o700)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold ``directory/.lock`` (waits up to LOCK_WAIT for another holder; takes over a stale lock)."""
    lock = directory / ".lock"
    step = 0.02
    for _ in range(int(LOCK_WAIT / step) + 1):
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            break
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > STALE_LOCK:
                    lock.unlink(missing_ok=True)
                    continue
            except FileNotFoundError:
                continue
            time.sleep(step)  # another process is making the certificates: they take milliseconds
    else:
        raise TLSError(f"{lock} is held by another rtproxy for over {LOCK_WAIT:g} s; remove it if none is running")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) under a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if PRIVATE:
            os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The EC key in ``path``; ValueError for any other kind (rtproxy makes only P-256 keys)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC key")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)
