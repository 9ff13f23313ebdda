"""Sans-io FLUX device management on TCP 1901 (flux.md §3.2): requests, answers, identity.

After the plaintext banner ``FLUX0003`` and TLS, the device sends 64 random bytes; the client
sends its public key PEM as a text frame and the device answers ``sign`` (trusted key: send the
hex signature of HMAC-SHA1(uuid, random)) or ``password`` (send the password). Requests are
text frames with ``\\0``-separated fields and the robot protocol's asymmetric length prefix.
"""

from __future__ import annotations

import datetime
import json
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from actors.fluxfamily import crypto
from actors.fluxfamily.framing import encode_command, parse_error

__all__ = [
    "BANNER_TLS",
    "CHALLENGE_SIZE",
    "NETWORK_KEYS",
    "ManageAnswer",
    "build_certificate",
    "encode_request",
    "network_fields",
    "parse_answer",
    "sign_challenge",
    "uuid_from_certificate",
]

#: The plaintext banner the device sends before TLS on the management port.
BANNER_TLS = b"FLUX0003"
CHALLENGE_SIZE = 64
NETWORK_KEYS = frozenset(
    {
        "method",
        "ipaddr",
        "mask",
        "route",
        "ns",
        "ssid",
        "wifi_mode",
        "scan_ssid",
        "security",
        "wepkey",
        "psk",
        "ifname",
    }
)


def encode_request(*fields: str) -> bytes:
    """One framed request: fields joined by NUL."""
    return encode_command("\x00".join(fields))


@dataclass(frozen=True, slots=True)
class ManageAnswer:
    """One decoded answer: ``kind`` is ok, error, data, sign or password."""

    kind: str
    text: str = ""
    symbols: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)


def parse_answer(text: str) -> ManageAnswer:
    """Classify one answer frame (``data`` frames carry a JSON object)."""
    symbols = parse_error(text)
    if symbols is not None:
        return ManageAnswer("error", text, symbols)
    word, _, rest = text.partition(" ")
    if word == "data":
        try:
            value = json.loads(rest)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json reads
            value = None
        return ManageAnswer("data", text, data=value if isinstance(value, dict) else {"raw": rest})
    if word in ("ok", "sign", "password"):
        return ManageAnswer(word, rest)
    return ManageAnswer("unknown", text)


def sign_challenge(key: rsa.RSAPrivateKey, device: uuidlib.UUID, challenge: bytes) -> str:
    """The ``sign`` answer: hex of RSA-sign(HMAC-SHA1(key=uuid bytes, msg=challenge))."""
    return crypto.sign(key, crypto.hmac_sha1(device.bytes, challenge)).hex()


def network_fields(options: dict[str, str]) -> list[str]:
    """``k=v`` fields of a ``network`` request (``ifname`` defaults to wlan0).

    Raises:
        ValueError: An unknown key, or a value with NUL or ``=`` trouble.
    """
    unknown = set(options) - NETWORK_KEYS
    if unknown:
        raise ValueError(f"unknown network keys {sorted(unknown)}")
    merged = {"ifname": "wlan0", **{key: str(value) for key, value in options.items()}}
    if any("\x00" in value for value in merged.values()):
        raise ValueError("network values may not contain NUL")
    return [f"{key}={value}" for key, value in merged.items()]


def uuid_from_certificate(der: bytes) -> uuidlib.UUID:
    """The device uuid from its certificate's CN ``<uuid hex>:<serial>:``.

    Raises:
        ValueError: No CN, or not three ``:``-separated fields with a uuid first.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except x509.InvalidVersion as exc:  # not a ValueError, unlike every other parse failure
        raise ValueError(f"not an X.509 certificate: {exc}") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ValueError("certificate has no CN")
    common = names[0].value
    parts = (common.decode() if isinstance(common, bytes) else common).split(":")
    if len(parts) != 3:
        raise ValueError(f"CN {common!r} is not <uuid>:<serial>:")
    return uuidlib.UUID(hex=parts[0])


def build_certificate(key: rsa.RSAPrivateKey, device: uuidlib.UUID, serial: str) -> bytes:
    """A self-signed device certificate like the firmware's (O, CN ``<uuid hex>:<serial>:``), PEM."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FLUX 3D Delta Printer"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{device.hex}:{serial}:"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * 60))
        .sign(key, hashes.SHA512())
    )
    return cert.public_bytes(serialization.Encoding.PEM)
