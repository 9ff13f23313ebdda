"""Byte tables for the sans-io FlashRunner protocol and the dynamic-memory encryption helpers."""

from __future__ import annotations

import struct
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flashrunner import crypto
from actors.flashrunner.protocol import (
    Answer,
    AnswerParser,
    Busy,
    EngineState,
    Garbled,
    MultiChannel,
    Request,
    RequestParser,
    channel_mask,
    channels_from_mask,
    crc32_hex,
    encode_answer,
    encode_command,
    encode_frame,
    expected_answers,
    format_engine_status,
    parse_engine_status,
)
from bus.errors import InvalidArguments


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class TestCommandFrames:
    """Host → device frames."""

    @pytest.mark.parametrize(
        ("command", "channels", "multi", "expected"),
        [
            ("SPING", 55, MultiChannel.MASK, b"#55*SPING\n"),
            ("GETENGSTATUS", None, MultiChannel.MASK, b"#GETENGSTATUS\n"),
            ("RUN demo.prj", 3, MultiChannel.MASK, b"#3*RUN demo.prj\n"),
            ("RUN demo.prj", [3], MultiChannel.MASK, b"#3*RUN demo.prj\n"),
            ("RUN demo.prj", [1, 2, 3, 4], MultiChannel.MASK, b"#15|RUN demo.prj\n"),
            ("RUN demo.prj", [4, 2, 2], MultiChannel.MASK, b"#10|RUN demo.prj\n"),
            ("RUN demo.prj", [2, 1], MultiChannel.EACH, b"#1*RUN demo.prj\n#2*RUN demo.prj\n"),
            ("  SGETVER  ", 55, MultiChannel.MASK, b"#55*SGETVER\n"),
        ],
    )
    def test_encode(
        self, command: str, channels: int | list[int] | None, multi: MultiChannel, expected: bytes
    ) -> None:
        """Single channels use '*', several a decimal mask with '|' (or one frame each)."""
        assert encode_command(command, channels, multi=multi) == expected

    def test_attachment(self) -> None:
        """Raw bytes follow the line, announced by their length and CRC-32."""
        frame = encode_command("FSDATA", 55, data=b"a>b!\n")
        assert frame == b"#55*FSDATA 5 " + crc32_hex(b"a>b!\n").encode() + b"\na>b!\n"

    @pytest.mark.parametrize(
        ("command", "channels"),
        [
            ("RUN x", 0),
            ("RUN x", 56),
            ("RUN x", [55, 1]),
            ("RUN x", []),
            ("", 1),
            ("#55*SPING", 55),
            ("X" * 300, 1),
        ],
    )
    def test_invalid(self, command: str, channels: int | list[int]) -> None:
        """Bad channels, empty, pre-framed or over-long commands are refused before any I/O."""
        with pytest.raises(InvalidArguments):
            encode_command(command, channels)

    @pytest.mark.parametrize(
        ("frame", "expected"),
        [("#55*SPING", b"#55*SPING\n"), ("  #GETENGSTATUS \n", b"#GETENGSTATUS\n")],
    )
    def test_frame(self, frame: str, expected: bytes) -> None:
        """A complete frame (FR_SendCommand) is trimmed and gets LF."""
        assert encode_frame(frame) == expected

    @pytest.mark.parametrize("frame", ["SPING", "#55*A\nB", "#55*Ü", "#" + "A" * 256])
    def test_frame_invalid(self, frame: str) -> None:
        """A frame must start with '#', be one ASCII line and fit 256 characters."""
        with pytest.raises(InvalidArguments):
            encode_frame(frame)

    @pytest.mark.parametrize(
        ("frame", "count"),
        [
            ("#55*SPING", 1),
            ("#GETENGSTATUS", 1),
            ("#15|RUN a", 4),
            ("#5 | RUN a", 2),
            ("#3*RUN a", 1),
        ],
    )
    def test_expected_answers(self, frame: str, count: int) -> None:
        """A mask frame is answered once per channel."""
        assert expected_answers(frame) == count

    @pytest.mark.parametrize(
        ("channels", "mask"), [((1,), 1), ((2, 4), 10), ((1, 2, 3, 4), 15), ((32,), 1 << 31)]
    )
    def test_mask_round_trip(self, channels: tuple[int, ...], mask: int) -> None:
        """Bit n-1 of the mask is channel n (as !ENGINEMASK)."""
        assert channel_mask(channels) == mask
        assert channels_from_mask(mask) == channels


