"""The sans-io key handshake inside the FLUX TLS channels (``actors.fluxfamily.tls``, flux.md §1.3)."""

from __future__ import annotations

import uuid as uuidlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.fluxfamily import crypto
from actors.fluxfamily.manage_protocol import build_certificate
from actors.fluxfamily.tls import (
    CHALLENGE_SIZE,
    ClientIdentify,
    HandshakeError,
    ServerIdentify,
    status_bytes,
)

DEVICE = uuidlib.UUID(hex="ffffffffffffffff0123456789abcdef")


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {"client": crypto.new_key(1024), "master": crypto.new_key(2048)}


@pytest.fixture(scope="module")
def cert(keys: dict[str, rsa.RSAPrivateKey]) -> bytes:
    pem = build_certificate(keys["master"], DEVICE, "XXXXXXXXXX")
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def test_client_answer_is_what_the_device_checks(
    keys: dict[str, rsa.RSAPrivateKey], cert: bytes
) -> None:
    """access id ‖ sign(HMAC-SHA1(uuid from the CN, R)): the device's check passes; ``OK`` is
    16 bytes, space padded."""
    client = ClientIdentify(keys["client"], cert)
    assert client.uuid == DEVICE
    server = ServerIdentify(
        DEVICE, {crypto.access_id(keys["client"]): keys["client"].public_key()}.get
    )
    answer = client.answer(server.challenge)
    assert answer[:20] == crypto.access_id(keys["client"]) and len(answer) == 20 + 128
    assert server.receive(answer[:7]) == b""  # partial input is normal
    status = server.receive(answer[7:] + b"\x05\x00ls")
    assert status == b"OK" + b" " * 14 and server.signature_ok is True
    assert server.leftover == b"\x05\x00ls"  # session bytes that came along are kept
    ClientIdentify.check_status(status)


def test_device_accepts_a_bad_signature_like_the_firmware(
    keys: dict[str, rsa.RSAPrivateKey],
) -> None:
    """The firmware does ``verify(...) or True``: a trusted id passes with any signature."""
    server = ServerIdentify(DEVICE, lambda _id: keys["client"].public_key())
    status = server.receive(crypto.access_id(keys["client"]) + bytes(128))
    assert status.rstrip() == b"OK" and server.signature_ok is False


def test_untrusted_id_refused_before_the_signature(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    server = ServerIdentify(DEVICE, lambda _id: None)
    assert server.receive(crypto.access_id(keys["client"])) == status_bytes("AUTH_ERROR")
    assert server.failed == "AUTH_ERROR" and server.receive(b"more") == b""


@pytest.mark.parametrize(
    ("status", "symbols"),
    [(b"AUTH_ERROR      ", ("AUTH_ERROR",)), (b"PROTOCOL_ERROR\x00\x00", ("PROTOCOL_ERROR",))],
)
def test_refusal_carries_the_device_words(status: bytes, symbols: tuple[str, ...]) -> None:
    with pytest.raises(HandshakeError) as caught:
        ClientIdentify.check_status(status)
    assert caught.value.symbols == symbols


def test_certificate_pins(keys: dict[str, rsa.RSAPrivateKey], cert: bytes) -> None:
    ClientIdentify(keys["client"], cert, expect_uuid=DEVICE, expect_key=keys["master"].public_key())
    with pytest.raises(HandshakeError) as caught:
        ClientIdentify(keys["client"], cert, expect_uuid=uuidlib.UUID(int=7))
    assert caught.value.symbols == ("REMOTE_IDENTIFY_ERROR",)
    with pytest.raises(HandshakeError) as caught:
        ClientIdentify(keys["client"], cert, expect_key=keys["client"].public_key())
    assert caught.value.symbols == ("REMOTE_IDENTIFY_ERROR",)


def test_certificate_without_flux_cn_is_a_protocol_error(
    keys: dict[str, rsa.RSAPrivateKey],
) -> None:
    with pytest.raises(HandshakeError) as caught:
        ClientIdentify(keys["client"], b"not a certificate")
    assert caught.value.symbols == ("PROTOCOL_ERROR",)


def test_short_challenge_refused(keys: dict[str, rsa.RSAPrivateKey], cert: bytes) -> None:
    with pytest.raises(HandshakeError):
        ClientIdentify(keys["client"], cert).answer(bytes(CHALLENGE_SIZE - 1))
