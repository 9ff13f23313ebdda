"""Write the seed corpus of every fuzzing target: ``python -m tests.fuzz.make_corpus``.

One directory per target under ``tests/fuzz/corpus``, one file per seed, named for what it is.
The seeds are well-formed inputs (the golden vectors of tests/vectors/ for the codec, what the
simulators and builders send for the rest), so the fuzzer starts from inside each format rather
than guessing its magic bytes. Re-run after a format changes; inputs a long ``make fuzz`` run
finds stay in var/fuzz/ unless copied here.
"""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from actors.flashrunner.protocol import encode_answer as fr_answer
from actors.flux.protocol import ServerHandshake, status_bytes
from actors.fluxfamily import crypto, datagram
from actors.fluxfamily.framing import encode_answer, encode_command
from actors.fluxfamily.manage_protocol import build_certificate
from tests.fuzz.targets._split import join_frames, keys

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
DEVICE = uuid.UUID("6d2d5fa0-0000-4000-8000-0000000000aa")


def codec() -> Iterator[tuple[str, bytes]]:
    for path in sorted((ROOT / "tests" / "vectors").glob("*.json")):
        vector = json.loads(path.read_text())
        frames = [bytes.fromhex(f) for f in vector["frames_hex"]]
        if any(len(f) > 4096 for f in frames):
            continue  # the bulk-frame vectors: 64 KiB seeds would slow every run for nothing
        if vector["channel"] == "event":
            yield path.stem, b"\x01" + (frames[0] if frames else b"")
        else:
            yield path.stem, b"\x00" + join_frames(frames)


def flux_handshake() -> Iterator[tuple[str, bytes]]:
    client, device, _ = keys()
    server = ServerHandshake(device, lambda _id: client.public_key(), random_bytes=bytes)
    secret = bytes(range(48))
    accepted = (
        server.start() + status_bytes("OK") + crypto.oaep_encrypt(client.public_key(), secret)
    )
    for step in (0, 7, 16):
        yield f"accepted_step{step}", bytes([step]) + accepted + b"session bytes"
    yield "refused", b"\x00" + server.start() + status_bytes("AUTH_ERROR")
    yield "client_flight", b"\x00" + crypto.access_id(client) + crypto.sign(client, bytes(128))
    yield "bad_banner", b"\x00FLUX0009"


def flux_framing() -> Iterator[tuple[str, bytes]]:
    yield "answers", b"\x00" + encode_answer("ok") + encode_answer("error AUTH_ERROR TIMEOUT")
    yield "binary", b"\x05" + encode_answer("binary text/plain 5") + b"hello" + encode_answer("ok")
    yield "binary_empty", b"\x00" + encode_answer("binary image/jpeg 0")
    yield "commands", b"\x00" + encode_command("position") + encode_command("upload text/gcode 9")
    yield "upload", b"\x03" + encode_command("upload text/gcode 19") + b"G28\nG1 X1\n" * 2


def discovery_datagram() -> Iterator[tuple[str, bytes]]:
    client, device, master = keys()
    status = datagram.Status(1.5, 16, 0.25, "EXTRUDER", "")
    yield "poke", datagram.build_poke()
    yield "poke_v2", datagram.build_poke(2)
    yield "beacon", datagram.build_beacon(DEVICE)
    yield "touch_request", datagram.build_touch_request(DEVICE)
    master_der = crypto.public_der(master)
    yield (
        "announcement",
        datagram.build_announcement(DEVICE, "SERIAL0001", 1.0, master_der, b"identify", status),
    )
    yield "announcement_v2", datagram.build_announcement_v2(DEVICE, b"session!", status)
    info = {"serial": "SERIAL0001", "ver": "1.6.0", "model": "delta-1", "name": "fuzz"}
    yield "touch_response", datagram.build_touch_response(DEVICE, 2.0, master, device, info)
    yield (
        "touch_response_v2",
        datagram.build_touch_response_v2(DEVICE, master_der, b"identify", info),
    )
    assert client


def manage_protocol() -> Iterator[tuple[str, bytes]]:
    answers = [
        "ok",
        "sign",
        "password",
        'data {"nickname": "fuzz", "version": "1.6.0"}',
        "data not json",
        "error NOT_FOUND",
        "er",
    ]
    yield "answers", b"\x00\x00" + b"".join(encode_answer(a) for a in answers)
    pem = build_certificate(keys()[1], DEVICE, "SERIAL0001")
    der = crypto_der(pem)
    yield "certificate", b"\x01" + der