class TestAnswerParser:
    """Device → host answers, BUSY frames and garbage."""

    data = b"hello>!"
    TABLE: ClassVar[list[tuple[bytes, list[object]]]] = [
        (b">", [Answer(True, "")]),
        (b"55|>", [Answer(True, "", 55)]),
        (
            b"01|>02|ERR_PROJECT_FAILED verify!",
            [Answer(True, "", 1), Answer(False, "ERR_PROJECT_FAILED verify", 2)],
        ),
        (b"55|IPFR|4>", [Answer(True, "IPFR|4", 55)]),
        (b"\r\n55|FR 2.0\r\n>\r\n", [Answer(True, "FR 2.0", 55)]),
        (b"BUSY\r\nBUSY\n01|>", [Busy(), Busy(), Answer(True, "", 1)]),
        (b"03|BUSY\r\n03|>", [Busy(3), Answer(True, "", 3)]),
        (b"55|$1A2B3C4D>", [Answer(True, "$1A2B3C4D", 55)]),
        (
            b"55|DATA 7 " + crc32_hex(data).encode() + b">" + data + b"55|>",
            [Answer(True, f"DATA 7 {crc32_hex(data)}", 55, data), Answer(True, "", 55)],
        ),
        (b"55|DATA 0 00000000>", [Answer(True, "DATA 0 00000000", 55, b"")]),
        (
            b"\xf0\x9f\x00garbled>55|>",
            [
                Garbled(b"\xf0\x9f\x00garbled>", "non-printable bytes in answer"),
                Answer(True, "", 55),
            ],
        ),
    ]

    @pytest.mark.parametrize(("stream", "items"), TABLE)
    def test_whole(self, stream: bytes, items: list[object]) -> None:
        """A whole stream parses into its items, in order."""
        assert AnswerParser().feed(stream) == items

    @pytest.mark.parametrize(("stream", "items"), TABLE)
    def test_byte_by_byte(self, stream: bytes, items: list[object]) -> None:
        """Partial input is normal: feeding one byte at a time gives the same items."""
        parser = AnswerParser()
        got = [item for i in range(len(stream)) for item in parser.feed(stream[i : i + 1])]
        assert got == items

    def test_incomplete_waits(self) -> None:
        """Nothing is returned until the prompt arrives."""
        parser = AnswerParser()
        assert parser.feed(b"55|IPF") == []
        assert parser.feed(b"R|4") == []
        assert parser.feed(b">") == [Answer(True, "IPFR|4", 55)]

    def test_data_crc_mismatch(self) -> None:
        """Attached bytes that do not match their CRC are garbled, and the stream resynchronises."""
        items = AnswerParser().feed(b"55|DATA 3 00000000>abc55|>")
        assert isinstance(items[0], Garbled) and "CRC" in items[0].reason
        assert items[1] == Answer(True, "", 55)

    def test_overflow(self) -> None:
        """A stream without any prompt is dropped once it exceeds the limit."""
        parser = AnswerParser(max_answer_bytes=16)
        assert parser.feed(b"x" * 10) == []
        items = parser.feed(b"y" * 10)
        assert len(items) == 1 and isinstance(items[0], Garbled)
        assert parser.feed(b"55|>") == [Answer(True, "", 55)]

    @pytest.mark.parametrize(
        ("answer", "raw", "code"),
        [
            (Answer(True, "", 55), "55|>", None),
            (
                Answer(False, "ERR_FILE_NOT_FOUND /PROJECTS/a.prj", 1),
                "01|ERR_FILE_NOT_FOUND /PROJECTS/a.prj!",
                "ERR_FILE_NOT_FOUND",
            ),
            (Answer(False, "ERR: bad", None), "ERR: bad!", "ERR"),
            (Answer(False, "something odd", 2), "02|something odd!", None),
        ],
    )
    def test_answer_fields(self, answer: Answer, raw: str, code: str | None) -> None:
        """``raw`` rebuilds what the device sent; ``error_code`` is the leading symbol of a failure."""
        assert answer.raw == raw
        assert answer.error_code == code

    @pytest.mark.parametrize(
        ("kwargs", "wire"),
        [
            ({}, b"55|>"),
            ({"text": "ERR_X a>b!c", "ok": False, "channel": 2}, b"02|ERR_X a)b.c!"),
            ({"channel": None, "text": "x"}, b"x>"),
            ({"data": b"ab"}, b"55|DATA 2 " + crc32_hex(b"ab").encode() + b">ab"),
        ],
    )
    def test_encode_answer(self, kwargs: dict[str, object], wire: bytes) -> None:
        """The device side never puts a prompt character inside a payload."""
        assert encode_answer(**kwargs) == wire  # type: ignore[arg-type]


