"""Byte tables for the sans-io FLUX robot protocol: framing, handshake, commands, errors, FCode."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flux import commands
from actors.flux.fcode import FcodeError, build_fcode, read_fcode
from actors.flux.protocol import ClientHandshake, HandshakeError, ServerHandshake
from actors.flux.session import is_final
from actors.fluxfamily import crypto
from actors.fluxfamily.errors import device_error
from actors.fluxfamily.framing import (
    AnswerReader,
    BinaryChunk,
    BinaryEnd,
    BinaryStart,
    CommandReader,
    ProtocolViolation,
    Text,
    encode_answer,
    encode_command,
    parse_error,
)
from bus.errors import Busy, DeviceFault, InvalidArguments


@pytest.fixture(scope="module")
def client_key() -> rsa.RSAPrivateKey:
    return crypto.new_key(1024)


@pytest.fixture(scope="module")
def device_key() -> rsa.RSAPrivateKey:
    return crypto.new_key(1024)


def _feed_bytewise(reader: AnswerReader | CommandReader, data: bytes) -> list[object]:
    events: list[object] = []
    for i in range(len(data)):
        events.extend(reader.feed(data[i : i + 1]))
    return events


class TestFraming:
    """The asymmetric 2-byte little-endian length prefix (flux.md §1.4)."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("kick", b"\x06\x00kick"),
            ("file ls SD ''", b"\x0f\x00file ls SD ''"),
            ("é", b"\x04\x00\xc3\xa9"),
        ],
    )
    def test_command_counts_its_prefix(self, text: str, expected: bytes) -> None:
        """Client → device lengths include the two length bytes."""
        assert encode_command(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [("ok", b"\x02\x00ok"), ("", b"\x00\x00"), (b"md5 x", b"\x05\x00md5 x")],
    )
    def test_answer_counts_payload_only(self, text: str | bytes, expected: bytes) -> None:
        """Device → client lengths count the payload only."""
        assert encode_answer(text) == expected

    def test_command_too_long(self) -> None:
        """The device accepts at most 4092 payload bytes."""
        encode_command("x" * 4092)
        with pytest.raises(ValueError, match="exceeds"):
            encode_command("x" * 4093)

    def test_answers_split_anywhere(self) -> None:
        """Frames and binary bodies decode the same when fed one byte at a time."""
        data = (
            encode_answer("continue")
            + encode_answer("binary image/png 5")
            + b"\x89PNG!"
            + encode_answer("ok size=5")
        )
        expected = [
            Text("continue"),
            BinaryStart("image/png", 5),
            BinaryChunk(b"\x89"),
            BinaryChunk(b"P"),
            BinaryChunk(b"N"),
            BinaryChunk(b"G"),
            BinaryChunk(b"!"),
            BinaryEnd(),
            Text("ok size=5"),
        ]
        assert _feed_bytewise(AnswerReader(), data) == expected

    def test_binary_body_in_one_piece(self) -> None:
        """A body that arrives whole is one chunk; a zero-size body ends at once."""
        data = (
            encode_answer("binary text/gcode 3")
            + b"G28"
            + encode_answer("binary text/json 0")
            + encode_answer("ok")
        )
        assert AnswerReader().feed(data) == [
            BinaryStart("text/gcode", 3),
            BinaryChunk(b"G28"),
            BinaryEnd(),
            BinaryStart("text/json", 0),
            BinaryEnd(),
            Text("ok"),
        ]

    def test_bad_binary_header(self) -> None:
        """A ``binary`` frame without a numeric size is a protocol violation."""
        with pytest.raises(ProtocolViolation):
            AnswerReader().feed(encode_answer("binary image/png many"))

    def test_commands_and_upload_bytes(self) -> None:
        """The device reader switches to raw bytes for exactly the announced size."""
        reader = CommandReader()
        assert reader.feed(encode_command("file upload binary 4 #")) == [
            Text("file upload binary 4 #")
        ]
        reader.expect_binary(4)
        events = _feed_bytewise(reader, b"\x00\x01\x02\x03" + encode_command("player start"))
        assert events[-2:] == [BinaryEnd(), Text("player start")]
        assert b"".join(e.data for e in events if isinstance(e, BinaryChunk)) == b"\x00\x01\x02\x03"

    @pytest.mark.parametrize("length", [0, 2, 4095, 65535])
    def test_device_refuses_bad_lengths(self, length: int) -> None:
        """Length fields outside 3..4094 close the connection on the device."""
        with pytest.raises(ProtocolViolation):
            CommandReader().feed(struct.pack("<H", length) + b"x")