def crypto_der(pem: bytes) -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def flashrunner() -> Iterator[tuple[str, bytes]]:
    yield "answers", b"\x00" + fr_answer("OK") + fr_answer("ERR_SYNTAX bad", ok=False)
    yield "data", b"\x04" + fr_answer(data=b"\x00\x01binary\xff") + fr_answer("done")
    yield "busy", b"\x00" + b"55|BUSY\r\n" + fr_answer("IIWR")
    yield "engine_status", b"\x00" + fr_answer("IIWRIIII", channel=None)
    image = b"firmware" * 4
    crc = f"{zlib.crc32(image):08x}"
    requests = b"#1*FSDATA /fw.bin 0 %d %s\r\n" % (len(image), crc.encode()) + image
    yield "requests", b"\x00" + b"#CMD\n#3|RUN\r#1*GETENGSTATUS\r\n" + requests
    yield "request_noise", b"\x02" + b"noise\n\n#\n# 99999 * X\n"


def _upload_body() -> bytes:
    message = {
        "seq": 1,
        "stream_seq": 1,
        "kind": "message",
        "message_id": "m1",
        "batch_id": None,
        "batch_slice_id": None,
        "chunk_id": None,
        "timestamp": "2026-01-01T00:00:00Z",
        "payload": "aGVsbG8=",
    }
    document = {"upload_id": "u1", "stream_group": "g", "stream": "s", "messages": [message]}
    return json.dumps(document).encode()


def ingest_request() -> Iterator[tuple[str, bytes]]:
    body = _upload_body()
    packed = zlib.compress(body)
    yield (
        "upload_deflate",
        (
            b"Path: /v1/devices/d1/uploads/u1\nContent-Length: %d\nContent-Encoding: deflate\n\n"
            % len(packed)
        )
        + packed,
    )
    yield (
        "upload_plain",
        b"Path: /v1/devices/d1/uploads/u1\nContent-Length: %d\n\n" % len(body) + body,
    )
    yield "provision", b'Path: /v1/provisioning\nContent-Length: 27\n\n{"provisioning_token": "t"}'
    yield "bad_length", b"Path: /v1/test/faults\nContent-Length: -1\n\n[]"


def telemetry_codec() -> Iterator[tuple[str, bytes]]:
    body = _upload_body()
    yield "plain", b"\x00" + body
    yield "deflate", b"\x01" + zlib.compress(body)


def config() -> Iterator[tuple[str, bytes]]:
    for path in sorted((ROOT / "configs").glob("*.toml")):
        yield path.stem, path.read_bytes()


def remotelab() -> Iterator[tuple[str, bytes]]:
    ok = struct.pack(">H", 200)
    yield "wtypes", ok + b'{"workspace_types": ["fixed_misty2", "null"]}'
    yield (
        "deployments",
        ok
        + json.dumps(
            {
                "workspace_deployments": ["a1"],
                "info": {"a1": {"type": "null", "region": "us", "queuelen": 0}},
                "page_count": 1,
            }
        ).encode(),
    )
    yield "instances", ok + b'{"workspace_instances": ["i1", "i2"], "page_count": 1}'
    yield (
        "instance_info",
        ok
        + json.dumps(
            {
                "status": "READY",
                "id": "i1",
                "fwd": {"ipv4": "127.0.0.1", "port": "2210"},
                "hostkeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5hbWU= host"],
            }
        ).encode(),
    )
    yield "rules", ok + b'{"rules": [{"action": "ACCEPT"}]}'
    yield "snapshot", ok + b'{"success": true, "format": "JPEG", "data": "/9j/4AAQ"}'
    yield "wrong_token", struct.pack(">H", 400) + b'{"error_message": "wrong authorization token"}'
    yield "busy", struct.pack(">H", 503) + b'{"result_message": "This instance is busy."}'
    yield "not_json_5xx", struct.pack(">H", 502) + b"<html>Bad gateway</html>"


SEEDS = {
    "codec": codec,
    "flux_handshake": flux_handshake,
    "flux_framing": flux_framing,
    "discovery_datagram": discovery_datagram,
    "manage_protocol": manage_protocol,
    "flashrunner": flashrunner,
    "ingest_request": ingest_request,
    "telemetry_codec": telemetry_codec,
    "config": config,
    "remotelab": remotelab,
}


def main() -> None:
    """Rewrite every target's seed files (regression inputs, ``regression-*``, are kept)."""
    for name, make in SEEDS.items():
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for label, data in make():
            (folder / f"seed-{label}").write_bytes(data)


if __name__ == "__main__":
    main()