class TestRequestParser:
    """The device side of the framing, as the simulator reads it."""

    blob = b"\x00>!\n#55*X\r"

    @pytest.mark.parametrize(
        ("stream", "requests"),
        [
            (b"#55*SPING\n", [Request((55,), "SPING")]),
            (
                b"#55*sping\r\n#GETENGSTATUS\r",
                [Request((55,), "SPING"), Request((), "GETENGSTATUS")],
            ),
            (b"noise #3*RUN a.prj  \n", [Request((3,), "RUN", ("a.prj",))]),
            (b"#5|RUN a.prj\n", [Request((1, 3), "RUN", ("a.prj",), masked=True)]),
            (b"\n\r\n#1*X\n", [Request((1,), "X")]),
            (
                encode_command("FSDATA", 55, data=blob) + b"#55*SPING\n",
                [Request((55,), "FSDATA", (), blob), Request((55,), "SPING")],
            ),
            (
                b"#55*FSDATA 3 00000000\nabc",
                [Request((55,), "FSDATA", (), error="ERR_CRC data CRC mismatch")],
            ),
            (
                b"#55*FSDATA\n",
                [Request((55,), "FSDATA", (), error="ERR_SYNTAX missing <len> <crc>")],
            ),
            (b"#" + b"A" * 300 + b"\n", [Request((), "", error="ERR_TOO_LONG command too long")]),
        ],
    )
    def test_table(self, stream: bytes, requests: list[Request]) -> None:
        """LF, CRLF and CR end a line; blobs are read by length; bad frames carry an error."""
        whole = RequestParser().feed(stream)
        parser = RequestParser()
        split = [item for i in range(len(stream)) for item in parser.feed(stream[i : i + 1])]
        assert whole == requests
        assert split == requests


class TestEngineStatus:
    """GETENGSTATUS parsing."""

    @pytest.mark.parametrize(
        ("answer", "states", "extra"),
        [
            (
                Answer(True, "IPFR|4", 55),
                [EngineState.IDLE, EngineState.PASS, EngineState.FAIL, EngineState.RUNNING],
                ("4",),
            ),
            (Answer(True, "55|BR", None), [EngineState.BUSY, EngineState.RUNNING], ()),
            (Answer(True, "x-", 55), [EngineState.PASS, EngineState.ABSENT], ()),
        ],
    )
    def test_parse(self, answer: Answer, states: list[EngineState], extra: tuple[str, ...]) -> None:
        """Character n-1 is channel n; unknown characters count as passed."""
        status = parse_engine_status(answer)
        assert [status.state(ch) for ch in range(1, len(states) + 1)] == states
        assert status.extra == extra

    def test_working(self) -> None:
        """B and R are still working; a channel beyond the string is absent."""
        status = parse_engine_status(Answer(True, "BRPF", 55))
        assert status.working([1, 2, 3, 4, 9]) == [1, 2]
        assert status.state(9) is EngineState.ABSENT

    @pytest.mark.parametrize(
        "answer", [Answer(False, "IPFR", 55), Answer(True, "", 55), Answer(True, "IPFR", None)]
    )
    def test_invalid(self, answer: Answer) -> None:
        """A failure, an empty answer or an untagged single field is not a status."""
        with pytest.raises(ValueError, match="not an engine status"):
            parse_engine_status(answer)

    def test_format_round_trip(self) -> None:
        """The simulator's status payload parses back."""
        states = [EngineState.IDLE, EngineState.RUNNING, EngineState.FAIL]
        status = parse_engine_status(Answer(True, format_engine_status(states, "3"), 55))
        assert [status.state(ch) for ch in (1, 2, 3)] == states