class TestErrors:
    """``error``/``er`` answers and their mapping to bus errors (§1.5)."""

    @pytest.mark.parametrize(
        ("text", "symbols"),
        [
            ("error NOT_EXIST NOT_FILE", ("NOT_EXIST", "NOT_FILE")),
            ("er BAD_PARAMS method", ("BAD_PARAMS", "method")),
            ("error KICKED", ("KICKED",)),
            ("error", ("UNKNOWN_ERROR",)),
            ("ok", None),
            ("errors are fine", None),
            ("md5 0123", None),
        ],
    )
    def test_parse_error(self, text: str, symbols: tuple[str, ...] | None) -> None:
        """The words after the prefix are the symbols."""
        assert parse_error(text) == symbols

    @pytest.mark.parametrize(
        ("symbols", "cls"),
        [
            (("NOT_EXIST", "NOT_FILE"), DeviceFault),
            (("RESOURCE_BUSY",), Busy),
            (("ALREADY_RUNNING",), Busy),
            (("BAD_PARAMS", "USB_NOT_ACCESSABLE"), InvalidArguments),
            (("KICKED",), DeviceFault),
            (("OSERR_EEXIST",), DeviceFault),
        ],
    )
    def test_device_error(self, symbols: tuple[str, ...], cls: type[Exception]) -> None:
        """Each answer becomes one typed error carrying the device's words."""
        error = device_error("dev", symbols)
        assert type(error) is cls
        assert error.details == {"device_code": symbols[0], "symbols": list(symbols)}

    @pytest.mark.parametrize(
        ("text", "final"),
        [
            ("ok", True),
            ("ok VAL 1", True),
            ("ok\nversion:1", True),
            ("continue", False),
            ("CTRL POINT 1", False),
            ("okay", False),
            ("error X", True),
        ],
    )
    def test_final_answers(self, text: str, final: bool) -> None:
        """``ok ...`` and errors end an exchange; progress lines do not."""
        assert is_final(text) is final


