"""FLUX framing (flux.md §1.4-1.5): the frames both FLUX TCP channels speak, sans-io.

The robot protocol on TCP 23811 (after its AES handshake, ``actors.flux.protocol``) and device
management inside TLS on TCP 1901 (``actors.fluxfamily.manage_protocol``) carry the same frames:

* ``encode_command`` / ``encode_answer``: the asymmetric 2-byte little-endian length prefix
  (client → device counts the prefix, device → client does not, §1.4).
* ``AnswerReader`` (client side) and ``CommandReader`` (device side) decode frames and the
  unframed binary bodies that follow ``binary <mime> <size>`` and ``continue``.
* ``parse_error`` reads ``error SYMBOL ...`` / ``er SYMBOL ...`` answers (§1.5).

Nothing here touches a socket: a reader is fed the bytes that arrived (any split, any size) and
returns the events decoded so far.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "MAX_ANSWER",
    "MAX_COMMAND",
    "AnswerEvent",
    "AnswerReader",
    "BinaryChunk",
    "BinaryEnd",
    "BinaryStart",
    "CommandReader",
    "ProtocolViolation",
    "Text",
    "encode_answer",
    "encode_command",
    "parse_error",
]

MAX_COMMAND = 4092  # the device closes on a length field > 4094 (the field counts its 2 bytes)
MAX_ANSWER = 0xFFFF
_LEN = struct.Struct("<H")


class ProtocolViolation(Exception):
    """The peer broke the framing rules; the connection must be closed."""


def encode_command(text: str) -> bytes:
    """Frame one client → device text command (the length counts its own 2 bytes).

    Raises:
        ValueError: The command is longer than the device accepts.
    """
    payload = text.encode()
    if len(payload) > MAX_COMMAND:
        raise ValueError(f"command of {len(payload)} bytes exceeds {MAX_COMMAND}")
    return _LEN.pack(len(payload) + 2) + payload


def encode_answer(text: str | bytes) -> bytes:
    """Frame one device → client text answer (the length counts the payload only)."""
    payload = text.encode() if isinstance(text, str) else text
    if len(payload) > MAX_ANSWER:
        raise ValueError(f"answer of {len(payload)} bytes exceeds {MAX_ANSWER}")
    return _LEN.pack(len(payload)) + payload


def parse_error(text: str) -> tuple[str, ...] | None:
    """Return the symbols of an ``error ...`` / ``er ...`` answer, or None for other answers."""
    for prefix in ("error ", "er "):
        if text.startswith(prefix):
            return tuple(text[len(prefix) :].split()) or ("UNKNOWN_ERROR",)
    if text in ("error", "er"):
        return ("UNKNOWN_ERROR",)
    return None


@dataclass(frozen=True, slots=True)
class Text:
    """One decoded text frame."""

    text: str


@dataclass(frozen=True, slots=True)
class BinaryStart:
    """A ``binary <mimetype> <size>`` frame: ``size`` raw bytes follow as ``BinaryChunk``s."""

    mimetype: str
    size: int


@dataclass(frozen=True, slots=True)
class BinaryChunk:
    """Part of an unframed binary body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BinaryEnd:
    """The binary body announced by the last ``BinaryStart`` is complete."""


AnswerEvent = Text | BinaryStart | BinaryChunk | BinaryEnd


class _StreamReader:
    """Length-prefixed text frames interleaved with unframed binary bodies.

    Subclasses say where a frame ends (the prefix means something else in each direction)
    and what a text frame turns into.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._binary_left = 0

    def _frame_end(self, length_field: int) -> int:
        raise NotImplementedError

    def take_buffer(self) -> bytes:
        """Hand over the bytes not yet decoded, and forget them.

        For a peer that just switched the stream to something else (the robot's raw mode):
        what follows the switch is not frames.
        """
        held = bytes(self._buffer)
        self._buffer.clear()
        return held

    def _text(self, text: str) -> list[AnswerEvent]:
        return [Text(text)]

    def feed(self, data: bytes) -> list[AnswerEvent]:
        """Add received (already decrypted) bytes; return every event now complete.

        Raises:
            ProtocolViolation: The peer broke the framing rules.
        """
        self._buffer += data
        events: list[AnswerEvent] = []
        while True:
            if self._binary_left:
                if not self._buffer:
                    return events
                take = bytes(self._buffer[: self._binary_left])
                del self._buffer[: len(take)]
                self._binary_left -= len(take)
                events.append(BinaryChunk(take))
                if not self._binary_left:
                    events.append(BinaryEnd())
                continue
            if len(self._buffer) < 2:
                return events
            end = self._frame_end(_LEN.unpack_from(self._buffer)[0])
            if len(self._buffer) < end:
                return events
            text = bytes(self._buffer[2:end]).decode("utf-8", errors="replace")
            del self._buffer[:end]
            events.extend(self._text(text))


class AnswerReader(_StreamReader):
    """Decode device → client bytes into ``Text`` frames and the bodies of ``binary`` frames."""

    def _frame_end(self, length_field: int) -> int:
        return 2 + length_field  # device → client: the prefix is not counted

    def _text(self, text: str) -> list[AnswerEvent]:
        if not text.startswith("binary "):
            return [Text(text)]
        words = text.split(" ")
        if len(words) != 3 or not words[2].isdigit():
            raise ProtocolViolation(f"bad binary header {text!r}")
        size = int(words[2])
        self._binary_left = size
        return [BinaryStart(words[1], size)] if size else [BinaryStart(words[1], 0), BinaryEnd()]


class CommandReader(_StreamReader):
    """Decode client → device bytes: text commands, and raw upload bytes after ``expect_binary``."""

    @property
    def in_binary(self) -> bool:
        """True while raw upload bytes are still expected."""
        return self._binary_left > 0

    def expect_binary(self, size: int) -> None:
        """Switch to binary mode for the next ``size`` bytes (the device just sent ``continue``)."""
        self._binary_left = size

    def _frame_end(self, length_field: int) -> int:
        # client → device: the prefix counts itself; the device refuses fields outside 3..4094
        if length_field > MAX_COMMAND + 2 or length_field < 3:
            raise ProtocolViolation(
                f"command length field {length_field} outside 3..{MAX_COMMAND + 2}"
            )
        return length_field
