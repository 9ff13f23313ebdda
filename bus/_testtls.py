"""A throw-away certificate authority for test brokers (``bus.mosquitto``): a CA, a server
certificate for 127.0.0.1/localhost and client certificates, as PEM files in a folder.

EC P-256 keys (fast to make on a loaded machine), valid for a day. Not for production.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ensure_ca", "issue"]

_CA_CERT = "ca.pem"
_CA_KEY = "ca.key"


def ensure_ca(folder: Path) -> tuple[Path, Path]:
    """The CA of ``folder`` (``ca.pem``, ``ca.key``), made on first use."""
    cert_file, key_file = folder / _CA_CERT, folder / _CA_KEY
    if cert_file.exists() and key_file.exists():
        return cert_file, key_file
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "linebus test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(cert_file, key_file, cert, key)
    return cert_file, key_file


def issue(folder: Path, name: str, *, server: bool) -> tuple[Path, Path]:
    """A certificate of ``folder``'s CA with common name ``name``: ``(cert_file, key_file)``.

    A server certificate also names 127.0.0.1 and localhost (subject alternative names).
    """
    cert_file = folder / f"{'server' if server else 'client'}-{name}.pem"
    key_file = cert_file.with_suffix(".key")
    if cert_file.exists() and key_file.exists():
        return cert_file, key_file
    ca_cert_file, ca_key_file = ensure_ca(folder)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_file.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    _write_pair(cert_file, key_file, builder.sign(ca_key, hashes.SHA256()), key)
    return cert_file, key_file


def _write_pair(
    cert_file: Path, key_file: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