class TestHandshake:
    """Protocol 2: banner, signatures, status, RSA-wrapped AES key (§1.2)."""

    def _pair(
        self, client_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey, trusted: bool = True
    ) -> tuple[ClientHandshake, ServerHandshake]:
        ident = crypto.access_id(client_key)
        server = ServerHandshake(
            device_key, lambda got: client_key.public_key() if trusted and got == ident else None
        )
        return ClientHandshake(client_key, device_key.public_key()), server

    def test_bytewise_handshake_then_session(
        self, client_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
    ) -> None:
        """Fed byte by byte, both sides agree on a session and exchange encrypted frames."""
        client, server = self._pair(client_key, device_key)
        first = server.start()
        assert first.startswith(b"FLUX0002") and len(first) == 8 + 128 + 128
        reply = b"".join(client.receive(first[i : i + 1]) for i in range(len(first)))
        assert len(reply) == 20 + 128 and reply[:20] == crypto.access_id(client_key)
        answer = b"".join(server.receive(reply[i : i + 1]) for i in range(len(reply)))
        assert answer[:16] == b"OK" + b"\x00" * 14
        assert server.done and server.client_access_id == crypto.access_id(client_key)
        for i in range(len(answer)):
            client.receive(answer[i : i + 1])
        assert client.done and client.stream is not None and server.stream is not None
        wire = client.stream.encrypt(encode_command("deviceinfo"))
        assert CommandReader().feed(server.stream.decrypt(wire)) == [Text("deviceinfo")]
        wire = server.stream.encrypt(encode_answer("ok"))
        assert AnswerReader().feed(client.stream.decrypt(wire)) == [Text("ok")]

    def test_session_bytes_with_the_key(
        self, client_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
    ) -> None:
        """Session bytes arriving with the key are decrypted into ``leftover``."""
        client, server = self._pair(client_key, device_key)
        answer = server.receive(client.receive(server.start()))
        assert server.stream is not None
        client.receive(answer + server.stream.encrypt(encode_answer("hello")))
        assert client.done and AnswerReader().feed(client.leftover) == [Text("hello")]

    def test_unknown_key_refused_early(
        self, client_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
    ) -> None:
        """An untrusted access id is refused as soon as its 20 bytes arrive."""
        client, server = self._pair(client_key, device_key, trusted=False)
        reply = client.receive(server.start())
        answer = server.receive(reply[:20])
        assert answer == b"AUTH_ERROR" + b"\x00" * 6 and server.failed == "AUTH_ERROR"
        with pytest.raises(HandshakeError) as caught:
            client.receive(answer)
        assert caught.value.symbols == ("AUTH_ERROR",)

    def test_bad_signature_refused(
        self, client_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
    ) -> None:
        """A signature over the wrong challenge is AUTH_ERROR."""
        _client, server = self._pair(client_key, device_key)
        server.start()
        forged = crypto.access_id(client_key) + crypto.sign(client_key, b"another challenge")
        assert server.receive(forged)[:10] == b"AUTH_ERROR"

    def test_too_many_bytes(
        self, client_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
    ) -> None:
        """More than access id + signature is PROTOCOL_ERROR."""
        client, server = self._pair(client_key, device_key)
        reply = client.receive(server.start())
        assert server.receive(reply + b"x")[:14] == b"PROTOCOL_ERROR"

    @pytest.mark.parametrize(
        ("banner", "symbol"),
        [
            (b"HTTP/1.1", "PROTOCOL_ERROR"),
            (b"FLUX0003", "NOT_SUPPORT"),
            (b"FLUX0009", "NOT_SUPPORT"),
        ],
    )
    def test_banner(self, client_key: rsa.RSAPrivateKey, banner: bytes, symbol: str) -> None:
        """Only ``FLUX0002`` is spoken; other magic is a protocol error."""
        with pytest.raises(HandshakeError) as caught:
            ClientHandshake(client_key).receive(banner)
        assert caught.value.symbols[0] == symbol

    def test_device_identity_checked(
        self, client_key: rsa.RSAPrivateKey, device_key: rsa.RSAPrivateKey
    ) -> None:
        """With the slave key from discovery, an impostor's signature is REMOTE_IDENTIFY_ERROR."""
        impostor = ServerHandshake(client_key, lambda _: None)
        with pytest.raises(HandshakeError) as caught:
            ClientHandshake(client_key, device_key.public_key()).receive(impostor.start())
        assert caught.value.symbols == ("REMOTE_IDENTIFY_ERROR",)