class TestCrypto:
    """Header layout v1 and both encryption modes round-trip through the device-side helpers."""

    def test_header_layout(self, private_key: rsa.RSAPrivateKey) -> None:
        """Magic, mode, length, then an RSA-2048 block holding key and IV."""
        result = crypto.encrypt_data(private_key.public_key(), b"SN-0001")
        magic, mode, size = struct.unpack_from(">4sBH", result.header)
        assert (magic, mode, size) == (b"FRK1", 1, 256)
        assert len(result.header) == 7 + 256
        assert len(result.payload) == 16

    @pytest.mark.parametrize("plain", [b"", b"SN-0001", b"x" * 16, bytes(range(256)) * 3])
    def test_single_shot(self, private_key: rsa.RSAPrivateKey, plain: bytes) -> None:
        """Each call has its own key and IV, and the device's private key recovers the data."""
        first = crypto.encrypt_data(private_key.public_key(), plain)
        second = crypto.encrypt_data(private_key.public_key(), plain)
        assert first.header != second.header
        assert crypto.decrypt_single(private_key, first.header, first.payload) == plain

    def test_session_chaining(self, private_key: rsa.RSAPrivateKey) -> None:
        """Blocks chain their IVs: they decrypt in order after one header, and not out of order."""
        encryptor = crypto.DynMemEncryptor(private_key.public_key())
        header = encryptor.begin()
        blocks = [b"block-%d" % i * (i + 1) for i in range(4)]
        cipher = [encryptor.encrypt(block) for block in blocks]
        decryptor = crypto.DynMemDecryptor(private_key)
        assert decryptor.accept_header(header) is crypto.HeaderMode.SESSION
        assert [decryptor.decrypt(block) for block in cipher] == blocks
        out_of_order = crypto.DynMemDecryptor(private_key)
        out_of_order.accept_header(header)
        out_of_order.decrypt(cipher[0])
        with pytest.raises(ValueError):
            assert out_of_order.decrypt(cipher[2]) != blocks[2]
            raise ValueError("decrypted to something else")

    def test_reset_restarts(self, private_key: rsa.RSAPrivateKey) -> None:
        """After reset no block can be encrypted until a new session (new key) begins."""
        encryptor = crypto.DynMemEncryptor(private_key.public_key())
        first = encryptor.begin()
        encryptor.encrypt(b"a")
        encryptor.reset()
        assert not encryptor.active
        with pytest.raises(InvalidArguments):
            encryptor.encrypt(b"b")
        second = encryptor.begin()
        assert second != first
        decryptor = crypto.DynMemDecryptor(private_key)
        decryptor.accept_header(second)
        assert decryptor.decrypt(encryptor.encrypt(b"c")) == b"c"

    def test_single_header_used_once(self, private_key: rsa.RSAPrivateKey) -> None:
        """A single-shot header opens exactly one block on the device."""
        result = crypto.encrypt_data(private_key.public_key(), b"one")
        decryptor = crypto.DynMemDecryptor(private_key)
        decryptor.accept_header(result.header)
        assert decryptor.decrypt(result.payload) == b"one"
        with pytest.raises(ValueError, match="no key header"):
            decryptor.decrypt(result.payload)

    def test_wrong_key_or_header(self, private_key: rsa.RSAPrivateKey) -> None:
        """Another unit's key, or a damaged header, does not decrypt."""
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        result = crypto.encrypt_data(other.public_key(), b"x")
        with pytest.raises(ValueError):
            crypto.decrypt_single(private_key, result.header, result.payload)
        with pytest.raises(ValueError):
            crypto.decrypt_single(other, b"XXXX" + result.header[4:], result.payload)

    def test_public_key_formats(self, private_key: rsa.RSAPrivateKey) -> None:
        """DER and PEM load; anything else is invalid arguments."""
        der = crypto.public_key_der(private_key.public_key())
        assert (
            crypto.load_public_key(der).public_numbers()
            == private_key.public_key().public_numbers()
        )
        with pytest.raises(InvalidArguments):
            crypto.load_public_key(b"not a key")