class TestCommands:
    """The command text of each FluxRobot method (§1.6)."""

    @pytest.mark.parametrize(
        ("operation", "path", "expected"),
        [
            ("ls", "/SD/", "file ls SD ''"),
            ("ls", "/SD", "file ls SD ''"),
            ("ls", "/USB/models", "file ls USB models"),
            ("info", "/SD/a/b.fc", "file info SD a/b.fc"),
            ("md5", "/SD/with space.gcode", "file md5 SD 'with space.gcode'"),
            ("mkdir", "/SD/new", "file mkdir SD new"),
            ("rmdir", "/SD/new", "file rmdir SD new"),
            ("rm", "/SD/x.fc", "file rm SD x.fc"),
            ("download", "/SD/x.fc", "file download SD x.fc"),
            ("select", "/SD/x.fc", "player select SD x.fc"),
        ],
    )
    def test_file_commands(self, operation: str, path: str, expected: str) -> None:
        """Paths become an entry and a (quoted) relative path."""
        assert commands.file_command(operation, path) == expected

    @pytest.mark.parametrize("path", ["/tmp/x", "SDX/a", "", "/"])
    def test_bad_paths(self, path: str) -> None:
        """Only /SD and /USB exist."""
        with pytest.raises(ValueError, match="/SD/ or /USB/"):
            commands.split_path(path)

    @pytest.mark.parametrize(
        ("mimetype", "size", "target", "expected"),
        [
            ("application/fcode", 10, "#", "file upload application/fcode 10 #"),
            ("text/gcode", 3, "/SD/dir/x.gcode", "file upload text/gcode 3 SD dir/x.gcode"),
            ("binary", 1, "SD/x.bin", "file upload binary 1 SD x.bin"),
        ],
    )
    def test_upload(self, mimetype: str, size: int, target: str, expected: str) -> None:
        """``#`` selects the job; other targets are stored on SD."""
        assert commands.upload_command(mimetype, size, target) == expected

    @pytest.mark.parametrize(
        ("name", "mimetype"),
        [
            ("a.gcode", "text/gcode"),
            ("A.FC", "application/fcode"),
            ("fw.fxfw", "binary/flux-firmware"),
            ("x.stl", "binary"),
        ],
    )
    def test_mimetype(self, name: str, mimetype: str) -> None:
        """fluxclient's extension table."""
        assert commands.guess_mimetype(name) == mimetype

    def test_cp_and_move(self) -> None:
        """Copy takes two paths; move only known axes, in f x y z e order."""
        assert commands.cp_command("/USB/a.fc", "/SD/b.fc") == "file cp USB a.fc SD b.fc"
        assert commands.move_command(z=10, x=1.5) == "move x:1.500000 z:10.000000"
        with pytest.raises(ValueError, match="move takes"):
            commands.move_command(q=1)

    def test_reply_parsers(self) -> None:
        """Listing, k=v metadata, deviceinfo lines and config values."""
        assert commands.parse_listing("Dsub\x00Fa.fc\x00") == [(True, "sub"), (False, "a.fc")]
        assert commands.parse_kv("HEAD_TYPE=EXTRUDER\x00size=12\x00junk") == {
            "HEAD_TYPE": "EXTRUDER",
            "size": "12",
        }
        assert commands.parse_deviceinfo("ok\nversion:1.6.95\nmacaddr:wlan0:aa:bb") == {
            "version": "1.6.95",
            "macaddr": "wlan0:aa:bb",
        }
        assert commands.parse_config_get("ok VAL http://x y") == "http://x y"
        assert commands.parse_config_get("ok EMPTY") is None
        assert commands.parse_json_object('{"st_id": 0}') == {"st_id": 0}
        with pytest.raises(ValueError, match="JSON object"):
            commands.parse_json_object("[1]")


class TestCrypto:
    """Keys, OAEP blocks and the default key file (§0)."""

    def test_oaep_blocks(self, client_key: rsa.RSAPrivateKey) -> None:
        """Long plaintext is cut into k - 42 byte blocks of k ciphertext bytes each."""
        plain = bytes(range(256)) * 2
        cipher = crypto.oaep_encrypt(client_key.public_key(), plain)
        assert len(cipher) == 128 * 6
        assert crypto.oaep_decrypt(client_key, cipher) == plain

    def test_access_id(self, client_key: rsa.RSAPrivateKey) -> None:
        """SHA-1 of the public DER."""
        assert crypto.access_id(client_key) == hashlib.sha1(crypto.public_der(client_key)).digest()

    def test_default_key_kept(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client_key: rsa.RSAPrivateKey
    ) -> None:
        """The key is generated once, private to the user, and reloaded afterwards."""
        monkeypatch.setattr(crypto, "new_key", lambda bits=1024: client_key)
        path = tmp_path / "keys" / "sdk.pem"
        first = crypto.get_or_create_default_key(path)
        assert path.stat().st_mode & 0o777 == 0o600
        assert crypto.access_id(crypto.get_or_create_default_key(path)) == crypto.access_id(first)


class TestFcode:
    """The FCode container."""

    def test_round_trip(self) -> None:
        """Metadata and previews come back."""
        data = build_fcode(
            b"G28\n", {"HEAD_TYPE": "EXTRUDER", "TIME_COST": "12.5"}, [b"png1", b"png22"]
        )
        assert read_fcode(data) == (
            {"HEAD_TYPE": "EXTRUDER", "TIME_COST": "12.5"},
            [b"png1", b"png22"],
        )

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"G28\n", "MAGIC_NUMBER_ERROR"),
            (b"FCx0001\n\x01", "#"),
            (
                build_fcode(b"", {"a": "b"})[:-9] + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00\x00",
                "METADATA_CRC32_ERROR",
            ),
        ],
    )
    def test_broken(self, data: bytes, reason: str) -> None:
        """Broken files name the device's FILE_BROKEN reason."""
        with pytest.raises(FcodeError) as caught:
            read_fcode(data)
        assert caught.value.reason == reason
